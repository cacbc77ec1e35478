/* quant_vnni.h — VNNI kernels of the 32-value weight types (q4_0, iq4_nl,
 * q8_0) on the repacked layout of quant.h, written once for a vector width
 * and included by the files of each level with these macros set:
 *
 *   VNNI_W        256 or 512 (bits per vector; R = VNNI_W / 32 rows per group)
 *   VNNI_NAME(x)  a unique name per instantiation (x ## _avx512, ...)
 *   DPBUSD256     the 256-bit vpdpbusd of the instantiation's encoding (VEX or EVEX)
 *
 * The includer sets the target (pragma) around the include. Shared by the
 * levels: a lane is one weight row, so one vpdpbusd with 4 broadcast
 * activation codes advances R rows' exact integer sums; the integer sum of a
 * block is then turned into floats with the scalar reference's operations,
 * (d_w * d_a) * isum added to the row's sum, lane by lane. Results are
 * bit-identical to quant.c's vec_dot_*_q8_0 for every row and token.
 *
 * The codes enter vpdpbusd as unsigned bytes u = q + OFF (q4_0: the stored
 * nibble, OFF 8; iq4_nl: its level + 128, OFF 128; q8_0: q + 128 as stored
 * repacked, OFF 128), so isum = sum(u * a) - OFF * sum(a): exact in 32 bits
 * (|sum| <= 32 * 255 * 128). */

#include <string.h>

#include "fp16.h"
#include "quant.h"
#include "quant_blocks.h"

#if VNNI_W == 512
#define VR 16
typedef __m512i v_i;
typedef __m512 v_f;
#define V_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define V_SET1_32(x) _mm512_set1_epi32(x)
#define V_SET1_8(x) _mm512_set1_epi8(x)
#define V_AND(a, b) _mm512_and_si512(a, b)
#define V_SRLI16(v, n) _mm512_srli_epi16(v, n)
#define V_DPBUSD(acc, u, a) _mm512_dpbusd_epi32(acc, u, a)
#define V_SHUF8(t, i) _mm512_shuffle_epi8(t, i)
#define V_BCAST128(p) _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(p)))
#define VF_CVT(v) _mm512_cvtepi32_ps(v)
#define VF_MUL(a, b) _mm512_mul_ps(a, b)
#define VF_ADD(a, b) _mm512_add_ps(a, b)
#define VF_SET1(x) _mm512_set1_ps(x)
#define VF_ZERO() _mm512_setzero_ps()
#define VF_STORE(p, v) _mm512_storeu_ps(p, v)
#define VF_HALF(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define V_U8_32(p) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p)))
#define V_S8_32(p) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p)))
#define V_MULLO(a, b) _mm512_mullo_epi32(a, b)
#define V_ADD32(a, b) _mm512_add_epi32(a, b)
#define V_SUB32(a, b) _mm512_sub_epi32(a, b)
#define V_ZERO() _mm512_setzero_si512()
#define V_OR(a, b) _mm512_or_si512(a, b)
#define V_SLLI16(v, n) _mm512_slli_epi16(v, n)
#define VF_SUB(a, b) _mm512_sub_ps(a, b)
#else
#define VR 8
typedef __m256i v_i;
typedef __m256 v_f;
#define V_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define V_SET1_32(x) _mm256_set1_epi32(x)
#define V_SET1_8(x) _mm256_set1_epi8(x)
#define V_AND(a, b) _mm256_and_si256(a, b)
#define V_SRLI16(v, n) _mm256_srli_epi16(v, n)
#define V_DPBUSD(acc, u, a) DPBUSD256(acc, u, a)
#define V_SHUF8(t, i) _mm256_shuffle_epi8(t, i)
#define V_BCAST128(p) _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p)))
#define VF_CVT(v) _mm256_cvtepi32_ps(v)
#define VF_MUL(a, b) _mm256_mul_ps(a, b)
#define VF_ADD(a, b) _mm256_add_ps(a, b)
#define VF_SET1(x) _mm256_set1_ps(x)
#define VF_ZERO() _mm256_setzero_ps()
#define VF_STORE(p, v) _mm256_storeu_ps(p, v)
#define VF_HALF(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define V_U8_32(p) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p)))
#define V_S8_32(p) _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p)))
#define V_MULLO(a, b) _mm256_mullo_epi32(a, b)
#define V_ADD32(a, b) _mm256_add_epi32(a, b)
#define V_SUB32(a, b) _mm256_sub_epi32(a, b)
#define V_ZERO() _mm256_setzero_si256()
#define V_OR(a, b) _mm256_or_si256(a, b)
#define V_SLLI16(v, n) _mm256_slli_epi16(v, n)
#define VF_SUB(a, b) _mm256_sub_ps(a, b)
#endif

