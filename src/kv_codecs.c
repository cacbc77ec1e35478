/* kv_codecs.c — the KV codec traits table: one row per rotkv_kv_type.
 * Full-precision codecs first, then the llama.cpp-compatible block types, then
 * the TurboQuant-style codebook codecs. docs/kv-codecs.md describes every
 * layout and the measurements behind the design choices.
 *
 * All dot/axpy/decode kernels here are plain scalar C; they work block by
 * block on the packed codes and are the reference for their AVX2 twins in
 * arch/x86/kv_codecs_avx2.c. As for the weight kernels (arch/kv_arch.h), each
 * level has one const kernels row per type (kv_codec_kernels_scalar here) and
 * one const codec table whose formats point at them; kv_codec_get hands out,
 * per type, the codec of the active level (cpu.c; ROTKV_ISA caps it) or of
 * the highest level below it with kernels, chosen once per process (first
 * call). kv_codec_get_isa gives the codec of any level the CPU can run
 * (tests/test_kv_simd.c compares them).
 *
 * Non-finite input: quantized encoders never see NaN or inf. NaN becomes 0 and
 * every value is clamped to the f16 range [-65504, 65504] (all scales here are
 * stored as f16, so nothing larger can be represented anyway). */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "arch/kv_arch.h"
#include "cpu.h"
#include "fp16.h"
#include "kv_cache.h"
#include "lloyd_max.h"
#include "quant.h"

#define F16_MAX 65504.0f

/* ------------------------------------------------------------ f32 */

static size_t f32_row_bytes(int n) { return (size_t)n * 4; }
static void f32_encode(const float *x, void *dst, int n) { memcpy(dst, x, (size_t)n * sizeof(float)); }
static void f32_decode(const void *src, float *x, int n) { memcpy(x, src, (size_t)n * sizeof(float)); }
static float f32_dot(const void *src, const float *q, int n) {
    const float *k = src;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += k[i] * q[i];
    return s;
}
static void f32_axpy(const void *src, float w, float *out, int n) {
    const float *v = src;
    for (int i = 0; i < n; i++) out[i] += w * v[i];
}

/* ------------------------------------------------------------ f16 */

static size_t h16_row_bytes(int n) { return (size_t)n * 2; }
static void f16_encode(const float *x, void *dst, int n) {
    uint16_t *h = dst;
    for (int i = 0; i < n; i++) h[i] = fp32_to_fp16(x[i]);
}
static void f16_decode(const void *src, float *x, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) x[i] = fp16_to_fp32(h[i]);
}
static float f16_dot(const void *src, const float *q, int n) {
    const uint16_t *h = src;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += fp16_to_fp32(h[i]) * q[i];
    return s;
}
static void f16_axpy(const void *src, float w, float *out, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) out[i] += w * fp16_to_fp32(h[i]);
}

/* ------------------------------------------------------------ bf16 */

static void bf16_encode(const float *x, void *dst, int n) {
    uint16_t *h = dst;
    for (int i = 0; i < n; i++) h[i] = fp32_to_bf16(x[i]);
}
static void bf16_decode(const void *src, float *x, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) x[i] = bf16_to_fp32(h[i]);
}
static float bf16_dot(const void *src, const float *q, int n) {
    const uint16_t *h = src;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += bf16_to_fp32(h[i]) * q[i];
    return s;
}
static void bf16_axpy(const void *src, float w, float *out, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) out[i] += w * bf16_to_fp32(h[i]);
}

/* ------------------------------------------------------------ shared helpers */

/* NaN -> 0, clamp to the f16 range. */
static inline float sanitize(float v) {
    if (isnan(v)) return 0.0f;
    return v > F16_MAX ? F16_MAX : v < -F16_MAX ? -F16_MAX : v;
}

static inline float load_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return fp16_to_fp32(h);
}

static inline void store_f16(uint8_t *p, float v) {
    const uint16_t h = fp32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* ------------------------------------------------------------ llama.cpp block types
 *
 * q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl: ggml's block layouts (32 values per
 * block), encoded with quant.c's ggml reference quantizers and decoded with
 * its dequantizers, so the bytes are exactly what llama.cpp writes to its KV
 * cache. The fused kernels read one block's codes at a time: value j of a
 * block is d * q[j] + m (m = 0 for the symmetric types). */

