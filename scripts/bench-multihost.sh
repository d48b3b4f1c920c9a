#!/usr/bin/env bash
# Experiments spread over three hosts simulated on this machine (network namespaces on a switch
# bridge, one `nextmini agent --head` each), placed and launched by a head: time from `exp
# launch` to topology ready at several sizes, and iperf3 between nodes on different hosts.
# Prints markdown tables. Needs root, iperf3, nsenter. Everything it creates carries the
# prefixes "nbm" (hosts, switch) and "bm" (nodes) and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
port=3995
hp=nbm sub=172.20.254 np=bm
source scripts/lib/simulated-hosts.sh
trap sim_hosts_cleanup EXIT
sim_hosts_up

echo "nextmini bench multihost: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); 3 hosts simulated as namespaces"
echo
echo "| topology | nodes | links across hosts | launch → topology ready | nodes per host |"
echo "|---|---:|---:|---:|---|"
for n in ${SIZES:-100 300 1000}; do
  printf '[topology]\ntype = "ring"\nring_config = { n_nodes = %s }\n' "$n" > "$state/ring.toml"
  "$nm" exp bm >/dev/null
  start=$(date +%s.%N)
  plan=$("$nm" exp --json launch "$state/ring.toml")
  sim_hosts_wait_ready || { echo "ring of $n not ready" >&2; exit 1; }
  end=$(date +%s.%N)
  shares=$(printf '%s' "$plan" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(" / ".join(str(len(v)) for v in d["hosts"].values()))')
  cut=$(printf '%s' "$plan" | python3 -c 'import json,sys; print(json.load(sys.stdin)["links_across_hosts"])')
  echo "| ring | $n | $cut | $(python3 -c "print(f'{$end-$start:.2f} s')") | $shares |"
  if [ "$n" = "${SIZES_IPERF:-100}" ]; then
    a=$(printf '%s' "$plan" | python3 -c 'import json,sys; d=json.load(sys.stdin)["hosts"]; print(d["host1"][0])')
    b=$(printf '%s' "$plan" | python3 -c 'import json,sys; d=json.load(sys.stdin)["hosts"]; print(d["host3"][0])')
    ip netns exec "bm$b" iperf3 -s -1 -D
    sleep 0.3
    iperf=$(ip netns exec "bm$a" iperf3 -c "10.0.0.$b" -t 5 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
    iperf_line="iperf3 from node $a (host 1) to node $b (host 3), unshaped: $iperf Mbit/s"
    # The same two nodes' underlay addresses: the path the TCP link between their hosts takes
    # (VXLAN between the simulated hosts), without the emulator.
    under=$(ip -n "bm$b" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
    ip netns exec "bm$b" iperf3 -s -1 -D
    sleep 0.3
    raw=$(ip netns exec "bm$a" iperf3 -c "$under" -t 5 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
    raw_line="raw TCP between the same nodes' underlay addresses (over VXLAN, no emulator): $raw Mbit/s"
    # And between the simulated hosts themselves (their veths on the switch, no VXLAN).
    ip netns exec nbmh3 iperf3 -s -1 -D
    sleep 0.3
    hosts=$(ip netns exec nbmh1 iperf3 -c 172.20.254.3 -t 5 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
    hosts_line="raw TCP between host 1 and host 3 (the switch, no VXLAN): $hosts Mbit/s"
  fi
  "$nm" exp clear bm >/dev/null
done
echo
echo "${iperf_line:-}"
echo "${raw_line:-}"
echo "${hosts_line:-}"