#ifndef VNNI_COMMON
#define VNNI_COMMON
#define VAI static inline __attribute__((always_inline))
/* The loops over tokens and steps have constant trip counts once a kernel is
 * inlined with its NT; unrolled, the accumulator arrays live in registers
 * (at -O2 GCC kept them on the stack: a load and a store per vpdpbusd). */
#define VNNI_UNROLL _Pragma("GCC unroll 16")
enum { VK_Q4_0, VK_IQ4_NL, VK_Q8_0 };
/* Bytes ahead of the record being read that decode asks the memory for
 * (2048: 0, 512, 1024, 2048, 4096 measured, 2 threads, Llama-3.2-1B Q4_0):
 * each group is one sequential stream, but the hardware prefetchers stop at
 * 4 KiB pages (docs/performance.md). */
#ifndef VNNI_PREFETCH_BYTES
#define VNNI_PREFETCH_BYTES 2048
#endif
#endif

/* iq4_nl's levels + 128, as unsigned bytes (the vpdpbusd operand). */
static const uint8_t VNNI_NAME(iq4nl_u8)[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};

/* Sum of the 32 signed activation codes of a q8_0 block: sad of (q ^ 0x80)
 * against 0 sums q + 128. */
VAI int VNNI_NAME(act_sum)(const int8_t *q) {
    const __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)q), _mm256_set1_epi8((char)0x80));
    const __m256i s = _mm256_sad_epu8(v, _mm256_setzero_si256());
    const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (int)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - 32 * 128;
}

VAI int VNNI_NAME(off)(const int kind) { return kind == VK_Q4_0 ? 8 : 128; }

