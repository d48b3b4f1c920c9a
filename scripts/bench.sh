#!/usr/bin/env bash
# Reproduces docs/benchmarks.md on this machine (as root). Builds nextmini and the C baseline
# (shared/tools/nsbench.c, beside the project), then runs each benchmark in turn; results go
# to docs/results/. Runs take a few minutes; the 10,000-node nsbench baseline takes longest.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/results
mkdir -p "$out"
cargo build --release -q
nm=./target/release/nextmini
nsbench_src=../shared/tools/nsbench.c
nsbench=()
if [ -f "$nsbench_src" ] && command -v gcc >/dev/null; then
  gcc -O2 -pthread -w -o target/nsbench "$nsbench_src"
  nsbench=(--nsbench target/nsbench)
else
  echo "nsbench.c not found beside the project: running without the C baseline" >&2
fi
$nm bench netns --nodes 250,500,750,1000,1250,1500,1750,2000 --prefix nb "${nsbench[@]}" \
  --json $out/netns-n2000.json | tee $out/netns-n2000.txt
$nm bench netns --nodes 250,500,750,1000 --prefix nb --threads 2 "${nsbench[@]}" \
  --json $out/netns-n1000t2.json | tee $out/netns-n1000t2.txt
$nm bench netns --nodes 250,500,750,1000 --prefix nb --no-mount "${nsbench[@]}" \
  --json $out/netns-n1000nm.json | tee $out/netns-n1000nm.txt
$nm bench netns --nodes 1000,2500,5000,7500,10000 --prefix nb --baselines unshare "${nsbench[@]}" \
  --json $out/netns-n10000.json | tee $out/netns-n10000.txt
$nm bench wiring --topology ring --nodes 100,200,300,400,500,600,700,800,900,1000 \
  --json $out/wiring.json | tee $out/wiring.txt
$nm bench wiring --topology ring --nodes 10000 --prefix nx --json $out/wiring10k.json | tee $out/wiring10k.txt
