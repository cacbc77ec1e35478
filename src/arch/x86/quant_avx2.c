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
 *  - Quantized dot products sum each block's (super-block's) code products
 *    exactly in 32-bit integer lanes, reduce the lanes to the block's integer
 *    sum, and apply the scalar reference's float steps to it (separate
 *    multiplies and adds, no FMA), several rows or (row, token) pairs per
 *    vector. The results equal the scalar twins' bit for bit, for every tile
 *    shape and for the packed path. (This relies on the compiler not fusing
 *    multiplies and adds on its own: ISO C mode, as the Makefile builds.)
 *  - f32/f16/bf16: one FMA per 8 values into an 8-lane accumulator per
 *    (row, token), lanes added at the end; identical operations in every
 *    tile shape, the reference's order only up to rounding.
 *  - Signed x signed byte products use ggml's sign trick: |w| (unsigned) times
 *    sign(a, w) with vpmaddubsw, which cannot saturate for codes in
 *    [-128, 127] x [-127, 127]. Unsigned codes (q4_1, q5_1, K-quants) go into
 *    vpmaddubsw directly; the K-quants' code offsets (q3_K's -4, q6_K's -32)
 *    and minimums are applied through the activation block sums (bsums).
 */
#include <string.h>

#include "fp16.h"
#include "quant_blocks.h"
#include "arch/quant_arch.h"
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
#define UNROLL _Pragma("GCC unroll 8")

/* Register tile of the prefill kernels, per family (rows x tokens): 2 x 4
 * measured best or equal-best among 2x4, 4x2, 3x3, 3x4, 4x4 for every family
 * (docs/performance.md). At most 4 x 4 (the accumulator arrays). */
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
 * of each row themselves: +28% tokens/s on Llama-3.2-1B Q4_0, one thread.
 * 256: with 2 threads +6..10% tg over 512 in three alternated rounds (128,
 * 192, 384, 1024, 2048 slower), equal to 512 on one thread, where 512 had
 * been measured best among 192 .. 2048 (docs/performance.md). */
#ifndef DECODE_PREFETCH_BYTES
#define DECODE_PREFETCH_BYTES 256
#endif

/* Prefetch the cache lines of [p, p + n) shifted DECODE_PREFETCH_BYTES ahead
 * (a block of n bytes starting at p is about to be read). */
AI void prefetch_ahead(const uint8_t *p, size_t n) {
    const char *q = (const char *)p + DECODE_PREFETCH_BYTES;
    for (size_t o = 0; o < n; o += 64) _mm_prefetch(q + o, _MM_HINT_T0);
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
    /* both halves loaded by the load unit, the upper shifted by 4: no shuffle */
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    const __m256i sh = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(sh, _mm256_set1_epi8(0x0F));
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

/* f32 "activations" are the floats themselves (matmul reads X directly; this
 * is the row's from_float for callers that convert anyway). */
static void f32_copy(const float *src, void *dst, int64_t n) { memcpy(dst, src, sizeof(float) * (size_t)n); }

/* 32 floats -> amax, codes as 4 x 8 i32 (rounded half to even, like rintf). */
AI float q8_block32(const float *x, __m256i q[4], float *amax_out) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        m = _mm256_max_ps(m, abs_ps(v[k]));
    }
    const float amax = simd_hmax_ps(m);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
    *amax_out = amax;
    return id;
}

void quant_from_float_q8_0_avx2(const float *src, void *dst, int64_t n) {
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
        const float amax = simd_hmax_ps(m);
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

/* Exact partial sums (8 lanes) of one block's code products with the
 * activation codes av. Offset types multiply their stored unsigned codes and
 * subtract off = offset * (pair sums of av); the rest use unsigned codes or
 * the sign trick. */
AI __m256i b32_block_dot(const int kind, const uint8_t *wb, __m256i av, __m256i off) {
    if (b32_has_min(kind)) return dot_u8(b32_codes(kind, wb, 1), av);
    if (b32_offset(kind)) {
        const __m256i u = b32_codes(kind, wb, 1);
        return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(u, av), off), _mm256_set1_epi16(1));
    }
    const __m256i q = b32_codes(kind, wb, 0);
    return dot_s8(_mm256_sign_epi8(q, q), q, av);
}

/* Activation block i of a row: codes, scale, sum term (q8_1), offset pairs. */
typedef struct {
    __m256i av, off;
    float d, s;
} b32_act;

