#!/bin/sh
# pile_comm between real processes (tests/test_comm_ranks.c): every
# collective on 2, 3 and 4 ranks under mpirun and under `pile-trainer
# launch` (the "tcp" communicator), against the result computed in one
# process; a rank killed mid-collective ends the job with a failure that
# names it, never a hang; under tcp, a rank that stops answering makes
# every other one fail within the timeout, and a rendezvous nobody comes
# to fails naming the address.
#   comm_ranks.sh TEST_COMM_RANKS HAVE_MPI(1|0) PILE_TRAINER
# Speaks TAP. Without mpirun (or a build without MPI) the mpirun checks
# are skipped, and say so.
set -u
. "$(dirname "$0")/tap.sh"
RANKS=$1
HAVE_MPI=$2
TRAINER=$3
tap_tmpdir comm-ranks
# A job that outlives this is a hang: the deadline ends it with a failure.
DEADLINE=120

# ok_ranks NAME NP COMM: every rank printed "rank R: ok (COMM"
ok_ranks() {
    if [ $st -eq 0 ] && [ "$(grep -c ": ok ($3," "$TMP/out")" -eq "$2" ]; then ok "$1"; else fail "$1 (status $st)"; fi
}
# survivors_say NAME NP VICTIM PATTERN: every rank but VICTIM printed a line
# "rank R: ..." matching PATTERN
survivors_say() {
    missing=""
    r=0
    while [ $r -lt "$2" ]; do
        if [ $r -ne "$3" ] && ! grep -Eq "^rank $r: .*$4" "$TMP/err"; then missing="$missing $r"; fi
        r=$((r + 1))
    done
    [ -z "$missing" ] || { echo "# no message matching '$4' from rank(s)$missing"; return 1; }
}

# ------------------------------------------------------------------ mpirun
# Open MPI refuses root without --allow-run-as-root; --oversubscribe: more
# ranks than this machine's cores.
MPIRUN=""
if [ "$HAVE_MPI" = 1 ] && command -v mpirun >/dev/null; then
    MPIRUN="mpirun --oversubscribe"
    [ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
    # Under ASan: Open MPI leaks at MPI_Finalize, in components it has
    # unloaded by then, which LeakSanitizer cannot name to suppress; our
    # own code's leaks are checked by the same program under tcp.
    [ -n "${ASAN_OPTIONS:-}" ] && MPIRUN="$MPIRUN -x ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0"
fi
if [ -n "$MPIRUN" ]; then
    for np in 2 3 4; do
        run timeout $DEADLINE $MPIRUN -np $np "$RANKS" check mpi
        ok_ranks "mpirun -np $np: every collective on every rank equals the one-process result" $np mpi
    done
    # rank 1 of 3 kills itself inside its 3rd allreduce: mpirun ends the
    # job with a failure that names the rank
    start=$(date +%s)
    run timeout $DEADLINE $MPIRUN -np 3 "$RANKS" die 1 3
    took=$(( $(date +%s) - start ))
    if [ $st -ne 0 ] && [ $st -ne 124 ] && grep -q "rank 1" "$TMP/out" "$TMP/err"; then
        ok "mpirun -np 3, rank 1 killed mid-allreduce: the job fails (status $st) in ${took}s, naming rank 1"
    else
        fail "mpirun -np 3, rank 1 killed mid-allreduce (status $st, ${took}s)"
    fi
    # rank 2 of 3 fails on its own (an error, not a signal) while the others
    # wait for it in an allreduce: it says why and abandons the communicator
    # (no MPI_Finalize, which would wait for them), and mpirun ends the job
    start=$(date +%s)
    run timeout $DEADLINE $MPIRUN -np 3 "$RANKS" fail 2 5
    took=$(( $(date +%s) - start ))
    if [ $st -ne 0 ] && [ $st -ne 124 ] && grep -q "rank 2: failing alone before allreduce 5" "$TMP/err"; then
        ok "mpirun -np 3, rank 2 fails alone: it says so and the job ends (status $st) in ${took}s, not a hang"
    else
        fail "mpirun -np 3, rank 2 fails alone (status $st, ${took}s; 124: the job hung)"
    fi
else
    echo "# skipped the mpirun checks: no mpirun, or this build has no MPI (tools/install-deps.sh installs Open MPI)"
fi

# ------------------------------------------------------ launch (tcp)
for np in 2 3 4; do
    run timeout $DEADLINE "$TRAINER" launch --nproc $np --run "$RANKS" check tcp
    ok_ranks "launch --nproc $np (tcp): every collective on every rank equals the one-process result" $np tcp
done

# rank 1 of 3 killed mid-allreduce: the others see its connection close and
# fail at once, long before the timeout, each naming the call
start=$(date +%s)
run timeout $DEADLINE "$TRAINER" launch --nproc 3 --grace 5 --run "$RANKS" die 1 3 --timeout 60
took=$(( $(date +%s) - start ))
if [ $st -ne 0 ] && [ $st -ne 124 ] && [ $took -lt 60 ] &&
    grep -q "launch: rank 1 (pid [0-9]*) was killed by signal 9" "$TMP/err" &&
    survivors_say x 3 1 "cannot allreduce .*rank [0-9]"; then
    ok "launch --nproc 3, rank 1 killed mid-allreduce: ranks 0 and 2 fail naming the call and a peer, in ${took}s (timeout 60 s)"
else
    fail "launch --nproc 3, rank 1 killed mid-allreduce (status $st, ${took}s)"
fi

# rank 1 of 3 stops (SIGSTOP) mid-allreduce: no connection closes, so the
# timeout (3 s) must end the others' waits; the launcher then stops rank 1
start=$(date +%s)
run timeout $DEADLINE "$TRAINER" launch --nproc 3 --grace 2 --run "$RANKS" hang 1 3 --timeout 3
took=$(( $(date +%s) - start ))
if [ $st -ne 0 ] && [ $st -ne 124 ] && [ $took -lt 40 ] && survivors_say x 3 1 "cannot allreduce" &&
    grep -Eq "^rank [02]: .*rank 1 .* for 3 s \(--dist_timeout\)" "$TMP/err"; then
    ok "launch --nproc 3, rank 1 stopped mid-allreduce: ranks 0 and 2 fail after the 3 s timeout, naming rank 1 (${took}s in all)"
else
    fail "launch --nproc 3, rank 1 stopped mid-allreduce (status $st, ${took}s)"
fi

# ranks that make different calls (rank 0 an allreduce, the others a
# broadcast): each fails, rank 1 saying how the calls differ
run timeout $DEADLINE "$TRAINER" launch --nproc 3 --grace 5 --run "$RANKS" mismatch --timeout 30
if [ $st -eq 0 ] && survivors_say x 3 -1 "cannot (allreduce|broadcast)" &&
    grep -q "^rank 1: cannot broadcast (rank 1 of 3): rank 0 (previous in the ring) made call 1, allreduce of 10 (0), where this rank made call 1, broadcast of 20 (0): the ranks' calls differ" "$TMP/err"; then
    ok "launch --nproc 3, rank 0 calls allreduce, the others broadcast: every rank fails, told the calls differ"
else
    fail "launch --nproc 3, calls that differ (status $st)"
fi

# a rendezvous nobody comes to: each side gives up at the timeout and says
# where it waited
PORT=$(( 20000 + $$ % 20000 ))
run env RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT timeout $DEADLINE "$RANKS" check tcp --timeout 2
expect "rank 1 of 2 without a rank 0: fails after the timeout naming the address" 1 \
    "cannot reach rank 0 at '127.0.0.1:$((PORT + 1))' \(MASTER_ADDR, MASTER_PORT \+ 1\) within 2 s"
run env RANK=0 WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT timeout $DEADLINE "$RANKS" check tcp --timeout 1
expect "rank 0 of 3 alone: fails after the timeout naming the port and the missing ranks" 1 \
    "cannot gather the ranks on port $((PORT + 1)) \(MASTER_PORT \+ 1\): 1 of 3 joined within 1 s .*missing: 1, 2"

# two processes that both say they are rank 1 of 3: rank 0 refuses the
# roll, and every process fails instead of training with a rank missing
PORT=$((PORT + 2))
pids=""
for r in 0 1 1; do
    env RANK=$r WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=$PORT timeout $DEADLINE "$RANKS" check tcp --timeout 5 \
        >> "$TMP/dup.out" 2>> "$TMP/dup.err" &
    pids="$pids $!"
done
nfail=0
for p in $pids; do wait "$p" || nfail=$((nfail + 1)); done
if [ $nfail -eq 3 ] && grep -q "cannot start the ranks: two ranks claim the same rank (the second from 127.0.0.1:" "$TMP/dup.err" &&
    grep -q "rank 0 says: two ranks claim the same rank" "$TMP/dup.err"; then
    ok "two processes claiming rank 1 of 3: rank 0 refuses, naming the second's address, and all three fail"
else
    not_ok "two processes claiming rank 1 of 3 ($nfail failed)" "$(head -5 "$TMP/dup.err")"
fi

# the launcher's own contract
run "$TRAINER" launch --run "$RANKS" check tcp
expect "launch without --nproc: usage error" 2 "missing --nproc N"
run "$TRAINER" launch --nproc 0 --run x
expect "launch --nproc 0: usage error" 2 "bad --nproc '0'"
run "$TRAINER" launch --nproc 2 --run /nonexistent/program
expect "launch of a program that does not exist: fails naming it" 127 "cannot start '/nonexistent/program' for rank [01]"
run "$TRAINER" launch --help
expect "launch --help" 0 "torchrun --standalone --nproc_per_node N"
# without --run, each rank is this pile-trainer's `train` with the options
# after the launcher's (and after `--`, or a `train` of their own)
run "$TRAINER" launch --nproc 2 -- --help
# (the two ranks' output interleaves: count the text, not lines)
if [ $st -eq 0 ] && [ "$(grep -o "usage: pile-trainer \[train\] \[options\]" "$TMP/out" | wc -l)" -eq 2 ]; then
    ok "launch --nproc 2 -- --help: both ranks run pile-trainer train --help"
else
    fail "launch --nproc 2 -- --help (status $st)"
fi
run "$TRAINER" launch --nproc 1 train --no-such-option
expect "launch --nproc 1 train --no-such-option: the rank's own usage error, passed on" 2 \
    "pile-trainer: unknown option '--no-such-option'"

tap_done
