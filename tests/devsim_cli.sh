#!/bin/sh
# The host side of a device run, checked without a device: pile-trainer on
# the devsim backend (the cpu's operations on memory the host cannot read
# or write: any host dereference of a tensor faults) trains as on the cpu
# backend, bit for bit: every step's metrics (losses, gradient norms,
# learning rates, fp16 loss scales and skips, validation) and every
# checkpoint file (model, optimizer), in fp32 with gradient accumulation,
# clipping, an evaluation and a checkpoint each epoch and best_model; bf16
# with --doc-mask, dropout; fp16 with the loss scaler's overflows and
# --recompute; ZeRO 1, 2 and 3 at world size 1, with optimizer and
# parameter offload (stage 2 and 3's gradient add: on the device in fp32,
# through the host when emulating 16 bits or into an offloaded shard). A
# devsim run resumed from its step-6 checkpoint continues bit for bit;
# eval of its checkpoint (on the backend it records) and sample --backend
# devsim equal the cpu's. devsim's staged uploads land only at stage_wait,
# their tensors poisoned until then, so these runs also check that the
# trainer waits for each staged batch (training's, validation's, eval's)
# before reading it. devsim16 stores
# the compute tensors in 16 bits, as a device does: its bf16 and fp16 runs
# (ZeRO too) equal the cpu's emulation, bit for bit. On 2 ranks (mpirun,
# and `pile-trainer launch`: the "devsim" communicator, which takes device
# buffers only, over "mpi" or "tcp"), ZeRO 0 to 3, with optimizer and
# parameter offload, overlap_comm and buckets, equal the cpu's 2-rank
# runs bit for bit, and so do their resumed runs; their collectives go on
# devsim's comm stream, which makes them only when the ops wait for it
# (outputs poisoned until then), so these runs also check the optimizer's
# orderings of communication and compute. Under a sanitizer about half of
# these runs are skipped (tap.sh: plain_only); those left still take
# every ZeRO stage, both devsim backends, offload, overlap, resume and
# both launchers.
#   devsim_cli.sh PILE_TRAINER PILE_PREP [HAVE_MPI(1|0)]
# Speaks TAP; exits 77 when the sample data is absent; the mpirun cases
# skip without mpirun or an MPI build.
set -u
. "$(dirname "$0")/tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
HAVE_MPI=${3:-0}
SRC=${PILE_SOURCE_ROOT:-.}/data/sample
tap_skip_unless "no sample data at $SRC" "$SRC/val.jsonl.zst" "$SRC/train/00.jsonl.zst"
SRC=$(abs "$SRC")
tap_tmpdir devsim-cli
cd "$TMP" || exit 1

# two train documents and one val document: 16 optimizer steps an epoch at
# batch 8, accumulation 2, 64-token rows
mkdir -p in/train
zstd -dc "$SRC/train/00.jsonl.zst" | head -n 2 > in/train/00.jsonl
zstd -dc "$SRC/val.jsonl.zst" | head -n 1 > in/val.jsonl
if ! "$PREP" -q -o shards -L 64 -t bytes in > out 2> err; then
    echo "Bail out! pile-prep failed: $(cat err)"
    exit 1
fi

# metrics.jsonl without what depends on the clock or on the backend's kind
# (time, rates, MFU, memory)
metrics() {
    sed -E 's/"(time|train\/tokens_per_sec|train\/mfu|mem\/[a-z_]+|gpu\/[a-z_]+)": *[^,}]*,? *//g' "$1"
}

COMMON="--data shards --model tiny --threads 1 --eval_rows 32 --seed 7"
# pair NAME ARGS...: NAME-cpu and NAME-dev train with ARGS on the cpu and
# the $DEV backend, started by $RUN (one process, mpirun, launch); the
# $DEV run's metrics and checkpoint files must be the cpu run's, bit for
# bit
DEV=devsim
RUN=$TR
pair() {
    name=$1
    shift
    run $RUN $COMMON "$@" --backend cpu --checkpoint_dir "$name-cpu"
    cst=$st
    run $RUN $COMMON "$@" --backend $DEV --checkpoint_dir "$name-dev"
    if [ $cst -eq 0 ] && [ $st -eq 0 ] && grep -q "^epoch .* gpu [0-9]*/[0-9]* MiB" err; then
        ok "$name: trains on the cpu and on $DEV (device memory in its progress line)"
    else
        fail "$name: trains on both backends (cpu status $cst, $DEV $st)"
        return
    fi
    metrics "$name-cpu/metrics.jsonl" > "$name.cpu.m"
    metrics "$name-dev/metrics.jsonl" > "$name.dev.m"
    if [ -s "$name.cpu.m" ] && cmp -s "$name.cpu.m" "$name.dev.m"; then
        ok "$name: $DEV's metrics ($(wc -l < "$name.cpu.m") records) equal the cpu's, bit for bit"
    else
        not_ok "$name: $DEV's metrics equal the cpu's" "$(diff "$name.cpu.m" "$name.dev.m" | head -n 4 | tr '\n' '|')"
    fi
    files=$(cd "$name-cpu" && find . -name '*.safetensors' | sort)
    bad=""
    for f in $files; do cmp -s "$name-cpu/$f" "$name-dev/$f" || bad="$bad $f"; done
    if [ -n "$files" ] && [ -z "$bad" ]; then
        ok "$name: its $(echo $files | wc -w) checkpoint tensor files equal the cpu's, byte for byte"
    else
        not_ok "$name: checkpoint files equal the cpu's" "differ or missing:${bad:- no files}"
    fi
}

