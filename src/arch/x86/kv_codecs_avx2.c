/* kv_codecs_avx2.c — AVX2 + FMA + F16C twins of the KV codecs' dot, axpy and
 * decode kernels (kv_codecs.c holds the scalar reference of each).
 *
 * The kernels are compiled with the AVX2 target (the pragma below), not the
 * rest of the program, and form one const row per type,
 * kv_codec_kernels_avx2 (arch/kv_arch.h); kv_codecs.c's AVX2 codec table
 * points at it, and kv_codec_get hands that table out only after cpu.c has
 * confirmed that the CPU has AVX2, FMA and F16C (and ROTKV_ISA does not cap
 * the level below AVX2).
 *
 * Numerics:
 *  - decode gives the same floats as the scalar decode bit for bit (the same
 *    single multiplications and additions, no FMA), so kv_codecs.c's "decode
 *    equals ggml's dequantize / the tq reference" guarantees still hold.
 *  - dot and axpy differ from the scalar twins only in summation order and in
 *    fused multiply-adds: 8 lanes of partial sums per block / group, reduced
 *    once at the end (tests/test_kv_simd.c bounds the difference by
 *    1e-5 * sum |a_i b_i|).
 *
 * Reads never leave the encoded vector: ggml blocks are read with loads inside
 * the block, tq groups with a 4-byte load only while at least 4 bytes of the
 * vector remain (KV pages end exactly at a system page boundary for some
 * shapes, so one byte too many can fault). */
#include <string.h>

#include "arch/kv_arch.h"
#include "fp16.h"
#include "kv_cache.h"
#include "lloyd_max.h"
#include "arch/x86/simd_avx2.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define AI static inline __attribute__((always_inline))

AI float ld_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

AI uint32_t ld_u32(const uint8_t *p) {
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* ------------------------------------------------------------ f32 */

static float f32_dot_avx2(const void *src, const float *q, int n) {
    const float *k = src;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), _mm256_loadu_ps(q + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i + 8), _mm256_loadu_ps(q + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + i), _mm256_loadu_ps(q + i), a0);
    float s = simd_hsum_ps(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += k[i] * q[i];
    return s;
}

static void f32_axpy_avx2(const void *src, float w, float *out, int n) {
    const float *v = src;
    const __m256 vw = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] += w * v[i];
}

/* ------------------------------------------------------------ f16 / bf16 */

AI __m256 ld8_f16(const uint16_t *h) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)); }
AI __m256 ld8_bf16(const uint16_t *h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h)), 16));
}

#define HALF_KERNELS(nm, LD8, SCALAR)                                                                          \
    static float nm##_dot_avx2(const void *src, const float *q, int n) {                                       \
        const uint16_t *h = src;                                                                               \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                             \
        int i = 0;                                                                                             \
        for (; i + 16 <= n; i += 16) {                                                                         \
            a0 = _mm256_fmadd_ps(LD8(h + i), _mm256_loadu_ps(q + i), a0);                                      \
            a1 = _mm256_fmadd_ps(LD8(h + i + 8), _mm256_loadu_ps(q + i + 8), a1);                              \
        }                                                                                                      \
        for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(LD8(h + i), _mm256_loadu_ps(q + i), a0);               \
        float s = simd_hsum_ps(_mm256_add_ps(a0, a1));                                                              \
        for (; i < n; i++) s += SCALAR(h[i]) * q[i];                                                           \
        return s;                                                                                              \
    }                                                                                                          \
    static void nm##_axpy_avx2(const void *src, float w, float *out, int n) {                                  \
        const uint16_t *h = src;                                                                               \
        const __m256 vw = _mm256_set1_ps(w);                                                                   \
        int i = 0;                                                                                             \
        for (; i + 8 <= n; i += 8)                                                                             \
            _mm256_storeu_ps(out + i, _mm256_fmadd_ps(vw, LD8(h + i), _mm256_loadu_ps(out + i)));              \
        for (; i < n; i++) out[i] += w * SCALAR(h[i]);                                                         \
    }                                                                                                          \
    static void nm##_decode_avx2(const void *src, float *x, int n) {                                           \
        const uint16_t *h = src;                                                                               \
        int i = 0;                                                                                             \
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, LD8(h + i));                                        \
        for (; i < n; i++) x[i] = SCALAR(h[i]);                                                                \
    }

