/* ops.c — the layer math: matrix multiplication against weights of any file
 * type, RMSNorm, RoPE, SwiGLU, softmax.
 *
 * Each elementwise op has a scalar reference and, where it matters, an AVX2
 * twin (compiled with a target attribute, chosen once by cpu.h's detection).
 * The matmul uses the kernels of quant.h's traits table, which are selected
 * the same way. */
#include "ops.h"

#include <math.h>

#include "fp16.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "quant.h"
#include "quant_blocks.h"
#include "arch/ops_arch.h"
#include "rotation.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define OPS_X86 1
#endif

/* ------------------------------------------------------------ ISA choice */

/* The layer ops of each level (arch/ops_arch.h): the active level's row, or
 * the highest one below it that this build has, chosen once. */
const ops_kernels ops_kernels_scalar = {.rmsnorm = rmsnorm_ref, .swiglu = swiglu_ref, .fwht = fwht_ref};
static const ops_kernels *g_ops;
static pthread_once_t g_ops_once = PTHREAD_ONCE_INIT;

static void ops_select(void) {
    for (int isa = (int)cpu_isa_active(); isa >= 0 && !g_ops; isa--) g_ops = ops_kernels_at((cpu_isa)isa);
    if (!g_ops) g_ops = &ops_kernels_scalar;
}

const ops_kernels *ops_kernels_of(void) {
    pthread_once(&g_ops_once, ops_select);
    return g_ops;
}

const ops_kernels *ops_kernels_at(cpu_isa isa) {
    if (!cpu_isa_supported(isa)) return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return &ops_kernels_scalar;
    case CPU_ISA_AVX2: return ops_kernels_avx2.rmsnorm ? &ops_kernels_avx2 : NULL;
    case CPU_ISA_NEON: return ops_kernels_neon.rmsnorm ? &ops_kernels_neon : NULL;
    default: return NULL; /* the wider levels use the AVX2 (NEON) row */
    }
}

/* ---------------------------------------------------------------- RMSNorm */

void rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}


void rmsnorm(float *out, const float *x, const float *w, int n, float eps) { ops_kernels_of()->rmsnorm(out, x, w, n, eps); }

/* ----------------------------------------------------------------- matmul */

/* Bytes of weights a thread keeps hot (L2) while it runs through all tokens:
 * rows are processed in chunks of about this size, so each weight byte comes
 * from memory once per matmul while the activations come from L2/L3. */
#define MATMUL_ROW_CHUNK_BYTES (128 * 1024)
/* Products of at most this many multiply-adds run on the calling thread. */
#define MATMUL_SERIAL_MACS (256.0 * 1024)

/* Packed path (quant.h), used from the type's pack_min_tokens on: each
 * thread packs about this many bytes of rows at a time (at least one group). */
#define MATMUL_PACK_CHUNK_BYTES (128 * 1024)

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Bytes of one thread's packing buffer for rows of cols values of a type. */
static size_t pack_stride(const quant_kernels *k, int64_t cols) {
    const size_t g = k->pack_bytes(cols);
    return align64(g > MATMUL_PACK_CHUNK_BYTES ? g : MATMUL_PACK_CHUNK_BYTES);
}

/* Scratch layout: the activations (n_tok rows of the vec_dot_type, shared),
 * then one packing buffer per thread. */
size_t matmul_scratch_bytes(int nth, int64_t max_cols, int max_tokens) {
    if (max_cols < 0 || max_tokens < 0) return 0;
    const int64_t cols = (max_cols + 255) / 256 * 256; /* any block size divides it */
    size_t row = 0, pack = 0;
    for (uint32_t t = 0; t < GGML_TYPE_COUNT; t++) {
        const quant_kernels *k = quant_kernels_of(t);
        if (!k || !quant_get_traits(t)) continue;
        if (k->from_float && t != GGML_TYPE_F32 && quant_row_size(t, cols) > row) row = quant_row_size(t, cols);
        if (k->pack_rows && pack_stride(k, cols) > pack) pack = pack_stride(k, cols);
    }
    const size_t toks = (size_t)(max_tokens > 0 ? max_tokens : 1);
    /* + the activation block sums of repacked kernels, (tokens, cols / 32) int32 */
    return align64(row * toks) + (size_t)(nth > 0 ? nth : 1) * pack + align64(toks * (size_t)(cols / 32) * 4) + 64;
}

