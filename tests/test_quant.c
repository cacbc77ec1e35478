/* test_quant.c — quant.c: traits table, block layouts (hand-packed blocks),
 * vec_dot against dequantize-then-dot, quantizer rounding and round trips. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp16.h"
#include "quant.h"
#include "testutil.h"

/* block structs hold uint16_t fields: keep test buffers aligned */
#define ALIGNED _Alignas(16)

#define QK 32
#define QKK 256

static const int8_t kv_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* Expected values are computed here with exactly representable operands
 * (power-of-two scales, small integer codes), so comparisons are exact. */
static void expect_floats(const char *what, const float *got, const float *want, int n) {
    for (int i = 0; i < n; i++) {
        if (!(got[i] == want[i])) {
            print_message("%s: element %d: got %.9g want %.9g\n", what, i, (double)got[i], (double)want[i]);
            fail();
        }
    }
}

static void put_f16(uint8_t *p, float v) {
    const uint16_t h = fp32_to_fp16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) { return fp16_to_fp32((uint16_t)(p[0] | (p[1] << 8))); }

static void dequant(uint32_t type, const void *blk, float *out, int64_t n) {
    const quant_traits *t = quant_get_traits(type);
    assert_non_null(t);
    assert_non_null(t->dequantize_row);
    t->dequantize_row(blk, out, n);
}

/* ------------------------------------------------------------------------ */
/* Traits table and row sizes                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t type;
    const char *name;
    int blck;
    size_t size; /* from the field list of ggml's block struct */
    bool supported;
    bool quantizable;
} expected_type;

static const expected_type k_expected[] = {
    {GGML_TYPE_F32, "f32", 1, 4, true, true},
    {GGML_TYPE_F16, "f16", 1, 2, true, true},
    {GGML_TYPE_BF16, "bf16", 1, 2, true, true},
    {GGML_TYPE_Q4_0, "q4_0", 32, 2 + 16, true, true},
    {GGML_TYPE_Q4_1, "q4_1", 32, 2 + 2 + 16, true, true},
    {GGML_TYPE_Q5_0, "q5_0", 32, 2 + 4 + 16, true, true},
    {GGML_TYPE_Q5_1, "q5_1", 32, 2 + 2 + 4 + 16, true, true},
    {GGML_TYPE_Q8_0, "q8_0", 32, 2 + 32, true, true},
    {GGML_TYPE_Q8_1, "q8_1", 32, 2 + 2 + 32, false, false},
    {GGML_TYPE_Q2_K, "q2_K", 256, 16 + 64 + 2 + 2, true, false},
    {GGML_TYPE_Q3_K, "q3_K", 256, 32 + 64 + 12 + 2, true, false},
    {GGML_TYPE_Q4_K, "q4_K", 256, 2 + 2 + 12 + 128, true, false},
    {GGML_TYPE_Q5_K, "q5_K", 256, 2 + 2 + 12 + 32 + 128, true, false},
    {GGML_TYPE_Q6_K, "q6_K", 256, 128 + 64 + 16 + 2, true, false},
    {GGML_TYPE_Q8_K, "q8_K", 256, 4 + 256 + 2 * 16, false, false},
    {GGML_TYPE_IQ4_NL, "iq4_nl", 32, 2 + 16, true, true},
    {GGML_TYPE_MXFP4, "mxfp4", 32, 1 + 16, true, false},
};
#define N_EXPECTED (sizeof(k_expected) / sizeof(k_expected[0]))

static void test_traits_table(void **state) {
    (void)state;
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const expected_type *e = &k_expected[i];
        const quant_traits *t = quant_get_traits(e->type);
        assert_non_null(t);
        assert_string_equal(t->name, e->name);
        assert_string_equal(quant_type_name(e->type), e->name);
        assert_int_equal(t->blck_size, e->blck);
        assert_int_equal(t->type_size, e->size);
        assert_int_equal(t->supported, e->supported);
        if (e->supported) {
            assert_non_null(t->dequantize_row);
            assert_non_null(t->vec_dot_f32);
        }
        assert_int_equal(t->quantize_row != NULL, e->quantizable);
    }
    /* ids that are not in the table, including out of range ones */
    const uint32_t unknown[] = {4, 5, 16, 17, 19, 21, 23, 29, 31, 38, GGML_TYPE_COUNT, 41, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_null(quant_get_traits(unknown[i]));
        assert_string_equal(quant_type_name(unknown[i]), "unknown");
        assert_int_equal(quant_row_size(unknown[i], 256), 0);
    }
    /* every id below GGML_TYPE_COUNT is either listed above or unknown */
    for (uint32_t id = 0; id < GGML_TYPE_COUNT; id++) {
        bool listed = false;
        for (size_t i = 0; i < N_EXPECTED; i++) listed |= k_expected[i].type == id;
        assert_int_equal(quant_get_traits(id) != NULL, listed);
    }
}

static void test_row_size(void **state) {
    (void)state;
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const expected_type *e = &k_expected[i];
        assert_int_equal(quant_row_size(e->type, 0), 0);
        assert_int_equal(quant_row_size(e->type, e->blck), e->size);
        assert_int_equal(quant_row_size(e->type, 4096), (4096 / e->blck) * e->size);
        if (e->blck > 1) {
            assert_int_equal(quant_row_size(e->type, e->blck + 1), 0);
            assert_int_equal(quant_row_size(e->type, e->blck - 1), 0);
        }
        assert_int_equal(quant_row_size(e->type, -e->blck), 0);
    }
    assert_int_equal(quant_row_size(GGML_TYPE_F32, 7), 28);
    assert_int_equal(quant_row_size(GGML_TYPE_Q4_0, 64), 36);
    assert_int_equal(quant_row_size(GGML_TYPE_Q4_K, 4096), 16 * 144);
    assert_int_equal(quant_row_size(GGML_TYPE_Q6_K, 255), 0);
    assert_int_equal(quant_row_size(GGML_TYPE_Q8_0, 100), 0);
    /* absurd sizes do not wrap around */
    assert_int_equal(quant_row_size(GGML_TYPE_F32, INT64_MAX), 0);
    assert_int_equal(quant_row_size(GGML_TYPE_F32, INT64_MIN), 0);
}