AI b32_act b32_act_load(const int kind, const uint8_t *a, int64_t i) {
    const int hm = b32_has_min(kind);
    const uint8_t *ab = a + i * (hm ? sizeof(block_q8_1) : sizeof(block_q8_0));
    b32_act x;
    x.av = _mm256_loadu_si256((const __m256i *)(ab + (hm ? offsetof(block_q8_1, qs) : offsetof(block_q8_0, qs))));
    f16_t h;
    memcpy(&h, ab, 2);
    x.d = f16_to_f32(h);
    x.s = 0.0f;
    if (hm) {
        memcpy(&h, ab + offsetof(block_q8_1, s), 2);
        x.s = f16_to_f32(h);
    }
    x.off = b32_offset(kind) ? _mm256_maddubs_epi16(_mm256_set1_epi8((char)b32_offset(kind)), x.av)
                             : _mm256_setzero_si256();
    return x;
}

AI float b32_field(const uint8_t *wb, size_t ofs) {
    f16_t h;
    memcpy(&h, wb + ofs, 2);
    return f16_to_f32(h);
}

/* One row . one token: the scalar reference's arithmetic, block by block:
 * sum += d_w * d_a * isum (+ m * s), with the exact integer isum. */
AI float b32_dot1(const int kind, int64_t n, const uint8_t *w, const uint8_t *a) {
    const size_t wbs = b32_size(kind);
    __m128 sum = _mm_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        const uint8_t *wb = w + i * wbs;
        const b32_act x = b32_act_load(kind, a, i);
        const int isum = hsum_epi32(b32_block_dot(kind, wb, x.av, x.off));
        __m128 t = _mm_mul_ss(_mm_mul_ss(_mm_set_ss(b32_field(wb, 0)), _mm_set_ss(x.d)), _mm_cvtsi32_ss(sum, isum));
        if (b32_has_min(kind)) t = _mm_add_ss(t, _mm_mul_ss(_mm_set_ss(b32_field(wb, 2)), _mm_set_ss(x.s)));
        sum = _mm_add_ss(sum, t);
    }
    return _mm_cvtss_f32(sum);
}

/* Lane i = the sum of the 8 lanes of v_i. */
AI __m128i reduce4_epi32(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}
AI __m256i reduce8_epi32(const __m256i *v) {
    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* Eight rows . one token (decode): lane r = row r. */
AI void b32_rows8(const int kind, int64_t n, const uint8_t *w, size_t ws, const uint8_t *a, float *y) {
    const size_t wbs = b32_size(kind);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++) {
        const b32_act x = b32_act_load(kind, a, i);
        __m256i p[8];
        uint64_t dh[2] = {0, 0}, mh[2] = {0, 0};
        UNROLL for (int r = 0; r < 8; r++) {
            const uint8_t *wb = w + r * ws + i * wbs;
            prefetch_ahead(wb, wbs);
            p[r] = b32_block_dot(kind, wb, x.av, x.off);
            f16_t h;
            memcpy(&h, wb, 2);
            dh[r / 4] |= (uint64_t)h << (16 * (r % 4));
            memcpy(&h, wb + 2, 2);
            mh[r / 4] |= (uint64_t)h << (16 * (r % 4));
        }
        const __m256i isum = reduce8_epi32(p);
        const __m256 dw = _mm256_cvtph_ps(_mm_set_epi64x((long long)dh[1], (long long)dh[0]));
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x.d)), _mm256_cvtepi32_ps(isum));
        if (b32_has_min(kind)) {
            const __m256 mw = _mm256_cvtph_ps(_mm_set_epi64x((long long)mh[1], (long long)mh[0]));
            t = _mm256_add_ps(t, _mm256_mul_ps(mw, _mm256_set1_ps(x.s)));
        }
        acc = _mm256_add_ps(acc, t);
    }
    _mm256_storeu_ps(y, acc);
}

/* Tiles: one token at a time, eight rows at a time, the last nr % 8 one by
 * one (exact arithmetic makes any decomposition give the same bits). Many
 * tokens take the packed path. */
AI void b32_tile(const int kind, int64_t n, int nr, int nt, const uint8_t *w, size_t ws, const uint8_t *a,
                 size_t as, float *y, size_t ys) {
    for (int t = 0; t < nt; t++) {
        int r = 0;
        for (; r + 8 <= nr; r += 8) b32_rows8(kind, n, w + r * ws, ws, a + t * as, y + t * ys + r);
        for (; r < nr; r++) y[t * ys + r] = b32_dot1(kind, n, w + r * ws, a + t * as);
    }
}

