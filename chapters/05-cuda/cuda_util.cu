/* cuda_util.cu — chapter 5's host side: the device, buffers, copies, timing; every CUDA
 * call checked and turned into a cr_status with CUDA's own message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "cuda_util.h"

// @snippet cuda_check_impl
cr_status cr_cuda_check(cudaError_t err, const char *what)
{
    if (err == cudaSuccess) return CR_OK;
#ifdef CR_EMU
    /* on the emulator a failed kernel says why (a race, a deadlock, a trap, where) */
    if (err == cudaErrorLaunchFailure && *cr_emu_last_failure())
        return cr_fail(CR_EIO, "%s: %s: %s", what, cudaGetErrorString(err), cr_emu_last_failure());
#endif
    return cr_fail(CR_EIO, "%s: %s", what, cudaGetErrorString(err));
}
// @end cuda_check_impl

cr_status cr_cuda_launched(const char *kernel)
{
    static int sync_each = -1;   /* CR_CUDA_SYNC, read once */
    if (sync_each < 0) {
        const char *e = getenv("CR_CUDA_SYNC");
        sync_each = e && *e && strcmp(e, "0") != 0;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "kernel %s (launch)", kernel);
    CR_TRY(cr_cuda_check(cudaGetLastError(), msg));
    if (!sync_each) return CR_OK;
    snprintf(msg, sizeof msg, "kernel %s (while it ran)", kernel);
    return cr_cuda_check(cudaDeviceSynchronize(), msg);
}

/* Refuses a tensor-core kernel on a device older than sm_80 (TF32 and BF16 need it). */
cr_status cr_cuda_need_sm80(const char *fn)
{
    int dev = 0, major = 0;
    CR_TRY(cr_cuda_check(cudaGetDevice(&dev), "cudaGetDevice"));
    CR_TRY(cr_cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
                         "cudaDeviceGetAttribute"));
    if (major < 8)
        return cr_fail(CR_EINVAL, "%s: needs a GPU of compute capability 8.0 or newer, this "
                       "one is %d.x", fn, major);
    return CR_OK;
}

/* ---- the device -------------------------------------------------------------------------- */

static char unavailable_reason[256];

__global__ void convert_kernel(const float *__restrict__ src, void *__restrict__ dst,
                               long long n, int to_bf16);

// @snippet cuda_available
int cr_cuda_available(void)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);  /* no driver or no GPU: an error, or 0 */
    if (err != cudaSuccess) {
        snprintf(unavailable_reason, sizeof unavailable_reason, "cudaGetDeviceCount: %s",
                 cudaGetErrorString(err));
        (void)cudaGetLastError();                   /* clear the sticky error */
        return 0;
    }
    if (count == 0) {
        snprintf(unavailable_reason, sizeof unavailable_reason,
                 "cudaGetDeviceCount: the runtime found 0 devices");
        return 0;
    }
    /* a GPU for which the build holds neither machine code nor PTX it can compile: skip */
    cudaFuncAttributes attr;
    err = cudaFuncGetAttributes(&attr, (const void *)convert_kernel);
    if (err != cudaSuccess) {
        cudaDeviceProp prop;
        const int cc = cudaGetDeviceProperties(&prop, 0) == cudaSuccess
                           ? prop.major * 10 + prop.minor : 0;
        snprintf(unavailable_reason, sizeof unavailable_reason, "this build has no kernel for the "
                 "GPU (compute capability %d.%d): %s; rebuild with -Dgpu_arch=...,%d",
                 cc / 10, cc % 10, cudaGetErrorString(err), cc);
        (void)cudaGetLastError();
        return 0;
    }
    unavailable_reason[0] = '\0';
    return 1;
}
// @end cuda_available

const char *cr_cuda_unavailable_reason(void) { return unavailable_reason; }

int cr_cuda_emulated(void)
{
#ifdef CR_EMU
    return 1;
#else
    return 0;
#endif
}

