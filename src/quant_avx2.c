/* quant_avx2.c — AVX2 + FMA + F16C twins of quant.c's matmul kernels:
 * activation quantizers (q8_0, q8_1, q8_K) and the dot products of every
 * weight type with its activation type, as 1 x 1 dot products and as register
 * tiles of several weight rows x several tokens.
 *
 * The whole file is compiled with the AVX2 target (the pragma below), not the
 * rest of the program; quant.c calls in here only after cpu.c has confirmed
 * the CPU has AVX2, FMA and F16C.
 *
 * Numerics (see quant.h):
 *  - The quantizers give the same codes and scales as their scalar twins bit
 *    for bit: the scale is computed with the same scalar float operations and
 *    the codes are rounded half to even on both sides.
 *  - A dot product sums each block's code products exactly in 32-bit integer
 *    lanes, converts the 8 lanes to float and adds scale * lanes into one
 *    8-lane float accumulator per (row, token) (one FMA per block; per
 *    super-block for the K-quants); the accumulator is reduced by hsum at the
 *    end. Every tile shape performs exactly these operations for each of its
 *    outputs, so tiles, the 1 x 1 kernel and any split of a matmul give
 *    bit-identical results. Against the scalar twins the only difference is
 *    the float summation order.
 *  - Signed x signed byte products use ggml's sign trick: |w| (unsigned) times
 *    sign(a, w) with vpmaddubsw, which cannot saturate for codes in
 *    [-128, 127] x [-127, 127]. Unsigned codes (q4_1, q5_1, K-quants) go into
 *    vpmaddubsw directly; the K-quants' code offsets (q3_K's -4, q6_K's -32)
 *    and minimums are applied through the activation block sums (bsums).
 */
#include <string.h>

#include "fp16.h"
#include "quant_blocks.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define AI static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 8")

/* Register tile of the prefill kernels, per family (rows x tokens): 2 x 4
 * measured best or equal-best among 2x4, 4x2, 3x3, 3x4, 4x4 for every family
 * (docs/performance.md). At most 4 x 4 (the accumulator arrays). */
#ifndef B32_TILE_R
#define B32_TILE_R 2 /* q4_0 ... iq4_nl: 2 unpacked rows, 2 x 4 accumulators */
#define B32_TILE_T 4
#endif
#ifndef K_TILE_R
#define K_TILE_R 2 /* K-quants */
#define K_TILE_T 4
#endif
#ifndef F_TILE_R
#define F_TILE_R 2 /* f32 / f16 / bf16 */
#define F_TILE_T 4
#endif

/* ------------------------------------------------------------------ helpers */

/* Decode (one token) streams each weight row from memory exactly once. The
 * hardware prefetchers stop at 4 KiB page boundaries and juggle one stream
 * per row of the tile, so the decode tiles ask for the bytes this far ahead
 * of each row themselves: +28% tokens/s on Llama-3.2-1B Q4_0, one thread
 * (512 measured best among 192 .. 2048; docs/performance.md). */
#ifndef DECODE_PREFETCH_BYTES
#define DECODE_PREFETCH_BYTES 512
#endif

/* Prefetch the cache lines of [p, p + n) shifted DECODE_PREFETCH_BYTES ahead
 * (a block of n bytes starting at p is about to be read). */
AI void prefetch_ahead(const uint8_t *p, size_t n) {
    const char *q = (const char *)p + DECODE_PREFETCH_BYTES;
    for (size_t o = 0; o < n; o += 64) _mm_prefetch(q + o, _MM_HINT_T0);
}

AI float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI float hmax_ps(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI int hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

AI float f16_to_f32(f16_t h) { return _cvtsh_ss(h); }

AI __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* 16 bytes of packed nibbles -> 32 bytes: the low nibbles (elements 0..15),
 * then the high nibbles (elements 16..31). */
AI __m256i unpack_nibbles(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* Bit j of the little-endian 32-bit word at p -> byte j = 0xFF if set, else 0. */
AI __m256i bytes_from_bits32(const uint8_t *p) {
    uint32_t x;
    memcpy(&x, p, 4);
    const __m256i shuf = _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);
    __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
    b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)); /* all bits but bit j%8 */
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

