#!/usr/bin/env bash
# One sender to eight receivers on a k=4 fat tree whose links run at 100 Mbit/s with 1 ms of
# delay: the sender (node 21) offers RATE Mbit/s of UDP to each receiver (nodes 22-29) for
# SECONDS, once as one stream to a multicast group the receivers joined with ordinary sockets,
# once as eight unicast streams (what an application does without multicast). Each receiver
# counts what it got, and duplicates. Prints a markdown table with the CPU busy while it ran
# (all cores, from /proc/stat). Needs root and python3. Everything it creates carries the
# prefix "nbc" and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RATE=${RATE:-40}
SECONDS_=${SECONDS_:-5}
np=nbc
source scripts/lib/common.sh
pids=()
bench_cleanup_more() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap one_run_cleanup EXIT

cat >"$state/receiver.py" <<'EOF'
import socket, struct, sys, time
group, me, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("0.0.0.0", 5000))
if group != "-":
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(me)))
print("ready", flush=True)
s.settimeout(0.2)
seen, dups, nbytes, first, last = set(), 0, 0, None, None
deadline = time.time() + seconds
while time.time() < deadline:
    try:
        data = s.recv(2048)
    except socket.timeout:
        continue
    seq = int.from_bytes(data[:8], "big")
    if seq in seen:
        dups += 1
        continue
    seen.add(seq)
    nbytes += len(data)
    now = time.time()
    first = first or now
    last = now
span = (last - first) if first and last and last > first else 1.0
print(f"{nbytes * 8 / span / 1e6:.1f} {dups}")
EOF

cat >"$state/sender.py" <<'EOF'
import socket, sys, time
rate_mbit, seconds, dests = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
size = 1200
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 16)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
pad = b"x" * (size - 8)
per_second = rate_mbit * 1e6 / 8 / size
start = time.time()
sent = 0
while True:
    elapsed = time.time() - start
    if elapsed >= seconds:
        break
    due = int(elapsed * per_second)
    while sent < due:
        for d in dests:
            try:
                s.sendto(sent.to_bytes(8, "big") + pad, (d, 5000))
            except OSError:
                pass
        sent += 1
    time.sleep(0.0005)
EOF

# The agent's CPU time in clock ticks (user + system): the dataplane's own share.
agent_ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }

printf '[topology]\ntype = "fat_tree"\nfat_tree_config = { k = 4 }\n[links]\nrate = "100mbit"\ndelay = "1ms"\nqueue = 200\n[node_settings]\nprefix = "nbc"\nunderlay_base = "172.23.68.0"\n' >"$state/exp.toml"
"$nm" up "$state/exp.toml" --port 3993 --state-dir "$state/run" --detach >/dev/null
agent=$(pgrep -f -- "agent .*--prefix nbc" | head -1)
group=239.255.0.1
"$nm" group create 21 --address "$group" --state-dir "$state/run" >/dev/null
receivers=(22 23 24 25 26 27 28 29)

echo "nextmini bench multicast: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
echo "| delivery, 1 sender to 8 receivers | run | offered per receiver | goodput per receiver, min-max | sum of goodput | duplicates | nextmini's agent (one core) | CPU busy (all cores) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"

for how in multicast unicast; do
  for run in $(seq "$RUNS"); do
    outs=()
    for r in "${receivers[@]}"; do
      out="$state/r$r"
      g=-
      [ "$how" = multicast ] && g=$group
      "$nm" exec "$r" --state-dir "$state/run" -- python3 "$state/receiver.py" "$g" "10.0.0.$r" "$((SECONDS_ + 3))" >"$out" &
      pids+=($!)
      outs+=("$out")
    done
    for out in "${outs[@]}"; do
      until grep -q ready "$out" 2>/dev/null; do sleep 0.05; done
    done
    # The receivers' joins reach the controller (their IGMP reports).
    if [ "$how" = multicast ]; then
      until "$nm" group list --state-dir "$state/run" | grep -q "22-29"; do sleep 0.1; done
    fi
    if [ "$how" = multicast ]; then
      dests=("$group")
    else
      dests=()
      for r in "${receivers[@]}"; do dests+=("10.0.0.$r"); done
    fi
    read -r b0 t0 < <(busy)
    a0=$(agent_ticks)
    s0=$(date +%s.%N)
    "$nm" exec 21 --state-dir "$state/run" -- python3 "$state/sender.py" "$RATE" "$SECONDS_" "${dests[@]}"
    read -r b1 t1 < <(busy)
    a1=$(agent_ticks)
    s1=$(date +%s.%N)
    agent_pct=$(awk -v a="$((a1 - a0))" -v t0="$s0" -v t1="$s1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * a / hz / (t1 - t0) }')
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
    # The receivers' sockets closed, and their kernels said so: no member is left over.
    until ! "$nm" group list --state-dir "$state/run" | grep -q "| $group | 21 | [0-9]"; do sleep 0.1; done
    read -r min max sum dups < <(cat "${outs[@]}" | grep -v ready | awk '
      NR == 1 { min = $1; max = $1 }
      { if ($1 < min) min = $1; if ($1 > max) max = $1; sum += $1; dups += $2 }
      END { printf "%.1f %.1f %.0f %d\n", min, max, sum, dups }')
    echo "| $how | $run | $RATE Mbit/s | $min-$max Mbit/s | $sum Mbit/s | $dups | $agent_pct % | $(( 100 * (b1 - b0) / (t1 - t0) )) % |"
  done
done