#define QK 32

typedef struct {
    uint32_t ggml_type;
    size_t bytes;   /* per block */
    bool has_min;   /* m != 0 (q4_1, q5_1) */
    /* Codes q[0..31] of the block at b, its scale d and offset m. */
    void (*codes)(const uint8_t *b, int8_t *q, float *d, float *m);
} ggml_block_reader;

/* ggml's kvalues_iq4nl (quant.c holds the same table for its own kernels). */
static const int8_t iq4nl_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static inline uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* q8_0: d, int8 qs[32] */
static void q8_0_codes(const uint8_t *b, int8_t *q, float *d, float *m) {
    *d = load_f16(b);
    *m = 0.0f;
    memcpy(q, b + 2, QK);
}
/* q4_0: d, qs[16]; low nibble = element j, high nibble = element j+16; q - 8 */
static void q4_0_codes(const uint8_t *b, int8_t *q, float *d, float *m) {
    *d = load_f16(b);
    *m = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)((b[2 + j] & 0x0F) - 8);
        q[j + QK / 2] = (int8_t)((b[2 + j] >> 4) - 8);
    }
}
/* q4_1: d, m, qs[16] as q4_0, unsigned codes */
static void q4_1_codes(const uint8_t *b, int8_t *q, float *d, float *m) {
    *d = load_f16(b);
    *m = load_f16(b + 2);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)(b[4 + j] & 0x0F);
        q[j + QK / 2] = (int8_t)(b[4 + j] >> 4);
    }
}
/* 5-bit codes: low nibbles as q4_0 in qs, bit 4 of element j is bit j of qh (LE u32) */
static void codes5(const uint8_t *qh4, const uint8_t *qs, int8_t *q, int offset) {
    const uint32_t qh = load_u32le(qh4);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)(((qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4)) - offset);
        q[j + QK / 2] = (int8_t)(((qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - offset);
    }
}
/* q5_0: d, qh[4], qs[16]; q - 16 */
static void q5_0_codes(const uint8_t *b, int8_t *q, float *d, float *m) {
    *d = load_f16(b);
    *m = 0.0f;
    codes5(b + 2, b + 6, q, 16);
}
/* q5_1: d, m, qh[4], qs[16]; unsigned codes */
static void q5_1_codes(const uint8_t *b, int8_t *q, float *d, float *m) {
    *d = load_f16(b);
    *m = load_f16(b + 2);
    codes5(b + 4, b + 8, q, 0);
}
/* iq4_nl: d, qs[16] as q4_0; code = kvalues_iq4nl[nibble] */
static void iq4_nl_codes(const uint8_t *b, int8_t *q, float *d, float *m) {
    *d = load_f16(b);
    *m = 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        q[j] = iq4nl_levels[b[2 + j] & 0x0F];
        q[j + QK / 2] = iq4nl_levels[b[2 + j] >> 4];
    }
}

static const ggml_block_reader rd_q8_0 = {GGML_TYPE_Q8_0, 34, false, q8_0_codes};
static const ggml_block_reader rd_q5_1 = {GGML_TYPE_Q5_1, 24, true, q5_1_codes};
static const ggml_block_reader rd_q5_0 = {GGML_TYPE_Q5_0, 22, false, q5_0_codes};
static const ggml_block_reader rd_q4_1 = {GGML_TYPE_Q4_1, 20, true, q4_1_codes};
static const ggml_block_reader rd_q4_0 = {GGML_TYPE_Q4_0, 18, false, q4_0_codes};
static const ggml_block_reader rd_iq4_nl = {GGML_TYPE_IQ4_NL, 18, false, iq4_nl_codes};

/* True when ggml's reference quantizer can take the block as it is: every
 * value finite and within the f16 range, and the block either all zero or
 * with max |x| >= 1e-20 (below that 1/d can overflow to inf inside ggml's
 * quantizers, which then converts NaN to an integer). */
static bool block_is_plain(const float *x) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) {
        const float a = fabsf(x[j]);
        if (!(a <= F16_MAX)) return false; /* also NaN */
        if (a > amax) amax = a;
    }
    return amax == 0.0f || amax >= 1e-20f;
}