/* sum of |w| * sign(a, w) over byte pairs, then over pairs of pairs: 8 lanes
 * of exact 32-bit partial sums of w . a (w, a signed bytes; aw = |w|). */
AI __m256i dot_s8(__m256i aw, __m256i w, __m256i a) {
    const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* The same for unsigned weight bytes u (u <= 63). */
AI __m256i dot_u8(__m256i u, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
}

/* 8 x i32 codes -> 8 bytes, stored at dst (values within [-128, 127]). */
AI void store_codes32(int8_t *dst, __m256i i0, __m256i i1, __m256i i2, __m256i i3) {
    const __m256i a = _mm256_packs_epi32(i0, i1); /* lanes interleaved 128-bit-wise */
    const __m256i b = _mm256_packs_epi32(i2, i3);
    __m256i c = _mm256_packs_epi16(a, b);
    c = _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)dst, c);
}

/* ------------------------------------------------------- activation quantizers */

/* 32 floats -> amax, codes as 4 x 8 i32 (rounded half to even, like rintf). */
AI float q8_block32(const float *x, __m256i q[4], float *amax_out) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        m = _mm256_max_ps(m, abs_ps(v[k]));
    }
    const float amax = hmax_ps(m);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
    *amax_out = amax;
    return id;
}

static void from_float_q8_0_avx2(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = (block_q8_0 *)dst;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, src += QK8_0) {
        __m256i q[4];
        float amax;
        q8_block32(src, q, &amax);
        b->d = fp32_to_fp16(amax / 127.0f);
        store_codes32(b->qs, q[0], q[1], q[2], q[3]);
    }
}

static void from_float_q8_1_avx2(const float *src, void *dst, int64_t n) {
    block_q8_1 *b = (block_q8_1 *)dst;
    for (int64_t i = 0; i < n / QK8_1; i++, b++, src += QK8_1) {
        __m256i q[4];
        float amax;
        q8_block32(src, q, &amax);
        const float d = amax / 127.0f;
        const int sum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        b->d = fp32_to_fp16(d);
        b->s = fp32_to_fp16(d * (float)sum);
        store_codes32(b->qs, q[0], q[1], q[2], q[3]);
    }
}

static void from_float_q8_K_avx2(const float *src, void *dst, int64_t n) {
    block_q8_K *b = (block_q8_K *)dst;
    for (int64_t i = 0; i < n / QK_K; i++, b++, src += QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < QK_K; k += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(src + k)));
        const float amax = hmax_ps(m);
        if (amax == 0.0f) {
            memset(b, 0, sizeof *b);
            continue;
        }
        /* the first element whose magnitude is amax, with its sign */
        float max = 0.0f;
        const __m256 vam = _mm256_set1_ps(amax);
        for (int k = 0; k < QK_K; k += 8) {
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(src + k)), vam, _CMP_EQ_OQ));
            if (mask) {
                max = src[k + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 vis = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int g = 0; g < QK_K / 32; g++) {
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + 32 * g + 8 * k), vis)), cap);
            store_codes32(b->qs + 32 * g, q[0], q[1], q[2], q[3]);
            b->bsums[2 * g] = (int16_t)hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            b->bsums[2 * g + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(q[2], q[3]));
        }
        b->d = 1.0f / iscale;
    }
}

/* ------------------------------------------- 32-value blocks x q8_0 / q8_1 */

enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0, K_IQ4_NL };

AI size_t b32_size(const int kind) {
    switch (kind) {
    case K_Q4_0: return sizeof(block_q4_0);
    case K_Q4_1: return sizeof(block_q4_1);
    case K_Q5_0: return sizeof(block_q5_0);
    case K_Q5_1: return sizeof(block_q5_1);
    case K_Q8_0: return sizeof(block_q8_0);
    default: return sizeof(block_iq4_nl);
    }
}

/* q4_1 / q5_1 have unsigned codes and an offset m (activations q8_1). */
AI int b32_has_min(const int kind) { return kind == K_Q4_1 || kind == K_Q5_1; }

