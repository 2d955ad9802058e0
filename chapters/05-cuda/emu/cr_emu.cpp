/* cr_emu.cpp — the CUDA emulator's runtime: memory, errors, and the scheduler that runs a
 * grid's threads as cooperative fibers (see cr_emu.h and chapter 5's "The emulator").
 *
 * Environment:
 *   CR_EMU_SCHEDULE  forward (default), reverse, random, or compare. The order in which a
 *                    block's runnable threads run between two barriers: thread order,
 *                    reverse thread order, a random order drawn afresh for each interval
 *                    (seed CR_EMU_SEED, else CR_SEED, else 1). compare runs every launch
 *                    three times (forward, reverse, random) from the same device memory
 *                    and fails the launch if any byte of device memory differs: a result
 *                    that depends on the schedule is a race. Launches that used a
 *                    floating-point atomic are exempt (their rounding depends on the order
 *                    of the adds on a GPU too).
 *   CR_EMU_VERBOSE   1: one line per launch on stderr.
 *
 * The race detector ("The race detector" below) runs where the kernels were compiled with
 * ThreadSanitizer's instrumentation (g++ -fsanitize=thread) and linked against
 * cr_emu_race.cpp instead of ThreadSanitizer's runtime: every load and store of a kernel
 * then calls cr_emu::race_access, which records per byte of shared memory and of device
 * memory who last wrote and read it, and when. */
#include "cr_emu.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#if defined(__x86_64__) && !defined(CR_EMU_UCONTEXT)
#define CR_EMU_ASM_SWITCH 1
/* cr_emu_switch(save, to): saves the callee-saved registers, the SSE and x87 control
 * words on the current stack, stores the stack pointer in *save, and continues on the
 * stack `to` (a stack saved by an earlier switch, or a fresh one from new_stack). The
 * System V ABI lets a function clobber every other register, so this is a whole context
 * switch for cooperative fibers, without ucontext's system call per switch. */
extern "C" void cr_emu_switch(void **save, void *to);
asm(".text\n"
    ".globl cr_emu_switch\n"
    ".type cr_emu_switch, @function\n"
    "cr_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size cr_emu_switch, .-cr_emu_switch\n");
#else
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define CR_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CR_EMU_ASAN 1
#endif
#endif
#ifdef CR_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CR_EMU_VALGRIND 1
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace cr_emu {

/* ---- half precision ------------------------------------------------------------------- */

static uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
static float float_of(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

/* Shifts m right by s with round to nearest even (s >= 1; m < 2^32). */
static uint32_t shift_rne(uint32_t m, int s)
{
    if (s >= 32) return 0;
    const uint32_t q = m >> s, rem = m & ((1u << s) - 1), halfway = 1u << (s - 1);
    return q + (rem > halfway || (rem == halfway && (q & 1)));
}

uint16_t float_to_half_bits(float f)
{
    const uint32_t u = bits_of(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fff;                         /* NaN */
    if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);    /* infinity */
    const int e = (int)(a >> 23) - 127;                         /* unbiased exponent */
    const uint32_t m = (a & 0x7fffffu) | (a >= 0x00800000u ? 0x800000u : 0);
    if (e >= -14) {                                             /* a normal half (or overflow) */
        /* 24-bit significand to 11 bits; a carry out of the significand bumps the
         * exponent, which the addition does by itself */
        const uint32_t r = ((uint32_t)(e + 15) << 10) + shift_rne(m, 13) - 0x400u;
        return (uint16_t)(sign | (r >= 0x7c00u ? 0x7c00u : r));
    }
    /* subnormal half: value m * 2^(e-23) in units of 2^-24, i.e. m >> (-e - 1 + ... ) */
    const int s = -e - 14 + 13;                                 /* 14 bits for e = -15 */
    return (uint16_t)(sign | shift_rne(m, s));                  /* may round up to 0x400 */
}

float half_bits_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0x1f) return float_of(sign | 0x7f800000u | (m << 13));
    if (e != 0) return float_of(sign | ((e + 112) << 23) | (m << 13));
    const float v = (float)m * 0x1p-24f;                        /* subnormal: exact */
    return sign ? -v : v;
}

uint16_t float_to_bf16_bits(float f)
{
    const uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (uint16_t)((u >> 16) + (((u & 0xffffu) > 0x8000u) ||
                                   ((u & 0xffffu) == 0x8000u && ((u >> 16) & 1))));
}

float bf16_bits_to_float(uint16_t h) { return float_of((uint32_t)h << 16); }

