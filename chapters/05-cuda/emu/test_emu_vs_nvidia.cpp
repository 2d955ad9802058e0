/* test_emu_vs_nvidia.cpp — the emulator's FP16 and BF16 conversions (cr_emu.cpp) equal
 * NVIDIA's own host conversions (cuda_fp16.h, cuda_bf16.h of the installed toolkit) bit for
 * bit, on every float whose bit pattern is a multiple of a stride (all exponents, both
 * signs, ties included) plus every exact tie of the 16-bit formats in [2^-26, 2^17).
 * Built only where a CUDA toolkit is found; this file alone includes NVIDIA's headers, and
 * it reaches the emulator through the three functions declared below, not its headers.
 * A NaN converts to a NaN (the payload is not compared for half -> float).
 * CR_TEST_SCALE scales the sample (the stride grows as the scale shrinks). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace cr_emu {
uint16_t float_to_half_bits(float f);
uint16_t float_to_bf16_bits(float f);
float half_bits_to_float(uint16_t h);
}

static int failures;

/* Compares both conversions of the float with bits u; reports the first few differences. */
static void check(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    const __half h = __float2half_rn(f);
    const __nv_bfloat16 b = __float2bfloat16_rn(f);
    uint16_t nh, nb;
    std::memcpy(&nh, &h, 2);
    std::memcpy(&nb, &b, 2);
    const uint16_t eh = cr_emu::float_to_half_bits(f), eb = cr_emu::float_to_bf16_bits(f);
    if ((eh != nh || eb != nb) && failures++ < 10)
        std::fprintf(stderr, "float 0x%08x (%a): half emu 0x%04x nvidia 0x%04x, bf16 emu 0x%04x "
                     "nvidia 0x%04x\n", u, (double)f, eh, nh, eb, nb);
    if (u < 0x10000u) {   /* half -> float, every half once; NaN payloads may differ */
        const uint16_t v = (uint16_t)u;
        __half_raw raw;
        raw.x = v;
        const __half hv(raw);
        const float back = __half2float(hv), emu = cr_emu::half_bits_to_float(v);
        const bool both_nan = back != back && emu != emu;
        if (!both_nan && std::memcmp(&back, &emu, 4) != 0 && failures++ < 10)
            std::fprintf(stderr, "half 0x%04x: emu %a, nvidia %a\n", u, (double)emu, (double)back);
    }
}

int main()
{
    const char *sc = std::getenv("CR_TEST_SCALE");
    double scale = sc && *sc ? std::atof(sc) : 1.0;
    if (!(scale > 0)) scale = 1.0;
    const uint64_t stride = (uint64_t)(257 / (scale < 1 ? scale : 1)) | 1;
    uint64_t n = 0;
    for (uint64_t u = 0; u <= 0xffffffffu; u += stride, n++) check((uint32_t)u);
    for (uint32_t u = 0; u < 0x10000u; u++, n++) check(u);
    for (uint32_t e = 127 - 26; e < 127 + 17; e++)        /* ties: half's and bf16's halfway bits */
        for (uint32_t m = 0; m < (1u << 10); m++)
            for (uint32_t s = 0; s < 2; s++) {
                check(s << 31 | e << 23 | m << 13 | 0x1000u);
                check(s << 31 | e << 23 | (m << 16 & 0x7fffffu) | 0x8000u);
                n += 2;
            }
    std::printf("emulator vs NVIDIA host conversions: %llu floats, %d differ\n",
                (unsigned long long)n, failures);
    return failures ? 1 : 0;
}
