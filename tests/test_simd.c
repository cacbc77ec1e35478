/* test_simd.c — the matmul kernels and layer ops: every AVX2 kernel against
 * its scalar twin on random inputs (bit-identical for activation quantizers
 * and quantized dot products), dot products with 8-bit activations against
 * the f32 reference, tiles and the packed prefill path against the 1 x 1
 * kernel, and matmul's independence from the thread count and batch size.
 *
 * Runs on any CPU: where AVX2 is missing, the comparisons with the AVX2
 * twins are skipped with a printed reason and the rest still runs. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "fp16.h"
#include "ops.h"
#include "arch/ops_arch.h"
#include "quant.h"
#include "rotation.h"
#include "quant_blocks.h"
#include "testutil.h"
#include "threadpool.h"

/* Every weight type with matmul kernels. */
static const uint32_t k_weight_types[] = {
    GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0,
    GGML_TYPE_Q5_1, GGML_TYPE_Q8_0, GGML_TYPE_IQ4_NL, GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K,
    GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_WEIGHT_TYPES (sizeof k_weight_types / sizeof k_weight_types[0])

static const uint32_t k_act_types[] = {GGML_TYPE_Q8_0, GGML_TYPE_Q8_1, GGML_TYPE_Q8_K};

static bool have_avx2(const char *what) {
    if (cpu_isa_supported(CPU_ISA_AVX2)) return true;
    print_message("[ SKIP     ] %s: this CPU lacks AVX2/FMA/F16C, only the scalar kernels run here\n", what);
    return false;
}

/* True if the CPU runs any level above scalar (x86-64 or aarch64); says so when not. */
static bool have_simd(const char *what) {
    if (cpu_isa_detect() > CPU_ISA_SCALAR) return true;
    print_message("[ SKIP     ] %s: this CPU has no SIMD level, only the scalar kernels run here\n", what);
    return false;
}

/* True if the SIMD level isa runs here; says so once per test when not. */
static bool have_level(int isa, const char *what) {
    if (cpu_isa_supported((cpu_isa)isa)) return true;
    print_message("[ SKIP     ] %s at %s: this CPU cannot run that level\n", what, cpu_isa_name((cpu_isa)isa));
    return false;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* Random activations: Gaussian, with a few outliers as in real hidden states. */
static void random_floats(float *x, int64_t n, float scale, uint64_t *rng) {
    for (int64_t i = 0; i < n; i++) {
        x[i] = scale * test_rand_normal(rng);
        if (test_rand_u64(rng) % 64 == 0) x[i] *= 20.0f;
    }
}

static void put_f16_at(uint8_t *p, float v) {
    const uint16_t h = fp32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* A random row of n values of a weight type: through the reference quantizer
 * where there is one, otherwise random code bytes with sane f16 scales (every
 * bit pattern of the codes is a valid K-quant block). */
static void random_row(uint32_t type, int64_t n, uint8_t *dst, uint64_t *rng) {
    const quant_traits *tr = quant_get_traits(type);
    if (tr->quantize_row) {
        float *f = xmalloc(sizeof(float) * (size_t)n);
        random_floats(f, n, 0.05f, rng);
        tr->quantize_row(f, dst, n);
        free(f);
        return;
    }
    const size_t bytes = quant_row_size(type, n);
    for (size_t i = 0; i < bytes; i++) dst[i] = (uint8_t)test_rand_u64(rng);
    for (int64_t b = 0; b < n / QK_K; b++) {
        uint8_t *blk = dst + (size_t)b * tr->type_size;
        const float d = 0.001f + 0.01f * test_rand_uniform(rng), dmin = 0.001f + 0.01f * test_rand_uniform(rng);
        switch (type) {
        case GGML_TYPE_Q2_K:
            put_f16_at(blk + offsetof(block_q2_K, d), d);
            put_f16_at(blk + offsetof(block_q2_K, dmin), dmin);
            break;
        case GGML_TYPE_Q3_K: put_f16_at(blk + offsetof(block_q3_K, d), d); break;
        case GGML_TYPE_Q4_K:
            put_f16_at(blk + offsetof(block_q4_K, d), d);
            put_f16_at(blk + offsetof(block_q4_K, dmin), dmin);
            break;
        case GGML_TYPE_Q5_K:
            put_f16_at(blk + offsetof(block_q5_K, d), d);
            put_f16_at(blk + offsetof(block_q5_K, dmin), dmin);
            break;
        case GGML_TYPE_Q6_K: put_f16_at(blk + offsetof(block_q6_K, d), d); break;
        default: fail_msg("no random generator for type %u", type);
        }
    }
}

/* The activation row (vec_dot_type) of x for a weight type, by the scalar
 * quantizer; for f32 weights a copy of x. */
static uint8_t *make_act(uint32_t wtype, const float *x, int64_t n) {
    const uint32_t at = quant_get_traits(wtype)->vec_dot_type;
    uint8_t *a = xmalloc(quant_row_size(at, n) + 64);
    quant_get_kernels(at, CPU_ISA_SCALAR)->from_float(x, a, n);
    return a;
}

/* Dequantized activation row (what the dot products effectively multiply). */
static void dequant_act(uint32_t at, const uint8_t *a, float *out, int64_t n) {
    if (at == GGML_TYPE_F32) {
        memcpy(out, a, sizeof(float) * (size_t)n);
    } else if (at == GGML_TYPE_Q8_K) {
        const block_q8_K *b = (const block_q8_K *)a;
        for (int64_t i = 0; i < n; i++) out[i] = b[i / QK_K].d * b[i / QK_K].qs[i % QK_K];
    } else {
        const size_t bs = quant_get_traits(at)->type_size, qofs = at == GGML_TYPE_Q8_1 ? 4 : 2;
        for (int64_t i = 0; i < n; i++) {
            const uint8_t *blk = a + (size_t)(i / 32) * bs;
            uint16_t h;
            memcpy(&h, blk, 2);
            out[i] = fp16_to_fp32(h) * (float)(int8_t)blk[qofs + i % 32];
        }
    }
}

/* ------------------------------------------------------------------------ */

static void test_isa_selection(void **state) {
    (void)state;
    const cpu_isa det = cpu_isa_detect(), act = cpu_isa_active();
    print_message("[ INFO     ] CPU kernels: detected %s, active %s%s\n", cpu_isa_name(det), cpu_isa_name(act),
                  getenv("ROTKV_ISA") ? " (ROTKV_ISA set)" : "");
    for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++)
        print_message("[ INFO     ] level %-7s %s\n", cpu_isa_name((cpu_isa)isa),
                      cpu_isa_supported((cpu_isa)isa) ? "runs here: tested"
                      : cpu_isa_of_this_arch((cpu_isa)isa) ? "not on this CPU: skipped"
                                                           : "other architecture: skipped");
    assert_true(act <= det);
    assert_int_equal(quant_active_isa(), act);
    for (int isa = 0; isa < CPU_ISA_COUNT; isa++) assert_int_equal(cpu_isa_parse(cpu_isa_name((cpu_isa)isa)), isa);
    assert_int_equal(cpu_isa_parse("avx1024"), -1);
    assert_int_equal(cpu_isa_parse(""), -1);
    for (size_t i = 0; i < N_WEIGHT_TYPES; i++) {
        const uint32_t t = k_weight_types[i];
        const quant_traits *tr = quant_get_traits(t);
        const quant_kernels *k = quant_kernels_of(t);
        assert_non_null(k);
        assert_non_null(k->vec_dot);
        assert_non_null(k->vec_dot_tile);
        /* the row of the highest level <= active that has one */
        int from = -1;
        for (int isa = (int)act; isa >= 0 && from < 0; isa--)
            if (quant_get_kernels(t, (cpu_isa)isa)) from = isa;
        assert_true(from >= 0);
        assert_ptr_equal(k, quant_get_kernels(t, (cpu_isa)from));
        assert_non_null(quant_get_kernels(t, CPU_ISA_SCALAR));
        if (tr->vec_dot_type != GGML_TYPE_F32) assert_non_null(quant_kernels_of(tr->vec_dot_type)->from_float);
        assert_int_equal(t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16,
                         tr->vec_dot_type == GGML_TYPE_F32);
    }
    assert_int_equal(quant_get_traits(GGML_TYPE_Q4_0)->vec_dot_type, GGML_TYPE_Q8_0);
    assert_int_equal(quant_get_traits(GGML_TYPE_Q4_1)->vec_dot_type, GGML_TYPE_Q8_1);
    assert_int_equal(quant_get_traits(GGML_TYPE_Q5_1)->vec_dot_type, GGML_TYPE_Q8_1);
    assert_int_equal(quant_get_traits(GGML_TYPE_Q4_K)->vec_dot_type, GGML_TYPE_Q8_K);
    assert_int_equal(quant_get_traits(GGML_TYPE_Q6_K)->vec_dot_type, GGML_TYPE_Q8_K);
    assert_int_equal(quant_get_traits(GGML_TYPE_IQ4_NL)->vec_dot_type, GGML_TYPE_Q8_0);
    assert_null(quant_get_kernels(GGML_TYPE_Q4_0, (cpu_isa)7));
    assert_null(quant_get_kernels(GGML_TYPE_COUNT, CPU_ISA_SCALAR));
    for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++)
        if (!cpu_isa_supported((cpu_isa)isa)) assert_null(quant_get_kernels(GGML_TYPE_Q4_0, (cpu_isa)isa));
}

/* Scalar activation quantizers: scale and rounding as documented. */
static void test_from_float_scalar(void **state) {
    (void)state;
    float x[QK_K];
    for (int i = 0; i < QK_K; i++) x[i] = (float)(i % 32) - 10.0f; /* amax 21 in every block of 32 */
    x[5] = 10.5f * 21.0f / 127.0f; /* x * 127/21 is 10.5 up to rounding */
    block_q8_0 b0[QK_K / 32];
    quant_get_kernels(GGML_TYPE_Q8_0, CPU_ISA_SCALAR)->from_float(x, b0, QK_K);
    assert_true(fp16_to_fp32(b0[0].d) == fp16_to_fp32(fp32_to_fp16(21.0f / 127.0f)));
    assert_int_equal(b0[0].qs[31], 127);
    assert_int_equal(b0[0].qs[0], -60); /* -10 * 127/21 = -60.48 */
    assert_int_equal(b0[0].qs[5], (int)rintf(x[5] * (127.0f / 21.0f)));
    block_q8_1 b1[QK_K / 32];
    quant_get_kernels(GGML_TYPE_Q8_1, CPU_ISA_SCALAR)->from_float(x, b1, QK_K);
    int sum = 0;
    for (int j = 0; j < 32; j++) sum += b1[1].qs[j];
    assert_true(fp16_to_fp32(b1[1].s) == fp16_to_fp32(fp32_to_fp16(21.0f / 127.0f * (float)sum)));
    /* q8_K: the signed maximum of largest magnitude maps to -127 */
    x[77] = -50.0f;
    block_q8_K bk;
    quant_get_kernels(GGML_TYPE_Q8_K, CPU_ISA_SCALAR)->from_float(x, &bk, QK_K);
    assert_int_equal(bk.qs[77], -127);
    assert_true(bk.d == 1.0f / (-127.0f / -50.0f));
    for (int g = 0; g < 16; g++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += bk.qs[16 * g + l];
        assert_int_equal(bk.bsums[g], s);
    }
    /* all zeros: zero scale and codes */
    memset(x, 0, sizeof x);
    memset(&bk, 0x55, sizeof bk);
    quant_get_kernels(GGML_TYPE_Q8_K, CPU_ISA_SCALAR)->from_float(x, &bk, QK_K);
    assert_true(bk.d == 0.0f);
    for (int i = 0; i < QK_K; i++) assert_int_equal(bk.qs[i], 0);
}

/* SIMD activation quantizers (every level with its own): byte-identical blocks. */
static void test_from_float_bitexact(void **state) {
    (void)state;
    if (!have_simd("activation quantizers SIMD vs scalar")) return;
    uint64_t rng = 1;
    const int64_t n = 4096;
    float *x = xmalloc(sizeof(float) * n);
    for (int trial = 0; trial < 40; trial++) {
        random_floats(x, n, trial % 2 ? 1e-3f : 3.0f, &rng);
        if (trial % 5 == 1) memset(x + 256, 0, sizeof(float) * 256); /* an all-zero block */
        if (trial % 5 == 2) /* halfway cases: x * 127/amax lands on k + 0.5 */
            for (int i = 0; i < 32; i++) x[i] = i == 0 ? 127.0f : (float)(i % 16) + 0.5f;
        if (trial % 5 == 3) /* +amax and -amax: the first one wins in q8_K */
            for (int i = 0; i < QK_K; i += 64) x[i] = i % 128 ? 7.0f : -7.0f;
        for (size_t k = 0; k < sizeof k_act_types / sizeof k_act_types[0]; k++) {
            const uint32_t at = k_act_types[k];
            const size_t bytes = quant_row_size(at, n);
            uint8_t *s = xmalloc(bytes), *v = xmalloc(bytes);
            memset(s, 0xAA, bytes);
            memset(v, 0x55, bytes);
            quant_get_kernels(at, CPU_ISA_SCALAR)->from_float(x, s, n);
            for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
                const quant_kernels *kl = quant_get_kernels(at, (cpu_isa)isa);
                if (!kl || !kl->from_float) continue;
                memset(v, 0x55, bytes);
                kl->from_float(x, v, n);
                if (memcmp(s, v, bytes) != 0) {
                    size_t i = 0;
                    while (s[i] == v[i]) i++;
                    fail_msg("%s trial %d: byte %zu differs (scalar %02x, %s %02x)", quant_type_name(at), trial, i,
                             s[i], cpu_isa_name((cpu_isa)isa), v[i]);
                }
            }
            free(s);
            free(v);
        }
    }
    free(x);
}