/* --- packed path: 8 rows interleaved, 4 codes of each row per 32-bit lane.
 * Record of block i of a group of 8 rows:
 *   float d[8], then (q4_1, q5_1) float m[8];
 *   8 steps k of 32 bytes: row r's codes 4k .. 4k+3 in bytes 4r .. 4r+3
 *   (unsigned stored codes; signed types: |q| here, then 8 more steps of q
 *   for the signs).
 * One step multiplies all 8 rows with 4 activation codes broadcast to every
 * lane; the products of 4-bit codes accumulate 8 steps in 16-bit lanes,
 * 5-bit codes 4 steps, before one widening vpmaddwd. */

AI int b32_signed(const int kind) { return kind == K_Q8_0 || kind == K_IQ4_NL; }

AI size_t b32_record_bytes(const int kind) {
    return 32 + (b32_has_min(kind) ? 32 : 0) + (b32_signed(kind) ? 512 : 256);
}

/* 8 vectors of 8 dwords -> transposed: out[k] lane r = in[r] lane k. */
AI void transpose8_epi32(__m256i *v) {
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    v[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    v[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    v[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    v[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    v[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    v[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    v[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    v[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

AI void b32_pack(const int kind, int64_t n, const uint8_t *w, size_t ws, uint8_t *dst) {
    const size_t wbs = b32_size(kind), rec = b32_record_bytes(kind);
    for (int64_t i = 0; i < n / 32; i++, dst += rec) {
        float d[8], m[8];
        __m256i c[8], q[8];
        for (int r = 0; r < 8; r++) {
            const uint8_t *wb = w + r * ws + i * wbs;
            d[r] = b32_field(wb, 0);
            m[r] = b32_has_min(kind) ? b32_field(wb, 2) : 0.0f;
            q[r] = b32_codes(kind, wb, 1);
            c[r] = b32_signed(kind) ? _mm256_sign_epi8(q[r], q[r]) : q[r];
        }
        memcpy(dst, d, 32);
        uint8_t *codes = dst + 32;
        if (b32_has_min(kind)) {
            memcpy(codes, m, 32);
            codes += 32;
        }
        transpose8_epi32(c);
        for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(codes + 32 * k), c[k]);
        if (b32_signed(kind)) {
            transpose8_epi32(q);
            for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(codes + 256 + 32 * k), q[k]);
        }
    }
}

/* 8 packed rows . NT tokens; y[t * ys + r]. */
AI void b32_gemm8(const int kind, const int NT, int64_t n, const uint8_t *pk, const uint8_t *a, size_t as,
                  float *y, size_t ys) {
    const int hm = b32_has_min(kind), sg = b32_signed(kind), off = b32_offset(kind);
    const size_t rec = b32_record_bytes(kind);
    const size_t abs_ = hm ? sizeof(block_q8_1) : sizeof(block_q8_0);
    const size_t qofs = hm ? offsetof(block_q8_1, qs) : offsetof(block_q8_0, qs);
    const int flush = sg ? 1 : (kind == K_Q5_0 || kind == K_Q5_1) ? 4 : 8; /* steps per 16-bit accumulation */
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / 32; i++, pk += rec) {
        const __m256 d8 = _mm256_loadu_ps((const float *)pk);
        const uint8_t *codes = pk + 32 + (hm ? 32 : 0);
        const uint8_t *ab[4];
        __m256i s16[4], s32[4];
        UNROLL for (int t = 0; t < NT; t++) {
            ab[t] = a + t * as + i * abs_;
            s16[t] = _mm256_setzero_si256();
            s32[t] = _mm256_setzero_si256();
        }
        UNROLL for (int k = 0; k < 8; k++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(codes + 32 * k));
            __m256i ws_ = _mm256_setzero_si256();
            if (sg) ws_ = _mm256_loadu_si256((const __m256i *)(codes + 256 + 32 * k));
            UNROLL for (int t = 0; t < NT; t++) {
                int32_t a4;
                memcpy(&a4, ab[t] + qofs + 4 * k, 4);
                const __m256i av = _mm256_set1_epi32(a4);
                if (sg) {
                    s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(_mm256_maddubs_epi16(wv, _mm256_sign_epi8(av, ws_)), ones));
                } else {
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(wv, av));
                    if ((k + 1) % flush == 0) {
                        s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
                        s16[t] = _mm256_setzero_si256();
                    }
                }
            }
        }
        UNROLL for (int t = 0; t < NT; t++) {
            f16_t h;
            memcpy(&h, ab[t], 2);
            const float da = f16_to_f32(h);
            __m256i isum = s32[t];
            if (off) { /* minus offset * (sum of the activation codes) */
                const __m256i av = _mm256_loadu_si256((const __m256i *)(ab[t] + qofs));
                const int sa = hsum_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), av), ones));
                isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(off * sa));
            }
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(d8, _mm256_set1_ps(da)), _mm256_cvtepi32_ps(isum));
            if (hm) {
                memcpy(&h, ab[t] + offsetof(block_q8_1, s), 2);
                v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_loadu_ps((const float *)(pk + 32)), _mm256_set1_ps(f16_to_f32(h))));
            }
            acc[t] = _mm256_add_ps(acc[t], v);
        }
    }
    UNROLL for (int t = 0; t < NT; t++) _mm256_storeu_ps(y + t * ys, acc[t]);
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
    float d, dmin;
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
        o->d = b32_field(p, offsetof(block_q2_K, d));
        o->dmin = b32_field(p, offsetof(block_q2_K, dmin));
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
        o->d = b32_field(p, offsetof(block_q3_K, d));
        o->dmin = 0.0f;
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
        o->d = b32_field(p, 0);
        o->dmin = b32_field(p, 2);
        break;
    }
    default: { /* q6_K: int8 scales; codes stored + 32: corr = 32 * scale */
        const block_q6_K *b = (const block_q6_K *)p;
        const __m128i s = _mm_loadu_si128((const __m128i *)b->scales);
        o->sc = kq_even_odd(s, 1);
        o->corr = _mm256_slli_epi16(_mm256_cvtepi8_epi16(s), 5);
        o->d = b32_field(p, offsetof(block_q6_K, d));
        o->dmin = 0.0f;
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

/* NR x NT (NR * NT <= 8) rows x tokens. Per super-block, every (row, token)
 * pair gets the scalar reference's exact integers isum (scaled code
 * products, code offsets subtracted) and msum (minimums . bsums), then
 * sum += d_a * d * isum - d_a * dmin * msum, in the reference's order; with
 * 8 or 4 pairs the integers are reduced across pairs into lanes and the
 * float steps run on all pairs at once. */
AI void kq_tile(const int kind, const int NR, const int NT, int64_t n, const uint8_t *w, size_t ws,
                const uint8_t *a, size_t as, float *y, size_t ys) {
    const size_t wbs = kq_size(kind);
    const int NP = NR * NT, hmin = kq_has_min(kind);
    __m256 acc8 = _mm256_setzero_ps();
    __m128 acc4 = _mm_setzero_ps(), acc1[8];
    UNROLL for (int p = 0; p < NP; p++) acc1[p] = _mm_setzero_ps();
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
        /* pair p = t * NR + r */
        __m256i is[8], ms[8];
        float dl[8], dml[8], dal[8];
        UNROLL for (int t = 0; t < NT; t++) {
            const block_q8_K *ab = (const block_q8_K *)(a + t * as) + i;
            const __m256i bs = _mm256_loadu_si256((const __m256i *)ab->bsums);
            UNROLL for (int r = 0; r < NR; r++) {
                const int p = t * NR + r;
                const __m256i corr = _mm256_madd_epi16(o[r].corr, bs);
                is[p] = hmin ? sumi[r][t] : _mm256_sub_epi32(sumi[r][t], corr);
                ms[p] = corr;
                dl[p] = o[r].d;
                dml[p] = o[r].dmin;
                dal[p] = ab->d;
            }
        }
        if (NP == 8) {
            const __m256 da = _mm256_setr_ps(dal[0], dal[1], dal[2], dal[3], dal[4], dal[5], dal[6], dal[7]);
            const __m256 dv = _mm256_setr_ps(dl[0], dl[1], dl[2], dl[3], dl[4], dl[5], dl[6], dl[7]);
            __m256 v = _mm256_mul_ps(_mm256_mul_ps(da, dv), _mm256_cvtepi32_ps(reduce8_epi32(is)));
            if (hmin) {
                const __m256 dm = _mm256_setr_ps(dml[0], dml[1], dml[2], dml[3], dml[4], dml[5], dml[6], dml[7]);
                v = _mm256_sub_ps(v, _mm256_mul_ps(_mm256_mul_ps(da, dm), _mm256_cvtepi32_ps(reduce8_epi32(ms))));
            }
            acc8 = _mm256_add_ps(acc8, v);
        } else if (NP == 4) {
            const __m128 da = _mm_setr_ps(dal[0], dal[1], dal[2], dal[3]);
            const __m128 dv = _mm_setr_ps(dl[0], dl[1], dl[2], dl[3]);
            __m128 v = _mm_mul_ps(_mm_mul_ps(da, dv), _mm_cvtepi32_ps(reduce4_epi32(is[0], is[1], is[2], is[3])));
            if (hmin) {
                const __m128 dm = _mm_setr_ps(dml[0], dml[1], dml[2], dml[3]);
                v = _mm_sub_ps(v, _mm_mul_ps(_mm_mul_ps(da, dm), _mm_cvtepi32_ps(reduce4_epi32(ms[0], ms[1], ms[2], ms[3]))));
            }
            acc4 = _mm_add_ps(acc4, v);
        } else {
            UNROLL for (int p = 0; p < NP; p++) {
                const __m128 da = _mm_set_ss(dal[p]);
                __m128 v = _mm_mul_ss(_mm_mul_ss(da, _mm_set_ss(dl[p])), _mm_cvtsi32_ss(da, hsum_epi32(is[p])));
                if (hmin)
                    v = _mm_sub_ss(v, _mm_mul_ss(_mm_mul_ss(da, _mm_set_ss(dml[p])), _mm_cvtsi32_ss(da, hsum_epi32(ms[p]))));
                acc1[p] = _mm_add_ss(acc1[p], v);
            }
        }
    }
    float out[8];
    if (NP == 8) _mm256_storeu_ps(out, acc8);
    else if (NP == 4) _mm_storeu_ps(out, acc4);
    else UNROLL for (int p = 0; p < NP; p++) out[p] = _mm_cvtss_f32(acc1[p]);
    UNROLL for (int t = 0; t < NT; t++) UNROLL for (int r = 0; r < NR; r++) y[t * ys + r] = out[t * NR + r];
}

