#!/bin/bash
# gpu-check.sh: the first command to run on a machine with an NVIDIA GPU.
# It builds the project with the CUDA backend, runs tests/gpu (every kernel
# against fp64 references, the trainer on the GPU against the CPU, the
# "nccl" communicator at world size 1), tests/test_backend (its cuda
# cases: the arena, staged uploads), the trainer at ZeRO 3 over "nccl" on
# two ranks sharing the GPU (NCCL_HOSTID: NCCL takes them for two hosts)
# against one rank, the parts of an offloaded optimizer step (AdamW on the
# host against streaming the state through the GPU), a short training
# run, the benchmark
# (bench/train-gpu.sh, short), the kernel test again under
# compute-sanitizer (memcheck, racecheck) where the machine supports it,
# prints the versions of the driver, CUDA, cuBLAS, cuDNN, NCCL
# and torch, and ends with one table. The full log goes into --out DIR.
#
# The GPU machine needs the CUDA toolkit, a C compiler, meson, ninja and
# Python with torch and transformers, but no package registry: the Debian
# libraries the project links (zstd, zlib, simdjson, libuv, xxhash, PCRE2,
# utf8proc, OpenBLAS's OpenMP build with its Fortran runtime) and pkgconf
# are prepared on the development machine by
#     tools/gpu-check.sh --prepare
# into .gpu-deps/ (ignored by git, at most 60 MiB: headers, shared
# libraries, pkg-config files rewritten to be relocatable), which travels
# with the working tree; the check builds from it (PKG_CONFIG_LIBDIR only
# there, the libraries found through an rpath) when it is there, else from
# the system's packages.
#
#   tools/gpu-check.sh [--out DIR] [--deps DIR] [--build-dir DIR] [--budget S] [--no-bench] [--no-sanitizer]
#   tools/gpu-check.sh --prepare [--deps DIR]
#   tools/gpu-check.sh --check-prepared [--deps DIR] [--keep-build]
# --check-prepared (development machine, root): builds from the prepared
# folder with the system's copies of those headers and pkg-config files,
# pkg-config itself and OpenBLAS's OpenMP folders hidden (a private mount
# namespace), runs the unit tests that use every library, and checks with
# ldd that the trainer loads the prepared libraries.
# Time: each step runs under `timeout` with a limit of its own (the
# build 300 s, tests/gpu 240 s, ...; the table says each), cut to what is
# left of --budget S (default 420: the whole check, built from scratch,
# within 7 minutes; 6 is the aim), so that a step that hangs on the GPU
# costs its limit, not the device machine's whole lease, and the table is
# always printed: a step the budget leaves no time for is listed "not
# run". The build uses -Dwerror=false (CI holds the warnings; a newer
# host compiler's new warning must not cost a GPU session) and only the
# targets the check runs; where CUDA's folder has no NCCL, it takes the
# one of torch's pip wheel (nvidia-nccl-*). The training run's files go
# under the build folder, so that --out DIR holds the logs alone.
# Exit: 0 every step passed (or skipped), 1 a step failed, timed out or
# did not run, 2 bad usage, 77 no GPU here.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS=$ROOT/.gpu-deps
OUT=$ROOT/gpu-check-out
BUILD=$ROOT/build-gpu-check
MODE=check
BENCH=1
SANITIZER=1
BUDGET=420
MAX_MIB=60
usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
    --prepare) MODE=prepare; shift ;;
    --check-prepared) MODE=check-prepared; shift ;;
    --out) OUT=$2; shift 2 ;;
    --deps) DEPS=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --no-bench) BENCH=0; shift ;;
    --no-sanitizer) SANITIZER=0; shift ;;
    --budget) BUDGET=$2; shift 2 ;;
    --keep-build) KEEP_BUILD=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu-check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case $BUDGET in '' | *[!0-9]*) echo "gpu-check.sh: --budget takes whole seconds, not '$BUDGET'" >&2; exit 2 ;; esac
