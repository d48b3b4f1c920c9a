#!/usr/bin/env bash
# Traffic through the emulated network, measured with iperf3 and ping inside node namespaces,
# next to raw veth in the same run. Prints markdown tables. Needs root, iperf3 and ping.
# Everything it creates carries the prefix "nbt" (nodes) or "nbtv" (the raw veth pair) and is
# removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
nm=$PWD/target/release/nextmini
state=$(mktemp -d)
port=3990
cleanup() {
  stop_servers
  "$nm" down --state-dir "$state" >/dev/null 2>&1 || true
  "$nm" cleanup --prefix nbt >/dev/null 2>&1 || true
  ip netns del nbtva 2>/dev/null || true
  ip netns del nbtvb 2>/dev/null || true
  rm -rf "$state"
}
trap cleanup EXIT

iperf_mbit() { # client runner, server address; prints Mbit/s received over 5 s
  local run=$1 dst=$2
  for _ in $(seq 20); do
    out=$($run iperf3 -c "$dst" -t 5 -J 2>/dev/null || true)
    m=$(printf '%s' "$out" | python3 -c 'import json,sys
try: print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6,1))
except Exception: pass')
    if [ -n "$m" ]; then echo "$m"; return; fi
    sleep 0.2
  done
  echo "iperf3 to $dst failed" >&2; exit 1
}
serve() { # a persistent iperf3 server, stopped at exit through its pid file
  local run=$1 pidfile=$2
  $run iperf3 -s -D --pidfile "$pidfile" >/dev/null
  servers+=("$pidfile")
}
servers=()
stop_servers() { for f in "${servers[@]}"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; true; }

echo "nextmini bench traffic: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"

# Raw veth between two namespaces: the kernel's own path, no emulation.
ip netns add nbtva && ip netns add nbtvb
ip link add nbtva0 netns nbtva type veth peer name nbtvb0 netns nbtvb
ip -n nbtva addr add 172.20.250.1/30 dev nbtva0 && ip -n nbtva link set nbtva0 up && ip -n nbtva link set lo up
ip -n nbtvb addr add 172.20.250.2/30 dev nbtvb0 && ip -n nbtvb link set nbtvb0 up && ip -n nbtvb link set lo up
serve "ip netns exec nbtvb" "$state/raw.pid"
raw=$(iperf_mbit "ip netns exec nbtva" 172.20.250.2)
stop_servers; servers=()
ip netns del nbtva; ip netns del nbtvb

cat > "$state/line.toml" <<EOF
[topology]
type = "line"
line_config = { n_nodes = 3 }
[node_settings]
prefix = "nbt"
underlay_base = "172.20.240.0"
EOF
"$nm" up "$state/line.toml" --detach --state-dir "$state" --port $port >/dev/null
ex() { local node=$1; shift; "$nm" exec "$node" --state-dir "$state" -- "$@"; }
agent=$(pgrep -f "nextmini agent --controller 127.0.0.1:$port" | head -1)
cpu() { awk '{print $14 + $15}' "/proc/$agent/stat"; }

serve "ex 2" "$state/n2.pid"
serve "ex 3" "$state/n3.pid"
one=$(iperf_mbit "ex 1" 10.0.0.2)
c0=$(cpu)
two=$(iperf_mbit "ex 1" 10.0.0.3)
c1=$(cpu)
ticks=$(getconf CLK_TCK)
# CPU of the agent during the 5-second 2-hop run, per gigabit carried.
cpu_per_gbit=$(python3 -c "print(round(($c1-$c0)/$ticks / ($two*5/1000), 2))")

echo
echo "| path | iperf3 TCP | relative to raw veth |"
echo "|---|---:|---:|"
echo "| raw veth, two namespaces | $raw Mbit/s | 1 |"
echo "| nextmini, 1 hop (TUN → forwarder → link → forwarder → TUN) | $one Mbit/s | $(python3 -c "print(round($one/$raw,3))") |"
echo "| nextmini, 2 hops | $two Mbit/s | $(python3 -c "print(round($two/$raw,3))") |"
echo
echo "Agent CPU while carrying the 2-hop traffic: $cpu_per_gbit CPU-seconds per gigabit."

echo
echo "| configured rate | iperf3 TCP goodput, 1→2 | IP-level rate (goodput × 1500/1448) | error of the IP rate |"
echo "|---:|---:|---:|---:|"
for rate in 10 50 100 500 1000; do
  "$nm" link set 1-2 --rate "${rate}mbit" --state-dir "$state" >/dev/null
  m=$(iperf_mbit "ex 1" 10.0.0.2)
  ip_rate=$(python3 -c "print(round($m*1500/1448,1))")
  echo "| $rate Mbit/s | $m Mbit/s | $ip_rate Mbit/s | $(python3 -c "print(f'{($ip_rate-$rate)/$rate*100:+.1f} %')") |"
done
"$nm" link set 1-2 --unshaped --state-dir "$state" >/dev/null

echo
echo "| configured delay (each way) | measured RTT/2 (ping, 100 samples) | error |"
echo "|---:|---:|---:|"
for d in 1 5 10 50 100; do
  "$nm" link set 1-2 --delay "${d}ms" --state-dir "$state" >/dev/null
  avg=$(ex 1 ping -c 100 -i 0.01 -q 10.0.0.2 | awk -F/ '/^rtt/ {print $5}')
  echo "| $d ms | $(python3 -c "print(round($avg/2,3))") ms | $(python3 -c "print(f'{$avg/2-$d:+.3f} ms')") |"
done
"$nm" link set 1-2 --delay 0ms --state-dir "$state" >/dev/null

echo
echo "| configured loss (each way) | measured (ping, 4000 samples, one-way estimate) | error |"
echo "|---:|---:|---:|"
for l in 0.1 1 5 10; do
  "$nm" link set 1-2 --loss "${l}%" --state-dir "$state" >/dev/null
  lost=$(ex 1 ping -c 4000 -i 0.001 -W 1 -q 10.0.0.2 | awk -F', ' '/packet loss/ {print $3}' | tr -d '% packetlos')
  one_way=$(python3 -c "print(round((1-(1-$lost/100)**0.5)*100,3))")
  echo "| $l % | $one_way % | $(python3 -c "print(f'{$one_way-$l:+.3f} points')") |"
done