/* Code offset of the types whose codes are stored unsigned + offset
 * (q = u - off): 8 for q4_0, 16 for q5_0; 0 for the rest. */
AI int b32_offset(const int kind) { return kind == K_Q4_0 ? 8 : kind == K_Q5_0 ? 16 : 0; }

/* A block's f16 field at byte ofs, converted and broadcast to 8 lanes. */
AI __m256 f16_bcast(const uint8_t *p, size_t ofs) {
    int16_t h;
    memcpy(&h, p + ofs, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16(h));
}

/* The 32 codes of a block: unsigned (q4_1, q5_1; and q4_0 / q5_0 when
 * stored_form, i.e. before subtracting b32_offset) or signed. */
AI __m256i b32_codes(const int kind, const uint8_t *p, const int stored_form) {
    switch (kind) {
    case K_Q4_0: {
        const __m256i u = unpack_nibbles(((const block_q4_0 *)p)->qs);
        return stored_form ? u : _mm256_sub_epi8(u, _mm256_set1_epi8(8));
    }
    case K_Q4_1: return unpack_nibbles(((const block_q4_1 *)p)->qs);
    case K_Q5_0: {
        const block_q5_0 *b = (const block_q5_0 *)p;
        const __m256i bits = bytes_from_bits32(b->qh);
        if (stored_form) return _mm256_or_si256(unpack_nibbles(b->qs), _mm256_and_si256(bits, _mm256_set1_epi8(0x10)));
        /* q - 16: the nibble where bit 4 is set, nibble - 16 = nibble | 0xF0 where not */
        return _mm256_or_si256(unpack_nibbles(b->qs), _mm256_andnot_si256(bits, _mm256_set1_epi8((char)0xF0)));
    }
    case K_Q5_1: {
        const block_q5_1 *b = (const block_q5_1 *)p;
        const __m256i hi = _mm256_and_si256(bytes_from_bits32(b->qh), _mm256_set1_epi8(0x10));
        return _mm256_or_si256(unpack_nibbles(b->qs), hi);
    }
    case K_Q8_0: return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)p)->qs);
    default: {
        const __m128i lut = _mm_loadu_si128((const __m128i *)kvalues_iq4nl);
        return _mm256_shuffle_epi8(_mm256_set_m128i(lut, lut), unpack_nibbles(((const block_iq4_nl *)p)->qs));
    }
    }
}

/* y[t*ys + r] = row r . act t for NR x NT (compile-time) rows x tokens.
 * The integer lanes (exact partial sums of q_w * q_a over 4 values) are the
 * same whichever way they are formed, so the shapes may form them
 * differently: with one token, q4_0 / q5_0 multiply their stored unsigned
 * codes and subtract offset * sum(q_a) (fewer instructions per row); with
 * several tokens the signed codes use the sign trick. */
