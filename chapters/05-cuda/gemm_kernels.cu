/* gemm_kernels.cu — chapter 5: GEMM on the GPU, from one thread per element to tensor
 * cores, each kernel kept and named in reading order (the chapter 3 road, on a GPU).
 *
 * Every kernel computes C = alpha * op(A) op(B) + beta * C (row-major, gemm.h's BLAS
 * semantics) for any M, N, K: tiles that hang over an edge load zeros and store nothing
 * outside C. An operand is read through a pair of strides, so a transpose costs nothing
 * but coalescing: element (r, c) of op(A) is A[r*rs + c*cs]. */
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cuda_util.h"
#include "tc_tile.h"   /* kernels 7-9's tile, shared with the tensor-core implicit GEMM */

// @snippet gpu_operand
/* A read-only matrix seen through strides: element (r, c) is p[r*rs + c*cs]. */
struct Operand {
    const float *p;
    long long rs, cs;
    int rows, cols;
    /* Element (r, c), or 0 outside the matrix (edge tiles are zero-padded). */
    __device__ __forceinline__ float at(int r, int c) const
    {
        return (r < rows && c < cols) ? p[r * rs + c * cs] : 0.0f;
    }
};

/* The output: C (M x N, ldc) with the BLAS update. */
struct Output {
    float *p;
    long long ldc;
    int rows, cols;
    float alpha, beta;
    /* C[i][j] = alpha * acc + beta * C[i][j] (C not read when beta == 0), inside C only. */
    __device__ __forceinline__ void store(int i, int j, float acc) const
    {
        if (i >= rows || j >= cols) return;
        float *c = p + i * ldc + j;
        *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
    }
};
// @end gpu_operand

/* ---- kernel 1: naive ------------------------------------------------------------------------ */

// @snippet gpu_naive
/* One thread per element of C. threadIdx.x walks down a column of C: the 32 threads of a
 * warp read 32 different rows of A and write 32 different rows of C (32 transactions). */
__global__ void gemm_naive_kernel(Operand A, Operand B, Output C, int K)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;   /* row of C */
    const int j = blockIdx.y * blockDim.y + threadIdx.y;   /* column of C */
    if (i >= C.rows || j >= C.cols) return;
    float acc = 0.0f;
    for (int k = 0; k < K; k++) acc += A.at(i, k) * B.at(k, j);
    C.store(i, j, acc);
}
// @end gpu_naive

/* ---- kernel 2: coalesced -------------------------------------------------------------------- */

// @snippet gpu_coalesced
/* The same work with the thread mapping swapped: threadIdx.x walks along a row of C, so a
 * warp reads 32 consecutive floats of a row of B (one 128-byte transaction), broadcasts one
 * element of A, and writes 32 consecutive floats of C. */
__global__ void gemm_coalesced_kernel(Operand A, Operand B, Output C, int K)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;   /* column of C: fastest */
    const int i = blockIdx.y * blockDim.y + threadIdx.y;   /* row of C */
    if (i >= C.rows || j >= C.cols) return;
    float acc = 0.0f;
    for (int k = 0; k < K; k++) acc += A.at(i, k) * B.at(k, j);
    C.store(i, j, acc);
}
// @end gpu_coalesced

/* ---- kernel 3: shared-memory tiles ------------------------------------------------------------- */

// @snippet gpu_smem
#define SM_TILE 32
/* A 32 x 32 block of threads owns a 32 x 32 tile of C. Per step of 32 along K, the block
 * copies a 32 x 32 tile of A and of B into shared memory (each thread one element of
 * each), waits, and every thread reads its row of the A tile and column of the B tile
 * from there: each global element is loaded once per block instead of 32 times. */
