/* cr_emu_race.cpp — ThreadSanitizer's entry points, implemented by the CUDA emulator's race
 * detector instead of ThreadSanitizer's runtime.
 *
 * g++ -fsanitize=thread (and clang's) turns every load and store of the code it compiles
 * into a call: __tsan_read4(address) before a 4-byte load, __tsan_write8 before an 8-byte
 * store, and so on. The chapter's kernels compiled that way (the race build of
 * chapters/05-cuda/meson.build) and linked with this file, not with libtsan, hand every
 * access to cr_emu::race_access, which keeps only those to shared and device memory made
 * by a kernel's thread (chapter 5, "The race detector"). This file itself is compiled
 * without instrumentation. */
#include "cr_emu.h"

// @snippet emu_race_hooks
/* The loads and stores of n bytes (plain, unaligned, volatile): checked by the detector. */
#define CR_EMU_HOOKS(n)                                                                       \
    extern "C" void __tsan_read##n(void *p) { cr_emu::race_access(p, n, false); }            \
    extern "C" void __tsan_write##n(void *p) { cr_emu::race_access(p, n, true); }            \
    extern "C" void __tsan_unaligned_read##n(void *p) { cr_emu::race_access(p, n, false); }  \
    extern "C" void __tsan_unaligned_write##n(void *p) { cr_emu::race_access(p, n, true); }  \
    extern "C" void __tsan_volatile_read##n(void *p) { cr_emu::race_access(p, n, false); }   \
    extern "C" void __tsan_volatile_write##n(void *p) { cr_emu::race_access(p, n, true); }
CR_EMU_HOOKS(1)
CR_EMU_HOOKS(2)
CR_EMU_HOOKS(4)
CR_EMU_HOOKS(8)
CR_EMU_HOOKS(16)
// @end emu_race_hooks

extern "C" void __tsan_read_range(void *p, size_t n) { cr_emu::race_access(p, n, false); }
extern "C" void __tsan_write_range(void *p, size_t n) { cr_emu::race_access(p, n, true); }
/* What the instrumentation calls besides accesses: nothing to do here. */
extern "C" void __tsan_init(void) {}
extern "C" void __tsan_func_entry(void *) {}
extern "C" void __tsan_func_exit(void) {}
extern "C" void __tsan_vptr_update(void **, void *) {}
extern "C" void __tsan_vptr_read(void **) {}
/* The copies clang's instrumentation calls in place of memcpy, memmove and memset. */
extern "C" void *__tsan_memcpy(void *d, const void *s, size_t n)
{
    cr_emu::race_access(s, n, false);
    cr_emu::race_access(d, n, true);
    return std::memcpy(d, s, n);
}
extern "C" void *__tsan_memmove(void *d, const void *s, size_t n)
{
    cr_emu::race_access(s, n, false);
    cr_emu::race_access(d, n, true);
    return std::memmove(d, s, n);
}
extern "C" void *__tsan_memset(void *d, int v, size_t n)
{
    cr_emu::race_access(d, n, true);
    return std::memset(d, v, n);
}
