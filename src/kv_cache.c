/* kv_cache.c — paged KV storage and the KV codec traits table. */
#include "kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "model.h"

/* ------------------------------------------------------------ the cache */

struct kv_cache {
    kv_cache_params p;
    const kv_codec *ck, *cv;
    int k_seg, v_seg;                 /* values per encoded segment */
    size_t k_seg_bytes, v_seg_bytes, k_row_bytes, v_row_bytes, page_bytes;
    uint32_t pages_per_seq;
    uint8_t **pages;     /* [seq][layer][page] -> page memory or NULL */
    uint32_t *n_pages;   /* [seq] pages allocated per layer */
    size_t allocated;
};

static uint8_t **page_slot(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t page) {
    return &kv->pages[((size_t)seq * kv->p.n_layer + layer) * kv->pages_per_seq + page];
}

kv_cache *kv_cache_create(const kv_cache_params *p, rotkv_error *err) {
    const kv_codec *ck = kv_codec_get(p->type_k), *cv = kv_codec_get(p->type_v);
    if (!ck || !cv) {
        rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "unknown KV cache type (k=%d, v=%d)", (int)p->type_k, (int)p->type_v);
        return NULL;
    }
    /* a segment is one head, or the whole row of all KV heads when a head is
     * smaller than the codec's block (blocks then span heads) */
    const uint32_t row = p->head_dim * p->n_head_kv;
    const int k_seg = p->head_dim % (uint32_t)ck->blck == 0 ? (int)p->head_dim : (int)row;
    const int v_seg = p->head_dim % (uint32_t)cv->blck == 0 ? (int)p->head_dim : (int)row;
    if (k_seg % ck->blck || v_seg % cv->blck) {
        rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED,
                        "a KV row of %u values (%u heads x %u) cannot be split into %s/%s blocks of %d/%d", row,
                        p->n_head_kv, p->head_dim, ck->name, cv->name, ck->blck, cv->blck);
        return NULL;
    }
    if (p->n_ctx == 0 || p->n_seq == 0 || p->n_layer == 0) {
        rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV cache needs n_ctx, n_seq and n_layer > 0");
        return NULL;
    }
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) {
        rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        return NULL;
    }
    kv->p = *p;
    kv->ck = ck;
    kv->cv = cv;
    kv->k_seg = k_seg;
    kv->v_seg = v_seg;
    kv->k_seg_bytes = ck->row_bytes(k_seg);
    kv->v_seg_bytes = cv->row_bytes(v_seg);
    kv->k_row_bytes = kv->k_seg_bytes * (row / (uint32_t)k_seg);
    kv->v_row_bytes = kv->v_seg_bytes * (row / (uint32_t)v_seg);
    kv->page_bytes = (kv->k_row_bytes + kv->v_row_bytes) * KV_PAGE_TOKENS;
    kv->pages_per_seq = (p->n_ctx + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS;
    kv->pages = calloc((size_t)p->n_seq * p->n_layer * kv->pages_per_seq, sizeof *kv->pages);
    kv->n_pages = calloc(p->n_seq, sizeof *kv->n_pages);
    if (!kv->pages || !kv->n_pages) {
        kv_cache_free(kv);
        rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        return NULL;
    }
    return kv;
}

void kv_cache_free(kv_cache *kv) {
    if (!kv) return;
    if (kv->pages && kv->n_pages)
        for (uint32_t s = 0; s < kv->p.n_seq; s++) kv_cache_truncate(kv, s, 0);
    free(kv->pages);
    free(kv->n_pages);
    free(kv);
}

