/* kv_cache.h — the KV cache: per layer and sequence, the keys and values of
 * every cached position, stored in a codec's format.
 *
 * Storage grows in pages of KV_PAGE_TOKENS tokens as a sequence fills (memory
 * is never reserved for the whole context up front). Within a page a token's
 * row holds all KV heads: (n_head_kv * head_dim) values encoded by the codec.
 *
 * A sliding-window layer (layer_window[l] = W > 0: its queries see the W most
 * recent positions) keeps a ring of R = W + slack slots instead (slack:
 * W/4 within [16, 256]; R rounded up to whole pages past 256, and at most the
 * context): position p lives in slot (p + off) % R, pages are recycled as the
 * ring turns, so its memory is bounded by R rows whatever the context. The ring
 * holds a contiguous range of positions [first, first + held) (first grows as
 * the ring turns); kv_cache_swa_chunk says how many consecutive positions of a
 * sequence may be stored before their queries attend without evicting what
 * they need. Such a layer keeps no f16 sink/window rows (all its rows are in
 * the layer's codec).
 *
 * Codecs are listed in one traits table (kv_codec_get). Attention never
 * decodes the cache into a full-precision copy: it calls the codec's fused
 * dot (scores) and axpy (weighted sum of values) on each head's slice. */
#ifndef ROTKV_KV_CACHE_H
#define ROTKV_KV_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_transform.h"
#include "rotkv.h"

#define KV_PAGE_TOKENS 256

/* The kernels of one codec type at one ISA level (arch/kv_arch.h lists the
 * tables: one const row per type and level). All NULL for the kt* types,
 * whose kernels are kv_transform.c's. */
typedef struct {
    void (*decode)(const void *src, float *x, int n);
    /* sum_i q[i] * decode(src)[i] */
    float (*dot)(const void *src, const float *q, int n);
    /* out[i] += w * decode(src)[i] */
    void (*axpy)(const void *src, float w, float *out, int n);
} kv_codec_kernels;

/* A KV codec encodes a vector of n values (a head, or a whole token row when
 * a head is smaller than the codec's block) into row_bytes(n) bytes. The
 * format (name, sizes, encode) is the same at every ISA level; kern points at
 * the const kernels row of the level in use (never NULL). */
typedef struct {
    const char *name;
    int blck;          /* n must be a multiple of this */
    bool quantized;    /* lossy beyond f16 rounding: attn-rot AUTO turns on */
    size_t (*row_bytes)(int n);
    void (*encode)(const float *x, void *dst, int n);
    const kv_codec_kernels *kern;
    /* > 0: a calibrated transform codec (kv_transform.h) with this many bits per
     * value, scale included; encode and the kernels are then NULL and the
     * cache uses the fitted kvt_head of each layer and head */
    double kt_bits;
    bool trellis;      /* a ktt* type: the kt head is made a trellis head (kv_trellis.h) after its fit */
    bool kt_row;       /* a kttr* type: one kt head codes the whole token row (kv_codec_kt_seg) */
} kv_codec;

/* The largest token row (n_head_kv * head_dim values) a kttr* type codes as one
 * vector: its transform is row² floats and attention decodes the whole row with
 * it for every KV head (the decode path), which is cheap only for small rows. */
#define KV_KT_ROW_MAX 128

/* Codec of a type; NULL if unknown or not built. Defined in kv_codecs.c. */
const kv_codec *kv_codec_get(rotkv_kv_type t);
/* Values per kt vector of a kt* codec: the whole row (head_dim * n_head_kv) for
 * a kttr* type with several KV heads and a row of at most KV_KT_ROW_MAX values,
 * else one head. */
int kv_codec_kt_seg(const kv_codec *c, int head_dim, int n_head_kv);
/* Index bits per n-value vector of a kt* codec (its budget after the scale). */
int kv_codec_kt_budget_bits(const kv_codec *c, int n);
/* Bits per value of a codec for vectors of n values (every scale and norm counted). */
double kv_codec_bits(const kv_codec *c, int n);

typedef struct kv_cache kv_cache;