float float_to_tf32(float f)
{
    uint32_t u = bits_of(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f;             /* Inf, NaN unchanged */
    u = (u + 0x1000u) & ~0x1fffu;                               /* ties away from zero */
    return float_of(u);
}

/* ---- errors ----------------------------------------------------------------------------- */

static cudaError_t last_error = cudaSuccess;   /* what cudaGetLastError returns and clears */
static cudaError_t sticky_error = cudaSuccess; /* a failed kernel: every later call fails */

static cudaError_t set_error(cudaError_t e)
{
    if (e != cudaSuccess) last_error = e;
    return e;
}

/* ---- device memory: malloc with a registry (for compare and for cudaFree checks) ------- */

static std::map<char *, size_t> allocations;
static const size_t total_mem = (size_t)8 << 30;   /* what the emulated device claims */
static size_t used_mem;

/* ---- the scheduler ----------------------------------------------------------------------- */

enum fiber_state { READY, WAIT_BLOCK, WAIT_WARP, DONE };

struct fiber {
#ifdef CR_EMU_ASM_SWITCH
    void *sp;              /* its saved stack pointer while it is not running */
#else
    ucontext_t ctx;
#endif
    char *stack;
    fiber_state state;
    unsigned mask;         /* WAIT_WARP: the lanes it waits for */
    uint3 tid;
    int lane, warp;
    size_t shared_next;    /* index of its next shared_alloc */
    void *asan_fake;
};

static const size_t stack_bytes =
#ifdef CR_EMU_ASAN
    512 * 1024;
#else
    128 * 1024;
#endif

struct block_run {
    std::vector<fiber> fibers;
    std::vector<std::pair<void *, size_t>> shared;   /* this block's shared arrays */
    std::vector<const char *> shared_names;          /* their names (for messages) */
    std::vector<uint64_t> slots;                     /* 32 per warp */
    void *dynamic;
    size_t shared_total;
    int nthreads, nwarps;
};

#ifdef CR_EMU_ASM_SWITCH
static void *sched_sp;
#else
static ucontext_t sched_ctx;
#endif
static fiber *current;
static block_run *blk;
static const launch_cfg *cur_cfg;
static void (*cur_body)(void *);
static void *cur_ctx;
static bool float_atomic;
static std::string failure;    /* a device-side failure of the running launch */
static std::string last_failure;   /* the failure of the last launch (cr_emu_last_failure) */
static std::vector<char *> stack_pool;
#ifdef CR_EMU_VALGRIND
static std::vector<unsigned> stack_ids;
#endif
#ifdef CR_EMU_ASAN
static const void *sched_stack_bottom;
static size_t sched_stack_size;
#endif

/* The race detector's clocks: a stamp names one interval between two barriers of one
 * block (every block start and every __syncthreads draws a fresh one, so stamps only
 * grow); a warp stamp changes whenever the warp's lanes meet in a collective. */
static uint32_t stamp_counter, warp_stamp_counter;
static uint32_t launch_stamp;     /* the first stamp of the running launch */
static uint32_t block_stamp;      /* the first stamp of the running block */
static uint32_t cur_stamp;        /* the running block's current interval */
static uint32_t block_linear;     /* the running block's index, x fastest */
static std::vector<uint32_t> warp_stamp;   /* per warp of the running block */

enum schedule { FORWARD, REVERSE, RANDOM };
static uint64_t rng_state = 1;

static uint64_t next_random()
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Sets the built-in variables for f. */
static void enter(fiber *f)
{
    current = f;
    threadIdx = f->tid;
}

/* Back to the scheduler from the running fiber (it has set its state). */
static void yield_to_scheduler()
{
    fiber *f = current;
#ifdef CR_EMU_ASAN
    __sanitizer_start_switch_fiber(f->state == DONE ? nullptr : &f->asan_fake,
                                   sched_stack_bottom, sched_stack_size);
#endif
#ifdef CR_EMU_ASM_SWITCH
    cr_emu_switch(&f->sp, sched_sp);
#else
    swapcontext(&f->ctx, &sched_ctx);
#endif
#ifdef CR_EMU_ASAN
    __sanitizer_finish_switch_fiber(f->asan_fake, nullptr, nullptr);
#endif
    enter(f);
}

/* A fiber's life: run the kernel for its thread, then say so. */
static void fiber_main()
{
#ifdef CR_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_stack_bottom, &sched_stack_size);
#endif
    cur_body(cur_ctx);
    current->state = DONE;
    yield_to_scheduler();
    std::abort();   /* a finished fiber is never resumed */
}

/* Runs f until it waits or returns. */
static void resume(fiber *f)
{
    enter(f);
#ifdef CR_EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, stack_bytes);
#endif
#ifdef CR_EMU_ASM_SWITCH
    cr_emu_switch(&sched_sp, f->sp);
#else
    swapcontext(&sched_ctx, &f->ctx);
#endif
#ifdef CR_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    current = nullptr;
}

/* Stacks for n fibers, kept between launches. */
static void ensure_stacks(size_t n)
{
    while (stack_pool.size() < n) {
        char *s = static_cast<char *>(std::malloc(stack_bytes));
        if (!s) { std::fprintf(stderr, "cr_emu: out of memory for fiber stacks\n"); std::abort(); }
        stack_pool.push_back(s);
#ifdef CR_EMU_VALGRIND
        stack_ids.push_back(VALGRIND_STACK_REGISTER(s, s + stack_bytes));
#endif
    }
}

/* Frees the fiber stacks when the program ends (leak checkers count them otherwise). */
static struct stack_pool_owner {
    ~stack_pool_owner()
    {
        for (size_t i = 0; i < stack_pool.size(); i++) {
#ifdef CR_EMU_VALGRIND
            VALGRIND_STACK_DEREGISTER(stack_ids[i]);
#endif
            std::free(stack_pool[i]);
        }
        stack_pool.clear();
    }
} stack_pool_owner_;

/* Fails the running launch with message (the first failure wins). */
static void fail_launch(const std::string &message)
{
    if (failure.empty()) failure = message;
}

/* Releases the threads whose warp collective is complete; true if any was released. */
static bool release_warps()
{
    bool any = false;
    for (int w = 0; w < blk->nwarps; w++) {
        fiber *lanes = &blk->fibers[(size_t)w * 32];
        const int n = std::min(32, blk->nthreads - w * 32);
        unsigned waiting = 0, done = 0, want = 0;
        for (int l = 0; l < n; l++) {
            if (lanes[l].state == WAIT_WARP) { waiting |= 1u << l; want |= lanes[l].mask; }
            if (lanes[l].state == DONE) done |= 1u << l;
        }
        if (!waiting) continue;
        const unsigned exists = n == 32 ? 0xffffffffu : (1u << n) - 1;
        if ((want & exists & ~done & ~waiting) == 0) {          /* every lane asked for is here */
            for (int l = 0; l < n; l++)
                if (lanes[l].state == WAIT_WARP) lanes[l].state = READY;
            warp_stamp[(size_t)w] = ++warp_stamp_counter;     /* the lanes are ordered now */
            any = true;
        }
    }
    return any;
}

#ifdef CR_EMU_ASM_SWITCH
/* A fresh stack for f whose first switch "returns" into fiber_main: the registers
 * cr_emu_switch pops (zeros), the current SSE/x87 control words, fiber_main's address,
 * and a null return address above it (fiber_main never returns). */
static void init_context(fiber *f)
{
    uintptr_t top = ((uintptr_t)f->stack + stack_bytes) & ~(uintptr_t)15;
    void **sp = reinterpret_cast<void **>(top);
    *--sp = nullptr;                                        /* fiber_main's return address */
    *--sp = reinterpret_cast<void *>(&fiber_main);          /* where `ret` goes */
    for (int r = 0; r < 6; r++) *--sp = nullptr;            /* rbp rbx r12 r13 r14 r15 */
    uint32_t cw[2] = {0, 0};
    asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(cw[0]), "=m"(cw[1]));
    *--sp = nullptr;
    std::memcpy(sp, cw, 8);
    f->sp = sp;
}
#else
/* Points f's context at fiber_main on its own stack (a function of its own: getcontext
 * returns twice, which must not touch the caller's locals). */
