/* A host stand-in for the CUDA features that the kernels of trainer/cuda/
 * use, so that a test compiles those kernels with the host C++ compiler
 * and runs them where no GPU exists (this machine, CI). Each block's
 * threads are fibers (ucontext) on the calling thread, blocks run one
 * after another in a shuffled order; __syncthreads is a barrier over the block,
 * __shfl_xor_sync an exchange over the warp's 32 threads behind a
 * barrier; __shared__ variables are statics (one block runs at a time).
 * A barrier that not every thread of its block or warp reaches (a
 * divergent __syncthreads or shuffle, undefined on a GPU) stops the launch
 * with a message instead of hanging, and so does a launch outside the
 * GPU's limits (block size, grid size). What it cannot show is the GPU's
 * own behaviour: timing, its memory model beyond these barriers, its
 * arithmetic (expf's last bits). Include it before the .cu file, which
 * then leaves out its CUDA headers (PILE_CUDA_SIM); PILE_LAUNCH
 * (cuda_internal.h) runs a kernel through cuda_sim::launch here.
 * cuda_sim_runtime.h adds what the ops' host wrappers call. */
#ifndef PILE_CUDA_SIM_H
#define PILE_CUDA_SIM_H

#define PILE_CUDA_SIM 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "precision.h"

#if defined(__SANITIZE_ADDRESS__)
#define CUDA_SIM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_SIM_ASAN 1
#endif
#endif
#ifdef CUDA_SIM_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

using std::max;
using std::min;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace cuda_sim {
[[noreturn]] void misaligned(const void *p, const char *what);
}

/* CUDA's 16-byte vector (kernels.cuh's packs). A GPU faults on a 16-byte
 * load or store at an address that is not a multiple of 16 (x86 would not
 * mind): a copy from or into one checks the address and stops with a
 * message there. */
struct alignas(16) uint4 {
    unsigned x, y, z, w;
    uint4() = default;
    uint4(const uint4 &o) : x(o.x), y(o.y), z(o.z), w(o.w)
    {
        if ((uintptr_t)&o & 15) cuda_sim::misaligned(&o, "load");
    }
    uint4 &operator=(const uint4 &o)
    {
        if ((uintptr_t)&o & 15) cuda_sim::misaligned(&o, "load");
        if ((uintptr_t)this & 15) cuda_sim::misaligned(this, "store");
        x = o.x, y = o.y, z = o.z, w = o.w;
        return *this;
    }
};

inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* One fiber runs at a time, so these are plain globals, set by the
 * scheduler before it switches to a thread. */
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuda_sim {

constexpr size_t STACK = (size_t)256 << 10;

struct barrier {
    int n = 0, count = 0;
    std::vector<int> waiting;
};

/* The threads' stacks, kept from block to block and launch to launch (a
 * fresh allocation per thread made every launch pay for faulting its
 * pages in again, and for malloc's perturbation where that is on, as
 * under meson test): stack t serves thread t of whichever block runs. */
inline std::vector<std::unique_ptr<char[]>> stacks;

inline char *stack_of(int t)
{
    while (stacks.size() <= (size_t)t) stacks.emplace_back(new char[STACK]);
    return stacks[(size_t)t].get();
}

struct thread {
    ucontext_t ctx;
    char *stack;
    bool done = false;
};

/* The running block. */
struct block {
    std::vector<std::unique_ptr<thread>> th;
    std::deque<int> runnable;
    int current = -1;
    ucontext_t main;
    barrier all;
    std::vector<barrier> warps;
    /* shuffle slots, two per thread, 8 bytes each (any shuffled type):
     * shuffle k of a warp writes slot k % 2, so one barrier per shuffle
     * keeps its reads apart from the writes of shuffle k + 1 (which come
     * after barrier k + 1, after every read) */
    std::vector<uint64_t> slot[2];
    std::vector<unsigned> phase;
    std::function<void()> body;
#ifdef CUDA_SIM_ASAN
    const void *main_bottom = nullptr;
    size_t main_size = 0;
#endif
};

inline block *cur;

[[noreturn]] inline void misaligned(const void *p, const char *what)
{
    fprintf(stderr, "cuda_sim: block (%u, %u, %u) thread %u: a 16-byte %s at %p, not a multiple of 16 (a GPU faults)\n",
            blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, what, p);
    abort();
}

/* From the running thread back to the scheduler; dying: it has returned. */
__attribute__((noinline)) inline void to_scheduler(bool dying)
{
    thread &t = *cur->th[(size_t)cur->current];
#ifdef CUDA_SIM_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, cur->main_bottom, cur->main_size);
#endif
    if (dying) {
        setcontext(&cur->main);
    } else {
        swapcontext(&t.ctx, &cur->main);
    }
#ifdef CUDA_SIM_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

inline void entry()
{
#ifdef CUDA_SIM_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &cur->main_bottom, &cur->main_size);
#endif
    cur->body();
    cur->th[(size_t)cur->current]->done = true;
    to_scheduler(true);
}

inline void wait(barrier &b)
{
    if (++b.count == b.n) {
        b.count = 0;
        for (int w : b.waiting) cur->runnable.push_back(w);
        b.waiting.clear();
        return;
    }
    b.waiting.push_back(cur->current);
    to_scheduler(false);
}

template <typename V> inline V shfl_xor(V v, int o)
{
    static_assert(sizeof(V) <= sizeof(uint64_t), "a shuffled value fits a slot");
    const int t = (int)threadIdx.x, w = t / 32;
    std::vector<uint64_t> &s = cur->slot[cur->phase[(size_t)t]++ & 1];
    memcpy(&s[(size_t)t], &v, sizeof v);
    wait(cur->warps[(size_t)w]);
    V r;
    memcpy(&r, &s[(size_t)(w * 32 + ((t % 32) ^ o))], sizeof r);
    return r;
}

/* A fresh thread that starts in entry(). (getcontext and swapcontext
 * return twice: each lives in a small function of its own, with nothing
 * there that a second return could find clobbered.) */
__attribute__((noinline)) inline thread *new_thread(int t)
{
    thread *th = new thread;
    th->stack = stack_of(t);
    getcontext(&th->ctx);
    th->ctx.uc_stack.ss_sp = th->stack;
    th->ctx.uc_stack.ss_size = STACK;
    th->ctx.uc_link = nullptr;
    makecontext(&th->ctx, entry, 0);
    return th;
}

/* Runs thread t until it waits at a barrier or returns. */
__attribute__((noinline)) inline void switch_to(block *b, int t)
{
    b->current = t;
    threadIdx = dim3{(unsigned)t, 0, 0};
    thread *th = b->th[(size_t)t].get();
#ifdef CUDA_SIM_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, th->stack, STACK);
#endif
    swapcontext(&b->main, &th->ctx);
#ifdef CUDA_SIM_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

/* One block of `threads` threads, until every thread has returned. */
template <typename F> void run_block(dim3 idx, int threads, F &body)
{
    block b;
    b.body = body;
    b.all.n = threads;
    b.warps.resize((size_t)threads / 32);
    for (barrier &w : b.warps) w.n = 32;
    for (int k = 0; k < 2; k++) b.slot[k].resize((size_t)threads);
    b.phase.assign((size_t)threads, 0);
    cur = &b;
    blockIdx = idx;
    for (int t = 0; t < threads; t++) {
        b.th.emplace_back(new_thread(t));
        b.runnable.push_back(t);
    }
    while (!b.runnable.empty()) {
        const int t = b.runnable.front();
        b.runnable.pop_front();
        switch_to(&b, t);
    }
    for (int t = 0; t < threads; t++)
        if (!b.th[(size_t)t]->done) {
            fprintf(stderr,
                    "cuda_sim: block (%u, %u, %u): thread %d waits at a barrier that not every thread reaches\n",
                    idx.x, idx.y, idx.z, t);
            abort();
        }
    cur = nullptr;
}

[[noreturn]] inline void refuse(const char *what, dim3 grid, int threads)
{
    fprintf(stderr, "cuda_sim: a launch of (%u, %u, %u) blocks of %d threads: %s\n", grid.x, grid.y, grid.z, threads,
            what);
    abort();
}

/* kernel<<<grid, threads>>>(...) as cuda_sim::launch(grid, threads, [&] {
 * kernel(...); }). A launch a GPU refuses stops here: threads not in 1 ..
 * 1024, or (the simulator's own limit) not a multiple of 32; an empty
 * grid, or one above 2^31 - 1 blocks in x or 65535 in y or z. */
template <typename F> void launch(dim3 grid, int threads, F body)
{
    if (threads < 1 || threads > 1024) refuse("not 1 to 1024 threads per block", grid, threads);
    if (threads % 32) refuse("threads per block not a multiple of 32 (the simulator's warps)", grid, threads);
    if (!grid.x || !grid.y || !grid.z) refuse("an empty grid (a GPU fails the launch)", grid, threads);
    if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) refuse("a grid beyond the GPU's limits", grid, threads);
    gridDim = grid;
    blockDim = dim3{(unsigned)threads, 1, 1};
    /* The blocks one after another in a shuffled order, a fixed one per
     * launch: a GPU runs them in any order, so a result that depends on
     * theirs (two blocks adding into one output) differs here from the
     * in-order one a reference computes. */
    static uint64_t launches = 0;
    std::vector<size_t> order((size_t)grid.x * grid.y * grid.z);
    for (size_t k = 0; k < order.size(); k++) order[k] = k;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(++launches));
    for (size_t k : order)
        run_block(dim3{(unsigned)(k % grid.x), (unsigned)(k / grid.x % grid.y), (unsigned)(k / grid.x / grid.y)}, threads, body);
}

/* PILE_LAUNCH(grid, block, stream, kernel)(args...) (cuda_internal.h):
 * launcher(grid, block, stream).run(kernel) returns what takes the
 * arguments and launches. Blocks are one-dimensional here, as in every
 * kernel of trainer/cuda; the stream is ignored (one stream, in order). */
struct launcher {
    dim3 grid, block;
    template <typename S> launcher(dim3 g, dim3 b, S) : grid(g), block(b) {}
    template <typename... P> auto run(void (*kernel)(P...)) const
    {
        if (block.y != 1 || block.z != 1) refuse("a block of more than one dimension", grid, (int)block.x);
        const dim3 g = grid;
        const int threads = (int)block.x;
        return [=](auto... a) { launch(g, threads, [&] { kernel(a...); }); };
    }
};

} /* namespace cuda_sim */