case $DEPS in /*) ;; *) DEPS=$(pwd)/$DEPS ;; esac
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
MA=x86_64-linux-gnu

# ------------------------------------------------------------ --prepare
# Debian packages whose headers, shared libraries and .pc files the build
# needs (meson.build, trainer/cpu/meson.build), and the runtime packages
# whose libraries those link.
DEV_PKGS="libzstd-dev zlib1g-dev libsimdjson-dev libuv1-dev libxxhash-dev libpcre2-dev libutf8proc-dev
libopenblas-openmp-dev"
RUN_PKGS="libzstd1 zlib1g libsimdjson14 libuv1 libxxhash0 libpcre2-8-0 libutf8proc2 libopenblas0-openmp libgfortran5
libquadmath0 pkgconf-bin libpkgconf3"

# copy_file F: /usr/X to $DEPS/X; a link to a file in its own folder stays
# a (relative) link, its target copied beside it; other links are followed
copy_file() {
    local f=$1 dst=$DEPS/${1#/usr/}
    mkdir -p "$(dirname "$dst")"
    if [ -L "$f" ]; then
        local real
        real=$(readlink -f "$f")
        if [ "$(dirname "$real")" = "$(dirname "$f")" ]; then
            [ -e "$DEPS/${real#/usr/}" ] || cp "$real" "$DEPS/${real#/usr/}"
            ln -sf "$(basename "$real")" "$dst"
            return
        fi
    fi
    cp -L "$f" "$dst"
}

prepare() {
    command -v dpkg > /dev/null || { echo "gpu-check.sh --prepare: needs dpkg (a Debian machine: tools/install-deps.sh)" >&2; exit 1; }
    for p in $DEV_PKGS $RUN_PKGS; do
        dpkg -s "$p" > /dev/null 2>&1 || { echo "gpu-check.sh --prepare: package $p is not installed (tools/install-deps.sh)" >&2; exit 1; }
    done
    rm -rf "$DEPS"
    mkdir -p "$DEPS"
    # headers and pkg-config files of the -dev packages; shared libraries
    # (no static archives, no liblapack/libblas: only libopenblas is linked;
    # of PCRE2 only the 8-bit library)
    for f in $(dpkg -L $DEV_PKGS $RUN_PKGS | sed 's#^/lib/#/usr/lib/#' | sort -u); do
        [ -f "$f" ] || continue
        case $f in
        /usr/include/*) copy_file "$f" ;;
        */pkgconfig/*.pc) copy_file "$f" ;;
        */libpcre2-16* | */libpcre2-32* | */libpcre2-posix* | */libblas.so* | */liblapack.so*) ;;
        /usr/lib/$MA/*.so | /usr/lib/$MA/*.so.* | /usr/lib/$MA/openblas-openmp/*.so | /usr/lib/$MA/openblas-openmp/*.so.*) copy_file "$f" ;;
        /usr/bin/pkgconf) copy_file "$f" ;;
        esac
    done
    rm -f "$DEPS"/lib/$MA/pkgconfig/libpcre2-16.pc "$DEPS"/lib/$MA/pkgconfig/libpcre2-32.pc \
        "$DEPS"/lib/$MA/pkgconfig/libpcre2-posix.pc "$DEPS"/lib/$MA/openblas-openmp/pkgconfig/blas-openblas.pc \
        "$DEPS"/lib/$MA/openblas-openmp/pkgconfig/lapack-openblas.pc
    # relocatable .pc files: /usr becomes the folder, found from the file's
    # own place; a libdir of plain /usr/lib (zstd's, where the linker's
    # default path found it) becomes the folder the library is in
    find "$DEPS" -name '*.pc' | while read -r pc; do
        rel=$(realpath --relative-to="$(dirname "$pc")" "$DEPS")
        sed -i -e "s#^prefix=/usr\$#prefix=\${pcfiledir}/$rel#" -e "s#=/usr/#=\${pcfiledir}/$rel/#g" \
            -e "s# /usr/# \${pcfiledir}/$rel/#g" -e "s#-L/usr/#-L\${pcfiledir}/$rel/#g" -e "s#-I/usr/#-I\${pcfiledir}/$rel/#g" \
            -e "s#^libdir=\${exec_prefix}/lib\$#libdir=\${exec_prefix}/lib/$MA#" "$pc"
    done
    # the OpenMP OpenBLAS's .pc where pkg-config looks (its own folder is not searched)
    cp "$DEPS/lib/$MA/openblas-openmp/pkgconfig/openblas.pc" "$DEPS/lib/$MA/pkgconfig/openblas.pc"
    sed -i "s#\${pcfiledir}/[./]*/#\${pcfiledir}/../../../#g" "$DEPS/lib/$MA/pkgconfig/openblas.pc"
    # pkgconf, run with its library beside it
    mkdir -p "$DEPS/bin"
    mv "$DEPS/bin/pkgconf" "$DEPS/bin/pkgconf.bin"
    cat > "$DEPS/bin/pkg-config" << 'EOF'
