/* kvt_levels.c — nanoseconds per kt* row decoded into raw codebook levels, the
 * inner work of attention over a kt* cache (docs/performance.md, "Attention at
 * depth"). Fits one head_dim-64 transform to 4096 Gaussian vectors, encodes
 * them, and decodes all rows 200 times, one row per call (kvt_levels) and 32
 * rows per call (kvt_levels_rows, what attention uses).
 *
 *   make && cc -O2 -std=c11 -D_DEFAULT_SOURCE -Isrc -Iinclude bench/kvt_levels.c \
 *       build/librotkv.a -lm -lpthread -o build/kvt_levels
 *   build/kvt_levels [BITS [iso|decay]]        (defaults: 3.5 decay)
 *
 * "iso": coordinate variances nearly equal (the allocation is 3- and 4-bit
 * groups only); "decay": standard deviations falling as exp(-0.05 i) (5- and 6-bit and
 * mixed-width groups too, as skewed real heads give). One thread; the
 * machine's noise applies, so compare runs made side by side. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_transform.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    const int hd = 64, n = 4096, reps = 200, block = 32;
    const double bits = argc > 1 ? atof(argv[1]) : 3.5;
    const int iso = argc > 2 && !strcmp(argv[2], "iso");
    if (!(bits >= 1.0 && bits <= 8.0)) {
        fprintf(stderr, "kvt_levels: BITS must be in [1, 8]\n");
        return 2;
    }
    float *X = malloc(sizeof(float) * (size_t)n * hd);
    uint64_t s = 1;
    for (int i = 0; i < n * hd; i++) { /* Box-Muller on a 64-bit LCG */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const double u = (double)(s >> 11) / 9007199254740992.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        const double v = ((double)(s >> 11) + 1.0) / 9007199254740993.0;
        const int c = i % hd;
        const double sd = iso ? (c < 8 ? 1.3 : 1.0) : exp(-0.05 * c);
        X[i] = (float)(sd * sqrt(-2.0 * log(v)) * cos(6.283185307179586 * u));
    }
    kvt_head h;
    if (kvt_fit(&h, hd, X, n, NULL, (int)lround(bits * hd) - 8) != 0) {
        fprintf(stderr, "kvt_levels: out of memory\n");
        return 1;
    }
    uint8_t *R = malloc(h.row_bytes * (size_t)n);
    const uint8_t **rows = malloc(sizeof(*rows) * (size_t)n);
    for (int i = 0; i < n; i++) {
        kvt_encode(&h, X + (size_t)i * hd, R + (size_t)i * h.row_bytes);
        rows[i] = R + (size_t)i * h.row_bytes;
    }
    float *y = malloc(sizeof(float) * (size_t)block * hd), sc[32];
    double check = 0;
    double t0 = now();
    for (int rep = 0; rep < reps; rep++)
        for (int i = 0; i < n; i++) check += kvt_levels(&h, rows[i], y + (size_t)(i % block) * hd);
    const double one = (now() - t0) / ((double)reps * n) * 1e9;
    t0 = now();
    for (int rep = 0; rep < reps; rep++)
        for (int i = 0; i < n; i += block) {
            kvt_levels_rows(&h, rows + i, 0, block, y, sc);
            check += sc[0] + y[hd];
        }
    const double many = (now() - t0) / ((double)reps * n) * 1e9;
    printf("kt%.1f head_dim %d (%s, %zu bytes/row): kvt_levels %.2f ns/row, kvt_levels_rows(%d) %.2f ns/row  [%g]\n",
           bits, hd, iso ? "iso" : "decay", h.row_bytes, one, block, many, check);
    kvt_free(&h);
    free(X);
    free(R);
    free(rows);
    free(y);
    return 0;
}