/* Encodes with quant.c's reference quantizer, block by block. A block that is
 * not plain is quantized from a copy with NaN -> 0, values clamped to the f16
 * range and magnitudes below 1e-20 set to 0; plain blocks (all realistic
 * data) are byte-identical to quantize_row on the raw input. */
static void ggml_encode(const ggml_block_reader *r, const float *x, void *dst, int n) {
    const quant_traits *t = quant_get_traits(r->ggml_type);
    uint8_t *out = dst;
    for (int i = 0; i < n; i += QK, out += r->bytes) {
        if (block_is_plain(x + i)) {
            t->quantize_row(x + i, out, QK);
        } else {
            float tmp[QK];
            for (int j = 0; j < QK; j++) {
                const float v = sanitize(x[i + j]);
                tmp[j] = fabsf(v) < 1e-20f ? 0.0f : v;
            }
            t->quantize_row(tmp, out, QK);
        }
    }
}

static void ggml_decode(const ggml_block_reader *r, const void *src, float *x, int n) {
    quant_get_traits(r->ggml_type)->dequantize_row(src, x, n);
}

static float ggml_dot(const ggml_block_reader *r, const void *src, const float *q, int n) {
    const uint8_t *b = src;
    float sum = 0.0f;
    for (int i = 0; i < n; i += QK, b += r->bytes) {
        int8_t c[QK];
        float d, m;
        r->codes(b, c, &d, &m);
        float cq = 0.0f, sq = 0.0f;
        for (int j = 0; j < QK; j++) cq += (float)c[j] * q[i + j];
        if (r->has_min)
            for (int j = 0; j < QK; j++) sq += q[i + j];
        sum += d * cq + m * sq;
    }
    return sum;
}

static void ggml_axpy(const ggml_block_reader *r, const void *src, float w, float *out, int n) {
    const uint8_t *b = src;
    for (int i = 0; i < n; i += QK, b += r->bytes) {
        int8_t c[QK];
        float d, m;
        r->codes(b, c, &d, &m);
        const float wd = w * d, wm = w * m;
        for (int j = 0; j < QK; j++) out[i + j] += wd * (float)c[j] + wm;
    }
}

/* Per-type entry points (the traits take no context pointer). */
#define GGML_CODEC_FNS(nm)                                                                                     \
    static size_t nm##_row_bytes(int n) { return (size_t)(n / QK) * rd_##nm.bytes; }                          \
    static void nm##_encode(const float *x, void *dst, int n) { ggml_encode(&rd_##nm, x, dst, n); }            \
    static void nm##_decode(const void *src, float *x, int n) { ggml_decode(&rd_##nm, src, x, n); }            \
    static float nm##_dot(const void *src, const float *q, int n) { return ggml_dot(&rd_##nm, src, q, n); }    \
    static void nm##_axpy(const void *src, float w, float *out, int n) { ggml_axpy(&rd_##nm, src, w, out, n); }

GGML_CODEC_FNS(q8_0)
GGML_CODEC_FNS(q5_1)
GGML_CODEC_FNS(q5_0)
GGML_CODEC_FNS(q4_1)
GGML_CODEC_FNS(q4_0)
GGML_CODEC_FNS(iq4_nl)

/* ------------------------------------------------------------ TurboQuant-style codecs
 *
 * tq4, tq3, tq2: every coordinate of the vector is quantized with the b-bit
 * Lloyd-Max codebook of N(0,1) (lloyd_max.c). With attn-rot on, the vector
 * arrives rotated by a random orthonormal matrix, so u = x * sqrt(n) / |x| has
 * coordinates that are very nearly N(0,1); the codebook index of u[i] is its
 * nearest level c[k_i]. One f16 scale s per vector then reconstructs
 * x[i] ~ s * c[k_i], with s the least-squares optimum for the chosen levels,
 *     s = <x, c> / <c, c>,
 * which is never worse than the raw |x| / sqrt(n) and measurably better (see
 * docs/kv-codecs.md).
 *
 * tq3.5, tq2.5: the same with the first n/2 coordinates at b+1 bits and the
 * rest at b bits (after the rotation all channels are alike, so a fixed
 * split is as good as any), still one scale.
 *
 * Layout of a vector of n values:
 *     f16 s | codes of x[0 .. n_hi) at b_hi bits | codes of x[n_hi .. n) at b_lo bits
 * Codes are packed in groups of 8: the group's 8*bits bits form a
 * little-endian word of `bits` bytes, code j of the group in bits
 * [bits*j, bits*j + bits). So 4-bit codes are two per byte (low nibble
 * first), 3-bit codes eight per three bytes, 2-bit codes four per byte.
 * Bits per value: (n_hi * b_hi + n_lo * b_lo) / n + 16 / n. */

