/* race_demo.cu — kernels with a race on purpose, and their correct twins, for
 * tests/test_ch05_race.c: the emulator's race detector (cr_emu.cpp, "the race detector")
 * must name each race (kernel, memory, byte, both threads) and stay quiet on the twins.
 * Test code for the emulator only: it reads the emulator's failure message. */
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

/* Each thread writes s[t] and reads its neighbour's s[t + 1] without a barrier between:
 * the neighbour may not have written it yet (or, with the barrier, has). */
__global__ void shift_no_sync(float *out)
{
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = (float)(t + 1);
    out[t] = t + 1 < (int)blockDim.x ? s[t + 1] : 0.0f;
}
__global__ void shift_synced(float *out)
{
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = (float)(t + 1);
    __syncthreads();
    out[t] = t + 1 < (int)blockDim.x ? s[t + 1] : 0.0f;
}

/* A tree sum whose loop lacks its barrier: a thread adds s[t + half] while thread
 * t + half may still be adding into it (a write after a read, then a read of a write). */
__global__ void tree_sum_no_sync(float *out)
{
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = (float)(t + 1);
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2)
        if (t < half) s[t] += s[t + half];
    if (t == 0) out[0] = s[0];
}
__global__ void tree_sum_synced(float *out)
{
    __shared__ float s[64];
    const int t = threadIdx.x;
    s[t] = (float)(t + 1);
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) s[t] += s[t + half];
        __syncthreads();
    }
    if (t == 0) out[0] = s[0];
}

/* Lanes swap values through shared memory: ordered by __syncwarp, a race without it. */
__global__ void warp_swap_no_sync(float *out)
{
    __shared__ float s[32];
    const int t = threadIdx.x;
    s[t] = (float)(t + 1);
    out[t] = s[t ^ 1];
}
__global__ void warp_swap_synced(float *out)
{
    __shared__ float s[32];
    const int t = threadIdx.x;
    s[t] = (float)(t + 1);
    __syncwarp();
    out[t] = s[t ^ 1];
}

/* Every block writes out[0]: nothing orders two blocks of one launch. */
__global__ void blocks_same_output(float *out)
{
    if (threadIdx.x == 0) out[0] = (float)(blockIdx.x + 1);
}
/* Every block adds into out[0] atomically: no race (the sum is exact in small integers). */
__global__ void blocks_atomic_sum(float *out)
{
    atomicAdd(&out[0], (float)(threadIdx.x + 1));
}

/* Shifts a device array left in place, one element per thread: thread i reads x[i + 1],
 * which thread i + 1 (maybe of the next block) overwrites in the same launch. */
__global__ void shift_in_place(float *x, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i + 1 < n) x[i] = x[i + 1];
}

/* Runs the demo kernel `name` on 2 blocks of `threads` threads over a device array of n
 * floats holding 1, 2, ..., n (or zeros for blocks_atomic_sum); copies it back to host
 * (n floats) and the emulator's failure message (or "") to msg. Returns the launch's
 * cudaError_t, or -1 for an unknown name. */
extern "C" int race_demo_run(const char *name, int threads, float *host, int n, char *msg,
                             size_t len)
{
    float *d = nullptr;
    msg[0] = '\0';
    for (int i = 0; i < n; i++) host[i] = std::strcmp(name, "blocks_atomic_sum") ? (float)(i + 1) : 0.0f;
    if (cudaMalloc((void **)&d, (size_t)n * sizeof(float)) != cudaSuccess) return cudaErrorMemoryAllocation;
    cudaMemcpy(d, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice);
    cudaGetLastError();
    const dim3 grid(std::strncmp(name, "blocks_", 7) && std::strcmp(name, "shift_in_place") ? 1 : 2);
    if (!std::strcmp(name, "shift_no_sync")) shift_no_sync<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "shift_synced")) shift_synced<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "tree_sum_no_sync")) tree_sum_no_sync<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "tree_sum_synced")) tree_sum_synced<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "warp_swap_no_sync")) warp_swap_no_sync<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "warp_swap_synced")) warp_swap_synced<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "blocks_same_output")) blocks_same_output<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "blocks_atomic_sum")) blocks_atomic_sum<<<grid, threads>>>(d);
    else if (!std::strcmp(name, "shift_in_place")) shift_in_place<<<grid, threads>>>(d, n);
    else { cudaFree(d); return -1; }
    const cudaError_t e = cudaGetLastError();
    std::snprintf(msg, len, "%s", cr_emu_last_failure());
    cudaMemcpy(host, d, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d);
    return (int)e;
}
