/* attention.c — attention over encoded cache rows with the codecs' fused
 * kernels and an online (streaming) softmax.
 *
 * One work item = (up to ATT_QTILE consecutive query tokens of one sequence,
 * KV head): in a prompt batch each cache block is decoded once for all the
 * tokens of the tile and their n_group query heads. Its positions are visited
 * in blocks of up to ATT_BLOCK rows that share one layout (the layer's codec,
 * or f16 for sink and window rows):
 *   1. the scores of the whole block, for all the item's queries: with a
 *      single query straight from the codec's dot (kvt_dot for kt*); with
 *      several, each row is decoded once into a small tile (kt*: its raw
 *      codebook levels, a block at a time through kvt_levels_rows, the row
 *      scales applied to the scores) and the tile is multiplied by all the
 *      queries; rows past a token's position are masked to -inf;
 *   2. the online-softmax update, once per block: new running max, one
 *      rescale of the accumulators if it grew, the block's weights;
 *   3. the weighted sum of the values, the same way (axpy per row with one
 *      query head, else a decoded tile times the weights of all heads).
 * Codec rows of a 256-token page are contiguous, so within a run of codec
 * positions the row pointers advance by the row size instead of being looked
 * up per position; only the f16 sink/window positions are looked up one by
 * one. The math is the per-row online softmax's, regrouped: rows are only
 * summed in another order (attention_reference checks it).
 *
 * The tile kernels (scores, weighted sum, exp, max) are one const row per ISA
 * level (arch/kv_arch.h): attn_kernels_scalar here, the AVX2 twins in
 * arch/x86/attention_avx2.c (AVX-512: attention_avx512.c), the NEON ones in
 * arch/arm/attention_neon.c; the row is chosen once per process, from
 * cpu_isa_active() (ROTKV_ISA caps it), at the first attention_batch. */
#include "attention.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "arch/kv_arch.h"
#include "cpu.h"

#define MAX_GROUP 64 /* n_head / n_head_kv, checked at context creation */
/* Query tokens per work item in a batch: each decoded cache block serves all
 * their query heads (n_group x tokens <= MAX_Q). */
#ifndef ATT_QTILE
#define ATT_QTILE 8
#endif
#define MAX_Q 64
#ifndef ATT_PREFETCH
#define ATT_PREFETCH 1 /* software prefetch of the next block's K/V slices */
#endif
#ifndef ATT_PREFETCH_MIN_BYTES
#define ATT_PREFETCH_MIN_BYTES 0 /* ... when a head's slice of a row has at least this many bytes */
#endif

/* Tokens per work item for n_group query heads per KV head. */
static int tile_tokens(int n_group) {
    int n = ATT_QTILE;
    while (n > 1 && n * n_group > MAX_Q) n--;
    return n;
}


/* ------------------------------------------------------------------ tile kernels */

static void scores_scalar(const float *tile, int nr, int hd, const float *q, int ng, const float *rs,
                          const float *bias, float scale, float *S) {
    for (int g = 0; g < ng; g++)
        for (int r = 0; r < nr; r++) {
            const float *k = tile + (size_t)r * hd, *qg = q + (size_t)g * hd;
            float s = 0.0f;
            for (int i = 0; i < hd; i++) s += k[i] * qg[i];
            if (rs) s *= rs[r];
            if (bias) s += bias[g];
            S[g * SROW + r] = s * scale;
        }
}

static void accum_scalar(const float *tile, int nr, int hd, const float *W, int ng, float *acc) {
    for (int g = 0; g < ng; g++)
        for (int r = 0; r < nr; r++) {
            const float w = W[g * SROW + r], *v = tile + (size_t)r * hd;
            float *o = acc + (size_t)g * hd;
            for (int i = 0; i < hd; i++) o[i] += w * v[i];
        }
}

static float max_scalar(const float *x, int n, float m) {
    for (int r = 0; r < n; r++)
        if (x[r] > m) m = x[r];
    return m;
}

static float exp_scalar(float *x, int n, float m) {
    float sum = 0.0f;
    for (int r = 0; r < n; r++) sum += (x[r] = expf(x[r] - m));
    return sum;
}

const attn_kernels attn_kernels_scalar = {scores_scalar, accum_scalar, exp_scalar, max_scalar, 1};

/* The row in use: the active level's, or the highest level's below it that
 * has one; chosen once (first attention_batch). */
static const attn_kernels *g_attn;
/* The rows of the active level and those below it that have one, highest
 * first, the scalar row last: the tile kernels come from the first one whose
 * tile_cols divides head_dim. */
static const attn_kernels *g_tile_rows[CPU_ISA_COUNT + 1];
static pthread_once_t kern_once = PTHREAD_ONCE_INIT;

/* The row of exactly one level, or NULL if this CPU cannot run it (or the
 * level has none of its own: AVX-VNNI, dotprod, i8mm). */
const attn_kernels *attn_kernels_at(cpu_isa isa) {
    if ((int)isa < 0 || isa >= CPU_ISA_COUNT || !cpu_isa_supported(isa)) return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return &attn_kernels_scalar;
    case CPU_ISA_AVX2: return attn_kernels_avx2.scores ? &attn_kernels_avx2 : NULL;
    case CPU_ISA_AVX512: return attn_kernels_avx512.scores ? &attn_kernels_avx512 : NULL;
    case CPU_ISA_NEON: return attn_kernels_neon.scores ? &attn_kernels_neon : NULL;
    default: return NULL;
    }
}