typedef struct {
    uint32_t n_layer, n_head_kv, head_dim;
    uint32_t n_ctx, n_seq;
    rotkv_kv_type type_k, type_v;
    const rotkv_kv_type *layer_type_k, *layer_type_v; /* (n_layer,) overrides, or NULL */
    uint64_t budget_bytes; /* 0 = unlimited */
    uint32_t n_sink;       /* first n_sink positions kept at f16 (attention sinks) */
    uint32_t n_window;     /* most recent n_window positions kept at f16 */
    bool center;           /* encode K and V relative to a per-(sequence, layer) center, in the
                              layers and sides whose codec is quantized and not kt* */
    const uint32_t *layer_window; /* (n_layer,) sliding window of each layer (0: global), or NULL */
} kv_cache_params;

/* How one layer's K (or V) rows are encoded. A row (all KV heads of one token)
 * is a run of segments of seg values: one head (seg == head_dim) when a head
 * holds whole codec blocks, else the whole row (blocks then span heads). */
typedef struct {
    const kv_codec *codec;
    int seg;
    size_t seg_bytes, row_bytes;
    const kvt_head *kvt; /* (n_head_kv,) fitted transforms when codec->kt_bits > 0, NULL before calibration */
} kv_layout;

/* Returns NULL and fills err when the configuration is impossible. */
kv_cache *kv_cache_create(const kv_cache_params *p, rotkv_error *err);
void kv_cache_free(kv_cache *kv);

/* Makes room for positions [0, n_tokens) of a sequence; fails with
 * ROTKV_ERR_CONTEXT_FULL, ROTKV_ERR_KV_BUDGET or ROTKV_ERR_OOM. */
rotkv_status kv_cache_reserve(kv_cache *kv, uint32_t seq, uint32_t n_tokens, rotkv_error *err);
/* Encodes one token's keys and values (n_head_kv * head_dim floats each) at pos. */
void kv_cache_store(kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const float *k, const float *v);
/* Decodes one token's keys and values back into floats. */
void kv_cache_load(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, float *k, float *v);
/* Copies the first n_tokens tokens of src into dst (dst truncated first). */
rotkv_status kv_cache_copy(kv_cache *kv, uint32_t src, uint32_t dst, uint32_t n_tokens, rotkv_error *err);
/* Frees pages past n_tokens. */
void kv_cache_truncate(kv_cache *kv, uint32_t seq, uint32_t n_tokens);
/* True when the sequence, cut to n_tokens, still holds in every sliding-window
 * layer the positions the query at n_tokens needs (n_tokens - W + 1 on): prefix
 * reuse and copies must not cut a ring where it has already moved on. */
bool kv_cache_can_truncate(const kv_cache *kv, uint32_t seq, uint32_t n_tokens);

/* Sliding-window layers: the window (0: a global layer), the ring's slots,
 * the oldest position the ring holds for the sequence (0 for a global layer),
 * and how many consecutive positions of a sequence a forward pass may store
 * before attending (UINT32_MAX: any). */
uint32_t kv_cache_window(const kv_cache *kv, uint32_t layer);
uint32_t kv_cache_ring_slots(const kv_cache *kv, uint32_t layer);
uint32_t kv_cache_first_pos(const kv_cache *kv, uint32_t seq, uint32_t layer);
uint32_t kv_cache_swa_chunk(const kv_cache *kv, uint32_t layer);
/* Context shift of a sliding-window layer's ring: drops [n_keep, n_keep +
 * n_discard), renumbers the later positions down by n_discard without moving
 * them (the caller re-rotates their keys with kv_cache_load / kv_cache_store
 * at the new positions, from kv_cache_first_pos on) and moves the kept ones
 * the ring still holds. len: the sequence's length before the shift. */
rotkv_status kv_cache_ring_shift(kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t n_keep, uint32_t n_discard,
                                 uint32_t len, rotkv_error *err);
/* First position after pos whose row is not right after pos's in memory. */
uint32_t kv_cache_run_end(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos);