# resumed NAME ARGS...: NAME-dev's step-6 checkpoint resumed on $DEV
# with ARGS continues as NAME-dev did, bit for bit
resumed() {
    name=$1
    shift
    mkdir -p "$name-res" && cp -r "$name-dev/step-0000006" "$name-res/" && echo step-0000006 > "$name-res/latest"
    run $RUN $COMMON "$@" --backend $DEV --checkpoint_dir "$name-res" --resume
    losses "$name-dev/metrics.jsonl" | awk '$1 > 6' > "$name.want"
    losses "$name-res/metrics.jsonl" > "$name.got"
    if [ $st -eq 0 ] && [ -s "$name.got" ] && cmp -s "$name.want" "$name.got"; then
        ok "$name: resumed on $DEV from step 6, its train/loss equal the uninterrupted run's, bit for bit"
    else
        not_ok "$name: resumed on $DEV bit for bit (status $st)" \
            "$(diff "$name.want" "$name.got" | head -n 4 | tr '\n' '|')" "$(tail -n 2 err)"
    fi
    if cmp -s "$name-dev/step-0000012/model.safetensors" "$name-res/step-0000012/model.safetensors"; then
        ok "$name: ... and its step-12 model equals the uninterrupted run's"
    else
        not_ok "$name: ... and its step-12 model equals the uninterrupted run's"
    fi
}

SHORT="--max_steps 12 --batch_size 4 --eval_interval 5 --save_interval 6"
pair fp32 --epochs 2 --batch_size 8 --accumulation_steps 2 --gradient_clipping 0.5
check "fp32: a checkpoint each epoch and best_model" \
    test -s fp32-dev/epoch-001/model.safetensors -a -s fp32-dev/epoch-002/model.safetensors \
    -a -s fp32-dev/best_model/model.safetensors
check "fp32: two validations" test "$(grep -c '"val/loss"' fp32.dev.m)" -eq 2
plain_only 3 bf16 && pair bf16 $SHORT --precision bf16 --doc-mask --dropout 0.1
plain_only 2 bf16-resumed && resumed bf16 $SHORT --precision bf16 --doc-mask --dropout 0.1
pair fp16 $SHORT --precision fp16 --initial_scale_power 24 --recompute block --accumulation_steps 2
check "fp16: the loss scaler skipped overflowing steps" grep -q "skipped" fp16.dev.m
resumed fp16 $SHORT --precision fp16 --initial_scale_power 24 --recompute block --accumulation_steps 2
plain_only 3 zero1 && pair zero1 $SHORT --zero 1
plain_only 3 zero1off && pair zero1off $SHORT --zero 1 --offload optimizer
plain_only 3 zero2 && pair zero2 $SHORT --zero 2 --reduce_bucket_size 1000
plain_only 3 zero3 && pair zero3 $SHORT --zero 3 --precision fp16 --accumulation_steps 2
plain_only 2 zero3-resumed && resumed zero3 $SHORT --zero 3 --precision fp16 --accumulation_steps 2
pair zero3off $SHORT --zero 3 --offload all --precision bf16 --reduce_bucket_size 1000

# devsim16: compute tensors stored in bf16 / fp16 as a device stores them
# (the ops widen them to fp32 and round their output back: where the cpu's
# emulation rounds), so the paths of 16-bit parameters run too: their
# initialisation, conversions to and from fp32 masters and checkpoints,
# ZeRO's staging and gathers
DEV=devsim16
pair bf16n $SHORT --precision bf16 --doc-mask --dropout 0.1
plain_only 2 bf16n-resumed && resumed bf16n $SHORT --precision bf16 --doc-mask --dropout 0.1
plain_only 3 fp16n && pair fp16n $SHORT --precision fp16 --initial_scale_power 24 --recompute block --accumulation_steps 2
pair zero2n $SHORT --zero 2 --precision fp16 --accumulation_steps 2 --reduce_bucket_size 1000
pair zero3n $SHORT --zero 3 --offload all --precision bf16 --reduce_bucket_size 1000
resumed zero3n $SHORT --zero 3 --offload all --precision bf16 --reduce_bucket_size 1000