AI void b32_tile(const int kind, const int NR, const int NT, int64_t n, const uint8_t *w, size_t ws,
                 const uint8_t *a, size_t as, float *y, size_t ys) {
    const size_t wbs = b32_size(kind);
    const int hm = b32_has_min(kind);
    const int stored = NT == 1 && b32_offset(kind) > 0;
    const size_t abs_ = hm ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t qofs = hm ? offsetof(block_q8_1, qs) : offsetof(block_q8_0, qs);
    __m256 acc[4][4];
    float macc[4][4];
    UNROLL for (int r = 0; r < NR; r++) UNROLL for (int t = 0; t < NT; t++) {
        acc[r][t] = _mm256_setzero_ps();
        macc[r][t] = 0.0f;
    }
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nb = n / 32;
    for (int64_t i = 0; i < nb; i++) {
        __m256i wq[4], wa[4];
        __m256 dwv[4];
        float mw[4] = {0};
        UNROLL for (int r = 0; r < NR; r++) {
            const uint8_t *wb = w + r * ws + i * wbs;
            if (NT == 1) prefetch_ahead(wb, wbs);
            wq[r] = b32_codes(kind, wb, stored);
            if (!hm && !stored) wa[r] = _mm256_sign_epi8(wq[r], wq[r]);
            dwv[r] = f16_bcast(wb, 0);
            if (hm) {
                f16_t mh;
                memcpy(&mh, wb + 2, 2);
                mw[r] = f16_to_f32(mh);
            }
        }
        UNROLL for (int t = 0; t < NT; t++) {
            const uint8_t *ab = a + t * as + i * abs_;
            const __m256i av = _mm256_loadu_si256((const __m256i *)(ab + qofs));
            const __m256 dav = f16_bcast(ab, 0);
            float sa = 0.0f;
            if (hm) {
                f16_t sh;
                memcpy(&sh, ab + offsetof(block_q8_1, s), sizeof sh);
                sa = f16_to_f32(sh);
            }
            __m256i off = _mm256_setzero_si256(); /* offset * (a_j + a_j+1) per i16 pair */
            if (stored) off = _mm256_maddubs_epi16(_mm256_set1_epi8((char)b32_offset(kind)), av);
            UNROLL for (int r = 0; r < NR; r++) {
                __m256i p;
                if (hm) p = dot_u8(wq[r], av);
                else if (stored) p = _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(wq[r], av), off), ones);
                else p = dot_s8(wa[r], wq[r], av);
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(dwv[r], dav), _mm256_cvtepi32_ps(p), acc[r][t]);
                if (hm) macc[r][t] += mw[r] * sa;
            }
        }
    }
    UNROLL for (int t = 0; t < NT; t++) UNROLL for (int r = 0; r < NR; r++)
        y[t * ys + r] = hm ? hsum_ps(acc[r][t]) + macc[r][t] : hsum_ps(acc[r][t]);
}

/* ---------------------------------------------------------- K-quants x q8_K */

enum { K_Q2_K, K_Q3_K, K_Q4_K, K_Q5_K, K_Q6_K };

/* Per super-block and row: what the group loop needs. */
typedef struct {
    /* i16 scales, arranged for kq_scale: q4_K/q5_K: sc[0..7] in both 128-bit
     * halves; 16-scale types: sub-blocks 0,2,..,14 in the low half, 1,3,..,15
     * in the high half */
    __m256i sc;
    __m256i corr; /* i16 x 16, times the activation bsums: minimums or code offsets */
    __m256 d, dmin;
} kq_row;

AI size_t kq_size(const int kind) {
    switch (kind) {
    case K_Q2_K: return sizeof(block_q2_K);
    case K_Q3_K: return sizeof(block_q3_K);
    case K_Q4_K: return sizeof(block_q4_K);
    case K_Q5_K: return sizeof(block_q5_K);
    default: return sizeof(block_q6_K);
    }
}

/* The minimums are scaled by dmin (q2_K, q4_K, q5_K); the other types' corr
 * is an exact integer code offset. */
AI int kq_has_min(const int kind) { return kind == K_Q2_K || kind == K_Q4_K || kind == K_Q5_K; }

/* 16 int8 sub-block scales (natural order) -> kq_row.sc layout. */
AI __m256i kq_even_odd(__m128i sc8, const int is_signed) {
    const __m128i eo = _mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
    return is_signed ? _mm256_cvtepi8_epi16(eo) : _mm256_cvtepu8_epi16(eo);
}

