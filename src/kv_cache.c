/* kv_cache.c — paged KV storage: per (sequence, layer) a list of pages of
 * KV_PAGE_TOKENS token rows, K rows first, then V rows. Pages are allocated
 * as a sequence grows and freed when it shrinks. */
#include "kv_cache.h"

#include "kv_calib.h"
#include "kv_trellis.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"

struct kv_cache {
    kv_cache_params p;
    kv_layout *lk, *lv;   /* (n_layer,) */
    kv_layout l16;        /* f16 per-head layout of sink and window rows */
    uint8_t *side;        /* [seq][layer] (n_sink + n_window) f16 K rows, then as many V rows */
    int64_t *ring_pos;    /* [seq][layer][n_window] position held by each window slot, -1 if none */
    size_t side_bytes;    /* per (seq, layer) */
    float *evict_tmp;     /* (2 * row) scratch for moving a row out of the window */
    float *center;        /* [seq][layer] mu_k (row) then mu_v (row), when centering */
    kvt_head *kvt_k, *kvt_v; /* [layer][head] fitted transforms of kt* layers */
    bool *calibrated;        /* (n_layer,) */
    float *center_tmp;    /* (row) scratch for x - mu */
    bool *centered;       /* (n_layer, 2): K / V of the layer is centered (quantized, not kt) */
    size_t *page_bytes;   /* (n_layer,) bytes of one page of that layer */
    size_t page_bytes_all;/* sum over layers */
    uint32_t pages_per_seq;
    uint8_t **pages;      /* [seq][layer][page] -> page memory or NULL */
    uint32_t *n_pages;    /* [seq] pages allocated per global layer */
    size_t allocated;
    /* sliding-window layers (ring[l] > 0) */
    uint32_t *win, *ring, *ptok; /* (n_layer,) window, ring slots (0: global layer), tokens per page */
    size_t lin_page_bytes;       /* one page of every global layer */
    uint32_t *r_off, *r_lo, *r_hi, *r_pages; /* [seq][layer] slot offset, held positions [lo, hi), pages allocated */
};

static size_t sl(const kv_cache *kv, uint32_t seq, uint32_t layer) { return (size_t)seq * kv->p.n_layer + layer; }

/* Pages come straight from mmap (not the malloc heap) so that freeing one
 * returns its memory to the system at once and resident memory tracks the
 * cache exactly (the memory check of the KV-cache issue relies on it). */
static uint8_t *page_alloc(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void page_free(uint8_t *p, size_t bytes) {
    if (p) munmap(p, bytes);
}

static uint8_t **page_slot(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t page) {
    return &kv->pages[((size_t)seq * kv->p.n_layer + layer) * kv->pages_per_seq + page];
}

static bool layout_make(kv_layout *l, rotkv_kv_type t, const kv_cache_params *p, uint32_t layer, rotkv_error *err) {
    l->codec = kv_codec_get(t);
    if (!l->codec) {
        rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "layer %u: unknown KV cache type %d", layer, (int)t);
        return false;
    }
    const uint32_t row = p->head_dim * p->n_head_kv;
    l->kvt = NULL;
    const int kseg = l->codec->kt_bits > 0 ? kv_codec_kt_seg(l->codec, (int)p->head_dim, (int)p->n_head_kv) : 0;
    if (l->codec->kt_bits > 0 && kv_codec_kt_budget_bits(l->codec, kseg) < 1) {
        rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED, "layer %u: %s leaves no index bits for head_dim %u", layer,
                        l->codec->name, p->head_dim);
        return false;
    }
    if (l->codec->trellis && kseg > KTT_MAX_HD) {
        rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED, "layer %u: %s codes heads of at most %d values (head_dim %u)", layer,
                        l->codec->name, KTT_MAX_HD, p->head_dim);
        return false;
    }
    l->seg = kseg ? kseg : p->head_dim % (uint32_t)l->codec->blck == 0 ? (int)p->head_dim : (int)row;
    if (l->seg % l->codec->blck) {
        rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED,
                        "a KV row of %u values (%u heads x %u) cannot be split into %s blocks of %d", row,
                        p->n_head_kv, p->head_dim, l->codec->name, l->codec->blck);
        return false;
    }
    l->seg_bytes = l->codec->row_bytes(l->seg);
    l->row_bytes = l->seg_bytes * (row / (uint32_t)l->seg);
    return true;
}