static __attribute__((noinline)) void init_context(fiber *f)
{
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = stack_bytes;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, fiber_main, 0);
}

#endif

// @snippet emu_block
/* Runs one block of the current launch under schedule s. */
static void run_block(block_run &b, schedule s)
{
    const int n = b.nthreads;
    std::vector<int> order((size_t)n);
    for (int i = 0; i < n; i++) order[(size_t)i] = s == REVERSE ? n - 1 - i : i;
    for (int i = 0; i < n; i++) {
        fiber &f = b.fibers[(size_t)i];
        f.state = READY;
        f.shared_next = 0;
        f.asan_fake = nullptr;
#ifdef CR_EMU_ASAN
        __asan_unpoison_memory_region(f.stack, stack_bytes);   /* leftovers of a finished fiber */
#endif
        init_context(&f);
    }
    cur_stamp = block_stamp = ++stamp_counter;
    for (;;) {
        if (s == RANDOM)
            for (int i = n - 1; i > 0; i--)
                std::swap(order[(size_t)i], order[(size_t)(next_random() % (uint64_t)(i + 1))]);
        for (int i : order)
            while (b.fibers[(size_t)i].state == READY) resume(&b.fibers[(size_t)i]);
        if (release_warps()) continue;
        int live = 0, at_barrier = 0;
        for (const fiber &f : b.fibers) {
            live += f.state != DONE;
            at_barrier += f.state == WAIT_BLOCK;
        }
        if (live == 0) return;
        if (at_barrier == live) {                        /* __syncthreads: everyone is here */
            for (fiber &f : b.fibers)
                if (f.state == WAIT_BLOCK) f.state = READY;
            cur_stamp = ++stamp_counter;                  /* a new interval */
            continue;
        }
        char msg[200];
        std::snprintf(msg, sizeof msg, "kernel %s, block (%u, %u, %u): deadlock: %d threads "
                      "wait at __syncthreads, %d at a warp collective whose lanes never arrive",
                      cur_cfg->name, blockIdx.x, blockIdx.y, blockIdx.z, at_barrier,
                      live - at_barrier);
        fail_launch(msg);
        return;   /* the stuck fibers are abandoned; their stacks are reinitialised later */
    }
}
// @end emu_block

/* Checks a launch configuration as the driver does. */
static cudaError_t check_config(const launch_cfg &c)
{
    const unsigned long long threads = (unsigned long long)c.block.x * c.block.y * c.block.z;
    if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || threads == 0 || threads > 1024 ||
        c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64 || c.grid.y > 65535 ||
        c.grid.z > 65535 || c.grid.x > 2147483647u || c.smem > 48 * 1024)
        return cudaErrorInvalidConfiguration;
    return cudaSuccess;
}

