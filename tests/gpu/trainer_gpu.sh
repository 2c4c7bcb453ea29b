#!/bin/sh
# pile-trainer on the CUDA backend against the CPU trainer, on shards of
# the bundled sample (bytes tokenizer, 64-token rows, the tiny model):
#  - fp32: 10 steps' train/loss equal the CPU's to 1e-4 (relative), and a
#    second GPU run gives the same bits;
#  - bf16 and fp16: 30 steps learn as the CPU's emulation does (validation
#    loss within 3%); fp16 records its loss scale every step, and a forced
#    overflow is skipped and lowers the scale;
#  - resume on the GPU (bf16, fp16) continues bit for bit;
#  - tests/reference/hf_eval.py with PILE_TEST_BACKEND=cuda: transformers
#    loads a GPU-trained best_model and gives our evaluation's loss.
#   trainer_gpu.sh PILE_TRAINER PILE_PREP PYTHON3 HF_EVAL_PY
# Speaks TAP; exits 77 when no CUDA device is usable (or the sample data
# is absent), 1 on a failure.
set -u
. "$(dirname "$0")/../tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
PY=$3
HF=$(abs "$4")
SRC=${PILE_SOURCE_ROOT:-.}/data/sample
tap_skip_unless "no sample data at $SRC" "$SRC/val.jsonl.zst" "$SRC/train/00.jsonl.zst"
SRC=$(abs "$SRC")
tap_tmpdir trainer-gpu
cd "$TMP" || exit 1
if ! "$PREP" -q -o shards -L 64 -t bytes "$SRC" > out 2> err; then
    echo "Bail out! pile-prep failed: $(cat err)"
    exit 1
fi
COMMON="--data shards --model tiny --batch_size 8 --eval_rows 256 --seed 7 --log_interval 1"

# a device, or skip: the trainer's own probe decides; nvidia-smi tells a
# missing device from a backend that fails on one
if ! "$TR" $COMMON --backend cuda --max_steps 1 --checkpoint_dir PROBE > probe.out 2> probe.err; then
    if ! nvidia-smi -L > /dev/null 2>&1; then
        echo "1..0 # SKIP cuda: no device ($(tail -n 1 probe.err))"
        exit 77
    fi
    echo "Bail out! a GPU is there (nvidia-smi -L) but --backend cuda fails: $(tail -n 3 probe.err | tr '\n' ' ')"
    exit 1
fi
ok "--backend cuda trains a step ($(nvidia-smi -L 2> /dev/null | head -n 1))"

# "STEP VALUE" of TAG in each record of a metrics.jsonl, the last per step
series() {
    awk -v key="$2" '{
        if (!match($0, /"step": *[0-9]+/)) next
        s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
        if (!match($0, "\"" key "\": *[^,}]+")) next
        v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v); last[s] = v }
        END { for (s in last) print s, last[s] }' "$1" | sort -n
}
# within NAME FILE_A FILE_B TOL: the same steps, each value within TOL relative
within() {
    if [ -s "$2" ] && [ "$(wc -l < "$2")" -eq "$(wc -l < "$3")" ] && paste -d ' ' "$2" "$3" | awk -v tol="$4" '
        { d = $2 - $4; if (d < 0) d = -d; m = $4 < 0 ? -$4 : $4
          if ($1 != $3 || d > tol * m) { bad++; if (bad < 4) print "# step " $1 ": " $2 " against " $4 } }
        END { exit bad != 0 }'; then
        ok "$1"
    else
        not_ok "$1" "$(paste "$2" "$3" | head -n 12 | tr '\n' '|')"
    fi
}
# the validation loss of a run's last val record
last_val() { series "$1" val/loss | tail -n 1 | awk '{ print $2 }'; }
close_val() { # close_val NAME RUN_A RUN_B: last validation losses within 3%
    va=$(last_val "$2/metrics.jsonl")
    vb=$(last_val "$3/metrics.jsonl")
    if [ -n "$va" ] && [ -n "$vb" ] && awk -v a="$va" -v b="$vb" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.03 * b) }'; then
        ok "$1 ($va against $vb)"
    else
        not_ok "$1" "'$va' against '$vb'"
    fi
}
# resumed NAME RUN PREC FLAGS: RUN's step-0000010 copied to RUN-r and
# resumed to step 30 gives RUN's train/loss for steps 11 to 30, bit for bit
resumed() {
    mkdir -p "$2-r" && cp -r "$2/step-0000010" "$2-r/" && echo step-0000010 > "$2-r/latest"
    run "$TR" $COMMON --backend cuda --max_steps 30 --eval_interval 10 --save_interval 10 --precision "$3" \
        --checkpoint_dir "$2-r" --resume
    expect "$1: --resume from step 10 runs to step 30" 0 "trained 30 of 30 steps"
    series "$2/metrics.jsonl" train/loss | awk '$1 > 10' > "$2.want"
    series "$2-r/metrics.jsonl" train/loss > "$2.got"
    if [ -s "$2.got" ] && cmp -s "$2.want" "$2.got"; then
        ok "$1: the resumed steps' train/loss equal the uninterrupted run's, bit for bit"
    else
        not_ok "$1: resumed train/loss bit for bit" "$(diff "$2.want" "$2.got" | head -n 6 | tr '\n' '|')"
    fi
}

