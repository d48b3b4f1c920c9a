#!/usr/bin/env bash
# iperf3 between the two nodes of a line of 2 on this host, with the link in process (the
# default), as a TCP connection (protocol = "tcp"), as UDP datagrams (protocol = "udp") and
# as a QUIC connection (protocol = "quic", CUBIC).
# Prints a markdown table. Needs root and iperf3. Everything it creates carries the prefix
# "nbx" and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
np=nbx
source scripts/lib/common.sh
trap one_run_cleanup EXIT
echo "nextmini bench transports: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
echo "| link carried by | Mbit/s | TCP retransmits |"
echo "|---|---:|---:|"
for proto in "" tcp udp quic; do
  line=""
  [ -n "$proto" ] && line="protocol = \"$proto\""
  printf '%s\n[topology]\ntype = "line"\nline_config = { n_nodes = 2 }\n[node_settings]\nprefix = "nbx"\nunderlay_base = "172.20.244.0"\n' "$line" >"$state/exp.toml"
  "$nm" up "$state/exp.toml" --port 3993 --state-dir "$state/run" --detach >/dev/null
  "$nm" exec 2 --state-dir "$state/run" -- iperf3 -s -1 -D
  sleep 0.3
  read -r mbit retr < <("$nm" exec 1 --state-dir "$state/run" -- iperf3 -c 10.0.0.2 -t 5 -J |
    python3 -c 'import json,sys; d=json.load(sys.stdin)["end"]; print(round(d["sum_received"]["bits_per_second"]/1e6), d["sum_sent"].get("retransmits", 0))')
  echo "| ${proto:-in process} | $mbit | $retr |"
  "$nm" down --state-dir "$state/run" >/dev/null
done
