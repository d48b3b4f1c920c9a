# Sourced by the benchmark scripts: three hosts simulated on this machine (network namespaces
# on a switch bridge), a head and one `nextmini agent --head` per host. Before sourcing, set
# nm (the binary), state (a scratch directory), port (the head's), hp (the prefix of hosts and
# switch, e.g. nbm), sub (the switch's /24, e.g. 172.20.254) and np (the nodes' prefix).
# Defines pids and sim_hosts_cleanup; sim_hosts_up starts everything and waits for the hosts.

export NEXTMINI_HEAD=127.0.0.1:$port
pids=()

sim_hosts_cleanup() {
  "$nm" exp clear "$np" >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for h in 1 2 3; do
    nsenter --net=/run/netns/${hp}h$h "$nm" cleanup --prefix "$np" >/dev/null 2>&1 || true
    ip netns del ${hp}h$h 2>/dev/null || true
    ip link del ${hp}s$h 2>/dev/null || true
  done
  ip link del ${hp}sw 2>/dev/null || true
  "$nm" cleanup --prefix "$np" >/dev/null 2>&1 || true
  rm -rf "$state"
}

sim_hosts_up() {
  ip link add ${hp}sw mtu 1600 type bridge
  ip addr add $sub.254/24 dev ${hp}sw
  ip link set ${hp}sw up
  for h in 1 2 3; do
    ip netns add ${hp}h$h
    ip link add ${hp}s$h mtu 1600 type veth peer name eth0 netns ${hp}h$h
    ip link set ${hp}s$h master ${hp}sw up
    ip -n ${hp}h$h link set lo up
    ip -n ${hp}h$h link set eth0 mtu 1600 up
    ip -n ${hp}h$h addr add $sub.$h/24 dev eth0
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
    nsenter --net=/run/netns/${hp}h$h "$nm" agent --head $sub.254:$port --host host$h \
      2>"$state/agent$h.log" &
    pids+=($!)
  done
  for _ in $(seq 100); do
    [ "$("$nm" hosts --json | python3 -c 'import json,sys; print(sum(h["up"] for h in json.load(sys.stdin)))')" = 3 ] && return 0
    sleep 0.1
  done
  echo "the simulated hosts did not come up" >&2
  return 1
}

# Waits until experiment $np on the head is ready.
sim_hosts_wait_ready() {
  for _ in $(seq 1200); do
    phase=$(curl -s "127.0.0.1:$port/api/exps/$np" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("phase",""))' 2>/dev/null || true)
    [ "$phase" = ready ] && return 0
    sleep 0.05
  done
  return 1
}