VAI float VNNI_NAME(half)(const void *p) {
    f16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Tokens per call: enough accumulators to reuse each unpacked weight vector
 * NT times within the registers (32 zmm, 16 ymm). */
#if VNNI_W == 512
#define VNNI_NT 8
#else
#define VNNI_NT 4
#endif

/* One group of VR repacked rows against NT tokens (NT a constant 1..VNNI_NT). */
VAI void VNNI_NAME(group)(const int kind, const int NT, int64_t n, const uint8_t *g, const uint8_t *a,
                          size_t as, const int32_t *asum, float *y, size_t ys) {
    const size_t rec = (size_t)VR * (kind == VK_Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0));
    const v_i m4 = V_SET1_8(0x0F);
    const v_i tbl = V_BCAST128(VNNI_NAME(iq4nl_u8));
    const int64_t nb = n / 32;
    v_f sum[VNNI_NT];
    VNNI_UNROLL
    for (int t = 0; t < NT; t++) sum[t] = VF_ZERO();
    for (int64_t i = 0; i < nb; i++, g += rec) {
#if VNNI_PREFETCH_BYTES > 0
        for (size_t o = 0; o < rec; o += 64) _mm_prefetch((const char *)g + VNNI_PREFETCH_BYTES + o, _MM_HINT_T0);
#endif
        const uint8_t *q = g + 2 * VR;
        v_i acc[VNNI_NT];
        float da[VNNI_NT];
        const int8_t *ac[VNNI_NT];
        VNNI_UNROLL
        for (int t = 0; t < NT; t++) {
            const block_q8_0 *ab = (const block_q8_0 *)(a + (size_t)t * as) + i;
            ac[t] = ab->qs;
            da[t] = VNNI_NAME(half)(&ab->d);
            const int32_t sa = asum ? asum[(size_t)t * (size_t)nb + (size_t)i] : VNNI_NAME(act_sum)(ab->qs);
            acc[t] = V_SET1_32(-VNNI_NAME(off)(kind) * sa);
        }
        if (kind == VK_Q8_0) {
            VNNI_UNROLL
            for (int k = 0; k < 8; k++) {
                const v_i w = V_LOAD(q + (size_t)k * 4 * VR);
                VNNI_UNROLL
                for (int t = 0; t < NT; t++) {
                    int32_t a4;
                    memcpy(&a4, ac[t] + 4 * k, 4);
                    acc[t] = V_DPBUSD(acc[t], w, V_SET1_32(a4));
                }
            }
        } else {
            VNNI_UNROLL
            for (int k = 0; k < 4; k++) {
                const v_i w = V_LOAD(q + (size_t)k * 4 * VR);
                v_i lo = V_AND(w, m4), hi = V_AND(V_SRLI16(w, 4), m4);
                if (kind == VK_IQ4_NL) {
                    lo = V_SHUF8(tbl, lo);
                    hi = V_SHUF8(tbl, hi);
                }
                VNNI_UNROLL
                for (int t = 0; t < NT; t++) {
                    int32_t a0, a1;
                    memcpy(&a0, ac[t] + 4 * k, 4);
                    memcpy(&a1, ac[t] + 16 + 4 * k, 4);
                    acc[t] = V_DPBUSD(acc[t], lo, V_SET1_32(a0));
                    acc[t] = V_DPBUSD(acc[t], hi, V_SET1_32(a1));
                }
            }
        }
        const v_f dw = VF_HALF(g);
        VNNI_UNROLL
        for (int t = 0; t < NT; t++) sum[t] = VF_ADD(sum[t], VF_MUL(VF_MUL(dw, VF_SET1(da[t])), VF_CVT(acc[t])));
    }
    VNNI_UNROLL
    for (int t = 0; t < NT; t++) VF_STORE(y + (size_t)t * ys, sum[t]);
}

VAI void VNNI_NAME(gemm)(const int kind, int64_t n, const void *group, int nt, const void *a, size_t as,
                         const int32_t *asum, float *y, size_t ys) {
    const uint8_t *g = group, *A = a;
    const size_t nb = (size_t)(n / 32);
    for (int t = 0; t < nt;) {
        const int left = nt - t;
        const uint8_t *At = A + (size_t)t * as;
        const int32_t *St = asum ? asum + (size_t)t * nb : NULL;
        float *Y = y + (size_t)t * ys;
#define VNNI_CASE(k)                                                                                              \
    case k: VNNI_NAME(group)(kind, k, n, g, At, as, St, Y, ys); t += k; break;
        switch (left >= VNNI_NT ? VNNI_NT : left) {
#if VNNI_NT == 8
        VNNI_CASE(8)
        VNNI_CASE(7)
        VNNI_CASE(6)
        VNNI_CASE(5)
#endif
        VNNI_CASE(4)
        VNNI_CASE(3)
        VNNI_CASE(2)
        default: VNNI_NAME(group)(kind, 1, n, g, At, as, St, Y, ys); t += 1; break;
        }
#undef VNNI_CASE
    }
}

/* One row in the file's layout . one token (rows outside a repacked group,
 * and the rows of a matrix that was not repacked). */