# 2 ranks: the devsim backends' tensors go to the "devsim" communicator
# (device buffers only: a host buffer handed to it fails the run naming
# the call), over "mpi" under mpirun and "tcp" under launch
DEV=devsim
MPIRUN=""
if [ "$HAVE_MPI" = 1 ] && command -v mpirun > /dev/null 2>&1; then
    MPIRUN="mpirun --oversubscribe"
    [ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
    # Open MPI's own allocations left at MPI_Finalize are not the trainer's leaks
    [ -n "${ASAN_OPTIONS:-}" ] && MPIRUN="$MPIRUN -x ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0"
fi
if [ -n "$MPIRUN" ]; then
    RUN="$MPIRUN -np 2 $TR"
    pair mpi0 $SHORT --zero 0 --accumulation_steps 2 --gradient_clipping 0.5
    check "mpi0: the devsim run says its communicator" grep -q "on each of 2 ranks (devsim)" err
    pair mpi1off $SHORT --zero 1 --offload optimizer --overlap_comm --reduce_bucket_size 1000
    plain_only 3 mpi2 && pair mpi2 $SHORT --zero 2 --overlap_comm --reduce_bucket_size 1000 --accumulation_steps 2
    plain_only 2 mpi2-resumed && resumed mpi2 $SHORT --zero 2 --overlap_comm --reduce_bucket_size 1000 --accumulation_steps 2
    pair mpi3 $SHORT --zero 3 --precision fp16 --accumulation_steps 2
    resumed mpi3 $SHORT --zero 3 --precision fp16 --accumulation_steps 2
    plain_only 3 mpi3off && pair mpi3off $SHORT --zero 3 --offload all --precision bf16 --reduce_bucket_size 1000 --overlap_comm
    DEV=devsim16
    pair mpi3n $SHORT --zero 3 --offload optimizer --precision bf16 --overlap_comm --reduce_bucket_size 1000
    DEV=devsim
else
    for c in mpi0 mpi1off mpi2 mpi2-res mpi3 mpi3-res mpi3off mpi3n; do
        case $c in *-res) k=2 ;; mpi0) k=4 ;; *) k=3 ;; esac
        while [ $k -gt 0 ]; do
            n=$((n + 1))
            echo "ok $n - $c: 2 ranks under mpirun # SKIP no mpirun, or this build has no MPI"
            k=$((k - 1))
        done
    done
fi
RUN="$TR launch --nproc 2"
pair tcp3 $SHORT --zero 3 --offload optimizer --precision bf16 --reduce_bucket_size 1000
check "tcp3: the devsim run says its communicator" grep -q "on each of 2 ranks (devsim)" err
resumed tcp3 $SHORT --zero 3 --offload optimizer --precision bf16 --reduce_bucket_size 1000
RUN=$TR

# eval runs on the backend the checkpoint records
check "fp32: the devsim run's checkpoint records its backend" \
    grep -q '"backend": *"devsim"' fp32-dev/best_model/trainer_state.json
# (its batches staged, the next while one computes; batch 5: a short last one)
for how in "" "--batch_size 5"; do
    run "$TR" eval --checkpoint fp32-cpu/best_model --json $how
    cp out eval.cpu
    run "$TR" eval --checkpoint fp32-dev/best_model --json $how
    if [ $st -eq 0 ] && grep -q '"loss"' out && cmp -s eval.cpu out; then
        ok "eval${how:+ $how} of the devsim run's best_model, on devsim: the cpu's numbers, bit for bit"
    else
        fail "eval${how:+ $how} on devsim equals the cpu's (status $st)"
    fi
done
for how in "--temperature 0" "--top_k 5 --seed 3"; do
    run "$TR" sample --checkpoint fp32-cpu/best_model --prompt "The " --max_new_tokens 24 $how --backend cpu
    cp out sample.cpu
    run "$TR" sample --checkpoint fp32-cpu/best_model --prompt "The " --max_new_tokens 24 $how --backend devsim
    if [ $st -eq 0 ] && [ -s out ] && cmp -s sample.cpu out; then
        ok "sample --backend devsim ($how): the cpu's text"
    else
        fail "sample --backend devsim ($how): the cpu's text (status $st)"
    fi
done
tap_done