cr_status cr_cuda_device_info(cr_cuda_info *info)
{
    if (!info) return cr_fail(CR_EINVAL, "cr_cuda_device_info: info is NULL");
    memset(info, 0, sizeof *info);
    cudaDeviceProp prop;
    CR_TRY(cr_cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties"));
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->sm_count = prop.multiProcessorCount;
    info->total_mem = prop.totalGlobalMem;
    info->l2_bytes = (size_t)prop.l2CacheSize;
    CR_TRY(cr_cuda_check(cudaDriverGetVersion(&info->driver_version), "cudaDriverGetVersion"));
    CR_TRY(cr_cuda_check(cudaRuntimeGetVersion(&info->runtime_version), "cudaRuntimeGetVersion"));
    return CR_OK;
}

/* ---- buffers and copies -------------------------------------------------------------------- */

cr_status cr_cuda_malloc(void **p, size_t bytes, const char *what)
{
    if (!p) return cr_fail(CR_EINVAL, "cr_cuda_malloc(%s): p is NULL", what ? what : "?");
    *p = NULL;
    char msg[160];
    snprintf(msg, sizeof msg, "cudaMalloc(%s: %zu bytes)", what ? what : "buffer", bytes);
    return cr_cuda_check(cudaMalloc(p, bytes ? bytes : 1), msg);
}

void cr_cuda_free(void *p)
{
    if (p) (void)cudaFree(p);
}

cr_status cr_cuda_to_device(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return CR_OK;
    if (!dst || !src) return cr_fail(CR_EINVAL, "cr_cuda_to_device: NULL pointer");
    return cr_cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice),
                         "cudaMemcpy (host to device)");
}

cr_status cr_cuda_to_host(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return CR_OK;
    if (!dst || !src) return cr_fail(CR_EINVAL, "cr_cuda_to_host: NULL pointer");
    return cr_cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost),
                         "cudaMemcpy (device to host)");
}

cr_status cr_cuda_poison(float *p, size_t n)
{
    if (n == 0) return CR_OK;
    /* 0xFF bytes: every float a quiet NaN, as cr_tensor_poison writes */
    return cr_cuda_check(cudaMemset(p, 0xFF, n * sizeof(float)), "cudaMemset (poison)");
}

cr_status cr_cuda_sync(const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s (cudaDeviceSynchronize)", what ? what : "kernel");
    CR_TRY(cr_cuda_check(cudaGetLastError(), msg));
    return cr_cuda_check(cudaDeviceSynchronize(), msg);
}

cr_status cr_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    size_t f = 0, t = 0;
    CR_TRY(cr_cuda_check(cudaMemGetInfo(&f, &t), "cudaMemGetInfo"));
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return CR_OK;
}

/* ---- the shared workspace -------------------------------------------------------------------- */

static void *ws_ptr;
static size_t ws_size;

cr_status cr_cuda_workspace(size_t bytes, void **p)
{
    if (bytes > ws_size) {
        cr_cuda_workspace_release();
        CR_TRY(cr_cuda_malloc(&ws_ptr, bytes, "convolution workspace"));
        ws_size = bytes;
    }
    *p = ws_ptr;
    return CR_OK;
}

void cr_cuda_workspace_release(void)
{
    cr_cuda_free(ws_ptr);
    ws_ptr = NULL;
    ws_size = 0;
}

size_t cr_cuda_workspace_bytes(void) { return ws_size; }

/* ---- timing ---------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Reads n float4 of buf and adds them up: evicts whatever was in L2 by filling it with
 * clean lines (a write, e.g. cudaMemset, would leave dirty lines whose write-back lands in
 * the next timed run). The sum is stored only if it equals an unlikely value, so that the
 * reads are not optimised away. */
__global__ void l2_flush_kernel(const float4 *__restrict__ buf, long long n, float *sink)
{
    float s = 0.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float4 v = buf[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s == 1234.5678f) *sink = s;
}

