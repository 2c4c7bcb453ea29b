#!/bin/sh
# Two pile-trainer builds on the same shards, alternating in every repeat,
# compared by the CPU time (user + system) of whole runs: on a machine
# shared with other jobs the wall time per step swings several-fold with
# the load, the CPU time a run takes much less. Each line: model, which
# build, user s, system s, wall s, median wall ms/step (bench/step_ms.py,
# after 2 steps).
#
#   bench/train-cputime.sh OLD_TRAINER NEW_TRAINER SHARDS MODEL STEPS REPEAT
# Env: PILE_BENCH_THREADS (1), PILE_BENCH_BATCH (8), PILE_BENCH_SEQ (256:
# the shards' row length or less), PILE_BENCH_TMP (work folder, /var/tmp).
set -eu
[ $# -eq 6 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
OLD=$1 NEW=$2 SHARDS=$3 MODEL=$4 STEPS=$5 REPEAT=$6
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-cpu-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg); $MODEL, $STEPS steps, batch ${PILE_BENCH_BATCH:-8} x ${PILE_BENCH_SEQ:-256}, ${PILE_BENCH_THREADS:-1} thread(s)"
for r in $(seq "$REPEAT"); do
    for b in old new; do
        tr=$OLD
        [ $b = new ] && tr=$NEW
        rm -rf "$TMP/ck"
        /usr/bin/time -f "%U %S %e" -o "$TMP/time" "$tr" train --data "$SHARDS" --checkpoint_dir "$TMP/ck" \
            --model "$MODEL" --batch_size "${PILE_BENCH_BATCH:-8}" --max_length "${PILE_BENCH_SEQ:-256}" \
            --max_steps "$STEPS" --eval_interval 1000000 --eval_rows 1 --threads "${PILE_BENCH_THREADS:-1}" \
            --learning_rate 3e-4 >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
        echo "$MODEL $b $(cat "$TMP/time") $(python3 "$ROOT/bench/step_ms.py" "$TMP/ck/metrics.jsonl" 2)"
    done
done
