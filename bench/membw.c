/* membw.c — peak read bandwidth of this machine, the yardstick for decode
 * (which streams the weights and the KV cache once per token).
 * Build & run: cc -O2 -mavx2 -pthread bench/membw.c -o /tmp/membw && /tmp/membw [threads] [MiB]
 * Prints the best of 5 passes of a streaming sum over a buffer much larger
 * than the caches, in GB/s (1e9 bytes/s). */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const float *p;
    size_t n;
    float sum;
} job;

static void *reader(void *arg) {
    job *j = arg;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 32 <= j->n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_load_ps(j->p + i));
        a1 = _mm256_add_ps(a1, _mm256_load_ps(j->p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_load_ps(j->p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_load_ps(j->p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    j->sum = t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
    return NULL;
}

int main(int argc, char **argv) {
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 1024;
    if (nth < 1 || nth > 64 || mib < 64) return 2;
    size_t n = mib * 1048576 / sizeof(float);
    float *buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) return 1;
    memset(buf, 1, n * sizeof(float));
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        pthread_t th[64];
        job jobs[64];
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < nth; i++) {
            jobs[i].p = buf + n / nth * i;
            jobs[i].n = n / nth;
            pthread_create(&th[i], NULL, reader, &jobs[i]);
        }
        for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
        const double gbs = n * sizeof(float) / s / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("%.2f\n", best);
    free(buf);
    return 0;
}