AI void kq_prepare(const int kind, const uint8_t *p, kq_row *o) {
    switch (kind) {
    case K_Q2_K: { /* low nibble scale, high nibble minimum */
        const block_q2_K *b = (const block_q2_K *)p;
        const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
        const __m128i m4 = _mm_set1_epi8(0x0F);
        o->sc = kq_even_odd(_mm_and_si128(s, m4), 0);
        o->corr = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), m4));
        o->d = f16_bcast(p, offsetof(block_q2_K, d));
        o->dmin = f16_bcast(p, offsetof(block_q2_K, dmin));
        break;
    }
    case K_Q3_K: { /* 6-bit scales - 32 (see q3k_scale); codes stored + 4: corr = 4 * scale */
        const block_q3_K *b = (const block_q3_K *)p;
        uint32_t w[3], v[4];
        memcpy(w, b->scales, 12);
        const uint32_t lo4 = 0x0F0F0F0F, lo2 = 0x03030303;
        v[0] = (w[0] & lo4) | ((w[2] & lo2) << 4);               /* scales 0..3 */
        v[1] = (w[1] & lo4) | (((w[2] >> 2) & lo2) << 4);        /* 4..7 */
        v[2] = ((w[0] >> 4) & lo4) | (((w[2] >> 4) & lo2) << 4); /* 8..11 */
        v[3] = ((w[1] >> 4) & lo4) | (((w[2] >> 6) & lo2) << 4); /* 12..15 */
        const __m128i s = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)v), _mm_set1_epi8(32));
        o->sc = kq_even_odd(s, 1);
        o->corr = _mm256_slli_epi16(_mm256_cvtepi8_epi16(s), 2);
        o->d = f16_bcast(p, offsetof(block_q3_K, d));
        o->dmin = _mm256_setzero_ps();
        break;
    }
    case K_Q4_K:
    case K_Q5_K: { /* 6-bit scales and minimums of the 8 groups (see kquant_scale_min) */
        const uint8_t *sp = kind == K_Q4_K ? ((const block_q4_K *)p)->scales : ((const block_q5_K *)p)->scales;
        uint32_t w[3], v[4];
        memcpy(w, sp, 12);
        const uint32_t lo6 = 0x3F3F3F3F, lo4 = 0x0F0F0F0F, lo2 = 0x03030303;
        v[0] = w[0] & lo6;                                        /* scales 0..3 */
        v[1] = (w[2] & lo4) | (((w[0] >> 6) & lo2) << 4);         /* scales 4..7 */
        v[2] = w[1] & lo6;                                        /* minimums 0..3 */
        v[3] = ((w[2] >> 4) & lo4) | (((w[1] >> 6) & lo2) << 4);  /* minimums 4..7 */
        const __m128i s = _mm_loadu_si128((const __m128i *)v);
        o->sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(s));
        /* minimum of group g for bsums 2g and 2g + 1 */
        o->corr = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(s, s));
        o->d = f16_bcast(p, 0);
        o->dmin = f16_bcast(p, 2);
        break;
    }
    default: { /* q6_K: int8 scales; codes stored + 32: corr = 32 * scale */
        const block_q6_K *b = (const block_q6_K *)p;
        const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
        o->sc = kq_even_odd(s, 1);
        o->corr = _mm256_slli_epi16(_mm256_cvtepi8_epi16(s), 5);
        o->d = f16_bcast(p, offsetof(block_q6_K, d));
        o->dmin = _mm256_setzero_ps();
        break;
    }
    }
}

/* i16 multipliers of group g for vpmaddwd: the group's scale in all 16 pair
 * sums (q4_K, q5_K: word g of either half), or the scales of sub-blocks 2g
 * (low half) and 2g + 1 (high half): word g of each half. */
AI __m256i kq_scale(const kq_row *o, const int g) {
    const char lo = (char)(2 * g), hi = (char)(2 * g + 1);
    const __m256i m = _mm256_setr_epi8(lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi,
                                       lo, hi, lo, hi, lo, hi, lo, hi, lo, hi, lo, hi);
    return _mm256_shuffle_epi8(o->sc, m);
}