/* AVX2 dot products against the scalar twins: bit-identical for the
 * quantized types (exact integer block sums, the reference's float steps);
 * for f32/f16/bf16 |Δ| <= 1e-5 Σ|w_i a_i| over the values the two multiply. */
static void test_vec_dot_levels_vs_scalar(void **state) {
    (void)state;
    uint64_t rng = 2;
    const int64_t lens[] = {256, 512, 4096, 8, 40, 1000}; /* the last three: float types only */
    for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
    if (!have_level(isa, "vec_dot vs scalar")) continue;
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const uint32_t wt = k_weight_types[ti];
        const quant_traits *tr = quant_get_traits(wt);
        const quant_kernels *ks = quant_get_kernels(wt, CPU_ISA_SCALAR), *kv = quant_get_kernels(wt, (cpu_isa)isa);
        if (!kv) continue; /* this level has no kernel of its own for the type */
        double worst = 0.0;
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int64_t n = lens[li];
            if (n % 256 && tr->vec_dot_type != GGML_TYPE_F32) continue;
            uint8_t *w = xmalloc(quant_row_size(wt, n));
            float *x = xmalloc(sizeof(float) * n), *wf = xmalloc(sizeof(float) * n), *af = xmalloc(sizeof(float) * n);
            for (int trial = 0; trial < 20; trial++) {
                random_row(wt, n, w, &rng);
                random_floats(x, n, 1.0f, &rng);
                uint8_t *a = make_act(wt, x, n);
                tr->dequantize_row(w, wf, n);
                dequant_act(tr->vec_dot_type, a, af, n);
                double mag = 0.0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)wf[i] * af[i]);
                const float s = ks->vec_dot(w, a, n), v = kv->vec_dot(w, a, n);
                const double err = fabs((double)s - v);
                if (tr->vec_dot_type != GGML_TYPE_F32 && memcmp(&s, &v, sizeof s) != 0)
                    fail_msg("%s n=%lld trial %d: scalar %.9g %s %.9g differ", tr->name, (long long)n, trial,
                             (double)s, cpu_isa_name((cpu_isa)isa), (double)v);
                if (err > 1e-5 * mag + 1e-30)
                    fail_msg("%s n=%lld trial %d: scalar %.9g %s %.9g, |Δ| %.3g > 1e-5 * %.6g", tr->name,
                             (long long)n, trial, (double)s, cpu_isa_name((cpu_isa)isa), (double)v, err, mag);
                if (mag > 0 && err / mag > worst) worst = err / mag;
                free(a);
            }
            free(w);
            free(x);
            free(wf);
            free(af);
        }
        print_message("[ INFO     ] %-6s %s vs scalar: max |Δ| / Σ|w·a| = %.2g\n", tr->name, cpu_isa_name((cpu_isa)isa),
                      worst);
    }
    }
}