typedef struct {
    int b_hi, b_lo; /* equal for the unsplit codecs */
} tq_spec;

static inline int tq_n_hi(const tq_spec *t, int n) { return t->b_hi == t->b_lo ? n : n / 2; }

static size_t tq_row_bytes(const tq_spec *t, int n) {
    const int n_hi = tq_n_hi(t, n);
    return 2 + ((size_t)n_hi * t->b_hi + (size_t)(n - n_hi) * t->b_lo) / 8;
}

static inline uint32_t load_group(const uint8_t *p, int bits) {
    uint32_t w = 0;
    for (int i = 0; i < bits; i++) w |= (uint32_t)p[i] << (8 * i);
    return w;
}

/* Nearest levels of x[0..m) * inv into codes, returns <x, c> and adds <c, c>.
 * (u in double: inv can exceed the float range for a tiny nonzero vector.) */
static double tq_pick(const lloyd_max_codebook *cb, const float *x, double inv, int m, uint8_t *codes, double *cc) {
    double xc = 0.0;
    for (int i = 0; i < m; i++) {
        const float v = sanitize(x[i]);
        const double u = v * inv;
        int k = 0;
        while (k < cb->k - 1 && u >= cb->thresholds[k]) k++;
        codes[i] = (uint8_t)k;
        xc += (double)v * cb->levels[k];
        *cc += (double)cb->levels[k] * cb->levels[k];
    }
    return xc;
}

static void tq_pack(const uint8_t *codes, int m, int bits, uint8_t *p) {
    for (int g = 0; g < m; g += 8, p += bits) {
        uint32_t w = 0;
        for (int j = 0; j < 8; j++) w |= (uint32_t)codes[g + j] << (bits * j);
        for (int i = 0; i < bits; i++) p[i] = (uint8_t)(w >> (8 * i));
    }
}

static void tq_encode(const tq_spec *t, const float *x, void *dst, int n) {
    const lloyd_max_codebook *hi = lloyd_max_table(t->b_hi), *lo = lloyd_max_table(t->b_lo);
    const int n_hi = tq_n_hi(t, n);
    uint8_t *out = dst;
    double nrm2 = 0.0;
    for (int i = 0; i < n; i++) {
        const double v = sanitize(x[i]);
        nrm2 += v * v;
    }
    if (nrm2 == 0.0) { /* zero vector: scale 0, codes 0 */
        memset(out, 0, tq_row_bytes(t, n));
        return;
    }
    const double inv = sqrt((double)n / nrm2);
    uint8_t codes[256]; /* codes of one chunk (chunks keep this small for any n) */
    double cc = 0.0, xc = 0.0;
    uint8_t *p = out + 2;
    for (int part = 0; part < 2; part++) {
        const lloyd_max_codebook *cb = part == 0 ? hi : lo;
        const int first = part == 0 ? 0 : n_hi, m = part == 0 ? n_hi : n - n_hi;
        for (int i = 0; i < m; i += 256) {
            const int len = m - i < 256 ? m - i : 256;
            xc += tq_pick(cb, x + first + i, inv, len, codes, &cc);
            tq_pack(codes, len, cb->bits, p);
            p += (size_t)len * cb->bits / 8;
        }
    }
    /* xc >= 0: a level always has the sign of its coordinate */
    const double s = xc / cc;
    store_f16(out, s > F16_MAX ? F16_MAX : (float)s);
}

