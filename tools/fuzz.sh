#!/usr/bin/env bash
# fuzz.sh: build the libFuzzer targets of tests/fuzz/ with clang, ASan and
# UBSan, and run each in turn for SECONDS (default 60) over its seeds.
#
#   tools/fuzz.sh [options] [SECONDS]
#
#   --target NAME    only this target (repeatable; default: all of them)
#   --work DIR       the work folder (default fuzz-work/ in the repository)
#   --build-dir DIR  the clang build folder, in the repository unless the
#                    path is absolute (default build-fuzz)
#   --jobs N         N libFuzzer processes per target (-fork=N; default 1)
#   --parallel N     N targets fuzzed at once (default 1; tools/test.sh
#                    gives the machine's core count); each target's lines
#                    print when it ends, in target order
#   --keep-going     a finding does not end a target's run: its input is
#                    kept and fuzzing goes on to the end of SECONDS (for
#                    runs of hours; fork mode)
#   --no-build       run what --build-dir holds, without building
#   -h, --help       this help
#
# Each target NAME reads its inputs from up to three corpus folders:
#   WORK/corpus/NAME/        what libFuzzer found new: kept, it grows run by run
#   tests/fuzz/corpus/NAME/  the seeds kept in the repository (only read;
#                            tests/fuzz/make_corpus.py rebuilds them)
#   WORK/fresh/NAME/         fuzz_shard and fuzz_safetensors: seeds written by
#                            this tree's own writers at every run
# A crash, a sanitizer report, a leak, an input that runs over 30 s or past
# 2 GB ends the target's run (unless --keep-going) and leaves the input in
# WORK/crashes/NAME/, printed with the command that replays it; the other
# targets still run. Logs: WORK/logs/NAME.log; one line per target in
# WORK/results.tsv (name, result, seconds, inputs run, new inputs).
# Exit status: 0 nothing found, 1 something found (or a target failed to
# run), 2 a usage or build error, 77 clang or libFuzzer is missing (Debian:
# clang libclang-rt-dev, as tools/install-deps.sh installs).
# PILE_SHARED=/path/to/shared as for the tests (default ../shared): the
# GPT-2 files of fuzz_tokenizer and the documents of the fresh shard seeds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ALL=(fuzz_jsonl fuzz_lines fuzz_tokenizer fuzz_tokfile fuzz_shard fuzz_safetensors)
SECS=60
TARGETS=()
WORK=
BUILD=build-fuzz
JOBS=1
PAR=1
KEEP_GOING=0
DO_BUILD=1
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "fuzz.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --target) [ $# -ge 2 ] || die "--target needs a name"; TARGETS+=("$2"); shift 2 ;;
    --target=*) TARGETS+=("${1#--target=}"); shift ;;
    --work) [ $# -ge 2 ] || die "--work needs a folder"; WORK=$2; shift 2 ;;
    --work=*) WORK=${1#--work=}; shift ;;
    --build-dir) [ $# -ge 2 ] || die "--build-dir needs a folder"; BUILD=$2; shift 2 ;;
    --build-dir=*) BUILD=${1#--build-dir=}; shift ;;
    --jobs) [ $# -ge 2 ] || die "--jobs needs a number"; JOBS=$2; shift 2 ;;
    --jobs=*) JOBS=${1#--jobs=}; shift ;;
    --parallel) [ $# -ge 2 ] || die "--parallel needs a number"; PAR=$2; shift 2 ;;
    --parallel=*) PAR=${1#--parallel=}; shift ;;
    --keep-going) KEEP_GOING=1; shift ;;
    --no-build) DO_BUILD=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *) [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ] || die "SECONDS must be a positive whole number, not '$1'"
       SECS=$1; shift ;;
  esac
done
[[ $JOBS =~ ^[0-9]+$ ]] && [ "$JOBS" -gt 0 ] || die "--jobs must be a positive whole number, not '$JOBS'"
[[ $PAR =~ ^[0-9]+$ ]] && [ "$PAR" -gt 0 ] || die "--parallel must be a positive whole number, not '$PAR'"
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || die "unknown target '$t' (known: ${ALL[*]})"
done

# Paths given by the user are relative to where they stand; the rest to the repository.
SHARED=${PILE_SHARED:-$ROOT/../shared}
SHARED=$(realpath -m -- "$SHARED")
[ -n "$WORK" ] || WORK=$ROOT/fuzz-work
WORK=$(realpath -m -- "$WORK")
cd "$ROOT"
say() { echo "fuzz.sh: $*"; }
mkdir -p "$WORK/logs" "$WORK/crashes"

# (max_len per target: the size of its largest sensible input, as in make_corpus.py)
max_len() {
  case "$1" in
    fuzz_jsonl|fuzz_tokenizer) echo 4096 ;;
    fuzz_tokfile) echo 16384 ;;
    fuzz_lines|fuzz_shard) echo 65536 ;;
    fuzz_safetensors) echo 262144 ;;
  esac
}