/* ------------------------------------------------------------------------ */
/* Hand-packed blocks: codes chosen here, packed per the documented layout,  */
/* decoded values checked element by element.                                */
/* ------------------------------------------------------------------------ */

static void test_dequant_q4_0(void **state) {
    (void)state;
    ALIGNED uint8_t blk[18];
    int c[QK];
    for (int i = 0; i < QK; i++) c[i] = (i * 7 + 3) % 16;
    put_f16(blk, 0.5f);
    /* byte j: element j in the low nibble, element j + 16 in the high one */
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(c[j] | (c[j + 16] << 4));
    float want[QK], got[QK];
    for (int i = 0; i < QK; i++) want[i] = (float)(c[i] - 8) * 0.5f;
    dequant(GGML_TYPE_Q4_0, blk, got, QK);
    expect_floats("q4_0", got, want, QK);

    /* a single byte: 0x21 -> element 0 has code 1, element 16 code 2 */
    memset(blk + 2, 0x88, 16);
    blk[2] = 0x21;
    dequant(GGML_TYPE_Q4_0, blk, got, QK);
    assert_true(got[0] == -3.5f);
    assert_true(got[16] == -3.0f);
    assert_true(got[1] == 0.0f && got[15] == 0.0f && got[17] == 0.0f);
}

/* mxfp4: e2m1 levels 0 0.5 1 1.5 2 3 4 6 (sign in bit 3) times 2^(e - 127), as
 * the OCP format and ggml define it (ggml: doubled levels, halved scale); the
 * dot products equal the dequantized row's */
static void test_dequant_mxfp4(void **state) {
    (void)state;
    ALIGNED uint8_t blk[2 * 17];
    static const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
    int c[2 * QK];
    for (int i = 0; i < 2 * QK; i++) c[i] = (i * 7 + 3) % 16;
    blk[0] = 127 + 3; /* x 8 */
    blk[17] = 1;      /* 2^-126: ggml's subnormal path */
    for (int b = 0; b < 2; b++)
        for (int j = 0; j < 16; j++) blk[17 * b + 1 + j] = (uint8_t)(c[QK * b + j] | (c[QK * b + j + 16] << 4));
    float want[2 * QK], got[2 * QK];
    for (int i = 0; i < 2 * QK; i++) want[i] = e2m1[c[i]] * (i < QK ? 8.0f : ldexpf(1.0f, -126));
    dequant(GGML_TYPE_MXFP4, blk, got, 2 * QK);
    expect_floats("mxfp4", got, want, 2 * QK);
    const quant_traits *t = quant_get_traits(GGML_TYPE_MXFP4);
    float x[2 * QK];
    double ref = 0;
    for (int i = 0; i < 2 * QK; i++) {
        x[i] = (float)((i * 13) % 7) - 3.0f;
        ref += (double)want[i] * x[i];
    }
    assert_true(fabs(t->vec_dot_f32(blk, x, 2 * QK) - ref) < 1e-4);
}

static void test_dequant_q4_1(void **state) {
    (void)state;
    ALIGNED uint8_t blk[20];
    int c[QK];
    for (int i = 0; i < QK; i++) c[i] = (i * 5 + 1) % 16;
    put_f16(blk, 0.25f);
    put_f16(blk + 2, -1.5f);
    for (int j = 0; j < 16; j++) blk[4 + j] = (uint8_t)(c[j] | (c[j + 16] << 4));
    float want[QK], got[QK];
    for (int i = 0; i < QK; i++) want[i] = (float)c[i] * 0.25f - 1.5f;
    dequant(GGML_TYPE_Q4_1, blk, got, QK);
    expect_floats("q4_1", got, want, QK);
}

static void pack_q5(uint8_t *qh, uint8_t *qs, const int *c) {
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((c[j] & 15) | ((c[j + 16] & 15) << 4));
        h |= (uint32_t)(c[j] >> 4) << j;
        h |= (uint32_t)(c[j + 16] >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> (8 * k)); /* little-endian */
}

static void test_dequant_q5_0(void **state) {
    (void)state;
    ALIGNED uint8_t blk[22];
    int c[QK];
    for (int i = 0; i < QK; i++) c[i] = (i * 11 + 5) % 32;
    put_f16(blk, 0.125f);
    pack_q5(blk + 2, blk + 6, c);
    float want[QK], got[QK];
    for (int i = 0; i < QK; i++) want[i] = (float)(c[i] - 16) * 0.125f;
    dequant(GGML_TYPE_Q5_0, blk, got, QK);
    expect_floats("q5_0", got, want, QK);

    /* only bit 4 of element 31 set: qh = 0x80000000 */
    memset(blk + 2, 0, 20);
    blk[5] = 0x80;
    dequant(GGML_TYPE_Q5_0, blk, got, QK);
    for (int i = 0; i < QK; i++) assert_true(got[i] == (i == 31 ? 0.0f : -2.0f));
}

static void test_dequant_q5_1(void **state) {
    (void)state;
    ALIGNED uint8_t blk[24];
    int c[QK];
    for (int i = 0; i < QK; i++) c[i] = (i * 13 + 7) % 32;
    put_f16(blk, 2.0f);
    put_f16(blk + 2, -32.0f);
    pack_q5(blk + 4, blk + 8, c);
    float want[QK], got[QK];
    for (int i = 0; i < QK; i++) want[i] = (float)c[i] * 2.0f - 32.0f;
    dequant(GGML_TYPE_Q5_1, blk, got, QK);
    expect_floats("q5_1", got, want, QK);
}