/* Levels of the m codes at p (m a multiple of 8) into x, times s. */
static void tq_decode_part(const uint8_t *p, const lloyd_max_codebook *cb, float s, float *x, int m) {
    const int bits = cb->bits;
    const uint32_t mask = (1u << bits) - 1;
    for (int g = 0; g < m; g += 8, p += bits) {
        const uint32_t w = load_group(p, bits);
        for (int j = 0; j < 8; j++) x[g + j] = s * cb->levels[(w >> (bits * j)) & mask];
    }
}

/* sum of level * q over the m codes at p */
static float tq_dot_part(const uint8_t *p, const lloyd_max_codebook *cb, const float *q, int m) {
    const int bits = cb->bits;
    const uint32_t mask = (1u << bits) - 1;
    float sum = 0.0f;
    for (int g = 0; g < m; g += 8, p += bits) {
        const uint32_t w = load_group(p, bits);
        float part = 0.0f;
        for (int j = 0; j < 8; j++) part += cb->levels[(w >> (bits * j)) & mask] * q[g + j];
        sum += part;
    }
    return sum;
}

/* out += ws * level over the m codes at p */
static void tq_axpy_part(const uint8_t *p, const lloyd_max_codebook *cb, float ws, float *out, int m) {
    const int bits = cb->bits;
    const uint32_t mask = (1u << bits) - 1;
    for (int g = 0; g < m; g += 8, p += bits) {
        const uint32_t w = load_group(p, bits);
        for (int j = 0; j < 8; j++) out[g + j] += ws * cb->levels[(w >> (bits * j)) & mask];
    }
}

static void tq_decode(const tq_spec *t, const void *src, float *x, int n) {
    const uint8_t *p = src;
    const int n_hi = tq_n_hi(t, n);
    const float s = load_f16(p);
    tq_decode_part(p + 2, lloyd_max_table(t->b_hi), s, x, n_hi);
    if (n_hi < n) tq_decode_part(p + 2 + (size_t)n_hi * t->b_hi / 8, lloyd_max_table(t->b_lo), s, x + n_hi, n - n_hi);
}

static float tq_dot(const tq_spec *t, const void *src, const float *q, int n) {
    const uint8_t *p = src;
    const int n_hi = tq_n_hi(t, n);
    float sum = tq_dot_part(p + 2, lloyd_max_table(t->b_hi), q, n_hi);
    if (n_hi < n) sum += tq_dot_part(p + 2 + (size_t)n_hi * t->b_hi / 8, lloyd_max_table(t->b_lo), q + n_hi, n - n_hi);
    return load_f16(p) * sum;
}

static void tq_axpy(const tq_spec *t, const void *src, float w, float *out, int n) {
    const uint8_t *p = src;
    const int n_hi = tq_n_hi(t, n);
    const float ws = w * load_f16(p);
    tq_axpy_part(p + 2, lloyd_max_table(t->b_hi), ws, out, n_hi);
    if (n_hi < n) tq_axpy_part(p + 2 + (size_t)n_hi * t->b_hi / 8, lloyd_max_table(t->b_lo), ws, out + n_hi, n - n_hi);
}

static const tq_spec sp_tq4 = {4, 4}, sp_tq3_5 = {4, 3}, sp_tq3 = {3, 3}, sp_tq2_5 = {3, 2}, sp_tq2 = {2, 2};

#define TQ_CODEC_FNS(nm)                                                                                      \
    static size_t nm##_row_bytes(int n) { return tq_row_bytes(&sp_##nm, n); }                                 \
    static void nm##_encode(const float *x, void *dst, int n) { tq_encode(&sp_##nm, x, dst, n); }             \
    static void nm##_decode(const void *src, float *x, int n) { tq_decode(&sp_##nm, src, x, n); }             \
    static float nm##_dot(const void *src, const float *q, int n) { return tq_dot(&sp_##nm, src, q, n); }     \
    static void nm##_axpy(const void *src, float w, float *out, int n) { tq_axpy(&sp_##nm, src, w, out, n); }

TQ_CODEC_FNS(tq4)
TQ_CODEC_FNS(tq3_5)
TQ_CODEC_FNS(tq3)
TQ_CODEC_FNS(tq2_5)
TQ_CODEC_FNS(tq2)