/* --- packed path for the K-quants: 8 rows interleaved like the 32-value
 * types (step k = values 4k .. 4k+3 of every row). Record of super-block i
 * of a group of 8 rows:
 *   float d[8], dmin[8];
 *   per scale unit u (q4_K/q5_K: 8 groups of 32 values, else 16 sub-blocks
 *   of 16): 16 x i16, row r's scale in lanes 2r and 2r + 1;
 *   per bsums pair p (8): 16 x i16, lanes 2r, 2r + 1 = row r's kq_row.corr
 *   coefficients of bsums 2p and 2p + 1;
 *   64 steps of 32 unsigned code bytes.
 * Products accumulate in 16-bit lanes for as many steps as cannot overflow
 * (63 * 127 * 2 per step for 6-bit codes: 2 steps; 5-bit: 4; else 8), then
 * vpmaddwd with the unit's scales widens them to 32 bits. */

AI int kq_unit_steps(const int kind) { return kind == K_Q4_K || kind == K_Q5_K ? 8 : 4; }
AI int kq_units(const int kind) { return 64 / kq_unit_steps(kind); }
AI int kq_i16_steps(const int kind) {
    return kind == K_Q6_K ? 2 : kind == K_Q5_K ? 4 : kq_unit_steps(kind);
}
AI size_t kq_record_bytes(const int kind) { return 64 + 32 * (size_t)kq_units(kind) + 256 + 2048; }