typedef struct {
    const weight *W;
    const quant_kernels *k;  /* the weight type's kernels */
    const float *X;
    int n_tok;
    float *Y;
    const quant_traits *at;  /* activation type, NULL when X is used as is (f32) */
    quantize_row_fn act_from_float; /* its quantizer */
    int32_t *asum;           /* (n_tok, cols / 32) q8_0 block code sums for repacked kernels, or NULL */
    uint8_t *act;            /* (n_tok, act_row) activations for the dot products */
    size_t act_row;
    uint8_t *pack;           /* packing buffers, pack_stride bytes per thread, or NULL */
    size_t pack_stride;
    atomic_int quantized;    /* threads done quantizing their share */
    atomic_llong next_row;   /* decode: the first row of the next unclaimed chunk */
} matmul_job;

/* All nth threads of the run wait here until every one has arrived. */
static void matmul_barrier(atomic_int *count, int nth) {
    atomic_fetch_add_explicit(count, 1, memory_order_acq_rel);
    for (int spins = 0; atomic_load_explicit(count, memory_order_acquire) < nth; spins++) {
        if (spins < 4096) {
#ifdef OPS_X86
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield(); /* oversubscribed: let the others run */
        }
    }
}

/* Group g of a repacked matrix against tokens [t, t + nt): outputs straight
 * into Y, or, for a last group that the padding rows fill up, through a
 * buffer from which only the real rows are copied. */
static void repacked_group(const matmul_job *j, int64_t g, int t, int nt) {
    const weight *W = j->W;
    const int R = j->k->repack_rows;
    const int64_t rows = W->ne1, r = g * R;
    const uint8_t *grp = (const uint8_t *)W->repacked + (size_t)g * j->k->repack_group_bytes(W->ne0);
    const uint8_t *a = j->act + (size_t)t * j->act_row;
    const size_t nb = (size_t)(W->ne0 / 32);
    const int32_t *as = j->asum ? j->asum + (size_t)t * nb : NULL;
    const size_t ys = j->n_tok == 1 ? 0 : (size_t)rows;
    if (r + R <= rows) {
        j->k->gemm_repacked(W->ne0, grp, nt, a, j->act_row, as, j->Y + (size_t)t * rows + r, ys);
        return;
    }
    float tmp[4 * 64];
    for (int t0 = 0; t0 < nt; t0 += 4) {
        const int n4 = nt - t0 < 4 ? nt - t0 : 4;
        j->k->gemm_repacked(W->ne0, grp, n4, a + (size_t)t0 * j->act_row, j->act_row, as ? as + (size_t)t0 * nb : NULL,
                            tmp, (size_t)R);
        for (int u = 0; u < n4; u++)
            memcpy(j->Y + (size_t)(t + t0 + u) * rows + r, tmp + (size_t)u * R, sizeof(float) * (size_t)(rows - r));
    }
}

/* Weights repacked at load (quant.h): groups of R rows, each run against the
 * tokens in tiles of repack_tokens. Decode claims chunks of groups as the
 * threads get to them; prefill gives each thread a contiguous range of
 * groups, walked in chunks that stay in L2 while every token passes. */
static void matmul_repacked(matmul_job *j, int ith, int nth) {
    const weight *W = j->W;
    const int R = j->k->repack_rows, T = j->k->repack_tokens > 0 ? j->k->repack_tokens : 1;
    const int64_t groups = (W->ne1 + R - 1) / R;
    if (j->n_tok == 1) {
        int64_t chunk = groups / (8 * (int64_t)nth);
        if (chunk < 2) chunk = 2;
        for (;;) {
            const int64_t c0 = atomic_fetch_add_explicit(&j->next_row, chunk, memory_order_relaxed);
            if (c0 >= groups) break;
            const int64_t c1 = c0 + chunk < groups ? c0 + chunk : groups;
            for (int64_t g = c0; g < c1; g++) repacked_group(j, g, 0, 1);
        }
        return;
    }
    const int64_t g0 = groups * ith / nth, g1 = groups * (ith + 1) / nth;
    int64_t chunk = (int64_t)(MATMUL_ROW_CHUNK_BYTES / j->k->repack_group_bytes(W->ne0));
    if (chunk < 1) chunk = 1;
    for (int64_t c0 = g0; c0 < g1; c0 += chunk) {
        const int64_t c1 = c0 + chunk < g1 ? c0 + chunk : g1;
        for (int t = 0; t < j->n_tok; t += T) {
            const int nt = j->n_tok - t < T ? j->n_tok - t : T;
            for (int64_t g = c0; g < c1; g++) repacked_group(j, g, t, nt);
        }
    }
}