/* Unsigned codes of values 32g .. 32g+31 of a super-block. */
AI __m256i kq_group(const int kind, const uint8_t *p, const int g) {
    const __m256i m2 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0F);
    switch (kind) {
    case K_Q2_K: { /* value 128h + 32k + l: bits 2k of qs[32h + l] */
        const block_q2_K *b = (const block_q2_K *)p;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (g / 4)));
        return _mm256_and_si256(_mm256_srli_epi16(q, 2 * (g % 4)), m2);
    }
    case K_Q3_K: { /* plus bit g of hmask[l] as bit 2 */
        const block_q3_K *b = (const block_q3_K *)p;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (g / 4)));
        const __m256i h = _mm256_loadu_si256((const __m256i *)b->hmask);
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * (g % 4)), m2);
        const __m256i hb = _mm256_and_si256(h, _mm256_set1_epi8((char)(1 << g)));
        return _mm256_or_si256(lo, _mm256_andnot_si256(_mm256_cmpeq_epi8(hb, _mm256_setzero_si256()), _mm256_set1_epi8(4)));
    }
    case K_Q4_K: { /* group 2c: low nibbles of qs[32c ..], 2c + 1: high nibbles */
        const block_q4_K *b = (const block_q4_K *)p;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (g / 2)));
        return _mm256_and_si256(_mm256_srli_epi16(q, 4 * (g % 2)), m4);
    }
    case K_Q5_K: { /* plus bit g of qh[l] as bit 4 */
        const block_q5_K *b = (const block_q5_K *)p;
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (g / 2)));
        const __m256i h = _mm256_loadu_si256((const __m256i *)b->qh);
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 4 * (g % 2)), m4);
        const __m256i hb = _mm256_and_si256(h, _mm256_set1_epi8((char)(1 << g)));
        return _mm256_or_si256(lo, _mm256_andnot_si256(_mm256_cmpeq_epi8(hb, _mm256_setzero_si256()), _mm256_set1_epi8(16)));
    }
    default: { /* q6_K, g = 4h + k: low 4 bits in ql[64h + 32(k&1) + l] (high nibble if k >= 2), high 2 bits in qh[32h + l] at bit 2k */
        const block_q6_K *b = (const block_q6_K *)p;
        const int h = g / 4, k = g % 4;
        const __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(ql, 4 * (k >> 1)), m4);
        /* bits 2k, 2k+1 of qh moved to bits 4, 5 */
        const __m256i hi = 2 * k >= 4 ? _mm256_srli_epi16(qh, 2 * k - 4) : _mm256_slli_epi16(qh, 4 - 2 * k);
        return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
    }
    }
}

AI void kq_tile(const int kind, const int NR, const int NT, int64_t n, const uint8_t *w, size_t ws,
                const uint8_t *a, size_t as, float *y, size_t ys) {
    const size_t wbs = kq_size(kind);
    __m256 acc[4][4];
    UNROLL for (int r = 0; r < NR; r++) UNROLL for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    const int64_t nb = n / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        kq_row o[4];
        UNROLL for (int r = 0; r < NR; r++) {
            if (NT == 1) prefetch_ahead(w + r * ws + i * wbs, wbs);
            kq_prepare(kind, w + r * ws + i * wbs, &o[r]);
        }
        __m256i sumi[4][4];
        UNROLL for (int r = 0; r < NR; r++) UNROLL for (int t = 0; t < NT; t++) sumi[r][t] = _mm256_setzero_si256();
        UNROLL for (int g = 0; g < 8; g++) {
            __m256i wq[4], sc[4];
            UNROLL for (int r = 0; r < NR; r++) {
                wq[r] = kq_group(kind, w + r * ws + i * wbs, g);
                sc[r] = kq_scale(&o[r], g);
            }
            UNROLL for (int t = 0; t < NT; t++) {
                const block_q8_K *ab = (const block_q8_K *)(a + t * as) + i;
                const __m256i av = _mm256_loadu_si256((const __m256i *)(ab->qs + 32 * g));
                UNROLL for (int r = 0; r < NR; r++) {
                    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], av), sc[r]);
                    sumi[r][t] = _mm256_add_epi32(sumi[r][t], p);
                }
            }
        }
        UNROLL for (int t = 0; t < NT; t++) {
            const block_q8_K *ab = (const block_q8_K *)(a + t * as) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)ab->bsums);
            const __m256 da = _mm256_set1_ps(ab->d);
            UNROLL for (int r = 0; r < NR; r++) {
                const __m256i corr = _mm256_madd_epi16(o[r].corr, bs);
                if (!kq_has_min(kind)) { /* code offsets: exact, in integers */
                    const __m256i s = _mm256_sub_epi32(sumi[r][t], corr);
                    acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(o[r].d, da), _mm256_cvtepi32_ps(s), acc[r][t]);
                } else { /* minimums: scaled by dmin */
                    acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(o[r].d, da), _mm256_cvtepi32_ps(sumi[r][t]), acc[r][t]);
                    acc[r][t] = _mm256_fnmadd_ps(_mm256_mul_ps(o[r].dmin, da), _mm256_cvtepi32_ps(corr), acc[r][t]);
                }
            }
        }
    }
    UNROLL for (int t = 0; t < NT; t++) UNROLL for (int r = 0; r < NR; r++) y[t * ys + r] = hsum_ps(acc[r][t]);
}

