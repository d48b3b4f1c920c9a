#!/usr/bin/env bash
# What per-packet monitoring costs a node's dataplane, end to end: two nextmini builds (one
# without monitoring, one with it) alternating in one session,
#   scripts/bench-monitor-cost.sh OLD/nextmini NEW/nextmini [ROUNDS]
# Per round and build: a 3-node line, unshaped; iperf3 from node 1 to node 3 (2 hops) for 5 s
# with 1 and with 32 parallel connections; prints Mbit/s received and the agent's CPU-seconds
# per gigabit carried. Needs root and iperf3. Everything carries the prefix "nmc" and is
# removed when each run ends.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
ticks=$(getconf CLK_TCK)
run() { # binary label
  local nm=$1 label=$2 st agent
  st=$(mktemp -d)
  cat > "$st/l.toml" <<T
[topology]
type = "line"
line_config = { n_nodes = 3 }
[node_settings]
prefix = "nmc"
underlay_base = "172.20.188.0"
T
  "$nm" up "$st/l.toml" --detach --state-dir "$st" --port 3991 >/dev/null
  agent=$(pgrep -f "agent --controller 127.0.0.1:3991" | head -1)
  "$nm" exec 3 --state-dir "$st" -- iperf3 -s -D --pidfile "$st/s.pid" >/dev/null
  sleep 0.3
  for p in 1 32; do
    c0=$(awk '{print $14 + $15}' "/proc/$agent/stat")
    m=$("$nm" exec 1 --state-dir "$st" -- iperf3 -c 10.0.0.3 -t 5 -P $p -J |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6,1))')
    c1=$(awk '{print $14 + $15}' "/proc/$agent/stat")
    printf '| %s | %s | %s | %s |\n' "$label" "$p" "$m" \
      "$(python3 -c "print(round(($c1-$c0)/$ticks / ($m*5/1000), 3))")"
  done
  kill "$(cat "$st/s.pid")" 2>/dev/null || true
  "$nm" down --state-dir "$st" >/dev/null
  rm -rf "$st"
}
echo "| build | connections | Mbit/s | agent CPU-s per Gbit |"
echo "|---|---:|---:|---:|"
for _ in $(seq "$rounds"); do
  run "$old" old
  run "$new" new
done
