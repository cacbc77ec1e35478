/* attention.c — attention over encoded cache rows with the codecs' fused
 * dot/axpy kernels and an online (streaming) softmax. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One work item = (query token, KV head): the n_group query heads sharing that
 * KV head are scored against each cached row, so every row is read once. */
static void attention_item(const attention_args *a, int t, int hk, float *acc) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv;
    const kv_codec *ck = kv_cache_codec_k(a->kv), *cv = kv_cache_codec_v(a->kv);
    const size_t kofs = (size_t)hk * kv_cache_k_head_bytes(a->kv), vofs = (size_t)hk * kv_cache_v_head_bytes(a->kv);
    const float *q = a->Q + (size_t)t * a->n_head * hd + (size_t)hk * n_group * hd;
    float m[64], l[64]; /* running max and sum per query head (n_group <= 64 checked at context creation) */
    for (int g = 0; g < n_group; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    memset(acc, 0, sizeof(float) * (size_t)n_group * hd);
    const uint32_t seq = (uint32_t)a->seq[t];
    const int32_t n_kv = a->pos[t] + 1;
    for (int32_t p = 0; p < n_kv; p++) {
        const uint8_t *krow = kv_cache_k_row(a->kv, seq, a->layer, (uint32_t)p) + kofs;
        const uint8_t *vrow = kv_cache_v_row(a->kv, seq, a->layer, (uint32_t)p) + vofs;
        for (int g = 0; g < n_group; g++) {
            const float s = ck->dot(krow, q + (size_t)g * hd, hd) * a->scale;
            float *o = acc + (size_t)g * hd;
            if (s > m[g]) {
                const float c = expf(m[g] - s); /* 0 on the first row */
                for (int i = 0; i < hd; i++) o[i] *= c;
                l[g] *= c;
                m[g] = s;
            }
            const float w = expf(s - m[g]);
            l[g] += w;
            cv->axpy(vrow, w, o, hd);
        }
    }
    float *out = a->O + (size_t)t * a->n_head * hd + (size_t)hk * n_group * hd;
    for (int g = 0; g < n_group; g++) {
        const float inv = l[g] > 0 ? 1.0f / l[g] : 0.0f;
        for (int i = 0; i < hd; i++) out[(size_t)g * hd + i] = acc[(size_t)g * hd + i] * inv;
    }
}

static void attention_worker(void *arg, int ith, int nth) {
    const attention_args *a = arg;
    const int n_items = a->n_tok * a->n_head_kv;
    float *acc = a->scratch + (size_t)ith * (a->n_head / a->n_head_kv) * a->head_dim;
    for (int it = ith; it < n_items; it += nth) attention_item(a, it / a->n_head_kv, it % a->n_head_kv, acc);
}

void attention_batch(threadpool *tp, attention_args *a) { threadpool_run(tp, attention_worker, a); }

void attention_reference(const attention_args *a) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv;
    const kv_codec *ck = kv_cache_codec_k(a->kv), *cv = kv_cache_codec_v(a->kv);
    float *k = malloc(sizeof(float) * hd), *v = malloc(sizeof(float) * hd);
    for (int t = 0; t < a->n_tok; t++) {
        const int32_t n_kv = a->pos[t] + 1;
        double *sc = malloc(sizeof(double) * (size_t)n_kv);
        for (int h = 0; h < a->n_head; h++) {
            const int hk = h / n_group;
            const float *q = a->Q + ((size_t)t * a->n_head + h) * hd;
            double mx = -INFINITY, sum = 0.0;
            for (int32_t p = 0; p < n_kv; p++) {
                ck->decode(kv_cache_k_row(a->kv, (uint32_t)a->seq[t], a->layer, (uint32_t)p) +
                               (size_t)hk * kv_cache_k_head_bytes(a->kv), k, hd);
                double s = 0.0;
                for (int i = 0; i < hd; i++) s += (double)q[i] * k[i];
                sc[p] = s * a->scale;
                mx = sc[p] > mx ? sc[p] : mx;
            }
            for (int32_t p = 0; p < n_kv; p++) sum += (sc[p] = exp(sc[p] - mx));
            float *o = a->O + ((size_t)t * a->n_head + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int32_t p = 0; p < n_kv; p++) {
                cv->decode(kv_cache_v_row(a->kv, (uint32_t)a->seq[t], a->layer, (uint32_t)p) +
                               (size_t)hk * kv_cache_v_head_bytes(a->kv), v, hd);
                for (int i = 0; i < hd; i++) o[i] += (float)(sc[p] / sum) * v[i];
            }
        }
        free(sc);
    }
    free(k);
    free(v);
}
