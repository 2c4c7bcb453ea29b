#!/bin/sh
# pile-trainer's command line on shards of the bundled sample (bytes
# tokenizer, 64-token rows): help and exit codes, configuration resolution,
# a short training run's checkpoints and metrics, bit-exact resume after
# SIGTERM, --recompute giving the same losses, refusals (no checkpoint, a
# used folder, changed settings, another tokenizer, divergence), damaged shards (a row failing its checksum stops
# the run before its use, or is skipped and counted, also in a micro-batch
# read ahead for the next step; version 1 shards),
# eval against the run's own validation, sampling; nothing lost: one run
# per folder, SIGUSR1/SIGHUP and exit 75, owed validations, damaged
# checkpoints found by their checksums, resume fallbacks and a rollback's
# best_model, the shards' identity, save_total_limit, the tokenizer read at
# start, a checkpoint that fails mid-run saved in --fallback_dir.
#   trainer_cli.sh PILE_TRAINER PILE_PREP PILE_TOK SHARD_TOOL
# Speaks TAP; exits 77 when the sample data is absent.
set -u
. "$(dirname "$0")/tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
TOK=$(abs "$3")
STOOL=$(abs "$4")
SRC=${PILE_SOURCE_ROOT:-.}/data/sample
tap_skip_unless "no sample data at $SRC" "$SRC/val.jsonl.zst" "$SRC/train/00.jsonl.zst"
SRC=$(abs "$SRC")
tap_tmpdir trainer-cli
cd "$TMP" || exit 1

if ! "$PREP" -q -o shards -L 64 -t bytes "$SRC" > out 2> err; then
    echo "Bail out! pile-prep failed: $(cat err)"
    exit 1
fi

# the value of "KEY" in the val record of step STEP
val_at() {
    awk -v step="$2" -v key="$3" '{
        if (!match($0, /"step": *[0-9]+/)) next
        s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
        if (s != step || !match($0, "\"" key "\": *[^,}]+")) next
        v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v); print v }' "$1" | tail -n 1
}

# --- usage
run "$TR" --help
expect "--help exits 0 and lists the training flags" 0 "--batch[_-]size"
run "$TR" train --help
expect "train --help lists --print-config" 0 "--print-config"
run "$TR" eval --help
expect "eval --help lists --checkpoint" 0 "--checkpoint DIR"
run "$TR" sample --help
expect "sample --help lists --prompt" 0 "--prompt TEXT"
run "$TR" --version
expect "--version" 0 "^pile-trainer [0-9]"
run "$TR" --no-such-flag 3
expect "an unknown training flag: exit 2, named" 2 "no[-_]such[-_]flag"
run "$TR" eval --checkpoint x --bogus
expect "an unknown eval option: exit 2, named" 2 "unknown option '--bogus'"
run "$TR" sample --checkpoint x
expect "sample without --prompt: exit 2" 2 "missing --prompt"
run "$TR" frobnicate
expect "an unknown command: exit 2" 2 "unknown command 'frobnicate'"

# --- configuration
printf '{"epochs": 3, "batch_size": 6}\n' > cfg.json
run "$TR" --config cfg.json --batch-size 5 --print-config
expect "--print-config shows a flag over the --config file" 0 '"batch_size": *5'
expect "... and the --config file's own value" 0 '"epochs": *3'
printf '{"batch_size": 7, "max_steps": -1}\n' > cfg2.json
run "$TR" --config cfg.json --config cfg2.json --print-config
expect "two --config files: the later one's value wins" 0 '"batch_size": *7'
expect "... the earlier one's other values stay" 0 '"epochs": *3'
expect "... and max_steps -1 (HF's saved default) reads as no limit" 0 '"max_steps": *0,'
run "$TR" --help
expect "--help says how several --config files combine" 0 "several --config files apply in order, a later one winning"
printf '{"batch_size": 4, "per_device_train_batch_size": 8}\n' > cfg3.json
run "$TR" --config cfg3.json --print-config
expect "batch_size and per_device_train_batch_size in one file: refused (exit 2), both named" 2 \
    "'batch_size' and 'per_device_train_batch_size' both set batch_size"
printf '{"train_micro_batch_size_per_gpu": 4, "fp16": {"enabled": true}}\n' > ds.json
run "$TR" --deepspeed ds.json --print-config
expect "a ds_config with fp16 sets precision fp16" 0 '"precision": *"fp16"'
check "... with no warning (the cpu backend emulates fp16)" sh -c '! grep -q "warning" err'

run "$TR" --model gpt5 --print-config
expect "--print-config refuses an unknown preset (exit 2), listing the presets" 2 "unknown model preset 'gpt5'.*gpt2-xl"
run "$TR" --model gpt2 --n_head 5 --print-config
expect "--print-config refuses a preset's n_embd that n_head does not divide" 2 "n_embd 768 is not a multiple of n_head 5"
presets=$("$TR" --help | sed -n '/Model presets/,/override/p' | grep -o '[a-z][a-z0-9-]* (' | sed 's/ (//' | grep -vx presets)
bad=""
for p in $presets; do "$TR" --model "$p" --print-config > /dev/null 2>&1 || bad="$bad $p"; done
check "every preset --help lists ($(echo $presets | wc -w)) resolves${bad:+; not:$bad}" \
    test -z "$bad" -a "$(echo $presets | wc -w)" -ge 6

# --- a short run
COMMON="--data shards --model tiny --max_steps 12 --batch_size 4 --threads 1 --eval_rows 64 --seed 7"
run "$TR" $COMMON --eval_interval 5 --save_interval 4 --checkpoint_dir A
expect "12 steps: exit 0, the summary on stdout" 0 "trained 12 of 12 steps"
if grep -q "^epoch .*step" out; then fail "progress lines stay off stdout"; else ok "progress lines stay off stdout"; fi
check "progress lines on stderr" grep -q "^epoch 1/1 step 12/12 loss" err
check "val lines on stderr" grep -q "^val: step 5 loss" err
losses A/metrics.jsonl > a.loss
check "metrics.jsonl: 12 train records" test "$(wc -l < a.loss)" -eq 12
check "metrics.jsonl: val records at steps 5 and 10" sh -c \
    "test -n \"$(val_at A/metrics.jsonl 5 val/loss)\" && test -n \"$(val_at A/metrics.jsonl 10 val/loss)\""
for d in step-0000004 step-0000008 step-0000012 best_model; do
    check "$d/ holds model.safetensors and config.json" test -s A/$d/model.safetensors -a -s A/$d/config.json
done
check "latest names step-0000012" grep -qx "step-0000012" A/latest
if awk 'NR <= 3 { a += $2 } NR >= 10 { b += $2 } END { exit !(b < a - 0.05) }' a.loss; then
    ok "the train loss falls"
else
    not_ok "the train loss falls" "$(tr '\n' ' ' < a.loss)"
fi

# --log_interval 5: each record's train/loss is the mean of its steps' losses
# (transformers' logging), here against the per-step losses of run A
run "$TR" $COMMON --eval_interval 5 --log_interval 5 --checkpoint_dir LOG
losses LOG/metrics.jsonl > log.loss
want=$(awk '{ s += $2; k++ } $1 % 5 == 0 || $1 == 12 { printf "%d %.17g\n", $1, s / k; s = 0; k = 0 }' a.loss)
if [ $st -eq 0 ] && [ "$(cut -d' ' -f1 log.loss | tr '\n' ' ')" = "5 10 12 " ] &&
    echo "$want" | paste -d' ' - log.loss |
    awk '{ d = $2 - $4; if (d < 0) d = -d; if (d > 1e-12 * $2) bad = 1 } END { exit bad }'; then
    ok "--log_interval 5: records at steps 5, 10, 12, each the mean loss of its steps"