static void test_dequant_q8_0(void **state) {
    (void)state;
    ALIGNED uint8_t blk[34];
    put_f16(blk, 0.0625f);
    float want[QK], got[QK];
    for (int i = 0; i < QK; i++) {
        const int q = i == 31 ? 127 : i * 8 - 128 + i % 3; /* -128 .. 127 */
        blk[2 + i] = (uint8_t)(int8_t)q;
        want[i] = (float)q * 0.0625f;
    }
    dequant(GGML_TYPE_Q8_0, blk, got, QK);
    expect_floats("q8_0", got, want, QK);
}

static void test_dequant_iq4_nl(void **state) {
    (void)state;
    ALIGNED uint8_t blk[18];
    int c[QK];
    for (int i = 0; i < QK; i++) c[i] = (i * 3 + 2) % 16;
    put_f16(blk, -0.5f);
    for (int j = 0; j < 16; j++) blk[2 + j] = (uint8_t)(c[j] | (c[j + 16] << 4));
    float want[QK], got[QK];
    for (int i = 0; i < QK; i++) want[i] = -0.5f * kv_iq4nl[c[i]];
    dequant(GGML_TYPE_IQ4_NL, blk, got, QK);
    expect_floats("iq4_nl", got, want, QK);
}

/* q2_K: element e = 128*h + 32*k + b (h = 0..1, k = 0..3, b = 0..31) sits in
 * bits 2k..2k+1 of qs[32h + b]; sub-block e/16 uses scales[e/16]
 * (low nibble scale, high nibble min). Layout: scales[16] qs[64] d dmin. */
static void test_dequant_q2_K(void **state) {
    (void)state;
    ALIGNED uint8_t blk[84] = {0};
    int c[QKK], sc[16], mn[16];
    for (int i = 0; i < 16; i++) {
        sc[i] = (i * 7 + 1) % 16;
        mn[i] = (i * 5 + 2) % 16;
        blk[i] = (uint8_t)(sc[i] | (mn[i] << 4));
    }
    for (int e = 0; e < QKK; e++) {
        c[e] = (e * 3 + e / 7) % 4;
        const int h = e / 128, k = (e % 128) / 32, b = e % 32;
        blk[16 + 32 * h + b] |= (uint8_t)(c[e] << (2 * k));
    }
    put_f16(blk + 80, 0.5f);
    put_f16(blk + 82, 0.25f);
    float want[QKK], got[QKK];
    for (int e = 0; e < QKK; e++) want[e] = 0.5f * (float)(sc[e / 16] * c[e]) - 0.25f * (float)mn[e / 16];
    dequant(GGML_TYPE_Q2_K, blk, got, QKK);
    expect_floats("q2_K", got, want, QKK);

    /* spot check: code of element 200 (h=1, k=2, b=8) is bits 4-5 of qs[40] */
    memset(blk + 16, 0, 64);
    blk[16 + 40] = 3 << 4;
    dequant(GGML_TYPE_Q2_K, blk, got, QKK);
    assert_true(got[200] == 0.5f * (float)(sc[12] * 3) - 0.25f * (float)mn[12]);
    assert_true(got[199] == -0.25f * (float)mn[12]);
}

/* q3_K: 3-bit code q = c + 4; bits 0-1 as in q2_K, bit 2 of element e in bit
 * e/32 of hmask[e % 32]. Scale i (6 bits, stored +32): low nibble in
 * scales[i] (i < 8) or high nibble of scales[i-8]; bits 4-5 in scales[8+i%4]
 * at bit 2*(i/4). Layout: hmask[32] qs[64] scales[12] d. */
static void test_dequant_q3_K(void **state) {
    (void)state;
    ALIGNED uint8_t blk[110] = {0};
    int c[QKK], sc[16];
    for (int i = 0; i < 16; i++) {
        sc[i] = (i * 13 + 5) % 64 - 32;
        const int u = sc[i] + 32;
        if (i < 8) blk[96 + i] |= (uint8_t)(u & 15);
        else blk[96 + i - 8] |= (uint8_t)((u & 15) << 4);
        blk[96 + 8 + i % 4] |= (uint8_t)((u >> 4) << (2 * (i / 4)));
    }
    for (int e = 0; e < QKK; e++) {
        c[e] = (e * 5 + e / 9) % 8 - 4;
        const int q = c[e] + 4;
        const int h = e / 128, k = (e % 128) / 32, b = e % 32;
        blk[32 + 32 * h + b] |= (uint8_t)((q & 3) << (2 * k));
        blk[e % 32] |= (uint8_t)((q >> 2) << (e / 32));
    }
    put_f16(blk + 108, 0.5f);
    float want[QKK], got[QKK];
    for (int e = 0; e < QKK; e++) want[e] = 0.5f * (float)(sc[e / 16] * c[e]);
    dequant(GGML_TYPE_Q3_K, blk, got, QKK);
    expect_floats("q3_K", got, want, QKK);

    /* hmask bit clear means "subtract 4": an all-zero block with scale
     * byte pattern 0 decodes to d * (0 - 32) * (0 - 4) everywhere */
    memset(blk, 0, 108);
    dequant(GGML_TYPE_Q3_K, blk, got, QKK);
    for (int e = 0; e < QKK; e++) assert_true(got[e] == 64.0f);
}