#!/bin/sh
# Debian's pkgconf with its libpkgconf from this folder
d=$(cd "$(dirname "$0")/.." && pwd)
LD_LIBRARY_PATH=$d/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec "$d/bin/pkgconf.bin" "$@"
EOF
    chmod +x "$DEPS/bin/pkg-config"
    {
        echo "prepared by tools/gpu-check.sh --prepare on $(date -u '+%Y-%m-%d %H:%M UTC'), $(. /etc/os-release && echo "$PRETTY_NAME")"
        for p in $DEV_PKGS $RUN_PKGS; do dpkg-query -W -f '${Package} ${Version}\n' "$p"; done
    } > "$DEPS/VERSIONS.txt"
    # (git ignores it: .gitignore's /.gpu-deps/)
    mib=$(du -sm "$DEPS" | cut -f1)
    echo "gpu-check.sh --prepare: $DEPS holds $(find "$DEPS" -type f | wc -l) files, ${mib} MiB (limit $MAX_MIB)"
    sed 's/^/  /' "$DEPS/VERSIONS.txt"
    if [ "$mib" -gt $MAX_MIB ]; then
        echo "gpu-check.sh --prepare: ${mib} MiB is over the $MAX_MIB MiB that may travel with the working tree" >&2
        exit 1
    fi
}

# deps_env: build from the prepared folder (when there): pkg-config sees
# only it, the binaries find its libraries through an rpath
SETUP_ARGS=()
deps_env() {
    [ -x "$DEPS/bin/pkg-config" ] || return 1
    export PKG_CONFIG="$DEPS/bin/pkg-config"
    export PKG_CONFIG_LIBDIR="$DEPS/lib/$MA/pkgconfig"
    # DT_RPATH (--disable-new-dtags), not RUNPATH: it also serves the
    # libraries' own dependencies (OpenBLAS's libgfortran), which a GPU
    # machine may not have
    local rp="-Wl,--disable-new-dtags,-rpath,$DEPS/lib/$MA:$DEPS/lib/$MA/openblas-openmp"
    SETUP_ARGS=(-Dc_link_args="$rp" -Dcpp_link_args="$rp")
    return 0
}

if [ $MODE = prepare ]; then
    prepare
    exit 0
fi