static void matmul_worker(void *arg, int ith, int nth) {
    matmul_job *j = arg;
    const weight *W = j->W;
    const int64_t rows = W->ne1, cols = W->ne0;
    const int n_tok = j->n_tok;
    /* 1. this thread's share of the activation blocks (all tokens' rows are
     *    contiguous, so the blocks form one sequence) */
    if (j->at) {
        const int64_t bs = j->at->blck_size;
        const int64_t nb = (int64_t)n_tok * (cols / bs);
        const int64_t b0 = nb * ith / nth, b1 = nb * (ith + 1) / nth;
        if (b1 > b0) j->act_from_float(j->X + b0 * bs, j->act + b0 * j->at->type_size, (b1 - b0) * bs);
        if (j->asum && b1 > b0) quant_q8_0_block_sums(j->act + b0 * j->at->type_size, b1 - b0, j->asum + b0);
        if (nth > 1) matmul_barrier(&j->quantized, nth);
    }
    if (W->repacked) {
        matmul_repacked(j, ith, nth);
        return;
    }
    /* 2. this thread's rows against all tokens */
    const int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
    const uint8_t *base = (const uint8_t *)W->data;
    const size_t rb = W->row_bytes;
    vec_dot_tile_fn tile = j->k->vec_dot_tile;
    if (n_tok == 1) {
        /* chunks of rows claimed as the threads get to them (about 8 per
         * thread): a thread slowed by the other's memory traffic or by the
         * system takes fewer, instead of all waiting for it at the end. Rows
         * are independent, so the result does not depend on who ran which. */
        const int DR = j->k->decode_rows;
        int64_t chunk = rows / (8 * (int64_t)nth) / DR * DR;
        if (chunk < 4 * DR) chunk = 4 * DR;
        for (;;) {
            const int64_t c0 = atomic_fetch_add_explicit(&j->next_row, chunk, memory_order_relaxed);
            if (c0 >= rows) break;
            const int64_t c1 = c0 + chunk < rows ? c0 + chunk : rows;
            int64_t r = c0;
            for (; r + DR <= c1; r += DR) tile(cols, DR, 1, base + r * rb, rb, j->act, 0, j->Y + r, 0);
            if (r < c1) tile(cols, (int)(c1 - r), 1, base + r * rb, rb, j->act, 0, j->Y + r, 0);
        }
        return;
    }
    if (j->pack) {
        /* groups of QUANT_PACK_ROWS rows packed into this thread's buffer, a
         * chunk at a time, each group then run against all tokens */
        const int PR = QUANT_PACK_ROWS;
        uint8_t *pk = j->pack + (size_t)ith * j->pack_stride;
        const size_t gb = j->k->pack_bytes(cols);
        const int64_t groups = (int64_t)(j->pack_stride / gb);
        for (int64_t c0 = r0; c0 < r1; c0 += groups * PR) {
            const int64_t c1 = c0 + groups * PR < r1 ? c0 + groups * PR : r1;
            const int64_t ng = (c1 - c0) / PR;
            for (int64_t g = 0; g < ng; g++) j->k->pack_rows(cols, base + (c0 + g * PR) * rb, rb, pk + g * gb);
            for (int t = 0; t < n_tok; t += 4) {
                const int nt = n_tok - t < 4 ? n_tok - t : 4;
                const uint8_t *a = j->act + (size_t)t * j->act_row;
                for (int64_t g = 0; g < ng; g++)
                    j->k->gemm_packed(cols, pk + g * gb, nt, a, j->act_row, j->Y + (size_t)t * rows + c0 + g * PR,
                                       (size_t)rows);
            }
            const int64_t rr = c0 + ng * PR; /* rows left over at the end of the thread's range */
            if (rr < c1) tile(cols, (int)(c1 - rr), n_tok, base + rr * rb, rb, j->act, j->act_row, j->Y + rr, (size_t)rows);
        }
        return;
    }
    const int R = j->k->tile_rows, T = j->k->tile_tokens;
    int64_t chunk = (int64_t)(MATMUL_ROW_CHUNK_BYTES / (rb ? rb : 1)) / R * R;
    if (chunk < R) chunk = R;
    for (int64_t c0 = r0; c0 < r1; c0 += chunk) {
        const int64_t c1 = c0 + chunk < r1 ? c0 + chunk : r1;
        for (int t = 0; t < n_tok; t += T) {
            const int nt = n_tok - t < T ? n_tok - t : T;
            const uint8_t *a = j->act + (size_t)t * j->act_row;
            for (int64_t r = c0; r < c1; r += R) {
                const int nr = c1 - r < R ? (int)(c1 - r) : R;
                tile(cols, nr, nt, base + r * rb, rb, a, j->act_row, j->Y + (size_t)t * rows + r, (size_t)rows);
            }
        }
    }
}

