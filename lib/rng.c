/* rng.c — xoshiro256** seeded through splitmix64 (Blackman and Vigna's published design). */
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* One step of splitmix64: spreads a seed over the generator's 256 bits of state. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void cr_rng_seed(cr_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t cr_rng_next(cr_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

int64_t cr_rng_int(cr_rng *r, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1;
    if (span == 0) return (int64_t)cr_rng_next(r); /* the whole 64-bit range */
    /* Rejection sampling removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t v;
    do v = cr_rng_next(r); while (v >= limit);
    return (int64_t)((uint64_t)lo + v % span);
}

double cr_rng_uniform(cr_rng *r) { return (double)(cr_rng_next(r) >> 11) * 0x1.0p-53; }

float cr_rng_uniform_f(cr_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)cr_rng_uniform(r);
}

double cr_rng_normal(cr_rng *r)
{
    double u1 = 1.0 - cr_rng_uniform(r); /* in (0, 1], so log is finite */
    double u2 = cr_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void cr_tensor_fill_uniform(cr_tensor *t, cr_rng *r, float lo, float hi)
{
    for (size_t i = 0; i < t->numel; i++) t->data[i] = cr_rng_uniform_f(r, lo, hi);
}

uint64_t cr_seed_from_env(void)
{
    const char *s = getenv("CR_SEED");
    if (s && *s) return strtoull(s, NULL, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)getpid() << 32);
    return splitmix64(&x);
}