static void kern_select(void) {
    int n = 0;
    for (int isa = (int)cpu_isa_active(); isa > CPU_ISA_SCALAR; isa--) {
        const attn_kernels *k = attn_kernels_at((cpu_isa)isa);
        if (k) g_tile_rows[n++] = k;
    }
    g_tile_rows[n] = &attn_kernels_scalar;
    g_attn = g_tile_rows[0];
}

/* ------------------------------------------------------------------ one work item */

/* Where head hk's values live in a row encoded as segments of seg values. */
typedef struct {
    const kv_codec *c;
    const kvt_head *kt;          /* kt* codec rows: the head's transform */
    const kvt_head *ktrow;       /* kttr* rows coded as one vector: the row's transform (decode path) */
    int seg;
    size_t seg_bytes, ofs_bytes; /* fused path: byte offset of the head's segment */
    int seg_index, ofs_values;   /* decode path: segment holding the head, offset inside it */
    bool fused;
} head_view;

static head_view head_view_make(const kv_layout *l, int hk, int hd) {
    const bool row_kt = l->kvt && l->seg != hd; /* kttr*: decoded whole, the head's values taken from it */
    head_view v = {l->codec, l->kvt && !row_kt ? &l->kvt[hk] : NULL, row_kt ? l->kvt : NULL, l->seg, l->seg_bytes, 0, 0,
                   0, l->seg == hd};
    if (v.fused) {
        v.ofs_bytes = (size_t)hk * l->seg_bytes;
    } else {
        v.seg_index = hk * hd / l->seg;
        v.ofs_values = hk * hd % l->seg;
    }
    return v;
}

/* State of one work item: nt query tokens of one sequence, their n_group
 * query heads of KV head hk; ng = nt * n_group queries, query j = token
 * j / n_group, head hk * n_group + j % n_group. */
typedef struct {
    const attention_args *a;
    int hd, ng, n_group;
    int32_t nkv[ATT_QTILE]; /* positions each token sees: [lo, nkv) */
    int32_t lo[ATT_QTILE];
    float *q;            /* (ng, hd) the queries */
    float *acc;          /* (ng, hd) weighted sum of values (value space) */
    float *qy;           /* (ng, hd) kt* K: kvt_prep_query's query */
    float *accy;         /* (ng, hd) kt* V: weighted sum in the transform space (tiles: without sigma) */
    float rs[ATT_BLOCK + 8]; /* kt* tile rows: each row's scale s (the tile holds raw levels) */
    float *rowtmp;       /* (n_head_kv * hd) decode path: one whole decoded row */
    float *tile;         /* (ATT_TILE_ROWS, hd) decoded rows */
    float *S;            /* (ng, SROW) scores, then weights */
    head_view view[2][2];/* [K, V][f16 rows, codec rows] (f16 views set at the first f16 row) */
    bool have_f16;
    bool need_wcodec;    /* centering or kt V: the weight of codec rows is needed on its own */
    const float *muv;    /* centering */
    float m[MAX_Q], l[MAX_Q];     /* running max and sum per query */
    float qmu[MAX_Q], wmu[MAX_Q]; /* q·mu_k; softmax weight carried by centered V rows */
    float kq[MAX_Q], wkt[MAX_Q];  /* q·mu of the K transform; weight carried by kt V rows */
    bool per_head;       /* the codec's dot/axpy per query head instead of decoded tiles */
    bool kt_accum;       /* kt V rows straight from their codes (kvt_accum_rows), without the tile */
    scores_fn scores;
    accum_fn accum;
    exp_fn exp;
    max_fn max;
} item;

/* Decodes the head's values of rows [r0, r1) into the tile: kt* rows as raw
 * codebook levels with their scales in it->rs, a block per call; the other
 * codecs' values row by row. */
static void decode_block(item *it, const head_view *v, const uint8_t *const *rows, int r0, int r1) {
    const int hd = it->hd;
    float *dst = it->tile + (size_t)r0 * hd;
    if (v->kt) {
        kvt_levels_rows(v->kt, rows + r0, v->ofs_bytes, r1 - r0, dst, it->rs + r0);
        return;
    }
    for (int r = r0; r < r1; r++, dst += hd) {
        if (v->fused) {
            v->c->kern->decode(rows[r] + v->ofs_bytes, dst, hd);
        } else {
            if (v->ktrow) kvt_decode(v->ktrow, rows[r] + (size_t)v->seg_index * v->seg_bytes, it->rowtmp);
            else v->c->kern->decode(rows[r] + (size_t)v->seg_index * v->seg_bytes, it->rowtmp, v->seg);
            memcpy(dst, it->rowtmp + v->ofs_values, sizeof(float) * (size_t)hd);
        }
    }
}

/* Scores of rows [r0, r1) of the block, all in one layout (codec or f16), into S. */
static void block_scores(item *it, int r0, int r1, const uint8_t *const *krows, bool codec) {
    const int hd = it->hd, ng = it->ng;
    const head_view *vk = &it->view[0][codec];
    float *S = it->S;
    if (it->per_head && (vk->kt || vk->fused)) {
        for (int g = 0; g < ng; g++)
            for (int r = r0; r < r1; r++)
                S[g * SROW + r] = (vk->kt ? kvt_dot(vk->kt, krows[r] + vk->ofs_bytes, it->qy + (size_t)g * hd) + it->kq[g]
                           : vk->c->kern->dot(krows[r] + vk->ofs_bytes, it->q + (size_t)g * hd, hd) +
                                 (codec ? it->qmu[g] : 0.0f)) *
                   it->a->scale;
        return;
    }
    decode_block(it, vk, krows, r0, r1);
    it->scores(it->tile + (size_t)r0 * hd, r1 - r0, hd, vk->kt ? it->qy : it->q, ng, vk->kt ? it->rs + r0 : NULL,
               !codec ? NULL : vk->kt ? it->kq : it->qmu, it->a->scale, S + r0);
}