/* Dot products through 8-bit activations against the f32 reference
 * (vec_dot_f32 on the unquantized activations): every activation is off by
 * at most half a step of its block, plus the f16 rounding of q8_0/q8_1
 * scales (2^-11 relative, on codes up to 127), so
 * |Δ| <= Σ_i |w_i| * d_i * (0.5 + 127 * 2^-11) + the q8_1 sum term,
 * with d_i the activation step of i's block; f32 activations: 1e-5 Σ|w x|. */
static void test_vec_dot_quantized_vs_f32(void **state) {
    (void)state;
    uint64_t rng = 3;
    const int64_t n = 2048;
    uint8_t *w = xmalloc(quant_row_size(GGML_TYPE_F32, n));
    float *x = xmalloc(sizeof(float) * n), *wf = xmalloc(sizeof(float) * n);
    for (int isa = CPU_ISA_SCALAR; isa < CPU_ISA_COUNT; isa++) {
        if (isa > CPU_ISA_SCALAR && !have_level(isa, "quantized vec_dot vs f32 ")) continue;
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t wt = k_weight_types[ti];
            const quant_traits *tr = quant_get_traits(wt);
            const quant_kernels *k = quant_get_kernels(wt, (cpu_isa)isa);
            if (!k) continue;
            double worst = 0.0;
            for (int trial = 0; trial < 20; trial++) {
                random_row(wt, n, w, &rng);
                random_floats(x, n, 1.0f, &rng);
                uint8_t *a = make_act(wt, x, n);
                tr->dequantize_row(w, wf, n);
                const double ref = tr->vec_dot_f32(w, x, n);
                const double got = k->vec_dot(w, a, n);
                double bound = 0.0, mag = 0.0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)wf[i] * x[i]);
                if (tr->vec_dot_type == GGML_TYPE_F32) {
                    bound = 1e-5 * mag;
                } else {
                    const uint32_t at = tr->vec_dot_type;
                    const int bs = quant_get_traits(at)->blck_size;
                    for (int64_t b = 0; b < n / bs; b++) {
                        double amax = 0.0;
                        for (int i = 0; i < bs; i++) amax = fmax(amax, fabs(x[b * bs + i]));
                        const double step = amax / 127.0;
                        for (int i = 0; i < bs; i++) bound += fabs(wf[b * bs + i]) * step * (0.5 + 127.0 / 2048);
                        if (at == GGML_TYPE_Q8_1) { /* m * s: s rounded to f16 */
                            uint16_t mh;
                            memcpy(&mh, w + b * tr->type_size + 2, 2);
                            bound += fabs(fp16_to_fp32(mh)) * 32 * amax / 2048;
                        }
                    }
                    bound += 1e-5 * mag;
                }
                const double err = fabs(got - ref);
                if (err > bound)
                    fail_msg("%s (%s) trial %d: f32 reference %.7g, with quantized activations %.7g: |Δ| %.3g > %.3g",
                             tr->name, cpu_isa_name((cpu_isa)isa), trial, ref, got, err, bound);
                if (bound > 0 && err / bound > worst) worst = err / bound;
                free(a);
            }
            if (isa == CPU_ISA_SCALAR)
                print_message("[ INFO     ] %-6s 8-bit activations vs f32: max |Δ| / bound = %.2f\n", tr->name, worst);
        }
    }
    free(w);
    free(x);
    free(wf);
}

