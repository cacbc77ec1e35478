/* test_trellis.c — the bitshift trellis quantizer (trellis.c, lab module).
 *
 * Checks: the exact tail-biting Viterbi finds the same least squared error as
 * an exhaustive search over every bit string (small L and n, fixed and mixed
 * step bits, scalar and AVX2 steps), and the two-pass encoder never beats it;
 * decode(encode(x)) is the encoder's own reconstruction; the scalar and AVX2
 * steps give the same bits; sequences of any length (not multiples of 8) and
 * every k in 1..4; bad arguments rejected; the MSE of the shipped code on
 * N(0,1) vectors within 5% of the table in docs/kv-codecs.md ("Trellis-coded
 * quantization (lab)"). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trellis.h"

static void gaussian(float *x, int n, uint64_t *rng) {
    for (int i = 0; i < n; i++) x[i] = test_rand_normal(rng);
}

static double sse(const float *x, const float *y, int n) {
    double e = 0;
    for (int i = 0; i < n; i++) e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
    return e;
}

/* Viterbi (exact tail-biting) == exhaustive search; two-pass >= it. */
static void test_viterbi_is_optimal(void **state) {
    (void)state;
    static const struct {
        int L, n;
        uint8_t k[8];
    } cases[] = {
        {6, 5, {2, 2, 2, 2, 2}},       {6, 6, {2, 2, 2, 2, 2, 2}}, {5, 6, {1, 2, 3, 1, 2, 3}},
        {6, 3, {3, 3, 3}},             {6, 2, {4, 2}},             {7, 8, {1, 1, 1, 1, 1, 1, 1, 1}},
        {4, 4, {4, 1, 3, 2}},          {8, 5, {2, 3, 2, 3, 2}},    {6, 6, {1, 1, 2, 2, 1, 1}},
    };
    uint64_t rng = 11;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        trellis_code tc;
        assert_int_equal(trellis_code_init(&tc, cases[c].L, 3 + c, c % 2, 20), 0);
        const int n = cases[c].n;
        const uint8_t *k = cases[c].k;
        for (int simd = 0; simd <= 1; simd++) {
            trellis_simd(simd);
            for (int trial = 0; trial < 12; trial++) {
                float x[8], y[8], z[8];
                uint8_t bits[8], bits2[8];
                gaussian(x, n, &rng);
                if (trial == 0) memset(x, 0, sizeof x);
                const double best = trellis_encode_exhaustive(&tc, x, n, k, NULL);
                assert_true(best >= 0);
                assert_int_equal(trellis_encode_exact(&tc, x, n, k, bits, y, NULL), 0);
                const double e = sse(x, y, n);
                assert_true(fabs(e - best) <= 1e-5 * (1 + best));
                assert_int_equal(trellis_decode(&tc, bits, n, k, z), 0);
                assert_memory_equal(y, z, sizeof(float) * (size_t)n);
                assert_int_equal(trellis_encode(&tc, x, n, k, bits2, y, NULL), 0);
                assert_true(sse(x, y, n) >= best - 1e-5 * (1 + best));
                assert_int_equal(trellis_decode(&tc, bits2, n, k, z), 0);
                assert_memory_equal(y, z, sizeof(float) * (size_t)n);
            }
        }
        trellis_code_free(&tc);
    }
    trellis_simd(1);
}

/* Round trips at every k, lengths that are not multiples of 8, mixed k;
 * scalar and AVX2 steps give identical bits. */
static void test_round_trip_and_tails(void **state) {
    (void)state;
    const trellis_code *tc = trellis_default();
    assert_non_null(tc);
    assert_int_equal(tc->L, TRELLIS_L_DEFAULT);
    static const int ns[] = {64, 13, 37, 5, 100, 256, 255, 9};
    uint64_t rng = 5;
    void *work = malloc(trellis_work_size(tc->L, TRELLIS_N_MAX));
    assert_non_null(work);
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        for (int kk = 0; kk <= TRELLIS_K_MAX; kk++) { /* kk 0: mixed */
            const int n = ns[i];
            uint8_t k[TRELLIS_N_MAX];
            for (int t = 0; t < n; t++) k[t] = kk ? (uint8_t)kk : (uint8_t)(1 + (t * 7 + 3) % 4);
            const int B = trellis_bits(k, n);
            float x[TRELLIS_N_MAX], y[TRELLIS_N_MAX], z[TRELLIS_N_MAX];
            uint8_t bits[TRELLIS_N_MAX], bits2[TRELLIS_N_MAX];
            gaussian(x, n, &rng);
            if (B < tc->L) {
                assert_int_equal(trellis_encode(tc, x, n, k, bits, y, work), -1);
                assert_int_equal(trellis_decode(tc, bits, n, k, z), -1);
                continue;
            }
            memset(bits, 0xff, sizeof bits);
            trellis_simd(1);
            assert_int_equal(trellis_encode(tc, x, n, k, bits, y, work), 0);
            /* bytes past the string are untouched, unused bits of the last are 0 */
            assert_int_equal(bits[(B + 7) / 8], 0xff);
            if (B % 8) assert_int_equal(bits[B / 8] & (0xffu >> (B % 8)), 0);
            assert_int_equal(trellis_decode(tc, bits, n, k, z), 0);
            assert_memory_equal(y, z, sizeof(float) * (size_t)n);
            trellis_simd(0);
            assert_int_equal(trellis_encode(tc, x, n, k, bits2, z, NULL), 0);
            assert_memory_equal(bits, bits2, (size_t)(B + 7) / 8);
            trellis_simd(1);
            /* a sane error: well below the energy (short k = 1 strings barely exceed L bits) */
            assert_true(sse(x, y, n) < 0.8 * sse(x, (float[TRELLIS_N_MAX]){0}, n) + 1e-3);
        }
    }
    free(work);
}