__global__ void __launch_bounds__(SM_TILE * SM_TILE)   /* 1,024 threads: at most 64 registers */
gemm_smem_kernel(Operand A, Operand B, Output C, int K)
{
    // @solution gpu_smem: stage 32 x 32 tiles of A and B in shared memory, one step of K at a time
    __shared__ float As[SM_TILE][SM_TILE];
    __shared__ float Bs[SM_TILE][SM_TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.y * SM_TILE + ty, j = blockIdx.x * SM_TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += SM_TILE) {
        As[ty][tx] = A.at(i, k0 + tx);   /* zeros past the edges: the sum is unchanged */
        Bs[ty][tx] = B.at(k0 + ty, j);
        __syncthreads();                 /* the tiles are complete */
        for (int kk = 0; kk < SM_TILE; kk++)
            acc += As[ty][kk] * Bs[kk][tx];   /* As: broadcast in a warp; Bs: a row */
        __syncthreads();                 /* everyone is done before the next copy */
    }
    C.store(i, j, acc);
    // @stub
    // (void)A; (void)B; (void)C; (void)K;
    // __trap();   /* task 'gpu_smem' is not written yet (coursework stub): C is not computed */
    // @end-solution
}
// @end gpu_smem

/* ---- kernel 4: 1-D register tiles -------------------------------------------------------------- */

// @snippet gpu_reg1d
#define R1_BM 64
#define R1_BN 64
#define R1_BK 8
#define R1_TM 8
/* 512 threads own a 64 x 64 tile of C; each thread 8 consecutive rows of one column. Per
 * k, a thread loads one element of the B tile and reuses it for 8 multiply-adds with a
 * column of the A tile (a broadcast: the whole warp reads the same rows). */
__global__ void __launch_bounds__(R1_BM * R1_BN / R1_TM)
gemm_reg1d_kernel(Operand A, Operand B, Output C, int K)
{
    __shared__ float As[R1_BM][R1_BK];
    __shared__ float Bs[R1_BK][R1_BN];
    const int t = threadIdx.x;
    const int row0 = blockIdx.y * R1_BM, col0 = blockIdx.x * R1_BN;
    const int tcol = t % R1_BN, trow = t / R1_BN;   /* rows trow*8 .. trow*8+7 */
    float acc[R1_TM] = {0.0f};
    for (int k0 = 0; k0 < K; k0 += R1_BK) {
        As[t / R1_BK][t % R1_BK] = A.at(row0 + t / R1_BK, k0 + t % R1_BK);
        Bs[t / R1_BN][t % R1_BN] = B.at(k0 + t / R1_BN, col0 + t % R1_BN);
        __syncthreads();
        for (int kk = 0; kk < R1_BK; kk++) {
            const float b = Bs[kk][tcol];
            for (int m = 0; m < R1_TM; m++) acc[m] += As[trow * R1_TM + m][kk] * b;
        }
        __syncthreads();
    }
    for (int m = 0; m < R1_TM; m++) C.store(row0 + trow * R1_TM + m, col0 + tcol, acc[m]);
}
// @end gpu_reg1d

/* ---- kernels 5 and 6: 2-D register tiles, then 16-byte loads ----------------------------------- */

#define R2_BM 128
#define R2_BN 128
#define R2_BK 8
#define R2_TM 8
#define R2_TN 8
#define R2_THREADS (R2_BM * R2_BN / (R2_TM * R2_TN))   /* 256 */

// @snippet gpu_reg2d
/* 256 threads own a 128 x 128 tile of C; each thread an 8 x 8 tile of it. Per k, a thread
 * reads 8 values of A and 8 of B from shared memory into registers and does 64 multiply-
 * adds: 16 shared loads per 64 FMAs, where kernel 4 needed 9 per 8. The A tile is stored
 * transposed (As[k][m]) so that a thread's 8 values of A are consecutive. */