inline void __syncthreads() { cuda_sim::wait(cuda_sim::cur->all); }
inline float __shfl_xor_sync(unsigned, float v, int o) { return cuda_sim::shfl_xor(v, o); }
inline double __shfl_xor_sync(unsigned, double v, int o) { return cuda_sim::shfl_xor(v, o); }
inline int __shfl_xor_sync(unsigned, int v, int o) { return cuda_sim::shfl_xor(v, o); }

/* cuda_dtype.cuh's element types and their loads and stores: bf16 and
 * fp16 as their bits, converted by precision.h (round to nearest even,
 * fp16 overflowing to infinity, as __float2bfloat16_rn and
 * __float2half_rn do), the CPU emulation's own rounding. */
struct sim_bf16 {
    uint16_t bits;
};
struct sim_f16 {
    uint16_t bits;
};
inline float pile_cuda_load(float x) { return x; }
inline float pile_cuda_load(sim_bf16 x) { return pile_bf16_to_fp32(x.bits); }
inline float pile_cuda_load(sim_f16 x) { return pile_fp16_to_fp32(x.bits); }
template <typename T> T pile_cuda_store(float x);
template <> inline float pile_cuda_store<float>(float x) { return x; }
template <> inline sim_bf16 pile_cuda_store<sim_bf16>(float x) { return sim_bf16{pile_fp32_to_bf16(x)}; }
template <> inline sim_f16 pile_cuda_store<sim_f16>(float x) { return sim_f16{pile_fp32_to_fp16(x)}; }
/* cuda_dtype.cuh's PILE_CUDA_DISPATCH names CUDA's types */
typedef sim_bf16 __nv_bfloat16;
typedef sim_f16 __half;

#endif