/* Tiles of every shape give exactly vec_dot of the same ISA. */
static void test_tiles_equal_vec_dot(void **state) {
    (void)state;
    uint64_t rng = 4;
    const int64_t n = 512;
    enum { MR = 9, MT = 9 }; /* up to 8-row decode tiles */
    for (int isa = CPU_ISA_SCALAR; isa < CPU_ISA_COUNT; isa++) {
        if (isa > CPU_ISA_SCALAR && !have_level(isa, "tiles vs vec_dot")) continue;
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t wt = k_weight_types[ti];
            const quant_traits *tr = quant_get_traits(wt);
            const quant_kernels *k = quant_get_kernels(wt, (cpu_isa)isa);
            if (!k) continue;
            const size_t rb = quant_row_size(wt, n);
            const size_t ab = quant_row_size(tr->vec_dot_type, n);
            uint8_t *w = xmalloc(rb * MR), *a = xmalloc(ab * MT);
            float *x = xmalloc(sizeof(float) * n);
            for (int r = 0; r < MR; r++) random_row(wt, n, w + r * rb, &rng);
            for (int t = 0; t < MT; t++) {
                random_floats(x, n, 1.0f, &rng);
                quant_get_kernels(tr->vec_dot_type, CPU_ISA_SCALAR)->from_float(x, a + t * ab, n);
            }
            float want[MT][MR];
            for (int t = 0; t < MT; t++)
                for (int r = 0; r < MR; r++) want[t][r] = k->vec_dot(w + r * rb, a + t * ab, n);
            for (int nr = 1; nr <= MR; nr++) {
                for (int nt = 1; nt <= MT; nt++) {
                    float y[MT][MR + 3];
                    memset(y, 0xFF, sizeof y); /* NaN: catches unwritten outputs */
                    k->vec_dot_tile(n, nr, nt, w, rb, a, ab, &y[0][0], MR + 3);
                    for (int t = 0; t < nt; t++)
                        for (int r = 0; r < nr; r++)
                            if (memcmp(&y[t][r], &want[t][r], sizeof(float)) != 0)
                                fail_msg("%s (%s) tile %dx%d: row %d token %d: %.9g, vec_dot %.9g", tr->name,
                                         cpu_isa_name((cpu_isa)isa), nr, nt, r, t, (double)y[t][r], (double)want[t][r]);
                    for (int t = 0; t < MT; t++) /* nothing written outside the tile */
                        for (int r = 0; r < MR + 3; r++)
                            if (t >= nt || r >= nr) assert_true(isnan(y[t][r]));
                }
            }
            free(w);
            free(a);
            free(x);
        }
    }
}