__global__ void __launch_bounds__(R2_THREADS)
gemm_reg2d_kernel(Operand A, Operand B, Output C, int K)
{
    __shared__ float As[R2_BK][R2_BM];
    __shared__ float Bs[R2_BK][R2_BN];
    const int t = threadIdx.x;
    const int row0 = blockIdx.y * R2_BM, col0 = blockIdx.x * R2_BN;
    const int trow = t / (R2_BN / R2_TN), tcol = t % (R2_BN / R2_TN);
    float acc[R2_TM][R2_TN] = {{0.0f}};
    float a[R2_TM], b[R2_TN];
    for (int k0 = 0; k0 < K; k0 += R2_BK) {
        for (int e = t; e < R2_BM * R2_BK; e += R2_THREADS)     /* 4 elements each */
            As[e % R2_BK][e / R2_BK] = A.at(row0 + e / R2_BK, k0 + e % R2_BK);
        for (int e = t; e < R2_BK * R2_BN; e += R2_THREADS)
            Bs[e / R2_BN][e % R2_BN] = B.at(k0 + e / R2_BN, col0 + e % R2_BN);
        __syncthreads();
        for (int kk = 0; kk < R2_BK; kk++) {
            for (int m = 0; m < R2_TM; m++) a[m] = As[kk][trow * R2_TM + m];
            for (int n = 0; n < R2_TN; n++) b[n] = Bs[kk][tcol * R2_TN + n];
            for (int m = 0; m < R2_TM; m++)
                for (int n = 0; n < R2_TN; n++) acc[m][n] += a[m] * b[n];
        }
        __syncthreads();
    }
    for (int m = 0; m < R2_TM; m++)
        for (int n = 0; n < R2_TN; n++)
            C.store(row0 + trow * R2_TM + m, col0 + tcol * R2_TN + n, acc[m][n]);
}
// @end gpu_reg2d

// @snippet gpu_vec4
/* Kernel 5 with 16-byte memory operations. Global loads: one float4 of a row of A (4
 * consecutive k) and one float4 of a row of B (4 consecutive columns) per thread and
 * step, where the layout allows (vec_a, vec_b: not transposed, leading dimension a
 * multiple of 4, 16-byte aligned); a float4 that crosses an edge is loaded as scalars.
 * Shared loads: the 8 values of A and of B as two float4 each. Stores: float4 where C
 * allows. Fewer, wider instructions for the same bytes. */
__device__ __forceinline__ float4 load4(const Operand &o, int r, int c, bool vec)
{
    if (vec && r < o.rows && c + 3 < o.cols)
        return *reinterpret_cast<const float4 *>(o.p + r * o.rs + c);
    return make_float4(o.at(r, c), o.at(r, c + 1), o.at(r, c + 2), o.at(r, c + 3));
}

__global__ void __launch_bounds__(R2_THREADS)
gemm_vec4_kernel(Operand A, Operand B, Output C, int K, bool vec_a, bool vec_b, bool vec_c)
{
    __shared__ __align__(16) float As[R2_BK][R2_BM];
    __shared__ __align__(16) float Bs[R2_BK][R2_BN];
    const int t = threadIdx.x;
    const int row0 = blockIdx.y * R2_BM, col0 = blockIdx.x * R2_BN;
    const int trow = t / (R2_BN / R2_TN), tcol = t % (R2_BN / R2_TN);
    /* the A tile is 128 rows x 2 float4; the B tile 8 rows x 32 float4: one of each */
    const int ar = t / (R2_BK / 4), ac = (t % (R2_BK / 4)) * 4;
    const int br = t / (R2_BN / 4), bc = (t % (R2_BN / 4)) * 4;
    float acc[R2_TM][R2_TN] = {{0.0f}};
    for (int k0 = 0; k0 < K; k0 += R2_BK) {
        const float4 va = load4(A, row0 + ar, k0 + ac, vec_a);
        As[ac + 0][ar] = va.x;   /* transposed into As[k][m] */
        As[ac + 1][ar] = va.y;
        As[ac + 2][ar] = va.z;
        As[ac + 3][ar] = va.w;
        *reinterpret_cast<float4 *>(&Bs[br][bc]) = load4(B, k0 + br, col0 + bc, vec_b);
        __syncthreads();
        for (int kk = 0; kk < R2_BK; kk++) {
            const float4 a0 = *reinterpret_cast<const float4 *>(&As[kk][trow * R2_TM]);
            const float4 a1 = *reinterpret_cast<const float4 *>(&As[kk][trow * R2_TM + 4]);
            const float4 b0 = *reinterpret_cast<const float4 *>(&Bs[kk][tcol * R2_TN]);
            const float4 b1 = *reinterpret_cast<const float4 *>(&Bs[kk][tcol * R2_TN + 4]);
            const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
            for (int m = 0; m < R2_TM; m++)
                for (int n = 0; n < R2_TN; n++) acc[m][n] += a[m] * b[n];
        }
        __syncthreads();
    }
    for (int m = 0; m < R2_TM; m++) {
        const int i = row0 + trow * R2_TM + m;
        for (int n = 0; n < R2_TN; n += 4) {
            const int j = col0 + tcol * R2_TN + n;
            if (vec_c && i < C.rows && j + 3 < C.cols) {
                float4 *c = reinterpret_cast<float4 *>(C.p + i * C.ldc + j);
                float4 v = make_float4(C.alpha * acc[m][n], C.alpha * acc[m][n + 1],
                                       C.alpha * acc[m][n + 2], C.alpha * acc[m][n + 3]);
                if (C.beta != 0.0f) {
                    const float4 old = *c;
                    v.x += C.beta * old.x; v.y += C.beta * old.y;
                    v.z += C.beta * old.z; v.w += C.beta * old.w;
                }
                *c = v;
            } else {
                for (int q = 0; q < 4; q++) C.store(i, j + q, acc[m][n + q]);
            }
        }
    }
}
// @end gpu_vec4

