#!/bin/sh
# MFU on the CPU (train/mfu in metrics.jsonl and "mfu N%" in the progress
# line) with --peak_tflops: the value is tokens/s x (6N + 12LHQT) / peak,
# recomputed here from the model the run reports (N its parameters less
# the position table); without --peak_tflops the CPU shows none; a
# negative peak is refused.
#   mfu_cli.sh PILE_TRAINER PILE_PREP
# Speaks TAP; exits 77 when the sample data is absent.
set -u
. "$(dirname "$0")/tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
SRC=${PILE_SOURCE_ROOT:-.}/data/sample
tap_skip_unless "no sample data at $SRC" "$SRC/val.jsonl.zst" "$SRC/train/00.jsonl.zst"
SRC=$(abs "$SRC")
tap_tmpdir mfu-cli
cd "$TMP" || exit 1
if ! "$PREP" -q -o shards -L 64 -t bytes "$SRC" > out 2> err; then
    echo "Bail out! pile-prep failed: $(cat err)"
    exit 1
fi
T=64

run "$TR" --data shards --checkpoint_dir run1 --max_steps 4 --batch_size 4 --log_interval 1 --eval_interval 0 --eval_rows 32 \
    --threads 1 --backend cpu --peak_tflops 0.5
expect "a run with --peak_tflops trains" 0 "step 4/4"
expect "the progress line shows mfu" 0 "tok/s [0-9,]+ mfu [0-9.]+% eta"
expect "the start says the FLOPs per token and the peak" 0 "mfu: .* GFLOP per token \(6N \+ 12LHQT\) against a peak of 0.5 TFLOP/s \(--peak_tflops\)"
# the model's size from the log: "model tiny (L layers, H heads, C wide, N parameters)"
dims=$(sed -n 's/.*model [a-z0-9-]* (\([0-9]*\) layers, \([0-9]*\) heads, \([0-9]*\) wide, \([0-9,]*\) parameters).*/\1 \2 \3 \4/p' \
    "$TMP/err" "$TMP/out" | tr -d , | head -n 1)
# every train/mfu against tokens_per_sec x flops / peak, to 1e-6
awk -v dims="$dims" -v T=$T '
    BEGIN { split(dims, d, " "); L = d[1]; H = d[2]; C = d[3]; N = d[4] - T * C
            F = 6 * N + 12 * L * H * (C / H) * T; bad = 0; n = 0 }
    /"train\/mfu"/ {
        match($0, /"train\/mfu": *[^,}]+/); m = substr($0, RSTART, RLENGTH); sub(/.*: */, "", m)
        match($0, /"train\/tokens_per_sec": *[^,}]+/); s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
        want = s * F / 0.5e12; n++
        if (want <= 0 || (m - want) > 1e-6 * want || (want - m) > 1e-6 * want) { bad = 1; print "# mfu " m " want " want }
    }
    END { if (N <= 0 || n != 4) { print "# " n " train/mfu values, parameters " N; bad = 1 }; exit bad }' run1/metrics.jsonl
check "train/mfu in metrics.jsonl is tokens/s x (6N + 12LHQT) / peak, every logged step" test $? -eq 0

run "$TR" --data shards --checkpoint_dir run2 --max_steps 2 --batch_size 4 --log_interval 1 --eval_interval 0 --eval_rows 32 \
    --threads 1 --backend cpu
expect "without --peak_tflops the cpu run trains" 0 "step 2/2"
check "without --peak_tflops no mfu in the progress line" sh -c "! grep -q ' mfu ' '$TMP/err' '$TMP/out'"
check "without --peak_tflops no train/mfu in metrics.jsonl" sh -c "! grep -q 'train/mfu' run2/metrics.jsonl"

run "$TR" --data shards --checkpoint_dir run3 --max_steps 1 --peak_tflops -1
expect "a negative --peak_tflops is refused" 2 "peak_tflops must be 0 \(by the device\) or positive"
tap_done