static schedule schedule_named(const char *s)
{
    if (!s || !*s || !std::strcmp(s, "forward")) return FORWARD;
    if (!std::strcmp(s, "reverse")) return REVERSE;
    if (!std::strcmp(s, "random")) return RANDOM;
    std::fprintf(stderr, "cr_emu: CR_EMU_SCHEDULE=%s: expected forward, reverse, random or "
                 "compare; using forward\n", s);
    return FORWARD;
}

static uint64_t seed_from_env()
{
    const char *s = std::getenv("CR_EMU_SEED");
    if (!s || !*s) s = std::getenv("CR_SEED");
    const uint64_t v = s && *s ? std::strtoull(s, nullptr, 0) : 1;
    return v ? v : 1;
}

/* Runs every block of the launch under schedule s; false on a device-side failure. */
static bool run_all_blocks(schedule s)
{
    const launch_cfg &c = *cur_cfg;
    block_run b;
    b.nthreads = (int)(c.block.x * c.block.y * c.block.z);
    b.nwarps = (b.nthreads + 31) / 32;
    b.fibers.resize((size_t)b.nthreads);
    b.slots.assign((size_t)b.nwarps * 32, 0);
    ensure_stacks((size_t)b.nthreads);
    for (int i = 0; i < b.nthreads; i++) {
        fiber &f = b.fibers[(size_t)i];
        f.stack = stack_pool[(size_t)i];
        f.tid = uint3{(unsigned)i % c.block.x, (unsigned)i / c.block.x % c.block.y,
                      (unsigned)i / (c.block.x * c.block.y)};
        f.lane = i % 32;
        f.warp = i / 32;
    }
    blk = &b;
    blockDim = c.block;
    gridDim = c.grid;
    warp_stamp.assign((size_t)b.nwarps, 0);
    launch_stamp = stamp_counter + 1;   /* the first block's stamp */
    for (unsigned z = 0; z < c.grid.z && failure.empty(); z++)
        for (unsigned y = 0; y < c.grid.y && failure.empty(); y++)
            for (unsigned x = 0; x < c.grid.x && failure.empty(); x++) {
                blockIdx = uint3{x, y, z};
                block_linear = (z * c.grid.y + y) * c.grid.x + x;
                b.dynamic = nullptr;
                b.shared_total = 0;
                run_block(b, s);
                for (auto &a : b.shared) std::free(a.first);
                b.shared.clear();
                b.shared_names.clear();
                std::free(b.dynamic);
            }
    blk = nullptr;
    return failure.empty();
}

/* A copy of every device allocation (compare mode). */
typedef std::vector<std::pair<char *, std::vector<char>>> snapshot;

static snapshot take_snapshot()
{
    snapshot s;
    for (auto &a : allocations) s.emplace_back(a.first, std::vector<char>(a.first, a.first + a.second));
    return s;
}

static void restore(const snapshot &s)
{
    for (auto &a : s) if (!a.second.empty()) std::memcpy(a.first, a.second.data(), a.second.size());
}

/* "" if device memory equals s byte for byte, else where it first differs. */
static std::string first_difference(const snapshot &s)
{
    for (auto &a : s)
        for (size_t i = 0; i < a.second.size(); i++)
            if (a.first[i] != a.second[i]) {
                char msg[160];
                std::snprintf(msg, sizeof msg, "the %zu-byte allocation at %p differs at byte %zu "
                              "(float %zu)", a.second.size(), (void *)a.first, i, i / 4);
                return msg;
            }
    return "";
}

void run_grid(const launch_cfg &cfg, void (*body)(void *), void *ctx)
{
    if (sticky_error != cudaSuccess) { set_error(sticky_error); return; }
    if (check_config(cfg) != cudaSuccess) { set_error(cudaErrorInvalidConfiguration); return; }
    if (blk) {
        std::fprintf(stderr, "cr_emu: kernel %s launched from device code (not emulated)\n", cfg.name);
        std::abort();
    }
    cur_cfg = &cfg;
    cur_body = body;
    cur_ctx = ctx;
    failure.clear();
    last_failure.clear();
    float_atomic = false;
    const char *env = std::getenv("CR_EMU_SCHEDULE");
    if (std::getenv("CR_EMU_VERBOSE"))
        std::fprintf(stderr, "cr_emu: %s<<<(%u,%u,%u), (%u,%u,%u), %zu>>>\n", cfg.name,
                     cfg.grid.x, cfg.grid.y, cfg.grid.z, cfg.block.x, cfg.block.y, cfg.block.z,
                     cfg.smem);
    if (env && !std::strcmp(env, "compare")) {
        static const schedule order[] = {FORWARD, REVERSE, RANDOM};
        static const char *const names[] = {"forward", "reverse", "random"};
        const snapshot before = take_snapshot();
        snapshot first;
        rng_state = seed_from_env();
        for (int i = 0; i < 3 && failure.empty(); i++) {
            if (i > 0) restore(before);
            if (!run_all_blocks(order[i])) break;
            if (i == 0) { first = take_snapshot(); continue; }
            if (float_atomic) break;   /* the adds' order may round differently: exempt */
            const std::string d = first_difference(first);
            if (!d.empty())
                fail_launch(std::string("kernel ") + cfg.name + ": a race: device memory after the "
                            + names[i] + " schedule differs from the forward schedule: " + d);
        }
    } else {
        const schedule s = schedule_named(env);
        if (s == RANDOM) rng_state = seed_from_env() ^ (uint64_t)(uintptr_t)cfg.name;
        run_all_blocks(s);
    }
    if (!failure.empty()) {
        /* not sticky, unlike a GPU's: the next test starts from a working device */
        std::fprintf(stderr, "cr_emu: %s\n", failure.c_str());
        last_failure = failure;
        set_error(cudaErrorLaunchFailure);
    }
}

