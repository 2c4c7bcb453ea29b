#!/bin/sh
# Data parallelism at ZeRO stage 0 with real processes, on shards of the
# bundled sample (bytes tokenizer, 64-token rows): mpirun --oversubscribe
# with 2 and 4 ranks trains the tiny model 20 steps (dropout on, so that
# each micro-batch's mask is checked too) with the global batch of a
# 1-rank run (2 x 4 = 2 x 2 x 2 ranks = 2 x 1 x 4 ranks); losses and final
# weights equal the 1-rank run's to 1e-5 (dp_compare.py says how), in fp16
# with overflows too; rank 0 alone prints and writes; a 2-rank run resumed
# from its step-10 checkpoint ends bit for bit where the uninterrupted one
# did, and so does one stopped by SIGTERM to rank 1 alone; DeepSpeed's
# "auto" takes the launcher's world size; a world_size the launcher did not
# start is refused before any folder; a damaged row that one rank reads
# stops every rank, that rank saying which row (or, with --skip_corrupt_rows,
# is named by that rank and counted); `pile-trainer launch --nproc 2` (the
# tcp communicator) trains as mpirun's ranks do, and a rank whose rank 0
# never comes fails at --dist_timeout naming the address. Under a
# sanitizer the 4-rank runs and ZeRO 1 and 2 are skipped (tap.sh:
# plain_only).
#   trainer_dp.sh PILE_TRAINER PILE_PREP PYTHON SHARD_TOOL HAVE_MPI(1|0)
# Speaks TAP; exits 77 without the sample data, mpirun, numpy, or an MPI
# build of pile-trainer.
set -u
. "$(dirname "$0")/tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
PY=$3
STOOL=$(abs "$4")
HAVE_MPI=$5
CMP=$(abs "$(dirname "$0")/dp_compare.py")
SRC=${PILE_SOURCE_ROOT:-.}/data/sample
tap_skip_unless "no sample data at $SRC" "$SRC/val.jsonl.zst" "$SRC/train/00.jsonl.zst"
SRC=$(abs "$SRC")
if [ "$HAVE_MPI" != 1 ] || ! command -v mpirun > /dev/null 2>&1; then
    echo "1..0 # SKIP no mpirun, or this build has no MPI (tools/install-deps.sh installs Open MPI)"
    exit 77
fi
tap_skip_unless_numpy "$PY"
# compare NAME RUN_A RUN_B CHECKPOINT TOLERANCE [OPTION...]: dp_compare.py's verdict, its figures as a comment
compare() {
    name=$1
    shift
    if "$PY" "$CMP" "$@" > "$TMP/cmp" 2>&1; then ok "$name"; else not_ok "$name"; fi
    sed 's/^/# /' "$TMP/cmp"
}
tap_tmpdir trainer-dp
cd "$TMP" || exit 1
# ranks may outnumber the cores; as root (CI's containers) mpirun wants it said
MPIRUN="mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
# Under ASan: Open MPI's own allocations left at MPI_Finalize are not the
# trainer's leaks (its own are checked by every 1-rank test)
[ -n "${ASAN_OPTIONS:-}" ] && MPIRUN="$MPIRUN -x ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0"

if ! "$PREP" -q -o shards -L 64 -t bytes "$SRC" > out 2> err; then
    echo "Bail out! pile-prep failed: $(cat err)"
    exit 1
fi
COMMON="--data shards --model tiny --max_steps 20 --threads 1 --dropout 0.1 --eval_interval 10 --eval_rows 61
        --save_interval 10 --log_interval 1 --seed 7"

# shellcheck disable=SC2086
run "$TR" $COMMON --batch_size 2 --accumulation_steps 4 --checkpoint_dir one
expect "1 rank, batch 2 x 4: trains" 0 "trained 20 of 20 steps"

# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --batch_size 2 --accumulation_steps 2 --checkpoint_dir two
expect "2 ranks, batch 2 x 2 each: trains" 0 "trained 20 of 20 steps"
expect "... and says so, with the global batch" 0 "batch 2 x 2 on each of 2 ranks \(mpi\), 8 rows a step"
check "... rank 0 alone prints the progress and the summary" \
    test "$(grep -c 'step 20/20' err)" -eq 1 -a "$(grep -c 'trained 20 of 20' out)" -eq 1
compare "... the same losses and weights as 1 rank (1e-5)" one two step-0000020 1e-5
check "... one metrics file, one line per step and validation" test "$(grep -c '"train/loss"' two/metrics.jsonl)" -eq 20

# (under a sanitizer, tap.sh's plain_only: the 4-rank runs and ZeRO 1 and
# 2 run in the plain build only; ZeRO 3 with offload takes their paths)
if plain_only 2 "4 ranks, batch 2 x 1 each"; then
    # shellcheck disable=SC2086
    run $MPIRUN -np 4 "$TR" $COMMON --batch_size 2 --accumulation_steps 1 --checkpoint_dir four
    expect "4 ranks, batch 2 x 1 each: trains" 0 "trained 20 of 20 steps"
    compare "... the same losses and weights as 1 rank (1e-5)" one four step-0000020 1e-5
fi

# ZeRO over processes: each stage on 2 ranks trains as 1 rank does, its
# checkpoints sharded (each rank's optimizer-RRRRR-of-00002 file)
for z in "1" "2 --offload optimizer" "3 --offload all"; do
    d=zero$(echo "$z" | cut -c1)
    [ $d = zero3 ] || plain_only 3 "2 ranks, --zero $z" || continue
    # shellcheck disable=SC2086
    run $MPIRUN -np 2 "$TR" $COMMON --batch_size 2 --accumulation_steps 2 --zero $z --checkpoint_dir $d
    expect "2 ranks, --zero $z: trains" 0 "trained 20 of 20 steps"
    compare "... the same losses and weights as 1 rank (1e-5)" one $d step-0000020 1e-5
    check "... each rank's optimizer shard in the checkpoint" \
        test -f $d/step-0000020/optimizer-00000-of-00002.safetensors -a -f $d/step-0000020/optimizer-00001-of-00002.safetensors
done
# a 2-rank ZeRO 2 checkpoint resumed on 4 ranks at ZeRO 3: the shards regrouped
if plain_only 2 "4 ranks at --zero 3 resume a 2-rank --zero 2 checkpoint"; then
    cp -r zero2 regroup
    rm -rf regroup/step-0000020 regroup/best_model
    echo step-0000010 > regroup/latest
    # shellcheck disable=SC2086
    run $MPIRUN -np 4 "$TR" $COMMON --batch_size 2 --accumulation_steps 1 --zero 3 --checkpoint_dir regroup --resume
    expect "4 ranks at --zero 3 resume a 2-rank --zero 2 checkpoint" 0 "trained 20 of 20 steps"
    compare "... and end where the 2-rank run did, to 1e-5" zero2 regroup step-0000020 1e-5
fi

# resume: the step-10 checkpoint of the 2-rank run, continued on 2 ranks
cp -r two resumed
rm -rf resumed/step-0000020 resumed/best_model
echo step-0000010 > resumed/latest
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --batch_size 2 --accumulation_steps 2 --checkpoint_dir resumed --resume
expect "2 ranks resume from step 10" 0 "resuming from .*step-0000010"
compare "... and end bit for bit where the uninterrupted run did" two resumed step-0000020 0
# another split of the same global batch is taken, and said
if plain_only 2 "4 ranks resume a 2-rank run with the same global batch"; then
    cp -r two split
    rm -rf split/step-0000020 split/best_model
    echo step-0000010 > split/latest
    # shellcheck disable=SC2086
    run $MPIRUN -np 4 "$TR" $COMMON --batch_size 2 --accumulation_steps 1 --checkpoint_dir split --resume
    expect "4 ranks resume a 2-rank run with the same global batch, saying so" 0 \
        "resuming with batch_size x accumulation_steps x world_size 2 x 1 x 4, where the checkpoint's run had 2 x 2 x 2"
    compare "... and end where it did, to 1e-5" two split step-0000020 1e-5
