#!/usr/bin/env bash
# 100 MB (SIZE) from node 1 to node 2 over one link of 100 Mbit/s and 20 ms each way, at 0, 1,
# 5 and 10 % loss: as a TCP flow (cubic), as a lossless_unicast flow without FEC and with
# RaptorQ FEC (32 symbols per block), both paced at the link's rate. Prints completion time
# and goodput; a run that has not finished after LIMIT seconds says so. Needs root. Everything
# it creates carries the prefix "nbl" and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-100MB}
LIMIT=${LIMIT:-240}
np=nbl
source scripts/lib/common.sh
trap one_run_cleanup EXIT

echo "nextmini bench lossless: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); $SIZE over 100 Mbit/s, 20 ms each way"
echo
echo "| loss | transport | completion | goodput | repairs or retransmits | intact |"
echo "|---:|---|---:|---:|---:|---|"
for loss in ${LOSSES:-0% 1% 5% 10%}; do
  for how in ${HOWS:-tcp lossless fec}; do
    config=""
    [ "$how" = fec ] && config='[lossless_runtime_config]
fec_enabled = true
fec_default_symbols_per_block = 32'
    printf '[topology]\ntype = "line"\nline_config = { n_nodes = 2 }\n[links]\nrate = "100mbit"\ndelay = "20ms"\nloss = "%s"\nqueue = 2000\n%s\n[node_settings]\nprefix = "nbl"\nunderlay_base = "172.23.60.0"\n' \
      "$loss" "$config" >"$state/exp.toml"
    "$nm" up "$state/exp.toml" --port 3987 --state-dir "$state/run" --detach >/dev/null
    if [ "$how" = tcp ]; then
      added=$("$nm" flow add 1 2 --bytes "$SIZE" --cc cubic --state-dir "$state/run")
    else
      added=$("$nm" flow add 1 2 --bytes "$SIZE" --rate 100mbit --transport lossless_unicast --state-dir "$state/run")
    fi
    # "flow 7: 1 -> 2": ids go on across runs of one state directory.
    id=$(printf '%s' "$added" | sed -n 's/^flow \([0-9]*\):.*/\1/p')
    row=""
    for _ in $(seq $((LIMIT * 10))); do
      row=$("$nm" flow list --state-dir "$state/run" | grep -E "^\\| $id \\|" || true)
      case "$row" in *finished*|*failed*) break ;; esac
      sleep 0.1
    done
    python3 - "$loss" "$how" "$row" "$LIMIT" <<'PY'
import sys
loss, how, row, limit = sys.argv[1:]
name = {"tcp": "TCP (cubic)", "lossless": "lossless, no FEC", "fec": "lossless, RaptorQ FEC"}[how]
cells = [c.strip() for c in row.split("|")]
if "finished" not in cells:
    print(f"| {loss} | {name} | not done in {limit} s | | | |")
else:
    # flow | src | dst | size | rate | weight | cc | state | start | bytes | fct | throughput | retrans
    fct, bytes_, thr, retr = cells[11], int(cells[10]), cells[12], cells[13]
    print(f"| {loss} | {name} | {fct} | {thr} | {retr} | {bytes_:,} bytes |")
PY
    "$nm" down --state-dir "$state/run" >/dev/null
  done
done