/* ---- what kernels call ---------------------------------------------------------------------- */

int lane_id() { return current->lane; }
int warp_id() { return current->warp; }

void sync_block()
{
    current->state = WAIT_BLOCK;
    yield_to_scheduler();
}

void sync_warp(unsigned mask)
{
    if (!(mask & (1u << current->lane))) {
        fail_launch(std::string("kernel ") + cur_cfg->name +
                    ": a warp collective whose mask leaves out the calling lane");
        return;
    }
    current->state = WAIT_WARP;
    current->mask = mask;
    yield_to_scheduler();
}

uint64_t *warp_slots() { return &blk->slots[(size_t)current->warp * 32]; }

void note_float_atomic() { float_atomic = true; }

void *shared_alloc(const char *name, size_t bytes, size_t align)
{
    fiber *f = current;
    const size_t k = f->shared_next++;
    if (k < blk->shared.size()) return blk->shared[k].first;
    if (k > blk->shared.size()) device_fail("shared arrays declared in different orders");
    if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
    void *p = nullptr;
    if (posix_memalign(&p, align, bytes ? bytes : 1) != 0) device_fail("out of host memory");
    std::memset(p, 0xff, bytes);   /* poison: every float reads as NaN until written */
    blk->shared.emplace_back(p, bytes);
    blk->shared_names.push_back(name);
    blk->shared_total += bytes;
    if (blk->shared_total + cur_cfg->smem > 48 * 1024) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "%zu bytes of shared memory (with %s), more than the "
                      "48 KiB a block may declare statically", blk->shared_total, name);
        device_fail(msg);
    }
    return p;
}

void *dynamic_shared(size_t align)
{
    if (!blk->dynamic) {
        if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
        if (posix_memalign(&blk->dynamic, align, cur_cfg->smem ? cur_cfg->smem : 1) != 0)
            device_fail("out of host memory");
        std::memset(blk->dynamic, 0xff, cur_cfg->smem);
    }
    return blk->dynamic;
}

void device_fail_at(const char *what, const char *file, int line)
{
    char msg[300];
    const char *base = std::strrchr(file, '/');
    std::snprintf(msg, sizeof msg, "%s at %s:%d", what, base ? base + 1 : file, line);
    device_fail(msg);
}

void device_fail(const char *what)
{
    char msg[300];
    std::snprintf(msg, sizeof msg, "kernel %s, block (%u, %u, %u), thread (%u, %u, %u): %s",
                  cur_cfg->name, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y,
                  threadIdx.z, what);
    fail_launch(msg);
    current->state = DONE;
    yield_to_scheduler();
    std::abort();
}

/* ---- the race detector ----------------------------------------------------------------------- */

// @snippet emu_race_records
/* Who touched a byte last, and when: tid is the thread's index in the whole grid (block
 * index * threads per block + thread index), stamp its block's interval, wstamp its
 * warp's stamp at the time. A byte read by several threads keeps one record for them all:
 * tid MANY_ONE_BLOCK (all in one block; wstamp then keeps one of them, for messages) or
 * MANY_BLOCKS. A stamp older than the launch (or, for shared memory, than the block)
 * means "nobody yet", so the shadows are never cleared. */
struct access_rec { uint32_t tid, stamp, wstamp; };
struct shadow_byte { access_rec write, read; };
static const uint32_t MANY_ONE_BLOCK = 0xfffffffeu, MANY_BLOCKS = 0xffffffffu;
// @end emu_race_records

/* The detector's hot path runs on its own records only: sanitizers would check every one
 * of its loads and stores again (in an ASan build, several times the cost of the run). */
#if defined(__GNUC__)
#define CR_EMU_HOT __attribute__((no_sanitize("address", "undefined")))
#else
#define CR_EMU_HOT
#endif

static std::vector<std::vector<shadow_byte>> shared_shadow;   /* by shared array (k) */
static std::vector<shadow_byte> dynamic_shadow;
static std::map<char *, std::vector<shadow_byte>> global_shadow;   /* by device allocation */
static char *cache_base;                 /* the device allocation hit last */
static size_t cache_bytes;
static shadow_byte *cache_shadow;
static char *alloc_lo, *alloc_hi;        /* bounds of every device allocation (a quick no) */
static unsigned long long race_checked;  /* bytes checked since the program started */

/* The thread (x, y, z) of block (x, y, z) that grid index tid names, for a message. */
static std::string thread_name(uint32_t tid)
{
    const launch_cfg &c = *cur_cfg;
    if (tid == MANY_BLOCKS) return "threads of several blocks";
    const uint32_t n = c.block.x * c.block.y * c.block.z, b = tid / n, t = tid % n;
    char s[120];
    std::snprintf(s, sizeof s, "thread (%u, %u, %u) of block (%u, %u, %u)", t % c.block.x,
                  t / c.block.x % c.block.y, t / (c.block.x * c.block.y), b % c.grid.x,
                  b / c.grid.x % c.grid.y, b / (c.grid.x * c.grid.y));
    return s;
}