else
    not_ok "--log_interval 5: each record the mean loss of its steps (status $st)" "want $(echo $want)" \
        "got $(tr '\n' ' ' < log.loss)"
fi
check "--help says the logged loss is the interval's mean" sh -c "'$TR' --help | grep -q 'mean train loss of its steps'"

# wait_for FILE PID: until FILE exists, PID has exited, or 60 s have passed
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 1200 ] && kill -0 "$2" 2> /dev/null; do
        sleep 0.05
        i=$((i + 1))
    done
}

# --- bit-exact resume after SIGTERM: run B validates every step (slow
# steps, so the signal lands mid-run; validation does not touch the
# training state) and is stopped once step-0000004 exists.
"$TR" $COMMON --eval_interval 1 --eval_rows 200 --save_interval 4 --checkpoint_dir B > b.out 2> b.err &
pid=$!
wait_for B/step-0000004/model.safetensors $pid
kill -TERM $pid 2> /dev/null
wait $pid
st=$?
k=$(sed -n 's/^interrupted at step \([0-9]*\):.*/\1/p' b.err)
if [ $st -eq 75 ] && [ -n "$k" ] && grep -q "continue with --resume" b.err; then
    ok "SIGTERM: exit 75 (stopped, resumable), interrupted at step $k, checkpoint written"
else
    not_ok "SIGTERM: exit 75 and the interrupted message (status $st)" "$(tail -n 3 b.err)"
fi
kk=$(printf 'step-%07d' "${k:-0}")
check "the interrupt's checkpoint is latest" grep -qx "$kk" B/latest
check "it stopped before the end (step ${k:-?} < 12)" test "${k:-12}" -lt 12
run "$TR" $COMMON --eval_interval 5 --save_interval 4 --checkpoint_dir B --resume
expect "--resume runs to step 12" 0 "trained 12 of 12 steps"
losses B/metrics.jsonl > b.loss
if cmp -s a.loss b.loss; then
    ok "resumed run: every step's train/loss equals the uninterrupted run's, bit for bit"
else
    not_ok "resumed run: train/loss equals the uninterrupted run's" "$(diff a.loss b.loss | head -n 6 | tr '\n' '|')"
fi

# --- --recompute trades time for memory, never results
run "$TR" $COMMON --eval_interval 5 --recompute block --checkpoint_dir R
expect "--recompute block: 12 steps" 0 "trained 12 of 12 steps"
losses R/metrics.jsonl > r.loss
check "--recompute block: every step's train/loss equals the plain run's, bit for bit" cmp -s a.loss r.loss
check "--recompute block: the same validation loss at step 10" \
    test "$(val_at R/metrics.jsonl 10 val/loss)" = "$(val_at A/metrics.jsonl 10 val/loss)"
# --- --precision bf16: the cpu backend emulates it (fp32 master weights,
# values rounded where a GPU stores bf16); it learns as fp32 does, and a
# resumed run continues bit for bit
run "$TR" $COMMON --eval_interval 5 --save_interval 6 --precision bf16 --checkpoint_dir BF
expect "--precision bf16: 12 steps on the cpu backend" 0 "trained 12 of 12 steps"
if grep -q "trains in fp32" err; then fail "--precision bf16: no 'trains in fp32' warning"; else ok "--precision bf16: no 'trains in fp32' warning"; fi
losses BF/metrics.jsonl > bf.loss
check "--precision bf16: losses differ from fp32's (the rounding is real)" sh -c '! cmp -s a.loss bf.loss'
v32=$(val_at A/metrics.jsonl 10 val/loss)
v16=$(val_at BF/metrics.jsonl 10 val/loss)
if [ -n "$v32" ] && [ -n "$v16" ] && awk -v a="$v32" -v b="$v16" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.03 * a) }'; then
    ok "--precision bf16: validation loss at step 10 within 3% of fp32's ($v16 against $v32)"
else
    not_ok "--precision bf16: validation loss within 3% of fp32's" "bf16 '$v16', fp32 '$v32'"
fi
# resumed PREC FROM TO: a --precision PREC run resumed in TO from FROM's
# step-6 checkpoint runs to step 12 with FROM's train/loss, bit for bit
resumed() {
    mkdir -p "$3" && cp -r "$2/step-0000006" "$3/" && echo step-0000006 > "$3/latest"
    run "$TR" $COMMON --eval_interval 5 --save_interval 6 --precision "$1" --checkpoint_dir "$3" --resume
    expect "--precision $1: --resume from step 6 runs to step 12" 0 "trained 12 of 12 steps"
    losses "$2/metrics.jsonl" | awk '$1 > 6' > "$3.want"
    losses "$3/metrics.jsonl" > "$3.got"
    if [ -s "$3.got" ] && cmp -s "$3.want" "$3.got"; then
        ok "--precision $1: the resumed steps' train/loss equal the uninterrupted run's, bit for bit"
    else
        not_ok "--precision $1: resumed train/loss bit for bit" "$(diff "$3.want" "$3.got" | head -n 6 | tr '\n' '|')"
    fi
}
resumed bf16 BF BR

# --- ZeRO on one rank: --zero 1, 2 and 3 (with --offload: the optimizer's
# tensors, and the parameter shard, in a second cpu backend) shard over a
# world of one through the sharded code paths, so they take --zero 0's
# steps bit for bit (one micro-batch a step: stage 2's shard is 0 + the
# gradient); the checkpoint does not depend on the stage: a --zero 3 run
# resumes as --zero 0 bit for bit; DeepSpeed's offload rules refused
run "$TR" $COMMON --eval_interval 5 --save_interval 6 --zero 3 --offload all --reduce_bucket_size 1000 \
    --checkpoint_dir Z3
expect "--zero 3 --offload all: 12 steps" 0 "trained 12 of 12 steps"
losses Z3/metrics.jsonl > z3.loss
check "--zero 3 --offload all, buckets of 1000: every step's train/loss equals --zero 0's, bit for bit" \
    cmp -s a.loss z3.loss
check "... and the validation loss at step 10" \
    test "$(val_at Z3/metrics.jsonl 10 val/loss)" = "$(val_at A/metrics.jsonl 10 val/loss)"
for z in "1" "2 --offload optimizer"; do
    d=Z$(echo "$z" | tr -dc 0-9)
    run "$TR" $COMMON --eval_interval 5 --zero $z --checkpoint_dir "$d"
    losses "$d/metrics.jsonl" > "$d.loss"
    check "--zero $z: every step's train/loss equals --zero 0's, bit for bit" cmp -s a.loss "$d.loss"
done
mkdir -p Z0 && cp -r Z3/step-0000006 Z0/ && echo step-0000006 > Z0/latest
run "$TR" $COMMON --eval_interval 5 --save_interval 6 --zero 0 --checkpoint_dir Z0 --resume
expect "a --zero 3 checkpoint resumed with --zero 0 runs to step 12" 0 "trained 12 of 12 steps"
losses Z3/metrics.jsonl | awk '$1 > 6' > z0.want
losses Z0/metrics.jsonl > z0.got
check "... its train/loss equal the --zero 3 run's, bit for bit" sh -c 'test -s z0.got && cmp -s z0.want z0.got'
run "$TR" $COMMON --zero 2 --offload all --checkpoint_dir ZX
expect "--offload all at --zero 2 refused: it needs stage 3" 1 "offload_param \\(--offload all\\) needs ZeRO stage 3"
run "$TR" $COMMON --offload optimizer --checkpoint_dir ZX
expect "--offload optimizer at --zero 0 refused" 1 "needs ZeRO stage 1, 2 or 3"
run "$TR" $COMMON --offload nvme --checkpoint_dir ZX
expect "--offload with an unknown word: exit 2, the choices named" 2 "unknown offload 'nvme' \\(choices: none, optimizer, all\\)"
check "no run folder made by the refusals" test ! -e ZX

