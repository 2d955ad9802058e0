/* fuzz_safetensors.c — libFuzzer target: cr_st_parse on arbitrary bytes.
 *
 * Any input must give CR_OK or a clear failure (a non-empty message), never a
 * crash, a leak or undefined behaviour. An accepted file is read back in full:
 * every tensor through cr_st_info and cr_st_get_typed (dtype, rank and element
 * count must agree with the header, every byte readable), through cr_st_get
 * (float32), and, when small, converted to every dtype with cr_dtensor_convert
 * (integer targets from arbitrary float bits: NaN, infinities, huge values must be
 * refused, never cast with UB); every metadata key through cr_st_meta. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every byte of t (so ASan sees any short allocation). */
static void touch(const void *p, size_t bytes)
{
    volatile unsigned char sink = 0;
    for (size_t j = 0; j < bytes; j++) sink ^= ((const unsigned char *)p)[j];
    (void)sink;
}

/* Reads tensor name every way the library offers; aborts on any inconsistency. */
static void read_tensor(const cr_st_file *f, const char *name)
{
    cr_dtype dt;
    int ndim;
    int64_t shape[CR_MAX_DIMS];
    if (cr_st_info(f, name, &dt, &ndim, shape) != CR_OK) abort();
    cr_dtensor typed;
    if (cr_st_get_typed(f, name, &typed) == CR_OK) {
        size_t numel = 1;
        for (int d = 0; d < typed.ndim; d++) numel *= (size_t)typed.shape[d];
        if (typed.dtype != dt || typed.ndim != ndim || numel != typed.numel) abort();
        touch(typed.data, cr_dtensor_bytes(&typed));
        for (int k = 0; typed.numel <= 4096 && k < CR_DT_COUNT; k++) {
            cr_dtensor out;
            if (cr_dtensor_convert(&out, &typed, (cr_dtype)k) == CR_OK) {
                if (out.numel != typed.numel) abort();
                touch(out.data, cr_dtensor_bytes(&out));
                cr_dtensor_free(&out);
            } else if (out.data || !cr_last_error()[0]) {
                abort();
            }
        }
        cr_dtensor_free(&typed);
    }
    cr_tensor t;
    if (cr_st_get(f, name, &t) == CR_OK) {
        size_t numel = 1;
        for (int d = 0; d < t.ndim; d++) numel *= (size_t)t.shape[d];
        if (numel != t.numel) abort();
        touch(t.data, t.numel * sizeof(float));
        cr_tensor_free(&t);
    }
}

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
        read_tensor(f, name);
    }
    (void)cr_st_meta(f, "format");
    (void)cr_st_has(f, "missing tensor");
    cr_st_free(f);
    return 0;
}