/* Weighted sum of the values of rows [r0, r1), all in one layout. */
static void block_values(item *it, int r0, int r1, const uint8_t *const *vrows, bool codec) {
    const int hd = it->hd, ng = it->ng;
    const head_view *vv = &it->view[1][codec];
    float *dst = vv->kt ? it->accy : it->acc, *W = it->S;
    if (it->per_head && (vv->kt || vv->fused)) {
        for (int r = r0; r < r1; r++)
            for (int g = 0; g < ng; g++) {
                float *o = dst + (size_t)g * hd;
                if (vv->kt) kvt_axpy(vv->kt, vrows[r] + vv->ofs_bytes, W[g * SROW + r], o);
                else vv->c->kern->axpy(vrows[r] + vv->ofs_bytes, W[g * SROW + r], o, hd);
            }
        return;
    }
    if (vv->kt && it->kt_accum) {
        kvt_accum_rows(vv->kt, vrows + r0, vv->ofs_bytes, r1 - r0, W + r0, SROW, ng, dst);
        return;
    }
    decode_block(it, vv, vrows, r0, r1);
    if (vv->kt) /* the rows' scales go into their weights (sigma into the sum, at the end) */
        for (int g = 0; g < ng; g++)
            for (int r = r0; r < r1; r++) W[g * SROW + r] *= it->rs[r];
    it->accum(it->tile + (size_t)r0 * hd, r1 - r0, hd, W + r0, ng, dst);
}

/* One block of nr consecutive positions; codec[r]: row r is in the layer's
 * codec layout (else f16). Scores and values go by runs of one layout; the
 * softmax update is done once for the whole block. The block boundaries are
 * fixed positions (multiples of ATT_BLOCK), so where the codec is f16 the
 * result does not depend on which rows sit in the f16 sink/window. */
static void run_block(item *it, int b0, int nr, const uint8_t *const *krows, const uint8_t *const *vrows,
                      const bool *codec) {
    const int hd = it->hd, ng = it->ng;
    for (int r0 = 0, r1; r0 < nr; r0 = r1) {
        for (r1 = r0 + 1; r1 < nr && codec[r1] == codec[r0]; r1++) {}
        block_scores(it, r0, r1, krows, codec[r0]);
    }
    if (it->a->softcap > 0) { /* gemma2: c * tanh(s / c), as llama.cpp before its mask */
        const float c = it->a->softcap, ic = 1.0f / it->a->softcap;
        for (int j = 0; j < ng; j++)
            for (int r = 0; r < nr; r++) it->S[j * SROW + r] = c * tanhf(it->S[j * SROW + r] * ic);
    }
    /* causal mask: rows past a token's own position weigh exp(-inf) = 0, so
     * its sums are bit-for-bit those of a block cut at its position; the same
     * for rows before a sliding window's first position (the blocks stay cut
     * at multiples of ATT_BLOCK whatever the window) */
    for (int j = 0; j < ng; j++) {
        const int lim = it->nkv[j / it->n_group] - b0, lo = it->lo[j / it->n_group] - b0;
        for (int r = lim < 0 ? 0 : lim; r < nr; r++) it->S[j * SROW + r] = -INFINITY;
        for (int r = 0; r < lo && r < nr; r++) it->S[j * SROW + r] = -INFINITY;
    }
    bool all_codec = true;
    for (int r = 0; r < nr; r++) all_codec &= codec[r];
    for (int g = 0; g < ng; g++) {
        float *s = it->S + g * SROW;
        const float mx = it->max(s, nr, it->m[g]);
        if (mx > it->m[g]) {
            const float c = expf(it->m[g] - mx); /* 0 on the first block */
            float *o = it->acc + (size_t)g * hd;
            for (int i = 0; i < hd; i++) o[i] *= c;
            it->l[g] *= c;
            it->wmu[g] *= c;
            it->wkt[g] *= c;
            if (it->view[1][1].kt)
                for (int i = 0; i < hd; i++) it->accy[(size_t)g * hd + i] *= c;
            it->m[g] = mx;
        }
        if (it->m[g] == -INFINITY) { /* every row so far masked (before a sliding window): weights 0 */
            for (int r = 0; r < nr; r++) s[r] = 0.0f;
            continue;
        }
        const float sum = it->exp(s, nr, it->m[g]);
        it->l[g] += sum;
        if (it->need_wcodec) {
            /* weight of the codec rows, carried by mu_v or by the kt V sum:
             * the block's sum less that of its f16 rows. Rows past the token
             * weigh exactly 0, so it is the same whatever else is in the batch
             * (the block may end at another token's position, after f16
             * window rows this token does not see) */
            float wf = 0.0f;
            if (!all_codec)
                for (int r = 0; r < nr; r++)
                    if (!codec[r]) wf += s[r];
            const float wc = sum - wf;
            if (it->view[1][1].kt) it->wkt[g] += wc;
            else it->wmu[g] += wc;
        }
    }
    for (int r0 = 0, r1; r0 < nr; r0 = r1) {
        for (r1 = r0 + 1; r1 < nr && codec[r1] == codec[r0]; r1++) {}
        block_values(it, r0, r1, vrows, codec[r0]);
    }
}

/* One split's result per query: running max, sum of weights, and the
 * weighted sum of values (value space, not divided by the sum). */
typedef struct {
    float m, l;
    float acc[]; /* head_dim */
} att_partial;

static size_t partial_floats(int hd) { return 2 + (size_t)hd; }

