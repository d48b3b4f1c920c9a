#!/usr/bin/env bash
# Two-hop throughput (iperf3 from node 1 to node 3 of a line of 3, 5 s, RUNS times each):
# through a plain namespace router over veths (the kernel alone, no emulator), through
# nextmini's normal mode (every hop in user space) and through max mode (every node in max
# mode: kernel links). Prints a markdown table with the CPU busy while iperf3 ran (all
# cores, from /proc/stat). Needs root and iperf3. Everything it creates carries the prefix
# "nbq" and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
np=nbq
source scripts/lib/common.sh
bench_cleanup_more() { for n in 1 2 3; do ip netns del "nbqr$n" 2>/dev/null || true; done; }
trap one_run_cleanup EXIT

# iperf3 from the first command prefix to the address, with the server started by the second;
# prints "Mbit/s cpu%".
measure() {
  local client=$1 server=$2 addr=$3
  $server iperf3 -s -1 -D
  sleep 0.3
  read -r b0 t0 < <(busy)
  mbit=$($client iperf3 -c "$addr" -t 5 -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
  read -r b1 t1 < <(busy)
  echo "$mbit $(( 100 * (b1 - b0) / (t1 - t0) ))"
}

echo "nextmini bench maxmode: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
echo "| path, 2 hops | run | Mbit/s | CPU busy (all cores) |"
echo "|---|---:|---:|---:|"

# The kernel alone: nbqr1 - nbqr2 - nbqr3 over veths, nbqr2 forwarding.
for n in 1 2 3; do ip netns add "nbqr$n"; ip -n "nbqr$n" link set lo up; done
ip link add nbqa netns nbqr1 type veth peer name nbqb netns nbqr2
ip link add nbqc netns nbqr2 type veth peer name nbqd netns nbqr3
ip -n nbqr1 addr add 10.99.1.1/24 dev nbqa
ip -n nbqr2 addr add 10.99.1.2/24 dev nbqb
ip -n nbqr2 addr add 10.99.2.2/24 dev nbqc
ip -n nbqr3 addr add 10.99.2.3/24 dev nbqd
for l in "nbqr1 nbqa" "nbqr2 nbqb" "nbqr2 nbqc" "nbqr3 nbqd"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n nbqr1 route add default via 10.99.1.2
ip -n nbqr3 route add default via 10.99.2.2
ip netns exec nbqr2 sysctl -q -w net.ipv4.ip_forward=1
for run in $(seq "$RUNS"); do
  read -r mbit cpu < <(measure "ip netns exec nbqr1" "ip netns exec nbqr3" 10.99.2.3)
  echo "| veths and a namespace router (no emulator) | $run | $mbit | $cpu % |"
done
for n in 1 2 3; do ip netns del "nbqr$n"; done

printf '[topology]\ntype = "line"\nline_config = { n_nodes = 3 }\n[node_settings]\nprefix = "nbq"\nunderlay_base = "172.23.24.0"\n' >"$state/exp.toml"
for mode in normal max; do
  flags=()
  [ "$mode" = max ] && flags=(--max-nodes 1-3)
  "$nm" up "$state/exp.toml" "${flags[@]}" --port 3994 --state-dir "$state/run" --detach >/dev/null
  for run in $(seq "$RUNS"); do
    read -r mbit cpu < <(measure "$nm exec 1 --state-dir $state/run --" "$nm exec 3 --state-dir $state/run --" 10.0.0.3)
    echo "| nextmini, $mode mode | $run | $mbit | $cpu % |"
  done
  "$nm" down --state-dir "$state/run" >/dev/null
done