kv_cache *kv_cache_create(const kv_cache_params *p, rotkv_error *err) {
    if (p->n_ctx == 0 || p->n_seq == 0 || p->n_layer == 0 || p->head_dim == 0 || p->n_head_kv == 0) {
        rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV cache needs n_ctx, n_seq, n_layer and head sizes > 0");
        return NULL;
    }
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) {
        rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        return NULL;
    }
    kv->p = *p;
    kv->p.layer_type_k = kv->p.layer_type_v = NULL; /* not kept: the caller owns them */
    kv->lk = calloc(p->n_layer, sizeof *kv->lk);
    kv->lv = calloc(p->n_layer, sizeof *kv->lv);
    kv->page_bytes = calloc(p->n_layer, sizeof *kv->page_bytes);
    kv->pages_per_seq = (p->n_ctx + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS;
    kv->pages = calloc((size_t)p->n_seq * p->n_layer * kv->pages_per_seq, sizeof *kv->pages);
    kv->n_pages = calloc(p->n_seq, sizeof *kv->n_pages);
    kv->win = calloc(p->n_layer, sizeof(uint32_t));
    kv->ring = calloc(p->n_layer, sizeof(uint32_t));
    kv->ptok = calloc(p->n_layer, sizeof(uint32_t));
    const size_t nsl = (size_t)p->n_seq * p->n_layer;
    kv->r_off = calloc(nsl, sizeof(uint32_t));
    kv->r_lo = calloc(nsl, sizeof(uint32_t));
    kv->r_hi = calloc(nsl, sizeof(uint32_t));
    kv->r_pages = calloc(nsl, sizeof(uint32_t));
    if (!kv->lk || !kv->lv || !kv->page_bytes || !kv->pages || !kv->n_pages || !kv->win || !kv->ring || !kv->ptok ||
        !kv->r_off || !kv->r_lo || !kv->r_hi || !kv->r_pages) {
        kv_cache_free(kv);
        rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        return NULL;
    }
    if (!layout_make(&kv->l16, ROTKV_KV_F16, p, 0, err)) {
        kv_cache_free(kv);
        return NULL;
    }
    const size_t n_side = (size_t)p->n_sink + p->n_window;
    kv->side_bytes = n_side * kv->l16.row_bytes * 2;
    if (n_side) {
        kv->side = calloc((size_t)p->n_seq * p->n_layer, kv->side_bytes);
        kv->ring_pos = malloc(sizeof(int64_t) * ((size_t)p->n_seq * p->n_layer * (p->n_window ? p->n_window : 1)));
        if (!kv->side || !kv->ring_pos) {
            kv_cache_free(kv);
            rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory for the f16 sink/window rows");
            return NULL;
        }
        for (size_t i = 0; i < (size_t)p->n_seq * p->n_layer * (p->n_window ? p->n_window : 1); i++) kv->ring_pos[i] = -1;
        kv->evict_tmp = malloc(sizeof(float) * 2 * p->head_dim * p->n_head_kv);
        if (!kv->evict_tmp) {
            kv_cache_free(kv);
            rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
            return NULL;
        }
    }
    if (p->center) {
        const size_t row = (size_t)p->head_dim * p->n_head_kv;
        kv->center = calloc((size_t)p->n_seq * p->n_layer * 2 * row, sizeof(float));
        kv->center_tmp = malloc(sizeof(float) * row);
        kv->centered = calloc((size_t)p->n_layer * 2, sizeof(bool));
        if (!kv->center || !kv->center_tmp || !kv->centered) {
            kv_cache_free(kv);
            rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
            return NULL;
        }
    }
    for (uint32_t l = 0; l < p->n_layer; l++) {
        rotkv_kv_type tk = p->layer_type_k ? p->layer_type_k[l] : p->type_k;
        rotkv_kv_type tv = p->layer_type_v ? p->layer_type_v[l] : p->type_v;
        if (!layout_make(&kv->lk[l], tk, p, l, err) || !layout_make(&kv->lv[l], tv, p, l, err)) {
            kv_cache_free(kv);
            return NULL;
        }
        /* a sliding-window layer: a ring of W + slack slots, at most the context's pages */
        const uint32_t W = p->layer_window ? p->layer_window[l] : 0;
        kv->ptok[l] = KV_PAGE_TOKENS;
        if (W) {
            const uint32_t cap = kv->pages_per_seq * KV_PAGE_TOKENS;
            uint32_t slack = W / 4 < 16 ? 16 : W / 4 > 256 ? 256 : W / 4;
            uint64_t R = (uint64_t)W + slack;
            if (R > KV_PAGE_TOKENS) R = (R + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS * KV_PAGE_TOKENS;
            if (R > cap) R = cap;
            kv->win[l] = W;
            kv->ring[l] = (uint32_t)R;
            kv->ptok[l] = R < KV_PAGE_TOKENS ? (uint32_t)R : KV_PAGE_TOKENS;
        }
        kv->page_bytes[l] = (kv->lk[l].row_bytes + kv->lv[l].row_bytes) * kv->ptok[l];
        if (!W) kv->lin_page_bytes += kv->page_bytes[l];
        if ((kv->lk[l].codec->kt_bits > 0 || kv->lv[l].codec->kt_bits > 0) && !kv->kvt_k) {
            kv->kvt_k = calloc((size_t)p->n_layer * p->n_head_kv, sizeof(kvt_head));
            kv->kvt_v = calloc((size_t)p->n_layer * p->n_head_kv, sizeof(kvt_head));
            kv->calibrated = calloc(p->n_layer, sizeof(bool));
            if (!kv->kvt_k || !kv->kvt_v || !kv->calibrated) {
                kv_cache_free(kv);
                rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
                return NULL;
            }
        }
        kv->page_bytes_all += (kv->lk[l].row_bytes + kv->lv[l].row_bytes) * KV_PAGE_TOKENS;
        /* centering helps the fixed quantizers; kt* types fit their own center */
        if (kv->centered)
            for (int side = 0; side < 2; side++) {
                const kv_codec *c = (side ? kv->lv[l] : kv->lk[l]).codec;
                kv->centered[2 * l + side] = c->quantized && c->kt_bits == 0;
            }
    }
    return kv;
}

void kv_cache_free(kv_cache *kv) {
    if (!kv) return;
    if (kv->pages && kv->n_pages && kv->page_bytes && kv->ring && kv->r_pages)
        for (uint32_t s = 0; s < kv->p.n_seq; s++) kv_cache_truncate(kv, s, 0);
    free(kv->side);
    free(kv->ring_pos);
    free(kv->evict_tmp);
    free(kv->center);
    free(kv->center_tmp);
    free(kv->centered);
    if (kv->kvt_k)
        for (size_t i = 0; i < (size_t)kv->p.n_layer * kv->p.n_head_kv; i++) {
            kvt_free(&kv->kvt_k[i]);
            kvt_free(&kv->kvt_v[i]);
        }
    free(kv->kvt_k);
    free(kv->kvt_v);
    free(kv->calibrated);
    free(kv->lk);
    free(kv->lv);
    free(kv->page_bytes);
    free(kv->pages);
    free(kv->n_pages);
    free(kv->win);
    free(kv->ring);
    free(kv->ptok);
    free(kv->r_off);
    free(kv->r_lo);
    free(kv->r_hi);
    free(kv->r_pages);
    free(kv);
}

/* Ring pages a sliding-window layer needs to hold positions [0, n_tokens):
 * the slots [0, min(n, R)) before any shift, all of them after one. */
static uint32_t ring_pages_for(const kv_cache *kv, uint32_t seq, uint32_t l, uint32_t n_tokens) {
    const uint32_t R = kv->ring[l], pt = kv->ptok[l];
    if (kv->r_off[sl(kv, seq, l)] != 0) return R / pt;
    const uint32_t n = n_tokens < R ? n_tokens : R;
    return (n + pt - 1) / pt;
}

/* Allocates ring pages [r_pages, want) of one layer; false when out of memory. */
static bool ring_grow(kv_cache *kv, uint32_t seq, uint32_t l, uint32_t want) {
    uint32_t *have = &kv->r_pages[sl(kv, seq, l)];
    while (*have < want) {
        uint8_t *mem = page_alloc(kv->page_bytes[l]);
        if (!mem) return false;
        *page_slot(kv, seq, l, *have) = mem;
        kv->allocated += kv->page_bytes[l];
        (*have)++;
    }
    return true;
}

rotkv_status kv_cache_reserve(kv_cache *kv, uint32_t seq, uint32_t n_tokens, rotkv_error *err) {
    if (seq >= kv->p.n_seq || n_tokens > kv->p.n_ctx)
        return rotkv_set_error(err, ROTKV_ERR_CONTEXT_FULL, "sequence %u: %u tokens exceed the context size %u",
                               seq, n_tokens, kv->p.n_ctx);
    uint32_t need = (n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS;
    size_t extra = need > kv->n_pages[seq] ? (size_t)(need - kv->n_pages[seq]) * kv->lin_page_bytes : 0;
    for (uint32_t l = 0; l < kv->p.n_layer; l++)
        if (kv->ring[l]) {
            const uint32_t want = ring_pages_for(kv, seq, l, n_tokens), have = kv->r_pages[sl(kv, seq, l)];
            if (want > have) extra += (size_t)(want - have) * kv->page_bytes[l];
        }
    if (extra && kv->p.budget_bytes && kv->allocated + extra > kv->p.budget_bytes)
        return rotkv_set_error(err, ROTKV_ERR_KV_BUDGET,
                               "KV cache budget of %llu bytes is used up (%zu allocated; sequence %u needs %zu more bytes)",
                               (unsigned long long)kv->p.budget_bytes, kv->allocated, seq, extra);
    for (uint32_t l = 0; l < kv->p.n_layer; l++)
        if (kv->ring[l] && !ring_grow(kv, seq, l, ring_pages_for(kv, seq, l, n_tokens)))
            return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory growing the KV cache to %u tokens", n_tokens);
    while (kv->n_pages[seq] < need) {
        uint32_t pg = kv->n_pages[seq];
        for (uint32_t l = 0; l < kv->p.n_layer; l++) {
            if (kv->ring[l]) continue;
            uint8_t *mem = page_alloc(kv->page_bytes[l]);
            if (!mem) {
                for (uint32_t j = 0; j < l; j++) {
                    if (kv->ring[j]) continue;
                    page_free(*page_slot(kv, seq, j, pg), kv->page_bytes[j]);
                    *page_slot(kv, seq, j, pg) = NULL;
                    kv->allocated -= kv->page_bytes[j];
                }
                return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory growing the KV cache to %u tokens", n_tokens);
            }
            *page_slot(kv, seq, l, pg) = mem;
            kv->allocated += kv->page_bytes[l];
        }
        kv->n_pages[seq]++;
    }
    return ROTKV_OK;
}

static float *center_of(const kv_cache *kv, uint32_t seq, uint32_t layer, int is_v) {
    const size_t row = (size_t)kv->p.head_dim * kv->p.n_head_kv;
    return kv->center + ((size_t)seq * kv->p.n_layer + layer) * 2 * row + (is_v ? row : 0);
}

static int64_t *ring_of(const kv_cache *kv, uint32_t seq, uint32_t layer) {
    return kv->ring_pos + ((size_t)seq * kv->p.n_layer + layer) * kv->p.n_window;
}

static uint8_t *side_of(const kv_cache *kv, uint32_t seq, uint32_t layer) {
    return kv->side + ((size_t)seq * kv->p.n_layer + layer) * kv->side_bytes;
}

void kv_cache_truncate(kv_cache *kv, uint32_t seq, uint32_t n_tokens) {
    if (seq >= kv->p.n_seq) return;
    if (kv->p.n_window)
        for (uint32_t l = 0; l < kv->p.n_layer; l++) {
            int64_t *rp = ring_of(kv, seq, l);
            for (uint32_t i = 0; i < kv->p.n_window; i++)
                if (rp[i] >= (int64_t)n_tokens) rp[i] = -1;
        }
    for (uint32_t l = 0; l < kv->p.n_layer; l++) {
        if (!kv->ring[l]) continue;
        const size_t i = sl(kv, seq, l);
        if (kv->r_hi[i] > n_tokens) kv->r_hi[i] = n_tokens;
        if (kv->r_lo[i] > kv->r_hi[i]) kv->r_lo[i] = kv->r_hi[i];
        if (n_tokens == 0) kv->r_off[i] = kv->r_lo[i] = kv->r_hi[i] = 0;
        /* unshifted and not wrapped: the pages past the last slot in use go */
        const uint32_t keep = kv->r_off[i] == 0 && kv->r_hi[i] <= kv->ring[l]
                                  ? (kv->r_hi[i] + kv->ptok[l] - 1) / kv->ptok[l] : kv->r_pages[i];
        while (kv->r_pages[i] > keep) {
            uint32_t pg = --kv->r_pages[i];
            page_free(*page_slot(kv, seq, l, pg), kv->page_bytes[l]);
            *page_slot(kv, seq, l, pg) = NULL;
            kv->allocated -= kv->page_bytes[l];
        }
    }
    uint32_t keep = (n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS;
    while (kv->n_pages[seq] > keep) {
        uint32_t pg = --kv->n_pages[seq];
        for (uint32_t l = 0; l < kv->p.n_layer; l++) {
            if (kv->ring[l]) continue;
            page_free(*page_slot(kv, seq, l, pg), kv->page_bytes[l]);
            *page_slot(kv, seq, l, pg) = NULL;
            kv->allocated -= kv->page_bytes[l];
        }
    }
}

bool kv_cache_can_truncate(const kv_cache *kv, uint32_t seq, uint32_t n_tokens) {
    if (seq >= kv->p.n_seq) return false;
    if (n_tokens == 0) return true;
    for (uint32_t l = 0; l < kv->p.n_layer; l++) {
        if (!kv->ring[l]) continue;
        const size_t i = sl(kv, seq, l);
        const uint32_t need = n_tokens >= kv->win[l] ? n_tokens - kv->win[l] + 1 : 0;
        if (n_tokens > kv->r_hi[i] || kv->r_lo[i] > need) return false;
    }
    return true;
}

uint32_t kv_cache_window(const kv_cache *kv, uint32_t layer) { return kv->win[layer]; }
uint32_t kv_cache_ring_slots(const kv_cache *kv, uint32_t layer) { return kv->ring[layer]; }
uint32_t kv_cache_first_pos(const kv_cache *kv, uint32_t seq, uint32_t layer) {
    return kv->ring[layer] ? kv->r_lo[sl(kv, seq, layer)] : 0;
}
uint32_t kv_cache_swa_chunk(const kv_cache *kv, uint32_t layer) {
    if (!kv->ring[layer] || kv->ring[layer] >= kv->p.n_ctx) return UINT32_MAX; /* the ring never turns */
    return kv->ring[layer] - kv->win[layer] + 1;
}

uint32_t kv_cache_run_end(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos) {
    if (!kv->ring[layer]) return (pos / KV_PAGE_TOKENS + 1) * KV_PAGE_TOKENS;
    const uint32_t slot = (uint32_t)(((uint64_t)pos + kv->r_off[sl(kv, seq, layer)]) % kv->ring[layer]);
    return pos + (kv->ptok[layer] - slot % kv->ptok[layer]);
}

rotkv_status kv_cache_copy(kv_cache *kv, uint32_t src, uint32_t dst, uint32_t n_tokens, rotkv_error *err) {
    if (src >= kv->p.n_seq || dst >= kv->p.n_seq || src == dst)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "kv copy: bad sequences %u -> %u", src, dst);
    if ((n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS > kv->n_pages[src] && kv->lin_page_bytes)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "kv copy: sequence %u holds fewer than %u tokens", src, n_tokens);
    if (!kv_cache_can_truncate(kv, src, n_tokens))
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG,
                               "kv copy: the sliding-window layers of sequence %u no longer hold the window before "
                               "position %u", src, n_tokens);
    kv_cache_truncate(kv, dst, 0);
    rotkv_status st = kv_cache_reserve(kv, dst, n_tokens, err);
    if (st != ROTKV_OK) return st;
    for (uint32_t l = 0; l < kv->p.n_layer; l++) /* the rings as they are (then cut to n_tokens) */
        if (kv->ring[l]) {
            const size_t a = sl(kv, src, l), b = sl(kv, dst, l);
            if (!ring_grow(kv, dst, l, kv->r_pages[a])) {
                kv_cache_truncate(kv, dst, 0);
                return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory copying the KV cache");
            }
            kv->r_off[b] = kv->r_off[a];
            kv->r_lo[b] = kv->r_lo[a];
            kv->r_hi[b] = kv->r_hi[a];
        }
    for (uint32_t l = 0; l < kv->p.n_layer; l++) {
        const uint32_t np = kv->ring[l] ? kv->r_pages[sl(kv, src, l)] : kv->n_pages[dst];
        for (uint32_t pg = 0; pg < np; pg++)
            memcpy(*page_slot(kv, dst, l, pg), *page_slot(kv, src, l, pg), kv->page_bytes[l]);
        if (kv->side) memcpy(side_of(kv, dst, l), side_of(kv, src, l), kv->side_bytes);
        if (kv->p.n_window) memcpy(ring_of(kv, dst, l), ring_of(kv, src, l), sizeof(int64_t) * kv->p.n_window);
        if (kv->center)
            memcpy(center_of(kv, dst, l, 0), center_of(kv, src, l, 0),
                   2 * sizeof(float) * kv->p.head_dim * kv->p.n_head_kv);
    }
    kv_cache_truncate(kv, dst, n_tokens);
    return ROTKV_OK;
}

static uint8_t *row_ptr(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, int is_v) {
    const uint32_t pt = kv->ptok[layer];
    const uint32_t slot = kv->ring[layer] ? (uint32_t)(((uint64_t)pos + kv->r_off[sl(kv, seq, layer)]) % kv->ring[layer])
                                          : pos;
    uint8_t *page = *page_slot(kv, seq, layer, slot / pt);
    const uint32_t i = slot % pt;
    const size_t kb = kv->lk[layer].row_bytes;
    if (!is_v) return page + (size_t)i * kb;
    return page + (size_t)pt * kb + (size_t)i * kv->lv[layer].row_bytes;
}

static void encode_row(const kv_layout *l, const float *x, uint8_t *dst, uint32_t row) {
    if (l->kvt) {
        for (uint32_t i = 0; i < row / (uint32_t)l->seg; i++) kvt_encode(&l->kvt[i], x + (size_t)i * l->seg, dst + i * l->seg_bytes);
        return;
    }
    for (uint32_t i = 0; i < row / (uint32_t)l->seg; i++)
        l->codec->encode(x + (size_t)i * l->seg, dst + i * l->seg_bytes, l->seg);
}

static void decode_row(const kv_layout *l, const uint8_t *src, float *x, uint32_t row) {
    if (l->kvt) {
        for (uint32_t i = 0; i < row / (uint32_t)l->seg; i++) kvt_decode(&l->kvt[i], src + i * l->seg_bytes, x + (size_t)i * l->seg);
        return;
    }
    for (uint32_t i = 0; i < row / (uint32_t)l->seg; i++)
        l->codec->kern->decode(src + i * l->seg_bytes, x + (size_t)i * l->seg, l->seg);
}

void kv_cache_set_center(kv_cache *kv, uint32_t seq, uint32_t layer, const float *mu_k, const float *mu_v) {
    if (!kv->center) return;
    const size_t row = (size_t)kv->p.head_dim * kv->p.n_head_kv;
    memcpy(center_of(kv, seq, layer, 0), mu_k, row * sizeof(float));
    memcpy(center_of(kv, seq, layer, 1), mu_v, row * sizeof(float));
}

static bool is_centered(const kv_cache *kv, uint32_t layer, int is_v) {
    return kv->center && kv->centered[2 * layer + (is_v ? 1 : 0)];
}

const float *kv_cache_center_k(const kv_cache *kv, uint32_t seq, uint32_t layer) {
    return is_centered(kv, layer, 0) ? center_of(kv, seq, layer, 0) : NULL;
}
const float *kv_cache_center_v(const kv_cache *kv, uint32_t seq, uint32_t layer) {
    return is_centered(kv, layer, 1) ? center_of(kv, seq, layer, 1) : NULL;
}

/* Encodes a row with the layer's codec, relative to the center when there is one. */
static void encode_codec_row(kv_cache *kv, uint32_t seq, uint32_t layer, int is_v, const float *x, uint8_t *dst) {
    const uint32_t row = kv->p.head_dim * kv->p.n_head_kv;
    const kv_layout *l = is_v ? &kv->lv[layer] : &kv->lk[layer];
    if (is_centered(kv, layer, is_v)) {
        const float *mu = center_of(kv, seq, layer, is_v);
        for (uint32_t i = 0; i < row; i++) kv->center_tmp[i] = x[i] - mu[i];
        x = kv->center_tmp;
    }
    encode_row(l, x, dst, row);
}

/* f16 side row of a sink position (slot < n_sink) or window slot (n_sink + i). */
static uint8_t *side_row(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t slot, int is_v) {
    const size_t n_side = (size_t)kv->p.n_sink + kv->p.n_window;
    return side_of(kv, seq, layer) + ((is_v ? n_side : 0) + slot) * kv->l16.row_bytes;
}

/* Where position pos lives now: its layout and encoded row. */
static const uint8_t *locate(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, int is_v,
                             const kv_layout **l) {
    if (kv->ring[layer]) { /* a sliding-window layer: every row in the ring, in the codec */
        *l = is_v ? &kv->lv[layer] : &kv->lk[layer];
        return row_ptr(kv, seq, layer, pos, is_v);
    }
    if (pos < kv->p.n_sink) {
        *l = &kv->l16;
        return side_row(kv, seq, layer, pos, is_v);
    }
    if (kv->p.n_window) {
        const uint32_t slot = pos % kv->p.n_window;
        if (ring_of(kv, seq, layer)[slot] == (int64_t)pos) {
            *l = &kv->l16;
            return side_row(kv, seq, layer, kv->p.n_sink + slot, is_v);
        }
    }
    *l = is_v ? &kv->lv[layer] : &kv->lk[layer];
    return row_ptr(kv, seq, layer, pos, is_v);
}

void kv_cache_store(kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const float *k, const float *v) {
    const uint32_t row = kv->p.head_dim * kv->p.n_head_kv;
    if (kv->ring[layer]) {
        const size_t i = sl(kv, seq, layer);
        encode_codec_row(kv, seq, layer, 0, k, row_ptr(kv, seq, layer, pos, 0));
        encode_codec_row(kv, seq, layer, 1, v, row_ptr(kv, seq, layer, pos, 1));
        if (pos >= kv->r_hi[i]) { /* a new position: the oldest one leaves a full ring */
            if (kv->r_lo[i] == kv->r_hi[i]) kv->r_lo[i] = pos; /* (an empty ring starts where it is written) */
            kv->r_hi[i] = pos + 1;
            if (kv->r_hi[i] - kv->r_lo[i] > kv->ring[layer]) kv->r_lo[i] = kv->r_hi[i] - kv->ring[layer];
        }
        return;
    }
    if (pos < kv->p.n_sink) {
        encode_row(&kv->l16, k, side_row(kv, seq, layer, pos, 0), row);
        encode_row(&kv->l16, v, side_row(kv, seq, layer, pos, 1), row);
        return;
    }
    if (kv->p.n_window) {
        const uint32_t slot = pos % kv->p.n_window;
        int64_t *rp = &ring_of(kv, seq, layer)[slot];
        uint8_t *ks = side_row(kv, seq, layer, kv->p.n_sink + slot, 0);
        uint8_t *vs = side_row(kv, seq, layer, kv->p.n_sink + slot, 1);
        if (*rp >= 0 && *rp != (int64_t)pos) {
            /* the slot's previous position leaves the window: encode it with the codec */
            float *tmp = kv->evict_tmp;
            decode_row(&kv->l16, ks, tmp, row);
            decode_row(&kv->l16, vs, tmp + row, row);
            encode_codec_row(kv, seq, layer, 0, tmp, row_ptr(kv, seq, layer, (uint32_t)*rp, 0));
            encode_codec_row(kv, seq, layer, 1, tmp + row, row_ptr(kv, seq, layer, (uint32_t)*rp, 1));
        }
        encode_row(&kv->l16, k, ks, row);
        encode_row(&kv->l16, v, vs, row);
        *rp = pos;
        return;
    }
    encode_codec_row(kv, seq, layer, 0, k, row_ptr(kv, seq, layer, pos, 0));
    encode_codec_row(kv, seq, layer, 1, v, row_ptr(kv, seq, layer, pos, 1));
}

void kv_cache_load(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, float *k, float *v) {
    const uint32_t row = kv->p.head_dim * kv->p.n_head_kv;
    const kv_layout *l;
    const uint8_t *r = locate(kv, seq, layer, pos, 0, &l);
    decode_row(l, r, k, row);
    if (is_centered(kv, layer, 0) && l != &kv->l16)
        for (uint32_t i = 0; i < row; i++) k[i] += center_of(kv, seq, layer, 0)[i];
    r = locate(kv, seq, layer, pos, 1, &l);
    decode_row(l, r, v, row);
    if (is_centered(kv, layer, 1) && l != &kv->l16)
        for (uint32_t i = 0; i < row; i++) v[i] += center_of(kv, seq, layer, 1)[i];
}

const uint8_t *kv_cache_k_at(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const kv_layout **l) {
    return locate(kv, seq, layer, pos, 0, l);
}
const uint8_t *kv_cache_v_at(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const kv_layout **l) {
    return locate(kv, seq, layer, pos, 1, l);
}

size_t kv_cache_f16_side_bytes(const kv_cache *kv) {
    uint32_t n = 0;
    for (uint32_t l = 0; l < kv->p.n_layer; l++) n += kv->ring[l] == 0;
    return kv->side_bytes * n;
}

rotkv_status kv_cache_ring_shift(kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t n_keep, uint32_t n_discard,
                                 uint32_t len, rotkv_error *err) {
    const uint32_t R = kv->ring[layer];
    const size_t i = sl(kv, seq, layer);
    if (!R || n_discard == 0) return ROTKV_OK;
    /* every slot may hold a position once the offset moves */
    if (!ring_grow(kv, seq, layer, R / kv->ptok[layer]))
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory shifting the KV cache");
    const uint32_t lo = kv->r_lo[i], hi = kv->r_hi[i] < len ? kv->r_hi[i] : len;
    const uint32_t d = n_discard % R;
    /* kept positions p the ring holds go to the slot of p + n_discard (a discarded
     * or an already moved kept position), highest first */
    const size_t kb = kv->lk[layer].row_bytes, vb = kv->lv[layer].row_bytes;
    if (d)
        for (uint32_t p = (n_keep < hi ? n_keep : hi); p-- > lo;) {
            memmove(row_ptr(kv, seq, layer, p + n_discard, 0), row_ptr(kv, seq, layer, p, 0), kb);
            memmove(row_ptr(kv, seq, layer, p + n_discard, 1), row_ptr(kv, seq, layer, p, 1), vb);
        }
    kv->r_off[i] = (uint32_t)(((uint64_t)kv->r_off[i] + d) % R);
    kv->r_lo[i] = lo < n_keep ? lo : (lo > n_keep + n_discard ? lo : n_keep + n_discard) - n_discard;
    kv->r_hi[i] = hi >= n_keep + n_discard ? hi - n_discard : (hi < n_keep ? hi : n_keep);
    if (kv->r_lo[i] > kv->r_hi[i]) kv->r_lo[i] = kv->r_hi[i];
    return ROTKV_OK;
}

const kv_layout *kv_cache_layout_k(const kv_cache *kv, uint32_t layer) { return &kv->lk[layer]; }
const kv_layout *kv_cache_layout_v(const kv_cache *kv, uint32_t layer) { return &kv->lv[layer]; }

bool kv_cache_needs_calibration(const kv_cache *kv, uint32_t layer) {
    return kv->calibrated && !kv->calibrated[layer] &&
           (kv->lk[layer].codec->kt_bits > 0 || kv->lv[layer].codec->kt_bits > 0);
}

/* Fits the row-coded (kttr*) head of one side of a layer: one kt vector of the
 * whole row, fitted to the rows' joint moments (mean (row,), covariance (row,
 * row)) in the block-diagonal metric of the per-head metrics (heads' errors
 * reach different query heads, so they are judged each in its own head's
 * metric); NULL blocks: identity. */
static int fit_row_head(kvt_head *h, const kv_codec *c, int hd, int nkv, const double *mean, const double *cov,
                        double n, const double *const *blocks) {
    const int row = hd * nkv;
    double *M = calloc((size_t)row * row, sizeof(double));
    if (!M) return -1;
    for (int k = 0; k < nkv; k++)
        for (int i = 0; i < hd; i++)
            for (int j = 0; j < hd; j++)
                M[(size_t)(k * hd + i) * row + k * hd + j] = blocks[k] ? blocks[k][i * hd + j] : (double)(i == j);
    int rc = kvt_fit_moments(h, row, mean, cov, n, M, kv_codec_kt_budget_bits(c, row));
    free(M);
    if (rc == 0 && c->trellis && ktt_make(h) != 0) rc = -1;
    return rc;
}

rotkv_status kv_cache_calibrate(kv_cache *kv, uint32_t layer, const float *K, int n_k, const float *V, int n_v,
                                 const float *Q, int n_q, int n_head, const double *v_metric, rotkv_error *err) {
    if (!kv_cache_needs_calibration(kv, layer)) return ROTKV_OK;
    const int hd = (int)kv->p.head_dim, nkv = (int)kv->p.n_head_kv, row = hd * nkv, group = n_head / nkv;
    const int n = n_k > n_v ? n_k : n_v;
    float *X = malloc(sizeof(float) * (size_t)n * hd);
    double *M = malloc(sizeof(double) * (size_t)nkv * hd * hd);
    if (!X || !M) {
        free(X);
        free(M);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory calibrating the KV transforms");
    }
    rotkv_status st = ROTKV_OK;
    const bool row_k = kv->lk[layer].codec->kt_bits > 0 && kv->lk[layer].seg != hd;
    const bool row_v = kv->lv[layer].codec->kt_bits > 0 && kv->lv[layer].seg != hd;
    /* K metric: second moment of the queries of each head's group */
    if (kv->lk[layer].codec->kt_bits > 0)
        for (int h = 0; h < nkv; h++) {
            double *Mh = M + (size_t)h * hd * hd;
            for (int i = 0; i < hd * hd; i++) Mh[i] = 0;
            for (int t = 0; t < n_q; t++)
                for (int g = 0; g < group; g++) {
                    const float *q = Q + (size_t)t * n_head * hd + (size_t)(h * group + g) * hd;
                    for (int i = 0; i < hd; i++)
                        for (int j = 0; j < hd; j++) Mh[i * hd + j] += (double)q[i] * q[j];
                }
            for (int i = 0; i < hd * hd; i++) Mh[i] /= (double)n_q * group;
        }
    for (int h = 0; h < nkv && st == ROTKV_OK; h++) {
        kvt_head *hk = &kv->kvt_k[(size_t)layer * nkv + h], *hv = &kv->kvt_v[(size_t)layer * nkv + h];
        if (kv->lk[layer].codec->kt_bits > 0 && !row_k) {
            for (int t = 0; t < n_k; t++) memcpy(X + (size_t)t * hd, K + (size_t)t * row + (size_t)h * hd, sizeof(float) * hd);
            if (kvt_fit(hk, hd, X, n_k, M + (size_t)h * hd * hd, kv_codec_kt_budget_bits(kv->lk[layer].codec, hd)) != 0 ||
                (kv->lk[layer].codec->trellis && ktt_make(hk) != 0))
                st = rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting K transforms");
        }
        if (st == ROTKV_OK && kv->lv[layer].codec->kt_bits > 0 && !row_v) {
            for (int t = 0; t < n_v; t++) memcpy(X + (size_t)t * hd, V + (size_t)t * row + (size_t)h * hd, sizeof(float) * hd);
            if (kvt_fit(hv, hd, X, n_v, v_metric ? v_metric + (size_t)h * hd * hd : NULL,
                        kv_codec_kt_budget_bits(kv->lv[layer].codec, hd)) != 0 ||
                (kv->lv[layer].codec->trellis && ktt_make(hv) != 0))
                st = rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting V transforms");
        }
    }
    /* row-coded sides: the rows' joint moments (cross-head covariance included) */
    for (int side = 0; side < 2 && st == ROTKV_OK; side++) {
        if (!(side ? row_v : row_k)) continue;
        const float *R = side ? V : K;
        const int nr = side ? n_v : n_k;
        double *mean = calloc((size_t)row, sizeof(double)), *C = calloc((size_t)row * row, sizeof(double));
        const double *blocks[KV_KT_ROW_MAX];
        for (int h = 0; h < nkv; h++)
            blocks[h] = side ? (v_metric ? v_metric + (size_t)h * hd * hd : NULL) : M + (size_t)h * hd * hd;
        int rc = -1;
        if (mean && C && nr > 0) {
            for (int t = 0; t < nr; t++)
                for (int i = 0; i < row; i++) mean[i] += R[(size_t)t * row + i];
            for (int i = 0; i < row; i++) mean[i] /= nr;
            for (int t = 0; t < nr; t++)
                for (int i = 0; i < row; i++) {
                    const double di = R[(size_t)t * row + i] - mean[i];
                    for (int j = i; j < row; j++) C[(size_t)i * row + j] += di * (R[(size_t)t * row + j] - mean[j]);
                }
            for (int i = 0; i < row; i++)
                for (int j = i; j < row; j++) C[(size_t)j * row + i] = C[(size_t)i * row + j] /= nr;
            rc = fit_row_head(side ? &kv->kvt_v[(size_t)layer * nkv] : &kv->kvt_k[(size_t)layer * nkv],
                              side ? kv->lv[layer].codec : kv->lk[layer].codec, hd, nkv, mean, C, nr, blocks);
        }
        free(mean);
        free(C);
        if (rc != 0) st = rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting row-coded %s transforms", side ? "V" : "K");
    }
    free(X);
    free(M);
    if (st != ROTKV_OK) return st;
    if (kv->lk[layer].codec->kt_bits > 0) kv->lk[layer].kvt = &kv->kvt_k[(size_t)layer * nkv];
    if (kv->lv[layer].codec->kt_bits > 0) kv->lv[layer].kvt = &kv->kvt_v[(size_t)layer * nkv];
    kv->calibrated[layer] = true;
    return ROTKV_OK;
}

/* The row-coded head of one side from a stored calibration: the whole-row
 * covariance where the calibration keeps it (version 3 files of models whose
 * rows are coded whole), else the per-head moments put together
 * block-diagonally. */
static int fit_row_moments(kvt_head *h, const kv_codec *c, const rotkv_kv_calib *cal, uint32_t layer, int side,
                           const double *v_metric) {
    const int hd = (int)cal->head_dim, nkv = (int)cal->n_head_kv, row = hd * nkv;
    double *mean = malloc(sizeof(double) * (size_t)row), *C = calloc((size_t)row * row, sizeof(double));
    const double *blocks[KV_KT_ROW_MAX];
    int rc = -1;
    if (mean && C) {
        for (int k = 0; k < nkv; k++) {
            const double *m = (side ? cal->v_mean : cal->k_mean) + kv_calib_vec(cal, layer, (uint32_t)k);
            const double *ck = (side ? cal->v_cov : cal->k_cov) + kv_calib_mat(cal, layer, (uint32_t)k);
            for (int i = 0; i < hd; i++) {
                mean[k * hd + i] = m[i];
                for (int j = 0; j < hd; j++) C[(size_t)(k * hd + i) * row + k * hd + j] = ck[i * hd + j];
            }
            blocks[k] = side ? (v_metric ? v_metric + (size_t)k * hd * hd : NULL)
                             : cal->q_m2 + kv_calib_mat(cal, layer, (uint32_t)k);
        }
        if (cal->row == (uint32_t)row)
            memcpy(C, (side ? cal->vr_cov : cal->kr_cov) + (size_t)layer * row * row, sizeof(double) * (size_t)row * row);
        rc = fit_row_head(h, c, hd, nkv, mean, C, side ? cal->n_v[layer] : cal->n_k[layer], blocks);
    }
    free(mean);
    free(C);
    return rc;
}

rotkv_status kv_cache_calibrate_moments(kv_cache *kv, uint32_t layer, const rotkv_kv_calib *cal, const double *v_metric,
                                        rotkv_error *err) {
    if (!kv_cache_needs_calibration(kv, layer)) return ROTKV_OK;
    const int hd = (int)kv->p.head_dim, nkv = (int)kv->p.n_head_kv;
    const bool row_k = kv->lk[layer].codec->kt_bits > 0 && kv->lk[layer].seg != hd;
    const bool row_v = kv->lv[layer].codec->kt_bits > 0 && kv->lv[layer].seg != hd;
    if (row_k && fit_row_moments(&kv->kvt_k[(size_t)layer * nkv], kv->lk[layer].codec, cal, layer, 0, v_metric) != 0)
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting row-coded K transforms");
    if (row_v && fit_row_moments(&kv->kvt_v[(size_t)layer * nkv], kv->lv[layer].codec, cal, layer, 1, v_metric) != 0)
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting row-coded V transforms");
    for (int h = 0; h < nkv; h++) {
        kvt_head *hk = &kv->kvt_k[(size_t)layer * nkv + h], *hv = &kv->kvt_v[(size_t)layer * nkv + h];
        if (kv->lk[layer].codec->kt_bits > 0 && !row_k &&
            kvt_fit_moments(hk, hd, cal->k_mean + kv_calib_vec(cal, layer, (uint32_t)h),
                            cal->k_cov + kv_calib_mat(cal, layer, (uint32_t)h), cal->n_k[layer],
                            cal->q_m2 + kv_calib_mat(cal, layer, (uint32_t)h),
                            kv_codec_kt_budget_bits(kv->lk[layer].codec, hd)) != 0)
            return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting K transforms");
        if (kv->lk[layer].codec->trellis && !row_k && ktt_make(hk) != 0)
            return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory making the K trellis heads");
        if (kv->lv[layer].codec->kt_bits > 0 && !row_v &&
            kvt_fit_moments(hv, hd, cal->v_mean + kv_calib_vec(cal, layer, (uint32_t)h),
                            cal->v_cov + kv_calib_mat(cal, layer, (uint32_t)h), cal->n_v[layer],
                            v_metric ? v_metric + (size_t)h * hd * hd : NULL,
                            kv_codec_kt_budget_bits(kv->lv[layer].codec, hd)) != 0)
            return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory fitting V transforms");
        if (kv->lv[layer].codec->trellis && !row_v && ktt_make(hv) != 0)
            return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory making the V trellis heads");
    }
    if (kv->lk[layer].codec->kt_bits > 0) kv->lk[layer].kvt = &kv->kvt_k[(size_t)layer * nkv];
    if (kv->lv[layer].codec->kt_bits > 0) kv->lv[layer].kvt = &kv->kvt_v[(size_t)layer * nkv];
    kv->calibrated[layer] = true;
    return ROTKV_OK;
}

size_t kv_cache_transform_bytes(const kv_cache *kv) {
    if (!kv->kvt_k) return 0;
    size_t b = 0;
    for (size_t i = 0; i < (size_t)kv->p.n_layer * kv->p.n_head_kv; i++) {
        const kvt_head *hs[2] = {&kv->kvt_k[i], &kv->kvt_v[i]};
        for (int j = 0; j < 2; j++)
            if (hs[j]->hd) b += (size_t)hs[j]->hd * hs[j]->hd * 2 * sizeof(float) + (size_t)hs[j]->hd * (2 * sizeof(float) + 5);
    }
    return b;
}

size_t kv_cache_page_bytes(const kv_cache *kv) { return kv->page_bytes_all; }

double kv_cache_bytes_per_token(const kv_cache *kv) { return (double)kv->page_bytes_all / KV_PAGE_TOKENS; }

double kv_cache_bytes_per_token_kind(const kv_cache *kv, bool swa) {
    size_t b = 0;
    for (uint32_t l = 0; l < kv->p.n_layer; l++)
        if ((kv->ring[l] != 0) == swa) b += kv->lk[l].row_bytes + kv->lv[l].row_bytes;
    return (double)b;
}

uint64_t kv_cache_seq_bytes(const kv_cache *kv, uint32_t n_tokens) {
    uint64_t b = 0;
    for (uint32_t l = 0; l < kv->p.n_layer; l++) {
        const uint32_t rows = kv->ring[l] && kv->ring[l] < n_tokens ? kv->ring[l] : n_tokens;
        b += (uint64_t)rows * (kv->lk[l].row_bytes + kv->lv[l].row_bytes);
    }
    return b;
}

uint64_t kv_cache_seq_alloc_bytes(const kv_cache *kv, uint32_t n_tokens) {
    uint64_t b = (uint64_t)(n_tokens + KV_PAGE_TOKENS - 1) / KV_PAGE_TOKENS * kv->lin_page_bytes;
    for (uint32_t l = 0; l < kv->p.n_layer; l++)
        if (kv->ring[l]) {
            const uint32_t n = n_tokens < kv->ring[l] ? n_tokens : kv->ring[l];
            b += (uint64_t)(n + kv->ptok[l] - 1) / kv->ptok[l] * kv->page_bytes[l];
        }
    return b;
}

size_t kv_cache_resident_bytes(const kv_cache *kv) {
    const size_t os_page = (size_t)sysconf(_SC_PAGESIZE);
    size_t res = 0;
    for (uint32_t s = 0; s < kv->p.n_seq; s++)
        for (uint32_t l = 0; l < kv->p.n_layer; l++) {
            const uint32_t np = kv->ring[l] ? kv->r_pages[sl(kv, s, l)] : kv->n_pages[s];
            for (uint32_t pg = 0; pg < np; pg++) {
                uint8_t *mem = *page_slot(kv, s, l, pg);
                const size_t n = (kv->page_bytes[l] + os_page - 1) / os_page;
                unsigned char vec[256];
                for (size_t o = 0; o < n; o += sizeof vec) {
                    const size_t m = n - o < sizeof vec ? n - o : sizeof vec;
                    if (mincore(mem + o * os_page, m * os_page, vec) != 0) continue;
                    for (size_t j = 0; j < m; j++)
                        if (vec[j] & 1) res += os_page;
                }
            }
        }
    return res;
}

size_t kv_cache_allocated_bytes(const kv_cache *kv) { return kv->allocated; }