VAI float VNNI_NAME(dot1)(const int kind, int64_t n, const uint8_t *w, const uint8_t *a) {
    const size_t bs = kind == VK_Q8_0 ? sizeof(block_q8_0) : sizeof(block_q4_0);
    const __m128i tbl = _mm_loadu_si128((const __m128i *)VNNI_NAME(iq4nl_u8));
    float sum = 0.0f;
    for (int64_t i = 0; i < n / 32; i++, w += bs) {
        const block_q8_0 *ab = (const block_q8_0 *)a + i;
        __m256i u;
        if (kind == VK_Q8_0) {
            u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(w + 2)), _mm256_set1_epi8((char)0x80));
        } else {
            const __m128i b = _mm_loadu_si128((const __m128i *)(w + 2));
            __m128i lo = _mm_and_si128(b, _mm_set1_epi8(0x0F)), hi = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));
            if (kind == VK_IQ4_NL) {
                lo = _mm_shuffle_epi8(tbl, lo);
                hi = _mm_shuffle_epi8(tbl, hi);
            }
            u = _mm256_set_m128i(hi, lo);
        }
        const __m256i p = DPBUSD256(_mm256_setzero_si256(), u, _mm256_loadu_si256((const __m256i *)ab->qs));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
        const int isum = _mm_cvtsi128_si32(s) - VNNI_NAME(off)(kind) * VNNI_NAME(act_sum)(ab->qs);
        sum += VNNI_NAME(half)(w) * VNNI_NAME(half)(&ab->d) * (float)isum;
    }
    return sum;
}

/* ------------------------------------------------ K-quants x q8_K (records: quant.h) */

/* Tokens per call of the q4_K kernel (q6_K: 4, its 16 sums per token fill the registers). */
#ifndef VNNI_KNT
#if VNNI_W == 512
#define VNNI_KNT 8
#else
#define VNNI_KNT 4
#endif
#endif

