#!/bin/sh
# Overlapped collectives (overlap_comm: the communicator's thread reduces
# gradient buckets while the backward computes earlier layers, and gathers
# ZeRO 3's next layer during this one) against blocking ones
# (--no_overlap_comm), under `pile-trainer launch --nproc 2` (the tcp
# communicator, no MPI needed), on shards of the bundled sample: at each
# ZeRO stage, in buckets small enough that most of them are reduced during
# the backward, over 2 micro-batches with dropout, the two runs' losses,
# weights and optimizer state are the same bits. Then a rank killed
# mid-run: the other's thread fails its collective, and that rank exits
# non-zero naming the operation and the ranks instead of hanging.
#   trainer_overlap.sh PILE_TRAINER PILE_PREP PYTHON
# Speaks TAP; exits 77 without the sample data, numpy, or `launch`.
set -u
. "$(dirname "$0")/tap.sh"
TR=$(abs "$1")
PREP=$(abs "$2")
PY=$3
CMP=$(abs "$(dirname "$0")/dp_compare.py")
SRC=${PILE_SOURCE_ROOT:-.}/data/sample
tap_skip_unless "no sample data at $SRC" "$SRC/val.jsonl.zst" "$SRC/train/00.jsonl.zst"
SRC=$(abs "$SRC")
tap_skip_unless_numpy "$PY"
if ! "$TR" launch --help > /dev/null 2>&1; then
    echo "1..0 # SKIP this pile-trainer has no launch command"
    exit 77
fi
tap_tmpdir trainer-overlap
cd "$TMP" || exit 1
if ! "$PREP" -q -o shards -L 64 -t bytes "$SRC" > out 2> err; then
    echo "Bail out! pile-prep failed: $(cat err)"
    exit 1
fi
# the tiny model has 120,640 parameters: buckets of 5,000 per rank cut
# each rank's half into 13 (stage 0: allreduces of 2 x 5,000)
COMMON="--data shards --model tiny --max_steps 6 --threads 1 --dropout 0.1 --eval_interval 6 --eval_rows 61
        --save_interval 6 --log_interval 1 --seed 7 --batch_size 2 --accumulation_steps 2 --reduce_bucket_size 5000"

for z in "0" "1" "2" "3" "3 --offload all"; do
    d=z$(echo "$z" | tr -d ' -')
    # shellcheck disable=SC2086
    run "$TR" launch --nproc 2 $COMMON --zero $z --no_overlap_comm --checkpoint_dir $d-block
    expect "--zero $z, blocking: trains" 0 "trained 6 of 6 steps"
    # shellcheck disable=SC2086
    run "$TR" launch --nproc 2 $COMMON --zero $z --overlap_comm --checkpoint_dir $d-overlap
    expect "--zero $z, overlapped: trains" 0 "trained 6 of 6 steps"
    if "$PY" "$CMP" "$d-block" "$d-overlap" step-0000006 0 > cmp.txt 2>&1; then
        ok "... the blocking run's losses, weights and optimizer state bit for bit"
    else
        not_ok "... the blocking run's losses, weights and optimizer state bit for bit"
    fi
    sed 's/^/# /' cmp.txt
done

# SIGKILL to rank 1 mid-run at stage 2 (its buckets on the thread): rank 0
# fails within the grace period, naming the collective and the dead rank
# shellcheck disable=SC2086
"$TR" launch --nproc 2 --grace 60 $COMMON --max_steps 100000 --eval_interval 0 --save_interval 0 --zero 2 --overlap_comm \
    --checkpoint_dir killed > kill.out 2> kill.err &
lp=$!
i=0
steps=0
while [ "${steps:-0}" -lt 3 ] && [ $i -lt 1200 ] && kill -0 $lp 2> /dev/null; do
    sleep 0.05
    i=$((i + 1))
    steps=$(grep -c '"train/loss"' killed/metrics.jsonl 2> /dev/null)
done
signal_rank $lp RANK=1 KILL
wait $lp
st=$?
if [ $st -ne 0 ] && grep -q "pile-trainer launch: rank 1 (pid [0-9]*) was killed by signal 9" kill.err &&
    grep -Eq "rank 0: .*cannot (reduce-scatter|all-gather|allreduce|broadcast) \(rank 0 of 2\): rank 1 " kill.err &&
    ! grep -q "sending SIGTERM" kill.err; then
    ok "SIGKILL to rank 1, overlapped: rank 0 fails by itself, naming the collective and rank 1 (status $st)"
else
    not_ok "SIGKILL to rank 1, overlapped: rank 0 fails by itself, naming the collective and rank 1 (status $st)" \
        "$(tail -n 4 kill.err)"
fi
grep -E "rank 0: |launch: rank 1" kill.err | sed 's/^/# /'

tap_done