const kv_layout *kv_cache_layout_k(const kv_cache *kv, uint32_t layer);
const kv_layout *kv_cache_layout_v(const kv_cache *kv, uint32_t layer);
/* Encoded row of one token (all heads) and the layout it is encoded in: the
 * layer's codec, or f16 for sink and recent-window positions. A position in
 * [n_sink, length) lives in the window ring while it is among the n_window most
 * recently stored, and is encoded with the codec when it leaves the ring. */
const uint8_t *kv_cache_k_at(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const kv_layout **l);
const uint8_t *kv_cache_v_at(const kv_cache *kv, uint32_t seq, uint32_t layer, uint32_t pos, const kv_layout **l);

/* Centering: codec rows hold k - mu_k and v - mu_v, where mu is one fixed
 * vector per (sequence, layer) (n_head_kv * head_dim values), set from the
 * first batch of the sequence. Decoding adds it back, so any mu is exact; a
 * good one (the mean) shrinks what the codec has to represent. f16 sink and
 * window rows are stored as they are. Returns NULL when that layer's K (or V)
 * is not centered. */
void kv_cache_set_center(kv_cache *kv, uint32_t seq, uint32_t layer, const float *mu_k, const float *mu_v);
const float *kv_cache_center_k(const kv_cache *kv, uint32_t seq, uint32_t layer);
const float *kv_cache_center_v(const kv_cache *kv, uint32_t seq, uint32_t layer);

/* Transform codecs (kt*) must be fitted before the layer stores anything:
 * from the first batch: K (n_k, n_head_kv*hd), V (n_v, ...) and the queries
 * Q (n_q, n_head*hd) of that layer (K and Q may be augmented with extra RoPE
 * rotations so the fit covers positions the batch did not reach), and the metric of each KV head's values
 * (n_head_kv, hd, hd; the output projection's Gram matrix). Returns false
 * if the layer needs no calibration or already has it. */
bool kv_cache_needs_calibration(const kv_cache *kv, uint32_t layer);
rotkv_status kv_cache_calibrate(kv_cache *kv, uint32_t layer, const float *K, int n_k, const float *V, int n_v,
                                 const float *Q, int n_q, int n_head, const double *v_metric, rotkv_error *err);
/* The same fit from a stored calibration's moments (kv_calib.h) of this layer. */
rotkv_status kv_cache_calibrate_moments(kv_cache *kv, uint32_t layer, const rotkv_kv_calib *cal, const double *v_metric,
                                        rotkv_error *err);
/* Bytes of the fitted transforms (shared by all sequences of the context). */
size_t kv_cache_transform_bytes(const kv_cache *kv);

/* Bytes of one block: KV_PAGE_TOKENS tokens of every layer (the unit of the
 * server's budget). */
size_t kv_cache_page_bytes(const kv_cache *kv);
/* Bytes per token of one sequence across all layers (K + V), for the codec
 * part (sink/window rows excluded); a sliding-window layer's only until its
 * ring is full. swa: the sliding-window layers' share (true) or the global
 * layers' (false). */
double kv_cache_bytes_per_token(const kv_cache *kv);
double kv_cache_bytes_per_token_kind(const kv_cache *kv, bool swa);
/* Bytes of the codec rows one sequence of n_tokens tokens holds: n_tokens
 * rows of each global layer, min(n_tokens, ring slots) of each sliding-window
 * layer. */
uint64_t kv_cache_seq_bytes(const kv_cache *kv, uint32_t n_tokens);
/* Bytes of the pages a sequence of n_tokens tokens has allocated (from empty). */
uint64_t kv_cache_seq_alloc_bytes(const kv_cache *kv, uint32_t n_tokens);
/* Bytes of cache pages resident in memory right now (mincore over every page). */
size_t kv_cache_resident_bytes(const kv_cache *kv);
/* Bytes of the f16 sink + window rows of one sequence (all layers). */
size_t kv_cache_f16_side_bytes(const kv_cache *kv);
/* Bytes currently allocated for cache pages. */
size_t kv_cache_allocated_bytes(const kv_cache *kv);

#endif