# --- --precision fp16: emulated as bf16 is (values rounded to fp16 where a
# GPU stores them), with DeepSpeed's dynamic loss scaling; it learns as
# fp32 does, every step records its loss scale, and a resumed run
# continues bit for bit
# "STEP VALUE" of TAG in every record of a metrics.jsonl that has it
series() {
    awk -v key="$2" '{
        if (!match($0, /"step": *[0-9]+/)) next
        s = substr($0, RSTART, RLENGTH); sub(/.*: */, "", s)
        if (!match($0, "\"" key "\": *[^,}]+")) next
        v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v); print s, v }' "$1" | sort -n
}
run "$TR" $COMMON --eval_interval 5 --save_interval 6 --precision fp16 --checkpoint_dir FP
expect "--precision fp16: 12 steps on the cpu backend" 0 "trained 12 of 12 steps"
if grep -q "trains in fp32" err; then fail "--precision fp16: no 'trains in fp32' warning"; else ok "--precision fp16: no 'trains in fp32' warning"; fi
losses FP/metrics.jsonl > fp.loss
check "--precision fp16: losses differ from fp32's and bf16's (the rounding is real)" \
    sh -c '! cmp -s a.loss fp.loss && ! cmp -s bf.loss fp.loss'
v16=$(val_at FP/metrics.jsonl 10 val/loss)
if [ -n "$v32" ] && [ -n "$v16" ] && awk -v a="$v32" -v b="$v16" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.03 * a) }'; then
    ok "--precision fp16: validation loss at step 10 within 3% of fp32's ($v16 against $v32)"
else
    not_ok "--precision fp16: validation loss within 3% of fp32's" "fp16 '$v16', fp32 '$v32'"
fi
series FP/metrics.jsonl train/loss_scale > fp.scale
check "--precision fp16: train/loss_scale for each of the 12 steps, 65536 (2^16, DeepSpeed's default start)" \
    test "$(awk '$2 == 65536' fp.scale | wc -l)" -eq 12 -a "$(wc -l < fp.scale)" -eq 12
check "--precision fp16: train/skipped_steps for each step, 0 (no overflow)" \
    test "$(series FP/metrics.jsonl train/skipped_steps | awk '$2 == 0' | wc -l)" -eq 12
resumed fp16 FP FR
# a forced overflow: 2^28 as the first scale overflows fp16 at once
# (hysteresis 2: the first overflow keeps the scale, each later halves it)
printf '{"fp16": {"enabled": true, "initial_scale_power": 28, "hysteresis": 2, "loss_scale_window": 3}}\n' > ds16.json
run "$TR" $COMMON --max_steps 16 --save_interval 1 --deepspeed ds16.json --checkpoint_dir OV
expect "fp16 overflow: the run trains to the end" 0 "trained 16 of 16 steps"
check "fp16 overflow: each skipped step is reported" grep -q "warning: step 1 skipped: fp16 gradient overflow at loss scale 2.68435e+08" err
series OV/metrics.jsonl train/loss_scale > ov.scale
series OV/metrics.jsonl train/skipped_steps > ov.skip
nskip=$(awk '{ print $2 }' ov.skip | tail -n 1)
# the first clean step: where skipped_steps stops rising
first=$(awk 'NR == 1 { p = 0 } { if ($2 == p) { print $1; exit } p = $2 }' ov.skip)
check "fp16 overflow: steps 1 to $((${first:-1} - 1)) skipped, then training (skipped_steps $nskip of 16)" \
    test -n "$first" -a "${first:-0}" -ge 3 -a "${nskip:-16}" -lt 16
check "fp16 overflow: the scale starts at 2^28 and is lowered before the first clean step" \
    test "$(sed -n 1p ov.scale)" = "1 268435456" -a "$(awk -v f="${first:-0}" '$1 == f { print ($2 < 268435456) }' ov.scale)" = 1
s1=OV/step-0000001; s2=$(printf 'OV/step-%07d' $((${first:-2} - 1))); s3=$(printf 'OV/step-%07d' "${first:-3}")
check "fp16 overflow: weights and moments after the skipped steps 1 and $((${first:-2} - 1)) are the same, byte for byte" \
    sh -c "cmp -s $s1/model.safetensors $s2/model.safetensors && cmp -s $s1/optimizer.safetensors $s2/optimizer.safetensors"
check "fp16 overflow: the first clean step ($first) changes them" sh -c "! cmp -s $s2/model.safetensors $s3/model.safetensors"
series OV/metrics.jsonl train/lr > ov.lr
# no warmup: the cosine schedule falls from step 1's rate at every step applied, and not at a skipped one
check "fp16 overflow: skipped steps do not advance the schedule (train/lr the same through step $first, lower after)" \
    awk -v f="${first:-0}" 'NR == 1 { lr1 = $2 } $1 <= f && $2 != lr1 { bad = 1 } $1 == f + 1 && $2 >= lr1 { bad = 1 }
        END { exit bad || NR != 16 || f < 2 }' ov.lr
check "fp16 overflow: the scaler's state is in trainer_state.json" \
    grep -q "\"loss_scaler\": *{\"dynamic\": *true" $s3/trainer_state.json
mkdir -p OR && cp -r OV/step-0000002 OR/ && echo step-0000002 > OR/latest
run "$TR" $COMMON --max_steps 16 --save_interval 1 --deepspeed ds16.json --checkpoint_dir OR --resume
expect "fp16 overflow: --resume from step 2 (in the overflows) runs to step 16" 0 "trained 16 of 16 steps"
series OR/metrics.jsonl train/loss_scale > or.scale
losses OV/metrics.jsonl > ov.loss
losses OR/metrics.jsonl > or.loss
if [ -s or.loss ] && awk '$1 > 2' ov.loss | cmp -s - or.loss && awk '$1 > 2' ov.scale | cmp -s - or.scale; then
    ok "fp16 overflow: the resumed run's train/loss and train/loss_scale equal the uninterrupted run's, bit for bit"
else
    not_ok "fp16 overflow: resumed train/loss and loss_scale bit for bit" \
        "$(awk '$1 > 2' ov.scale | diff - or.scale | head -n 6 | tr '\n' '|')"
fi

# PILE_HAVE_CUDA (meson): this build has the CUDA backend; nvidia-smi
# listing a GPU: the machine has a device, and auto trains on it
if [ "${PILE_HAVE_CUDA:-0}" = 1 ] && nvidia-smi -L 2> /dev/null | grep -q '^GPU'; then
    n=$((n + 1))
    echo "ok $n - # SKIP a CUDA device is here: --backend cuda and auto train on it (tests/gpu/ runs them)"
else
    run "$TR" $COMMON --backend cuda --checkpoint_dir CU
    if [ "${PILE_HAVE_CUDA:-0}" = 1 ]; then
        expect "--backend cuda without a CUDA device: exit 1, said so" 1 \
            "cannot open backend 'cuda': no CUDA device \\(cudaGetDeviceCount: "
    else
        expect "--backend cuda in a build without CUDA: exit 1, said so" 1 "this build has no CUDA backend"
    fi
    check "--backend cuda: no run folder made" test ! -e CU
    run "$TR" $COMMON --backend auto --max_steps 1 --checkpoint_dir AU
    expect "--backend auto trains on the cpu here" 0 "trained 1 of 1 steps"
    check "... its progress line and metrics.jsonl have no gpu memory (a device backend's)" \
        sh -c 'grep -q "^epoch 1/1 step 1/1 .* rss [0-9]* MiB$" err && ! grep -q " gpu " err && ! grep -q "gpu/" AU/metrics.jsonl'
    if [ "${PILE_HAVE_CUDA:-0}" = 1 ]; then
        expect "--backend auto in a CUDA build without a device: one notice, why and where it trains" 0 \
            "^pile-trainer: no CUDA device \\(cudaGetDeviceCount: .*\\): training on the cpu backend$"
        check "... said once" test "$(grep -c 'no CUDA device' err)" = 1
    else
        check "--backend auto in a build without CUDA: no notice" sh -c '! grep -q "CUDA" err'
    fi
