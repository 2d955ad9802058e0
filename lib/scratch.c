/* scratch.c — the pool of scratch.h: a few slots under one mutex. */
#include "scratch.h"

#include <pthread.h>

#include "tensor.h"

#define POOL_SLOTS 16

static struct {
    void *p;
    size_t cap;
} pool[POOL_SLOTS];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

void *cr_scratch_get(size_t bytes, size_t *cap)
{
    void *spare = NULL;
    int best = -1;
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SLOTS; i++)
        if (pool[i].p && pool[i].cap >= bytes && (best < 0 || pool[i].cap < pool[best].cap)) best = i;
    if (best < 0)   /* none fits: a kept one (too small) makes room */
        for (int i = 0; i < POOL_SLOTS && !spare; i++)
            if (pool[i].p) {
                spare = pool[i].p;
                pool[i].p = NULL;
            }
    void *got = best >= 0 ? pool[best].p : NULL;
    if (best >= 0) {
        *cap = pool[best].cap;
        pool[best].p = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    cr_aligned_free(spare);
    if (!got) {
        got = cr_aligned_alloc(bytes ? bytes : 1);
        *cap = bytes ? bytes : 1;
    }
    return got;
}

void cr_scratch_put(void *p, size_t cap)
{
    if (!p) return;
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SLOTS && p; i++)
        if (!pool[i].p) {
            pool[i].p = p;
            pool[i].cap = cap;
            p = NULL;
        }
    pthread_mutex_unlock(&pool_lock);
    cr_aligned_free(p);   /* the pool is full */
}

void cr_scratch_release(void)
{
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SLOTS; i++) {
        cr_aligned_free(pool[i].p);
        pool[i].p = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
}

size_t cr_scratch_kept_bytes(void)
{
    size_t n = 0;
    pthread_mutex_lock(&pool_lock);
    for (int i = 0; i < POOL_SLOTS; i++)
        if (pool[i].p) n += pool[i].cap;
    pthread_mutex_unlock(&pool_lock);
    return n;
}