HALF_KERNELS(f16, ld8_f16, fp16_to_fp32)
HALF_KERNELS(bf16, ld8_bf16, bf16_to_fp32)

/* ------------------------------------------------------------ ggml block types
 *
 * Each reader turns one 32-value block into its codes as 4 x 8 floats (in
 * element order) plus the scale d and offset m, exactly as kv_codecs.c's
 * scalar readers do. */

#define QK 32

/* 8 signed / unsigned bytes -> 8 floats */
AI __m256 s8_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }
AI __m256 u8_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }

/* 16 bytes of elements 0..15 and 16 bytes of elements 16..31 -> 4 x 8 floats */
AI void bytes_ps(__m128i lo, __m128i hi, __m256 f[4], int is_signed) {
    if (is_signed) {
        f[0] = s8_ps(lo);
        f[1] = s8_ps(_mm_srli_si128(lo, 8));
        f[2] = s8_ps(hi);
        f[3] = s8_ps(_mm_srli_si128(hi, 8));
    } else {
        f[0] = u8_ps(lo);
        f[1] = u8_ps(_mm_srli_si128(lo, 8));
        f[2] = u8_ps(hi);
        f[3] = u8_ps(_mm_srli_si128(hi, 8));
    }
}

/* low nibbles (elements 0..15) and high nibbles (16..31) of 16 packed bytes */
AI void nibbles(const uint8_t *qs, __m128i *lo, __m128i *hi) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0F);
    *lo = _mm_and_si128(t, m);
    *hi = _mm_and_si128(_mm_srli_epi16(t, 4), m);
}

/* bit j of the little-endian u32 at p -> 0x10 in byte j (j = 0..15 in lo, 16..31 in hi) */
AI void high_bits(const uint8_t *p, __m128i *lo, __m128i *hi) {
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)ld_u32(p)), shuf);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)); /* all bits but bit j%8 */
    b = _mm256_and_si256(_mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1)), _mm256_set1_epi8(0x10));
    *lo = _mm256_castsi256_si128(b);
    *hi = _mm256_extracti128_si256(b, 1);
}