if [ $DO_BUILD = 1 ]; then
  command -v clang >/dev/null && command -v clang++ >/dev/null ||
    { say "skipped: clang is not installed (Debian: apt-get install clang libclang-rt-dev)" >&2; exit 77; }
  probe=$(mktemp -d)
  printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
  if ! clang -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" 2>"$probe/err"; then
    sed 's/^/  /' "$probe/err" >&2
    rm -rf "$probe"
    say "skipped: clang cannot link a libFuzzer target (Debian: apt-get install libclang-rt-dev)" >&2
    exit 77
  fi
  rm -rf "$probe"
  # (no CUDA: the fuzz targets read files; nvcc's objects would only cost time)
  opts=(-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dcuda=disabled -Dshared_dir="$SHARED")
  if [ -f "$BUILD/meson-private/coredata.dat" ]; then
    meson configure "$BUILD" "${opts[@]}" >/dev/null || die "cannot configure '$BUILD'"
  else
    say "configuring $BUILD (clang, ASan + UBSan, -Dfuzz=true)"
    CC=clang CXX=clang++ meson setup "$BUILD" --buildtype=debugoptimized "${opts[@]}" >"$WORK/logs/setup.log" 2>&1 ||
      { cat "$WORK/logs/setup.log" >&2; die "meson setup $BUILD failed"; }
  fi
  grep -q 'build tests/fuzz/fuzz_jsonl:' "$BUILD/build.ninja" ||
    die "'$BUILD' builds no fuzz targets: it was set up with another compiler than clang (remove it and rerun)"
  ninja_targets=()
  for t in "${TARGETS[@]}"; do ninja_targets+=("tests/fuzz/$t"); done
  [[ " ${TARGETS[*]} " == *" fuzz_shard "* ]] && ninja_targets+=(preprocess/pile-prep)
  [[ " ${TARGETS[*]} " == *" fuzz_safetensors "* ]] && ninja_targets+=(tests/test_trainer_io)
  say "building ${TARGETS[*]} in $BUILD"
  ninja -C "$BUILD" "${ninja_targets[@]}" >"$WORK/logs/build.log" 2>&1 ||
    { tail -50 "$WORK/logs/build.log" >&2; die "build in $BUILD failed (log: $WORK/logs/build.log)"; }
fi

# The targets' temporary folders go in one of ours, removed however they end.
TMP_BASE=/tmp
[ -w /dev/shm ] && TMP_BASE=/dev/shm
FUZZ_TMP=$(mktemp -d "$TMP_BASE/pile-fuzz.XXXXXX")
trap 'rm -rf "$FUZZ_TMP"' EXIT
trap 'exit 130' INT TERM