fi

run "$TR" --recompute all --print-config
expect "--recompute refuses an unknown mode (exit 2), listing the modes" 2 "unknown recompute mode 'all'.*block"

# --- a second signal quits at once: both arrive while the process is
# stopped, so the handler sees them in turn whatever the timing. SIGINT is
# ignored in a background job of a non-interactive shell; env restores it.
if env --default-signal=INT true 2> /dev/null; then
    env --default-signal=INT "$TR" $COMMON --max_steps 100000 --save_interval 1 --checkpoint_dir S2 \
        > s2.out 2> s2.err &
    pid=$!
    wait_for S2/step-0000002/model.safetensors $pid
    kill -STOP $pid 2> /dev/null
    kill -TERM $pid 2> /dev/null
    kill -INT $pid 2> /dev/null
    kill -CONT $pid 2> /dev/null
    wait $pid
    st=$?
    if { [ $st -eq 130 ] || [ $st -eq 143 ]; } && grep -q "second signal: quitting without a checkpoint" s2.err &&
        ! grep -q "^interrupted at step" s2.err; then
        ok "a second signal quits at once (status $st), without writing a checkpoint"
    else
        not_ok "a second signal quits at once (status $st)" "$(tail -n 3 s2.err)"
    fi
    l=$(cat S2/latest 2> /dev/null)
    check "... the latest checkpoint is whole ($l)" test -n "$l" -a -s "S2/$l/model.safetensors" -a -s "S2/$l/trainer_state.json"
    run "$TR" $COMMON --max_steps 100000 --checkpoint_dir S2 --resume --max_steps 20
    expect "... and --resume continues from it" 0 "trained 20 of 20 steps"
else
    ok "# SKIP env --default-signal is missing: the two-signal check"
fi

# --- a signal during validation skips the validation, not the checkpoint:
# a whole val set per step makes validation most of the run's time, and the
# signal is sent as soon as step 1's progress line is out.
"$TR" $COMMON --eval_interval 1 --eval_rows 0 --checkpoint_dir V > v.out 2> v.err &
pid=$!
i=0
while ! grep -q "step 1/12" v.err 2> /dev/null && [ $i -lt 1200 ] && kill -0 $pid 2> /dev/null; do
    sleep 0.05
    i=$((i + 1))
done
kill -TERM $pid 2> /dev/null
wait $pid
st=$?
if [ $st -eq 75 ] && grep -q "^val: step 1 skipped (stopping)" v.err && grep -q "^interrupted at step 1:" v.err &&
    grep -q "stopping after this step" v.err; then
    ok "SIGTERM during validation: acknowledged, validation skipped, checkpoint of step 1 written"
else
    not_ok "SIGTERM during validation: validation skipped, checkpoint written (status $st)" "$(tail -n 4 v.err)"
fi
check "... step-0000001 is latest" grep -qx "step-0000001" V/latest
cr=$(printf '\r')
esc=$(printf '\033')
if grep -q "[$cr$esc]" v.err || grep -qx "" v.err; then
    not_ok "stderr off a terminal: no carriage return, escape or blank line" "$(head -n 5 v.err | od -c | head -n 3)"
else
    ok "stderr off a terminal: no carriage return, escape or blank line"
fi
if grep -q '"val/loss"' V/metrics.jsonl; then fail "... and no val record for it"; else ok "... and no val record for it"; fi

# --- refusals
run "$TR" $COMMON --checkpoint_dir empty --resume
expect "--resume without a checkpoint: exit 1" 1 "no checkpoint in 'empty' to resume from"
run "$TR" $COMMON --checkpoint_dir A
expect "a used checkpoint folder without --resume is refused" 1 "already holds a run.*--resume"
check "... and left as it was" grep -qx "step-0000012" A/latest
run "$TR" $COMMON --checkpoint_dir A --resume --batch_size 8 --max_steps 13
expect "--resume with another batch_size is refused, naming it" 1 "batch_size"
run "$TR" $COMMON --checkpoint_dir A --resume --n_embd 128 --max_steps 13
expect "--resume with another model is refused, naming the dimension" 1 "n_embd"
mkdir other && cp "$SRC/val.jsonl.zst" other/part.jsonl.zst
if "$TOK" train --vocab-size 300 -o tok.json other/part.jsonl.zst > out 2> err &&
    "$PREP" -q -o shards2 -L 64 -t tok.json other > out 2> err; then
    run "$TR" $COMMON --checkpoint_dir A --resume --data shards2 --max_steps 13
    expect "--resume on shards of another tokenizer is refused" 1 "tokenizer"
    run "$TR" eval --checkpoint A/best_model --data shards2 --threads 1
    expect "eval on shards of another tokenizer is refused" 1 "tokenizer"
    run "$TR" $COMMON --checkpoint_dir C --tokenizer tok.json
    expect "--tokenizer other than the shards' is refused" 1 "tokenizer"
else
    fail "make shards with another tokenizer"
fi
run "$TR" --data shards --model tiny --max_steps 4 --batch_size 4 --threads 1 --eval_rows 16 \
    --learning_rate 1e30 --gradient_clipping 0 --checkpoint_dir D
expect "a diverging run stops with an error naming the step" 1 "diverged at step [0-9]"

# --- a finished run says so, and trains nothing
cp -r A FIN
run "$TR" $COMMON --checkpoint_dir FIN --resume
expect "--resume of a finished run: exit 0, said finished" 0 \
    "the run is finished: checkpoint at step 12 of 12 steps; nothing to train"
expect "... the summary too" 0 "^nothing trained: the run was finished \\(step 12 of 12 steps\\)"
if grep -q "resuming at step\|trained 12 of 12" "$TMP/err" "$TMP/out"; then
    fail "... not 'resuming at step' nor 'trained 12 of 12'"
else
    ok "... not 'resuming at step' nor 'trained 12 of 12'"
fi
run "$TR" $COMMON --checkpoint_dir FIN --resume --max_steps 10
expect "--resume with max_steps below the checkpoint's step: said past the schedule" 0 \
    "nothing trained: the run was finished \\(step 12, past the schedule's 10 steps\\)"
if grep -q "trained 12 of 10" "$TMP/out"; then fail "... never 'trained 12 of 10 steps'"; else ok "... never 'trained 12 of 10 steps'"; fi

# --- nonsense schedules: min_lr above the peak refused, a warmup as long as the run warned
run "$TR" --learning_rate 0.01 --min_lr 0.1 --print-config
expect "min_lr above learning_rate: refused (exit 2)" 2 "min_lr 0.1 is above learning_rate 0.01"
run "$TR" $COMMON --max_steps 3 --warmup_steps 5 --checkpoint_dir WU
expect "--warmup_steps 5 for a 3-step run: warned" 0 \
    "warning: the warmup \\(5 steps\\) is not shorter than the run \\(3 steps\\).*never reaches learning_rate"
run "$TR" $COMMON --max_steps 3 --warmup_steps 2 --checkpoint_dir WU2
if grep -q "warning: the warmup" "$TMP/err"; then fail "no such warning for a warmup shorter than the run"; else ok "no such warning for a warmup shorter than the run"; fi

