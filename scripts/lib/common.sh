# Sourced by the benchmark scripts, from the repository's root: a release build ($nm), a
# scratch directory ($state), and what several of them share.
cargo build --release -q -p nextmini
nm=$PWD/target/release/nextmini
state=$(mktemp -d)

# CPU time (clock ticks) busy and in all, over every core, from /proc/stat.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# For a script that runs experiments on this host with prefix $np in $state/run: set as the
# EXIT trap, it stops what bench_cleanup_more (if the script defines it) stops, takes the run
# down, removes everything of $np and the scratch directory.
one_run_cleanup() {
  if declare -F bench_cleanup_more >/dev/null; then bench_cleanup_more; fi
  "$nm" down --state-dir "$state/run" >/dev/null 2>&1 || true
  "$nm" cleanup --prefix "$np" >/dev/null 2>&1 || true
  rm -rf "$state"
}
