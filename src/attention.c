/* attention.c — attention over encoded cache rows with the codecs' fused
 * dot/axpy kernels and an online (streaming) softmax. */
#include "attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t attention_scratch_floats(int n_head, int n_head_kv, int head_dim) {
    /* acc, then K and V row decode buffers, then kt* query and y-space accumulators */
    return 3 * (size_t)(n_head / n_head_kv) * head_dim + 2 * (size_t)n_head_kv * head_dim;
}

/* Where head hk's values live in a row encoded as segments of seg values. */
typedef struct {
    const kv_codec *c;
    int seg;
    size_t seg_bytes, ofs_bytes; /* fused path: byte offset of the head's segment */
    int seg_index, ofs_values;   /* decode path: segment holding the head, offset inside it */
    bool fused;
} head_view;

static head_view head_view_make(const kv_layout *l, int hk, int hd) {
    head_view v = {l->codec, l->seg, l->seg_bytes, 0, 0, 0, l->seg == hd};
    if (v.fused) {
        v.ofs_bytes = (size_t)hk * l->seg_bytes;
    } else {
        v.seg_index = hk * hd / l->seg;
        v.ofs_values = hk * hd % l->seg;
    }
    return v;
}

/* Decodes the head's values (decode path only) into tmp, returns a pointer to them. */
static float *head_decode(const head_view *v, const uint8_t *row, float *tmp) {
    v->c->decode(row + (size_t)v->seg_index * v->seg_bytes, tmp, v->seg);
    return tmp + v->ofs_values;
}

/* One work item = (query token, KV head): the n_group query heads sharing that
 * KV head are scored against each cached row, so every row is read once. */
static void attention_item(const attention_args *a, int t, int hk, float *scratch) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv;
    /* views for the codec layout, and for f16 sink/window rows (resolved per position) */
    const kv_layout *lk = kv_cache_layout_k(a->kv, a->layer), *lv = kv_cache_layout_v(a->kv, a->layer);
    const kv_layout *l16 = NULL;
    const head_view ck = head_view_make(lk, hk, hd), cv = head_view_make(lv, hk, hd);
    head_view fk = ck, fv = cv;
    float *acc = scratch, *ktmp = scratch + (size_t)n_group * hd, *vtmp = ktmp + (size_t)a->n_head_kv * hd;
    float *qy = vtmp + (size_t)a->n_head_kv * hd, *accy = qy + (size_t)n_group * hd; /* kt* paths */
    const kvt_head *kt_k = lk->kvt ? &lk->kvt[hk] : NULL, *kt_v = lv->kvt ? &lv->kvt[hk] : NULL;
    float kq[64], wkt[64]; /* q·mu of the K transform; softmax weight carried by kt V rows */
    const float *q = a->Q + (size_t)t * a->n_head * hd + (size_t)hk * n_group * hd;
    float m[64], l[64]; /* running max and sum per query head (n_group <= 64 checked at context creation) */
    float qmu[64], wmu[64]; /* q·mu_k per query head; softmax weight carried by centered V rows */
    const uint32_t seq = (uint32_t)a->seq[t];
    const float *muk = kv_cache_center_k(a->kv, seq, a->layer), *muv = kv_cache_center_v(a->kv, seq, a->layer);
    if (muk) muk += (size_t)hk * hd;
    if (muv) muv += (size_t)hk * hd;
    for (int g = 0; g < n_group; g++) {
        m[g] = -INFINITY;
        l[g] = wmu[g] = qmu[g] = wkt[g] = 0.0f;
        if (muk)
            for (int i = 0; i < hd; i++) qmu[g] += q[(size_t)g * hd + i] * muk[i];
        if (kt_k) kq[g] = kvt_prep_query(kt_k, q + (size_t)g * hd, qy + (size_t)g * hd);
    }
    memset(acc, 0, sizeof(float) * (size_t)n_group * hd);
    if (kt_v) memset(accy, 0, sizeof(float) * (size_t)n_group * hd);
    const int32_t n_kv = a->pos[t] + 1;
    for (int32_t p = 0; p < n_kv; p++) {
        const kv_layout *lkp, *lvp;
        const uint8_t *krow = kv_cache_k_at(a->kv, seq, a->layer, (uint32_t)p, &lkp);
        const uint8_t *vrow = kv_cache_v_at(a->kv, seq, a->layer, (uint32_t)p, &lvp);
        if ((lkp != lk || lvp != lv) && !l16) {
            l16 = lkp != lk ? lkp : lvp;
            fk = head_view_make(l16, hk, hd);
            fv = fk;
        }
        const head_view kv_k = lkp == lk ? ck : fk, kv_v = lvp == lv ? cv : fv;
        const bool k_codec = lkp == lk, v_codec = lvp == lv; /* centered rows */
        const bool k_kt = k_codec && kt_k, v_kt = v_codec && kt_v;
        float *kd = kv_k.fused || k_kt ? NULL : head_decode(&kv_k, krow, ktmp);
        float *vd = kv_v.fused || v_kt ? NULL : head_decode(&kv_v, vrow, vtmp);
        if (kd && muk && k_codec)
            for (int i = 0; i < hd; i++) kd[i] += muk[i];
        if (vd && muv && v_codec)
            for (int i = 0; i < hd; i++) vd[i] += muv[i];
        for (int g = 0; g < n_group; g++) {
            const float *qg = q + (size_t)g * hd;
            float s;
            if (k_kt) {
                s = kvt_dot(kt_k, krow + kv_k.ofs_bytes, qy + (size_t)g * hd) + kq[g];
            } else if (kd) {
                s = 0.0f;
                for (int i = 0; i < hd; i++) s += kd[i] * qg[i];
            } else {
                s = kv_k.c->dot(krow + kv_k.ofs_bytes, qg, hd);
                if (k_codec) s += qmu[g];
            }
            s *= a->scale;
            float *o = acc + (size_t)g * hd;
            if (s > m[g]) {
                const float c = expf(m[g] - s); /* 0 on the first row */
                for (int i = 0; i < hd; i++) o[i] *= c;
                l[g] *= c;
                wmu[g] *= c;
                wkt[g] *= c;
                if (kt_v)
                    for (int i = 0; i < hd; i++) accy[(size_t)g * hd + i] *= c;
                m[g] = s;
            }
            const float w = expf(s - m[g]);
            l[g] += w;
            if (v_kt) {
                kvt_axpy(kt_v, vrow + kv_v.ofs_bytes, w, accy + (size_t)g * hd);
                wkt[g] += w;
            } else if (vd) {
                for (int i = 0; i < hd; i++) o[i] += w * vd[i];
            } else {
                kv_v.c->axpy(vrow + kv_v.ofs_bytes, w, o, hd);
                if (v_codec) wmu[g] += w;
            }
        }
    }
    float *out = a->O + (size_t)t * a->n_head * hd + (size_t)hk * n_group * hd;
    if (kt_v) /* bring the kt V rows' y-space sum back into the value space */
        for (int g = 0; g < n_group; g++) kvt_finish(kt_v, accy + (size_t)g * hd, wkt[g], acc + (size_t)g * hd);
    for (int g = 0; g < n_group; g++) {
        const float inv = l[g] > 0 ? 1.0f / l[g] : 0.0f;
        for (int i = 0; i < hd; i++)
            out[(size_t)g * hd + i] = (acc[(size_t)g * hd + i] + (muv ? wmu[g] * muv[i] : 0.0f)) * inv;
    }
}