// @snippet emu_race_rule
/* The running thread as the rule needs it: its grid index, its block's grid indices
 * [lo, hi), its warp and that warp's stamp. */
struct runner { uint32_t me, lo, hi; int w; uint32_t wstamp; };

/* True if grid index tid is a thread of the running block. */
CR_EMU_HOT static bool in_block(uint32_t tid, const runner &t) { return tid >= t.lo && tid < t.hi; }

/* True if the access recorded in r may run at the same time as the running thread's (t)
 * on a GPU: r lies in this launch (in this block for shared memory: stamps from oldest),
 * was made by another thread, and no barrier orders the two — another block (blocks are
 * never ordered within a launch), or the same interval of this block, unless both
 * threads are lanes of one warp that met in a collective since (the warp stamp changed). */
CR_EMU_HOT static bool concurrent(const access_rec &r, uint32_t oldest, const runner &t)
{
    if (r.stamp < oldest || r.tid == t.me) return false;
    if (r.tid == MANY_BLOCKS) return true;
    if (r.tid == MANY_ONE_BLOCK) return !in_block(r.wstamp, t) || r.stamp == cur_stamp;
    if (!in_block(r.tid, t)) return true;
    if (r.stamp != cur_stamp) return false;                  /* a __syncthreads between */
    const bool same_warp = (int)((r.tid - t.lo) / 32) == t.w;
    return !(same_warp && r.wstamp != t.wstamp);             /* a __syncwarp between */
}
// @end emu_race_rule

/* Where a race happened, for its message: a shared array (name), the dynamic shared
 * memory (name ""), or a device allocation (base, bytes; name NULL). */
struct race_place { const char *name; const char *base; size_t bytes; };

/* Reports a race on byte off of place and fails the launch: the running thread (me) does
 * `write`, and r records the other access (a write if r_write). */
static void report_race(const race_place &pl, size_t off, bool write, const access_rec &r,
                        bool r_write, uint32_t me)
{
    char where[160];
    if (!pl.name)
        std::snprintf(where, sizeof where, "device memory: the %zu-byte allocation at %p",
                      pl.bytes, (const void *)pl.base);
    else if (!*pl.name)
        std::snprintf(where, sizeof where, "dynamic shared memory");
    else
        std::snprintf(where, sizeof where, "shared array %s", pl.name);
    char at[80];
    std::snprintf(at, sizeof at, " at byte %zu (element %zu of 4 bytes): ", off, off / 4);
    const std::string other = r.tid == MANY_ONE_BLOCK
        ? thread_name(r.wstamp) + " and other threads of its block" : thread_name(r.tid);
    fail_launch(std::string("kernel ") + cur_cfg->name + ": a race on " + where + at +
                thread_name(me) + (write ? " writes it" : " reads it") + " and " + other +
                (r_write ? " wrote it" : " read it") +
                " with no barrier between (__syncthreads orders the threads of a block, "
                "nothing orders two blocks of one launch; atomics are not races)");
}

/* True if two bytes' records are equal (they are decided together). */
CR_EMU_HOT static bool same_shadow(const shadow_byte &a, const shadow_byte &b)
{
    return a.write.tid == b.write.tid && a.write.stamp == b.write.stamp &&
           a.write.wstamp == b.write.wstamp && a.read.tid == b.read.tid &&
           a.read.stamp == b.read.stamp && a.read.wstamp == b.read.wstamp;
}

// @snippet emu_race_check
/* Checks and records an access of n bytes at sh (the shadow of place, byte off onwards)
 * by the running thread; oldest: the first stamp that counts. Bytes whose records are
 * alike (the bytes of one float, mostly) are decided once. */
CR_EMU_HOT static void check_bytes(shadow_byte *sh, size_t n, bool write, uint32_t oldest,
                        const race_place &pl, size_t off)
{
    const launch_cfg &c = *cur_cfg;
    const uint32_t nthreads = c.block.x * c.block.y * c.block.z, lo = block_linear * nthreads;
    const uint32_t me = lo + (threadIdx.z * c.block.y + threadIdx.y) * c.block.x + threadIdx.x;
    const runner t{me, lo, lo + nthreads, current->warp, warp_stamp[(size_t)current->warp]};
    const access_rec mine{me, cur_stamp, t.wstamp};
    race_checked += n;
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && same_shadow(sh[j], sh[i]); j++) {}   /* a run of alike bytes */
        shadow_byte b = sh[i];                   /* decided in a register, stored once per byte */
        const bool ww = concurrent(b.write, oldest, t);
        const bool rw = write && concurrent(b.read, oldest, t);
        if (ww || rw) {
            report_race(pl, off + i, write, ww ? b.write : b.read, ww, me);
            return;
        }
        if (write) {
            b.write = mine;
        } else {
            access_rec &r = b.read;                                   /* a read: who reads */
            if (r.stamp < oldest || r.tid == me ||
                (r.tid < MANY_ONE_BLOCK && !concurrent(r, oldest, t)) ||
                (r.tid == MANY_ONE_BLOCK && in_block(r.wstamp, t) && r.stamp != cur_stamp))
                r = mine;                        /* the earlier reads all happened before */
            else if (r.tid == MANY_BLOCKS || !in_block(r.tid == MANY_ONE_BLOCK ? r.wstamp : r.tid, t)) {
                if (r.tid == MANY_BLOCKS && r.stamp == cur_stamp) continue;   /* unchanged */
                r = access_rec{MANY_BLOCKS, cur_stamp, 0};
            } else if (r.tid != MANY_ONE_BLOCK || r.stamp != cur_stamp) {
                r = access_rec{MANY_ONE_BLOCK, cur_stamp, r.tid == MANY_ONE_BLOCK ? r.wstamp : r.tid};
            } else {
                continue;                        /* unchanged: nothing to store */
            }
        }
        for (size_t k = i; k < j; k++) sh[k] = b;
    }
}
// @end emu_race_check