void matmul(threadpool *tp, const weight *W, const float *X, int n_tok, float *Y, void *scratch) {
    const quant_traits *tr = quant_get_traits(W->type);
    const quant_kernels *k = W->repacked ? W->repacked_kernels : quant_kernels_of(W->type);
    matmul_job j = {.W = W, .k = k, .X = X, .n_tok = n_tok, .Y = Y};
    atomic_init(&j.quantized, 0);
    atomic_init(&j.next_row, 0);
    if (tr->vec_dot_type == GGML_TYPE_F32) {
        j.act = (uint8_t *)(uintptr_t)X; /* read only */
        j.act_row = (size_t)W->ne0 * sizeof(float);
    } else {
        j.at = quant_get_traits(tr->vec_dot_type);
        j.act_from_float = quant_kernels_of(tr->vec_dot_type)->from_float;
        j.act = scratch;
        j.act_row = quant_row_size(tr->vec_dot_type, W->ne0);
        if (W->repacked && k->repack_asum && tr->vec_dot_type == GGML_TYPE_Q8_0)
            j.asum = (int32_t *)((uint8_t *)scratch + align64(j.act_row * (size_t)n_tok));
        if (!W->repacked && k->pack_rows && n_tok >= k->pack_min_tokens) {
            j.pack = (uint8_t *)scratch + align64(j.act_row * (size_t)n_tok);
            j.pack_stride = pack_stride(k, W->ne0);
        }
    }
    /* Waking the other threads costs tens of microseconds; a product this
     * small takes less than that on one thread (the result is the same). */
    if ((double)n_tok * (double)W->ne0 * (double)W->ne1 <= MATMUL_SERIAL_MACS) matmul_worker(&j, 0, 1);
    else threadpool_run(tp, matmul_worker, &j);
}

/* ------------------------------------------- many one-token products at once */

/* matmul_many: each request is set up as the matmul_job that matmul(W, x, 1,
 * y) would run, with its activations in its own stretch of the scratch; the
 * threads quantize the activations (requests dealt round-robin), meet once,
 * then claim chunks of rows (or repacked groups) of any request from one
 * counter and run them with the same kernels as matmul's decode path. */
typedef struct {
    matmul_job *jobs;       /* (n) */
    int n;
    int64_t *first_chunk;   /* (n + 1) prefix sums of each request's chunk count */
    int64_t *chunk_units;   /* (n) rows (or repacked groups) per chunk */
    atomic_int quantized;
    atomic_llong next_chunk;
} matmul_many_job;

static void matmul_many_worker(void *arg, int ith, int nth) {
    matmul_many_job *mj = arg;
    for (int i = ith; i < mj->n; i += nth) {
        matmul_job *j = &mj->jobs[i];
        if (!j->at) continue;
        const int64_t nb = j->W->ne0 / j->at->blck_size;
        j->act_from_float(j->X, j->act, j->W->ne0);
        if (j->asum) quant_q8_0_block_sums(j->act, nb, j->asum);
    }
    if (nth > 1) matmul_barrier(&mj->quantized, nth);
    const int64_t total = mj->first_chunk[mj->n];
    int i = 0;
    for (;;) {
        const int64_t c = atomic_fetch_add_explicit(&mj->next_chunk, 1, memory_order_relaxed);
        if (c >= total) break;
        while (c >= mj->first_chunk[i + 1]) i++; /* chunks are claimed in increasing order */
        const matmul_job *j = &mj->jobs[i];
        const int64_t u0 = (c - mj->first_chunk[i]) * mj->chunk_units[i];
        if (j->W->repacked) {
            const int64_t groups = (j->W->ne1 + j->k->repack_rows - 1) / j->k->repack_rows;
            const int64_t u1 = u0 + mj->chunk_units[i] < groups ? u0 + mj->chunk_units[i] : groups;
            for (int64_t g = u0; g < u1; g++) repacked_group(j, g, 0, 1);
            continue;
        }
        const int64_t rows = j->W->ne1, cols = j->W->ne0;
        const int64_t u1 = u0 + mj->chunk_units[i] < rows ? u0 + mj->chunk_units[i] : rows;
        const uint8_t *base = (const uint8_t *)j->W->data;
        const size_t rb = j->W->row_bytes;
        const int DR = j->k->decode_rows;
        int64_t r = u0;
        for (; r + DR <= u1; r += DR) j->k->vec_dot_tile(cols, DR, 1, base + r * rb, rb, j->act, 0, j->Y + r, 0);
        if (r < u1) j->k->vec_dot_tile(cols, (int)(u1 - r), 1, base + r * rb, rb, j->act, 0, j->Y + r, 0);
    }
}