AI void rd_q8_0(const uint8_t *b, __m256 f[4], float *d, float *m) {
    *d = ld_f16(b);
    *m = 0.0f;
    for (int k = 0; k < 4; k++) f[k] = s8_ps(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k)));
}
AI void rd_q4_0(const uint8_t *b, __m256 f[4], float *d, float *m) {
    __m128i lo, hi;
    *d = ld_f16(b);
    *m = 0.0f;
    nibbles(b + 2, &lo, &hi);
    const __m128i k8 = _mm_set1_epi8(8);
    bytes_ps(_mm_sub_epi8(lo, k8), _mm_sub_epi8(hi, k8), f, 1);
}
AI void rd_q4_1(const uint8_t *b, __m256 f[4], float *d, float *m) {
    __m128i lo, hi;
    *d = ld_f16(b);
    *m = ld_f16(b + 2);
    nibbles(b + 4, &lo, &hi);
    bytes_ps(lo, hi, f, 0);
}
AI void rd_q5_0(const uint8_t *b, __m256 f[4], float *d, float *m) {
    __m128i lo, hi, hlo, hhi;
    *d = ld_f16(b);
    *m = 0.0f;
    nibbles(b + 6, &lo, &hi);
    high_bits(b + 2, &hlo, &hhi);
    const __m128i k16 = _mm_set1_epi8(16);
    bytes_ps(_mm_sub_epi8(_mm_or_si128(lo, hlo), k16), _mm_sub_epi8(_mm_or_si128(hi, hhi), k16), f, 1);
}
AI void rd_q5_1(const uint8_t *b, __m256 f[4], float *d, float *m) {
    __m128i lo, hi, hlo, hhi;
    *d = ld_f16(b);
    *m = ld_f16(b + 2);
    nibbles(b + 8, &lo, &hi);
    high_bits(b + 4, &hlo, &hhi);
    bytes_ps(_mm_or_si128(lo, hlo), _mm_or_si128(hi, hhi), f, 0);
}
AI void rd_iq4_nl(const uint8_t *b, __m256 f[4], float *d, float *m) {
    const __m128i tab = _mm_setr_epi8(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
    __m128i lo, hi;
    *d = ld_f16(b);
    *m = 0.0f;
    nibbles(b + 2, &lo, &hi);
    bytes_ps(_mm_shuffle_epi8(tab, lo), _mm_shuffle_epi8(tab, hi), f, 1);
}

/* dot: per block, 8 lanes of sum code*q, times d (plus m * sum q); one
 * reduction at the end. axpy: out += (w d) code + w m. decode: d code (+ m),
 * the scalar decode's operations exactly. */
#define GGML_KERNELS(nm, bytes, has_min)                                                                       \
    static float nm##_dot_avx2(const void *src, const float *q, int n) {                                       \
        const uint8_t *b = src;                                                                                \
        __m256 acc = _mm256_setzero_ps();                                                                      \
        for (int i = 0; i < n; i += QK, b += (bytes)) {                                                        \
            __m256 f[4];                                                                                       \
            float d, m;                                                                                        \
            rd_##nm(b, f, &d, &m);                                                                             \
            const __m256 q0 = _mm256_loadu_ps(q + i), q1 = _mm256_loadu_ps(q + i + 8);                        \
            const __m256 q2 = _mm256_loadu_ps(q + i + 16), q3 = _mm256_loadu_ps(q + i + 24);                  \
            __m256 c = _mm256_mul_ps(f[0], q0);                                                                \
            c = _mm256_fmadd_ps(f[1], q1, c);                                                                  \
            c = _mm256_fmadd_ps(f[2], q2, c);                                                                  \
            c = _mm256_fmadd_ps(f[3], q3, c);                                                                  \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), c, acc);                                                  \
            if (has_min) {                                                                                     \
                const __m256 s = _mm256_add_ps(_mm256_add_ps(q0, q1), _mm256_add_ps(q2, q3));                  \
                acc = _mm256_fmadd_ps(_mm256_set1_ps(m), s, acc);                                              \
            }                                                                                                  \
        }                                                                                                      \
        return simd_hsum_ps(acc);                                                                                   \
    }                                                                                                          \
    static void nm##_axpy_avx2(const void *src, float w, float *out, int n) {                                  \
        const uint8_t *b = src;                                                                                \
        for (int i = 0; i < n; i += QK, b += (bytes)) {                                                        \
            __m256 f[4];                                                                                       \
            float d, m;                                                                                        \
            rd_##nm(b, f, &d, &m);                                                                             \
            const __m256 wd = _mm256_set1_ps(w * d), wm = _mm256_set1_ps(w * m);                               \
            for (int k = 0; k < 4; k++) {                                                                      \
                float *o = out + i + 8 * k;                                                                    \
                const __m256 v = has_min ? _mm256_fmadd_ps(wd, f[k], wm) : _mm256_mul_ps(wd, f[k]);            \
                _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), v));                                     \
            }                                                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    static void nm##_decode_avx2(const void *src, float *x, int n) {                                           \
        const uint8_t *b = src;                                                                                \
        for (int i = 0; i < n; i += QK, b += (bytes)) {                                                        \
            __m256 f[4];                                                                                       \
            float d, m;                                                                                        \
            rd_##nm(b, f, &d, &m);                                                                             \
            const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);                                       \
            for (int k = 0; k < 4; k++) {                                                                      \
                __m256 v = _mm256_mul_ps(f[k], vd);                                                            \
                if (has_min) v = _mm256_add_ps(v, vm);                                                         \
                _mm256_storeu_ps(x + i + 8 * k, v);                                                            \
            }                                                                                                  \
        }                                                                                                      \
    }

GGML_KERNELS(q8_0, 34, 0)
GGML_KERNELS(q5_1, 24, 1)
GGML_KERNELS(q5_0, 22, 0)
GGML_KERNELS(q4_1, 20, 1)
GGML_KERNELS(q4_0, 18, 0)
GGML_KERNELS(iq4_nl, 18, 0)