/* ------------------------------------------------------------ kt*: fitted transform codecs */

/* bytes of an n-value vector at the given bits/value: one 8-bit scale plus the
 * index bits left over (kv_transform.h) */
static size_t kt_bytes(double bits, int n) {
    long total = lround(bits * n) - 8;
    if (total < 0) total = 0;
    return 1 + (size_t)(total + 7) / 8;
}
static size_t kt6_row_bytes(int n) { return kt_bytes(6.0, n); }
static size_t kt5_row_bytes(int n) { return kt_bytes(5.0, n); }
static size_t kt4_row_bytes(int n) { return kt_bytes(4.0, n); }
static size_t kt3_5_row_bytes(int n) { return kt_bytes(3.5, n); }
static size_t kt3_row_bytes(int n) { return kt_bytes(3.0, n); }
static size_t kt2_5_row_bytes(int n) { return kt_bytes(2.5, n); }
static size_t kt2_row_bytes(int n) { return kt_bytes(2.0, n); }
static size_t kt4_5_row_bytes(int n) { return kt_bytes(4.5, n); }
static size_t kt3_75_row_bytes(int n) { return kt_bytes(3.75, n); }
static size_t kt3_25_row_bytes(int n) { return kt_bytes(3.25, n); }
static size_t kt2_75_row_bytes(int n) { return kt_bytes(2.75, n); }

int kv_codec_kt_seg(const kv_codec *c, int head_dim, int n_head_kv) {
    const long row = (long)head_dim * n_head_kv;
    return c->kt_row && n_head_kv > 1 && row <= KV_KT_ROW_MAX ? (int)row : head_dim;
}

int kv_codec_kt_budget_bits(const kv_codec *c, int n) {
    long total = lround(c->kt_bits * n) - 8;
    return total < 0 ? 0 : (int)total;
}

/* ------------------------------------------------------------ the tables */

/* The scalar kernels row of every type (the kt* rows empty). */
const kv_codec_kernels kv_codec_kernels_scalar[ROTKV_KV_TYPE_COUNT] = {
#define K(t, nm) [t] = {nm##_decode, nm##_dot, nm##_axpy}
    K(ROTKV_KV_F32, f32),     K(ROTKV_KV_F16, f16),   K(ROTKV_KV_BF16, bf16), K(ROTKV_KV_Q8_0, q8_0),
    K(ROTKV_KV_Q5_1, q5_1),   K(ROTKV_KV_Q5_0, q5_0), K(ROTKV_KV_Q4_1, q4_1), K(ROTKV_KV_Q4_0, q4_0),
    K(ROTKV_KV_IQ4_NL, iq4_nl), K(ROTKV_KV_TQ4, tq4), K(ROTKV_KV_TQ3_5, tq3_5), K(ROTKV_KV_TQ3, tq3),
    K(ROTKV_KV_TQ2_5, tq2_5), K(ROTKV_KV_TQ2, tq2),
#undef K
};