/* 6-bit scale/min packing shared by q4_K and q5_K (12 bytes). */
static void pack_k4_scales(uint8_t *s, const int *sc, const int *mn) {
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)sc[j];
            s[j + 4] |= (uint8_t)mn[j];
        } else {
            s[j + 4] |= (uint8_t)((sc[j] & 15) | ((mn[j] & 15) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

/* q4_K: element e: chunk e/64, byte qs[32*(e/64) + e%32], low nibble when
 * (e % 64) < 32. Sub-block e/32. Layout: d dmin scales[12] qs[128]. */
static void test_dequant_q4_K(void **state) {
    (void)state;
    ALIGNED uint8_t blk[144] = {0};
    int c[QKK], sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = 63 - 5 * j; /* >= 16 for j >= 4 exercises the top bits */
        mn[j] = 7 * j + 13;
    }
    pack_k4_scales(blk + 4, sc, mn);
    for (int e = 0; e < QKK; e++) {
        c[e] = (e * 7 + e / 11) % 16;
        blk[16 + 32 * (e / 64) + e % 32] |= (uint8_t)(c[e] << ((e % 64) < 32 ? 0 : 4));
    }
    put_f16(blk, 0.5f);
    put_f16(blk + 2, 0.125f);
    float want[QKK], got[QKK];
    for (int e = 0; e < QKK; e++) want[e] = 0.5f * (float)(sc[e / 32] * c[e]) - 0.125f * (float)mn[e / 32];
    dequant(GGML_TYPE_Q4_K, blk, got, QKK);
    expect_floats("q4_K", got, want, QKK);
}

/* q5_K: q4_K plus bit 4 of element e in bit e/32 of qh[e % 32].
 * Layout: d dmin scales[12] qh[32] qs[128]. */
static void test_dequant_q5_K(void **state) {
    (void)state;
    ALIGNED uint8_t blk[176] = {0};
    int c[QKK], sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (j * 23 + 17) % 64;
        mn[j] = (j * 41 + 3) % 64;
    }
    pack_k4_scales(blk + 4, sc, mn);
    for (int e = 0; e < QKK; e++) {
        c[e] = (e * 13 + e / 5) % 32;
        blk[48 + 32 * (e / 64) + e % 32] |= (uint8_t)((c[e] & 15) << ((e % 64) < 32 ? 0 : 4));
        blk[16 + e % 32] |= (uint8_t)((c[e] >> 4) << (e / 32));
    }
    put_f16(blk, 0.25f);
    put_f16(blk + 2, 0.5f);
    float want[QKK], got[QKK];
    for (int e = 0; e < QKK; e++) want[e] = 0.25f * (float)(sc[e / 32] * c[e]) - 0.5f * (float)mn[e / 32];
    dequant(GGML_TYPE_Q5_K, blk, got, QKK);
    expect_floats("q5_K", got, want, QKK);
}

/* q6_K: element e = 128*h + 32*k + l (k = 0..3, l = 0..31), code q = c + 32:
 * low nibble in ql[64h + l + 32*(k&1)] (low half of the byte if k < 2),
 * top 2 bits in qh[32h + l] at bit 2k; int8 scale scales[e/16].
 * Layout: ql[128] qh[64] scales[16] d. */
static void test_dequant_q6_K(void **state) {
    (void)state;
    ALIGNED uint8_t blk[210] = {0};
    int c[QKK], sc[16];
    for (int i = 0; i < 16; i++) {
        sc[i] = (i * 37 + 11) % 256 - 128;
        blk[192 + i] = (uint8_t)(int8_t)sc[i];
    }
    for (int e = 0; e < QKK; e++) {
        c[e] = (e * 29 + e / 3) % 64 - 32;
        const int q = c[e] + 32;
        const int h = e / 128, k = (e % 128) / 32, l = e % 32;
        blk[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q & 15) << (k < 2 ? 0 : 4));
        blk[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
    }
    put_f16(blk + 208, 0.0625f);
    float want[QKK], got[QKK];
    for (int e = 0; e < QKK; e++) want[e] = 0.0625f * (float)(sc[e / 16] * c[e]);
    dequant(GGML_TYPE_Q6_K, blk, got, QKK);
    expect_floats("q6_K", got, want, QKK);
}

static void test_dequant_float_types(void **state) {
    (void)state;
    const uint16_t h[4] = {0x3C00, 0xC000, 0x0001, 0x7BFF}; /* 1, -2, 2^-24, 65504 */
    float got[4];
    dequant(GGML_TYPE_F16, h, got, 4);
    assert_true(got[0] == 1.0f && got[1] == -2.0f && got[2] == 0x1p-24f && got[3] == 65504.0f);
    const uint16_t b[3] = {0x3F80, 0xC040, 0x4049}; /* 1, -3, 3.140625 */
    dequant(GGML_TYPE_BF16, b, got, 3);
    assert_true(got[0] == 1.0f && got[1] == -3.0f && got[2] == 3.140625f);
    const float f[3] = {1.5f, -0.0f, 1e30f};
    dequant(GGML_TYPE_F32, f, got, 3);
    assert_memory_equal(got, f, sizeof(f));
}

/* ------------------------------------------------------------------------ */
/* vec_dot_f32 against dequantize-then-dot (double accumulation)             */
/* ------------------------------------------------------------------------ */

/* Byte offsets of the f16 scale fields of one block, for building random
 * blocks with finite, moderate scales. */
static int f16_fields(uint32_t type, int *off) {
    switch (type) {
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q5_0: case GGML_TYPE_Q8_0: case GGML_TYPE_IQ4_NL:
        off[0] = 0;
        return 1;
    case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_1: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K:
        off[0] = 0;
        off[1] = 2;
        return 2;
    case GGML_TYPE_Q2_K:
        off[0] = 80;
        off[1] = 82;
        return 2;
    case GGML_TYPE_Q3_K:
        off[0] = 108;
        return 1;
    case GGML_TYPE_Q6_K:
        off[0] = 208;
        return 1;
    default:
        return 0;
    }
}

static void random_row(uint32_t type, uint8_t *row, int64_t n, uint64_t *rng) {
    const quant_traits *t = quant_get_traits(type);
    if (type == GGML_TYPE_F32) {
        for (int64_t i = 0; i < n; i++) ((float *)row)[i] = test_rand_normal(rng);
        return;
    }
    if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const float v = test_rand_normal(rng) * 4.0f;
            ((uint16_t *)row)[i] = type == GGML_TYPE_F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
        }
        return;
    }
    const size_t size = quant_row_size(type, n);
    for (size_t i = 0; i < size; i++) row[i] = (uint8_t)test_rand_u64(rng);
    if (type == GGML_TYPE_MXFP4) { /* E8M0 scales around 2^-5 */
        for (size_t b = 0; b < size; b += t->type_size) row[b] = (uint8_t)(118 + test_rand_u64(rng) % 8);
        return;
    }
    int off[2];
    const int nf = f16_fields(type, off);
    assert_true(nf > 0);
    for (size_t b = 0; b < size; b += t->type_size) {
        for (int k = 0; k < nf; k++) put_f16(row + b + off[k], test_rand_normal(rng) * 0.05f);
    }
}