/* The packed path: rows packed in groups, times 1..9 tokens, give exactly
 * vec_dot. */
static void test_packed_equals_vec_dot(void **state) {
    (void)state;
    if (!have_avx2("packed gemm vs vec_dot")) return;
    uint64_t rng = 8;
    const int64_t n = 768;
    enum { MT = 9 };
    int tested = 0;
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const uint32_t wt = k_weight_types[ti];
        const quant_traits *tr = quant_get_traits(wt);
        const quant_kernels *k = quant_get_kernels(wt, CPU_ISA_AVX2);
        if (!k->pack_rows) continue;
        tested++;
        const size_t rb = quant_row_size(wt, n), ab = quant_row_size(tr->vec_dot_type, n);
        uint8_t *w = xmalloc(rb * QUANT_PACK_ROWS), *a = xmalloc(ab * MT), *pk = xmalloc(k->pack_bytes(n));
        float *x = xmalloc(sizeof(float) * n);
        for (int r = 0; r < QUANT_PACK_ROWS; r++) random_row(wt, n, w + r * rb, &rng);
        for (int t = 0; t < MT; t++) {
            random_floats(x, n, 1.0f, &rng);
            quant_get_kernels(tr->vec_dot_type, CPU_ISA_SCALAR)->from_float(x, a + t * ab, n);
        }
        k->pack_rows(n, w, rb, pk);
        for (int nt = 1; nt <= MT; nt++) {
            float y[MT][QUANT_PACK_ROWS];
            memset(y, 0xFF, sizeof y);
            k->gemm_packed(n, pk, nt, a, ab, &y[0][0], QUANT_PACK_ROWS);
            for (int t = 0; t < MT; t++)
                for (int r = 0; r < QUANT_PACK_ROWS; r++) {
                    if (t >= nt) {
                        assert_true(isnan(y[t][r]));
                        continue;
                    }
                    const float want = quant_get_kernels(wt, CPU_ISA_SCALAR)->vec_dot(w + r * rb, a + t * ab, n);
                    if (memcmp(&want, &y[t][r], sizeof want) != 0)
                        fail_msg("%s packed, %d tokens: row %d token %d: %.9g, scalar vec_dot %.9g", tr->name, nt, r,
                                 t, (double)y[t][r], (double)want);
                }
        }
        free(w);
        free(a);
        free(pk);
        free(x);
    }
    assert_true(tested >= 6);
}

/* matmul: the same bits for 1, 2, 4 threads and for a token alone or in a
 * batch; close to the f32 reference. */