/* The formats, once: X(type, name, blck, quantized, row_bytes, encode, kt_bits). */
#define KV_CODEC_FORMATS(X)                                                                                    \
    X(ROTKV_KV_F32, "f32", 1, false, f32_row_bytes, f32_encode, 0)                                             \
    X(ROTKV_KV_F16, "f16", 1, false, h16_row_bytes, f16_encode, 0)                                             \
    X(ROTKV_KV_BF16, "bf16", 1, false, h16_row_bytes, bf16_encode, 0)                                          \
    X(ROTKV_KV_Q8_0, "q8_0", QK, true, q8_0_row_bytes, q8_0_encode, 0)                                         \
    X(ROTKV_KV_Q5_1, "q5_1", QK, true, q5_1_row_bytes, q5_1_encode, 0)                                         \
    X(ROTKV_KV_Q5_0, "q5_0", QK, true, q5_0_row_bytes, q5_0_encode, 0)                                         \
    X(ROTKV_KV_Q4_1, "q4_1", QK, true, q4_1_row_bytes, q4_1_encode, 0)                                         \
    X(ROTKV_KV_Q4_0, "q4_0", QK, true, q4_0_row_bytes, q4_0_encode, 0)                                         \
    X(ROTKV_KV_IQ4_NL, "iq4_nl", QK, true, iq4_nl_row_bytes, iq4_nl_encode, 0)                                 \
    /* blck: whole groups of 8 codes; the split codecs need n/2 to hold them */                                \
    X(ROTKV_KV_TQ4, "tq4", 8, true, tq4_row_bytes, tq4_encode, 0)                                              \
    X(ROTKV_KV_TQ3_5, "tq3.5", 16, true, tq3_5_row_bytes, tq3_5_encode, 0)                                     \
    X(ROTKV_KV_TQ3, "tq3", 8, true, tq3_row_bytes, tq3_encode, 0)                                              \
    X(ROTKV_KV_TQ2_5, "tq2.5", 16, true, tq2_5_row_bytes, tq2_5_encode, 0)                                     \
    X(ROTKV_KV_TQ2, "tq2", 8, true, tq2_row_bytes, tq2_encode, 0)                                              \
    X(ROTKV_KV_KT6, "kt6", 1, true, kt6_row_bytes, NULL, 6.0)                                                  \
    X(ROTKV_KV_KT5, "kt5", 1, true, kt5_row_bytes, NULL, 5.0)                                                  \
    X(ROTKV_KV_KT4, "kt4", 1, true, kt4_row_bytes, NULL, 4.0)                                                  \
    X(ROTKV_KV_KT3_5, "kt3.5", 1, true, kt3_5_row_bytes, NULL, 3.5)                                            \
    X(ROTKV_KV_KT3, "kt3", 1, true, kt3_row_bytes, NULL, 3.0)                                                  \
    X(ROTKV_KV_KT2_5, "kt2.5", 1, true, kt2_5_row_bytes, NULL, 2.5)                                            \
    X(ROTKV_KV_KT2, "kt2", 1, true, kt2_row_bytes, NULL, 2.0)                                                  \
    X(ROTKV_KV_KTT4, "ktt4", 1, true, kt4_row_bytes, NULL, 4.0)                                                \
    X(ROTKV_KV_KTT3_5, "ktt3.5", 1, true, kt3_5_row_bytes, NULL, 3.5)                                          \
    X(ROTKV_KV_KTT3, "ktt3", 1, true, kt3_row_bytes, NULL, 3.0)                                                \
    X(ROTKV_KV_KTT2_5, "ktt2.5", 1, true, kt2_5_row_bytes, NULL, 2.5)                                          \
    X(ROTKV_KV_KTT2, "ktt2", 1, true, kt2_row_bytes, NULL, 2.0)                                                \
    X(ROTKV_KV_KTTR4, "kttr4", 1, true, kt4_row_bytes, NULL, 4.0)                                              \
    X(ROTKV_KV_KTTR3_5, "kttr3.5", 1, true, kt3_5_row_bytes, NULL, 3.5)                                        \
    X(ROTKV_KV_KTTR3, "kttr3", 1, true, kt3_row_bytes, NULL, 3.0)                                              \
    X(ROTKV_KV_KTTR2_5, "kttr2.5", 1, true, kt2_5_row_bytes, NULL, 2.5)                                        \
    X(ROTKV_KV_KTTR2, "kttr2", 1, true, kt2_row_bytes, NULL, 2.0)                                              \
    X(ROTKV_KV_KTTR5, "kttr5", 1, true, kt5_row_bytes, NULL, 5.0)                                              \
    X(ROTKV_KV_KTTR4_5, "kttr4.5", 1, true, kt4_5_row_bytes, NULL, 4.5)                                        \
    X(ROTKV_KV_KTTR3_75, "kttr3.75", 1, true, kt3_75_row_bytes, NULL, 3.75)                                    \
    X(ROTKV_KV_KTTR3_25, "kttr3.25", 1, true, kt3_25_row_bytes, NULL, 3.25)                                    \
    X(ROTKV_KV_KTTR2_75, "kttr2.75", 1, true, kt2_75_row_bytes, NULL, 2.75)

/* One const codec table per level: the formats, each pointing at the
 * level's kernels row of its type. */
