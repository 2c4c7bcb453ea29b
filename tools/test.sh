#!/usr/bin/env bash
# test.sh: install, build and run the whole test suite twice: a
# debugoptimized build in build/, then an AddressSanitizer + UBSan build in
# build-asan/ (without the 'slow' and 'reference' suites); then every fuzz
# target for a short while (tools/fuzz.sh, clang + ASan + UBSan, in
# build-fuzz/); and the release build that tools/demo.sh makes, compiled
# only (-O3 warns where -O2 does not, and warnings are errors), in
# build-release/. Ends with one line "N passed, N failed, N skipped" over
# all three, each fuzz target counted as one test; exits non-zero on any
# failure.
# Where nvcc and cuBLASLt are found (meson's -Dcuda=auto), the plain, ASan
# and release builds compile the CUDA backend (trainer/cuda/) and the fuzz
# build does not (tools/fuzz.sh: -Dcuda=disabled); without a GPU the tests
# check its no-device paths. The sanitizer and release passes compile the
# kernels to PTX only (-Dgpu_code=ptx): the plain pass compiles
# them in full, ptxas and its spill check included.
#
#   tools/test.sh [--quick] [--suite NAME] [--build-dir DIR] [--no-deps]
#                 [--fuzz-seconds N]
#
#   --quick           no sanitizer pass, no fuzzing, no release build
#   --suite NAME      only this meson test suite (unit, cli, slow, ...), or
#                     only the fuzzing with --suite fuzz
#   --build-dir DIR   build folder in the repository (default build; the
#                     sanitizer one is DIR-asan, the fuzzing one DIR-fuzz,
#                     the release one DIR-release)
#   --no-deps         do not run tools/install-deps.sh first
#   --fuzz-seconds N  how long each fuzz target runs (default 15; 0: none).
#                     A finding fails the run; its input is left in
#                     DIR-fuzz/run/crashes/<target>/
#
# PILE_SHARED=/path/to/shared points the tests at the shared corpus and
# fixtures (default: ../shared beside the repository).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
SUITE=
BUILD=build
DEPS=1
FUZZ_SECS=15
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --suite) SUITE=$2; shift 2 ;;
    --suite=*) SUITE=${1#--suite=}; shift ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --no-deps) DEPS=0; shift ;;
    --fuzz-seconds) FUZZ_SECS=$2; shift 2 ;;
    --fuzz-seconds=*) FUZZ_SECS=${1#--fuzz-seconds=}; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[[ $FUZZ_SECS =~ ^[0-9]+$ ]] || { echo "test.sh: --fuzz-seconds needs a whole number, not '$FUZZ_SECS'" >&2; exit 2; }

# PILE_SHARED is relative to where the user stands, --build-dir to the repository
SHARED=${PILE_SHARED:-}
[ -z "$SHARED" ] || SHARED=$(realpath -m -- "$SHARED")
cd "$ROOT"

T0=$SECONDS
say() { echo "== test.sh [$((SECONDS - T0))s] $*"; }

if [ $DEPS = 1 ] && ! tools/install-deps.sh; then
  say "warning: tools/install-deps.sh failed; carrying on with what is installed"
fi

if [ -n "$SHARED" ]; then
  [ -d "$SHARED" ] || { echo "test.sh: PILE_SHARED='$SHARED' is not a folder" >&2; exit 2; }
  say "shared corpus: $SHARED"
elif [ -d ../shared ]; then
  say "shared corpus: $(cd ../shared && pwd)"
else
  say "no ../shared beside the repository and no PILE_SHARED: tests that need the corpus will skip"
fi

# setup DIR ARGS...: configure DIR, or reconfigure it when it already exists
# so that options (shared_dir above all) follow this run's settings.
setup() {
  local dir=$1; shift
  if [ -f "$dir/meson-private/coredata.dat" ]; then
    meson setup --reconfigure "$dir" -Dshared_dir="$SHARED" "$@"
  else
    rm -rf "$dir"
    meson setup "$dir" -Dshared_dir="$SHARED" "$@"
  fi
}

build_failures=0
# pass DIR SETUP-ARGS... -- TEST-ARGS...: build DIR and run its tests.
pass() {
  local dir=$1; shift
  local sargs=() targs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do sargs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  targs=("$@")
  rm -f "$dir/meson-logs/testlog.json"
  say "configuring $dir"
  local log
  log=$(mktemp)
  if ! setup "$dir" "${sargs[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    say "FAILED: meson setup $dir"
    build_failures=$((build_failures + 1))
    return 0
  fi
  rm -f "$log"
  say "building $dir"
  if ! meson compile -C "$dir"; then
    say "FAILED: build of $dir"
    build_failures=$((build_failures + 1))
    return 0
  fi
  say "testing $dir"
  meson test -C "$dir" --print-errorlogs "${targs[@]}" || true
}

suite_args=()
[ -n "$SUITE" ] && suite_args=(--suite "$SUITE")

MESON=1
[ "$SUITE" = fuzz ] && MESON=0
[ $MESON = 1 ] && pass "$BUILD" --buildtype=debugoptimized -- "${suite_args[@]}"

if [ $QUICK = 0 ] && [ $MESON = 1 ]; then
  export ASAN_OPTIONS=halt_on_error=1:abort_on_error=0:detect_leaks=1:strict_string_checks=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  # (sanitized code runs several times slower: hence the timeout multiplier)
  # LeakSanitizer cannot run where ptrace is forbidden (some containers):
  # find out on a two-line program rather than fail every test for it.
  probe=$(mktemp -d)
  printf '#include <stdlib.h>\nint main(void) { free(malloc(1)); return 0; }\n' >"$probe/p.c"
  if cc -fsanitize=address "$probe/p.c" -o "$probe/p" 2>/dev/null && ! "$probe/p" 2>/dev/null; then
    export ASAN_OPTIONS=${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}
    say "note: LeakSanitizer does not work here; leak checks are off"
  fi
  rm -rf "$probe"
  # (the 'reference' suite compares with PyTorch: minutes unsanitized)
  no_slow=()
  [ "$SUITE" = slow ] || no_slow=(--no-suite slow --no-suite bench)
  [ "$SUITE" = reference ] || no_slow+=(--no-suite reference)
  # (the plain pass compiled the CUDA kernels in full: PTX is enough here)
  pass "$BUILD-asan" --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false \
    -Dgpu_code=ptx \
    -- --timeout-multiplier 4 "${suite_args[@]}" "${no_slow[@]}"
fi

# The release build (demo.sh's): compiled, not tested; its failure counts.
if [ $QUICK = 0 ] && [ -z "$SUITE" ]; then
  say "configuring and building $BUILD-release (release: compiled only)"
  rlog=$(mktemp)
  if ! { setup "$BUILD-release" --buildtype=release -Dgpu_code=ptx && meson compile -C "$BUILD-release"; } >"$rlog" 2>&1; then
    tail -n 60 "$rlog" >&2
    say "FAILED: release build of $BUILD-release"
    build_failures=$((build_failures + 1))
  fi
  rm -f "$rlog"
fi

# Fuzzing: each target for FUZZ_SECS over its seeds; a crash fails CI.
fuzz_results=
if [ $QUICK = 0 ] && [ "$FUZZ_SECS" -gt 0 ] && { [ -z "$SUITE" ] || [ "$SUITE" = fuzz ]; }; then
  say "fuzzing each target for ${FUZZ_SECS}s (tools/fuzz.sh, in $BUILD-fuzz)"
  rm -f "$BUILD-fuzz/run/results.tsv"
  frc=0
  env ${SHARED:+PILE_SHARED="$SHARED"} tools/fuzz.sh --build-dir "$BUILD-fuzz" --work "$BUILD-fuzz/run" \
    --parallel "$(nproc)" "$FUZZ_SECS" || frc=$?
  case $frc in
    0|1) fuzz_results=$BUILD-fuzz/run/results.tsv ;;
    77) fuzz_results=skip ;;
    *) say "FAILED: tools/fuzz.sh (exit $frc)"; build_failures=$((build_failures + 1)) ;;
  esac