static void test_matmul_threads_bitexact(void **state) {
    (void)state;
    uint64_t rng = 5;
    /* rows: no multiple of any tile; large enough that matmul uses the
     * threads (it runs products below 256K multiply-adds on one thread) */
    const int64_t cols = 1024, rows = 301;
    const int max_tok = 17;
    threadpool *tps[3] = {threadpool_create(1), threadpool_create(2), threadpool_create(4)};
    void *scratch = xmalloc(matmul_scratch_bytes(4, cols, max_tok));
    float *X = xmalloc(sizeof(float) * cols * max_tok);
    float *Y[3], *Y1 = xmalloc(sizeof(float) * rows);
    for (int i = 0; i < 3; i++) Y[i] = xmalloc(sizeof(float) * rows * max_tok);
    random_floats(X, cols * max_tok, 1.0f, &rng);
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const uint32_t wt = k_weight_types[ti];
        const quant_traits *tr = quant_get_traits(wt);
        const size_t rb = quant_row_size(wt, cols);
        uint8_t *data = xmalloc(rb * rows);
        for (int64_t r = 0; r < rows; r++) random_row(wt, cols, data + r * rb, &rng);
        const weight W0 = {.data = data, .type = wt, .ne0 = cols, .ne1 = rows, .row_bytes = rb};
        /* as the file's rows, then repacked for the active kernels (if the type has a layout) */
        for (int rp = 0; rp < 2; rp++) {
        weight W = W0;
        uint64_t repacked_bytes = 0;
        if (rp && !weight_repack(&W, &repacked_bytes)) break;
        if (rp) assert_true(repacked_bytes >= rb * rows);
        const int ntoks[] = {1, 2, 5, 8, 13, 17}; /* 17: every type's packed path */
        for (size_t k = 0; k < sizeof ntoks / sizeof ntoks[0]; k++) {
            const int nt = ntoks[k];
            for (int i = 0; i < 3; i++) {
                memset(Y[i], 0xFF, sizeof(float) * rows * nt);
                matmul(tps[i], &W, X, nt, Y[i], scratch);
            }
            for (int i = 1; i < 3; i++)
                if (memcmp(Y[0], Y[i], sizeof(float) * rows * nt) != 0)
                    fail_msg("%s, %d tokens: %d threads differ from 1 thread", tr->name, nt, threadpool_size(tps[i]));
            for (int t = 0; t < nt; t++) {
                /* the same token alone */
                matmul(tps[1], &W, X + (size_t)t * cols, 1, Y1, scratch);
                if (memcmp(Y1, Y[0] + (size_t)t * rows, sizeof(float) * rows) != 0)
                    fail_msg("%s: token %d of %d differs from the token alone", tr->name, t, nt);
                /* and exactly the active vec_dot on the active quantizer's activations */
                uint8_t *a = xmalloc(quant_row_size(tr->vec_dot_type, cols));
                quant_kernels_of(tr->vec_dot_type)->from_float(X + (size_t)t * cols, a, cols);
                for (int64_t r = 0; r < rows; r++) {
                    const float want = quant_kernels_of(wt)->vec_dot(data + r * rb, a, cols);
                    if (memcmp(&want, &Y[0][(size_t)t * rows + r], sizeof want) != 0)
                        fail_msg("%s: row %lld token %d: %.9g, vec_dot %.9g", tr->name, (long long)r, t,
                                 (double)Y[0][(size_t)t * rows + r], (double)want);
                }
                free(a);
            }
        }
        free(W.repacked);
        }
        free(data);
    }
    for (int i = 0; i < 3; i++) {
        threadpool_free(tps[i]);
        free(Y[i]);
    }
    free(Y1);
    free(X);
    free(scratch);
}

/* Weights repacked at load (quant.h): the layout round-trips to the file's
 * blocks, gemm_repacked of a group equals the scalar vec_dot bit for bit for
 * 1..9 tokens and writes nothing else, at every level that has one; a
 * malformed matrix is refused. */
