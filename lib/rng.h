/* rng.h — a small seeded random number generator (xoshiro256**, seeded by splitmix64).
 * The same seed gives the same stream on every machine. */
#ifndef CR_RNG_H
#define CR_RNG_H

#include <stdint.h>
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct { uint64_t s[4]; } cr_rng;

/* Seeds the generator; any 64-bit seed (0 included) is fine. */
void cr_rng_seed(cr_rng *r, uint64_t seed);
/* Next 64 random bits. */
uint64_t cr_rng_next(cr_rng *r);
/* Uniform integer in [lo, hi] (inclusive; lo <= hi). */
int64_t cr_rng_int(cr_rng *r, int64_t lo, int64_t hi);
/* Uniform double in [0, 1). */
double cr_rng_uniform(cr_rng *r);
/* Uniform float in [lo, hi). */
float cr_rng_uniform_f(cr_rng *r, float lo, float hi);
/* Standard normal (Box-Muller). */
double cr_rng_normal(cr_rng *r);
/* Fills t with uniform values in [lo, hi). */
void cr_tensor_fill_uniform(cr_tensor *t, cr_rng *r, float lo, float hi);
/* A seed for a fresh run: CR_SEED from the environment if set, else time and pid. */
uint64_t cr_seed_from_env(void);

#ifdef __cplusplus
}
#endif

#endif