static void test_vec_dot_matches_dequant(void **state) {
    (void)state;
    enum { N = 1024 };
    static ALIGNED uint8_t row[N * 4];
    static float deq[N], x[N];
    uint64_t rng = 0x5eed;
    int checked = 0;
    for (uint32_t type = 0; type < GGML_TYPE_COUNT; type++) {
        const quant_traits *t = quant_get_traits(type);
        if (!t || !t->supported) continue;
        checked++;
        for (int trial = 0; trial < 40; trial++) {
            /* full rows and a single block */
            const int64_t n = trial % 4 == 3 ? t->blck_size : N;
            random_row(type, row, n, &rng);
            for (int64_t i = 0; i < n; i++) x[i] = test_rand_normal(&rng) * (trial % 5 == 0 ? 100.0f : 1.0f);
            t->dequantize_row(row, deq, n);
            double ref = 0.0, mag = 0.0;
            for (int64_t i = 0; i < n; i++) {
                ref += (double)deq[i] * (double)x[i];
                mag += fabs((double)deq[i] * (double)x[i]);
            }
            const double got = t->vec_dot_f32(row, x, n);
            if (!(fabs(got - ref) <= 1e-5 * mag + 1e-30)) {
                print_message("%s trial %d: vec_dot %.9g ref %.9g (sum|ab| %.9g)\n", t->name, trial, got, ref, mag);
                fail();
            }
        }
    }
    assert_int_equal(checked, 15);
}

static void test_vec_dot_small(void **state) {
    (void)state;
    /* n = 0 is an empty sum; odd lengths work for the unquantized types */
    const float a[5] = {1, 2, 3, 4, 5}, x[5] = {1, -1, 1, -1, 2};
    assert_true(quant_get_traits(GGML_TYPE_F32)->vec_dot_f32(a, x, 0) == 0.0f);
    assert_true(quant_get_traits(GGML_TYPE_F32)->vec_dot_f32(a, x, 5) == 8.0f);
    uint16_t h[5];
    quant_get_traits(GGML_TYPE_F16)->quantize_row(a, h, 5);
    assert_true(quant_get_traits(GGML_TYPE_F16)->vec_dot_f32(h, x, 5) == 8.0f);
    quant_get_traits(GGML_TYPE_BF16)->quantize_row(a, h, 5);
    assert_true(quant_get_traits(GGML_TYPE_BF16)->vec_dot_f32(h, x, 5) == 8.0f);
}

/* ------------------------------------------------------------------------ */
/* Quantizers: exact codes for known inputs (ggml reference rounding)        */
/* ------------------------------------------------------------------------ */

static int nib(const uint8_t *qs, int i) { return i < 16 ? (qs[i] & 15) : (qs[i - 16] >> 4); }

static void quantize(uint32_t type, const float *x, void *out, int64_t n) {
    const quant_traits *t = quant_get_traits(type);
    assert_non_null(t);
    assert_non_null(t->quantize_row);
    t->quantize_row(x, out, n);
}

static void test_quantize_q4_0_codes(void **state) {
    (void)state;
    float x[QK];
    ALIGNED uint8_t blk[18];
    /* x = (j - 16) / 4: max-magnitude element is -4 -> d = -4 / -8 = 0.5,
     * code = trunc(x / 0.5 + 8.5) = trunc(j/2 + 0.5): halves round up. */
    for (int j = 0; j < QK; j++) x[j] = (float)(j - 16) * 0.25f;
    quantize(GGML_TYPE_Q4_0, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x3800); /* f16 0.5 */
    for (int j = 0; j < QK; j++) assert_int_equal(nib(blk + 2, j), j < 31 ? (j + 1) / 2 : 15); /* 16 -> 15 */

    /* positive max: d = 4 / -8 = -0.5, so code = trunc(8.5 - 2x) */
    memset(x, 0, sizeof(x));
    x[0] = 4.0f;    /* -> 0 */
    x[1] = -3.9f;   /* 16.3 -> clamped to 15 */
    x[2] = -3.75f;  /* exactly 16 -> clamped to 15 */
    x[3] = 0.25f;   /* 8 */
    x[4] = -0.25f;  /* 9 */
    x[5] = 0.75f;   /* 7 */
    x[20] = -1.25f; /* 11 */
    quantize(GGML_TYPE_Q4_0, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0xB800); /* f16 -0.5 */
    const int want[QK] = {0, 15, 15, 8, 9, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                          8, 8, 8, 8, 11, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8};
    for (int j = 0; j < QK; j++) assert_int_equal(nib(blk + 2, j), want[j]);

    /* all zero: d = 0 / -8 = -0.0 (f16 0x8000, as in ggml), every code 8 */
    memset(x, 0, sizeof(x));
    quantize(GGML_TYPE_Q4_0, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x8000);
    for (int j = 0; j < 16; j++) assert_int_equal(blk[2 + j], 0x88);
}