/* Heads per work unit at most: a unit visits each block of rows once for all
 * its KV heads, so the bytes of a row are read together, in order, instead of
 * each head striding over the whole cache on its own. */
#define ATT_HEAD_GROUP 8

/* Scratch of one head of a unit: the queries, acc, kt* query and y-space accumulators. */
static size_t head_floats(int nq, int hd) { return 4 * (size_t)nq * (size_t)hd; }

size_t attention_scratch_floats(int n_head, int n_head_kv, int head_dim) {
    const size_t g = (size_t)(n_head / n_head_kv), hd = (size_t)head_dim;
    const size_t nq = g * (size_t)tile_tokens((int)g);
    const size_t heads = n_head_kv < ATT_HEAD_GROUP ? (size_t)n_head_kv : ATT_HEAD_GROUP;
    /* per head of a unit: head_floats; shared by them: a decoded row, the
     * decoded tile, the block's scores/weights */
    return heads * head_floats((int)nq, head_dim) + (size_t)n_head_kv * hd + ATT_TILE_ROWS * hd + nq * SROW;
}

/* Sets up the item of tokens [t0, t0 + nt) (one sequence) and KV head hk:
 * its own scratch in own (head_floats), the shared tile, row and scores. */
static void item_init(item *it, const attention_args *a, int t0, int nt, int hk, float *own, float *rowtmp,
                      float *tile, float *S) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv, ng = nt * n_group;
    const kv_cache *kv = a->kv;
    const uint32_t seq = (uint32_t)a->seq[t0], layer = a->layer;
    const kv_layout *lk = kv_cache_layout_k(kv, layer), *lv = kv_cache_layout_v(kv, layer);
    it->a = a;
    it->hd = hd;
    it->ng = ng;
    it->n_group = n_group;
    it->q = own;
    const int32_t held = a->window > 0 ? (int32_t)kv_cache_first_pos(kv, seq, layer) : 0;
    for (int j = 0; j < nt; j++) {
        it->nkv[j] = a->pos[t0 + j] + 1;
        it->lo[j] = a->window > 0 && a->pos[t0 + j] - a->window + 1 > held ? a->pos[t0 + j] - a->window + 1 : held;
        memcpy(it->q + (size_t)j * n_group * hd, a->Q + (size_t)(t0 + j) * a->n_head * hd + (size_t)hk * n_group * hd,
               sizeof(float) * (size_t)n_group * hd);
    }
    it->acc = it->q + (size_t)ng * hd;
    it->qy = it->acc + (size_t)ng * hd;
    it->accy = it->qy + (size_t)ng * hd;
    it->rowtmp = rowtmp;
    it->tile = tile;
    it->S = S;
    memset(it->rs, 0, sizeof it->rs);
    it->view[0][1] = head_view_make(lk, hk, hd);
    it->view[1][1] = head_view_make(lv, hk, hd);
    it->have_f16 = false;
    /* the vector tile kernels need head_dim % tile_cols == 0; otherwise a lower level's */
    const attn_kernels *K = g_attn, *tk = K;
    for (int i = 0; hd % tk->tile_cols; i++) tk = g_tile_rows[i + 1];
    it->scores = tk->scores;
    it->accum = tk->accum;
    it->exp = K->exp;
    it->max = K->max;
    /* one query head per KV head: nothing to share, the fused kernels directly
     * (with several, decoding a row once wins even with the scalar kernels:
     * f16 498 vs 655 ns per row and KV head at 4096 positions, tq3 372 vs 513,
     * kt3.5 443 vs 672; only q8_0 is faster per head, 299 vs 370) */
    it->per_head = ng == 1; /* one query: n_group 1 and one token (generation) */
    it->kt_accum = kvt_has_accum_rows(hd) && !(lv->kvt && lv->kvt->tt); /* ktt V: through the tile */
    const float *muk = kv_cache_center_k(kv, seq, layer);
    it->muv = kv_cache_center_v(kv, seq, layer);
    if (muk) muk += (size_t)hk * hd;
    if (it->muv) it->muv += (size_t)hk * hd;
    it->need_wcodec = it->muv || it->view[1][1].kt;
    const kvt_head *kt_k = it->view[0][1].kt;
    for (int g = 0; g < ng; g++) {
        const float *qg = it->q + (size_t)g * hd;
        it->m[g] = -INFINITY;
        it->l[g] = it->wmu[g] = it->qmu[g] = it->wkt[g] = it->kq[g] = 0.0f;
        if (muk)
            for (int i = 0; i < hd; i++) it->qmu[g] += qg[i] * muk[i];
        if (kt_k) it->kq[g] = kvt_prep_query(kt_k, qg, it->qy + (size_t)g * hd);
    }
    memset(it->acc, 0, sizeof(float) * (size_t)ng * hd);
    if (it->view[1][1].kt) memset(it->accy, 0, sizeof(float) * (size_t)ng * hd);
}

/* With an attention sink of logit z: the factor turning a weighted sum of
 * values with running max m and sum l into the output, e^(m-M) / (l e^(m-M) +
 * e^(z-M)), M = max(m, z) (the sink holds no value; no position: 0). */
static float sink_scale(float m, float l, float z) {
    if (!(l > 0)) return 0.0f;
    const float M = m > z ? m : z, c = expf(m - M);
    return c / (l * c + expf(z - M));
}

/* The item's result: part NULL, the normalized outputs into a->O (tokens
 * from t0); else each query's partial at part + j * partial_floats(hd). */