# --------------------------------------------------------- --check-prepared
if [ $MODE = check-prepared ]; then
    deps_env || { echo "gpu-check.sh --check-prepared: no prepared folder at $DEPS (run --prepare first)" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "gpu-check.sh --check-prepared: needs root (a private mount namespace)" >&2; exit 1; }
    # a build folder of its own, set up afresh (--check-prepared --keep-build: rebuilt in place);
    # without MPI, which the folder does not carry (a GPU machine's build
    # takes its own Open MPI if it has one): this machine's libopen-rte has
    # a RUNPATH of its own and would load the system's zlib
    B=$ROOT/build-gpu-check-prepared
    [ "${KEEP_BUILD:-0}" = 1 ] || rm -rf "$B"
    # hide the system's copies of what was prepared: every header and .pc
    # file the -dev packages installed (regular files: a bind mount on a
    # link would cover its target, the runtime library the system's own
    # tools load), pkg-config, and OpenBLAS's OpenMP folders, whose
    # libopenblas.so trainer/cpu/meson.build looks for first (the link
    # names elsewhere stay: the prepared folder's -L comes first, and ldd
    # below checks what the binaries load)
    hide=$(dpkg -L $DEV_PKGS pkgconf-bin 2> /dev/null | sort -u | while read -r f; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        case $f in /usr/include/* | *.pc | */bin/pkgconf) echo "$f" ;; esac
    done)
    # shellcheck disable=SC2016
    unshare -m bash -c '
        set -e
        for f in $1; do mount --bind /dev/null "$f"; done
        for d in /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-openmp; do
            mount -t tmpfs none "$d"
        done
        test ! -s /usr/include/zstd.h && test ! -s /usr/include/simdjson.h
        ! command -v pkgconf > /dev/null || ! pkgconf --version > /dev/null 2>&1
        [ -f "$2/build.ninja" ] || meson setup "$2" "$3" "${@:5}" > "$4/setup.log" 2>&1 || { tail -n 20 "$4/setup.log"; exit 1; }
        nice ninja -C "$2" tests/test_common tests/test_shards tests/test_tokenizer tests/test_backend \
            tests/gpu/test_gpu_kernels trainer/pile-trainer > "$4/build.log" 2>&1 || { tail -n 20 "$4/build.log"; exit 1; }
        for t in test_common test_shards test_backend; do
            "$2/tests/$t" > "$4/$t.log" 2>&1 || { echo "$t failed"; tail -n 5 "$4/$t.log"; exit 1; }
        done
        rc=0
        "$2/tests/gpu/test_gpu_kernels" > "$4/gpu_kernels.log" 2>&1 || rc=$?
        [ $rc = 0 ] || [ $rc = 77 ] || { echo "test_gpu_kernels failed"; exit 1; }
    ' check "$hide" "$B" "$ROOT" "$(mkdir -p "$OUT" && echo "$OUT")" "${SETUP_ARGS[@]}" -Dmpi=disabled
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "gpu-check.sh --check-prepared: FAILED (logs in $OUT)"
        exit 1
    fi
    # every prepared library the trainer loads comes from the folder
    bad=$(ldd "$B/trainer/pile-trainer" | grep -E 'zstd|libz\.|simdjson|libuv|xxhash|pcre2|utf8proc|openblas|gfortran' | grep -v "$DEPS" || true)
    if [ -n "$bad" ]; then
        echo "gpu-check.sh --check-prepared: FAILED: pile-trainer loads these from elsewhere:"
        echo "$bad"
        exit 1
    fi
    echo "gpu-check.sh --check-prepared: built from $DEPS alone (the system's headers, .pc files, pkg-config and"
    echo "  OpenBLAS's OpenMP folders hidden),"
    echo "  unit tests passed, pile-trainer loads $(ldd "$B/trainer/pile-trainer" | grep -c "$DEPS") libraries from the folder"
    exit 0
fi

