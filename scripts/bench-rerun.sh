#!/usr/bin/env bash
# Bringing an experiment up and down, and up again: cold on a quiet kernel, right after a
# `down` (while the kernel still frees the previous run's namespaces), and warm (the previous
# run kept its nodes with `down --keep`). Prints a markdown table; run as root.
#
#   scripts/bench-rerun.sh [target/release/nextmini] [nodes ...]
#
# Uses prefix nbr, base 172.20.248.0, port 3990 and its own state directory.
set -euo pipefail

bin=${1:-target/release/nextmini}
shift || true
sizes=("${@:-1000}")
prefix=nbr
state=$(mktemp -d /tmp/nextmini-bench-rerun.XXXXXX)
args=(--prefix "$prefix" --base 172.20.248.0 --port 3990 --state-dir "$state" --detach)

cleanup() {
    "$bin" down --state-dir "$state" >/dev/null 2>&1 || true
    "$bin" cleanup --prefix "$prefix" >/dev/null 2>&1 || true
    rm -rf "$state"
}
trap cleanup EXIT

# Seconds from `up`'s own summary ("ready 1.23s after start").
up_ready() {
    "$bin" up --topo "ring,$1" "${args[@]}" 2>&1 | sed -n 's/.*ready \([0-9.]*\)s after start.*/\1/p'
}

# Wall-clock seconds of a command.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

# Until the kernel has freed every namespace of earlier runs (nothing of ours in nsfs).
settle() {
    local last=-1 now
    for _ in $(seq 1 120); do
        now=$(grep -E '^(Slab):' /proc/meminfo | awk '{print $2}')
        if [ "$last" != -1 ] && [ $((now - last)) -lt 2048 ] && [ $((last - now)) -lt 2048 ]; then
            return
        fi
        last=$now
        sleep 1
    done
}

echo "nextmini bench rerun: ring at ${sizes[*]} nodes; $(nproc) CPUs, $(uname -r)"
echo
echo "| nodes | up, quiet kernel | down | up right after down | down --keep | up, warm (kept nodes) | down |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
    settle
    cold=$(up_ready "$n")
    down1=$(timed "$bin" down --state-dir "$state")
    again=$(up_ready "$n")
    keep=$(timed "$bin" down --keep --state-dir "$state")
    warm=$(up_ready "$n")
    down2=$(timed "$bin" down --state-dir "$state")
    echo "| $n | ${cold}s | ${down1}s | ${again}s | ${keep}s | ${warm}s | ${down2}s |"
done