rotkv_status kv_cache_reserve(kv_cache *kv, uint32_t seq, uint32_t n_tokens, rotkv_error *err) {
    if (seq >= kv->p.n_seq || n_tokens > kv->p.n_ctx)
        return rotkv_set_error(err, ROTKV_ERR_CONTEXT_FULL, "sequence %u: %u tokens exceed the context size %u",
                               seq, n_tokens, kv->p.n_ctx);
    uint32_t need = (n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS;
    if (need > kv->n_pages[seq] && kv->p.budget_bytes &&
        kv->allocated + (size_t)(need - kv->n_pages[seq]) * kv->page_bytes * kv->p.n_layer > kv->p.budget_bytes)
        return rotkv_set_error(err, ROTKV_ERR_KV_BUDGET,
                               "KV cache budget of %llu bytes is used up (%zu allocated; sequence %u needs %u more blocks)",
                               (unsigned long long)kv->p.budget_bytes, kv->allocated, seq, need - kv->n_pages[seq]);
    while (kv->n_pages[seq] < need) {
        uint32_t pg = kv->n_pages[seq];
        for (uint32_t l = 0; l < kv->p.n_layer; l++) {
            uint8_t *mem = malloc(kv->page_bytes);
            if (!mem) {
                for (uint32_t j = 0; j < l; j++) {
                    free(*page_slot(kv, seq, j, pg));
                    *page_slot(kv, seq, j, pg) = NULL;
                    kv->allocated -= kv->page_bytes;
                }
                return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory growing the KV cache to %u tokens", n_tokens);
            }
            *page_slot(kv, seq, l, pg) = mem;
            kv->allocated += kv->page_bytes;
        }
        kv->n_pages[seq]++;
    }
    return ROTKV_OK;
}

void kv_cache_truncate(kv_cache *kv, uint32_t seq, uint32_t n_tokens) {
    if (seq >= kv->p.n_seq) return;
    uint32_t keep = (n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS;
    while (kv->n_pages[seq] > keep) {
        uint32_t pg = --kv->n_pages[seq];
        for (uint32_t l = 0; l < kv->p.n_layer; l++) {
            free(*page_slot(kv, seq, l, pg));
            *page_slot(kv, seq, l, pg) = NULL;
            kv->allocated -= kv->page_bytes;
        }
    }
}

rotkv_status kv_cache_copy(kv_cache *kv, uint32_t src, uint32_t dst, uint32_t n_tokens, rotkv_error *err) {
    if (src >= kv->p.n_seq || dst >= kv->p.n_seq || src == dst)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "kv copy: bad sequences %u -> %u", src, dst);
    if ((n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS > kv->n_pages[src])
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "kv copy: sequence %u holds fewer than %u tokens", src, n_tokens);
    kv_cache_truncate(kv, dst, 0);
    rotkv_status st = kv_cache_reserve(kv, dst, n_tokens, err);
    if (st != ROTKV_OK) return st;
    for (uint32_t l = 0; l < kv->p.n_layer; l++)
        for (uint32_t pg = 0; pg < kv->n_pages[dst]; pg++)
            memcpy(*page_slot(kv, dst, l, pg), *page_slot(kv, src, l, pg), kv->page_bytes);
    return ROTKV_OK;
}

size_t kv_cache_page_bytes(const kv_cache *kv) { return kv->page_bytes * kv->p.n_layer; }

static uint8_t *row_ptr(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, int is_v) {
    uint8_t *page = *page_slot(kv, seq, layer, pos / KV_PAGE_TOKENS);
    const uint32_t i = pos % KV_PAGE_TOKENS;
    if (!is_v) return page + (size_t)i * kv->k_row_bytes;
    return page + (size_t)KV_PAGE_TOKENS * kv->k_row_bytes + (size_t)i * kv->v_row_bytes;
}

void kv_cache_store(kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const float *k, const float *v) {
    const uint32_t row = kv->p.head_dim * kv->p.n_head_kv;
    uint8_t *kr = row_ptr(kv, seq, layer, pos, 0), *vr = row_ptr(kv, seq, layer, pos, 1);
    for (uint32_t i = 0; i < row / (uint32_t)kv->k_seg; i++)
        kv->ck->encode(k + (size_t)i * kv->k_seg, kr + i * kv->k_seg_bytes, kv->k_seg);
    for (uint32_t i = 0; i < row / (uint32_t)kv->v_seg; i++)
        kv->cv->encode(v + (size_t)i * kv->v_seg, vr + i * kv->v_seg_bytes, kv->v_seg);
}

const uint8_t *kv_cache_k_row(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos) {
    return row_ptr(kv, seq, layer, pos, 0);
}
const uint8_t *kv_cache_v_row(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos) {
    return row_ptr(kv, seq, layer, pos, 1);
}
int kv_cache_k_seg(const kv_cache *kv) { return kv->k_seg; }
int kv_cache_v_seg(const kv_cache *kv) { return kv->v_seg; }
size_t kv_cache_k_seg_bytes(const kv_cache *kv) { return kv->k_seg_bytes; }
size_t kv_cache_v_seg_bytes(const kv_cache *kv) { return kv->v_seg_bytes; }
const kv_codec *kv_cache_codec_k(const kv_cache *kv) { return kv->ck; }
const kv_codec *kv_cache_codec_v(const kv_cache *kv) { return kv->cv; }

double kv_cache_bytes_per_token(const kv_cache *kv) {
    return (double)(kv->k_row_bytes + kv->v_row_bytes) * kv->p.n_layer;
}

size_t kv_cache_allocated_bytes(const kv_cache *kv) { return kv->allocated; }
