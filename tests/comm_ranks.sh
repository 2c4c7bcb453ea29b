#!/bin/sh
# pile_comm between real processes (tests/test_comm_ranks.c): every
# collective on 2, 3 and 4 ranks under mpirun, against the result computed
# in one process; a rank killed mid-collective ends the job with a failure,
# never a hang.
#   comm_ranks.sh TEST_COMM_RANKS HAVE_MPI(1|0)
# Speaks TAP; exits 77 when there is nothing this build can launch.
set -u
. "$(dirname "$0")/tap.sh"
RANKS=$1
HAVE_MPI=$2
tap_tmpdir comm-ranks

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
if [ -z "$MPIRUN" ]; then
    echo "1..0 # SKIP no mpirun, or this build has no MPI (tools/install-deps.sh installs Open MPI)"
    exit 77
fi

# A job that outlives this is a hang: the deadline ends it with a failure.
DEADLINE=120

for np in 2 3 4; do
    run timeout $DEADLINE $MPIRUN -np $np "$RANKS" check mpi
    if [ $st -eq 0 ] && [ "$(grep -c ': ok (mpi' "$TMP/out")" -eq $np ]; then
        ok "mpirun -np $np: every collective on every rank equals the one-process result"
    else
        fail "mpirun -np $np: collectives (status $st)"
    fi
done

# rank 1 of 3 kills itself inside its 3rd allreduce: mpirun ends the job
# with a failure that names the rank
start=$(date +%s)
run timeout $DEADLINE $MPIRUN -np 3 "$RANKS" die 1 3
took=$(( $(date +%s) - start ))
if [ $st -ne 0 ] && [ $st -ne 124 ] && grep -q "rank 1" "$TMP/out" "$TMP/err"; then
    ok "mpirun -np 3, rank 1 killed mid-allreduce: the job fails (status $st) in ${took}s, naming rank 1"
else
    fail "mpirun -np 3, rank 1 killed mid-allreduce (status $st, ${took}s)"
fi

tap_done
