/* cr_emu.h — a small CUDA emulator for chapter 5: the chapter's .cu files compiled as C++
 * (by g++, after cu2cpp.py) and run on the CPU, so that the kernels are proven on machines
 * without an NVIDIA GPU or toolkit. It never includes anything from a CUDA installation.
 *
 * What it provides: the qualifiers (__global__, __device__, __host__, __forceinline__,
 * __launch_bounds__, __align__), dim3/uint3/float4, threadIdx/blockIdx/blockDim/gridDim,
 * __syncthreads, __syncwarp, the warp shuffles and votes, atomics, __half/__nv_bfloat16
 * with round-to-nearest-even conversions, nvcuda::wmma (fragments, load/store/mma_sync,
 * TF32), and the runtime calls the chapter uses (cudaMalloc, cudaMemcpy, events, errors,
 * device properties).
 *
 * How it runs a launch (cr_emu.cpp): the blocks one after another; inside a block every
 * thread is a fiber (its own stack) that runs until it reaches a barrier (__syncthreads,
 * a warp collective) or returns, in the order of the schedule (CR_EMU_SCHEDULE). The
 * chapter's text has the details (section "The emulator"). */
#ifndef CR_EMU_H
#define CR_EMU_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define CR_EMU 1

/* ---- qualifiers: nothing to do on the host ------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

/* ---- vector types -------------------------------------------------------------------- */
struct uint3 { unsigned x, y, z; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) float2 { float x, y; };
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return float2{x, y}; }

/* The built-in variables: the scheduler sets them before it resumes a thread. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

/* ---- the runtime API (the part the chapter uses) ---------------------------------------- */
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInitializationError = 3,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorNoKernelImageForDevice = 209,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorIllegalAddress = 700,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorAssert = 710,
    cudaErrorLaunchFailure = 719,
    cudaErrorUnknown = 999
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3, cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrL2CacheSize = 38,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76
};

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem, sharedMemPerBlock;
    int warpSize, maxThreadsPerBlock, maxThreadsDim[3], maxGridSize[3];
    int major, minor, multiProcessorCount, l2CacheSize;
};
struct cudaFuncAttributes {
    size_t sharedSizeBytes;
    int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion;
};

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int dev);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev);
cudaError_t cudaDriverGetVersion(int *v);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t err);
const char *cudaGetErrorName(cudaError_t err);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s = 0);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaDeviceReset(void);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t stop);
/* Attributes of a kernel: in the emulator every kernel has an "image" (the host code). */
template <class F> cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F *kernel)
{
    if (!a || !kernel) return cudaErrorInvalidValue;
    *a = cudaFuncAttributes{0, 1024, 0, 90, 90};
    return cudaSuccess;
}

/* ---- half precision: IEEE binary16 and bfloat16, bits kept, conversions rounded --------- */
namespace cr_emu {
/* float -> binary16 bits, round to nearest even; NaN -> 0x7FFF (CUDA's canonical NaN). */
uint16_t float_to_half_bits(float f);
float half_bits_to_float(uint16_t h);
/* float -> bfloat16 bits, round to nearest even; NaN -> 0x7FFF. */
uint16_t float_to_bf16_bits(float f);
float bf16_bits_to_float(uint16_t h);
/* float -> TF32 (kept in a float, low 13 bits zero), round to nearest, ties away from zero
 * (PTX cvt.rna.tf32.f32, what wmma::__float_to_tf32 does). */
float float_to_tf32(float f);
}

struct __half {
    uint16_t x;
    __half() = default;
    __half(float f) : x(cr_emu::float_to_half_bits(f)) {}
    operator float() const { return cr_emu::half_bits_to_float(x); }
};
struct __nv_bfloat16 {
    uint16_t x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : x(cr_emu::float_to_bf16_bits(f)) {}
    operator float() const { return cr_emu::bf16_bits_to_float(x); }
};
typedef __half half;
static inline __half __float2half_rn(float f) { __half h; h.x = cr_emu::float_to_half_bits(f); return h; }
static inline __half __float2half(float f) { return __float2half_rn(f); }
static inline float __half2float(__half h) { return cr_emu::half_bits_to_float(h.x); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    __nv_bfloat16 h; h.x = cr_emu::float_to_bf16_bits(f); return h;
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline float __bfloat162float(__nv_bfloat16 h) { return cr_emu::bf16_bits_to_float(h.x); }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }

/* ---- what a kernel calls: barriers, collectives, atomics --------------------------------- */
namespace cr_emu {
/* The calling thread's lane (0..31) and warp within its block. */
int lane_id();
int warp_id();
/* Waits until every thread of the block that has not returned arrives (__syncthreads). */
void sync_block();
/* Waits until every lane of mask in this warp arrives (lanes past the block's end, and
 * lanes that have returned, count as arrived). */
void sync_warp(unsigned mask);
/* This warp's 32 exchange slots of 8 bytes each (shuffles, votes). */
uint64_t *warp_slots();
/* Notes that the running launch used a floating-point atomic (order-dependent rounding). */
void note_float_atomic();
/* The k-th shared array of the running block (allocated and poisoned by the first thread
 * to ask); name is for messages. */
void *shared_alloc(const char *name, size_t bytes, size_t align);
/* The launch's dynamic shared memory (smem bytes, poisoned). */
void *dynamic_shared(size_t align);
/* The race detector: checks and records an access of n bytes at p by the running thread
 * (called by the ThreadSanitizer hooks of cr_emu_race.cpp; nothing outside a kernel). */
void race_access(const void *p, size_t n, bool write);
unsigned long long race_bytes_checked();
/* Reports a device-side failure (an assert, a trap) and ends the thread. */
[[noreturn]] void device_fail(const char *what);
/* The same, naming the source line. */
[[noreturn]] void device_fail_at(const char *what, const char *file, int line);

/* One exchange through the warp's slots: every lane of mask deposits v, then reads the
 * value of lane src(lane). */
template <class T, class Src> T exchange(unsigned mask, T v, Src src)
{
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t *slots = warp_slots();
    const int lane = lane_id();
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    slots[lane] = bits;
    sync_warp(mask);
    const int from = src(lane);
    T r = v;
    if (from >= 0 && from < 32) std::memcpy(&r, &slots[from], sizeof r);
    sync_warp(mask);   /* nobody overwrites a slot before everyone has read it */
    return r;
}
}

