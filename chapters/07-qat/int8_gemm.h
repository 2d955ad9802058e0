/* int8_gemm.h — chapter 7: integer GEMM on the CPU's int8 instructions, and the
 * bf16 GEMM beside it.
 *
 * The product every int8 convolution reduces to:
 *
 *     C (M x N, int32) = A (M x K, int8) * B (K x N, uint8)      (row-major)
 *
 * A holds the weights (signed, per-channel symmetric: no zero point), B the
 * activations (unsigned, their zero point is handled by the caller through the
 * bias, see int8_conv.h). Every sum is exact: |C| <= K * 128 * 255 must stay below
 * 2^31, so K is limited to CR_I8_MAX_K.
 *
 * The kernels, chosen at run time as chapter 3 chooses its fp32 kernel:
 *   "portable"     plain C, 4 x 8 tile;
 *   "avx2_7bit"    vpmaddubsw + vpmaddwd: exact only while every u8 of B is <= 127
 *                  (vpmaddubsw saturates its int16 pair sums; 7-bit activations are
 *                  PyTorch's reduce_range);
 *   "avx2_split"   the same instructions on B's low 7 bits and its top bit apart:
 *                  exact for every u8, twice the work;
 *   "avx2"         not a kernel but a rule: avx2_7bit when B's largest byte is <= 127
 *                  (scanned once per call), else avx2_split: always exact;
 *   "avx_vnni"     vpdpbusd on ymm (AVX-VNNI): exact, no saturation;
 *   "avx512_vnni"  vpdpbusd on zmm (AVX512-VNNI): exact, no saturation.
 * CR_INT8_GEMM_KERNEL in the environment sets the initial choice. */
#ifndef CR_INT8_GEMM_H
#define CR_INT8_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest K for which every int32 sum (and a bias of the same size) is exact:
 * 2 * K * 128 * 255 < 2^31. */
#define CR_I8_MAX_K 32767

/* C (M x N, ldc) = A (M x K, s8, lda) * B (K x N, u8, ldb) [+ C if accumulate], the
 * triple loop in int32: the reference every kernel must equal bit for bit. */
cr_status cr_gemm_s8u8s32_ref(int64_t M, int64_t N, int64_t K, const int8_t *A, int64_t lda,
                              const uint8_t *B, int64_t ldb, int32_t *C, int64_t ldc,
                              int accumulate);
/* The same product, packed, blocked and threaded (OpenMP) with the kernel in use. */
cr_status cr_gemm_s8u8s32(int64_t M, int64_t N, int64_t K, const int8_t *A, int64_t lda,
                          const uint8_t *B, int64_t ldb, int32_t *C, int64_t ldc,
                          int accumulate);

/* Name of the kernel (or rule) cr_gemm_s8u8s32 uses now. */
const char *cr_int8_gemm_kernel_name(void);
/* Sets it: "auto" (the best this CPU runs), or a name above; CR_EINVAL for an unknown
 * name or one this CPU cannot run. */
cr_status cr_int8_gemm_set_kernel(const char *name);
/* True if this CPU runs the named kernel ("portable" always). */
int cr_int8_gemm_kernel_supported(const char *name);
/* True if the named kernel is exact for every u8 of B (0 for "avx2_7bit" only). */
int cr_int8_gemm_kernel_full_range(const char *name);

/* ---- the bf16 GEMM ------------------------------------------------------------- */

/* C (M x N, f32, ldc) = A (M x K, bf16 bits, lda) * B (K x N, bf16 bits, ldb)
 * [+ C if accumulate], each k pair (2p, 2p+1) added as vdpbf16ps adds it:
 * c += a[2p+1]*b[2p+1], then c += a[2p]*b[2p], each product exact in f32, each sum
 * rounded to nearest even; an odd K ends with one product against a zero. The
 * reference the AVX512-BF16 kernel is compared with. */
