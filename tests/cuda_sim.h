/* A host stand-in for the few CUDA features that the kernels of
 * trainer/cuda/attention.cu use, so that a test compiles those kernels
 * with the host C++ compiler and runs them where no GPU exists (this
 * machine, CI). Each block's threads are fibers (ucontext) on the calling
 * thread, blocks run one after another; __syncthreads is a barrier over
 * the block, __shfl_xor_sync an exchange over the warp's 32 threads behind
 * a barrier; __shared__ variables are statics (one block runs at a time).
 * A barrier that not every thread of its block or warp reaches (a
 * divergent __syncthreads or shuffle, undefined on a GPU) stops the launch
 * with a message instead of hanging. What it cannot show is the GPU's own
 * behaviour: timing, its memory model beyond these barriers, launch
 * limits, its arithmetic (expf's last bits). Include it before the .cu
 * file, which then leaves out its CUDA headers and launches
 * (PILE_CUDA_SIM). */
#ifndef PILE_CUDA_SIM_H
#define PILE_CUDA_SIM_H

#define PILE_CUDA_SIM 1

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
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
    unsigned x = 1, y = 1, z = 1;
};

/* One fiber runs at a time, so these are plain globals, set by the
 * scheduler before it switches to a thread. */
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuda_sim {

constexpr size_t STACK = (size_t)256 << 10;

struct barrier {
    int n = 0, count = 0;
    std::vector<int> waiting;
};

struct thread {
    ucontext_t ctx;
    std::unique_ptr<char[]> stack{new char[STACK]};
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
    /* shuffle slots, two per type: shuffle k of a warp writes slot k % 2,
     * so one barrier per shuffle keeps its reads apart from the writes of
     * shuffle k + 1 (which come after barrier k + 1, after every read) */
    std::vector<float> f[2];
    std::vector<int> i[2];
    std::vector<unsigned> phase;
    std::function<void()> body;
#ifdef CUDA_SIM_ASAN
    const void *main_bottom = nullptr;
    size_t main_size = 0;
#endif
};

inline block *cur;

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

template <typename V> inline V shfl_xor(std::vector<V> (&slot)[2], V v, int o)
{
    const int t = (int)threadIdx.x, w = t / 32;
    std::vector<V> &s = slot[cur->phase[(size_t)t]++ & 1];
    s[(size_t)t] = v;
    wait(cur->warps[(size_t)w]);
    return s[(size_t)(w * 32 + ((t % 32) ^ o))];
}

/* A fresh thread that starts in entry(). (getcontext and swapcontext
 * return twice: each lives in a small function of its own, with nothing
 * there that a second return could find clobbered.) */
__attribute__((noinline)) inline thread *new_thread()
{
    thread *th = new thread;
    getcontext(&th->ctx);
    th->ctx.uc_stack.ss_sp = th->stack.get();
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
    __sanitizer_start_switch_fiber(&fake, th->stack.get(), STACK);
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
    for (int k = 0; k < 2; k++) {
        b.f[k].resize((size_t)threads);
        b.i[k].resize((size_t)threads);
    }
    b.phase.assign((size_t)threads, 0);
    cur = &b;
    blockIdx = idx;
    for (int t = 0; t < threads; t++) {
        b.th.emplace_back(new_thread());
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

/* kernel<<<grid, threads>>>(...) as cuda_sim::launch(grid, threads, [&] {
 * kernel(...); }); threads: a multiple of 32. */
template <typename F> void launch(dim3 grid, int threads, F body)
{
    gridDim = grid;
    blockDim = dim3{(unsigned)threads, 1, 1};
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) run_block(dim3{x, y, z}, threads, body);
}

} /* namespace cuda_sim */

inline void __syncthreads() { cuda_sim::wait(cuda_sim::cur->all); }
inline float __shfl_xor_sync(unsigned, float v, int o) { return cuda_sim::shfl_xor(cuda_sim::cur->f, v, o); }
inline int __shfl_xor_sync(unsigned, int v, int o) { return cuda_sim::shfl_xor(cuda_sim::cur->i, v, o); }

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

#endif