fi

dirs=()
[ $MESON = 1 ] && dirs+=("$BUILD")
[ $QUICK = 0 ] && [ $MESON = 1 ] && dirs+=("$BUILD-asan")
python3 - "$build_failures" "$fuzz_results" "${dirs[@]}" <<'EOF'
import json, os, sys

passed = failed = skipped = 0
failures = []
fuzz = sys.argv[2]
if fuzz == "skip":  # tools/fuzz.sh found no clang or libFuzzer, and said so
    skipped += 1
elif fuzz and not os.path.exists(fuzz):
    failed += 1
    failures.append("fuzz: tools/fuzz.sh stopped before running the targets (see above)")
elif fuzz:
    with open(fuzz, encoding="utf-8") as f:
        for line in f:
            name, result = line.split("\t")[:2]
            if result == "OK":
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1
                crashes = os.path.join(os.path.dirname(fuzz), "crashes", name)
                failures.append("fuzz: %s (found something: %s)" % (name, crashes))
for d in sys.argv[3:]:
    log = os.path.join(d, "meson-logs", "testlog.json")
    if not os.path.exists(log):
        continue
    with open(log, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            r = t.get("result", "")
            if r in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif r == "SKIP":
                skipped += 1
            else:  # FAIL, UNEXPECTEDPASS, TIMEOUT, ERROR, INTERRUPT, ...
                failed += 1
                failures.append("%s: %s (%s)" % (d, t.get("name", "?"), r))
builds = int(sys.argv[1])
for f in failures:
    print("  failed: " + f)
if builds:
    print("  failed: %d build step(s), see above" % builds)
failed += builds
print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed else 0)
EOF