/* ---- kernels 7-9: tensor cores (WMMA) ------------------------------------------------------------ */

// @snippet gpu_tc
/* 8 warps own a 128 x 128 tile of C; each warp a 64 x 32 part of it, held in 4 x 2
 * accumulator fragments of 16 x 16 floats (tc_tile.h). Per step of 32 along K, the block
 * stages the A and B tiles in shared memory, rounded to T; each warp then loads 16 x FK
 * fragments of A and B from there and issues one mma_sync per pair: a warp-wide
 * 16 x 16 x FK product on the tensor cores. Rows are padded (TC_PAD: 32 bytes) so that
 * consecutive rows start in different banks. The epilogue goes through a per-warp 16 x 16
 * scratch in shared memory, because a fragment's layout in registers is unspecified and
 * the edge tiles need a bounds check per element. */
template <typename T>
__global__ void __launch_bounds__(TC_THREADS)
gemm_wmma_kernel(Operand A, Operand B, Output C, int K)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();   /* TF32 and BF16 fragments need sm_80; the host refuses older devices */
#else
    __shared__ __align__(128) T As[TC_BM][TC_BK + 32 / sizeof(T)];
    __shared__ __align__(128) T Bs[TC_BK][TC_BN + 32 / sizeof(T)];
    __shared__ __align__(128) float scratch[TC_WARPS][16 * 16];
    const int warp = threadIdx.x / 32;
    const int row0 = blockIdx.y * TC_BM, col0 = blockIdx.x * TC_BN;
    TcAcc<T> acc;
    tc_zero(acc);
    for (int k0 = 0; k0 < K; k0 += TC_BK) {   /* consecutive threads along k, then along j */
        tc_stage<TC_BM, TC_BK>(&As[0][0], TC_BK + TC_PAD(T),
                               [&](int r, int c) { return A.at(row0 + r, k0 + c); });
        tc_stage<TC_BK, TC_BN>(&Bs[0][0], TC_BN + TC_PAD(T),
                               [&](int r, int c) { return B.at(k0 + r, col0 + c); });
        __syncthreads();
        tc_mma(acc, &As[0][0], &Bs[0][0], warp);
        __syncthreads();
    }
    tc_store(acc, scratch[warp], warp,
             [&](int i, int j, float v) { C.store(row0 + i, col0 + j, v); });
#endif
}
// @end gpu_tc

/* ---- the host side --------------------------------------------------------------------------------- */

/* Chapter 3's argument checks, plus the GPU's limit; CR_EINVAL names the bad one. */
static cr_status check_args(const char *fn, cr_trans ta, cr_trans tb, int64_t M, int64_t N,
                            int64_t K, const float *A, int64_t lda, const float *B,
                            int64_t ldb, const float *C, int64_t ldc)
{
    cr_status st = cr_gemm_check_args(fn, ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
    if (st != CR_OK) return st;
    const int64_t lim = INT32_MAX;   /* the kernels index rows and columns with int */
    if (M > lim || N > lim || K > lim)
        return cr_fail(CR_EINVAL, "%s: M, N, K must be at most %lld on the GPU", fn,
                       (long long)lim);
    return CR_OK;
}

/* C = beta * C (zeros when beta == 0, C not read): what remains when K == 0 or alpha == 0. */
__global__ void scale_c_kernel(float *C, long long ldc, int M, int N, float beta)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e >= (long long)M * N) return;
    float *c = C + (e / N) * ldc + e % N;
    *c = beta == 0.0f ? 0.0f : beta * *c;
}