# ------------------------------------------------------------- the check
mkdir -p "$OUT"
LOG=$OUT/gpu-check.log
: > "$LOG"
START=$(date +%s)
say() { echo "$*" | tee -a "$LOG"; }
ROWS=()
FAILED=0
# in_time S CMD...: CMD (a function of this script, given the globals the
# functions read, or a program) in a shell of its own under `timeout`,
# which ends the whole process group (ninja's nvcc, meson's tests, python)
# after S seconds, and kills it 10 s later if it still runs; 124 or 137 then
in_time() {
    local t=$1
    shift
    timeout -k 10 "$t" bash -c "$(declare -p ROOT BUILD OUT DEPS SETUP_ARGS TARGETS CS 2> /dev/null); $(declare -f); \"\$@\"" \
        gpu-check "$@"
}
# step NAME LIMIT CMD...: runs CMD, for at most LIMIT seconds or what is
# left of the budget (15 s kept for the table), with its output into the
# log and $OUT/NAME.log; records status and time for the table
step() {
    local name=$1 limit=$2 t0 st left
    shift 2
    t0=$(date +%s)
    left=$((START + BUDGET - t0 - 15))
    if [ "$left" -lt 10 ]; then
        ROWS+=("$(printf '| %-22s | %-14s | %5ss | %s |' "$name" "not run" 0 "the --budget of ${BUDGET}s is spent")")
        FAILED=1
        NOTE=
        say "--- $name: not run (the --budget of ${BUDGET}s is spent)"
        return 1
    fi
    [ "$limit" -le "$left" ] || limit=$left
    say ""
    say "=== $name (at most ${limit}s): $*"
    in_time "$limit" "$@" > "$OUT/$name.log" 2>&1
    st=$?
    cat "$OUT/$name.log" >> "$LOG"
    local dt=$(($(date +%s) - t0)) res
    case $st in
    0) res=passed ;;
    77) res=skipped ;;
    124 | 137) res="TIMEOUT" FAILED=1 NOTE="stopped at ${limit}s; ${NOTE:-}" ;;
    *) res="FAILED ($st)" FAILED=1 ;;
    esac
    ROWS+=("$(printf '| %-22s | %-14s | %5ss | %s |' "$name" "$res" "$dt" "${NOTE:-}")")
    NOTE=
    say "--- $name: $res in ${dt}s"
    return $st
}

say "gpu-check.sh on $(hostname) at $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?')"
if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > "$OUT/gpus.txt" 2>&1 || ! grep -q '^GPU' "$OUT/gpus.txt"; then
    say "gpu-check.sh: no GPU here (nvidia-smi -L: $(head -n 1 "$OUT/gpus.txt" 2> /dev/null || echo 'not found')): nothing to check"
    exit 77
fi

# --- versions
versions() {
    nvidia-smi
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)"
    local cuda
    cuda=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
    echo "nvcc: $("$cuda/bin/nvcc" --version 2> /dev/null | tail -n 2 | tr '\n' ' ')"
    local lt h
    lt=$(ls "$cuda"/lib64/libcublasLt.so.* "$cuda"/targets/*/lib/libcublasLt.so.* 2> /dev/null | sort -V | tail -n 1)
    h=$(ls "$cuda"/include/cublas_api.h "$cuda"/targets/*/include/cublas_api.h 2> /dev/null | head -n 1)
    echo "cuBLAS(Lt): ${lt:-not found}, header ${h:-not found} $(grep -h -E '#define CUBLAS_VER_(MAJOR|MINOR|PATCH) ' ${h:-/dev/null} | awk '{printf "%s ", $3}')"
    h=$(ls /usr/include/cudnn_version.h "$cuda"/include/cudnn_version.h 2> /dev/null | head -n 1)
    echo "cuDNN header: ${h:-not found} $(grep -h -E '#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' ${h:-/dev/null} | awk '{printf "%s ", $3}')"
    h=$(ls /usr/include/nccl.h "$cuda"/include/nccl.h 2> /dev/null | head -n 1)
    echo "NCCL header: ${h:-not found} $(grep -h -E '#define NCCL_(MAJOR|MINOR|PATCH) ' ${h:-/dev/null} | awk '{printf "%s ", $3}')"
    python3 - << 'EOF'
import torch, transformers
print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version(), "transformers",
      transformers.__version__)
try:
    print("torch's NCCL", ".".join(map(str, torch.cuda.nccl.version())), "device", torch.cuda.get_device_name(0))
except Exception as e:
    print("torch sees no device:", e)
# NCCL of the pip wheel torch takes, where the toolkit's folder has none
# (the build looks only beside CUDA: the "nccl" step says when it lacks it)
try:
    import glob, os, nvidia.nccl
    d = list(nvidia.nccl.__path__)[0]
    print("pip's NCCL (nvidia-nccl):", d, [os.path.basename(f) for f in glob.glob(d + "/*/*nccl*")])