# --- resuming with another learning rate is allowed and said
cp -r A A2
run "$TR" $COMMON --checkpoint_dir A2 --resume --learning_rate 1e-3 --max_steps 13
expect "--resume with another learning_rate: warned, naming both values" 0 \
    "warning: resuming with learning_rate 0.001, where the checkpoint's run had 0.0006"
expect "... and it trains on" 0 "trained 13 of 13 steps"
check "... on stderr, not stdout" sh -c "grep -q 'resuming with' '$TMP/err' && ! grep -q 'resuming with' '$TMP/out'"
run "$TR" $COMMON --checkpoint_dir A2 --resume --learning_rate 1e-3 --max_steps 14
if grep -q "warning: resuming with" "$TMP/err"; then fail "no such warning when nothing changed"; else ok "no such warning when nothing changed"; fi

# --- a damaged shard (ids past the vocabulary, the token data overwritten
# with 0xff) stops training with a message naming the folder: in format
# version 1, which has no row checksums, by the ids themselves
# damage DIR: the first 80% of each train shard's token data (from byte 4096) overwritten with 0xff
damage() {
    for f in "$1"/train-*.shard; do
        blocks=$(($(wc -c < "$f") * 8 / 10 / 4096))
        head -c $((blocks * 4096)) /dev/zero | tr '\000' '\377' | dd of="$f" bs=4096 seek=1 conv=notrunc 2> /dev/null
    done
}
mkdir bad && cp shards/train-*.shard shards/manifest.json bad/
"$STOOL" to-v1 bad/train-*.shard
damage bad
run "$TR" $COMMON --data bad --checkpoint_dir BAD
expect "a damaged shard: exit 1, the id, the folder and pile-dump --verify named" 1 \
    "token id 65535 in train sample [0-9]+ .*outside the vocabulary of 257: the shards in 'bad' are damaged.*pile-dump --verify"
# in version 2, by the row's checksum, before the ids are looked at
mkdir bad2 && cp shards/train-*.shard shards/manifest.json bad2/
damage bad2
run "$TR" $COMMON --data bad2 --checkpoint_dir BAD2
expect "a damaged version 2 shard: exit 1, the shard, the row and both checksums named" 1 \
    "cannot use train sample [0-9]+: 'bad2/train-00000.shard': row [0-9]+ fails its checksum \(computed [0-9a-f]{16}, the shard records [0-9a-f]{16}\)"

# --- every row is checked before its first use. A small folder of real
# documents whose whole epoch is one step (batch 16 x 64 micro-batches), so
# that the damaged row is in step 1 whatever the order.
mkdir small
zstd -dc "$SRC/train/00.jsonl.zst" | awk 'length($0) < 600' > small/train.jsonl
zstd -dc "$SRC/val.jsonl.zst" | awk 'length($0) < 800' > small/val.jsonl
if ! "$PREP" -q -o sm -L 64 small/train.jsonl small/val.jsonl > out 2> err; then
    echo "Bail out! pile-prep of the small folder failed: $(cat err)"
    exit 1
fi
ONE="--model tiny --batch_size 16 --accumulation_steps 64 --threads 1 --eval_rows 16 --seed 7"
tokens_of() { sed -n 's/^tokens trained on: //p' "$1" | tr -d ,; }
run "$TR" $ONE --data sm --max_length 32 --checkpoint_dir R0
expect "the small folder: one step is the epoch" 0 "trained 1 of 1 steps"
t0=$(tokens_of "$TMP/out")
cp -r sm smbad
# one bit of the token at position 10 of row 5 (64 two-byte tokens a row, data at 4096)
"$STOOL" flip smbad/train-00000.shard $((4096 + 5 * 128 + 20))
run "$TR" $ONE --data smbad --checkpoint_dir R1
expect "a flipped bit in a row: exit 1, naming the shard, the row and both checksums" 1 \
    "cannot use train sample [0-9]+: 'smbad/train-00000.shard': row 5 fails its checksum \(computed [0-9a-f]{16}, the shard records [0-9a-f]{16}\).*--skip_corrupt_rows"
if [ ! -e R1/latest ] && ! grep -q '"train/loss"' R1/metrics.jsonl 2> /dev/null; then
    ok "... before the row was used: no step ran, no checkpoint was written"
else
    fail "... before the row was used: no step ran, no checkpoint was written"
fi
run "$TR" $ONE --data smbad --max_length 32 --skip_corrupt_rows --checkpoint_dir R2
expect "--skip_corrupt_rows: the run finishes" 0 "trained 1 of 1 steps"
expect "... and reports one skipped row (its two 32-token samples)" 0 "^corrupt rows skipped: 1 \(2 samples left out\)"
expect "... naming it once on stderr" 0 \
    "warning: skipping a corrupt row \(1 so far\): 'smbad/train-00000.shard': row 5 fails its checksum"
check "... once" test "$(grep -c "skipping a corrupt row" "$TMP/err")" -eq 1
t2=$(tokens_of "$TMP/out")
check "... it trained on every token but the row's 63 targets ($t0 - $t2)" test "$((t0 - t2))" -eq 63
check "... metrics.jsonl: data/corrupt_rows 1" grep -q '"data/corrupt_rows": *1[,}]' R2/metrics.jsonl
run "$TR" $ONE --data sm --skip_corrupt_rows --checkpoint_dir R4
expect "--skip_corrupt_rows on whole shards: nothing skipped, said so" 0 "^corrupt rows skipped: 0 \(0 samples left out\)"
check "... metrics.jsonl: data/corrupt_rows 0" grep -q '"data/corrupt_rows": *0[,}]' R4/metrics.jsonl
# A step's first micro-batch is read ahead, with every check, during the
# step before (and staged while that one computes): a damaged row there
# stops the run at that step, before it runs, named as above, and is
# skipped once with --skip_corrupt_rows. One micro-batch a step; with seed
# 2, row 5 is first read for step 10 (flipped: in its second sample).
AHEAD="--model tiny --batch_size 16 --threads 1 --eval_rows 16 --max_length 32 --log_interval 1 --seed 2 --max_steps 12"
run "$TR" $AHEAD --data sm --checkpoint_dir RA0
t0=$(tokens_of "$TMP/out")
cp -r sm smbad2
"$STOOL" flip smbad2/train-00000.shard $((4096 + 5 * 128 + 80))
run "$TR" $AHEAD --data smbad2 --checkpoint_dir RA1
expect "a damaged row in a micro-batch read ahead: exit 1, naming the shard, the row and both checksums" 1 \
    "cannot use train sample [0-9]+: 'smbad2/train-00000.shard': row 5 fails its checksum \(computed [0-9a-f]{16}, the shard records [0-9a-f]{16}\)"
check "... at step 10, before it ran (9 steps recorded)" test "$(grep -c '"train/loss"' RA1/metrics.jsonl)" -eq 9
run "$TR" $AHEAD --data smbad2 --skip_corrupt_rows --checkpoint_dir RA2
expect "... --skip_corrupt_rows: the run finishes, the row skipped once (its one sample in these steps)" 0 \
    "^corrupt rows skipped: 1 \(1 samples left out\)"
