/* cr_emu_wmma.h — nvcuda::wmma for the CUDA emulator: fragments, load/store/fill/mma_sync.
 *
 * On a GPU a fragment's elements are spread over the 32 lanes of a warp in an unspecified
 * layout. Here an A or B fragment holds the whole M x K (K x N) tile in every lane (each
 * lane loads it), and an accumulator holds 1/32 of the M x N tile: lane l owns elements
 * e = l, l + 32, l + 64, ... (row-major index e). A and B elements are held as the FP32
 * values the tensor core multiplies (converted when loaded: TF32's low 13 bits dropped,
 * FP16 and BF16 widened exactly). mma_sync then needs no exchange: each
 * lane computes its own elements, d = c + sum over k of a * b, in k order, every product
 * and sum in FP32 (the products of TF32, FP16 and BF16 inputs are exact in FP32). TF32
 * operands: the kernel rounds them with __float_to_tf32; a float that is not a TF32 value
 * has its low 13 bits ignored (truncated). */
#ifndef CR_EMU_WMMA_H
#define CR_EMU_WMMA_H

#include "cr_emu.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}

/* float -> TF32, round to nearest, ties away from zero (cvt.rna.tf32.f32). */
static inline float __float_to_tf32(float f) { return cr_emu::float_to_tf32(f); }

namespace detail {
/* How a fragment stores an element of type T (TF32 is kept in a float). */
template <class T> struct storage { typedef T type; };
template <> struct storage<precision::tf32> { typedef float type; };
/* The FP32 value a tensor core multiplies for a stored element. */
static inline float operand(float v)      /* TF32: the low 13 bits are not used */
{
    uint32_t u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u &= ~0x1fffu;
    std::memcpy(&v, &u, 4);
    return v;
}
static inline float operand(__half v) { return __half2float(v); }
static inline float operand(__nv_bfloat16 v) { return __bfloat162float(v); }
}

template <class Use, int M, int N, int K, class T, class Layout = void> class fragment;

/* A (M x K) or B (K x N): the whole tile in every lane, row-major, already as the FP32
 * values the tensor core multiplies (converted once, when loaded). */
template <class Use, int M, int N, int K, class T, class Layout> class fragment {
    static_assert(std::is_same<Use, matrix_a>::value || std::is_same<Use, matrix_b>::value,
                  "fragment use");
public:
    typedef typename detail::storage<T>::type source_type;   /* what load_matrix_sync reads */
    typedef float element_type;
    static const int rows = std::is_same<Use, matrix_a>::value ? M : K;
    static const int cols = std::is_same<Use, matrix_a>::value ? K : N;
    static const int num_elements = rows * cols;
    float x[num_elements];
};

/* The accumulator: lane l owns the elements l, l + 32, ... of the row-major M x N tile. */
template <int M, int N, int K, class T> class fragment<accumulator, M, N, K, T, void> {
public:
    typedef T element_type;
    static const int num_elements = M * N / 32;
    T x[num_elements];
};

template <class Use, int M, int N, int K, class T, class L, class V>
void fill_fragment(fragment<Use, M, N, K, T, L> &f, const V &v)
{
    for (int i = 0; i < f.num_elements; i++) f.x[i] = v;
}

/* Loads an A or B tile from p with leading dimension ldm (elements), in the fragment's
 * layout. The source type must be the fragment's storage type. */
template <class Use, int M, int N, int K, class T, class L>
void load_matrix_sync(fragment<Use, M, N, K, T, L> &f,
                      const typename fragment<Use, M, N, K, T, L>::source_type *p, unsigned ldm)
{
    typedef fragment<Use, M, N, K, T, L> F;
    const bool row = std::is_same<L, row_major>::value;
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.x[r * F::cols + c] = detail::operand(row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
}

/* Loads this lane's elements of an accumulator tile. */
template <int M, int N, int K, class T>
void load_matrix_sync(fragment<accumulator, M, N, K, T> &f, const T *p, unsigned ldm, layout_t l)
{
    const int lane = cr_emu::lane_id();
    for (int i = 0; i < f.num_elements; i++) {
        const int e = lane + 32 * i, r = e / N, c = e % N;
        f.x[i] = l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
    }
}

/* Stores this lane's elements of an accumulator tile (the warp together stores all). */
template <int M, int N, int K, class T>
void store_matrix_sync(T *p, const fragment<accumulator, M, N, K, T> &f, unsigned ldm, layout_t l)
{
    const int lane = cr_emu::lane_id();
    for (int i = 0; i < f.num_elements; i++) {
        const int e = lane + 32 * i, r = e / N, c = e % N;
        (l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.x[i];
    }
}

/* d = a b + c for this lane's elements of d. */
template <int M, int N, int K, class TA, class LA, class LB>
void mma_sync(fragment<accumulator, M, N, K, float> &d,
              const fragment<matrix_a, M, N, K, TA, LA> &a,
              const fragment<matrix_b, M, N, K, TA, LB> &b,
              const fragment<accumulator, M, N, K, float> &c)
{
    const int lane = cr_emu::lane_id();
    for (int i = 0; i < d.num_elements; i++) {
        const int e = lane + 32 * i, r = e / N, col = e % N;
        float acc = c.x[i];
        for (int k = 0; k < K; k++)
            acc += a.x[r * K + k] * b.x[k * N + col];
        d.x[i] = acc;
    }
}

}  // namespace wmma
}  // namespace nvcuda

#endif