/* ------------------------------------------------ f32 / f16 / bf16 x f32 */

enum { K_F32, K_F16, K_BF16 };

AI __m256 fw_load8(const int kind, const uint8_t *w, int64_t j) {
    switch (kind) {
    case K_F32: return _mm256_loadu_ps((const float *)w + j);
    case K_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + j)));
    default: {
        const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + j)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
    }
}

AI float fw_load1(const int kind, const uint8_t *w, int64_t j) {
    switch (kind) {
    case K_F32: return ((const float *)w)[j];
    case K_F16: return f16_to_f32(((const uint16_t *)w)[j]);
    default: return bf16_to_fp32(((const uint16_t *)w)[j]);
    }
}

AI void f_tile(const int kind, const int NR, const int NT, int64_t n, const uint8_t *w, size_t ws,
               const uint8_t *a, size_t as, float *y, size_t ys) {
    __m256 acc[4][4];
    UNROLL for (int r = 0; r < NR; r++) UNROLL for (int t = 0; t < NT; t++) acc[r][t] = _mm256_setzero_ps();
    const int64_t n8 = n & ~(int64_t)7;
    for (int64_t j = 0; j < n8; j += 8) {
        __m256 wv[4];
        UNROLL for (int r = 0; r < NR; r++) {
            if (NT == 1 && (j * (kind == K_F32 ? 4 : 2)) % 64 == 0)
                prefetch_ahead(w + r * ws + j * (kind == K_F32 ? 4 : 2), 64);
            wv[r] = fw_load8(kind, w + r * ws, j);
        }
        UNROLL for (int t = 0; t < NT; t++) {
            const __m256 av = _mm256_loadu_ps((const float *)(a + t * as) + j);
            UNROLL for (int r = 0; r < NR; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], av, acc[r][t]);
        }
    }
    UNROLL for (int t = 0; t < NT; t++) UNROLL for (int r = 0; r < NR; r++) {
        float s = hsum_ps(acc[r][t]);
        for (int64_t j = n8; j < n; j++) s += fw_load1(kind, w + r * ws, j) * ((const float *)(a + t * as))[j];
        y[t * ys + r] = s;
    }
}

/* -------------------------------------------------------------- dispatch */

/* Instantiates, for one weight type, the 1 x 1 dot product and the tile
 * entry point with its fast shapes: QUANT_DECODE_ROWS x 1 (decode), R x T
 * (prefill), R x 1 and 1 x T (remainders), 1 x 1. */
#define DEFINE_KERNELS(name, family, kind, R, T)                                                                 \
    static float name##_dot(const void *row, const void *act, int64_t n) {                                       \
        float y;                                                                                                  \
        family##_tile(kind, 1, 1, n, (const uint8_t *)row, 0, (const uint8_t *)act, 0, &y, 0);                   \
        return y;                                                                                                 \
    }                                                                                                             \
    static void name##_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as,       \
                            float *y, size_t ys) {                                                                \
        const uint8_t *W = (const uint8_t *)w, *A = (const uint8_t *)a;                                           \
        if (nr == QUANT_DECODE_ROWS && nt == 1) {                                                                 \
            family##_tile(kind, QUANT_DECODE_ROWS, 1, n, W, ws, A, as, y, ys);                                    \
            return;                                                                                               \
        }                                                                                                         \
        if (nr == R) {                                                                                            \
            int t = 0;                                                                                            \
            for (; t + T <= nt; t += T) family##_tile(kind, R, T, n, W, ws, A + t * as, as, y + t * ys, ys);      \
            for (; t < nt; t++) family##_tile(kind, R, 1, n, W, ws, A + t * as, as, y + t * ys, ys);              \
            return;                                                                                               \
        }                                                                                                         \
        for (int r = 0; r < nr; r++) {                                                                            \
            int t = 0;                                                                                            \
            for (; t + T <= nt; t += T)                                                                           \
                family##_tile(kind, 1, T, n, W + r * ws, ws, A + t * as, as, y + t * ys + r, ys);                 \
            for (; t < nt; t++) family##_tile(kind, 1, 1, n, W + r * ws, ws, A + t * as, as, y + t * ys + r, ys); \
        }                                                                                                         \
    }