except Exception as e:
    print("no pip NCCL (nvidia.nccl):", e)
EOF
    echo "compute-sanitizer: $(command -v compute-sanitizer || ls "$cuda"/bin/compute-sanitizer 2> /dev/null || echo 'not found')"
    echo "meson $(meson --version 2> /dev/null), ninja $(ninja --version 2> /dev/null), cc: $(cc --version 2> /dev/null | head -n 1)"
}
NOTE="$(head -n 1 "$OUT/gpus.txt" | cut -c1-60)"
step versions 60 versions

# --- build
if deps_env; then
    say "building with the prepared libraries in $DEPS ($(head -n 1 "$DEPS/VERSIONS.txt"))"
else
    say "no prepared folder at $DEPS: building with the system's libraries"
fi
# NCCL: the build looks for it in CUDA's folder alone
# (trainer/comm/meson.build); where that has none, the NCCL of torch's pip
# wheel (nvidia-nccl-*: include/nccl.h, lib/libnccl.so.2) is offered
# through the compiler's search paths (C_INCLUDE_PATH; LIBRARY_PATH to a
# libnccl.so link beside the build, the name the linker wants) and the
# loader's (LD_LIBRARY_PATH, for every step after)
nccl_env() {
    local cuda d
    cuda=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
    [ ! -f "$cuda/include/nccl.h" ] || return 1
    d=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2> /dev/null) || return 1
    [ -f "$d/include/nccl.h" ] && [ -f "$d/lib/libnccl.so.2" ] || return 1
    mkdir -p "$BUILD-nccl" && ln -sf "$d/lib/libnccl.so.2" "$BUILD-nccl/libnccl.so" || return 1
    export C_INCLUDE_PATH="$d/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}"
    export LIBRARY_PATH="$BUILD-nccl${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "no NCCL in $cuda: building with pip's, from $d"
}
nccl_env
# the targets the steps below run (meson test --suite gpu, the bench)
TARGETS="trainer/pile-trainer preprocess/pile-prep tests/test_backend tests/gpu/test_gpu_kernels"
build() {
    local opt=()
    grep -q "option('cuda'" "$ROOT/meson_options.txt" && opt=(-Dcuda=enabled)
    if [ ! -f "$BUILD/build.ninja" ]; then
        meson setup "$BUILD" "$ROOT" -Dwerror=false "${opt[@]}" "${SETUP_ARGS[@]}" || return 1
    fi
    local t=$TARGETS
    # the "nccl" communicator's test, where meson found NCCL
    grep -q '^build tests/gpu/test_nccl:' "$BUILD/build.ninja" && t="$t tests/gpu/test_nccl"
    # the offload step's program (CUDA builds only)
    grep -q '^build bench/bench_offload:' "$BUILD/build.ninja" && t="$t bench/bench_offload"
    # shellcheck disable=SC2086
    ninja -C "$BUILD" $t || return 1
    # the CUDA backend must be in the build (the backend opens before the
    # data, which is missing here on purpose)
    if "$BUILD/trainer/pile-trainer" --backend cuda --data "$OUT/none" --checkpoint_dir "$OUT/none-ck" 2>&1 |
        grep "this build has no CUDA backend"; then
        return 1
    fi
}
NOTE="$(grep -q "option('cuda'" "$ROOT/meson_options.txt" && echo "-Dcuda=enabled" || echo "no cuda option yet")"
step build 300 build
BUILT=$?
[ $BUILT = 0 ] || say "the build did not pass: nothing more to check"

if [ $BUILT = 0 ]; then
    # --- tests/gpu
    # (meson's own limits, 600 s for the kernels and 900 s for the
    # trainer, scaled to fit the step's: a test that hangs is stopped and
    # named by meson, and the others still run)
    tests_gpu() {
        meson test -C "$BUILD" --no-rebuild --print-errorlogs --suite gpu --timeout-multiplier 0.25
        local st=$?
        cp "$BUILD/meson-logs/testlog.txt" "$OUT/tests-gpu-testlog.txt" 2> /dev/null
        return $st
    }
    NOTE="meson test --suite gpu; each test's log: tests-gpu-testlog.txt"
    step tests-gpu 240 tests_gpu
    # --- the backend's unit test, whose cuda cases (the arena, staged
    # uploads through pinned memory and the copy stream) need the device
    NOTE="tests/test_backend on cuda"
    step backend-cuda 60 "$BUILD/tests/test_backend"
    # --- NCCL: the build has the "nccl" communicator, and one rank of it
    # runs every call on device buffers (tests/gpu/test_nccl.c). One GPU
    # can only check world size 1 (each reduction is then the identity);
    # more ranks need as many GPUs.
    nccl() {
        if [ ! -x "$BUILD/tests/gpu/test_nccl" ]; then
            echo "this build has no \"nccl\" communicator (NCCL not found beside CUDA: meson setup's summary, 'NCCL communicator')"
            return 1
        fi
        # NCCL says why it failed only when asked (NCCL_DEBUG)
        NCCL_DEBUG=${NCCL_DEBUG:-WARN} "$BUILD/tests/gpu/test_nccl"
    }
    NOTE="world size 1 only: one GPU cannot check more ranks"
    step nccl 60 nccl
    # --- the trainer's own "nccl" path on this one GPU: two ranks share it,
    # NCCL told they are two hosts (NCCL_HOSTID; it refuses two ranks on
    # one GPU of one host: "Duplicate GPU detected") that talk over
    # loopback sockets. ZeRO 3 in fp32 (the rendezvous, the comm stream,
    # reduce-scatters, the layers' gathers, the checkpoint's) against one
    # rank with the same global batch: every step's loss to 1e-4.
    zero2on1() {
        [ -x "$BUILD/tests/gpu/test_nccl" ] || { echo "this build has no \"nccl\" communicator"; return 77; }
        local d=$BUILD/gpu-check-zero dev=${CUDA_VISIBLE_DEVICES:-0} port=$((20000 + RANDOM % 20000)) r st=0
        dev=${dev%%,*}
        rm -rf "$d" && mkdir -p "$d"
        "$BUILD/preprocess/pile-prep" -q -o "$d/shards" -L 64 -t bytes "$ROOT/data/sample" || return 1
        local common=(--data "$d/shards" --backend cuda --precision fp32 --model tiny --max_steps 20 --threads 1
                      --eval_interval 10 --eval_rows 64 --log_interval 1 --seed 7)
        CUDA_VISIBLE_DEVICES=$dev "$BUILD/trainer/pile-trainer" "${common[@]}" --batch_size 2 --accumulation_steps 4 \
            --checkpoint_dir "$d/one" > "$d/one.log" 2>&1 || { tail -n 20 "$d/one.log"; return 1; }
        local pids=()
        for r in 0 1; do
            env RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
                CUDA_VISIBLE_DEVICES=$dev NCCL_HOSTID=pile-gpu-check-$r NCCL_SOCKET_IFNAME=lo \
                NCCL_DEBUG=${NCCL_DEBUG:-WARN} "$BUILD/trainer/pile-trainer" "${common[@]}" --batch_size 2 \
                --accumulation_steps 2 --zero 3 --checkpoint_dir "$d/two" > "$d/two-$r.log" 2>&1 &
            pids+=($!)
        done
        for r in 0 1; do wait "${pids[$r]}" || st=1; done
        if [ $st != 0 ]; then
            for r in 0 1; do echo "rank $r:"; tail -n 15 "$d/two-$r.log"; done
            return 1
        fi
        grep -h "on each of 2 ranks" "$d/two-0.log" | head -n 1
        # train/loss of each step of both runs, side by side (tests/tap.sh's
        # losses; sourced in this step's own shell)
        . "$ROOT/tests/tap.sh"
        join <(losses "$d/one/metrics.jsonl") <(losses "$d/two/metrics.jsonl") |
            awk '{ e = ($2 - $3) / $2; e = e < 0 ? -e : e; if (e > m) m = e; n++ }
                 END { printf "%d steps; largest relative loss difference, 2 ranks against 1: %.2g\n", n, m
                       exit !(n == 20 && m <= 1e-4) }'
    }
    NOTE="2 ranks on one GPU (NCCL_HOSTID), ZeRO 3 fp32 vs 1 rank"
    step zero-nccl 90 zero2on1
    # --- issue 10's choice for an offloaded optimizer: AdamW on the host
    # (what --offload optimizer does) against streaming the state through
    # the GPU, by their parts (pinned copies each way, AdamW on both
    # backends) on a shard of 2^27 parameters; bench/offload-gpu.sh
    offload() {
        [ -x "$BUILD/bench/bench_offload" ] || { echo "this build has no bench_offload (no CUDA backend)"; return 1; }
        "$BUILD/bench/bench_offload" 134217728 0 5
    }
    NOTE="AdamW on the host vs streaming: its verdict in offload.log"
    step offload 60 offload
    # --- a short training run: GPT-2's tokenizer, the small model, bf16
    train() {
        local d=$BUILD/gpu-check-train
        rm -rf "$d" && mkdir -p "$d"
        "$BUILD/preprocess/pile-prep" -q -o "$d/shards" -L 512 -t gpt2 "$ROOT/data/sample" || return 1
        "$BUILD/trainer/pile-trainer" --data "$d/shards" --checkpoint_dir "$d/ck" --backend cuda --model small \
            --batch_size 16 --max_steps 60 --log_interval 10 --eval_interval 30 --learning_rate 1e-3 --warmup_steps 5 || return 1
        # it learnt: the last validation loss under the first
        awk '/"val\/loss"/ { match($0, /"val\/loss": *[^,}]+/); v = substr($0, RSTART, RLENGTH); sub(/.*: */, "", v)
             if (first == "") first = v; last = v }
             END { print "val loss " first " -> " last; exit !(last < first) }' "$d/ck/metrics.jsonl"
    }
    NOTE="small model, bf16, 60 steps"
    step train 120 train
    # --- the benchmark, short
    if [ $BENCH = 1 ]; then
        NOTE="gpt2, 20 steps"
        step bench 180 env PILE_BENCH_MODELS=gpt2 PILE_BENCH_STEPS=20 PILE_BENCH_WARM=8 "$ROOT/bench/train-gpu.sh" "$BUILD"
    fi
    # --- the kernel test under compute-sanitizer (Firecracker machines:
    # gVisor's refuse the device, said as such)
    if [ $SANITIZER = 1 ]; then
        CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null)
        for tool in memcheck racecheck; do
            sanitize() {
                [ -n "$CS" ] || { echo "compute-sanitizer not found"; return 77; }
                "$CS" --tool "$1" --error-exitcode 3 "$BUILD/tests/gpu/test_gpu_kernels" > "$OUT/sanitizer-$1.txt" 2>&1
                local st=$?
                tail -n 30 "$OUT/sanitizer-$1.txt"
                if grep -qE 'Device not supported|not supported on this|Unable to (find|launch)' "$OUT/sanitizer-$1.txt"; then
                    echo "compute-sanitizer $1 does not run on this machine (gVisor machines refuse the device)"
                    return 77
                fi
                grep -q 'ERROR SUMMARY: 0 errors' "$OUT/sanitizer-$1.txt" || return 1
                return $st
            }
            NOTE="test_gpu_kernels"
            step "sanitizer-$tool" 90 sanitize $tool
        done
    fi
fi

# --- the table
total=$(($(date +%s) - START))
say ""
say "| step                   | result         |  time | note |"
say "|------------------------|----------------|------:|------|"
for r in "${ROWS[@]}"; do say "$r"; done
say "total ${total}s; full log: $LOG"
exit $FAILED