fi
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --batch_size 2 --accumulation_steps 1 --checkpoint_dir resumed --resume
expect "another global batch is refused on resume, naming it" 1 "global batch .* was 2 x 2 x 2 = 8 and is 2 x 1 x 2 = 4"

# SIGTERM to rank 1 alone: every rank stops after the same step, rank 0
# writes the checkpoint, exit 75; resumed, the run ends bit for bit where
# the uninterrupted one did. The run validates every step (slow steps, so
# that the signal lands mid-run; validation does not touch the training
# state) and is signalled once step-0000004 exists.
# shellcheck disable=SC2086
$MPIRUN -np 2 "$TR" $COMMON --batch_size 2 --accumulation_steps 2 --eval_interval 1 --eval_rows 400 \
    --save_interval 4 --checkpoint_dir sig > sig.out 2> sig.err &
mp=$!
i=0
while [ ! -e sig/step-0000004/model.safetensors ] && [ $i -lt 2400 ] && kill -0 $mp 2> /dev/null; do
    sleep 0.05
    i=$((i + 1))
done
# rank 1: the child of mpirun whose environment says so
signal_rank $mp OMPI_COMM_WORLD_RANK=1 TERM
wait $mp
st=$?
k=$(sed -n 's/^interrupted at step \([0-9]*\):.*/\1/p' sig.err)
if [ $st -eq 75 ] && [ -n "$k" ] && [ "$k" -lt 20 ] && [ "$(grep -c '^interrupted at step' sig.err)" -eq 1 ]; then
    ok "SIGTERM to rank 1: every rank stops at step $k, exit 75, said once"
else
    not_ok "SIGTERM to rank 1: every rank stops, exit 75 (status $st)" "$(tail -n 3 sig.err)"
fi
check "... the checkpoint of that step is latest" grep -qx "$(printf 'step-%07d' "${k:-0}")" sig/latest
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --batch_size 2 --accumulation_steps 2 --checkpoint_dir sig --resume
expect "... resumed, it trains to step 20" 0 "trained 20 of 20 steps"
compare "... and ends bit for bit where the uninterrupted run did" two sig step-0000020 0 train

# fp16 with a scale that overflows at first: the steps the 1-rank run
# skips are skipped on both ranks of the 2-rank run (an overflow on any
# rank is one on every rank), and the runs stay equal
printf '{"fp16": {"enabled": true, "initial_scale_power": 28, "hysteresis": 1}}\n' > ds16.json
# shellcheck disable=SC2086
run "$TR" $COMMON --deepspeed ds16.json --batch_size 2 --accumulation_steps 4 --checkpoint_dir one16
expect "fp16, 1 rank: the first steps overflow and are skipped" 0 "step 1 skipped: fp16 gradient overflow"
skips1=$(grep -c "skipped: fp16 gradient overflow" "$TMP/err")
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --deepspeed ds16.json --batch_size 2 --accumulation_steps 2 --checkpoint_dir two16
skips2=$(grep -c "skipped: fp16 gradient overflow" "$TMP/err")
check "fp16, 2 ranks: the same $skips1 steps skipped, said once each (by rank 0)" \
    test "$skips1" -gt 0 -a "$skips1" -eq "$skips2" -a "$(grep -c '"train/skipped_steps"' two16/metrics.jsonl)" -eq 20
# (the weights to fp16's step, 2^-11 ~ 4.9e-4: see dp_compare.py)
compare "... the same losses as 1 rank (1e-5), the weights to fp16's rounding" one16 two16 step-0000020 1e-5 \
    weights=4.9e-4

# DeepSpeed's "auto" resolves with the launcher's world size: 16 rows a
# step of micro-batches of 2 on 2 ranks is 4 accumulation steps
printf '{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": "auto"}\n' \
    > ds.json
