/* kv_trellis_avx512.c — the AVX-512 (F/BW) twin of kv_trellis.c's scalar
 * ktt decoder (ktt_kernels_avx512, kv_trellis.h): 16 steps at a time, each
 * step's 32-bit window gathered with masked tails, byte-swapped, shifted and
 * masked into its table index; the levels are then read with scalar loads.
 * Bit-identical to the scalar kernel (the same table entries). */
#include "kv_trellis.h"
#include "kv_transform_plan.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define KTT512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))

static KTT512 float levels_avx512(const kvt_head *h, const uint8_t *src, float *y) {
    const struct ktt_plan *p = h->tt;
    uint8_t pad[8];
    const uint8_t *f = ktt_row_prologue(p, src + 1, pad, y);
    const __m512i bswap = _mm512_set_epi8(60, 61, 62, 63, 56, 57, 58, 59, 52, 53, 54, 55, 48, 49, 50, 51, 44, 45, 46,
                                          47, 40, 41, 42, 43, 36, 37, 38, 39, 32, 33, 34, 35, 28, 29, 30, 31, 24, 25,
                                          26, 27, 20, 21, 22, 23, 16, 17, 18, 19, 12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6,
                                          7, 0, 1, 2, 3);
    const __m512i mask = _mm512_set1_epi32((int)p->mask);
    for (int t = p->n_wrap; t < p->n_tt; t += 16) {
        const int left = p->n_tt - t;
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        const __m512i by = _mm512_maskz_loadu_epi32(m, p->byte + t);
        const __m512i sh = _mm512_maskz_loadu_epi32(m, p->shift + t);
        const __m512i tb = _mm512_maskz_loadu_epi32(m, p->tab + t);
        __m512i w = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, by, f, 1);
        w = _mm512_shuffle_epi8(w, bswap);
        const __m512i s = _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(w, sh), mask), tb);
        /* the levels by scalar loads: a second vpgatherdd over the 32 KiB of
         * tables measured no faster on Zen 4 (kv-codecs.md) */
        int32_t st[16];
        _mm512_storeu_si512((void *)st, s);
        for (int j = 0; j < 16 && j < left; j++) y[t + j] = ktt_tables[st[j]];
    }
    ktt_row_epilogue(h, f, y);
    return kvt_scale_table[src[0]];
}

const ktt_kernels ktt_kernels_avx512 = {levels_avx512};

#else

const ktt_kernels ktt_kernels_avx512;

#endif