static inline void __syncthreads() { cr_emu::sync_block(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { cr_emu::sync_warp(mask); }
static inline void __threadfence() {}
static inline void __threadfence_block() {}
/* __trap(), with where it was called in the message (a coursework stub stops its kernel so). */
#define __trap() ::cr_emu::device_fail_at("__trap()", __FILE__, __LINE__)

/* The shuffles: width splits the warp into segments of width lanes (a power of two). */
template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    return cr_emu::exchange(mask, v, [=](int lane) { return (lane & ~(width - 1)) + (src & (width - 1)); });
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    return cr_emu::exchange(mask, v, [=](int lane) {
        return (lane & (width - 1)) >= (int)d ? lane - (int)d : lane; });
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32)
{
    return cr_emu::exchange(mask, v, [=](int lane) {
        return (lane & (width - 1)) + (int)d < width ? lane + (int)d : lane; });
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32)
{
    return cr_emu::exchange(mask, v, [=](int lane) {
        const int to = lane ^ m;
        return (to & ~(width - 1)) == (lane & ~(width - 1)) ? to : lane; });
}
/* Bit i set when lane i of mask has pred != 0. */
unsigned __ballot_sync(unsigned mask, int pred);
static inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
static inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == __ballot_sync(mask, 1); }
unsigned __activemask();

/* Atomics: fibers switch only at barriers, so a read-modify-write is atomic by itself.
 * They are not instrumented (CR_EMU_ATOMIC): the race detector does not see them, as
 * atomics are how threads may touch one byte in one interval without a race. */
#define CR_EMU_ATOMIC __attribute__((no_sanitize("thread")))
static inline CR_EMU_ATOMIC float atomicAdd(float *p, float v) { cr_emu::note_float_atomic(); const float o = *p; *p = o + v; return o; }
static inline CR_EMU_ATOMIC double atomicAdd(double *p, double v) { cr_emu::note_float_atomic(); const double o = *p; *p = o + v; return o; }
template <class T> CR_EMU_ATOMIC T atomicAdd(T *p, T v) { const T o = *p; *p = o + v; return o; }
template <class T> CR_EMU_ATOMIC T atomicSub(T *p, T v) { const T o = *p; *p = o - v; return o; }
template <class T> CR_EMU_ATOMIC T atomicMax(T *p, T v) { const T o = *p; if (v > o) *p = v; return o; }
template <class T> CR_EMU_ATOMIC T atomicMin(T *p, T v) { const T o = *p; if (v < o) *p = v; return o; }
template <class T> CR_EMU_ATOMIC T atomicExch(T *p, T v) { const T o = *p; *p = v; return o; }
template <class T> CR_EMU_ATOMIC T atomicCAS(T *p, T cmp, T v) { const T o = *p; if (o == cmp) *p = v; return o; }

/* The emulator's message about the last launch's failure ("" when it succeeded): the
 * race, deadlock or trap, with the kernel, block and thread. */
extern "C" const char *cr_emu_last_failure(void);
/* Bytes the race detector has checked so far (0 where the kernels are not instrumented). */
extern "C" unsigned long long cr_emu_race_bytes_checked(void);

/* ---- launches: kernel<<<grid, block, smem, stream>>>(args) after cu2cpp.py ----------------- */
namespace cr_emu {
struct launch_cfg {
    const char *name;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
/* Runs the grid: body(ctx) once per thread, blocks one after another (cr_emu.cpp). */
void run_grid(const launch_cfg &cfg, void (*body)(void *), void *ctx);

template <class... P> struct launcher {
    void (*kernel)(P...);
    launch_cfg cfg;
    /* Converts the arguments to the kernel's parameter types (as a launch does) and runs. */
    template <class... A> void operator()(A &&...args) const
    {
        static_assert(sizeof...(A) == sizeof...(P), "wrong number of kernel arguments");
        struct ctx_t {
            void (*k)(P...);
            std::tuple<typename std::decay<P>::type...> args;
        } ctx{kernel, std::tuple<typename std::decay<P>::type...>(std::forward<A>(args)...)};
        run_grid(cfg, [](void *c) {
            ctx_t *x = static_cast<ctx_t *>(c);
            std::apply(x->k, x->args);   /* each thread gets its own copy of the arguments */
        }, &ctx);
    }
};
template <class... P>
launcher<P...> launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                      size_t smem = 0, cudaStream_t stream = 0)
{
    return launcher<P...>{kernel, launch_cfg{name, grid, block, smem, stream}};
}
}

#endif