run $MPIRUN -np 2 "$TR" --deepspeed ds.json --print-config
check "ds_config \"auto\" under mpirun -np 2: accumulation_steps 16 / (2 x 2) = 4, world_size 2 (each rank)" \
    test "$(grep -c '"accumulation_steps": *4,' "$TMP/out")" -eq 2 -a "$(grep -c '"world_size": *2,' "$TMP/out")" -eq 2

# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --world_size 3 --checkpoint_dir never
expect "a world_size the launcher did not start is refused" 1 "world_size 3"
check "... before any folder exists" test ! -e never

# a damaged validation row in rank 1's share (2 ranks split the 61 rows
# evaluated 31 + 30: row 40 is rank 1's); 64 two-byte tokens a row, data at 4096
cp -r shards bad
"$STOOL" flip bad/val-00000.shard $((4096 + 40 * 128 + 20))
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --data bad --checkpoint_dir badrun
expect "a damaged row rank 1 reads: every rank stops before step 1" 1 \
    "rank 1: cannot use validation sample 40: 'bad/val-00000.shard': row 40 fails its checksum"
# (rank 0's own "stopping: rank 1 of 2 failed" races with mpirun, which
# ends the job as soon as one rank exits non-zero)
check "... no step ran" test ! -e badrun/latest -a ! -s badrun/metrics.jsonl
# shellcheck disable=SC2086
run $MPIRUN -np 2 "$TR" $COMMON --data bad --skip_corrupt_rows --checkpoint_dir skiprun
expect "--skip_corrupt_rows: the run finishes" 0 "trained 20 of 20 steps"
expect "... rank 1 names the row" 0 "rank 1: skipping a corrupt row \(1 so far\): 'bad/val-00000.shard': row 40"
check "... once" test "$(grep -c "skipping a corrupt row" "$TMP/err")" -eq 1
expect "... and rank 0's summary counts it (left out of both validations)" 0 \
    "^corrupt rows skipped: 1 \(2 samples left out\)"

# The environment launch (torchrun's variables, no MPI: the tcp
# communicator), where this pile-trainer has `launch`
if "$TR" launch --help > /dev/null 2>&1; then
    # shellcheck disable=SC2086
    run "$TR" launch --nproc 2 $COMMON --batch_size 2 --accumulation_steps 2 --checkpoint_dir tcp2
    expect "pile-trainer launch --nproc 2 (tcp): trains" 0 "batch 2 x 2 on each of 2 ranks \(tcp\), 8 rows a step"
    compare "... the same losses and weights as 1 rank (1e-5)" one tcp2 step-0000020 1e-5
    # shellcheck disable=SC2086
    run "$TR" launch --nproc 2 $COMMON --data bad --checkpoint_dir badtcp
    expect "... a damaged row rank 1 reads: rank 0 stops too, saying which rank failed" 1 \
        "rank 0: stopping: rank 1 of 2 failed"
    # rank 1 of torchrun's environment with no rank 0 anywhere: --dist_timeout is the rendezvous's deadline
    port=$((20000 + $$ % 20000))
    # shellcheck disable=SC2086
    run env RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        "$TR" $COMMON --dist_timeout 2 --checkpoint_dir lone
    expect "... rank 1 without rank 0: fails at --dist_timeout 2, naming the address" 1 \
        "cannot reach rank 0 at '127.0.0.1:$((port + 1))' \(MASTER_ADDR, MASTER_PORT \+ 1\) within 2 s"
else
    for c in "pile-trainer launch --nproc 2 (tcp): trains" "... the same losses and weights as 1 rank" \
        "... a damaged row rank 1 reads: rank 0 stops too" "... rank 1 without rank 0: fails at --dist_timeout 2"; do
        n=$((n + 1))
        echo "ok $n - $c # SKIP this pile-trainer has no launch command"
    done
fi

tap_done