check "... named once" test "$(grep -c "skipping a corrupt row" "$TMP/err")" -eq 1
t2=$(tokens_of "$TMP/out")
check "... it trained on every token but the sample's 31 targets ($t0 - $t2)" test "$((t0 - t2))" -eq 31
# in format version 1 (no row checksums), by the ids
cp -r sm smv1bad
"$STOOL" to-v1 smv1bad/*.shard
"$STOOL" flip smv1bad/train-00000.shard $((4096 + 5 * 128 + 81))
run "$TR" $AHEAD --data smv1bad --checkpoint_dir RA3
expect "a version 1 row read ahead with an id past the vocabulary: exit 1, the id, the sample, the folder named" 1 \
    "token id 265 in train sample [0-9]+ \(position 8\) is outside the vocabulary of 257: the shards in 'smv1bad' are damaged"
check "... at step 10, before it ran (9 steps recorded)" test "$(grep -c '"train/loss"' RA3/metrics.jsonl)" -eq 9
# format version 1: read, with one warning that its rows cannot be verified
cp -r sm smv1
"$STOOL" to-v1 smv1/*.shard
run "$TR" $ONE --data smv1 --checkpoint_dir R3
expect "version 1 shards: trained on" 0 "trained 1 of 1 steps"
expect "... with a warning that their rows cannot be verified, and how to regenerate" 0 \
    "warning: 2 of the 2 shards in 'smv1' are of format version 1, whose rows carry no checksums: they cannot be verified as they are read; run pile-prep again"
check "... once" test "$(grep -c "format version 1" "$TMP/err")" -eq 1

# --- eval: the best model's loss is the validation the run recorded for it
best=$(grep -o '"step": *[0-9]*' A/best_model/trainer_state.json | head -n 1 | sed 's/.*: *//')
want=$(val_at A/metrics.jsonl "${best:-x}" val/loss)
run "$TR" eval --checkpoint A/best_model --eval_rows 64 --threads 1 --json
got=$(sed -n 's/.*"loss": *\([^,}]*\).*/\1/p' "$TMP/out")
if [ $st -eq 0 ] && [ -n "$want" ] && [ -n "$got" ] &&
    awk -v a="$want" -v b="$got" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-12 * (a < 0 ? -a : a)) }'; then
    ok "eval --json on best_model (step $best): loss $got, as recorded"
else
    fail "eval --json on best_model: loss '$got', recorded '$want' at step '${best:-?}'"
fi
run "$TR" eval --checkpoint A/best_model --eval_rows 64 --threads 1
expect "eval prints loss, accuracy, perplexity and tokens" 0 "loss [0-9.]+ accuracy [0-9.]+ perplexity [0-9.]+ tokens [0-9]+"
expect "... and which val samples: the first 64, as --eval_rows says" 0 "the first 64 of [0-9]+ val samples: --eval_rows"
# without --eval_rows: the run's own eval_rows (64), so the recorded loss again
run "$TR" eval --checkpoint A/best_model --threads 1 --json
got3=$(sed -n 's/.*"loss": *\([^,}]*\).*/\1/p' "$TMP/out")
if [ $st -eq 0 ] && [ -n "$got3" ] && [ "$got3" = "$got" ] && grep -q '"samples": 64,.*"samples_from": "checkpoint"' "$TMP/out"; then
    ok "eval without --eval_rows takes the checkpoint's (64): the recorded loss"
else
    fail "eval without --eval_rows takes the checkpoint's (64): loss '$got3', recorded '$want'"
fi
run "$TR" eval --checkpoint A/best_model --threads 1
expect "... and says so" 0 "\\(the first 64 of [0-9]+ val samples: the checkpoint's eval_rows\\)"
# the checkpoint records its data folder as an absolute path: eval works from anywhere
(cd / && "$TR" eval --checkpoint "$TMP/A/best_model" --eval_rows 64 --threads 1 --json) > out 2> err
st=$?
got2=$(sed -n 's/.*"loss": *\([^,}]*\).*/\1/p' out)
if [ $st -eq 0 ] && [ "$got2" = "$got" ]; then
    ok "eval from another folder finds the shards through the checkpoint"
else
    fail "eval from another folder finds the shards through the checkpoint (status $st)"
fi
run "$TR" eval --checkpoint nowhere
expect "eval of a missing checkpoint: exit 1" 1 "nowhere"

# --- --threads past the cores: capped with a warning (32768 once failed in
# libgomp, 65536 segfaulted)
run "$TR" $COMMON --max_steps 2 --threads 65536 --checkpoint_dir TH
expect "--threads 65536: capped, said, and the run trains" 0 \
    "warning: --threads 65536 is more than the [0-9]+ cores? this process may use; using [0-9]+"
expect "... to its end" 0 "trained 2 of 2 steps"
run "$TR" eval --checkpoint A/best_model --eval_rows 8 --threads 65536
expect "eval --threads 65536: capped, said" 0 "warning: --threads 65536 is more than .*using [0-9]+"
run "$TR" sample --checkpoint A/step-0000012 --prompt "x" --max_new_tokens 3 --threads 2147483647
expect "sample --threads 2147483647: capped, said" 0 "warning: --threads 2147483647 is more than .*using [0-9]+"

# --- sample
run "$TR" sample --checkpoint A/step-0000012 --prompt "In the beginning" --max_new_tokens 24 --seed 3 --threads 1
cp out s1
if [ $st -eq 0 ] && grep -q "^In the beginning" s1 && [ "$(wc -c < s1)" -gt 18 ]; then
    ok "sample prints the prompt and a continuation"
else
    fail "sample prints the prompt and a continuation"
fi
run "$TR" sample --checkpoint A/step-0000012 --prompt "In the beginning" --max_new_tokens 24 --seed 3 --threads 1
check "the same seed gives the same text" cmp -s s1 out
run "$TR" sample --checkpoint A/step-0000012 --prompt "x" --max_new_tokens 5 --temperature 0 --threads 1
expect "greedy sampling (--temperature 0)" 0 "^x"

# --- a step of more micro-batches than any fixed table would hold (the
# loop once kept their sizes in an array of 1024), ending in the epoch's
# partial micro-batch
run "$TR" --data shards --model tiny --max_length 16 --batch_size 3 --accumulation_steps 1500 --max_steps 1 \
    --eval_rows 8 --threads 1 --checkpoint_dir ACC
expect "accumulation_steps 1500: one step over the whole epoch" 0 "trained 1 of 1 steps"

# ===== nothing lost: the run folder, checkpoints' checksums, resume fallbacks,
# signals (issues 13 and 15)

# flip FILE BACK: changes one byte, BACK bytes before the end of FILE
flip() {
    fsz=$(wc -c < "$1")
    off=$((fsz - $2))
    b=$(od -An -tu1 -j "$off" -N 1 "$1" | tr -d ' ')
    printf "\\$(printf %03o $((b ^ 90)))" | dd of="$1" bs=1 seek="$off" conv=notrunc 2> /dev/null
}
# wait_line FILE PATTERN PID: until FILE holds a line matching PATTERN (or PID ends, or 60 s)
wait_line() {
    i=0
    while ! grep -q "$2" "$1" 2> /dev/null && [ $i -lt 1200 ] && kill -0 "$3" 2> /dev/null; do
        sleep 0.05
        i=$((i + 1))
    done
}
LONG="--data shards --model tiny --max_steps 100000 --batch_size 4 --threads 1 --eval_rows 16 --seed 7"

# --- one run per folder: a second is refused at once, naming the holder;
# after kill -9 a new run starts as it is, a killed save's leftover removed
"$TR" $LONG --checkpoint_dir LK > lk.out 2> lk.err &
pid=$!
wait_line lk.err "step 1/" $pid
run "$TR" $COMMON --checkpoint_dir LK
expect "a second trainer on a folder in use: exit 1, the holder named" 1 \
    "folder 'LK' is in use by pile-trainer \(pid $pid on host "