# --- fp32: the GPU computes what the CPU does
run "$TR" $COMMON --backend cpu --precision fp32 --max_steps 10 --eval_interval 0 --checkpoint_dir C32
expect "fp32 on the cpu: 10 steps" 0 "trained 10 of 10 steps"
run "$TR" $COMMON --backend cuda --precision fp32 --max_steps 10 --eval_interval 0 --checkpoint_dir G32
expect "fp32 on cuda: 10 steps" 0 "trained 10 of 10 steps"
series C32/metrics.jsonl train/loss > c32.loss
series G32/metrics.jsonl train/loss > g32.loss
within "fp32: each of the 10 steps' train/loss on cuda equals the cpu's to 1e-4" g32.loss c32.loss 1e-4
run "$TR" $COMMON --backend cuda --precision fp32 --max_steps 10 --eval_interval 0 --checkpoint_dir G32b
series G32b/metrics.jsonl train/loss > g32b.loss
check "fp32 on cuda: a second run gives the same losses, bit for bit" cmp -s g32.loss g32b.loss

# --- bf16 and fp16: the GPU learns as the CPU's emulation does
for p in bf16 fp16; do
    run "$TR" $COMMON --backend cpu --precision $p --max_steps 30 --eval_interval 10 --checkpoint_dir "C$p"
    expect "$p on the cpu (emulated): 30 steps" 0 "trained 30 of 30 steps"
    run "$TR" $COMMON --backend cuda --precision $p --max_steps 30 --eval_interval 10 --save_interval 10 \
        --checkpoint_dir "G$p"
    expect "$p on cuda: 30 steps" 0 "trained 30 of 30 steps"
    close_val "$p: validation loss on cuda within 3% of the cpu's" "G$p" "C$p"
    resumed "$p on cuda" "G$p" $p
done
series Gfp16/metrics.jsonl train/loss_scale > g16.scale
check "fp16 on cuda: train/loss_scale for each of the 30 steps" test "$(wc -l < g16.scale)" -eq 30
printf '{"fp16": {"enabled": true, "initial_scale_power": 28, "hysteresis": 2, "loss_scale_window": 3}}\n' > ds16.json
run "$TR" $COMMON --backend cuda --max_steps 16 --eval_interval 0 --deepspeed ds16.json --checkpoint_dir OV
expect "fp16 on cuda, a forced overflow (scale 2^28): the run trains to the end" 0 "trained 16 of 16 steps"
check "... step 1 is skipped and said" grep -q "warning: step 1 skipped: fp16 gradient overflow at loss scale 2.68435e+08" err
nskip=$(series OV/metrics.jsonl train/skipped_steps | tail -n 1 | awk '{ print $2 }')
check "... some steps skipped, not all (${nskip:-?} of 16)" test "${nskip:-0}" -ge 1 -a "${nskip:-16}" -lt 16

# --- a GPU-trained checkpoint through transformers
PILE_TEST_BACKEND=cuda "$PY" "$HF" "$TR" "$PREP" > hf.out 2> hf.err
st=$?
if [ $st -eq 77 ]; then
    n=$((n + 1))
    echo "ok $n - hf_eval.py on a cuda-trained best_model # SKIP $(grep -m 1 SKIP hf.out)"
elif [ $st -eq 0 ]; then
    ok "hf_eval.py on a cuda-trained best_model: transformers' loss = our eval's ($(grep -c '^ok' hf.out) checks)"
else
    not_ok "hf_eval.py on a cuda-trained best_model (status $st)" "$(grep -v '^ok' hf.out | head -n 8 | tr '\n' '|')" \
        "$(tail -n 3 hf.err | tr '\n' '|')"
fi
tap_done
