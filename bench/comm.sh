#!/bin/sh
# pile_comm's allreduce between processes on this machine: "mpi" (Open
# MPI, under mpirun) and "tcp" (our ring, under pile-trainer launch), side
# by side in one run, on 2 and 4 ranks, fp32 buffers of 4 KiB to 64 MiB
# (a gpt2-small gradient is 0.5 GB; the tiny model's is 1.9 MB). Median of
# REPEATS calls each, the slowest rank's time. Prints Markdown for
# bench/RESULTS.md: ms per call, algbw (bytes / time), busbw (what the
# ring moves per link, algbw x 2 (W - 1) / W) and tcp's time / mpi's.
#   bench/comm.sh [BUILD_DIR]    (default: build beside the sources)
# Env: PILE_BENCH_REPEATS (default 9), PILE_BENCH_RANKS ("2 4").
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
REPEATS=${PILE_BENCH_REPEATS:-9}
RANKS=${PILE_BENCH_RANKS:-"2 4"}
SIZES="4096 262144 4194304 67108864"
ninja -C "$BUILD" bench/bench_comm trainer/pile-trainer >/dev/null
B=$BUILD/bench/bench_comm
MPIRUN="mpirun --oversubscribe"
[ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pile-bench-comm-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "Command: \`bench/comm.sh\` ($(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg) at the start; OMP_NUM_THREADS=1)"
echo
echo "| ranks | bytes | mpi ms | mpi busbw GB/s | tcp ms | tcp busbw GB/s | tcp / mpi |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for w in $RANKS; do
    OMP_NUM_THREADS=1 $MPIRUN -np "$w" "$B" "$REPEATS" $SIZES > "$TMP/mpi" 2>/dev/null || : > "$TMP/mpi"
    OMP_NUM_THREADS=1 "$BUILD/trainer/pile-trainer" launch --nproc "$w" --run "$B" "$REPEATS" $SIZES > "$TMP/tcp" 2>/dev/null
    for s in $SIZES; do
        m=$(awk -v s="$s" '$3 == s { print $4, $6 }' "$TMP/mpi")
        t=$(awk -v s="$s" '$3 == s { print $4, $6 }' "$TMP/tcp")
        echo "$w $s ${m:-- -} ${t:-- -}" | awk '{ r = ($3 > 0 && $5 > 0) ? sprintf("%.2f", $5 / $3) : "-";
            printf "| %d | %d | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, r }'
    done
done