/* ------------------------------------------------------------ tq* codebook codecs
 *
 * Layout (kv_codecs.c): f16 scale, then groups of 8 codes, each group a
 * little-endian word of `bits` bytes holding code j at bits [bits*j, bits*j+bits).
 * A group expands to 8 lanes with one broadcast, one variable shift and a
 * mask; the level is then one vpermps (<= 3 bits: the codebook fits in 8
 * lanes) or two vpermps and a blend on bit 3 (4 bits). */

typedef struct {
    int b_hi, b_lo;
} tq_spec;

/* levels of the 1..4-bit codebooks, zero-padded to 8 (b <= 3) or 16 (b = 4) */
static float tq_levels[5][16];

static void tq_tables_init(void) {
    for (int b = 1; b <= 4; b++) {
        const lloyd_max_codebook *cb = lloyd_max_table(b);
        for (int i = 0; i < cb->k; i++) tq_levels[b][i] = cb->levels[i];
    }
}

AI uint32_t tq_group_word(const uint8_t *p, const uint8_t *end, int bits) {
    if (end - p >= 4) return ld_u32(p);
    uint32_t w = 0;
    for (int i = 0; i < bits; i++) w |= (uint32_t)p[i] << (8 * i);
    return w;
}

/* the 8 levels of the group at p */
AI __m256 tq_group(const uint8_t *p, const uint8_t *end, int bits, __m256 t0, __m256 t1) {
    const uint32_t w = tq_group_word(p, end, bits);
    const __m256i sh = _mm256_setr_epi32(0, bits, 2 * bits, 3 * bits, 4 * bits, 5 * bits, 6 * bits, 7 * bits);
    const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)w), sh),
                                         _mm256_set1_epi32((1 << bits) - 1));
    const __m256 lo = _mm256_permutevar8x32_ps(t0, idx);
    if (bits < 4) return lo;
    const __m256 hi = _mm256_permutevar8x32_ps(t1, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* One part (m codes at `bits` bits starting at p) of a dot / axpy / decode. */
AI __m256 tq_dot_part(const uint8_t *p, const uint8_t *end, int bits, const float *q, int m, __m256 acc) {
    const __m256 t0 = _mm256_loadu_ps(tq_levels[bits]), t1 = _mm256_loadu_ps(tq_levels[bits] + 8);
    for (int g = 0; g < m; g += 8, p += bits)
        acc = _mm256_fmadd_ps(tq_group(p, end, bits, t0, t1), _mm256_loadu_ps(q + g), acc);
    return acc;
}

AI void tq_axpy_part(const uint8_t *p, const uint8_t *end, int bits, float ws, float *out, int m) {
    const __m256 t0 = _mm256_loadu_ps(tq_levels[bits]), t1 = _mm256_loadu_ps(tq_levels[bits] + 8);
    const __m256 vw = _mm256_set1_ps(ws);
    for (int g = 0; g < m; g += 8, p += bits)
        _mm256_storeu_ps(out + g, _mm256_fmadd_ps(vw, tq_group(p, end, bits, t0, t1), _mm256_loadu_ps(out + g)));
}

AI void tq_decode_part(const uint8_t *p, const uint8_t *end, int bits, float s, float *x, int m) {
    const __m256 t0 = _mm256_loadu_ps(tq_levels[bits]), t1 = _mm256_loadu_ps(tq_levels[bits] + 8);
    const __m256 vs = _mm256_set1_ps(s);
    for (int g = 0; g < m; g += 8, p += bits)
        _mm256_storeu_ps(x + g, _mm256_mul_ps(vs, tq_group(p, end, bits, t0, t1)));
}

AI int tq_n_hi(tq_spec t, int n) { return t.b_hi == t.b_lo ? n : n / 2; }
AI const uint8_t *tq_end(tq_spec t, const uint8_t *p, int n) {
    const int n_hi = tq_n_hi(t, n);
    return p + 2 + ((size_t)n_hi * t.b_hi + (size_t)(n - n_hi) * t.b_lo) / 8;
}

/* The part loops are instantiated per bit width (constant `bits`: the shift
 * vector and masks fold into constants). */
#define TQ_KERNELS(nm, BHI, BLO)                                                                               \
    static float nm##_dot_avx2(const void *src, const float *q, int n) {                                       \
        const tq_spec t = {BHI, BLO};                                                                          \
        const uint8_t *p = src, *end = tq_end(t, p, n);                                                        \
        const int n_hi = tq_n_hi(t, n);                                                                        \
        __m256 acc = tq_dot_part(p + 2, end, BHI, q, n_hi, _mm256_setzero_ps());                               \
        if (n_hi < n) acc = tq_dot_part(p + 2 + (size_t)n_hi * BHI / 8, end, BLO, q + n_hi, n - n_hi, acc);    \
        return ld_f16(p) * simd_hsum_ps(acc);                                                                       \
    }                                                                                                          \
    static void nm##_axpy_avx2(const void *src, float w, float *out, int n) {                                  \
        const tq_spec t = {BHI, BLO};                                                                          \
        const uint8_t *p = src, *end = tq_end(t, p, n);                                                        \
        const int n_hi = tq_n_hi(t, n);                                                                        \
        const float ws = w * ld_f16(p);                                                                        \
        tq_axpy_part(p + 2, end, BHI, ws, out, n_hi);                                                          \
        if (n_hi < n) tq_axpy_part(p + 2 + (size_t)n_hi * BHI / 8, end, BLO, ws, out + n_hi, n - n_hi);        \
    }                                                                                                          \
    static void nm##_decode_avx2(const void *src, float *x, int n) {                                           \
        const tq_spec t = {BHI, BLO};                                                                          \
        const uint8_t *p = src, *end = tq_end(t, p, n);                                                        \
        const int n_hi = tq_n_hi(t, n);                                                                        \
        const float s = ld_f16(p);                                                                             \
        tq_decode_part(p + 2, end, BHI, s, x, n_hi);                                                           \
        if (n_hi < n) tq_decode_part(p + 2 + (size_t)n_hi * BHI / 8, end, BLO, s, x + n_hi, n - n_hi);         \
    }