# Fresh seeds from this tree's writers (a format change is fuzzed from its own files).
fresh=()
if [[ " ${TARGETS[*]} " == *" fuzz_shard "* ]]; then fresh+=(fuzz_shard); fi
if [[ " ${TARGETS[*]} " == *" fuzz_safetensors "* ]]; then fresh+=(fuzz_safetensors); fi
if [ ${#fresh[@]} -gt 0 ]; then
  if ! command -v python3 >/dev/null; then
    say "note: no python3: no fresh seeds for ${fresh[*]}, only the repository's"
  elif [ ! -d "$SHARED/corpus" ] && [[ " ${fresh[*]} " == *" fuzz_shard "* ]]; then
    say "note: no corpus in $SHARED: no fresh seeds for ${fresh[*]}, only the repository's"
  elif ! python3 tests/fuzz/make_corpus.py --whole --shared "$SHARED" --build "$BUILD" --out "$WORK/fresh" \
         "${fresh[@]}" >"$WORK/logs/fresh-seeds.log" 2>&1; then
    cat "$WORK/logs/fresh-seeds.log" >&2
    say "the current writers could not make fresh seeds for ${fresh[*]}" >&2
    exit 1
  fi
fi

# Sanitizers: any report is a finding. LeakSanitizer cannot run where ptrace
# is forbidden (some containers): find out rather than report every input.
LEAKS=1
probe=$(mktemp -d)
printf '#include <stdlib.h>\nint main(void) { free(malloc(1)); return 0; }\n' >"$probe/p.c"
if clang -fsanitize=address "$probe/p.c" -o "$probe/p" 2>/dev/null && ! "$probe/p" 2>/dev/null; then
  LEAKS=0
  say "note: LeakSanitizer does not work here; leak checks are off"
fi
rm -rf "$probe"
export ASAN_OPTIONS=detect_leaks=$LEAKS:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PILE_SHARED=$SHARED
export TMPDIR=$FUZZ_TMP

# fuzz_one T: one target's run. Its result line goes to
# WORK/results.d/T.tsv, its messages to stdout; exits 1 when it found
# something. Runs in a subshell of its own (--parallel).
fuzz_one() {
  local t=$1
  local exe=$BUILD/tests/fuzz/$t
  local exe_abs
  exe_abs=$(realpath -- "$exe" 2>/dev/null || echo "$exe")
  local log=$WORK/logs/$t.log crashes=$WORK/crashes/$t res=$WORK/results.d/$t.tsv
  if [ $t = fuzz_tokenizer ] && [ ! -f "$SHARED/fixtures/gpt2/encoder.json" ]; then
    say "$t: skipped: no GPT-2 fixture in $SHARED/fixtures/gpt2 (set PILE_SHARED)"
    printf '%s\tSKIP\t0\t0\t0\n' $t >"$res"
    return 0
  fi
  mkdir -p "$WORK/corpus/$t" "$crashes"
  local dirs=("$WORK/corpus/$t" "tests/fuzz/corpus/$t")
  [ -d "$WORK/fresh/$t" ] && dirs+=("$WORK/fresh/$t")
  local args=(-max_total_time="$SECS" -max_len="$(max_len $t)" -timeout=30 -rss_limit_mb=2048
        -artifact_prefix="$crashes/" -print_final_stats=1 -detect_leaks=$LEAKS)
  [ "$JOBS" -gt 1 ] || [ $KEEP_GOING = 1 ] && args+=(-fork="$JOBS")
  [ $KEEP_GOING = 1 ] && args+=(-ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  local before corpus_before
  before=$(ls "$crashes" | wc -l)
  corpus_before=$(ls "$WORK/corpus/$t" | wc -l)
  say "$t: ${SECS} s over ${dirs[*]#$ROOT/}"
  local t0=$SECONDS rc=0
  # (the outer timeout only guards against a run that never ends: libFuzzer
  # itself stops at -max_total_time, and an input stuck over 30 s is a finding)
  timeout -k 10 $((SECS + 300)) "$exe" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
  local took=$((SECONDS - t0)) runs new
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
  runs=${runs:-?}
  new=$(( $(ls "$WORK/corpus/$t" | wc -l) - corpus_before ))
  local art
  mapfile -t art < <(ls -t "$crashes" | head -n $(( $(ls "$crashes" | wc -l) - before )))
  if [ $rc = 0 ] && [ ${#art[@]} = 0 ]; then
    say "$t: ok: ${took} s, $runs inputs, $new new in $WORK/corpus/$t"
    printf '%s\tOK\t%s\t%s\t%s\n' $t "$took" "$runs" "$new" >"$res"
    return 0
  fi
  printf '%s\tFAIL\t%s\t%s\t%s\n' $t "$took" "$runs" "$new" >"$res"
  if [ ${#art[@]} -gt 0 ]; then
    say "$t: FOUND ${#art[@]} after ${took} s (exit $rc), in $crashes/:"
    for a in "${art[@]}"; do
      echo "  $crashes/$a"
      echo "    replay: PILE_SHARED=$SHARED UBSAN_OPTIONS=$UBSAN_OPTIONS $exe_abs $crashes/$a"
    done
  else
    say "$t: FAILED after ${took} s (exit $rc) without a crash file; see $log"
  fi
  # the sanitizer's report (or libFuzzer's) from the end of the log
  grep -a -n -m1 -E '^==[0-9]+==|runtime error:|^ALARM|deadly signal|out-of-memory|^INFO: a leak' "$log" >/dev/null &&
    sed -n "$(grep -a -n -m1 -E '^==[0-9]+==|runtime error:|^ALARM|deadly signal|out-of-memory|^INFO: a leak' "$log" |
      cut -d: -f1),+40p" "$log" | sed 's/^/  | /'
  return 1
}

for t in "${TARGETS[@]}"; do
  [ -x "$BUILD/tests/fuzz/$t" ] || die "no '$BUILD/tests/fuzz/$t' (build it, or drop --no-build)"
done
rm -rf "$WORK/results.d"
mkdir -p "$WORK/results.d"
# up to PAR targets at once; each one's messages are kept and printed,
# in target order, once it and those before it have ended
pids=()
for i in "${!TARGETS[@]}"; do
  t=${TARGETS[$i]}
  while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do wait -n || true; done
  fuzz_one "$t" >"$WORK/results.d/$t.out" 2>&1 &
  pids[$i]=$!
done
found=0
ran=0
: >"$WORK/results.tsv"
for i in "${!TARGETS[@]}"; do
  t=${TARGETS[$i]}
  rc=0
  wait "${pids[$i]}" || rc=$?
  if [ $rc = 0 ]; then cat "$WORK/results.d/$t.out"; else cat "$WORK/results.d/$t.out" >&2; found=$((found + 1)); fi
  if [ -f "$WORK/results.d/$t.tsv" ]; then
    cat "$WORK/results.d/$t.tsv" >>"$WORK/results.tsv"
    grep -q "	SKIP	" "$WORK/results.d/$t.tsv" || ran=$((ran + 1))
  else
    # (it stopped before writing its line: counted as a failure)
    [ $rc != 0 ] || found=$((found + 1))
    printf '%s\tFAIL\t0\t?\t0\n' $t >>"$WORK/results.tsv"
    ran=$((ran + 1))
  fi
done

if [ $found = 0 ]; then
  say "$ran target(s), ${SECS} s each: nothing found (new inputs kept in $WORK/corpus/)"
  exit 0
fi
say "$found of $ran target(s) found something: inputs in $WORK/crashes/" >&2
exit 1