static void item_finish(item *it, int t0, int hk, float *part) {
    const attention_args *a = it->a;
    const int hd = it->hd, ng = it->ng, n_group = it->n_group;
    const kvt_head *kt_v = it->view[1][1].kt;
    if (kt_v) /* bring the kt V rows' y-space sum back into the value space */
        for (int g = 0; g < ng; g++) {
            float *ay = it->accy + (size_t)g * hd;
            if (!it->per_head)
                for (int i = 0; i < hd; i++) ay[i] *= kt_v->sigma[i];
            kvt_finish(kt_v, ay, it->wkt[g], it->acc + (size_t)g * hd);
        }
    for (int g = 0; g < ng; g++) {
        const float *acc = it->acc + (size_t)g * hd;
        if (part) {
            att_partial *P = (att_partial *)(void *)(part + (size_t)g * partial_floats(hd));
            P->m = it->m[g];
            P->l = it->l[g];
            for (int i = 0; i < hd; i++) P->acc[i] = acc[i] + (it->muv ? it->wmu[g] * it->muv[i] : 0.0f);
            continue;
        }
        float *out = a->O + (size_t)(t0 + g / n_group) * a->n_head * hd + (size_t)(hk * n_group + g % n_group) * hd;
        float inv = it->l[g] > 0 ? 1.0f / it->l[g] : 0.0f;
        if (a->sinks) inv = sink_scale(it->m[g], it->l[g], a->sinks[hk * n_group + g % n_group]);
        for (int i = 0; i < hd; i++) out[i] = (acc[i] + (it->muv ? it->wmu[g] * it->muv[i] : 0.0f)) * inv;
    }
}

/* Tokens [t0, t0 + nt) (one sequence) and KV heads [hk0, hk1), over
 * positions [p0, p1) (cut at multiples of ATT_BLOCK; p1 past the end: to the
 * end). Each block's rows are found once and visited for every head in turn.
 * part NULL: the normalized outputs into a->O; else head hk's partials at
 * part(hk) = part + (hk - hk0) * part_stride. */
