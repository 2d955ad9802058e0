/* fuzz_safetensors.c — libFuzzer target: cr_st_parse on arbitrary bytes.
 *
 * Any input must give CR_OK or a clear failure (a non-empty message), never a
 * crash, a leak or undefined behaviour. An accepted file is read back in full:
 * every tensor through cr_st_get (its element count must match its shape) and
 * every metadata key through cr_st_meta. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cr_st_file *f = NULL;
    cr_status st = cr_st_parse(&f, data, size, "fuzz.safetensors");
    if (st != CR_OK) {
        if (f || !cr_last_error()[0]) abort();  /* a failure leaves nothing and says why */
        return 0;
    }
    int n = cr_st_count(f);
    for (int i = 0; i < n; i++) {
        const char *name = cr_st_name(f, i);
        if (!name || !cr_st_has(f, name)) abort();
        cr_tensor t;
        if (cr_st_get(f, name, &t) == CR_OK) {
            size_t numel = 1;
            for (int d = 0; d < t.ndim; d++) numel *= (size_t)t.shape[d];
            if (numel != t.numel) abort();
            volatile float sink = 0;
            for (size_t j = 0; j < t.numel; j++) sink += t.data[j];  /* every byte readable */
            (void)sink;
            cr_tensor_free(&t);
        }
    }
    (void)cr_st_meta(f, "format");
    (void)cr_st_has(f, "missing tensor");
    cr_st_free(f);
    return 0;
}