cr_status cr_gemm_bf16_ref(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                           const uint16_t *B, int64_t ldb, float *C, int64_t ldc,
                           int accumulate);
/* The same product with vdpbf16ps (AVX512-BF16) where the CPU has it, else the
 * reference's loop; packed, blocked over N and threaded. */
cr_status cr_gemm_bf16(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                       const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int accumulate);
/* True if cr_gemm_bf16 runs vdpbf16ps on this CPU. */
int cr_gemm_bf16_native(void);

/* The bf16 GEMM's packed B, for a caller that writes it directly (the bf16 convolution's
 * gather, bf16_conv.c): one panel of CR_BF16_NR columns holds, for each k pair p, the
 * 32 columns x (b[2p][j], b[2p+1][j]) (64 uint16 per pair), zeros past K and past the
 * panel's w columns. */
#define CR_BF16_NR 32
/* C (M x w, ldc) = [C +] A (M x K bf16, lda) * Bp, one packed panel of w <= 32 columns,
 * with vdpbf16ps in cr_gemm_bf16's order (the same bits). Call only where
 * cr_gemm_bf16_native() is true (elsewhere it does nothing). */
void cr_bf16_gemm_panel_avx512(int64_t M, int64_t K, const uint16_t *A, int64_t lda,
                               const uint16_t *Bp, float *C, int64_t ldc, int64_t w,
                               int accumulate);

/* ---- what the kernels share (for the convolution, the tests and the lab) ------- */

/* The micro-kernel contract: C (mr x nr int32, row stride ldc) = [C +] Ap * Bp, with
 * Ap a packed panel of A (for each group of 4 k, mr rows x 4 bytes: row i's k..k+3)
 * and Bp a packed panel of B (for each group of 4 k, nr columns x 4 bytes), kc4
 * groups of 4 (k past K is zero in both). */
typedef void (*cr_i8_ukernel_fn)(int64_t kc4, const int8_t *Ap, const uint8_t *Bp,
                                 int32_t *C, int64_t ldc, int accumulate);

/* The direct form (no packed B): C (mr x 16 nv, ldc) = Ap * B where the 16 nv columns x
 * 4 bytes of B's group g lie contiguous at B + goff[g] (an image already interleaved by
 * 4 channels: the convolution's taps are offsets, see int8_conv.c); nv in [1, nr / 16]
 * (a last panel only as wide as it needs). */
typedef void (*cr_i8_ukernel_off_fn)(int64_t kc4, const int8_t *Ap, const uint8_t *B,
                                     const int64_t *goff, int32_t *C, int64_t ldc, int nv);

/* A micro-kernel and its blocks. */
typedef struct {
    const char *name;
    int mr, nr;            /* register tile */
    int64_t mc, kc, nc;    /* cache blocks; kc a multiple of 4 */
    int full_range;        /* exact for every u8 of B (0: only for B <= 127) */
    cr_i8_ukernel_fn kernel;
    cr_i8_ukernel_off_fn kernel_off;  /* NULL: this kernel has no direct form */
} cr_i8_kernel;

#define CR_I8_MAX_MR 16
#define CR_I8_MAX_NR 64

extern const cr_i8_kernel cr_i8_kernel_portable;  /* int8_gemm.c */
extern const cr_i8_kernel cr_i8_kernel_avx2_7bit; /* int8_gemm_avx2.c */
extern const cr_i8_kernel cr_i8_kernel_avx2_split;
extern const cr_i8_kernel cr_i8_kernel_avx_vnni;
extern const cr_i8_kernel cr_i8_kernel_avx512_vnni; /* int8_gemm_avx512.c */
extern const cr_i8_kernel cr_i8_kernel_avx512_vnni_4x64;

/* The kernel the convolution's direct path runs for groups of `rows` filters where the
 * GEMM runs kd: kd itself, or for avx512_vnni and rows <= 4 its 4 x 64 form (an 8-row
 * tile would compute 4 rows that do not exist). */
