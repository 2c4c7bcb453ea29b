#!/bin/sh
# ZeRO between real processes (tests/test_zero.c --ranks): under mpirun
# with 2 and 4 ranks, stages 0 to 3 (with optimizer and parameter
# offload, and in buckets) train as one rank does on the same global
# batch, losses and weights within 1e-5, on every rank.
#   zero_ranks.sh TEST_ZERO HAVE_MPI(1|0)
# Speaks TAP; exits 77 when there is nothing this build can launch.
set -u
. "$(dirname "$0")/tap.sh"
ZERO=$1
HAVE_MPI=$2
tap_tmpdir zero-ranks

MPIRUN=""
if [ "$HAVE_MPI" = 1 ] && command -v mpirun >/dev/null; then
    MPIRUN="mpirun --oversubscribe"
    [ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
    # Open MPI leaks at MPI_Finalize (see comm_ranks.sh); test_zero's own
    # leaks are checked by its threads run
    [ -n "${ASAN_OPTIONS:-}" ] && MPIRUN="$MPIRUN -x ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0"
fi
if [ -z "$MPIRUN" ]; then
    echo "1..0 # SKIP no mpirun, or this build has no MPI (tools/install-deps.sh installs Open MPI)"
    exit 77
fi

for np in 2 4; do
    run timeout 240 $MPIRUN -np $np "$ZERO" --ranks
    if [ $st -eq 0 ] && [ "$(grep -c ': ok (mpi' "$TMP/out")" -eq $np ]; then
        ok "mpirun -np $np: stages 0-3 (offloaded, in buckets) as one rank within 1e-5, on every rank"
    else
        fail "mpirun -np $np: ZeRO between processes (status $st): $(grep -v '^rank .*: ok' "$TMP/out" | head -n 3 | tr '\n' '|')"
    fi
done
tap_done