/* The shadow of device allocation base (bytes long), made on first use. */
static shadow_byte *global_shadow_of(char *base, size_t bytes)
{
    std::vector<shadow_byte> &v = global_shadow[base];
    if (v.size() < bytes) v.assign(bytes ? bytes : 1, shadow_byte{{0, 0, 0}, {0, 0, 0}});
    return v.data();
}

// @snippet emu_race_access
/* Checks an access of n bytes at p by the running thread, if p is shared or device memory. */
CR_EMU_HOT void race_access(const void *p, size_t n, bool write)
{
    fiber *f = current;
    if (!f || !failure.empty()) return;                 /* host code, or already failed */
    char *a = (char *)p;
    if (a >= f->stack && a < f->stack + stack_bytes) return;   /* the thread's own stack */
    for (size_t k = 0; k < blk->shared.size(); k++) {             /* shared memory */
        char *base = static_cast<char *>(blk->shared[k].first);
        const size_t bytes = blk->shared[k].second;
        if (a >= base && a < base + bytes) {
            if (shared_shadow.size() <= k) shared_shadow.resize(k + 1);
            std::vector<shadow_byte> &v = shared_shadow[k];
            if (v.size() < bytes) v.resize(bytes, shadow_byte{{0, 0, 0}, {0, 0, 0}});
            check_bytes(&v[(size_t)(a - base)], std::min(n, bytes - (size_t)(a - base)), write,
                        block_stamp, race_place{blk->shared_names[k], base, bytes},
                        (size_t)(a - base));
            return;
        }
    }
    char *dyn = static_cast<char *>(blk->dynamic);
    if (dyn && a >= dyn && a < dyn + cur_cfg->smem) {
        if (dynamic_shadow.size() < cur_cfg->smem)
            dynamic_shadow.resize(cur_cfg->smem, shadow_byte{{0, 0, 0}, {0, 0, 0}});
        check_bytes(&dynamic_shadow[(size_t)(a - dyn)], std::min(n, cur_cfg->smem - (size_t)(a - dyn)),
                    write, block_stamp, race_place{"", dyn, cur_cfg->smem}, (size_t)(a - dyn));
        return;
    }
    if (a < alloc_lo || a >= alloc_hi) return;                      /* not device memory */
    if (!(cache_base && a >= cache_base && a < cache_base + cache_bytes)) {
        auto it = allocations.upper_bound(a);
        if (it == allocations.begin()) return;
        --it;
        if (a >= it->first + it->second) return;                    /* host memory */
        cache_base = it->first;
        cache_bytes = it->second;
        cache_shadow = global_shadow_of(cache_base, cache_bytes);
    }
    const size_t off = (size_t)(a - cache_base);
    check_bytes(cache_shadow + off, std::min(n, cache_bytes - off), write, launch_stamp,
                race_place{nullptr, cache_base, cache_bytes}, off);
}
// @end emu_race_access

/* Bytes checked since the program started. */
unsigned long long race_bytes_checked() { return race_checked; }

/* Forgets the shadow of a freed device allocation. */
static void forget_shadow(char *base)
{
    global_shadow.erase(base);
    if (cache_base == base) cache_base = nullptr;
}

}  // namespace cr_emu

unsigned __ballot_sync(unsigned mask, int pred)
{
    unsigned r = 0;
    uint64_t *slots = cr_emu::warp_slots();
    slots[cr_emu::lane_id()] = pred != 0;
    cr_emu::sync_warp(mask);
    for (int l = 0; l < 32; l++)
        if ((mask >> l) & 1) r |= (unsigned)(slots[l] & 1) << l;
    cr_emu::sync_warp(mask);
    return r;
}

unsigned __activemask()
{
    unsigned r = 0;
    const int w = cr_emu::warp_id();
    for (int l = 0; l < 32 && w * 32 + l < cr_emu::blk->nthreads; l++)
        if (cr_emu::blk->fibers[(size_t)(w * 32 + l)].state != cr_emu::DONE) r |= 1u << l;
    return r;
}

/* ---- the runtime API ---------------------------------------------------------------------------- */

using cr_emu::set_error;

