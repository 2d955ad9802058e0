/* tc_tile.h — the tensor-core block tile that kernels 7-9 (gemm_kernels.cu) and the
 * tensor-core implicit GEMM (conv_kernels.cu) share: the precisions' types and rounding,
 * the tile sizes, staging a tile in shared memory rounded to the precision, one step of
 * mma_sync over the staged tiles, and the epilogue through a per-warp scratch.
 *
 * C++/CUDA only, included by .cu files (nvcc, or the emulator's C++ build: emu/include
 * supplies mma.h, cuda_fp16.h and cuda_bf16.h there). The helpers take shared memory by
 * pointer, so this header declares no __shared__ array of its own (emu/cu2cpp.py rewrites
 * those only in the .cu files). */
#ifndef CR_TC_TILE_H
#define CR_TC_TILE_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

namespace wmma = nvcuda::wmma;

// @snippet gpu_tc_types
/* What changes between the three tensor-core precisions: the element type staged in
 * shared memory, the WMMA fragment type, the fragment depth (k = 8 for TF32, 16 for the
 * 16-bit types) and the rounding of a float. */
template <typename T> struct TensorCore;
template <> struct TensorCore<float> {        /* TF32: stored as float, rounded */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800    /* no TF32 before sm_80: never run */
    typedef float frag_t;
    static const int FK = 8;
    static __device__ __forceinline__ float from(float v) { return v; }
#else
    typedef wmma::precision::tf32 frag_t;
    static const int FK = 8;
    static __device__ __forceinline__ float from(float v) { return wmma::__float_to_tf32(v); }
#endif
};
template <> struct TensorCore<__half> {
    typedef __half frag_t;
    static const int FK = 16;
    static __device__ __forceinline__ __half from(float v) { return __float2half_rn(v); }
};
template <> struct TensorCore<__nv_bfloat16> {
    typedef __nv_bfloat16 frag_t;
    static const int FK = 16;
    static __device__ __forceinline__ __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};
// @end gpu_tc_types

#define TC_BM 128
#define TC_BN 128
#define TC_BK 32
#define TC_WARPS 8                  /* 2 (rows) x 4 (columns) warps of 64 x 32 */
#define TC_THREADS (TC_WARPS * 32)  /* 256 */
#define TC_WM 64
#define TC_WN 32
#define TC_FM (TC_WM / 16)          /* 4 fragments down */
#define TC_FN (TC_WN / 16)          /* 2 fragments across */
/* Row padding of the shared tiles, in elements of T: 32 bytes, so that every fragment
 * pointer stays 32-byte aligned (WMMA requires it) and consecutive rows start in
 * different banks. A tile is declared T As[TC_BM][TC_BK + TC_PAD(T)]. */
#define TC_PAD(T) (32 / (int)sizeof(T))

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800   /* the kernels trap before sm_80 */

// @snippet gpu_tc_tile
/* One warp's 64 x 32 part of the block tile: 4 x 2 accumulator fragments of 16 x 16 floats. */
template <typename T> struct TcAcc {
    wmma::fragment<wmma::accumulator, 16, 16, TensorCore<T>::FK, float> f[TC_FM][TC_FN];
};

template <typename T> __device__ __forceinline__ void tc_zero(TcAcc<T> &acc)
{
    #pragma unroll
    for (int fm = 0; fm < TC_FM; fm++)
        #pragma unroll
        for (int fn = 0; fn < TC_FN; fn++) wmma::fill_fragment(acc.f[fm][fn], 0.0f);
}

/* Stages a ROWS x COLS tile in shared memory (tile, row stride ld elements): element
 * (r, c) is at(r, c) rounded to T. Thread t writes the elements t, t + 256, ... in
 * row-major order: consecutive threads along a row, and, when COLS divides 256, every
 * element a thread writes lies in its column t % COLS (the implicit GEMM relies on it). */
template <int ROWS, int COLS, typename T, typename F>
__device__ __forceinline__ void tc_stage(T *tile, int ld, F at)
{
    for (int e = threadIdx.x; e < ROWS * COLS; e += TC_THREADS)
        tile[e / COLS * ld + e % COLS] = TensorCore<T>::from(at(e / COLS, e % COLS));
}

/* One step of TC_BK along K over the staged tiles As (TC_BM x TC_BK) and Bs (TC_BK x
 * TC_BN), row-major with the padded strides: warp `warp` loads 16 x FK fragments of its
 * rows of As and columns of Bs and issues one mma_sync per pair into acc. */
template <typename T>
__device__ __forceinline__ void tc_mma(TcAcc<T> &acc, const T *As, const T *Bs, int warp)
{
    typedef TensorCore<T> TC;
    typedef typename TC::frag_t frag_t;
    const int lda = TC_BK + TC_PAD(T), ldb = TC_BN + TC_PAD(T);
    const int wm = warp / (TC_BN / TC_WN), wn = warp % (TC_BN / TC_WN);
    #pragma unroll
    for (int kk = 0; kk < TC_BK; kk += TC::FK) {
        wmma::fragment<wmma::matrix_a, 16, 16, TC::FK, frag_t, wmma::row_major> fa[TC_FM];
        wmma::fragment<wmma::matrix_b, 16, 16, TC::FK, frag_t, wmma::row_major> fb[TC_FN];
        #pragma unroll
        for (int fm = 0; fm < TC_FM; fm++)
            wmma::load_matrix_sync(fa[fm], As + (wm * TC_WM + fm * 16) * lda + kk, lda);
        #pragma unroll
        for (int fn = 0; fn < TC_FN; fn++)
            wmma::load_matrix_sync(fb[fn], Bs + kk * ldb + wn * TC_WN + fn * 16, ldb);
        #pragma unroll
        for (int fm = 0; fm < TC_FM; fm++)
            #pragma unroll
            for (int fn = 0; fn < TC_FN; fn++)
                wmma::mma_sync(acc.f[fm][fn], fa[fm], fb[fn], acc.f[fm][fn]);
    }
}

/* The epilogue: each accumulator fragment of warp `warp` goes through its 16 x 16 float
 * scratch in shared memory (a fragment's register layout is unspecified), and the
 * warp's lanes hand every element to store(i, j, v), (i, j) its row and column in the
 * block tile: 16 consecutive lanes on 16 consecutive columns of a row. */
template <typename T, typename F>
__device__ __forceinline__ void tc_store(TcAcc<T> &acc, float *scratch, int warp, F store)
{
    const int lane = threadIdx.x % 32;
    const int wm = warp / (TC_BN / TC_WN), wn = warp % (TC_BN / TC_WN);
    #pragma unroll
    for (int fm = 0; fm < TC_FM; fm++)
        #pragma unroll
        for (int fn = 0; fn < TC_FN; fn++) {
            wmma::store_matrix_sync(scratch, acc.f[fm][fn], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32)
                store(wm * TC_WM + fm * 16 + e / 16, wn * TC_WN + fn * 16 + e % 16, scratch[e]);
            __syncwarp();
        }
}
// @end gpu_tc_tile

#endif

#endif