/* Scale of unit u of a row (the integers of the scalar reference). */
AI int kq_unit_scale(const int kind, const uint8_t *p, int u) {
    switch (kind) {
    case K_Q2_K: return ((const block_q2_K *)p)->scales[u] & 0x0F;
    case K_Q3_K: return q3k_scale(((const block_q3_K *)p)->scales, u);
    case K_Q4_K:
    case K_Q5_K: {
        uint8_t sc, mn;
        kquant_scale_min(kind == K_Q4_K ? ((const block_q4_K *)p)->scales : ((const block_q5_K *)p)->scales, u, &sc, &mn);
        return sc;
    }
    default: return ((const block_q6_K *)p)->scales[u];
    }
}

AI void kq_pack(const int kind, int64_t n, const uint8_t *w, size_t ws, uint8_t *dst) {
    const size_t wbs = kq_size(kind), rec = kq_record_bytes(kind);
    const int units = kq_units(kind);
    for (int64_t i = 0; i < n / QK_K; i++, dst += rec) {
        float d[8], dm[8];
        __m256i corr[8];
        int16_t *sc = (int16_t *)(void *)(dst + 64);
        for (int r = 0; r < 8; r++) {
            const uint8_t *wb = w + r * ws + i * wbs;
            kq_row o;
            kq_prepare(kind, wb, &o);
            d[r] = o.d;
            dm[r] = o.dmin;
            corr[r] = o.corr;
            for (int u = 0; u < units; u++) {
                int16_t v = (int16_t)kq_unit_scale(kind, wb, u);
                memcpy(sc + 16 * u + 2 * r, &v, 2);
                memcpy(sc + 16 * u + 2 * r + 1, &v, 2);
            }
        }
        memcpy(dst, d, 32);
        memcpy(dst + 32, dm, 32);
        uint8_t *cp = dst + 64 + 32 * (size_t)units;
        transpose8_epi32(corr);
        for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(cp + 32 * k), corr[k]);
        uint8_t *codes = cp + 256;
        for (int g = 0; g < 8; g++) {
            __m256i c[8];
            for (int r = 0; r < 8; r++) c[r] = kq_group(kind, w + r * ws + i * wbs, g);
            transpose8_epi32(c);
            for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i *)(codes + 32 * (8 * g + k)), c[k]);
        }
    }
}