static void test_quantize_q4_1_codes(void **state) {
    (void)state;
    float x[QK] = {0};
    ALIGNED uint8_t blk[20];
    /* min -1, max 14 -> d = 1, m = -1; code = trunc(x + 1 + 0.5) */
    x[0] = -1.0f;
    x[1] = 14.0f;
    x[2] = 2.5f;   /* 4 */
    x[3] = 2.49f;  /* 3 */
    x[4] = -0.5f;  /* 1 */
    x[17] = 7.5f;  /* 9 */
    quantize(GGML_TYPE_Q4_1, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x3C00); /* d = 1 */
    assert_int_equal(blk[2] | (blk[3] << 8), 0xBC00); /* m = -1 */
    for (int j = 0; j < QK; j++) {
        const int want = j == 0 ? 0 : j == 1 ? 15 : j == 2 ? 4 : j == 3 ? 3 : j == 4 ? 1 : j == 17 ? 9 : 1;
        assert_int_equal(nib(blk + 4, j), want);
    }
}

static int q5_code(const uint8_t *qh, const uint8_t *qs, int i) {
    const uint32_t h = (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
    return nib(qs, i) | (int)(((h >> i) & 1) << 4);
}

static void test_quantize_q5_codes(void **state) {
    (void)state;
    float x[QK];
    ALIGNED uint8_t blk[24];
    /* q5_0: max-magnitude element -16 -> d = 1, code = trunc(x + 16.5);
     * x[31] = 15.9 would give 32 and is clamped to 31 */
    for (int j = 0; j < QK; j++) x[j] = (float)(j - 16);
    x[31] = 15.9f;
    x[5] = -10.5f; /* 6 */
    quantize(GGML_TYPE_Q5_0, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x3C00);
    for (int j = 0; j < QK; j++) assert_int_equal(q5_code(blk + 2, blk + 6, j), j == 5 ? 6 : j);
    assert_int_equal(blk[2], 0x00);
    assert_int_equal(blk[3], 0x00);
    assert_int_equal(blk[4], 0xFF);
    assert_int_equal(blk[5], 0xFF);

    /* q5_1: min 0, max 31 -> d = 1, m = 0, code = trunc(x + 0.5) */
    for (int j = 0; j < QK; j++) x[j] = (float)j;
    x[7] = 6.5f;   /* 7 */
    x[8] = 8.49f;  /* 8 */
    x[20] = 19.5f; /* 20 */
    quantize(GGML_TYPE_Q5_1, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x3C00);
    assert_int_equal(blk[2] | (blk[3] << 8), 0x0000);
    for (int j = 0; j < QK; j++) assert_int_equal(q5_code(blk + 4, blk + 8, j), j);
}

static void test_quantize_q8_0_codes(void **state) {
    (void)state;
    float x[QK] = {0};
    ALIGNED uint8_t blk[34];
    /* amax 127 -> d = 1; roundf rounds halves away from zero */
    x[0] = 127.0f;
    x[1] = -2.5f;
    x[2] = 2.5f;
    x[3] = 0.5f;
    x[4] = -0.5f;
    x[5] = 1.49f;
    x[6] = -127.0f;
    x[7] = -0.49f;
    quantize(GGML_TYPE_Q8_0, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x3C00);
    const int want[8] = {127, -3, 3, 1, -1, 1, -127, 0};
    for (int j = 0; j < QK; j++) assert_int_equal((int8_t)blk[2 + j], j < 8 ? want[j] : 0);

    /* amax 16: d = 16/127 stored as f16; codes roundf(x * (1 / d)) with the
     * float (not f16) d, e.g. 8 * 7.9375.. -> 63.49.. or 63.5 -> 63 or 64 */
    for (int j = 0; j < QK; j++) x[j] = (float)(j - 16);
    quantize(GGML_TYPE_Q8_0, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), fp32_to_fp16(16.0f / 127.0f));
    const float id = 1.0f / (16.0f / 127.0f);
    for (int j = 0; j < QK; j++) assert_int_equal((int8_t)blk[2 + j], (int)roundf((float)(j - 16) * id));
    assert_int_equal((int8_t)blk[2], -127);
    assert_int_equal((int8_t)blk[2 + 17], 8);
}

