#!/usr/bin/env bash
# Link transports across hosts: a line of 2 with node 1 on host 1 and node 2 on host 3 of three
# hosts simulated on this machine (scripts/lib/simulated-hosts.sh), launched through a head
# with each `protocol`; iperf3 from node 1 to node 2 (5 s, unshaped) and the CPU the whole
# machine spent meanwhile (from /proc/stat), next to raw TCP on the same paths without the
# emulator. Prints a markdown table. Needs root, iperf3, nsenter. Everything it creates carries
# the prefixes "nbk" (hosts, switch) and "bk" (nodes) and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
port=3996
hp=nbk sub=172.23.36 np=bk
source scripts/lib/simulated-hosts.sh
trap sim_hosts_cleanup EXIT
sim_hosts_up


# iperf3 from namespace $1 to address $3, its server in namespace $2: one table row, $4 names it.
row() {
  ip netns exec "$2" iperf3 -s -1 -D
  sleep 0.3
  read -r b0 t0 < <(busy)
  mbit=$(ip netns exec "$1" iperf3 -c "$3" -t 5 -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
  read -r b1 t1 < <(busy)
  python3 - "$4" "$mbit" "$((b1 - b0))" "$((t1 - t0))" "$(nproc)" <<'PY'
import sys
label, mbit, busy, total, cores = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])
busy_cores = busy / total * cores
print(f"| {label} | {mbit:,} | {busy_cores:.2f} | {busy_cores / (mbit / 1000):.2f} |")
PY
}

echo "nextmini bench transports across hosts: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); 3 hosts simulated as namespaces"
echo
echo "| path from host 1 to host 3 | Mbit/s | cores busy | core-seconds per Gbit |"
echo "|---|---:|---:|---:|"
row nbkh1 nbkh3 "$sub.3" "raw TCP between the hosts (switch, no VXLAN, no emulator)"
for proto in tcp udp quic:cubic quic:bbr; do
  {
    echo "protocol = \"${proto%%:*}\""
    [ "${proto#*:}" != "$proto" ] && echo "quic_congestion_control = \"${proto#*:}\""
    printf '[topology]\ntype = "line"\nline_config = { n_nodes = 2 }\n'
    printf '[[placement]]\nnode = 1\nschedule = "host1"\n[[placement]]\nnode = 2\nschedule = "host3"\n'
  } >"$state/line.toml"
  "$nm" exp "$np" >/dev/null
  "$nm" exp --json launch "$state/line.toml" >/dev/null
  sim_hosts_wait_ready || { echo "the line over $proto is not ready" >&2; exit 1; }
  if [ "$proto" = tcp ]; then
    under=$(ip -n "${np}2" -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
    row "${np}1" "${np}2" "$under" "raw TCP between the nodes' underlay addresses (VXLAN, no emulator)"
  fi
  row "${np}1" "${np}2" 10.0.0.2 "nextmini, protocol = \"${proto%%:*}\"$([ "${proto#*:}" != "$proto" ] && echo ", ${proto#*:}")"
  "$nm" exp clear "$np" >/dev/null
done