DEFINE_KERNELS(f32, f, K_F32, F_TILE_R, F_TILE_T)
DEFINE_KERNELS(f16, f, K_F16, F_TILE_R, F_TILE_T)
DEFINE_KERNELS(bf16, f, K_BF16, F_TILE_R, F_TILE_T)
DEFINE_KERNELS(q4_0, b32, K_Q4_0, B32_TILE_R, B32_TILE_T)
DEFINE_KERNELS(q4_1, b32, K_Q4_1, B32_TILE_R, B32_TILE_T)
DEFINE_KERNELS(q5_0, b32, K_Q5_0, B32_TILE_R, B32_TILE_T)
DEFINE_KERNELS(q5_1, b32, K_Q5_1, B32_TILE_R, B32_TILE_T)
DEFINE_KERNELS(q8_0, b32, K_Q8_0, B32_TILE_R, B32_TILE_T)
DEFINE_KERNELS(iq4_nl, b32, K_IQ4_NL, B32_TILE_R, B32_TILE_T)
DEFINE_KERNELS(q2_K, kq, K_Q2_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q3_K, kq, K_Q3_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q4_K, kq, K_Q4_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q5_K, kq, K_Q5_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q6_K, kq, K_Q6_K, K_TILE_R, K_TILE_T)

#define WK(name, R, T) { .vec_dot = name##_dot, .vec_dot_tile = name##_tile, .tile_rows = R, .tile_tokens = T }
static const quant_kernels k_avx2[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = { .from_float = NULL, .vec_dot = f32_dot, .vec_dot_tile = f32_tile, .tile_rows = F_TILE_R,
                        .tile_tokens = F_TILE_T },
    [GGML_TYPE_F16] = WK(f16, F_TILE_R, F_TILE_T),
    [GGML_TYPE_BF16] = WK(bf16, F_TILE_R, F_TILE_T),
    [GGML_TYPE_Q4_0] = WK(q4_0, B32_TILE_R, B32_TILE_T),
    [GGML_TYPE_Q4_1] = WK(q4_1, B32_TILE_R, B32_TILE_T),
    [GGML_TYPE_Q5_0] = WK(q5_0, B32_TILE_R, B32_TILE_T),
    [GGML_TYPE_Q5_1] = WK(q5_1, B32_TILE_R, B32_TILE_T),
    [GGML_TYPE_Q8_0] = { .from_float = from_float_q8_0_avx2, .vec_dot = q8_0_dot, .vec_dot_tile = q8_0_tile,
                         .tile_rows = B32_TILE_R, .tile_tokens = B32_TILE_T },
    [GGML_TYPE_IQ4_NL] = WK(iq4_nl, B32_TILE_R, B32_TILE_T),
    [GGML_TYPE_Q8_1] = { .from_float = from_float_q8_1_avx2 },
    [GGML_TYPE_Q8_K] = { .from_float = from_float_q8_K_avx2 },
    [GGML_TYPE_Q2_K] = WK(q2_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q3_K] = WK(q3_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q4_K] = WK(q4_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q5_K] = WK(q5_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q6_K] = WK(q6_K, K_TILE_R, K_TILE_T),
};
#undef WK

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* f32 activations are used as they are: the F32 row borrows the scalar copy
 * (quant.c) as its from_float, so only the weight kernels are listed here. */
const quant_kernels *quant_avx2_kernels(uint32_t type) {
    if (type >= GGML_TYPE_COUNT) return NULL;
    const quant_kernels *k = &k_avx2[type];
    return k->from_float || k->vec_dot ? k : NULL;
}

#else /* not x86-64 */

const quant_kernels *quant_avx2_kernels(uint32_t type) {
    (void)type;
    return NULL;
}

#endif