bool matmul_many(threadpool *tp, const matvec_req *req, int n, void *scratch) {
    if (n <= 0) return true;
    matmul_many_job mj = {.n = n};
    mj.jobs = calloc((size_t)n, sizeof *mj.jobs);
    mj.first_chunk = malloc(sizeof(int64_t) * ((size_t)n + 1));
    mj.chunk_units = malloc(sizeof(int64_t) * (size_t)n);
    if (!mj.jobs || !mj.first_chunk || !mj.chunk_units) {
        free(mj.jobs);
        free(mj.first_chunk);
        free(mj.chunk_units);
        return false;
    }
    const int nth = threadpool_size(tp);
    /* activations one after another, as matmul lays out the rows of n tokens;
     * the repacked kernels' block sums after them */
    size_t act_bytes = 0;
    for (int i = 0; i < n; i++) {
        const quant_traits *tr = quant_get_traits(req[i].W->type);
        if (tr->vec_dot_type != GGML_TYPE_F32) act_bytes += quant_row_size(tr->vec_dot_type, req[i].W->ne0);
    }
    uint8_t *act = scratch;
    int32_t *asum = (int32_t *)((uint8_t *)scratch + align64(act_bytes));
    double macs = 0;
    mj.first_chunk[0] = 0;
    for (int i = 0; i < n; i++) {
        const weight *W = req[i].W;
        const quant_traits *tr = quant_get_traits(W->type);
        matmul_job *j = &mj.jobs[i];
        j->W = W;
        j->k = W->repacked ? W->repacked_kernels : quant_kernels_of(W->type);
        j->X = req[i].x;
        j->n_tok = 1;
        j->Y = req[i].y;
        if (tr->vec_dot_type == GGML_TYPE_F32) {
            j->act = (uint8_t *)(uintptr_t)req[i].x; /* read only */
            j->act_row = (size_t)W->ne0 * sizeof(float);
        } else {
            j->at = quant_get_traits(tr->vec_dot_type);
            j->act_from_float = quant_kernels_of(tr->vec_dot_type)->from_float;
            j->act = act;
            j->act_row = quant_row_size(tr->vec_dot_type, W->ne0);
            act += j->act_row;
            if (W->repacked && j->k->repack_asum && tr->vec_dot_type == GGML_TYPE_Q8_0) {
                j->asum = asum;
                asum += W->ne0 / 32;
            }
        }
        /* chunks as matmul's decode path cuts them for nth threads */
        int64_t units, chunk;
        if (W->repacked) {
            units = (W->ne1 + j->k->repack_rows - 1) / j->k->repack_rows;
            chunk = units / (8 * (int64_t)nth);
            if (chunk < 2) chunk = 2;
        } else {
            const int DR = j->k->decode_rows;
            units = W->ne1;
            chunk = units / (8 * (int64_t)nth) / DR * DR;
            if (chunk < 4 * DR) chunk = 4 * DR;
        }
        mj.chunk_units[i] = chunk;
        mj.first_chunk[i + 1] = mj.first_chunk[i] + (units + chunk - 1) / chunk;
        macs += (double)W->ne0 * (double)W->ne1;
    }
    atomic_init(&mj.quantized, 0);
    atomic_init(&mj.next_chunk, 0);
    if (macs <= MATMUL_SERIAL_MACS) matmul_many_worker(&mj, 0, 1);
    else threadpool_run(tp, matmul_many_worker, &mj);
    free(mj.jobs);
    free(mj.first_chunk);
    free(mj.chunk_units);
    return true;
}

/* ------------------------------------------------------------------- RoPE */

