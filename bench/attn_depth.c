/* attn_depth.c — nanoseconds of decode attention per cached (position, KV
 * head), the inner cost of generation at depth (docs/performance.md,
 * "Attention at depth"), without filling a model's cache first. One layer of
 * the Llama-3.2-1B shape by default (32 query heads, 8 KV heads, head_dim 64),
 * DEPTH positions of random K/V with decaying per-coordinate variances (so
 * the kt* fit has structure to use), one query token attending over all of
 * them, repeated.
 *
 *   make && cc -O2 -std=c11 -D_DEFAULT_SOURCE -Isrc -Iinclude bench/attn_depth.c \
 *       build/librotkv.a -lpcre2-8 -lm -lpthread -o build/attn_depth
 *   build/attn_depth [-C] [-d DEPTH] [-t THREADS] [-r REPS] [-H N_HEAD,N_HEAD_KV,HEAD_DIM] TYPE [TYPE..]
 *
 * -C: time with the process's CPU clock (use with -t 1 on a busy machine).
 * -L LAYERS: that many layers, each attended once per repetition (as a token
 * does), so that the cache is as large as a model's and comes from DRAM.
 *
 * Prints, per type, ns per (position, KV head) for K and V together on the
 * threads given, and what that costs per generated token at 16 layers. The
 * numbers are for comparing kernels side by side in one run; the
 * end-to-end figures come from `rotkv bench -d`, over caches the model filled. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "kv_cache.h"
#include "threadpool.h"

/* -C: the process's CPU time instead of wall time; with -t 1 it leaves out the
 * time other jobs of a shared machine hold the core (their cache and memory
 * traffic still count) */
static clockid_t g_clock = CLOCK_MONOTONIC;

static double now(void) {
    struct timespec t;
    clock_gettime(g_clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t g_rng = 12345;
static float randn(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    const double u = (double)(g_rng >> 11) / 9007199254740992.0;
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    const double v = ((double)(g_rng >> 11) + 1.0) / 9007199254740993.0;
    return (float)(sqrt(-2.0 * log(v)) * cos(6.283185307179586 * u));
}

int main(int argc, char **argv) {
    int depth = 16384, nth = 1, reps = 20, n_head = 32, n_head_kv = 8, hd = 64, n_layer = 1, a = 1;
    for (; a < argc && argv[a][0] == '-'; a += 2) {
        if (!strcmp(argv[a], "-C")) {
            g_clock = CLOCK_PROCESS_CPUTIME_ID;
            a--;
            continue;
        }
        if (a + 1 >= argc) break;
        if (!strcmp(argv[a], "-d")) depth = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-t")) nth = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-r")) reps = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-L")) n_layer = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "-H")) {
            if (sscanf(argv[a + 1], "%d,%d,%d", &n_head, &n_head_kv, &hd) != 3) break;
        } else break;
    }
    if (a >= argc || depth < 1 || nth < 1 || reps < 1 || n_layer < 1 || n_head_kv < 1 || n_head % n_head_kv || hd < 1) {
        fprintf(stderr, "usage: attn_depth [-C] [-d DEPTH] [-t THREADS] [-r REPS] [-L LAYERS] [-H N_HEAD,N_HEAD_KV,HEAD_DIM] TYPE..\n");
        return 2;
    }
    const int row = n_head_kv * hd;
    float *K = malloc(sizeof(float) * (size_t)depth * row), *V = malloc(sizeof(float) * (size_t)depth * row);
    float *Q = malloc(sizeof(float) * (size_t)depth * n_head * hd);
    if (!K || !V || !Q) return 1;
    for (int t = 0; t < depth; t++)
        for (int i = 0; i < row; i++) {
            const float sc = 0.3f + 2.0f * expf(-0.05f * (float)(i % hd));
            K[(size_t)t * row + i] = sc * randn() + 0.5f;
            V[(size_t)t * row + i] = sc * randn() - 0.2f;
        }
    for (size_t i = 0; i < (size_t)depth * n_head * hd; i++) Q[i] = 0.7f * randn();
    threadpool *tp = nth > 1 ? threadpool_create(nth) : NULL;
    for (; a < argc; a++) {
        const int ty = rotkv_kv_type_from_name(argv[a]);
        if (ty < 0) {
            fprintf(stderr, "attn_depth: unknown type %s\n", argv[a]);
            return 2;
        }
        kv_cache_params p = {(uint32_t)n_layer, (uint32_t)n_head_kv, (uint32_t)hd, (uint32_t)depth, 1, (rotkv_kv_type)ty,
                             (rotkv_kv_type)ty, NULL, NULL, 0, 0, 0, false, NULL};
        rotkv_error err;
        kv_cache *kv = kv_cache_create(&p, &err);
        if (!kv || kv_cache_reserve(kv, 0, (uint32_t)depth, &err) != ROTKV_OK) {
            fprintf(stderr, "attn_depth: %s: %s\n", argv[a], err.msg);
            return 1;
        }
        const int ncal = depth < 1024 ? depth : 1024;
        for (int L = 0; L < n_layer; L++) {
            if (kv_cache_needs_calibration(kv, (uint32_t)L) &&
                kv_cache_calibrate(kv, (uint32_t)L, K, ncal, V, ncal, Q, ncal, n_head, NULL, &err) != ROTKV_OK) {
                fprintf(stderr, "attn_depth: %s: %s\n", argv[a], err.msg);
                return 1;
            }
            for (int t = 0; t < depth; t++)
                kv_cache_store(kv, 0, (uint32_t)L, (uint32_t)t, K + (size_t)t * row, V + (size_t)t * row);
        }
        int32_t seq = 0, pos = depth - 1;
        float *O = malloc(sizeof(float) * (size_t)n_head * hd);
        float *scr = malloc(sizeof(float) * attention_scratch_floats(n_head, n_head_kv, hd) * (size_t)nth);
        attention_args args = {kv, 0, 1, &seq, &pos, n_head, n_head_kv, hd, 1.0f / sqrtf((float)hd),
                               Q + (size_t)pos * n_head * hd, O, scr, 0, 0, 0.0f, NULL};
        for (int L = 0; L < n_layer; L++) { /* warm-up */
            args.layer = (uint32_t)L;
            attention_batch(tp, &args);
        }
        double best = 1e30, sum = 0;
        for (int r = 0; r < reps; r++) {
            const double t0 = now();
            for (int L = 0; L < n_layer; L++) { /* every layer once, as a token does */
                args.layer = (uint32_t)L;
                attention_batch(tp, &args);
            }
            const double dt = (now() - t0) / n_layer;
            sum += dt;
            if (dt < best) best = dt;
        }
        const double per = best / ((double)depth * n_head_kv) * 1e9;
        const double bytes = (double)depth * (kv_cache_layout_k(kv, 0)->row_bytes + kv_cache_layout_v(kv, 0)->row_bytes);
        printf("%-8s depth %6d  heads %d/%d hd %3d  %d thr: %6.2f ns per (position, KV head)  (mean %6.2f)  "
               "%6.1f ms/token at 16 layers  %5.1f GB/s  [%g]\n",
               argv[a], depth, n_head, n_head_kv, hd, nth, per, sum / reps / ((double)depth * n_head_kv) * 1e9,
               best * 16e3, bytes / best * 1e-9, (double)O[0]);
        free(O);
        free(scr);
        kv_cache_free(kv);
    }
    threadpool_free(tp);
    free(K);
    free(V);
    free(Q);
    return 0;
}