static void test_quantize_f16_bf16(void **state) {
    (void)state;
    const float x[8] = {1.0f, 65504.0f, 1.0f / 3.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, -0.0f, 0x1p-24f, 1e6f};
    const uint16_t want16[8] = {0x3C00, 0x7BFF, 0x3555, 0x3C00 /* tie -> even */, 0x3C02, 0x8000, 0x0001, 0x7C00};
    uint16_t h[8];
    quantize(GGML_TYPE_F16, x, h, 8);
    for (int i = 0; i < 8; i++) assert_int_equal(h[i], want16[i]);

    const float y[5] = {1.0f, fp32_from_bits(0x3F808000u) /* tie -> even */, fp32_from_bits(0x3F818000u),
                        fp32_from_bits(0x3F808001u), -2.0f};
    const uint16_t want_bf[5] = {0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000};
    quantize(GGML_TYPE_BF16, y, h, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(h[i], want_bf[i]);

    float z[3] = {1.0f, -2.5f, 3e-40f}, back[3];
    quantize(GGML_TYPE_F32, z, back, 3);
    assert_memory_equal(z, back, sizeof(z));
}

static void test_quantize_iq4_nl_codes(void **state) {
    (void)state;
    float x[QK];
    ALIGNED uint8_t blk[18];
    int idx[QK];
    /* x = 0.5 * level: the -127 element is the max magnitude, so the initial
     * scale is -63.5 / -127 = 0.5, every x hits its level exactly and the
     * least-squares scale stays 0.5. */
    for (int j = 0; j < QK; j++) {
        idx[j] = (j * 7 + 5) % 16;
        x[j] = 0.5f * kv_iq4nl[idx[j]];
    }
    quantize(GGML_TYPE_IQ4_NL, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0x3800);
    for (int j = 0; j < QK; j++) assert_int_equal(nib(blk + 2, j), idx[j]);

    /* negated: max is +63.5, scale -0.5, same codes */
    for (int j = 0; j < QK; j++) x[j] = -x[j];
    quantize(GGML_TYPE_IQ4_NL, x, blk, QK);
    assert_int_equal(blk[0] | (blk[1] << 8), 0xB800);
    for (int j = 0; j < QK; j++) assert_int_equal(nib(blk + 2, j), idx[j]);

    /* nearest level with ties going up: with scale 1 (max = -127),
     * -116 -> -127|-104 tie -> -104; 7 -> 1|13 tie -> 13; 6.9 -> 1 */
    memset(x, 0, sizeof(x));
    x[0] = -127.0f;
    x[1] = -115.5f;
    x[2] = 7.0f;
    x[3] = 6.9f;
    x[4] = 113.0f;
    x[5] = 200.0f / 2.0f - 0.5f; /* 99.5 -> 89|113 midpoint is 101 -> 89 */
    quantize(GGML_TYPE_IQ4_NL, x, blk, QK);
    assert_int_equal(nib(blk + 2, 0), 0);
    assert_int_equal(nib(blk + 2, 1), 1);
    assert_int_equal(nib(blk + 2, 2), 9);
    assert_int_equal(nib(blk + 2, 3), 8);
    assert_int_equal(nib(blk + 2, 4), 15);
    assert_int_equal(nib(blk + 2, 5), 14);
    assert_int_equal(nib(blk + 2, 6), 8); /* 0 -> nearest level is 1 */

    /* all zero: d = 0 and codes 0 (current ggml zero-fills the codes) */
    memset(x, 0, sizeof(x));
    memset(blk, 0xAB, sizeof(blk));
    quantize(GGML_TYPE_IQ4_NL, x, blk, QK);
    for (int j = 0; j < 18; j++) assert_int_equal(blk[j], 0);
}

/* Output of ggml's quantize_row_iq4_nl_ref for the input built below,
 * recorded from a build of llama.cpp's libggml-base. */
static const uint8_t k_iq4nl_golden[4][18] = {
    {0x53, 0xa3, 0xa8, 0x0f, 0xa7, 0xf9, 0x4b, 0xb7, 0xce, 0xcb, 0x3e, 0x3b, 0xa3, 0xe9, 0xdd, 0xdb, 0xc4, 0x67},
    {0x0a, 0xa9, 0x79, 0x5a, 0x68, 0x8a, 0x46, 0x36, 0x86, 0xba, 0x80, 0x58, 0x98, 0x9a, 0x99, 0xa7, 0xa5, 0xa9},
    {0x5d, 0x24, 0xfe, 0xaf, 0xc7, 0xbc, 0x47, 0xad, 0xc3, 0x87, 0xe4, 0x57, 0xd6, 0x7a, 0x53, 0xd5, 0xd8, 0x70},
    {0x46, 0xa5, 0x85, 0x4c, 0xe9, 0x65, 0x59, 0x6c, 0x72, 0x48, 0x50, 0x37, 0x96, 0x36, 0xec, 0x73, 0x4c, 0x5c},
};

static void test_quantize_iq4_nl_golden(void **state) {
    (void)state;
    float x[128];
    uint64_t st = 42; /* integer LCG, exact inputs independent of libm */
    for (int i = 0; i < 128; i++) {
        int v = 0;
        for (int r = 0; r < 3; r++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            v += (int)((st >> 33) % 2001) - 1000;
        }
        x[i] = (float)v / 1024.0f;
    }
    x[40] = 5.0f;
    ALIGNED uint8_t blk[4 * 18];
    quantize(GGML_TYPE_IQ4_NL, x, blk, 128);
    for (int b = 0; b < 4; b++) assert_memory_equal(blk + 18 * b, k_iq4nl_golden[b], 18);
}

/* ------------------------------------------------------------------------ */
/* Quantize -> dequantize round trips                                        */
/* ------------------------------------------------------------------------ */

static void make_input(float *x, int n, uint64_t *rng, int mode) {
    for (int i = 0; i < n; i++) {
        float v = test_rand_normal(rng);
        if (mode == 1) v *= 1e-3f;
        if (mode == 2) v = test_rand_uniform(rng) * 10.0f + 5.0f; /* all positive, offset */
        if (mode == 3 && i % 32 == 7) v *= 20.0f;                  /* an outlier per block */
        x[i] = v;
    }
}

static void test_round_trip_bounds(void **state) {
    (void)state;
    enum { N = 1024 };
    static float x[N], y[N];
    static ALIGNED uint8_t q[N * 4];
    uint64_t rng = 77;
    for (int mode = 0; mode < 4; mode++) {
        for (int trial = 0; trial < 10; trial++) {
            make_input(x, N, &rng, mode);
            /* symmetric types: d0 is what the reference computes in float,
             * the block stores f16(d0); every code is within half a step of
             * x/d0 except codes clamped at the top end (within one step). */
            const uint32_t sym[3] = {GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0};
            const float div[3] = {127.0f, -8.0f, -16.0f};
            for (int k = 0; k < 3; k++) {
                const quant_traits *t = quant_get_traits(sym[k]);
                t->quantize_row(x, q, N);
                t->dequantize_row(q, y, N);
                for (int b = 0; b < N / QK; b++) {
                    float amax = 0.0f, max = 0.0f;
                    for (int j = 0; j < QK; j++) {
                        if (amax < fabsf(x[QK * b + j])) {
                            amax = fabsf(x[QK * b + j]);
                            max = x[QK * b + j];
                        }
                    }
                    const float d0 = sym[k] == GGML_TYPE_Q8_0 ? amax / div[k] : max / div[k];
                    const float d16 = get_f16(q + t->type_size * (size_t)b);
                    const float qmax = sym[k] == GGML_TYPE_Q8_0 ? 127.0f : -div[k];
                    const float scale_err = qmax * fabsf(d0 - d16) + 1e-6f * amax;
                    for (int j = 0; j < QK; j++) {
                        const float xv = x[QK * b + j], err = fabsf(xv - y[QK * b + j]);
                        /* clamped region: x/d0 beyond qmax - 1 + 0.5 */
                        const bool clamped = sym[k] != GGML_TYPE_Q8_0 && xv / d0 > qmax - 0.5f - 1e-4f;
                        const float bound = (clamped ? 1.0f : 0.5f) * fabsf(d0) + scale_err;
                        if (!(err <= bound)) {
                            print_message("%s mode %d block %d elem %d: x %.9g y %.9g err %.3g bound %.3g\n", t->name,
                                          mode, b, j, (double)xv, (double)y[QK * b + j], (double)err, (double)bound);
                            fail();
                        }
                    }
                }
            }
            /* affine types: d0 = (max - min) / (2^bits - 1), m = f16(min) */
            const uint32_t aff[2] = {GGML_TYPE_Q4_1, GGML_TYPE_Q5_1};
            const float steps[2] = {15.0f, 31.0f};
            for (int k = 0; k < 2; k++) {
                const quant_traits *t = quant_get_traits(aff[k]);
                t->quantize_row(x, q, N);
                t->dequantize_row(q, y, N);
                for (int b = 0; b < N / QK; b++) {
                    float mn = x[QK * b], mx = x[QK * b];
                    for (int j = 1; j < QK; j++) {
                        mn = fminf(mn, x[QK * b + j]);
                        mx = fmaxf(mx, x[QK * b + j]);
                    }
                    const float d0 = (mx - mn) / steps[k];
                    const uint8_t *blk = q + t->type_size * (size_t)b;
                    const float bound = 0.5f * d0 + steps[k] * fabsf(d0 - get_f16(blk)) + fabsf(mn - get_f16(blk + 2)) +
                                        1e-6f * fmaxf(fabsf(mn), fabsf(mx));
                    for (int j = 0; j < QK; j++) {
                        const float err = fabsf(x[QK * b + j] - y[QK * b + j]);
                        if (!(err <= bound)) {
                            print_message("%s mode %d block %d elem %d: err %.3g bound %.3g\n", t->name, mode, b, j,
                                          (double)err, (double)bound);
                            fail();
                        }
                    }
                }
            }
            /* float types */
            quant_get_traits(GGML_TYPE_F16)->quantize_row(x, q, N);
            quant_get_traits(GGML_TYPE_F16)->dequantize_row(q, y, N);
            for (int i = 0; i < N; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 0x1p-11f + 0x1p-25f);
            quant_get_traits(GGML_TYPE_BF16)->quantize_row(x, q, N);
            quant_get_traits(GGML_TYPE_BF16)->dequantize_row(q, y, N);
            for (int i = 0; i < N; i++) assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * 0x1p-8f);
            quant_get_traits(GGML_TYPE_F32)->quantize_row(x, q, N);
            quant_get_traits(GGML_TYPE_F32)->dequantize_row(q, y, N);
            assert_memory_equal(x, y, sizeof(float) * N);
        }
    }
}