static void attention_unit(const attention_args *a, int t0, int nt, int hk0, int hk1, float *scratch, int32_t p0,
                           int32_t p1, float *part, size_t part_stride) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv, ng = nt * n_group, nh = hk1 - hk0;
    const kv_cache *kv = a->kv;
    const uint32_t seq = (uint32_t)a->seq[t0], layer = a->layer;
    const kv_layout *lk = kv_cache_layout_k(kv, layer), *lv = kv_cache_layout_v(kv, layer);
    item items[ATT_HEAD_GROUP];
    float *rowtmp = scratch + (size_t)nh * head_floats(ng, hd);
    float *tile = rowtmp + (size_t)a->n_head_kv * hd;
    float *S = tile + (size_t)ATT_TILE_ROWS * hd;
    /* rows and slots the 8- and 16-row kernels touch past a run hold zeros, not garbage */
    memset(tile, 0, sizeof(float) * ((size_t)ATT_TILE_ROWS * hd + (size_t)ng * SROW));
    int32_t n_kv = 0;
    for (int j = 0; j < nt; j++)
        if (a->pos[t0 + j] + 1 > n_kv) n_kv = a->pos[t0 + j] + 1;
    for (int h = 0; h < nh; h++)
        item_init(&items[h], a, t0, nt, hk0 + h, scratch + (size_t)h * head_floats(ng, hd), rowtmp, tile, S);
    if (a->window > 0) { /* a sliding window: from the block holding the tokens' first visible position */
        int32_t lo = n_kv;
        for (int j = 0; j < nt; j++) lo = items[0].lo[j] < lo ? items[0].lo[j] : lo;
        lo = lo / ATT_BLOCK * ATT_BLOCK;
        if (lo > p0) p0 = lo;
    }

    const uint8_t *krows[ATT_BLOCK], *vrows[ATT_BLOCK];
    bool codec[ATT_BLOCK];
    const kv_layout *l1, *l2;
    /* kv_cache.c keeps the f16 sink rows at the start and the f16 window rows
     * (the most recently stored positions) at the end: codec rows are
     * [s0, c1) of what this query sees. */
    int32_t c1 = n_kv, s0 = p0 < n_kv ? p0 : n_kv;
    while (c1 > s0) {
        kv_cache_k_at(kv, seq, layer, (uint32_t)(c1 - 1), &l1);
        if (l1 == lk) break;
        c1--;
    }
    while (s0 < c1) {
        kv_cache_k_at(kv, seq, layer, (uint32_t)s0, &l1);
        if (l1 == lk) break;
        s0++;
    }
    /* the bytes of a row the unit's heads read: one run [pk0, pk1) of each K
     * row (and of each V row), whole rows when a codec block spans heads */
    const head_view *k_first = &items[0].view[0][1], *k_last = &items[nh - 1].view[0][1];
    const head_view *v_first = &items[0].view[1][1], *v_last = &items[nh - 1].view[1][1];
    const size_t pk0 = k_first->fused ? k_first->ofs_bytes : 0;
    const size_t pk1 = k_last->fused ? k_last->ofs_bytes + k_last->seg_bytes : lk->row_bytes;
    const size_t pv0 = v_first->fused ? v_first->ofs_bytes : 0;
    const size_t pv1 = v_last->fused ? v_last->ofs_bytes + v_last->seg_bytes : lv->row_bytes;
    /* a verified run of codec rows [run0, run1) at run_k/run_v: contiguous
     * within one page, its first and last rows looked up */
    int32_t run0 = 0, run1 = 0;
    const uint8_t *run_k = NULL, *run_v = NULL;
    const size_t kstride = lk->row_bytes, vstride = lv->row_bytes;
    const int32_t end_kv = p1 < n_kv ? p1 : n_kv;
    /* the next block's contiguous bytes to prefetch (none: 0 bytes) */
    const uint8_t *pf_k = NULL, *pf_v = NULL;
    size_t pf_kn = 0, pf_vn = 0;
    for (int32_t b0 = p0; b0 < end_kv; b0 += ATT_BLOCK) {
        const int nr = n_kv - b0 < ATT_BLOCK ? n_kv - b0 : ATT_BLOCK;
        if (b0 >= s0 && b0 + nr <= c1 && !(b0 >= run0 && b0 + nr <= run1)) {
            int32_t end = (int32_t)kv_cache_run_end(kv, seq, layer, (uint32_t)b0);
            if (end > c1) end = c1;
            const uint8_t *k0 = kv_cache_k_at(kv, seq, layer, (uint32_t)b0, &l1);
            const uint8_t *v0 = kv_cache_v_at(kv, seq, layer, (uint32_t)b0, &l2);
            const uint8_t *k1 = kv_cache_k_at(kv, seq, layer, (uint32_t)(end - 1), &l1);
            const uint8_t *v1 = kv_cache_v_at(kv, seq, layer, (uint32_t)(end - 1), &l2);
            run0 = run1 = 0; /* unverified: rows looked up one by one */
            if (l1 == lk && l2 == lv && k1 == k0 + (size_t)(end - 1 - b0) * kstride &&
                v1 == v0 + (size_t)(end - 1 - b0) * vstride) {
                run0 = b0;
                run1 = end;
                run_k = k0;
                run_v = v0;
            }
        }
        if (b0 >= run0 && b0 + nr <= run1) {
            const uint8_t *k0 = run_k + (size_t)(b0 - run0) * kstride, *v0 = run_v + (size_t)(b0 - run0) * vstride;
            for (int r = 0; r < nr; r++) {
                krows[r] = k0 + (size_t)r * kstride;
                vrows[r] = v0 + (size_t)r * vstride;
                codec[r] = true;
            }
#if ATT_PREFETCH
            /* the next block's bytes of this run, while this one computes:
             * with all the row's heads in the unit, one contiguous range
             * (sliced between the heads below); else each row's run of bytes */
            if (pk1 - pk0 + 1 > (size_t)ATT_PREFETCH_MIN_BYTES) { /* ">=" without -Wtype-limits at 0 */
                const int32_t nn = b0 + 2 * nr <= run1 ? nr : run1 - b0 - nr;
                if (nn > 0) {
                    if (pk1 - pk0 == kstride) {
                        pf_k = k0 + (size_t)nr * kstride;
                        pf_v = v0 + (size_t)nr * vstride;
                        pf_kn = (size_t)nn * kstride;
                        pf_vn = (size_t)nn * vstride;
                    } else {
                        for (int r = nr; r < nr + nn; r++) {
                            const uint8_t *kp = k0 + (size_t)r * kstride, *vp = v0 + (size_t)r * vstride;
                            for (size_t o = pk0; o < pk1; o += 64) __builtin_prefetch(kp + o);
                            for (size_t o = pv0; o < pv1; o += 64) __builtin_prefetch(vp + o);
                        }
                    }
                }
            }
#endif
        } else {
            /* sink or window rows (or a run that did not verify): one by one */
            for (int r = 0; r < nr; r++) {
                krows[r] = kv_cache_k_at(kv, seq, layer, (uint32_t)(b0 + r), &l1);
                vrows[r] = kv_cache_v_at(kv, seq, layer, (uint32_t)(b0 + r), &l2);
                codec[r] = l1 == lk;
                if (!codec[r] && !items[0].have_f16)
                    for (int h = 0; h < nh; h++) {
                        item *it = &items[h];
                        it->view[0][0] = it->view[1][0] = head_view_make(l1, hk0 + h, hd);
                        it->view[0][0].kt = it->view[1][0].kt = NULL;
                        it->have_f16 = true;
                    }
            }
        }
        /* the contiguous prefetch in nh slices, one before each head's work:
         * issued at once, the block's hundreds of lines fill the miss
         * buffers and the prefetch instructions themselves stall */
        for (int h = 0; h < nh; h++) {
            if (pf_kn) {
                const size_t ka = pf_kn * (size_t)h / (size_t)nh & ~(size_t)63, kb = pf_kn * (size_t)(h + 1) / (size_t)nh;
                const size_t va = pf_vn * (size_t)h / (size_t)nh & ~(size_t)63, vb = pf_vn * (size_t)(h + 1) / (size_t)nh;
                for (size_t o = ka; o < kb; o += 64) __builtin_prefetch(pf_k + o);
                for (size_t o = va; o < vb; o += 64) __builtin_prefetch(pf_v + o);
            }
            run_block(&items[h], b0, nr, krows, vrows, codec);
        }
        pf_kn = pf_vn = 0;
    }
    for (int h = 0; h < nh; h++) item_finish(&items[h], t0, hk0 + h, part ? part + (size_t)h * part_stride : NULL);
}

typedef struct {
    const attention_args *a;
    int n_tiles;
    const int *t0;  /* (n_tiles + 1,) first token of each tile; NULL: one token per tile */
    int n_split;    /* splits per item */
    int32_t span;   /* positions per split (a multiple of ATT_BLOCK) */
    int group;      /* KV heads per unit */
    float *part;    /* n_split > 1: (item, split, query) partials, item = tile * n_head_kv + KV head */
    int max_q;      /* queries per item at most */
    atomic_int next; /* the next unit to claim */
} attention_work;

/* Units: (tile, group of KV heads, split), the split fastest, claimed one
 * at a time from a shared counter (a split at the end of the cache is
 * shorter than the others, so dealing them out in turn would leave one
 * thread with the long ones). Which thread runs a unit changes nothing in
 * its result. */