VAI int32_t VNNI_NAME(a4)(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* q4_K: per pair of sub-blocks, 8 steps give both sub-blocks' exact code sums
 * per row; scales and minimums are applied in 32-bit lanes. */
VAI void VNNI_NAME(q4k_group)(const int NT, int64_t n, const uint8_t *g, const uint8_t *a, size_t as, float *y,
                              size_t ys) {
    const size_t rec = 148u * VR;
    const v_i m4 = V_SET1_8(0x0F);
    v_f sum[8];
    VNNI_UNROLL
    for (int t = 0; t < NT; t++) sum[t] = VF_ZERO();
    for (int64_t i = 0; i < n / QK_K; i++, g += rec) {
#if VNNI_PREFETCH_BYTES > 0
        for (size_t o = 0; o < rec; o += 64) _mm_prefetch((const char *)g + VNNI_PREFETCH_BYTES + o, _MM_HINT_T0);
#endif
        const block_q8_K *ab[8];
        v_i isum[8];
        VNNI_UNROLL
        for (int t = 0; t < NT; t++) {
            ab[t] = (const block_q8_K *)(a + (size_t)t * as) + i;
            isum[t] = V_ZERO();
        }
        VNNI_UNROLL
        for (int p = 0; p < 4; p++) {
            v_i slo[8], shi[8];
            VNNI_UNROLL
            for (int t = 0; t < NT; t++) slo[t] = shi[t] = V_ZERO();
            VNNI_UNROLL
            for (int k = 0; k < 8; k++) {
                const v_i w = V_LOAD(g + 20 * VR + (size_t)(8 * p + k) * 4 * VR);
                const v_i lo = V_AND(w, m4), hi = V_AND(V_SRLI16(w, 4), m4);
                VNNI_UNROLL
                for (int t = 0; t < NT; t++) {
                    slo[t] = V_DPBUSD(slo[t], lo, V_SET1_32(VNNI_NAME(a4)(ab[t]->qs + 64 * p + 4 * k)));
                    shi[t] = V_DPBUSD(shi[t], hi, V_SET1_32(VNNI_NAME(a4)(ab[t]->qs + 64 * p + 32 + 4 * k)));
                }
            }
            const v_i sc0 = V_U8_32(g + 4 * VR + (size_t)(2 * p) * VR), sc1 = V_U8_32(g + 4 * VR + (size_t)(2 * p + 1) * VR);
            VNNI_UNROLL
            for (int t = 0; t < NT; t++) isum[t] = V_ADD32(isum[t], V_ADD32(V_MULLO(slo[t], sc0), V_MULLO(shi[t], sc1)));
        }
        const v_f dw = VF_HALF(g), dm = VF_HALF(g + 2 * VR);
        VNNI_UNROLL
        for (int t = 0; t < NT; t++) {
            /* the minimums' term: sum over sub-blocks of m * (sum of its activation codes) */
            v_i msum = V_ZERO();
            VNNI_UNROLL
            for (int sb = 0; sb < 8; sb++)
                msum = V_ADD32(msum, V_MULLO(V_U8_32(g + 12 * VR + (size_t)sb * VR),
                                             V_SET1_32(ab[t]->bsums[2 * sb] + ab[t]->bsums[2 * sb + 1])));
            const v_f yd = VF_SET1(ab[t]->d);
            const v_f x = VF_SUB(VF_MUL(VF_MUL(yd, dw), VF_CVT(isum[t])), VF_MUL(VF_MUL(yd, dm), VF_CVT(msum)));
            sum[t] = VF_ADD(sum[t], x);
        }
    }
    VNNI_UNROLL
    for (int t = 0; t < NT; t++) VF_STORE(y + (size_t)t * ys, sum[t]);
}

/* q6_K: per (half, quarter k, 16-value half of l): 4 steps of 6-bit codes
 * (nibble | 2 high bits << 4) give a sub-block's sum; its offset 32 comes off
 * through the activation's bsums, then its int8 scale. */
VAI void VNNI_NAME(q6k_group)(const int NT, int64_t n, const uint8_t *g, const uint8_t *a, size_t as, float *y,
                              size_t ys) {
    const size_t rec = 210u * VR;
    const v_i m4 = V_SET1_8(0x0F), m30 = V_SET1_8(0x30);
    v_f sum[8];
    VNNI_UNROLL
    for (int t = 0; t < NT; t++) sum[t] = VF_ZERO();
    for (int64_t i = 0; i < n / QK_K; i++, g += rec) {
#if VNNI_PREFETCH_BYTES > 0
        for (size_t o = 0; o < rec; o += 64) _mm_prefetch((const char *)g + VNNI_PREFETCH_BYTES + o, _MM_HINT_T0);
#endif
        const block_q8_K *ab[8];
        v_i isum[8];
        VNNI_UNROLL
        for (int t = 0; t < NT; t++) {
            ab[t] = (const block_q8_K *)(a + (size_t)t * as) + i;
            isum[t] = V_ZERO();
        }
        VNNI_UNROLL
        for (int h = 0; h < 2; h++)
            VNNI_UNROLL
            for (int lh = 0; lh < 2; lh++) {
                /* one sub-block sb = 8h + 2k + lh at a time, so that only its
                 * NT sums are live beside isum and sum (with all four, NT = 4
                 * already spilled): its 4 steps j re-load the step's source
                 * vectors and unpack the one 6-bit code vector it needs */
                VNNI_UNROLL
                for (int k = 0; k < 4; k++) {
                    const int sb = 8 * h + 2 * k + lh;
                    v_i s[8];
                    VNNI_UNROLL
                    for (int t = 0; t < NT; t++) s[t] = V_SET1_32(-32 * ab[t]->bsums[sb]);
                    VNNI_UNROLL
                    for (int j = 4 * lh; j < 4 * lh + 4; j++) {
                        const uint8_t *v = g + 18 * VR + (size_t)((h * 8 + j) * 3) * 4 * VR;
                        const v_i L = V_LOAD(v + (k & 1) * 4 * VR), Q = V_LOAD(v + 8 * VR);
                        const v_i lo = k < 2 ? V_AND(L, m4) : V_AND(V_SRLI16(L, 4), m4);
                        const v_i hb = k == 0 ? V_SLLI16(Q, 4) : k == 1 ? V_SLLI16(Q, 2) : k == 2 ? Q : V_SRLI16(Q, 2);
                        const v_i u = V_OR(lo, V_AND(hb, m30));
                        VNNI_UNROLL
                        for (int t = 0; t < NT; t++)
                            s[t] = V_DPBUSD(s[t], u, V_SET1_32(VNNI_NAME(a4)(ab[t]->qs + 128 * h + 32 * k + 4 * j)));
                    }
                    const v_i sc = V_S8_32(g + 2 * VR + (size_t)sb * VR);
                    VNNI_UNROLL
                    for (int t = 0; t < NT; t++) isum[t] = V_ADD32(isum[t], V_MULLO(s[t], sc));
                }
            }
        const v_f dw = VF_HALF(g);
        VNNI_UNROLL
        for (int t = 0; t < NT; t++) sum[t] = VF_ADD(sum[t], VF_MUL(VF_MUL(VF_SET1(ab[t]->d), dw), VF_CVT(isum[t])));
    }
    VNNI_UNROLL
    for (int t = 0; t < NT; t++) VF_STORE(y + (size_t)t * ys, sum[t]);
}

/* Tiles of up to MAXNT (<= 8) tokens with NT a constant. */
#define VNNI_K_CASE(fam, k)                                                                                       \
    case k: VNNI_NAME(fam##_group)(k, n, g, A + (size_t)t * as, as, y + (size_t)t * ys, ys); t += k; break;
#define VNNI_K_GEMM(fam, MAXNT)                                                                                   \
    static void VNNI_NAME(fam##_gemm)(int64_t n, const void *grp, int nt, const void *a, size_t as,               \
                                      const int32_t *asum, float *y, size_t ys) {                                 \
        (void)asum;                                                                                               \
        const uint8_t *g = grp, *A = a;                                                                           \
        for (int t = 0; t < nt;) {                                                                                \
            switch (nt - t >= (MAXNT) ? (MAXNT) : nt - t) {                                                       \
                VNNI_K_CASE(fam, 8) VNNI_K_CASE(fam, 7) VNNI_K_CASE(fam, 6) VNNI_K_CASE(fam, 5)                   \
                VNNI_K_CASE(fam, 4) VNNI_K_CASE(fam, 3) VNNI_K_CASE(fam, 2)                                        \
            default: VNNI_NAME(fam##_group)(1, n, g, A + (size_t)t * as, as, y + (size_t)t * ys, ys); t += 1;      \
            }                                                                                                     \
        }                                                                                                         \
    }
VNNI_K_GEMM(q4k, VNNI_KNT)
VNNI_K_GEMM(q6k, VNNI_KNT)
#undef VNNI_K_GEMM
#undef VNNI_K_CASE

static void VNNI_NAME(q4k_repack)(int64_t n, const void *w, size_t ws, void *dst) {
    quant_repack_k(GGML_TYPE_Q4_K, VR, n, w, ws, dst);
}
static void VNNI_NAME(q6k_repack)(int64_t n, const void *w, size_t ws, void *dst) {
    quant_repack_k(GGML_TYPE_Q6_K, VR, n, w, ws, dst);
}
static size_t VNNI_NAME(q4k_group_bytes)(int64_t n) { return quant_repack_group_bytes(GGML_TYPE_Q4_K, VR, n); }
static size_t VNNI_NAME(q6k_group_bytes)(int64_t n) { return quant_repack_group_bytes(GGML_TYPE_Q6_K, VR, n); }

/* The kernel-row functions of one type. */
#define VNNI_TYPE(tn, kind, ggml)                                                                                 \
    static float VNNI_NAME(tn##_dot)(const void *row, const void *act, int64_t n) {                               \
        return VNNI_NAME(dot1)(kind, n, (const uint8_t *)row, (const uint8_t *)act);                               \
    }                                                                                                              \
    static void VNNI_NAME(tn##_tile)(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a,           \
                                     size_t as, float *y, size_t ys) {                                             \
        for (int t = 0; t < nt; t++)                                                                               \
            for (int r = 0; r < nr; r++)                                                                           \
                y[(size_t)t * ys + r] = VNNI_NAME(dot1)(kind, n, (const uint8_t *)w + (size_t)r * ws,              \
                                                        (const uint8_t *)a + (size_t)t * as);                      \
    }                                                                                                              \
    static void VNNI_NAME(tn##_repack)(int64_t n, const void *w, size_t ws, void *dst) {                          \
        quant_repack_b32(ggml, VR, n, w, ws, dst);                                                                 \
    }                                                                                                              \
    static void VNNI_NAME(tn##_gemm)(int64_t n, const void *g, int nt, const void *a, size_t as,                 \
                                     const int32_t *asum, float *y, size_t ys) {                                   \
        VNNI_NAME(gemm)(kind, n, g, nt, a, as, asum, y, ys);                                                       \
    }                                                                                                              \
    static size_t VNNI_NAME(tn##_group_bytes)(int64_t n) { return quant_repack_group_bytes(ggml, VR, n); }

VNNI_TYPE(q4_0, VK_Q4_0, GGML_TYPE_Q4_0)
VNNI_TYPE(iq4_nl, VK_IQ4_NL, GGML_TYPE_IQ4_NL)
VNNI_TYPE(q8_0, VK_Q8_0, GGML_TYPE_Q8_0)
#undef VNNI_TYPE

/* The rows of a level's table: the 32-value types (their own 1-row dot for
 * rows outside a group), q8_0 also as the activation type, and the K-quants,
 * whose other kernels (dot, tiles) stay the AVX2 ones: the table of a level
 * is per type, so those rows carry the AVX2 row's functions (quant_arch.h). */
#define VNNI_ROW(tn, ff)                                                                                           \
    { .from_float = ff, .vec_dot = VNNI_NAME(tn##_dot), .vec_dot_tile = VNNI_NAME(tn##_tile), .tile_rows = 1,      \
      .tile_tokens = 1, .decode_rows = 1, .repack_rows = VNNI_W / 32,                                              \
      .repack_group_bytes = VNNI_NAME(tn##_group_bytes), .repack = VNNI_NAME(tn##_repack),                        \
      .gemm_repacked = VNNI_NAME(tn##_gemm), .repack_tokens = VNNI_W == 512 ? 8 : 4, .repack_asum = true }
#define VNNI_KROW(tn, fam)                                                                                         \
    { .vec_dot = quant_avx2_##tn##_dot, .vec_dot_tile = quant_avx2_##tn##_tile, .tile_rows = 2, .tile_tokens = 4,  \
      .decode_rows = 4, .repack_rows = VNNI_W / 32, .repack_group_bytes = VNNI_NAME(fam##_group_bytes),             \
      .repack = VNNI_NAME(fam##_repack), .gemm_repacked = VNNI_NAME(fam##_gemm), .repack_tokens = VNNI_W == 512 ? 8 : 4 }
#define VNNI_TABLE_ROWS                                                                                            \
    [GGML_TYPE_Q4_0] = VNNI_ROW(q4_0, NULL), [GGML_TYPE_IQ4_NL] = VNNI_ROW(iq4_nl, NULL),                         \
    [GGML_TYPE_Q8_0] = VNNI_ROW(q8_0, quant_from_float_q8_0_avx2), [GGML_TYPE_Q4_K] = VNNI_KROW(q4_K, q4k),        \
    [GGML_TYPE_Q6_K] = VNNI_KROW(q6_K, q6k)

#undef VR
#undef VNNI_NT
#undef VNNI_KNT
#undef V_LOAD
#undef V_SET1_32
#undef V_SET1_8
#undef V_AND
#undef V_SRLI16
#undef V_DPBUSD
#undef V_SHUF8
#undef V_BCAST128
#undef VF_CVT
#undef VF_MUL
#undef VF_ADD
#undef VF_SET1
#undef VF_ZERO
#undef VF_STORE
#undef VF_HALF
#undef VF_SUB
#undef V_SLLI16
#undef V_OR
#undef V_ZERO
#undef V_SUB32
#undef V_ADD32
#undef V_MULLO
#undef V_S8_32
#undef V_U8_32