/* the ktt* types: kt rows coded with the trellis (kv_trellis.h) */
#define KTT(t) ((t) >= ROTKV_KV_KTT4 && (t) <= ROTKV_KV_KTTR2_75)
/* the kttr* types: ktt rows of all KV heads of a token at once (kv_codec_kt_seg) */
#define KTR(t) ((t) >= ROTKV_KV_KTTR4 && (t) <= ROTKV_KV_KTTR2_75)
#define CODEC_SCALAR(t, str, blck, q, rb, enc, bits) [t] = {str, blck, q, rb, enc, &kv_codec_kernels_scalar[t], bits, KTT(t), KTR(t)},
#define CODEC_AVX2(t, str, blck, q, rb, enc, bits) [t] = {str, blck, q, rb, enc, &kv_codec_kernels_avx2[t], bits, KTT(t), KTR(t)},
static const kv_codec codecs[ROTKV_KV_TYPE_COUNT] = {KV_CODEC_FORMATS(CODEC_SCALAR)};
#define CODEC_NEON(t, str, blck, q, rb, enc, bits) [t] = {str, blck, q, rb, enc, &kv_codec_kernels_neon[t], bits, KTT(t), KTR(t)},
static const kv_codec codecs_avx2[ROTKV_KV_TYPE_COUNT] = {KV_CODEC_FORMATS(CODEC_AVX2)};
static const kv_codec codecs_neon[ROTKV_KV_TYPE_COUNT] = {KV_CODEC_FORMATS(CODEC_NEON)};
#undef CODEC_SCALAR
#undef CODEC_AVX2
#undef CODEC_NEON

/* The table of exactly one level, or NULL if this CPU cannot run it (or the
 * level has no table of its own: the levels above AVX2). */
static const kv_codec *level_codecs(cpu_isa isa) {
    if (!cpu_isa_supported(isa)) return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return codecs;
    case CPU_ISA_AVX2: return codecs_avx2;
    case CPU_ISA_NEON: return codecs_neon;
    default: return NULL;
    }
}

static const kv_codec *codec_at(rotkv_kv_type t, cpu_isa isa) {
    for (int l = (int)isa; l > CPU_ISA_SCALAR; l--) {
        const kv_codec *c = level_codecs((cpu_isa)l);
        if (c && c[t].kern->dot) return &c[t];
    }
    return &codecs[t];
}

static const kv_codec *codecs_active[ROTKV_KV_TYPE_COUNT]; /* what kv_codec_get hands out */
static pthread_once_t select_once = PTHREAD_ONCE_INIT;

/* Runs once per process: fills the AVX2 / NEON kernels' tables where the CPU can
 * run them, and picks each type's codec of the active level. */
static void codecs_select(void) {
    if (cpu_isa_supported(CPU_ISA_AVX2)) kv_codec_kernels_avx2_init();
    if (cpu_isa_supported(CPU_ISA_NEON)) kv_codec_kernels_neon_init();
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++) codecs_active[t] = codec_at((rotkv_kv_type)t, cpu_isa_active());
}

const kv_codec *kv_codec_get(rotkv_kv_type t) {
    if ((int)t < 0 || t >= ROTKV_KV_TYPE_COUNT || !codecs[t].name) return NULL;
    pthread_once(&select_once, codecs_select);
    return codecs_active[t];
}

const kv_codec *kv_codec_get_isa(rotkv_kv_type t, cpu_isa isa) {
    if ((int)t < 0 || t >= ROTKV_KV_TYPE_COUNT || !codecs[t].name) return NULL;
    if ((int)isa < 0 || isa >= CPU_ISA_COUNT || !cpu_isa_supported(isa)) return NULL;
    pthread_once(&select_once, codecs_select);
    return codec_at(t, isa);
}

double kv_codec_bits(const kv_codec *c, int n) { return 8.0 * (double)c->row_bytes(n) / n; }

const char *rotkv_kv_type_name(rotkv_kv_type t) {
    const kv_codec *c = kv_codec_get(t);
    return c ? c->name : "unknown";
}

int rotkv_kv_type_from_name(const char *name) {
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++)
        if (codecs[t].name && strcmp(codecs[t].name, name) == 0) return t;
    return -1;
}