cudaError_t cudaGetDeviceCount(int *count)
{
    if (!count) return set_error(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *dev)
{
    if (!dev) return set_error(cudaErrorInvalidValue);
    *dev = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    if (!p) return set_error(cudaErrorInvalidValue);
    if (dev != 0) return set_error(cudaErrorInvalidDevice);
    std::memset(p, 0, sizeof *p);
    std::snprintf(p->name, sizeof p->name, "cr_emu (CUDA emulator on the CPU)");
    p->totalGlobalMem = cr_emu::total_mem;
    p->sharedMemPerBlock = 48 * 1024;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
    p->major = 9;   /* it runs the sm_80+ kernels (WMMA with TF32 and BF16) */
    p->minor = 0;
    p->multiProcessorCount = 1;
    p->l2CacheSize = 1 << 20;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev)
{
    cudaDeviceProp p;
    if (!value) return set_error(cudaErrorInvalidValue);
    const cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) return e;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    default: return set_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) { if (!v) return set_error(cudaErrorInvalidValue); *v = 0; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int *v) { if (!v) return set_error(cudaErrorInvalidValue); *v = 0; return cudaSuccess; }

extern "C" const char *cr_emu_last_failure(void) { return cr_emu::last_failure.c_str(); }
extern "C" unsigned long long cr_emu_race_bytes_checked(void) { return cr_emu::race_bytes_checked(); }

cudaError_t cudaGetLastError(void)
{
    const cudaError_t e = cr_emu::last_error;
    cr_emu::last_error = cr_emu::sticky_error;   /* a sticky error stays */
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return cr_emu::last_error; }

/* CUDA's own messages (cudaGetErrorString of CUDA 13) for the codes the emulator uses. */
const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorUnknown: return "unknown error";
    }
    return "unrecognized error code";
}

const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    default: return "cudaError (emulated)";
    }
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    if (!p) return set_error(cudaErrorInvalidValue);
    *p = nullptr;
    if (cr_emu::sticky_error != cudaSuccess) return set_error(cr_emu::sticky_error);
    if (bytes > cr_emu::total_mem - cr_emu::used_mem) return set_error(cudaErrorMemoryAllocation);
    void *q = nullptr;
    if (posix_memalign(&q, 256, bytes ? bytes : 1) != 0) return set_error(cudaErrorMemoryAllocation);
    /* a GPU's fresh memory holds whatever was there; here NaN bytes, so that a kernel that
     * reads what nobody wrote shows it, and compare mode compares defined bytes only */
    std::memset(q, 0xff, bytes);
    cr_emu::allocations[static_cast<char *>(q)] = bytes;
    char *c = static_cast<char *>(q);
    if (!cr_emu::alloc_lo || c < cr_emu::alloc_lo) cr_emu::alloc_lo = c;
    if (c + bytes > cr_emu::alloc_hi) cr_emu::alloc_hi = c + bytes;
    cr_emu::used_mem += bytes;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p) return cudaSuccess;
    auto it = cr_emu::allocations.find(static_cast<char *>(p));
    if (it == cr_emu::allocations.end()) return set_error(cudaErrorInvalidDevicePointer);
    cr_emu::used_mem -= it->second;
    cr_emu::allocations.erase(it);
    cr_emu::forget_shadow(static_cast<char *>(p));
    std::free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    if (cr_emu::sticky_error != cudaSuccess) return set_error(cr_emu::sticky_error);
    if ((int)kind < 0 || (int)kind > 4) return set_error(cudaErrorInvalidMemcpyDirection);
    if (bytes && (!dst || !src)) return set_error(cudaErrorInvalidValue);
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t)
{
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemset(void *p, int value, size_t bytes)
{
    if (cr_emu::sticky_error != cudaSuccess) return set_error(cr_emu::sticky_error);
    if (bytes && !p) return set_error(cudaErrorInvalidValue);
    if (bytes) std::memset(p, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    if (!free_bytes || !total_bytes) return set_error(cudaErrorInvalidValue);
    *total_bytes = cr_emu::total_mem;
    *free_bytes = cr_emu::total_mem - cr_emu::used_mem;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return cr_emu::sticky_error != cudaSuccess ? set_error(cr_emu::sticky_error) : cudaSuccess; }
cudaError_t cudaDeviceReset(void)
{
    for (auto &a : cr_emu::allocations) { cr_emu::forget_shadow(a.first); std::free(a.first); }
    cr_emu::allocations.clear();
    cr_emu::used_mem = 0;
    cr_emu::sticky_error = cr_emu::last_error = cudaSuccess;
    return cudaSuccess;
}

struct CUstream_st { int unused; };
struct CUevent_st { double ms; bool recorded; };

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    if (!s) return set_error(cudaErrorInvalidValue);
    *s = new CUstream_st{0};
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete s; return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaDeviceSynchronize(); }

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    if (!e) return set_error(cudaErrorInvalidValue);
    *e = new CUevent_st{0.0, false};
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
/* Launches are synchronous in the emulator: an event is the host clock when recorded. */
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t)
{
    if (!e) return set_error(cudaErrorInvalidResourceHandle);
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    e->ms = (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
    e->recorded = true;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) { return e ? cudaDeviceSynchronize() : set_error(cudaErrorInvalidResourceHandle); }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!ms) return set_error(cudaErrorInvalidValue);
    if (!a || !b) return set_error(cudaErrorInvalidResourceHandle);
    if (!a->recorded || !b->recorded) return set_error(cudaErrorInvalidResourceHandle);
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}
