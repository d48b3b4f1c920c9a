#!/usr/bin/env bash
# Experiments spread over three hosts simulated on this machine (network namespaces on a switch
# bridge, one `nextmini agent --head` each), placed and launched by a head: time from `exp
# launch` to topology ready at several sizes, and iperf3 between nodes on different hosts.
# Prints markdown tables. Needs root, iperf3, nsenter. Everything it creates carries the
# prefixes "nbm" (hosts, switch) and "bm" (nodes) and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
nm=$PWD/target/release/nextmini
state=$(mktemp -d)
port=3995
export NEXTMINI_HEAD=127.0.0.1:$port
pids=()
cleanup() {
  "$nm" exp clear bm >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for h in 1 2 3; do
    nsenter --net=/run/netns/nbmh$h "$nm" cleanup --prefix bm >/dev/null 2>&1 || true
    ip netns del nbmh$h 2>/dev/null || true
    ip link del nbms$h 2>/dev/null || true
  done
  ip link del nbmsw 2>/dev/null || true
  "$nm" cleanup --prefix bm >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

ip link add nbmsw mtu 1600 type bridge
ip addr add 172.20.254.254/24 dev nbmsw
ip link set nbmsw up
for h in 1 2 3; do
  ip netns add nbmh$h
  ip link add nbms$h mtu 1600 type veth peer name eth0 netns nbmh$h
  ip link set nbms$h master nbmsw up
  ip -n nbmh$h link set lo up
  ip -n nbmh$h link set eth0 mtu 1600 up
  ip -n nbmh$h addr add 172.20.254.$h/24 dev eth0
done
# The head keeps the token it finds in its state directory; hosts and commands carry it.
mkdir -p "$state/head"
NEXTMINI_TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
export NEXTMINI_TOKEN
(umask 077 && printf '%s\n' "$NEXTMINI_TOKEN" >"$state/head/head.token")
"$nm" serve --port $port --host head --state-dir "$state/head" 2>"$state/head.log" &
pids+=($!)
sleep 0.5
for h in 1 2 3; do
  nsenter --net=/run/netns/nbmh$h "$nm" agent --head 172.20.254.254:$port --host host$h \
    2>"$state/agent$h.log" &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$("$nm" hosts --json | python3 -c 'import json,sys; print(sum(h["up"] for h in json.load(sys.stdin)))')" = 3 ] && break
  sleep 0.1
done

echo "nextmini bench multihost: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); 3 hosts simulated as namespaces"
echo
echo "| topology | nodes | links across hosts | launch → topology ready | nodes per host |"
echo "|---|---:|---:|---:|---|"
for n in ${SIZES:-100 300 1000}; do
  printf '[topology]\ntype = "ring"\nring_config = { n_nodes = %s }\n' "$n" > "$state/ring.toml"
  "$nm" exp bm >/dev/null
  start=$(date +%s.%N)
  plan=$("$nm" exp --json launch "$state/ring.toml")
  for _ in $(seq 1200); do
    phase=$(curl -s "127.0.0.1:$port/api/exps/bm" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("phase",""))' 2>/dev/null || true)
    [ "$phase" = ready ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  [ "$phase" = ready ] || { echo "ring of $n not ready" >&2; exit 1; }
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