/* 8 packed rows . NT tokens; y[t * ys + r]. */
AI void kq_gemm8(const int kind, const int NT, int64_t n, const uint8_t *pk, const uint8_t *a, size_t as, float *y,
                 size_t ys) {
    const size_t rec = kq_record_bytes(kind);
    const int units = kq_units(kind), su = kq_unit_steps(kind), si16 = kq_i16_steps(kind);
    __m256 acc[4];
    UNROLL for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++, pk += rec) {
        const uint8_t *scp = pk + 64, *cp = scp + 32 * (size_t)units, *codes = cp + 256;
        const block_q8_K *ab[4];
        __m256i isum[4], s16[4];
        UNROLL for (int t = 0; t < NT; t++) {
            ab[t] = (const block_q8_K *)(a + t * as) + i;
            isum[t] = _mm256_setzero_si256();
        }
        for (int u = 0; u < units; u++) {
            const __m256i scv = _mm256_loadu_si256((const __m256i *)(scp + 32 * u));
            UNROLL for (int s = 0; s < 8; s++) {
                if (s >= su) break;
                const int k = u * su + s;
                const __m256i wv = _mm256_loadu_si256((const __m256i *)(codes + 32 * k));
                UNROLL for (int t = 0; t < NT; t++) {
                    int32_t a4;
                    memcpy(&a4, ab[t]->qs + 4 * k, 4);
                    const __m256i p = _mm256_maddubs_epi16(wv, _mm256_set1_epi32(a4));
                    s16[t] = s % si16 == 0 ? p : _mm256_add_epi16(s16[t], p);
                    if ((s + 1) % si16 == 0) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], scv));
                }
            }
        }
        const __m256 d8 = _mm256_loadu_ps((const float *)pk), dm8 = _mm256_loadu_ps((const float *)(pk + 32));
        UNROLL for (int t = 0; t < NT; t++) {
            __m256i cs = _mm256_setzero_si256();
            UNROLL for (int q = 0; q < 8; q++) {
                int32_t b2;
                memcpy(&b2, ab[t]->bsums + 2 * q, 4);
                cs = _mm256_add_epi32(cs, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(cp + 32 * q)),
                                                            _mm256_set1_epi32(b2)));
            }
            const __m256 da = _mm256_set1_ps(ab[t]->d);
            __m256 v;
            if (kq_has_min(kind)) {
                v = _mm256_mul_ps(_mm256_mul_ps(da, d8), _mm256_cvtepi32_ps(isum[t]));
                v = _mm256_sub_ps(v, _mm256_mul_ps(_mm256_mul_ps(da, dm8), _mm256_cvtepi32_ps(cs)));
            } else {
                v = _mm256_mul_ps(_mm256_mul_ps(da, d8), _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[t], cs)));
            }
            acc[t] = _mm256_add_ps(acc[t], v);
        }
    }
    UNROLL for (int t = 0; t < NT; t++) _mm256_storeu_ps(y + t * ys, acc[t]);
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
        float s = simd_hsum_ps(acc[r][t]);
        for (int64_t j = n8; j < n; j++) s += fw_load1(kind, w + r * ws, j) * ((const float *)(a + t * as))[j];
        y[t * ys + r] = s;
    }
}