static void attention_worker(void *arg, int ith, int nth) {
    (void)nth;
    attention_work *w = arg;
    const attention_args *a = w->a;
    const int n_groups = (a->n_head_kv + w->group - 1) / w->group;
    const int n_units = w->n_tiles * n_groups * w->n_split;
    const size_t stride = partial_floats(a->head_dim) * (size_t)w->max_q; /* one (item, split) */
    float *scratch = a->scratch + (size_t)ith * attention_scratch_floats(a->n_head, a->n_head_kv, a->head_dim);
    for (int u; (u = atomic_fetch_add_explicit(&w->next, 1, memory_order_relaxed)) < n_units;) {
        const int sp = u % w->n_split, grp = u / w->n_split % n_groups, tile = u / w->n_split / n_groups;
        const int t0 = w->t0 ? w->t0[tile] : tile, nt = w->t0 ? w->t0[tile + 1] - t0 : 1;
        const int hk0 = grp * w->group, hk1 = hk0 + w->group < a->n_head_kv ? hk0 + w->group : a->n_head_kv;
        if (w->n_split == 1) attention_unit(a, t0, nt, hk0, hk1, scratch, 0, INT32_MAX, NULL, 0);
        else
            attention_unit(a, t0, nt, hk0, hk1, scratch, sp * w->span, (sp + 1) * w->span,
                           w->part + ((size_t)(tile * a->n_head_kv + hk0) * w->n_split + sp) * stride,
                           (size_t)w->n_split * stride);
    }
}

/* The exact merge of an item's splits: with M the largest running max,
 * out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s. */
static void merge_splits(const attention_work *w, int it) {
    const attention_args *a = w->a;
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv, hk = it % a->n_head_kv, tile = it / a->n_head_kv;
    const int t0 = w->t0 ? w->t0[tile] : tile, nt = w->t0 ? w->t0[tile + 1] - t0 : 1;
    const size_t pf = partial_floats(hd), stride = pf * (size_t)w->max_q;
    const float *base = w->part + (size_t)it * w->n_split * stride;
    for (int g = 0; g < nt * n_group; g++) {
        float M = -INFINITY;
        for (int s = 0; s < w->n_split; s++) {
            const att_partial *P = (const att_partial *)(const void *)(base + s * stride + g * pf);
            if (P->l > 0 && P->m > M) M = P->m;
        }
        float *out = a->O + (size_t)(t0 + g / n_group) * a->n_head * hd + (size_t)(hk * n_group + g % n_group) * hd;
        float l = 0.0f;
        for (int i = 0; i < hd; i++) out[i] = 0.0f;
        for (int s = 0; s < w->n_split; s++) {
            const att_partial *P = (const att_partial *)(const void *)(base + s * stride + g * pf);
            if (!(P->l > 0)) continue; /* no position of this query in the split */
            const float c = expf(P->m - M);
            l += c * P->l;
            for (int i = 0; i < hd; i++) out[i] += c * P->acc[i];
        }
        float inv = l > 0 ? 1.0f / l : 0.0f;
        if (a->sinks) inv = sink_scale(M, l, a->sinks[hk * n_group + g % n_group]); /* once, at the merge */
        for (int i = 0; i < hd; i++) out[i] *= inv;
    }
}

static void merge_worker(void *arg, int ith, int nth) {
    const attention_work *w = arg;
    for (int it = ith; it < w->n_tiles * w->a->n_head_kv; it += nth) merge_splits(w, it);
}

/* Flash-decoding: in a batch of at most ATT_SPLIT_ITEMS (tile, KV head)
 * items over more than ATT_SPAN positions, each item's positions are cut at
 * the multiples of ATT_SPAN and the runs merged exactly at the end. Where the
 * cuts are depends on the positions only, never on the threads (which only
 * change how the units are dealt out), so the results are the same with any
 * number of threads. */
#ifndef ATT_SPAN
#define ATT_SPAN 2048 /* a multiple of ATT_BLOCK and of KV_PAGE_TOKENS; each split pays the kt* query
                        * transform, the units' set-up and a partial: at 16384, splits of 4096 ran kt3.5
                        * 24.4-26.9 ns per (position, KV head) against 26.2-27.5 with 1024 (bench/attn_depth.c
                        * -C -t 1); 2048 halves 1024's overhead and keeps two units per thread from depth 4096 */
#endif
#ifndef ATT_SPLIT_ITEMS
#define ATT_SPLIT_ITEMS 64
#endif