// @snippet cuda_time
cr_status cr_cuda_time_stats(cr_status (*fn)(void *arg), void *arg, int warmup, int repeats,
                             cr_cuda_timing *t)
{
    if (!fn || !t || repeats < 1 || warmup < 0)
        return cr_fail(CR_EINVAL, "cr_cuda_time: fn, t, repeats >= 1 required");
    cudaDeviceProp prop;
    CR_TRY(cr_cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties"));
    const size_t flush_bytes = 2 * (size_t)(prop.l2CacheSize > 0 ? prop.l2CacheSize : 1 << 20);
    const long long flush_n = (long long)(flush_bytes / sizeof(float4));
    void *flush = NULL;
    cudaEvent_t start = NULL, stop = NULL;
    double *ms = (double *)malloc((size_t)repeats * sizeof *ms);
    cr_status st = ms ? CR_OK : cr_fail(CR_ENOMEM, "cr_cuda_time: %d timings", repeats);
    if (st == CR_OK) st = cr_cuda_malloc(&flush, flush_bytes + sizeof(float), "L2 flush buffer");
    if (st == CR_OK)
        st = cr_cuda_check(cudaMemset(flush, 0, flush_bytes), "cudaMemset (L2 flush buffer)");
    if (st == CR_OK) st = cr_cuda_check(cudaEventCreate(&start), "cudaEventCreate");
    if (st == CR_OK) st = cr_cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
    for (int i = 0; st == CR_OK && i < warmup; i++) st = fn(arg);
    if (st == CR_OK) st = cr_cuda_sync("warm-up");
    for (int i = 0; st == CR_OK && i < repeats; i++) {
        /* the flush runs, and finishes, before the start event: not timed, L2 cold and clean */
        const unsigned flush_blocks =
            (unsigned)(prop.multiProcessorCount > 0 ? 4 * prop.multiProcessorCount : 64);
        l2_flush_kernel<<<flush_blocks, 256>>>((const float4 *)flush, flush_n,
                                               (float *)((char *)flush + flush_bytes));
        st = CR_CUDA_LAUNCHED("l2_flush_kernel");
        if (st == CR_OK) st = cr_cuda_sync("l2_flush_kernel");
        if (st == CR_OK) st = cr_cuda_check(cudaEventRecord(start, 0), "cudaEventRecord");
        if (st == CR_OK) st = fn(arg);
        if (st == CR_OK) st = cr_cuda_check(cudaEventRecord(stop, 0), "cudaEventRecord");
        if (st == CR_OK) st = cr_cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float e = 0;
        if (st == CR_OK) st = cr_cuda_check(cudaEventElapsedTime(&e, start, stop),
                                            "cudaEventElapsedTime");
        if (st == CR_OK) ms[i] = e;
    }
    if (st == CR_OK) {
        qsort(ms, (size_t)repeats, sizeof *ms, cmp_double);
        t->median_ms = repeats % 2 ? ms[repeats / 2]
                                   : 0.5 * (ms[repeats / 2 - 1] + ms[repeats / 2]);
        t->min_ms = ms[0];
        t->max_ms = ms[repeats - 1];
    }
    if (start) (void)cudaEventDestroy(start);
    if (stop) (void)cudaEventDestroy(stop);
    cr_cuda_free(flush);
    free(ms);
    return st;
}
// @end cuda_time

cr_status cr_cuda_time(cr_status (*fn)(void *arg), void *arg, int warmup, int repeats,
                       double *median_ms)
{
    if (!median_ms) return cr_fail(CR_EINVAL, "cr_cuda_time: median_ms is NULL");
    cr_cuda_timing t;
    CR_TRY(cr_cuda_time_stats(fn, arg, warmup, repeats, &t));
    *median_ms = t.median_ms;
    return CR_OK;
}

/* ---- precisions ------------------------------------------------------------------------------ */

const char *cr_cuda_precision_name(cr_cuda_precision p)
{
    switch (p) {
    case CR_CUDA_FP32: return "fp32";
    case CR_CUDA_TF32: return "tf32";
    case CR_CUDA_FP16: return "fp16";
    case CR_CUDA_BF16: return "bf16";
    }
    return "?";
}

double cr_cuda_gemm_tolerance(cr_cuda_precision p, int64_t K)
{
    switch (p) {
    case CR_CUDA_TF32: return 1e-3;
    case CR_CUDA_FP16: return 1e-3;
    case CR_CUDA_BF16: return 8e-3;
    case CR_CUDA_FP32: break;
    }
    return K <= 64 ? 1e-5 : K <= 1024 ? 3e-5 : 1e-4;
}

/* dst[i] = src[i] rounded to half (to_bf16 == 0) or bfloat16. */
__global__ void convert_kernel(const float *__restrict__ src, void *__restrict__ dst,
                               long long n, int to_bf16)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        if (to_bf16) ((__nv_bfloat16 *)dst)[i] = __float2bfloat16_rn(src[i]);
        else ((__half *)dst)[i] = __float2half_rn(src[i]);
    }
}

cr_status cr_cuda_convert(const float *src, void *dst, size_t n, cr_cuda_precision to)
{
    if (to != CR_CUDA_FP16 && to != CR_CUDA_BF16)
        return cr_fail(CR_EINVAL, "cr_cuda_convert: to = %s, expected fp16 or bf16",
                       cr_cuda_precision_name(to));
    if (n == 0) return CR_OK;
    if (!src || !dst) return cr_fail(CR_EINVAL, "cr_cuda_convert: NULL pointer");
    const long long blocks = ((long long)n + 255) / 256;
    convert_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256>>>(
        src, dst, (long long)n, to == CR_CUDA_BF16);
    return CR_CUDA_LAUNCHED("convert_kernel");
}