/* -------------------------------------------------------------- dispatch */

/* Rows per decode tile (one token): measured on Llama-3.2-1B, one thread —
 * 8 rows for the 32-value types (+8% Q4_0 tokens/s over 4), 4 for the
 * K-quants and float types (8 was 3% slower for Q4_K_M). */
#define B32_DECODE_ROWS 8
#define DECODE_ROWS 4

/* Instantiates, for one weight type of the f / kq families, the 1 x 1 dot
 * product and the tile entry point with its fast shapes:
 * DECODE_ROWS x 1 (decode), R x T (prefill), R x 1 and 1 x T
 * (remainders), 1 x 1. */
#define DEFINE_KERNELS(name, family, kind, R, T)                                                                 \
    static float name##_dot(const void *row, const void *act, int64_t n) {                                       \
        float y;                                                                                                  \
        family##_tile(kind, 1, 1, n, (const uint8_t *)row, 0, (const uint8_t *)act, 0, &y, 0);                   \
        return y;                                                                                                 \
    }                                                                                                             \
    static void name##_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as,       \
                            float *y, size_t ys) {                                                                \
        const uint8_t *W = (const uint8_t *)w, *A = (const uint8_t *)a;                                           \
        if (nr == DECODE_ROWS && nt == 1) {                                                                       \
            family##_tile(kind, DECODE_ROWS, 1, n, W, ws, A, as, y, ys);                                          \
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
DEFINE_KERNELS(q2_K, kq, K_Q2_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q3_K, kq, K_Q3_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q4_K, kq, K_Q4_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q5_K, kq, K_Q5_K, K_TILE_R, K_TILE_T)
DEFINE_KERNELS(q6_K, kq, K_Q6_K, K_TILE_R, K_TILE_T)

/* The K-quants' dot and tiles, for the rows of the VNNI levels (quant_arch.h). */
float quant_avx2_q4_K_dot(const void *row, const void *act, int64_t n) { return q4_K_dot(row, act, n); }
float quant_avx2_q6_K_dot(const void *row, const void *act, int64_t n) { return q6_K_dot(row, act, n); }
void quant_avx2_q4_K_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as, float *y,
                          size_t ys) {
    q4_K_tile(n, nr, nt, w, ws, a, as, y, ys);
}
void quant_avx2_q6_K_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as, float *y,
                          size_t ys) {
    q6_K_tile(n, nr, nt, w, ws, a, as, y, ys);
}

/* The packed path of a type: record bytes, pack, 8 rows x nt tokens. */
#define DEFINE_PACKED(name, family, kind, blk)                                                                    \
    static size_t name##_pack_bytes(int64_t n) { return (size_t)(n / (blk)) * family##_record_bytes(kind); }     \
    static void name##_pack(int64_t n, const void *w, size_t ws, void *dst) {                                    \
        family##_pack(kind, n, (const uint8_t *)w, ws, (uint8_t *)dst);                                           \
    }                                                                                                             \
    static void name##_gemm(int64_t n, const void *pk, int nt, const void *a, size_t as, float *y, size_t ys) {   \
        const uint8_t *P = (const uint8_t *)pk, *A = (const uint8_t *)a;                                          \
        int t = 0;                                                                                                \
        for (; t + 4 <= nt; t += 4) family##_gemm8(kind, 4, n, P, A + t * as, as, y + t * ys, ys);                \
        for (; t < nt; t++) family##_gemm8(kind, 1, n, P, A + t * as, as, y + t * ys, ys);                        \
    }

DEFINE_PACKED(q2_K, kq, K_Q2_K, QK_K)
DEFINE_PACKED(q3_K, kq, K_Q3_K, QK_K)
DEFINE_PACKED(q4_K, kq, K_Q4_K, QK_K)
DEFINE_PACKED(q5_K, kq, K_Q5_K, QK_K)
DEFINE_PACKED(q6_K, kq, K_Q6_K, QK_K)