/* The cos/sin table of the last (pos, parameters) a thread rotated with: a
 * forward pass rotates every head of a token at the same position, so all
 * but the first head reuse it. Values are computed exactly as without it. */
#define ROPE_CACHE_MAX 256
typedef struct {
    int valid, n_rot;
    int32_t pos;
    float freq_base, freq_scale;
    int has_factors;
    float factors[ROPE_CACHE_MAX];
    float c[ROPE_CACHE_MAX], s[ROPE_CACHE_MAX];
} rope_cache;
static _Thread_local rope_cache g_rope;

static bool rope_cache_hit(const rope_cache *rc, int n_rot, int32_t pos, float freq_base, float freq_scale,
                           const float *freq_factors) {
    if (!rc->valid || rc->n_rot != n_rot || rc->pos != pos || rc->freq_base != freq_base ||
        rc->freq_scale != freq_scale || rc->has_factors != (freq_factors != NULL))
        return false;
    return !freq_factors || memcmp(rc->factors, freq_factors, sizeof(float) * (size_t)(n_rot / 2)) == 0;
}

void rope_apply(float *x, int n_rot, int32_t pos, float freq_base, float freq_scale,
                const float *freq_factors, rope_style style) {
    const int half = n_rot / 2;
    rope_cache *rc = &g_rope;
    const bool cacheable = half <= ROPE_CACHE_MAX;
    if (cacheable && !rope_cache_hit(rc, n_rot, pos, freq_base, freq_scale, freq_factors)) {
        for (int i = 0; i < half; i++) {
            /* theta_i = pos * base^(-2i/n_rot) * scale / factor_i */
            double theta = (double)pos * pow((double)freq_base, -2.0 * i / n_rot) * freq_scale;
            if (freq_factors) theta /= freq_factors[i];
            rc->c[i] = (float)cos(theta);
            rc->s[i] = (float)sin(theta);
        }
        rc->valid = 1;
        rc->n_rot = n_rot;
        rc->pos = pos;
        rc->freq_base = freq_base;
        rc->freq_scale = freq_scale;
        rc->has_factors = freq_factors != NULL;
        if (freq_factors) memcpy(rc->factors, freq_factors, sizeof(float) * (size_t)half);
    }
    for (int i = 0; i < half; i++) {
        float c, s;
        if (cacheable) {
            c = rc->c[i];
            s = rc->s[i];
        } else {
            double theta = (double)pos * pow((double)freq_base, -2.0 * i / n_rot) * freq_scale;
            if (freq_factors) theta /= freq_factors[i];
            c = (float)cos(theta);
            s = (float)sin(theta);
        }
        const int a = style == ROPE_NORM ? 2 * i : i;
        const int b = style == ROPE_NORM ? 2 * i + 1 : i + half;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/* ----------------------------------------------------------------- SwiGLU */

void swiglu_ref(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}


void swiglu(float *gate, const float *up, int n) { ops_kernels_of()->swiglu(gate, up, n); }

/* ---------------------------------------------------------------- softmax */

double logsumexp(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

double softmax_inplace(float *x, int n) {
    const double lse = logsumexp(x, n);
    for (int i = 0; i < n; i++) x[i] = (float)exp((double)x[i] - lse);
    return lse;
}

/* ggml's CPU GELU (what llama.cpp computes): the input rounded to f16, the
 * tanh form evaluated there, the result rounded to f16 (its 64K-entry table),
 * x itself from 10 on and 0 from -10 down. Rounding the same way keeps rotkv's
 * logits within the golden tolerances of llama.cpp's (exact tanh GELU is
 * ~0.03 off on syn-gemma3-F32). */
static float gelu_ggml(float x) {
    if (x <= -10.0f) return 0.0f;
    if (x >= 10.0f) return x;
    const float c = 0.7978845608028654f, a = 0.044715f; /* sqrt(2 / pi) */
    const float h = fp16_to_fp32(fp32_to_fp16(x));
    return fp16_to_fp32(fp32_to_fp16(0.5f * h * (1.0f + tanhf(c * h * (1.0f + a * h * h)))));
}

void swiglu_oai(float *gate, const float *up, int n) {
    const float alpha = 1.702f, limit = 7.0f;
    for (int i = 0; i < n; i++) {
        const float x = gate[i] < limit ? gate[i] : limit;
        const float y = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
        gate[i] = x / (1.0f + expf(alpha * -x)) * (y + 1.0f);
    }
}

void geglu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) gate[i] = gelu_ggml(gate[i]) * up[i];
}
