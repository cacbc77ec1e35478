/* threadpool.h — a persistent pool of worker threads. threadpool_run calls
 * fn(arg, ith, nth) once on each of nth threads (the caller is thread 0) and
 * returns when all have finished. Work is split by the callee using ith/nth. */
#ifndef ROTKV_THREADPOOL_H
#define ROTKV_THREADPOOL_H

typedef struct threadpool threadpool;
typedef void (*threadpool_fn)(void *arg, int ith, int nth);

/* n_threads >= 1; returns NULL on failure. */
threadpool *threadpool_create(int n_threads);
void threadpool_free(threadpool *tp);
int threadpool_size(const threadpool *tp);
void threadpool_run(threadpool *tp, threadpool_fn fn, void *arg);
/* Number of physical cores (falls back to online CPUs). */
int threadpool_physical_cores(void);

#endif
