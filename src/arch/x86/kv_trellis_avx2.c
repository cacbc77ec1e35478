/* kv_trellis_avx2.c — the AVX2 twin of kv_trellis.c's scalar ktt decoder
 * (ktt_kernels_avx2, kv_trellis.h): 8 steps at a time, each step's 32-bit
 * window gathered from its precomputed byte, byte-swapped (the string is MSB
 * first), shifted and masked into its state, and the level gathered from the
 * concatenated tables. The same entries as the scalar kernel: bit-identical. */
#include "kv_trellis.h"
#include "kv_transform_plan.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define KTT_AVX2 __attribute__((target("avx2,fma")))

static KTT_AVX2 float levels_avx2(const kvt_head *h, const uint8_t *src, float *y) {
    const struct ktt_plan *p = h->tt;
    uint8_t pad[8];
    const uint8_t *f = ktt_row_prologue(p, src + 1, pad, y);
    const __m256i bswap = _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5,
                                           4, 11, 10, 9, 8, 15, 14, 13, 12);
    const __m256i mask = _mm256_set1_epi32((int)p->mask);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int t = p->n_wrap;
    for (; t < p->n_tt; t += 8) {
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(p->n_tt - t), lane);
        const __m256i by = _mm256_maskload_epi32(p->byte + t, m);
        const __m256i sh = _mm256_maskload_epi32(p->shift + t, m);
        const __m256i tb = _mm256_maskload_epi32(p->tab + t, m);
        __m256i w = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)f, by, m, 1);
        w = _mm256_shuffle_epi8(w, bswap);
        const __m256i s = _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(w, sh), mask), tb);
        const __m256 v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), ktt_tables, s, _mm256_castsi256_ps(m), 4);
        _mm256_maskstore_ps(y + t, m, v);
    }
    ktt_row_epilogue(h, f, y);
    return kvt_scale_table[src[0]];
}

const ktt_kernels ktt_kernels_avx2 = {levels_avx2};

#else

const ktt_kernels ktt_kernels_avx2;

#endif