enum gemm_kind { K_NAIVE, K_COALESCED, K_SMEM, K_REG1D, K_REG2D, K_VEC4, K_TF32, K_FP16, K_BF16 };
static const char *const kind_names[] = {"gemm_naive", "gemm_coalesced", "gemm_smem",
                                         "gemm_reg1d", "gemm_reg2d", "gemm_vec4",
                                         "gemm_tf32", "gemm_fp16", "gemm_bf16"};

/* Blocks needed to cover n with tiles of `tile` (checked against the grid by grid_of). */
static int64_t tiles(int64_t n, int tile) { return (n + tile - 1) / tile; }

/* The grid of x by y blocks, or CR_EINVAL naming the kernel when it exceeds CUDA's limits
 * (x < 2^31, y <= 65535): no silent narrowing to unsigned. */
static cr_status grid_of(const char *name, int64_t M, int64_t N, int64_t x, int64_t y, dim3 *g)
{
    if (x > INT32_MAX || y > 65535)
        return cr_fail(CR_EINVAL, "%s: %lld x %lld needs a grid of %lld x %lld blocks, more than "
                       "CUDA allows (%d x 65535)", name, (long long)M, (long long)N, (long long)x,
                       (long long)y, INT32_MAX);
    *g = dim3((unsigned)x, (unsigned)y);
    return CR_OK;
}

// @snippet gpu_launch
/* Checks the arguments, handles the BLAS corner cases, and launches one kernel with the
 * grid that covers C: gridDim.x over columns (or rows for the naive kernel), y over rows. */
static cr_status gemm_launch(enum gemm_kind kind, cr_trans ta, cr_trans tb, int64_t M,
                             int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                             const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    const char *name = kind_names[kind];
    CR_TRY(check_args(name, ta, tb, M, N, K, A, lda, B, ldb, C, ldc));
    if (M == 0 || N == 0) return CR_OK;
    if (K == 0 || alpha == 0.0f) {                  /* no product term: C = beta * C */
        unsigned blocks = 0;
        CR_TRY(cr_cuda_grid_1d(M * N, 256, "scale_c_kernel", &blocks));
        scale_c_kernel<<<blocks, 256>>>(C, ldc, (int)M, (int)N, beta);
        return CR_CUDA_LAUNCHED("scale_c_kernel");
    }
    const Operand a = {A, ta == CR_NO_TRANS ? lda : 1, ta == CR_NO_TRANS ? 1 : lda, (int)M, (int)K};
    const Operand b = {B, tb == CR_NO_TRANS ? ldb : 1, tb == CR_NO_TRANS ? 1 : ldb, (int)K, (int)N};
    const Output c = {C, ldc, (int)M, (int)N, alpha, beta};
    const int k = (int)K;
    /* each kernel's tile (rows x columns of C per block; the naive kernel's x runs over rows) */
    static const int tile_rows[] = {32, 8, SM_TILE, R1_BM, R2_BM, R2_BM, TC_BM, TC_BM, TC_BM};
    static const int tile_cols[] = {8, 32, SM_TILE, R1_BN, R2_BN, R2_BN, TC_BN, TC_BN, TC_BN};
    dim3 grid;
    if (kind == K_NAIVE)
        CR_TRY(grid_of(name, M, N, tiles(M, tile_rows[kind]), tiles(N, tile_cols[kind]), &grid));
    else
        CR_TRY(grid_of(name, M, N, tiles(N, tile_cols[kind]), tiles(M, tile_rows[kind]), &grid));
    switch (kind) {
    case K_NAIVE:        /* x over rows of C (uncoalesced) */
        gemm_naive_kernel<<<grid, dim3(32, 8)>>>(a, b, c, k);
        break;
    case K_COALESCED:    /* x over columns of C */
        gemm_coalesced_kernel<<<grid, dim3(32, 8)>>>(a, b, c, k);
        break;
    case K_SMEM:
        gemm_smem_kernel<<<grid, dim3(SM_TILE, SM_TILE)>>>(a, b, c, k);
        break;
    case K_REG1D:
        gemm_reg1d_kernel<<<grid, R1_BM * R1_BN / R1_TM>>>(a, b, c, k);
        break;
    case K_REG2D:
        gemm_reg2d_kernel<<<grid, R2_THREADS>>>(a, b, c, k);
        break;
    case K_VEC4: {
        const bool va = ta == CR_NO_TRANS && lda % 4 == 0 && (uintptr_t)A % 16 == 0;
        const bool vb = tb == CR_NO_TRANS && ldb % 4 == 0 && (uintptr_t)B % 16 == 0;
        const bool vc = ldc % 4 == 0 && (uintptr_t)C % 16 == 0;
        gemm_vec4_kernel<<<grid, R2_THREADS>>>(a, b, c, k, va, vb, vc);
        break;
    }
    case K_TF32:
    case K_FP16:
    case K_BF16:
        CR_TRY(cr_cuda_need_sm80(name));
        if (kind == K_TF32) gemm_wmma_kernel<float><<<grid, TC_THREADS>>>(a, b, c, k);
        else if (kind == K_FP16) gemm_wmma_kernel<__half><<<grid, TC_THREADS>>>(a, b, c, k);
        else gemm_wmma_kernel<__nv_bfloat16><<<grid, TC_THREADS>>>(a, b, c, k);
        break;
    }
    return CR_CUDA_LAUNCHED(name);
}
// @end gpu_launch