static void attention_worker(void *arg, int ith, int nth) {
    const attention_args *a = arg;
    const int n_items = a->n_tok * a->n_head_kv;
    float *scratch = a->scratch + (size_t)ith * attention_scratch_floats(a->n_head, a->n_head_kv, a->head_dim);
    for (int it = ith; it < n_items; it += nth) attention_item(a, it / a->n_head_kv, it % a->n_head_kv, scratch);
}

void attention_batch(threadpool *tp, attention_args *a) { threadpool_run(tp, attention_worker, a); }

/* Decodes head hk of an encoded row into out (hd values), whatever the segment layout. */
static void decode_head_ref(const kv_layout *l, const uint8_t *row, int hk, int hd, int n_head_kv, float *out) {
    if (l->kvt) {
        kvt_decode(&l->kvt[hk], row + (size_t)hk * l->seg_bytes, out);
        return;
    }
    float *all = malloc(sizeof(float) * (size_t)hd * n_head_kv);
    for (int s = 0; s < hd * n_head_kv / l->seg; s++)
        l->codec->decode(row + (size_t)s * l->seg_bytes, all + (size_t)s * l->seg, l->seg);
    memcpy(out, all + (size_t)hk * hd, sizeof(float) * (size_t)hd);
    free(all);
}

void attention_reference(const attention_args *a) {
    const int hd = a->head_dim, n_group = a->n_head / a->n_head_kv;
    float *k = malloc(sizeof(float) * hd), *v = malloc(sizeof(float) * hd);
    for (int t = 0; t < a->n_tok; t++) {
        const int32_t n_kv = a->pos[t] + 1;
        double *sc = malloc(sizeof(double) * (size_t)n_kv);
        for (int h = 0; h < a->n_head; h++) {
            const int hk = h / n_group;
            const float *q = a->Q + ((size_t)t * a->n_head + h) * hd;
            double mx = -INFINITY, sum = 0.0;
            for (int32_t p = 0; p < n_kv; p++) {
                const kv_layout *l;
                const uint8_t *row = kv_cache_k_at(a->kv, (uint32_t)a->seq[t], a->layer, (uint32_t)p, &l);
                decode_head_ref(l, row, hk, hd, a->n_head_kv, k);
                const float *mu = kv_cache_center_k(a->kv, (uint32_t)a->seq[t], a->layer);
                if (mu && l == kv_cache_layout_k(a->kv, a->layer))
                    for (int i = 0; i < hd; i++) k[i] += mu[(size_t)hk * hd + i];
                double s = 0.0;
                for (int i = 0; i < hd; i++) s += (double)q[i] * k[i];
                sc[p] = s * a->scale;
                mx = sc[p] > mx ? sc[p] : mx;
            }
            for (int32_t p = 0; p < n_kv; p++) sum += (sc[p] = exp(sc[p] - mx));
            float *o = a->O + ((size_t)t * a->n_head + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int32_t p = 0; p < n_kv; p++) {
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