if grep -q "pile-trainer: model" "$TMP/err"; then fail "... refused before opening anything"; else ok "... refused before opening anything"; fi
kill -KILL $pid 2> /dev/null
wait $pid 2> /dev/null
mkdir LK/step-0000003.tmp LK/keep.tmp && echo x > LK/step-0000003.tmp/model.safetensors && echo mine > LK/keep.tmp/f
run "$TR" $COMMON --max_steps 2 --checkpoint_dir LK
expect "after kill -9 a new run on the folder starts without cleanup" 0 "trained 2 of 2 steps"
expect "... a killed save's step-0000003.tmp removed, saying so" 0 "removed 'LK/step-0000003.tmp', left by a run killed"
check "... gone, and a folder not named as ours (keep.tmp) kept" test ! -e LK/step-0000003.tmp -a -s LK/keep.tmp/f

# --- signals: SIGUSR1 writes a checkpoint and training goes on; SIGHUP stops
# like SIGTERM; a stopped run exits 75
"$TR" $LONG --checkpoint_dir H > h.out 2> h.err &
pid=$!
wait_line h.err "step 2/" $pid
kill -USR1 $pid 2> /dev/null
wait_line h.err "written (SIGUSR1); training goes on" $pid
u=$(sed -n "s/^pile-trainer: checkpoint 'H\/\(step-[0-9]*\)' written (SIGUSR1).*/\1/p" h.err | head -n 1)
check "SIGUSR1: a checkpoint ($u), verified by its checksums" sh -c "test -n '$u' && test -s 'H/$u/checksums.json' && \
    '$TR' eval --checkpoint 'H/$u' --eval_rows 8 --threads 1 > /dev/null"
check "... and the run goes on" kill -0 $pid
# under nohup SIGHUP comes ignored, and the trainer rightly keeps it so
# (a shell cannot undo that for its children): SIGTERM stands in then
hup=HUP
case $(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status 2> /dev/null) in
*[13579bdf]) hup=TERM; echo "# SIGHUP is ignored in this environment (nohup): SIGTERM sent instead" ;;
esac
kill -$hup $pid 2> /dev/null
wait $pid
st=$?
k=$(sed -n 's/^interrupted at step \([0-9]*\):.*/\1/p' h.err)
check "SIG$hup: exit 75 (stopped, resumable), checkpoint of step ${k:-?} written" \
    sh -c "test $st -eq 75 && test -n '$k' && grep -qx \"\$(printf 'step-%07d' '${k:-0}')\" H/latest"
run "$TR" --help
expect "--help documents exit status 75" 0 "75 \(stopped, resumable\)"

# --- a validation a signal skips is owed: at the last step (the run ends
# inside an epoch) and at an epoch's end; the resumed run does it first and
# ends with the uninterrupted run's best_model. E: a small train set (one
# step per epoch) with the sample's validation shard.
i=0
while [ $i -lt 40 ]; do
    printf '{"text": "Document %d: the quick brown fox jumps over the lazy dog, then runs home to sleep until %d."}\n' $i $i
    i=$((i + 1))
done > fox.jsonl
mkdir fox && mv fox.jsonl fox/a.jsonl
if "$PREP" -q -o Efox -L 64 fox > out 2> err; then
    mkdir E && cp Efox/train-00000.shard Efox/manifest.json E/ && cp shards/val-00000.shard E/
else
    fail "pile-prep of a small train set"
fi
LAST="--data shards --model tiny --max_steps 2 --batch_size 4 --threads 1 --eval_rows 500 --seed 7"
EPOCH="--data E --model tiny --epochs 2 --batch_size 4 --accumulation_steps 32 --threads 1 --eval_rows 500 --seed 7"
for kind in last epoch; do
    if [ $kind = last ]; then opts=$LAST; at=2; else opts=$EPOCH; at=1; fi
    run "$TR" $opts --checkpoint_dir P$kind-u
    # a log of its own: the shell may start watching before the child has created it
    "$TR" $opts --checkpoint_dir P$kind > p$kind.out 2> p$kind.err &
    pid=$!
    wait_line p$kind.err "step $at/2" $pid
    kill -TERM $pid 2> /dev/null
    wait $pid
    st=$?
    if [ $st -eq 75 ] && grep -q "^val: step $at skipped (stopping); the resumed run does it first" p$kind.err; then
        ok "SIGTERM during the validation of step $at ($kind): skipped, owed, exit 75"
    else
        not_ok "SIGTERM during the validation of step $at ($kind): skipped, owed, exit 75 (status $st)" \
            "$(tail -n 3 p$kind.err)"
    fi
    run "$TR" $opts --checkpoint_dir P$kind --resume
    expect "... --resume validates step $at first" 0 "step $at's validation was skipped when the run stopped: doing it first"
    check "... its val/loss is the uninterrupted run's" \
        test -n "$(val_at P$kind/metrics.jsonl $at val/loss)" -a \
        "$(val_at P$kind/metrics.jsonl $at val/loss)" = "$(val_at P$kind-u/metrics.jsonl $at val/loss)"
    check "... and best_model/ is the uninterrupted run's, byte for byte" \
        cmp -s P$kind/best_model/model.safetensors P$kind-u/best_model/model.safetensors
done
b=$(grep -o '"step": *[0-9]*' Plast-u/best_model/trainer_state.json | head -n 1 | sed 's/.*: *//')
check "(the best of the uninterrupted run is the skipped validation's step 2: step $b)" test "$b" = 2

# --- checksums: a flipped byte in the newest checkpoint's model or optimizer
# file: --resume names it and continues from the one before, bit for bit
for f in model optimizer; do
    rm -rf R && cp -r A R
    flip R/step-0000012/$f.safetensors 100
    run "$TR" eval --checkpoint R/step-0000012 --eval_rows 8 --threads 1
    [ $f = model ] && expect "eval of a checkpoint with a flipped byte: refused, the file named" 1 \
        "checkpoint 'R/step-0000012' is damaged: 'model.safetensors' has checksum"
    [ $f = model ] && { run "$TR" sample --checkpoint R/step-0000012 --prompt x --threads 1
        expect "sample of it: refused, the file named" 1 "'model.safetensors' has checksum"; }
    run "$TR" $COMMON --eval_interval 5 --save_interval 4 --checkpoint_dir R --resume
    expect "a flipped byte in the newest $f.safetensors: named" 0 \
        "warning: checkpoint 'R/step-0000012' is damaged: '$f.safetensors' has checksum [0-9a-f]+, its checksums.json lists"
    expect "... --resume continues from the one before, saying so" 0 "resuming from 'R/step-0000008' \(step 8\)"
    losses R/metrics.jsonl > r.loss
    check "... to step 12, every loss the uninterrupted run's" cmp -s a.loss r.loss
done
rm -rf R && mkdir R && cp -r A/step-0000004 R/ && echo step-0000004 > R/latest
flip R/step-0000004/model.safetensors 100
run "$TR" $COMMON --checkpoint_dir R --resume
expect "with only one checkpoint, damaged: --resume refuses, naming the file" 1 \
    "checkpoint 'R/step-0000004' is damaged: 'model.safetensors' .*; no older checkpoint in 'R' passes its checks"

# --- resume fallbacks said aloud
rm -rf R && cp -r A R && rm -r R/step-0000012
run "$TR" $COMMON --eval_interval 5 --save_interval 4 --checkpoint_dir R --resume
expect "'latest' naming a missing folder: said" 0 "'R/latest' names 'step-0000012', which does not exist"
expect "... and the folder resumed from named" 0 "resuming from 'R/step-0000008' at step 8"
rm -rf R && cp -r A R && rm R/step-0000012/trainer_state.json
run "$TR" $COMMON --eval_interval 5 --save_interval 4 --checkpoint_dir R --resume
expect "a newest folder without trainer_state.json: said, and the one before taken" 0 \
    "'R/step-0000012' has no readable trainer_state.json .*skipped"