TQ_KERNELS(tq4, 4, 4)
TQ_KERNELS(tq3_5, 4, 3)
TQ_KERNELS(tq3, 3, 3)
TQ_KERNELS(tq2_5, 3, 2)
TQ_KERNELS(tq2, 2, 2)

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static void f32_decode_avx2(const void *src, float *x, int n) { memcpy(x, src, (size_t)n * sizeof(float)); }

/* Fills the tq codebooks; called once (kv_codecs.c's pthread_once), before
 * any tq kernel below can run. */
void kv_codec_kernels_avx2_init(void) { tq_tables_init(); }

/* Encode stays scalar (kv_codecs.c); the kt* types have no row here (their
 * kernels are kv_transform.c's). */
const kv_codec_kernels kv_codec_kernels_avx2[ROTKV_KV_TYPE_COUNT] = {
#define K(t, nm) [t] = {nm##_decode_avx2, nm##_dot_avx2, nm##_axpy_avx2}
    K(ROTKV_KV_F32, f32),     K(ROTKV_KV_F16, f16),   K(ROTKV_KV_BF16, bf16), K(ROTKV_KV_Q8_0, q8_0),
    K(ROTKV_KV_Q5_1, q5_1),   K(ROTKV_KV_Q5_0, q5_0), K(ROTKV_KV_Q4_1, q4_1), K(ROTKV_KV_Q4_0, q4_0),
    K(ROTKV_KV_IQ4_NL, iq4_nl), K(ROTKV_KV_TQ4, tq4), K(ROTKV_KV_TQ3_5, tq3_5), K(ROTKV_KV_TQ3, tq3),
    K(ROTKV_KV_TQ2_5, tq2_5), K(ROTKV_KV_TQ2, tq2),
#undef K
};

#else /* not x86-64: no AVX2 row */

const kv_codec_kernels kv_codec_kernels_avx2[ROTKV_KV_TYPE_COUNT];
void kv_codec_kernels_avx2_init(void) {}

#endif