static void test_repacked_layout(void **state) {
    (void)state;
    uint64_t rng = 9;
    const int64_t lens[] = {32, 96, 256, 2048};
    enum { MT = 9, MAXR = 16 };
    int tested = 0;
    for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
        if (!have_level(isa, "repacked gemm vs scalar vec_dot")) continue;
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t wt = k_weight_types[ti];
            const quant_kernels *k = quant_get_kernels(wt, (cpu_isa)isa);
            if (!k || k->repack_rows <= 0) continue;
            const quant_traits *tr = quant_get_traits(wt);
            const int R = k->repack_rows;
            assert_true(R <= MAXR);
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                const int64_t n = lens[li];
                if (n % tr->blck_size) continue;
                const bool kq = wt == GGML_TYPE_Q4_K || wt == GGML_TYPE_Q6_K;
                const size_t rb = quant_row_size(wt, n), ab = quant_row_size(tr->vec_dot_type, n);
                const size_t gb = k->repack_group_bytes(n);
                assert_int_equal(gb, quant_repack_group_bytes(wt, R, n));
                uint8_t *w = xmalloc(rb * R), *back = xmalloc(rb * R), *g = xmalloc(gb), *a = xmalloc(ab * MT);
                float *x = xmalloc(sizeof(float) * n);
                for (int r = 0; r < R; r++) random_row(wt, n, w + r * rb, &rng);
                for (int t = 0; t < MT; t++) {
                    random_floats(x, n, t == 3 ? 1e-4f : 1.0f, &rng);
                    if (t == 5) memset(x, 0, sizeof(float) * (size_t)n); /* a zero token */
                    quant_get_kernels(tr->vec_dot_type, CPU_ISA_SCALAR)->from_float(x, a + t * ab, n);
                }
                k->repack(n, w, rb, g);
                assert_int_equal(kq ? quant_unpack_k(wt, R, n, g, back, rb) : quant_unpack_b32(wt, R, n, g, back, rb), 0);
                if (memcmp(w, back, rb * R) != 0)
                    fail_msg("%s (%s) n=%lld: repacked layout does not round-trip", tr->name, cpu_isa_name((cpu_isa)isa),
                             (long long)n);
                for (int r = 0; r < R; r++) { /* one row at a time (embedding lookups) */
                    memset(back, 0x5A, rb);
                    assert_int_equal(quant_unpack_row(wt, R, n, g, r, back), 0);
                    assert_memory_equal(back, w + (size_t)r * rb, rb);
                }
                for (int nt = 1; nt <= MT; nt++) {
                    float y[MT][MAXR + 2];
                    memset(y, 0xFF, sizeof y);
                    int32_t sums[MT * 64];
                    const bool with_sums = k->repack_asum && nt % 2; /* both ways: given and summed by the kernel */
                    if (with_sums)
                        for (int t = 0; t < nt; t++) quant_q8_0_block_sums(a + t * ab, n / 32, sums + t * (n / 32));
                    k->gemm_repacked(n, g, nt, a, ab, with_sums ? sums : NULL, &y[0][0], MAXR + 2);
                    for (int t = 0; t < MT; t++)
                        for (int r = 0; r < MAXR + 2; r++) {
                            if (t >= nt || r >= R) {
                                assert_true(isnan(y[t][r]));
                                continue;
                            }
                            const float want = quant_get_kernels(wt, CPU_ISA_SCALAR)->vec_dot(w + r * rb, a + t * ab, n);
                            if (memcmp(&want, &y[t][r], sizeof want) != 0)
                                fail_msg("%s (%s) repacked n=%lld, %d tokens: row %d token %d: %.9g, scalar %.9g",
                                         tr->name, cpu_isa_name((cpu_isa)isa), (long long)n, nt, r, t, (double)y[t][r],
                                         (double)want);
                        }
                }
                tested++;
                free(w);
                free(back);
                free(g);
                free(a);
                free(x);
            }
        }
    }
    /* no layout for types without one; malformed matrices are refused */
    assert_int_equal(quant_repack_b32(GGML_TYPE_Q4_K, 16, 256, NULL, 0, NULL), -1);
    assert_int_equal(quant_repack_b32(GGML_TYPE_Q4_0, 16, 33, NULL, 0, NULL), -1);
    uint8_t blk[sizeof(block_q4_0) * 2] = {0};
    weight bad = {.data = blk, .type = GGML_TYPE_Q4_0, .ne0 = 48, .ne1 = 1, .row_bytes = sizeof blk};
    uint64_t bytes = 0;
    assert_false(weight_repack(&bad, &bytes)); /* 48 values: not a multiple of the block */
    bad.ne0 = 64;
    bad.row_bytes = sizeof blk - 1; /* row size disagrees with the type */
    assert_false(weight_repack(&bad, &bytes));
    assert_null(bad.repacked);
    assert_int_equal(bytes, 0);
    assert_int_equal(quant_repack_k(GGML_TYPE_Q4_K, 16, 255, NULL, 0, NULL), -1);
    assert_int_equal(quant_repack_group_bytes(GGML_TYPE_Q4_1, 16, 256), 0);
    if (cpu_isa_active() >= CPU_ISA_AVXVNNI && cpu_isa_active() <= CPU_ISA_AVX512) assert_true(tested >= 5 * 2);
}

/* attn-rot's Walsh–Hadamard transform: every level's row that has one (NEON on
 * aarch64; the x86 rows have none and run the scalar one) bit-identical to
 * fwht_ref, and fwht_inplace (the active level's) too, n = 1 .. 1024. */
static void test_fwht_levels(void **state) {
    (void)state;
    uint64_t rng = 16;
    if (cpu_isa_supported(CPU_ISA_NEON)) assert_non_null(ops_kernels_at(CPU_ISA_NEON)->fwht);
    float x[1024], y[1024], z[1024];
    int tested = 0;
    for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
        const ops_kernels *k = ops_kernels_at((cpu_isa)isa);
        if (!k || !k->fwht) {
            if (cpu_isa_supported((cpu_isa)isa))
                print_message("[ INFO     ] fwht at %s: no kernel of its own (the next lower level's, or the scalar one, runs)\n", cpu_isa_name((cpu_isa)isa));
            continue;
        }
        for (int n = 1; n <= 1024; n *= 2)
            for (int rep = 0; rep < 20; rep++) {
                random_floats(x, n, 3.0f, &rng);
                memcpy(y, x, sizeof(float) * (size_t)n);
                memcpy(z, x, sizeof(float) * (size_t)n);
                fwht_ref(y, n);
                k->fwht(z, n);
                if (memcmp(y, z, sizeof(float) * (size_t)n))
                    fail_msg("fwht %s n=%d differs from fwht_ref", cpu_isa_name((cpu_isa)isa), n);
                fwht_inplace(x, n);
                if (memcmp(x, y, sizeof(float) * (size_t)n))
                    fail_msg("fwht_inplace n=%d differs from fwht_ref", n);
            }
        print_message("[ INFO     ] fwht at %s: bit-identical to the scalar reference, n = 1 .. 1024\n",
                      cpu_isa_name((cpu_isa)isa));
        tested++;
    }
    if (!tested) print_message("[ SKIP     ] fwht twins: no level here has a transform of its own\n");
}

/* RMSNorm and SwiGLU: the dispatching entry point against the scalar
 * reference, |Δ| <= 1e-5 |reference| per element (the AVX2 exp is a few ulp
 * from expf; RMSNorm's sum of squares is in double). */