# a rollback past the best: best_model/ and the summary's best are the
# continued run's (here it barely learns, so its best is worse than the
# discarded run's best_model)
rm -rf R && cp -r A R && rm -r R/step-0000012 && echo step-0000008 > R/latest
run "$TR" $COMMON --eval_interval 5 --save_interval 4 --checkpoint_dir R --resume --learning_rate 1e-9
expect "a rollback: the discarded run's best_model/ moved aside, said" 0 \
    "'R/best_model' \(step 12, val loss [0-9.]+\) is not the best model of the run being continued .*past step 8"
best_now=$(grep -o '"best_val_loss": *[^,]*' R/best_model/trainer_state.json | sed 's/.*: *//')
min_val=$(awk '/"val\/loss"/ { if (match($0, /"val\/loss": *[^,}]+/)) { v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v); if (m == "" || v + 0 < m + 0) m = v } } END { print m }' R/metrics.jsonl)
check "... best_model/ holds the continued run's best ($best_now = min val/loss $min_val)" \
    awk -v a="$best_now" -v b="$min_val" 'BEGIN { exit !(a != "" && a + 0 == b + 0) }'
check "... the summary reports that best" grep -q "best val loss: $(printf '%.4f' "$best_now")" "$TMP/out"
check "... the discarded one kept in best_model-discarded/" test -s R/best_model-discarded/model.safetensors

# --- the data a run trains on: other shards refused on --resume unless
# --allow_data_change; an unfinished pile-prep folder refused
mkdir M && cp shards/* M/ && cp E/train-00000.shard M/train-00001.shard
rm -rf R && cp -r A R
run "$TR" $COMMON --checkpoint_dir R --resume --data M
expect "--resume on other shards: refused, the difference named" 1 \
    "the shards in 'M' are not the ones it was trained on: 'train-00001.shard' is new.*--allow_data_change"
run "$TR" $COMMON --checkpoint_dir R --resume --data M --allow_data_change --max_steps 13
expect "... --allow_data_change resumes on them, warned" 0 "warning: resuming from .* on other shards"
mkdir INC && cp shards/* INC/ && sed 's/"complete": true/"complete": false/' shards/manifest.json > INC/manifest.json
run "$TR" $COMMON --data INC --checkpoint_dir INCR
expect "an unfinished pile-prep folder: refused, saying what to run" 1 \
    "the shards in 'INC' are unfinished.*run the same pile-prep command again"

# --- --save_total_limit 2 (Hugging Face's name, also in --config): of five
# step checkpoints the two newest stay, with best_model/ and the epochs'
printf '{"save_total_limit": 2}\n' > lim.json
run "$TR" --config lim.json --print-config
expect "save_total_limit read from --config" 0 '"save_total_limit": *2'
run "$TR" --data E --model tiny --epochs 2 --batch_size 4 --accumulation_steps 2 --threads 1 --eval_rows 32 \
    --seed 7 --save_interval 1 --save_total_limit 2 --checkpoint_dir L2
expect "a run with save_total_limit 2" 0 "trained [0-9]+ of [0-9]+ steps"
expect "... older step checkpoints deleted, said" 0 "deleted 'L2/step-0000001' \(save_total_limit 2\)"
steps=$(ls -d L2/step-* | tr '\n' ' ')
check "... two step checkpoints left ($steps), best_model/ and epoch-001/ epoch-002/ kept" \
    sh -c "test \$(ls -d L2/step-* | wc -l) -eq 2 && test -d L2/best_model -a -d L2/epoch-001 -a -d L2/epoch-002"
# eval and sample also take the run folder or its latest file: the newest checkpoint there
newest=$(cat L2/latest)
run "$TR" eval --checkpoint L2 --threads 1
expect "eval --checkpoint RUNFOLDER: the newest checkpoint, named" 0 "checkpoint 'L2/$newest' \(the newest in 'L2'\)"
run "$TR" sample --checkpoint L2/latest --prompt "The" --max_new_tokens 4 --threads 1
expect "sample --checkpoint RUNFOLDER/latest: the same" 0 "checkpoint 'L2/$newest' \(the newest in 'L2'\)"
run "$TR" sample --checkpoint L2/nothing-here --prompt "The" --threads 1
expect "... a checkpoint that does not exist: said so" 1 "cannot open checkpoint 'L2/nothing-here': No such file"

# --- the tokenizer is read at start: its source deleted mid-run, later
# checkpoints still carry it; and a run whose tokenizer is gone fails before
# step 1. (The run is stopped meanwhile, so that the checkpoint awaited is
# written after the deletion.)
if [ -s tok.json ] && cp tok.json tok3.json && "$PREP" -q -o shards3 -L 64 -t "$TMP/tok3.json" other > out 2> err; then
    "$TR" --data shards3 --model tiny --max_steps 100000 --batch_size 4 --threads 1 --eval_rows 8 --seed 7 \
        --save_interval 2 --checkpoint_dir T3 > t3.out 2> t3.err &
    pid=$!
    wait_for T3/step-0000002/checksums.json $pid
    kill -STOP $pid 2> /dev/null
    rm tok3.json
    find shards3 -type f ! -name '*.shard' ! -name manifest.json -exec rm {} +
    # the checkpoint after next: the one being written at the stop may have copied its tokenizer before
    num=$(sed 's/step-0*//' T3/latest)
    next=$(printf 'step-%07d' $((num + 4)))
    kill -CONT $pid 2> /dev/null
    wait_for T3/$next/checksums.json $pid
    kill -TERM $pid 2> /dev/null
    wait $pid
    check "the tokenizer deleted mid-run: $next still carries it, byte for byte" cmp -s tok.json T3/$next/tokenizer/tok3.json
    run "$TR" sample --checkpoint T3/$next --prompt "In the" --max_new_tokens 8 --threads 1
    expect "... and samples with it" 0 "^In the"
    run "$TR" --data shards3 --model tiny --max_steps 2 --threads 1 --checkpoint_dir T4
    expect "a run whose tokenizer is gone: refused before step 1, naming it" 1 \
        "'shards3/manifest.json': cannot find the recorded tokenizer 'tokenizer/tok3.json'"
    if grep -q "step 1/" "$TMP/err"; then fail "... before step 1"; else ok "... before step 1"; fi
else
    fail "shards of a tokenizer file (tok3.json)"
fi

# --- a checkpoint that cannot be written after training began (the run
# folder gone: a file stands in its place): the state goes to --fallback_dir,
# the error names the cause and what to do, and --resume continues from it
"$TR" $LONG --checkpoint_dir FB --fallback_dir FBK > fb.out 2> fb.err &
pid=$!
wait_line fb.err "step 2/" $pid
kill -STOP $pid 2> /dev/null
mv FB FB.moved && echo "in the way" > FB
kill -USR1 $pid 2> /dev/null
kill -CONT $pid 2> /dev/null
wait $pid
st=$?
s=$(sed -n "s/.*saved in 'FBK\/\(step-[0-9]*\)'.*/\1/p" fb.err | head -n 1)
if [ $st -eq 1 ] && [ -n "$s" ] && grep -q "cannot write checkpoint '$s': cannot .* 'FB/$s.tmp': Not a directory" fb.err; then
    ok "a checkpoint failing mid-run: exit 1, the cause named, the state saved in 'FBK/$s'"
else
    not_ok "a checkpoint failing mid-run: exit 1, the cause named, the state in the fallback (status $st)" "$(tail -n 2 fb.err)"
fi
num=$(echo "$s" | sed 's/step-0*//')
rm FB && mv FB.moved FB && mv "FBK/$s" FB/ && echo "$s" > FB/latest
run "$TR" $LONG --max_steps $((num + 2)) --checkpoint_dir FB --resume
expect "... moved back as the error says, --resume continues from it" 0 "resuming from 'FB/$s' at step $num "

tap_done