const cr_i8_kernel *cr_i8_direct_kernel(const cr_i8_kernel *kd, int64_t rows);

/* CPU features (and OS state saving) the kernels need. */
int cr_cpu_has_avx_vnni(void);
int cr_cpu_has_avx512_vnni(void);
int cr_cpu_has_avx512_bf16(void);

/* The kernel cr_gemm_s8u8s32 would run for a B whose largest byte is b_max. */
const cr_i8_kernel *cr_int8_gemm_kernel_for(int b_max);

/* Packs rows [r0, r0+rows) x depth [k0, k0+kc) of an operand into panels of `panel`
 * rows, 4 k per row per group (k4-interleaved), zero-padded past the rows and past K
 * (kc rounded up to 4). The engine calls this for A (s8, rows = M) and B (u8, rows =
 * N: B is packed as its transpose); bytes are bytes to the packer. */
typedef void (*cr_i8_pack_fn)(const void *ctx, int64_t r0, int64_t rows, int64_t k0,
                              int64_t kc, int panel, uint8_t *dst);

/* A byte matrix read through strides: element (row r, depth k) is p[r * rs + k * cs]. */
typedef struct {
    const uint8_t *p;
    int64_t rs, cs;
} cr_i8_strided;

/* cr_i8_pack_fn for a cr_i8_strided context. */
void cr_i8_pack_strided(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                        int panel, uint8_t *dst);

/* What to do with a finished tile: T (mr x nr int32, row stride ldt) holds the full
 * sums of rows [i0, i0+mr) and columns [j0, j0+nr) of C. */
typedef void (*cr_i8_epilogue_fn)(const void *ctx, int64_t i0, int64_t j0, int64_t mr,
                                  int64_t nr, const int32_t *T, int64_t ldt);

/* The five loops around kernel kd: C (M x N) = A * B where A and B are given by their
 * packers. With epi == NULL the sums go to C (ldc; accumulate adds to it). With epi,
 * each finished tile goes to epi instead and C is scratch for K > kd->kc (M x N,
 * ldc; may be NULL when K <= kd->kc). pack_a NULL: ctx_a is A packed by
 * cr_i8_prepack_a for kd. threads: 1, or 0 for what OpenMP offers. */
cr_status cr_i8_engine(const cr_i8_kernel *kd, int64_t M, int64_t N, int64_t K,
                       cr_i8_pack_fn pack_a, const void *ctx_a, cr_i8_pack_fn pack_b,
                       const void *ctx_b, int32_t *C, int64_t ldc, int accumulate,
                       cr_i8_epilogue_fn epi, const void *ctx_epi, int threads);

/* Bytes of A (M x K) packed once for kernel kd: round_up(M, mr) x round_up(K, 4). */
size_t cr_i8_prepacked_bytes(const cr_i8_kernel *kd, int64_t M, int64_t K);
/* Packs all of A (M x K, s8, lda) for kernel kd, block after block of kd->kc depth, in
 * the layout cr_i8_engine reads when pack_a is NULL and ctx_a points at dst. */
void cr_i8_prepack_a(const cr_i8_kernel *kd, int64_t M, int64_t K, const int8_t *A,
                     int64_t lda, int8_t *dst);

/* Interleaves 4 rows of n bytes into n columns of 4: d[4j + t] = r[t][j] (SSE2, or
 * AVX-512 where the CPU has it). */
void cr_i8_interleave4(const uint8_t *const r[4], int64_t n, uint8_t *d);
/* The AVX-512 form (vpermd + vpshufb, 16 columns per step; call only where it runs). */
void cr_i8_interleave4_avx512(const uint8_t *const r[4], int64_t n, uint8_t *d);

/* Largest byte of the K x N block of B (ldb) (0 for an empty block). */
int cr_u8_max(const uint8_t *B, int64_t K, int64_t N, int64_t ldb);

#ifdef __cplusplus
}
#endif

#endif