static void test_layer_ops_vs_ref(void **state) {
    (void)state;
    const bool simd = cpu_isa_active() >= CPU_ISA_AVX2;
    if (!simd) print_message("[ SKIP     ] rmsnorm/swiglu AVX2 vs scalar: AVX2 kernels not active on this CPU\n");
    uint64_t rng = 6;
    const int lens[] = {1, 7, 8, 64, 100, 2048, 8195};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int n = lens[li];
        float *x = xmalloc(sizeof(float) * n), *w = xmalloc(sizeof(float) * n);
        float *o1 = xmalloc(sizeof(float) * n), *o2 = xmalloc(sizeof(float) * n), *up = xmalloc(sizeof(float) * n);
        random_floats(x, n, 2.0f, &rng);
        random_floats(w, n, 1.0f, &rng);
        random_floats(up, n, 1.0f, &rng);
        rmsnorm(o1, x, w, n, 1e-5f);
        rmsnorm_ref(o2, x, w, n, 1e-5f);
        for (int i = 0; i < n; i++)
            if (fabsf(o1[i] - o2[i]) > 1e-5f * fabsf(o2[i])) fail_msg("rmsnorm n=%d [%d]: %.9g vs %.9g", n, i, o1[i], o2[i]);
        memcpy(o2, x, sizeof(float) * n);
        rmsnorm(o2, o2, w, n, 1e-5f); /* in place */
        assert_memory_equal(o1, o2, sizeof(float) * n);
        /* gate values across the whole useful range, including where exp saturates */
        for (int i = 0; i < n; i++) x[i] = (test_rand_uniform(&rng) - 0.5f) * (i % 3 ? 30.0f : 220.0f);
        if (n > 6) {
            x[0] = 0.0f;
            x[1] = -0.0f;
            x[2] = 88.5f;
            x[3] = -88.5f;
            x[4] = 1e-30f;
            x[5] = -104.0f;
            if (n > 12) {
                x[6] = -88.7f;
                x[7] = -88.75f;
                x[8] = -87.0f;
                x[9] = 86.7f;
                x[10] = 60.0f;
                x[11] = -60.0f;
            }
        }
        memcpy(o1, x, sizeof(float) * n);
        memcpy(o2, x, sizeof(float) * n);
        swiglu(o1, up, n);
        swiglu_ref(o2, up, n);
        for (int i = 0; i < n; i++)
            if (!(fabsf(o1[i] - o2[i]) <= 1e-5f * fabsf(o2[i]) + 1e-37f))
                fail_msg("swiglu n=%d g=%.9g up=%.9g: %.9g vs %.9g", n, x[i], up[i], o1[i], o2[i]);
        free(x);
        free(w);
        free(o1);
        free(o2);
        free(up);
    }
}

/* RoPE (which remembers the last cos/sin table per thread): every call equals
 * the formula computed afresh, across positions, sizes and frequency tables. */
static void test_rope_cache(void **state) {
    (void)state;
    uint64_t rng = 7;
    float fa[32], fb[32];
    for (int i = 0; i < 32; i++) {
        fa[i] = 1.0f + (float)i;
        fb[i] = 1.0f + (float)i;
    }
    fb[31] = 99.0f; /* same pointer, different contents: must not reuse */
    const struct { int n_rot; int32_t pos; const float *ff; float base; } calls[] = {
        {64, 3, NULL, 10000.0f}, {64, 3, NULL, 10000.0f}, {64, 4, NULL, 10000.0f}, {64, 4, fa, 10000.0f},
        {64, 4, fa, 500000.0f},  {32, 4, fa, 500000.0f},  {64, 4, fb, 500000.0f}, {64, 4, fb, 500000.0f},
        {128, 9, NULL, 1e6f},   {64, 3, NULL, 10000.0f},
    };
    for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++) {
        for (int si = 0; si < 2; si++) {
            const rope_style style = si ? ROPE_NEOX : ROPE_NORM;
            float x[128], want[128];
            for (int i = 0; i < 128; i++) x[i] = want[i] = test_rand_normal(&rng);
            const int nr = calls[c].n_rot, half = nr / 2;
            for (int i = 0; i < half; i++) {
                double theta = (double)calls[c].pos * pow((double)calls[c].base, -2.0 * i / nr) * 1.0f;
                if (calls[c].ff) theta /= calls[c].ff[i];
                const float cs = (float)cos(theta), sn = (float)sin(theta);
                const int a = style == ROPE_NORM ? 2 * i : i, b = style == ROPE_NORM ? 2 * i + 1 : i + half;
                const float x0 = want[a], x1 = want[b];
                want[a] = x0 * cs - x1 * sn;
                want[b] = x0 * sn + x1 * cs;
            }
            rope_apply(x, nr, calls[c].pos, calls[c].base, 1.0f, calls[c].ff, style);
            assert_memory_equal(x, want, sizeof x);
        }
        if (c == 6) fb[31] = 98.0f; /* change the table behind the pointer */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_from_float_scalar),
        cmocka_unit_test(test_from_float_bitexact),
        cmocka_unit_test(test_vec_dot_levels_vs_scalar),
        cmocka_unit_test(test_vec_dot_quantized_vs_f32),
        cmocka_unit_test(test_tiles_equal_vec_dot),
        cmocka_unit_test(test_packed_equals_vec_dot),
        cmocka_unit_test(test_matmul_threads_bitexact),
        cmocka_unit_test(test_repacked_layout),
        cmocka_unit_test(test_layer_ops_vs_ref),
        cmocka_unit_test(test_fwht_levels),
        cmocka_unit_test(test_rope_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
