/* threadpool.c — generation-counted fork/join pool. A run bumps the
 * generation; workers notice it by spinning on the counter for a while
 * (THREADPOOL_SPIN pause instructions, ~0.3 ms) and only then sleep on a
 * condvar, and the caller waits for the last worker the same way. A token of
 * generation starts ~150 runs (each matmul, each layer's attention): waking a
 * sleeping thread through the kernel for each cost ~5% of the tokens/s. Idle
 * pools (a server between requests) still sleep. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef THREADPOOL_SPIN
#define THREADPOOL_SPIN 8192
#endif

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

typedef struct {
    threadpool *tp;
    int ith;
} worker_arg;

struct threadpool {
    int n;
    pthread_t *threads;
    worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    atomic_ulong generation; /* bumped (under mu) by each run after fn/arg are set */
    atomic_int pending;      /* workers still running the current generation */
    atomic_int quit;
    threadpool_fn fn;
    void *arg;
};

static void *worker_main(void *p) {
    worker_arg *wa = p;
    threadpool *tp = wa->tp;
    unsigned long seen = 0;
    for (;;) {
        for (int i = 0; i < THREADPOOL_SPIN && atomic_load_explicit(&tp->generation, memory_order_acquire) == seen &&
                        !atomic_load_explicit(&tp->quit, memory_order_relaxed);
             i++)
            cpu_relax();
        if (atomic_load_explicit(&tp->generation, memory_order_acquire) == seen) {
            pthread_mutex_lock(&tp->mu);
            while (atomic_load(&tp->generation) == seen && !atomic_load(&tp->quit)) pthread_cond_wait(&tp->start, &tp->mu);
            pthread_mutex_unlock(&tp->mu);
        }
        if (atomic_load(&tp->quit)) return NULL;
        seen = atomic_load_explicit(&tp->generation, memory_order_acquire);
        tp->fn(tp->arg, wa->ith, tp->n);
        if (atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&tp->mu); /* the caller may be (about to be) asleep on done */
            pthread_cond_signal(&tp->done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
}

threadpool *threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->start, NULL);
    pthread_cond_init(&tp->done, NULL);
    atomic_init(&tp->generation, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->quit, 0);
    tp->threads = calloc((size_t)n_threads, sizeof *tp->threads);
    tp->args = calloc((size_t)n_threads, sizeof *tp->args);
    if (!tp->threads || !tp->args) {
        free(tp->threads);
        free(tp->args);
        free(tp);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        tp->args[i].tp = tp;
        tp->args[i].ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker_main, &tp->args[i]) != 0) {
            tp->n = i; /* run with the threads we got */
            break;
        }
    }
    return tp;
}

void threadpool_free(threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->quit, 1);
    pthread_cond_broadcast(&tp->start);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->start);
    pthread_cond_destroy(&tp->done);
    free(tp->threads);
    free(tp->args);
    free(tp);
}

int threadpool_size(const threadpool *tp) { return tp ? tp->n : 1; }

void threadpool_run(threadpool *tp, threadpool_fn fn, void *arg) {
    if (!tp || tp->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    /* no worker reads fn/arg now: the previous run's have all finished it */
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->pending, tp->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add_explicit(&tp->generation, 1, memory_order_release);
    pthread_cond_broadcast(&tp->start); /* no system call when nobody sleeps */
    pthread_mutex_unlock(&tp->mu);
    fn(arg, 0, tp->n);
    for (int i = 0; i < THREADPOOL_SPIN && atomic_load_explicit(&tp->pending, memory_order_acquire) > 0; i++) cpu_relax();
    if (atomic_load_explicit(&tp->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&tp->mu);
        while (atomic_load(&tp->pending) > 0) pthread_cond_wait(&tp->done, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
    }
}

int threadpool_physical_cores(void) {
    /* count distinct (physical id, core id) pairs in /proc/cpuinfo */
    FILE *fp = fopen("/proc/cpuinfo", "r");
    int n = 0;
    if (fp) {
        char line[256];
        int phys = 0, seen[1024][2], ns = 0;
        while (fgets(line, sizeof line, fp)) {
            int v;
            if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
            else if (sscanf(line, "core id : %d", &v) == 1) {
                int dup = 0;
                for (int i = 0; i < ns; i++)
                    if (seen[i][0] == phys && seen[i][1] == v) dup = 1;
                if (!dup && ns < 1024) {
                    seen[ns][0] = phys;
                    seen[ns][1] = v;
                    ns++;
                }
            }
        }
        fclose(fp);
        n = ns;
    }
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    return n;
}
