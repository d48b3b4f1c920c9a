#!/usr/bin/env bash
# Two nextmini builds side by side in one session, alternating, so that a change can be judged
# against the build before it on the same machine and kernel state:
#   scripts/bench-compare.sh OLD/nextmini NEW/nextmini [ROUNDS]
# Per round and build: `bench wiring` of a 1,000-node ring (it waits for the kernel to settle
# first), then on a 3-node line the RTT/2 at 1 ms and 10 ms (200 pings each) and the IP-level
# rate of iperf3 over a 100 Mbit/s link. Needs root, ping, iperf3. Everything carries the
# prefixes "nbw", "dca", "dcb" and is removed when each run ends.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
line() { # binary prefix base port
  local nm=$1 p=$2 base=$3 port=$4 st
  st=$(mktemp -d)
  cat > "$st/l.toml" <<T
[topology]
type = "line"
line_config = { n_nodes = 3 }
[node_settings]
prefix = "$p"
underlay_base = "$base"
T
  "$nm" up "$st/l.toml" --detach --state-dir "$st" --port "$port" >/dev/null
  for d in 1 10; do
    "$nm" link set 1-2 --delay ${d}ms --state-dir "$st" >/dev/null
    avg=$("$nm" exec 1 --state-dir "$st" -- ping -c 200 -i 0.01 -q 10.0.0.2 | awk -F/ '/^rtt/ {print $5}')
    printf 'delay %s ms: %s ms  ' "$d" "$(python3 -c "print(f'{$avg/2-$d:+.3f}')")"
  done
  "$nm" link set 1-2 --delay 0ms --rate 100mbit --state-dir "$st" >/dev/null
  "$nm" exec 2 --state-dir "$st" -- iperf3 -s -D --pidfile "$st/s.pid" >/dev/null
  sleep 0.3
  m=$("$nm" exec 1 --state-dir "$st" -- iperf3 -c 10.0.0.2 -t 5 -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6*1500/1448,2))')
  kill "$(cat "$st/s.pid")" 2>/dev/null || true
  echo "100 Mbit/s link: $m Mbit/s at IP level"
  "$nm" down --state-dir "$st" >/dev/null
  rm -rf "$st"
}
echo "| build | Nodes | Wiring Time | Memory Before | Memory After | Per Node | Slab + PSS per node | Agent PSS | Plumbing | Ready after start |"
for _ in $(seq "$rounds"); do
  for b in "$old" "$new"; do
    printf '%s ' "$b"
    "$b" bench wiring --topology ring --nodes 1000 --prefix nbw | grep 'ring(1000)' | cut -d'|' -f3-
  done
done
for _ in $(seq "$rounds"); do
  printf '%s: ' "$old"; line "$old" dca 172.20.244.0 3991
  printf '%s: ' "$new"; line "$new" dcb 172.20.248.0 3992
done