/* iq4_nl has no simple per-element bound (the final scale is a least-squares
 * fit); check that errors are small relative to the data and no worse than
 * q4_0's on the same gaussian input. */
static void test_round_trip_iq4_nl(void **state) {
    (void)state;
    enum { N = 32 * 512 };
    static float x[N], y[N];
    static ALIGNED uint8_t q[N];
    uint64_t rng = 99;
    make_input(x, N, &rng, 0);
    double sx = 0.0, e_nl = 0.0, e_q4 = 0.0;
    quant_get_traits(GGML_TYPE_IQ4_NL)->quantize_row(x, q, N);
    quant_get_traits(GGML_TYPE_IQ4_NL)->dequantize_row(q, y, N);
    for (int i = 0; i < N; i++) {
        sx += (double)x[i] * x[i];
        e_nl += (double)(x[i] - y[i]) * (x[i] - y[i]);
    }
    quant_get_traits(GGML_TYPE_Q4_0)->quantize_row(x, q, N);
    quant_get_traits(GGML_TYPE_Q4_0)->dequantize_row(q, y, N);
    for (int i = 0; i < N; i++) e_q4 += (double)(x[i] - y[i]) * (x[i] - y[i]);
    const double rel_nl = sqrt(e_nl / sx), rel_q4 = sqrt(e_q4 / sx);
    print_message("relative rmse: iq4_nl %.4f q4_0 %.4f\n", rel_nl, rel_q4);
    assert_true(rel_nl < 0.12);
    assert_true(rel_nl < rel_q4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traits_table),
        cmocka_unit_test(test_row_size),
        cmocka_unit_test(test_dequant_q4_0),
        cmocka_unit_test(test_dequant_mxfp4),
        cmocka_unit_test(test_dequant_q4_1),
        cmocka_unit_test(test_dequant_q5_0),
        cmocka_unit_test(test_dequant_q5_1),
        cmocka_unit_test(test_dequant_q8_0),
        cmocka_unit_test(test_dequant_iq4_nl),
        cmocka_unit_test(test_dequant_q2_K),
        cmocka_unit_test(test_dequant_q3_K),
        cmocka_unit_test(test_dequant_q4_K),
        cmocka_unit_test(test_dequant_q5_K),
        cmocka_unit_test(test_dequant_q6_K),
        cmocka_unit_test(test_dequant_float_types),
        cmocka_unit_test(test_vec_dot_matches_dequant),
        cmocka_unit_test(test_vec_dot_small),
        cmocka_unit_test(test_quantize_q4_0_codes),
        cmocka_unit_test(test_quantize_q4_1_codes),
        cmocka_unit_test(test_quantize_q5_codes),
        cmocka_unit_test(test_quantize_q8_0_codes),
        cmocka_unit_test(test_quantize_f16_bf16),
        cmocka_unit_test(test_quantize_iq4_nl_codes),
        cmocka_unit_test(test_quantize_iq4_nl_golden),
        cmocka_unit_test(test_round_trip_bounds),
        cmocka_unit_test(test_round_trip_iq4_nl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
