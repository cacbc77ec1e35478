/* matmul.c — throughput of one weight matrix times a batch of tokens through
 * the engine's matmul (src/ops.c), with the kernels the CPU selects (capped by
 * ROTKV_ISA) and the weights repacked as the model loader repacks them: the
 * inner loop of prefill (-n 512) and of decode (-n 1), without loading a model.
 *
 *   make && cc -O2 -std=c11 -D_DEFAULT_SOURCE -Isrc -Iinclude bench/matmul.c \
 *       build/librotkv.a -lpcre2-8 -lm -lpthread -o build/matmul
 *   build/matmul [-C] [-t THREADS] [-n TOKENS] [-r REPS] [-s COLS,ROWS] TYPE [TYPE..]
 *
 * TYPE is a ggml type name (q4_0, q8_0, q4_K, q6_K, iq4_nl, f16, ...). The
 * weight bytes are random, with every f16 scale of a block set to a small
 * normal value, so the timing sees the kernels' real work. -C times with the
 * process's CPU clock (with -t 1 on a busy machine it leaves out the time
 * other jobs hold the core). Prints, per type, the median over REPS of the
 * time per call, the multiply-adds per second and the weight bytes per second.
 * For comparing kernels side by side in one run; end-to-end figures come from
 * `rotkv bench`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fp16.h"
#include "model.h"
#include "ops.h"
#include "quant.h"
#include "quant_blocks.h"
#include "cpu.h"
#include "threadpool.h"

static clockid_t g_clock = CLOCK_MONOTONIC;

static double now(void) {
    struct timespec t;
    clock_gettime(g_clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t g_rng = 12345;
static uint32_t rnd(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33);
}

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint32_t type_by_name(const char *s) {
    for (uint32_t t = 0; t < 64; t++) {
        const quant_traits *tr = quant_get_traits(t);
        if (tr && tr->supported && !strcmp(tr->name, s)) return t;
    }
    return UINT32_MAX;
}

/* Random weight bytes whose f16 fields are sane: every 2-byte field of the
 * formats that hold scales (the block's first bytes for the 32-value types and
 * q4_K/q5_K, the last 2 for q6_K) gets 1/64. */
static void fill_weights(uint32_t type, uint8_t *w, size_t bytes, size_t bsz) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    const uint16_t h = fp32_to_fp16(1.0f / 64.0f);
    const quant_traits *tr = quant_get_traits(type);
    if (type == GGML_TYPE_F16) {
        for (size_t i = 0; i + 2 <= bytes; i += 2) {
            const uint16_t v = fp32_to_fp16(((float)(rnd() % 2001) - 1000.0f) / 1000.0f);
            memcpy(w + i, &v, 2);
        }
        return;
    }
    if (type == GGML_TYPE_F32 || type == GGML_TYPE_BF16) {
        for (size_t i = 0; i + 4 <= bytes; i += 4) {
            const float v = ((float)(rnd() % 2001) - 1000.0f) / 1000.0f;
            if (type == GGML_TYPE_F32) memcpy(w + i, &v, 4);
            else {
                uint32_t u;
                memcpy(&u, &v, 4);
                const uint16_t b0 = (uint16_t)(u >> 16);
                memcpy(w + i, &b0, 2);
                memcpy(w + i + 2, &b0, 2);
            }
        }
        return;
    }
    for (size_t b = 0; b + bsz <= bytes; b += bsz) {
        if (type == GGML_TYPE_Q6_K) memcpy(w + b + bsz - 2, &h, 2);
        else {
            memcpy(w + b, &h, 2);
            if (tr->blck_size == QK_K || type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1) memcpy(w + b + 2, &h, 2);
        }
    }
}

int main(int argc, char **argv) {
    int nth = 1, ntok = 512, reps = 5, a = 1;
    long cols = 2048, rows = 8192;
    for (; a < argc && argv[a][0] == '-'; a += 2) {
        if (!strcmp(argv[a], "-C")) {
            g_clock = CLOCK_PROCESS_CPUTIME_ID;
            a--;
            continue;
        }
        if (a + 1 >= argc) break;
        if (!strcmp(argv[a], "-t")) nth = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-n")) ntok = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-r")) reps = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-s")) {
            if (sscanf(argv[a + 1], "%ld,%ld", &cols, &rows) != 2) break;
        } else break;
    }
    if (a >= argc || nth < 1 || ntok < 1 || reps < 1 || cols < 256 || rows < 1 || cols % 256) {
        fprintf(stderr, "usage: matmul [-C] [-t THREADS] [-n TOKENS] [-r REPS] [-s COLS,ROWS] TYPE [TYPE..]\n"
                        "  COLS a multiple of 256; TYPE a ggml type name (q4_0, q4_K, q6_K, q8_0, f16, ...)\n");
        return 2;
    }
    threadpool *tp = threadpool_create(nth);
    float *X = malloc(sizeof(float) * (size_t)cols * (size_t)ntok);
    float *Y = malloc(sizeof(float) * (size_t)rows * (size_t)ntok);
    void *scratch = malloc(matmul_scratch_bytes(nth, cols, ntok));
    double *ts = malloc(sizeof(double) * (size_t)reps);
    if (!tp || !X || !Y || !scratch || !ts) {
        fprintf(stderr, "matmul: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)cols * (size_t)ntok; i++) X[i] = ((float)(rnd() % 2001) - 1000.0f) / 1000.0f;
    printf("isa %s, %d thread(s), %ld x %ld weights, %d tokens, %s clock\n", cpu_isa_name(quant_active_isa()),
           nth, rows, cols, ntok, g_clock == CLOCK_MONOTONIC ? "wall" : "process CPU");
    printf("| type | repacked | ms per call (median of %d) | GMAC/s | weight GB/s |\n|---|---|---|---|---|\n", reps);
    for (; a < argc; a++) {
        const uint32_t type = type_by_name(argv[a]);
        const quant_traits *tr = type == UINT32_MAX ? NULL : quant_get_traits(type);
        if (!tr || !quant_kernels_of(type)) {
            fprintf(stderr, "matmul: unknown type or no kernels: %s\n", argv[a]);
            return 2;
        }
        const size_t rb = (size_t)cols / (size_t)tr->blck_size * tr->type_size;
        uint8_t *wd = malloc(rb * (size_t)rows);
        if (!wd) return 1;
        fill_weights(type, wd, rb * (size_t)rows, tr->type_size);
        weight w = {.data = wd, .type = type, .ne0 = cols, .ne1 = rows, .row_bytes = rb};
        uint64_t extra = 0;
        const bool rp = weight_repack(&w, &extra);
        matmul(tp, &w, X, ntok, Y, scratch); /* warm-up */
        for (int r = 0; r < reps; r++) {
            const double t0 = now();
            matmul(tp, &w, X, ntok, Y, scratch);
            ts[r] = now() - t0;
        }
        qsort(ts, (size_t)reps, sizeof *ts, cmp_d);
        const double t = ts[reps / 2];
        printf("| %s | %s | %.3f | %.1f | %.2f |\n", tr->name, rp ? "yes" : "no", 1e3 * t,
               (double)rows * (double)cols * ntok / t * 1e-9, (double)rb * (double)rows / t * 1e-9);
        fflush(stdout);
        free(w.repacked);
        free(wd);
    }
    free(ts);
    free(scratch);
    free(Y);
    free(X);
    threadpool_free(tp);
    return 0;
}