/* The 32-value block types: dot, tile (rows x tokens one token at a time)
 * and the packed path (8 rows x up to 4 tokens per call). */
#define DEFINE_B32(name, kind)                                                                                    \
    static float name##_dot(const void *row, const void *act, int64_t n) {                                       \
        return b32_dot1(kind, n, (const uint8_t *)row, (const uint8_t *)act);                                    \
    }                                                                                                             \
    static void name##_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as,       \
                            float *y, size_t ys) {                                                                \
        b32_tile(kind, n, nr, nt, (const uint8_t *)w, ws, (const uint8_t *)a, as, y, ys);                         \
    }                                                                                                             \
    DEFINE_PACKED(name, b32, kind, 32)

DEFINE_B32(q4_0, K_Q4_0)
DEFINE_B32(q4_1, K_Q4_1)
DEFINE_B32(q5_0, K_Q5_0)
DEFINE_B32(q5_1, K_Q5_1)
DEFINE_B32(q8_0, K_Q8_0)
DEFINE_B32(iq4_nl, K_IQ4_NL)

/* pack_min_tokens: where the packed path overtakes the tiles (one thread,
 * 2048 x 1024 matrices; docs/performance.md). */
#define WK(name, R, T)                                                                                      \
    { .vec_dot = name##_dot, .vec_dot_tile = name##_tile, .tile_rows = R, .tile_tokens = T,                     \
      .decode_rows = DECODE_ROWS, .pack_bytes = name##_pack_bytes, .pack_rows = name##_pack,                   \
      .gemm_packed = name##_gemm, .pack_min_tokens = 12 }
#define WF(name, R, T)                                                                                      \
    { .vec_dot = name##_dot, .vec_dot_tile = name##_tile, .tile_rows = R, .tile_tokens = T, .decode_rows = DECODE_ROWS }
#define WB(name, min_tokens)                                                                            \
    { .vec_dot = name##_dot, .vec_dot_tile = name##_tile, .tile_rows = B32_DECODE_ROWS, .tile_tokens = 1, \
      .decode_rows = B32_DECODE_ROWS, .pack_bytes = name##_pack_bytes, .pack_rows = name##_pack, .gemm_packed = name##_gemm,                \
      .pack_min_tokens = min_tokens }
const quant_kernels quant_kernels_avx2[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = { .from_float = f32_copy, .vec_dot = f32_dot, .vec_dot_tile = f32_tile, .tile_rows = F_TILE_R,
                        .tile_tokens = F_TILE_T, .decode_rows = DECODE_ROWS },
    [GGML_TYPE_F16] = WF(f16, F_TILE_R, F_TILE_T),
    [GGML_TYPE_BF16] = WF(bf16, F_TILE_R, F_TILE_T),
    [GGML_TYPE_Q4_0] = WB(q4_0, 4),
    [GGML_TYPE_Q4_1] = WB(q4_1, 4),
    [GGML_TYPE_Q5_0] = WB(q5_0, 4),
    [GGML_TYPE_Q5_1] = WB(q5_1, 4),
    [GGML_TYPE_Q8_0] = { .from_float = quant_from_float_q8_0_avx2, .vec_dot = q8_0_dot, .vec_dot_tile = q8_0_tile,
                         .tile_rows = B32_DECODE_ROWS, .tile_tokens = 1, .decode_rows = B32_DECODE_ROWS,
                         .pack_bytes = q8_0_pack_bytes,
                         .pack_rows = q8_0_pack, .gemm_packed = q8_0_gemm, .pack_min_tokens = 16 },
    [GGML_TYPE_IQ4_NL] = WB(iq4_nl, 16),
    [GGML_TYPE_Q8_1] = { .from_float = from_float_q8_1_avx2 },
    [GGML_TYPE_Q8_K] = { .from_float = from_float_q8_K_avx2 },
    [GGML_TYPE_Q2_K] = WK(q2_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q3_K] = WK(q3_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q4_K] = WK(q4_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q5_K] = WK(q5_K, K_TILE_R, K_TILE_T),
    [GGML_TYPE_Q6_K] = WK(q6_K, K_TILE_R, K_TILE_T),
};
#undef WK
#undef WF
#undef WB

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else /* not x86-64 */

const quant_kernels quant_kernels_avx2[GGML_TYPE_COUNT];

#endif
