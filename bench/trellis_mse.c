/* trellis_mse.c — MSE of the bitshift trellis quantizer (src/trellis.c) on
 * unit-Gaussian values in 64-value vectors, against the Shannon bound 4^-R and
 * Lloyd-Max scalar quantization at the same rate, with encode/decode time.
 *
 *   mkdir -p build && cc -O2 -Isrc bench/trellis_mse.c src/trellis.c src/lloyd_max.c \
 *       -lm -o build/trellis_mse
 *   build/trellis_mse [L [VECTORS]]     (defaults: TRELLIS_L_DEFAULT, 1600)
 *
 * Rates 2, 2.5, 3, 3.5, 4 bits/value; a half rate codes the first 32 values of
 * a vector at the higher and the last 32 at the lower integer rate, for both
 * methods (the trellis as one sequence with per-step k); "interleaved" puts the
 * two rates on alternate values instead (Lloyd-Max's MSE is the same either
 * way, up to the sample). L other than the
 * default builds a code like trellis_default's (seed 1, 3 rounds on 512
 * vectors). "exact" is the exact tail-biting optimum (one Viterbi per start
 * state) on the first 32 vectors, against the two-pass encoder on the same
 * vectors. One thread; the machine's noise applies to the times. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lloyd_max.h"
#include "trellis.h"

#define D 64

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double rng_normal(uint64_t *s) { /* Box-Muller on a 64-bit LCG */
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    const double u = (double)(*s >> 11) / 9007199254740992.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    const double v = ((double)(*s >> 11) + 1.0) / 9007199254740993.0;
    return sqrt(-2.0 * log(v)) * cos(6.283185307179586 * u);
}

static float lloyd(float x, int bits) {
    const lloyd_max_codebook *cb = lloyd_max_table(bits);
    int i = 0;
    while (i < cb->k - 1 && x >= cb->thresholds[i]) i++;
    return cb->levels[i];
}

int main(int argc, char **argv) {
    const int L = argc > 1 ? atoi(argv[1]) : TRELLIS_L_DEFAULT;
    const int nv = argc > 2 ? atoi(argv[2]) : 1600;
    const int nexact = nv < 32 ? nv : 32;
    trellis_code own;
    const trellis_code *tc;
    double t0 = now();
    if (L == TRELLIS_L_DEFAULT) {
        tc = trellis_default();
    } else {
        tc = trellis_code_init(&own, L, 1, 3, 512) == 0 ? &own : NULL;
    }
    if (!tc || nv < 1) {
        fprintf(stderr, "trellis_mse: bad L (%d..%d) or VECTORS, or out of memory\n", TRELLIS_L_MIN,
                TRELLIS_L_MAX);
        return 1;
    }
    printf("trellis L=%d (%s), %d vectors of %d N(0,1) values per rate, code built in %.2f s\n\n", L,
           trellis_simd(-1) ? "AVX2 step" : "scalar step", nv, D, now() - t0);
    float *X = malloc(sizeof(float) * (size_t)nv * D), *Y = malloc(sizeof(float) * (size_t)nv * D);
    uint8_t *bits = malloc((size_t)nv * D / 2);
    void *work = malloc(trellis_work_size(L, D));
    if (!X || !Y || !bits || !work) return 1;
    uint64_t s = 42;
    for (int i = 0; i < nv * D; i++) X[i] = (float)rng_normal(&s);

    printf("| rate | trellis MSE | / 4^-R | Lloyd-Max MSE | / 4^-R | exact tail-biting / two-pass (%d vec) | encode us/vec | decode ns/vec |\n",
           nexact);
    printf("|---|---|---|---|---|---|---|---|\n");
    static const double rates[] = {2, 2.5, 2.5, 3, 3.5, 3.5, 4};
    static const int interleave[] = {0, 0, 1, 0, 0, 1, 0};
    for (int r = 0; r < 7; r++) {
        const int hi = (int)ceil(rates[r]), lo = (int)floor(rates[r]);
        uint8_t k[D];
        for (int i = 0; i < D; i++) k[i] = (uint8_t)(interleave[r] ? (i % 2 ? lo : hi) : (i < D / 2 ? hi : lo));
        const int bytes = (trellis_bits(k, D) + 7) / 8;
        t0 = now();
        for (int v = 0; v < nv; v++)
            if (trellis_encode(tc, X + (size_t)v * D, D, k, bits + (size_t)v * bytes, NULL, work)) return 1;
        const double tenc = (now() - t0) / nv;
        const int reps = 20;
        t0 = now();
        for (int rep = 0; rep < reps; rep++)
            for (int v = 0; v < nv; v++) trellis_decode(tc, bits + (size_t)v * bytes, D, k, Y + (size_t)v * D);
        const double tdec = (now() - t0) / ((double)nv * reps);
        double et = 0, el = 0;
        for (int i = 0; i < nv * D; i++) {
            et += ((double)X[i] - Y[i]) * ((double)X[i] - Y[i]);
            const double q = lloyd(X[i], k[i % D]);
            el += ((double)X[i] - q) * ((double)X[i] - q);
        }
        double ex = 0, e2 = 0;
        for (int v = 0; v < nexact; v++) {
            float y[D];
            uint8_t b[D];
            trellis_encode_exact(tc, X + (size_t)v * D, D, k, b, y, work);
            for (int i = 0; i < D; i++) {
                const double d = (double)X[(size_t)v * D + i] - y[i], d2 = (double)X[(size_t)v * D + i] - Y[(size_t)v * D + i];
                ex += d * d;
                e2 += d2 * d2;
            }
        }
        const double bound = pow(4.0, -rates[r]);
        et /= (double)nv * D;
        el /= (double)nv * D;
        printf("| %.1f%s | %.5f | %.3f | %.5f | %.3f | %.4f | %.1f | %.0f |\n", rates[r],
               hi == lo ? "" : interleave[r] ? " interleaved" : " halves", et, et / bound, el,
               el / bound, ex / e2, 1e6 * tenc, 1e9 * tdec);
    }
    if (tc == &own) trellis_code_free(&own);
    free(X);
    free(Y);
    free(bits);
    free(work);
    return 0;
}