#define GEMM_ENTRY(fname, kind)                                                                  \
    cr_status fname(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,      \
                    const float *A, int64_t lda, const float *B, int64_t ldb, float beta,        \
                    float *C, int64_t ldc)                                                       \
    {                                                                                            \
        return gemm_launch(kind, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);          \
    }

GEMM_ENTRY(cr_cuda_gemm_naive, K_NAIVE)
GEMM_ENTRY(cr_cuda_gemm_coalesced, K_COALESCED)
GEMM_ENTRY(cr_cuda_gemm_smem, K_SMEM)
GEMM_ENTRY(cr_cuda_gemm_reg1d, K_REG1D)
GEMM_ENTRY(cr_cuda_gemm_reg2d, K_REG2D)
GEMM_ENTRY(cr_cuda_gemm_vec4, K_VEC4)
GEMM_ENTRY(cr_cuda_gemm_tf32, K_TF32)
GEMM_ENTRY(cr_cuda_gemm_fp16, K_FP16)
GEMM_ENTRY(cr_cuda_gemm_bf16, K_BF16)
GEMM_ENTRY(cr_cuda_sgemm, K_VEC4)

static const cr_cuda_gemm_step gemm_steps[] = {
    {"naive", cr_cuda_gemm_naive, CR_CUDA_FP32, "one thread per element, warps down a column"},
    {"coalesced", cr_cuda_gemm_coalesced, CR_CUDA_FP32, "one thread per element, warps along a row"},
    {"smem", cr_cuda_gemm_smem, CR_CUDA_FP32, "32 x 32 tiles of A and B in shared memory"},
    {"reg1d", cr_cuda_gemm_reg1d, CR_CUDA_FP32, "64 x 64 block tile, 8 x 1 per thread"},
    {"reg2d", cr_cuda_gemm_reg2d, CR_CUDA_FP32, "128 x 128 block tile, 8 x 8 per thread"},
    {"vec4", cr_cuda_gemm_vec4, CR_CUDA_FP32, "reg2d with 16-byte loads and stores"},
    {"tf32", cr_cuda_gemm_tf32, CR_CUDA_TF32, "tensor cores (WMMA), TF32 inputs, FP32 sums"},
    {"fp16", cr_cuda_gemm_fp16, CR_CUDA_FP16, "tensor cores (WMMA), FP16 inputs, FP32 sums"},
    {"bf16", cr_cuda_gemm_bf16, CR_CUDA_BF16, "tensor cores (WMMA), BF16 inputs, FP32 sums"},
};

const cr_cuda_gemm_step *cr_cuda_gemm_steps(int *count)
{
    if (count) *count = (int)(sizeof gemm_steps / sizeof *gemm_steps);
    return gemm_steps;
}