void attention_batch(threadpool *tp, attention_args *a) {
    pthread_once(&kern_once, kern_select);
    /* tiles: runs of up to tile_tokens() consecutive tokens of one sequence */
    const int per = tile_tokens(a->n_head / a->n_head_kv);
    attention_work w = {a, a->n_tok, NULL, 1, 0, 1, NULL, a->n_head / a->n_head_kv, 0};
    atomic_init(&w.next, 0);
    int *t0 = per > 1 && a->n_tok > 1 ? malloc(sizeof(int) * ((size_t)a->n_tok + 1)) : NULL;
    if (t0) {
        int n = 0;
        for (int t = 0; t < a->n_tok; t++)
            if (n == 0 || t - t0[n - 1] == per || a->seq[t] != a->seq[t0[n - 1]]) t0[n++] = t;
        t0[n] = a->n_tok;
        w.n_tiles = n;
        w.t0 = t0;
        w.max_q *= per;
    }
    int32_t max_kv = 0;
    for (int t = 0; t < a->n_tok; t++) max_kv = a->pos[t] + 1 > max_kv ? a->pos[t] + 1 : max_kv;
    const int nth = tp ? threadpool_size(tp) : 1, n_items = w.n_tiles * a->n_head_kv;
    int n_split = a->n_split;
    if (n_split <= 0) { /* splits at fixed positions, multiples of ATT_SPAN */
        n_split = n_items <= ATT_SPLIT_ITEMS && max_kv > ATT_SPAN ? (max_kv + ATT_SPAN - 1) / ATT_SPAN : 1;
        w.span = ATT_SPAN;
    } else { /* exactly n_split runs of whole blocks (tests) */
        const int32_t blocks = (max_kv + ATT_BLOCK - 1) / ATT_BLOCK;
        if (n_split > blocks) n_split = blocks > 0 ? blocks : 1;
        w.span = (blocks + n_split - 1) / n_split * ATT_BLOCK;
        n_split = (max_kv + w.span - 1) / w.span; /* no empty trailing split */
    }
    if (n_split > 1) {
        w.part = malloc(sizeof(float) * partial_floats(a->head_dim) * (size_t)w.max_q * (size_t)n_items * n_split);
        if (!w.part) n_split = 1; /* out of memory: the unsplit path needs nothing more */
    }
    w.n_split = n_split > 1 ? n_split : 1;
    /* as many heads per unit as still leaves two units per thread */
    w.group = a->n_head_kv < ATT_HEAD_GROUP ? a->n_head_kv : ATT_HEAD_GROUP;
    while (w.group > 1 && w.n_tiles * ((a->n_head_kv + w.group - 1) / w.group) * w.n_split < 2 * nth)
        w.group = (w.group + 1) / 2;
    threadpool_run(tp, attention_worker, &w);
    if (w.n_split > 1) threadpool_run(tp, merge_worker, &w);
    free(w.part);
    free(t0);
}

/* Decodes head hk of an encoded row into out (hd values), whatever the segment layout. */
static void decode_head_ref(const kv_layout *l, const uint8_t *row, int hk, int hd, int n_head_kv, float *out) {
    if (l->kvt && l->seg == hd) {
        kvt_decode(&l->kvt[hk], row + (size_t)hk * l->seg_bytes, out);
        return;
    }
    float *all = malloc(sizeof(float) * (size_t)hd * n_head_kv);
    for (int s = 0; s < hd * n_head_kv / l->seg; s++)
        if (l->kvt) kvt_decode(&l->kvt[s], row + (size_t)s * l->seg_bytes, all + (size_t)s * l->seg); /* kttr*: s = 0 */
        else l->codec->kern->decode(row + (size_t)s * l->seg_bytes, all + (size_t)s * l->seg, l->seg);
    memcpy(out, all + (size_t)hk * hd, sizeof(float) * (size_t)hd);
    free(all);
}

void attention_reference(const attention_args *a) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv;
    float *k = malloc(sizeof(float) * hd), *v = malloc(sizeof(float) * hd);
    for (int t = 0; t < a->n_tok; t++) {
        const int32_t n_kv = a->pos[t] + 1;
        int32_t lo = 0;
        if (a->window > 0) {
            lo = (int32_t)kv_cache_first_pos(a->kv, (uint32_t)a->seq[t], a->layer);
            if (a->pos[t] - a->window + 1 > lo) lo = a->pos[t] - a->window + 1;
        }
        double *sc = malloc(sizeof(double) * (size_t)n_kv);
        for (int h = 0; h < a->n_head; h++) {
            const int hk = h / n_group;
            const float *q = a->Q + ((size_t)t * a->n_head + h) * hd;
            double mx = -INFINITY, sum = 0.0;
            for (int32_t p = lo; p < n_kv; p++) {
                const kv_layout *l;
                const uint8_t *row = kv_cache_k_at(a->kv, (uint32_t)a->seq[t], a->layer, (uint32_t)p, &l);
                decode_head_ref(l, row, hk, hd, a->n_head_kv, k);
                const float *mu = kv_cache_center_k(a->kv, (uint32_t)a->seq[t], a->layer);
                if (mu && l == kv_cache_layout_k(a->kv, a->layer))
                    for (int i = 0; i < hd; i++) k[i] += mu[(size_t)hk * hd + i];
                double s = 0.0;
                for (int i = 0; i < hd; i++) s += (double)q[i] * k[i];
                sc[p] = s * a->scale;
                if (a->softcap > 0) sc[p] = a->softcap * tanh(sc[p] / a->softcap);
                mx = sc[p] > mx ? sc[p] : mx;
            }
            if (a->sinks && a->sinks[h] > mx) mx = a->sinks[h];
            for (int32_t p = lo; p < n_kv; p++) sum += (sc[p] = exp(sc[p] - mx));
            if (a->sinks) sum += exp(a->sinks[h] - mx);
            float *o = a->O + ((size_t)t * a->n_head + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int32_t p = lo; p < n_kv; p++) {
                const kv_layout *l;
                const uint8_t *row = kv_cache_v_at(a->kv, (uint32_t)a->seq[t], a->layer, (uint32_t)p, &l);
                decode_head_ref(l, row, hk, hd, a->n_head_kv, v);
                const float *mu = kv_cache_center_v(a->kv, (uint32_t)a->seq[t], a->layer);
                if (mu && l == kv_cache_layout_v(a->kv, a->layer))
                    for (int i = 0; i < hd; i++) v[i] += mu[(size_t)hk * hd + i];
                for (int i = 0; i < hd; i++) o[i] += (float)(sc[p] / sum) * v[i];
            }
        }
        free(sc);
    }
    free(k);
    free(v);
}
