# Sourced by bench/attention.sh and bench/scalar-math.sh, which time the
# CPU backend's ops from a small C driver (including bench_driver.h)
# linked against a build's static libraries.
#
# bench_driver_build BUILD_DIR DRIVER_C OUT [CFLAGS...]: DRIVER_C compiled
# against BUILD_DIR's libpile_trainer.a and libpile_common.a (headers from
# the sources that build was made from), OpenBLAS's OpenMP build where
# Debian has it.
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
bench_driver_build() {
    bd_src=$(sed -n 's/.*"source": *"\([^"]*\)".*/\1/p' "$1/meson-info/meson-info.json")
    bd_blas=$(pkg-config --variable=libdir openblas 2> /dev/null || true)
    bd_omp=/usr/lib/$(gcc -print-multiarch)/openblas-openmp
    [ -d "$bd_omp" ] && bd_blas=$bd_omp
    bd_build=$1 bd_c=$2 bd_out=$3
    shift 3
    cc -O2 -std=c11 -D_GNU_SOURCE -fopenmp "$@" -I"$BENCH_DIR" -I"$bd_src/trainer" -I"$bd_src/common" \
        -isystem "/usr/include/$(gcc -print-multiarch)/openblas-openmp" "$bd_c" \
        "$bd_build/trainer/libpile_trainer.a" "$bd_build/common/libpile_common.a" \
        ${bd_blas:+-L"$bd_blas" -Wl,-rpath,"$bd_blas"} -lopenblas -luv -lm -o "$bd_out"
}