static void test_bad_arguments(void **state) {
    (void)state;
    const trellis_code *tc = trellis_default();
    assert_non_null(tc);
    float x[TRELLIS_N_MAX + 1] = {0}, y[TRELLIS_N_MAX + 1];
    uint8_t k[TRELLIS_N_MAX + 1], bits[TRELLIS_N_MAX + 1];
    memset(k, 2, sizeof k);
    assert_int_equal(trellis_encode(tc, x, 64, k, bits, y, NULL), 0);
    assert_int_equal(trellis_encode(NULL, x, 64, k, bits, y, NULL), -1);
    assert_int_equal(trellis_encode(tc, NULL, 64, k, bits, y, NULL), -1);
    assert_int_equal(trellis_encode(tc, x, 64, NULL, bits, y, NULL), -1);
    assert_int_equal(trellis_encode(tc, x, 64, k, NULL, y, NULL), -1);
    assert_int_equal(trellis_encode(tc, x, 0, k, bits, y, NULL), -1);
    assert_int_equal(trellis_encode(tc, x, TRELLIS_N_MAX + 1, k, bits, y, NULL), -1);
    assert_int_equal(trellis_encode(tc, x, 5, k, bits, y, NULL), -1); /* 10 bits < L */
    assert_int_equal(trellis_decode(tc, bits, 5, k, y), -1);
    assert_int_equal(trellis_decode(tc, bits, TRELLIS_N_MAX + 1, k, y), -1);
    assert_int_equal(trellis_decode(tc, NULL, 64, k, y), -1);
    assert_int_equal(trellis_decode(tc, bits, 64, k, NULL), -1);
    k[7] = 0;
    assert_int_equal(trellis_encode(tc, x, 64, k, bits, y, NULL), -1);
    assert_int_equal(trellis_decode(tc, bits, 64, k, y), -1);
    k[7] = 5;
    assert_int_equal(trellis_encode(tc, x, 64, k, bits, y, NULL), -1);
    assert_int_equal(trellis_encode_exact(tc, x, 64, k, bits, y, NULL), -1);
    k[7] = 2;
    x[3] = NAN;
    assert_int_equal(trellis_encode(tc, x, 64, k, bits, y, NULL), -1);
    x[3] = INFINITY;
    assert_int_equal(trellis_encode_exact(tc, x, 64, k, bits, y, NULL), -1);
    x[3] = 0;
    assert_true(trellis_encode_exhaustive(tc, x, 13, k, NULL) < 0); /* 26 bits > 24 */
    trellis_code c;
    assert_int_equal(trellis_code_init(&c, TRELLIS_L_MIN - 1, 1, 0, 0), -1);
    assert_int_equal(trellis_code_init(&c, TRELLIS_L_MAX + 1, 1, 0, 0), -1);
    assert_int_equal(trellis_code_init(&c, 8, 1, 2, 0), -1);
    assert_int_equal(trellis_code_init(NULL, 8, 1, 0, 0), -1);
    assert_int_equal(trellis_work_size(TRELLIS_L_MAX + 1, 64), 0);
    assert_int_equal(trellis_work_size(8, 0), 0);
    /* a code built twice with one seed is the same code */
    trellis_code a, b;
    assert_int_equal(trellis_code_init(&a, 8, 9, 1, 16), 0);
    assert_int_equal(trellis_code_init(&b, 8, 9, 1, 16), 0);
    for (int kk = 1; kk <= TRELLIS_K_MAX; kk++) assert_memory_equal(a.table[kk], b.table[kk], sizeof(float) << 8);
    trellis_code_free(&a);
    trellis_code_free(&b);
}

/* The shipped code's MSE on N(0,1) vectors of 64, within 5% of the table in
 * docs/kv-codecs.md (bench/trellis_mse, 1600 vectors; here 1000 others). */
static void test_gaussian_mse(void **state) {
    (void)state;
    const trellis_code *tc = trellis_default();
    assert_non_null(tc);
    static const struct {
        int hi, lo, interleave;
        double mse;
    } rows[] = {
        {2, 2, 0, 0.07677}, {3, 2, 0, 0.04606}, {3, 2, 1, 0.04022}, {3, 3, 0, 0.02095},
        {4, 3, 0, 0.01280}, {4, 3, 1, 0.01105}, {4, 4, 0, 0.00574},
    };
    enum { NV = 1000, D = 64 };
    void *work = malloc(trellis_work_size(tc->L, D));
    assert_non_null(work);
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        uint8_t k[D], bits[D];
        for (int i = 0; i < D; i++)
            k[i] = (uint8_t)(rows[r].interleave ? (i % 2 ? rows[r].lo : rows[r].hi) : (i < D / 2 ? rows[r].hi : rows[r].lo));
        uint64_t rng = 2024;
        double e = 0;
        for (int v = 0; v < NV; v++) {
            float x[D], y[D];
            gaussian(x, D, &rng);
            assert_int_equal(trellis_encode(tc, x, D, k, bits, y, work), 0);
            e += sse(x, y, D);
        }
        const double mse = e / (NV * D);
        print_message("k %d/%d%s: MSE %.5f (doc %.5f)\n", rows[r].hi, rows[r].lo,
                      rows[r].interleave ? " interleaved" : "", mse, rows[r].mse);
        assert_true(fabs(mse / rows[r].mse - 1) < 0.05);
    }
    free(work);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_viterbi_is_optimal),
        cmocka_unit_test(test_round_trip_and_tails),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_gaussian_mse),
    };
    return cmocka_run_group_tests_name("trellis", tests, NULL, NULL);
}
