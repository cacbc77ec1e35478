/* test_kv_simd.c — the KV cache's vector kernels against their scalar twins:
 *  - every codec's dot / axpy at each ISA level above scalar this CPU runs
 *    (arch/kv_arch.h; a level using a lower one's kernels is not repeated)
 *    against the scalar one (|diff| <= 1e-5 * sum |a_i b_i|, a the decoded
 *    values; q4_1/q5_1 add their offset term), its decode bit for bit, for
 *    n = 16, 37, 40, 64, 96, 128 (those that are whole blocks of the type);
 *  - attention's tile kernels (scores, accum, exp, max) of each level against
 *    the scalar row, at head_dims, row counts and query-head counts that
 *    cover every tail of the vector loops;
 *  - kt*: the kvt_kernels rows (scalar plan kernels, AVX2 / AVX-512 or NEON
 *    kernels) against
 *    the bit-by-bit references and each other, and the coordinate order
 *    kvt_fit leaves (sorted by bits) consistent between encode, decode and
 *    prep_query;
 *  - the blocked attention over a long cache (several pages and blocks, sink
 *    and window rows, centering, GQA and MHA) against attention_reference for
 *    every cache type.
 * Where a level is missing (AVX2, AVX-512 on x86; NEON on aarch64) its
 * comparisons are skipped with the reason printed; the rest still runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/kv_arch.h"
#include "attention.h"
#include "cpu.h"
#include "kv_cache.h"
#include "kv_transform.h"
#include "rotkv.h"
#include "testutil.h"
#include "threadpool.h"

/* Not in the headers: kv_transform.c's bit-by-bit references. */
float kvt_dot_ref(const kvt_head *h, const uint8_t *src, const float *qy);
void kvt_axpy_ref(const kvt_head *h, const uint8_t *src, float w, float *acc_y);

static bool have_avx2(const char *what) {
    if (cpu_isa_supported(CPU_ISA_AVX2)) return true;
    print_message("[ SKIP     ] %s: this CPU lacks AVX2/FMA/F16C, only the scalar kernels run here\n", what);
    return false;
}

/* Gaussian with a random scale per vector and a few outliers. */
static void random_vec(float *x, int n, uint64_t *rng) {
    const float scale = powf(10.0f, -2.0f + 3.0f * test_rand_uniform(rng));
    for (int i = 0; i < n; i++) {
        x[i] = scale * test_rand_normal(rng);
        if (test_rand_u64(rng) % 32 == 0) x[i] *= 10.0f;
    }
}

#define MAXN 128
#define REPS 200

/* ------------------------------------------------------------------ fixed codecs */

static void t_codec_twins(void **state) {
    (void)state;
    if (!cpu_isa_supported(CPU_ISA_AVX2) && !cpu_isa_supported(CPU_ISA_NEON)) {
        print_message("[ SKIP     ] codec SIMD twins: this CPU has neither AVX2 nor NEON\n");
        skip();
    }
    const int ns[] = {16, 37, 40, 64, 96, 128}; /* 37, 40: the float and tq kernels' tails */
    uint64_t rng = 11;
    float x[MAXN], q[MAXN], a[MAXN], d1[MAXN], d2[MAXN], o0[MAXN], o1[MAXN], o2[MAXN];
    uint8_t buf[4 * MAXN + 64];
    for (int t = 0; t < ROTKV_KV_CODEC_COUNT; t++) {
        const kv_codec *sc = kv_codec_get_isa((rotkv_kv_type)t, CPU_ISA_SCALAR);
        assert_non_null(sc);
        /* the codec handed out is that of the active level */
        assert_ptr_equal(kv_codec_get((rotkv_kv_type)t), kv_codec_get_isa((rotkv_kv_type)t, cpu_isa_active()));
        /* every level this CPU runs against scalar; levels that use a lower
         * level's kernels (above AVX2) are not run twice */
        const kv_codec_kernels *done[CPU_ISA_COUNT] = {sc->kern};
        int n_done = 1;
        for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
            if (!cpu_isa_supported((cpu_isa)isa)) continue;
            const kv_codec *av = kv_codec_get_isa((rotkv_kv_type)t, (cpu_isa)isa);
            assert_non_null(av);
            assert_string_equal(av->name, sc->name);
            assert_ptr_equal(av->encode, sc->encode);
            /* the first vector level of each architecture has a row for every
             * codec but kt* (whose kernels are kv_transform.c's) */
            if ((isa == CPU_ISA_AVX2 || isa == CPU_ISA_NEON) && sc->kt_bits == 0) {
                assert_ptr_not_equal(av->kern->dot, sc->kern->dot);
                assert_ptr_not_equal(av->kern->decode, sc->kern->decode);
                assert_ptr_not_equal(av->kern->axpy, sc->kern->axpy);
            }
            bool seen = false;
            for (int i = 0; i < n_done; i++) seen |= done[i] == av->kern;
            if (seen) continue;
            done[n_done++] = av->kern;
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
                const int n = ns[k];
                if (n % sc->blck) continue; /* ggml blocks: 32 values */
                /* q4_1 / q5_1 decode to d c + m with unsigned codes c: the scalar
                 * kernels' terms d c and m are each up to the block's max |a|, and
                 * cancel; their rounding is relative to those terms */
                const bool offset = t == ROTKV_KV_Q4_1 || t == ROTKV_KV_Q5_1;
                double worst = 0;
                for (int rep = 0; rep < REPS; rep++) {
                    random_vec(x, n, &rng);
                    if (rep == 0) memset(x, 0, sizeof x); /* zero vector */
                    for (int i = 0; i < n; i++) q[i] = test_rand_normal(&rng);
                    memset(buf, 0, sizeof buf);
                    sc->encode(x, buf, n);
                    /* decode: bit for bit */
                    sc->kern->decode(buf, d1, n);
                    av->kern->decode(buf, d2, n);
                    assert_memory_equal(d1, d2, sizeof(float) * (size_t)n);
                    memcpy(a, d1, sizeof(float) * (size_t)n);
                    /* dot */
                    double mag = 0, amax = 0;
                    for (int i = 0; i < n; i++) amax = fmax(amax, fabs(a[i]));
                    for (int i = 0; i < n; i++) mag += fabs((double)a[i] * q[i]) + (offset ? amax * fabs(q[i]) : 0);
                    const double ds = sc->kern->dot(buf, q, n), dv = av->kern->dot(buf, q, n);
                    if (!(fabs(ds - dv) <= 1e-5 * mag))
                        fail_msg("%s %s n=%d rep %d: dot scalar %.9g vs %.9g (sum |ab| %g)", sc->name,
                                 cpu_isa_name((cpu_isa)isa), n, rep, ds, dv, mag);
                    if (mag > 0 && fabs(ds - dv) / mag > worst) worst = fabs(ds - dv) / mag;
                    /* axpy onto a random vector */
                    const float w = test_rand_normal(&rng);
                    for (int i = 0; i < n; i++) o0[i] = o1[i] = o2[i] = test_rand_normal(&rng);
                    sc->kern->axpy(buf, w, o1, n);
                    av->kern->axpy(buf, w, o2, n);
                    for (int i = 0; i < n; i++) {
                        const double bound = 1e-5 * (fabs(o0[i]) + fabs(w) * (fabs(a[i]) + (offset ? amax : 0)));
                        if (!(fabs((double)o1[i] - o2[i]) <= bound))
                            fail_msg("%s %s n=%d rep %d: axpy[%d] scalar %.9g vs %.9g", sc->name,
                                     cpu_isa_name((cpu_isa)isa), n, rep, i, o1[i], o2[i]);
                    }
                }
                print_message("[ TWIN     ] %-6s %-7s n=%3d: max |dot diff| / sum|ab| = %.2e\n", sc->name,
                              cpu_isa_name((cpu_isa)isa), n, worst);
            }
        }
    }
}

/* ------------------------------------------------------------------ attention tiles */

/* Every level's tile kernels (arch/kv_arch.h's attn_kernels) against the
 * scalar row: scores and accum within 1e-5 of the sum of their terms'
 * magnitudes, exp within 1e-6 relative per value, max exactly (NaN scores
 * ignored, nothing read past n counted). */
static void t_attn_tile_twins(void **state) {
    (void)state;
    const attn_kernels *ks = attn_kernels_at(CPU_ISA_SCALAR);
    assert_non_null(ks);
    /* the first vector level of each architecture has a row of its own */
    if (cpu_isa_supported(CPU_ISA_AVX2)) assert_non_null(attn_kernels_at(CPU_ISA_AVX2));
    if (cpu_isa_supported(CPU_ISA_NEON)) assert_non_null(attn_kernels_at(CPU_ISA_NEON));
    const int hds[] = {4, 8, 12, 16, 20, 24, 64, 72, 128};
    const int nrs[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32};
    uint64_t rng = 77;
    const size_t tile_floats = (size_t)ATT_TILE_ROWS * 128;
    float *tile = malloc(sizeof(float) * tile_floats), *q = malloc(sizeof(float) * 8 * 128);
    float *acc0 = malloc(sizeof(float) * 8 * 128), *acc1 = malloc(sizeof(float) * 8 * 128);
    float *acc2 = malloc(sizeof(float) * 8 * 128), *mag = malloc(sizeof(float) * 8 * 128);
    float S0[8 * SROW], S1[8 * SROW], W[8 * SROW], rs[SROW], bias[8];
    int tested = 0;
    for (int isa = CPU_ISA_AVX2; isa < CPU_ISA_COUNT; isa++) {
        const attn_kernels *kv = attn_kernels_at((cpu_isa)isa);
        if (!kv) {
            if (cpu_isa_of_this_arch((cpu_isa)isa) && !cpu_isa_supported((cpu_isa)isa))
                print_message("[ SKIP     ] attention tiles at %s: this CPU cannot run that level\n",
                              cpu_isa_name((cpu_isa)isa));
            continue;
        }
        assert_ptr_not_equal(kv->scores, ks->scores);
        tested++;
        for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++) {
            const int hd = hds[hi];
            if (hd % kv->tile_cols) continue;
            for (size_t ni = 0; ni < sizeof nrs / sizeof *nrs; ni++)
                for (int ng = 1; ng <= 7; ng += ng < 5 ? 1 : 2) {
                    const int nr = nrs[ni];
                    for (size_t i = 0; i < tile_floats; i++) tile[i] = test_rand_normal(&rng);
                    for (int i = 0; i < ng * hd; i++) q[i] = test_rand_normal(&rng);
                    for (int r = 0; r < SROW; r++) rs[r] = 0.5f + test_rand_uniform(&rng);
                    for (int g = 0; g < ng; g++) bias[g] = test_rand_normal(&rng);
                    const int variant = (int)(ni + hi + ng) % 4; /* rs and bias: none, either, both */
                    const float *rsp = variant & 1 ? rs : NULL, *bp = variant & 2 ? bias : NULL;
                    const float scale = 0.125f;
                    ks->scores(tile, nr, hd, q, ng, rsp, bp, scale, S0);
                    kv->scores(tile, nr, hd, q, ng, rsp, bp, scale, S1);
                    for (int g = 0; g < ng; g++)
                        for (int r = 0; r < nr; r++) {
                            double m = 0;
                            for (int i = 0; i < hd; i++) m += fabs((double)tile[(size_t)r * hd + i] * q[(size_t)g * hd + i]);
                            m = (m * (rsp ? rsp[r] : 1.0) + (bp ? fabs(bp[g]) : 0.0)) * scale;
                            if (!(fabs((double)S0[g * SROW + r] - S1[g * SROW + r]) <= 1e-5 * m + 1e-30))
                                fail_msg("attention scores %s hd %d nr %d ng %d [%d][%d]: scalar %.9g vs %.9g",
                                         cpu_isa_name((cpu_isa)isa), hd, nr, ng, g, r, S0[g * SROW + r],
                                         S1[g * SROW + r]);
                        }
                    /* accum onto random accumulators; nothing written past ng heads */
                    for (int i = 0; i < 8 * SROW; i++) W[i] = test_rand_uniform(&rng);
                    for (int i = 0; i < 8 * hd; i++) {
                        acc0[i] = acc1[i] = acc2[i] = test_rand_normal(&rng);
                        mag[i] = fabsf(acc0[i]);
                    }
                    for (int g = 0; g < ng; g++)
                        for (int r = 0; r < nr; r++)
                            for (int i = 0; i < hd; i++)
                                mag[g * hd + i] += fabsf(W[g * SROW + r] * tile[(size_t)r * hd + i]);
                    ks->accum(tile, nr, hd, W, ng, acc0);
                    kv->accum(tile, nr, hd, W, ng, acc1);
                    for (int i = 0; i < 8 * hd; i++) {
                        if (i >= ng * hd) assert_true(acc1[i] == acc2[i]);
                        else if (!(fabsf(acc0[i] - acc1[i]) <= 1e-5f * mag[i]))
                            fail_msg("attention accum %s hd %d nr %d ng %d [%d]: scalar %.9g vs %.9g",
                                     cpu_isa_name((cpu_isa)isa), hd, nr, ng, i, acc0[i], acc1[i]);
                    }
                }
        }
        /* exp and max over 1..40 scores (room for n rounded up to 8) */
        for (int n = 1; n <= 40; n++) {
            float x0[48], x1[48];
            for (int r = 0; r < 48; r++) x0[r] = x1[r] = 8.0f * test_rand_normal(&rng);
            if (n > 2) x0[n / 2] = x1[n / 2] = NAN; /* ignored by max */
            for (int r = n; r < 48; r++) x0[r] = x1[r] = 1e30f; /* past n: never the max */
            const float m0 = ks->max(x0, n, -INFINITY), m1 = kv->max(x1, n, -INFINITY);
            if (!(m0 == m1)) fail_msg("attention max %s n %d: scalar %g vs %g", cpu_isa_name((cpu_isa)isa), n, m0, m1);
            assert_true(kv->max(x1, n, 1e20f) == 1e20f);
            if (n > 2) x0[n / 2] = x1[n / 2] = -50.0f;
            const float s0 = ks->exp(x0, n, m0), s1 = kv->exp(x1, n, m0);
            for (int r = 0; r < n; r++)
                if (!(fabsf(x0[r] - x1[r]) <= 1e-6f * x0[r] + 1e-37f))
                    fail_msg("attention exp %s n %d [%d]: scalar %.9g vs %.9g", cpu_isa_name((cpu_isa)isa), n, r, x0[r],
                             x1[r]);
            if (!(fabsf(s0 - s1) <= 1e-5f * s0)) fail_msg("attention exp sum %s n %d: %.9g vs %.9g", cpu_isa_name((cpu_isa)isa), n, s0, s1);
        }
        print_message("[ TILES    ] attention tile kernels at %s (tile_cols %d) equal the scalar ones\n",
                      cpu_isa_name((cpu_isa)isa), kv->tile_cols);
    }
    if (!tested) print_message("[ SKIP     ] attention tiles: no vector level runs here\n");
    free(tile);
    free(q);
    free(acc0);
    free(acc1);
    free(acc2);
    free(mag);
}

/* ------------------------------------------------------------------ kt* */

/* Calibration vectors with very different variances per direction (so the bit
 * allocation spans several widths, and some coordinates get none). */
static void kt_data(float *X, int n, int hd, uint64_t *rng) {
    for (int t = 0; t < n; t++)
        for (int i = 0; i < hd; i++) X[(size_t)t * hd + i] = expf(-0.08f * i) * test_rand_normal(rng) + 0.3f;
}

static void t_kt_twins(void **state) {
    (void)state;
    const int hds[] = {16, 20, 64, 80, 96, 128};
    const double bits[] = {6.0, 5.0, 4.0, 3.5, 3.0, 2.5, 2.0};
    /* the rows of the scalar and the first vector level (arch/kv_arch.h; AVX2
     * on x86-64, NEON on aarch64: the levels above them run their row) */
    const kvt_kernels *ks = kvt_kernels_at(CPU_ISA_SCALAR), *kv = NULL;
    assert_non_null(ks);
    const cpu_isa vec_isa = cpu_isa_of_this_arch(CPU_ISA_NEON) ? CPU_ISA_NEON : CPU_ISA_AVX2;
    const bool avx2 = vec_isa == CPU_ISA_NEON ? cpu_isa_supported(CPU_ISA_NEON) : have_avx2("kt AVX2 kernels");
    if (vec_isa == CPU_ISA_NEON && !avx2) print_message("[ SKIP     ] kt NEON kernels: this CPU lacks NEON\n");
    if (avx2) {
        kv = kvt_kernels_at(vec_isa);
        assert_non_null(kv);
        assert_ptr_not_equal(kv->dot, ks->dot);
        assert_ptr_not_equal(kv->levels_rows, ks->levels_rows);
        print_message("[ KT       ] %s row against the scalar one\n", cpu_isa_name(vec_isa));
    }
    if (vec_isa == CPU_ISA_NEON) { /* dotprod and i8mm have no kt row of their own */
        assert_null(kvt_kernels_at(CPU_ISA_DOTPROD));
        assert_null(kvt_kernels_at(CPU_ISA_I8MM));
    }
    /* AVX-VNNI has no kt row of its own (it runs AVX2's); AVX-512 has one where the CPU has it */
    assert_null(kvt_kernels_at(CPU_ISA_AVXVNNI));
    const kvt_kernels *k512 = kvt_kernels_at(CPU_ISA_AVX512);
    if (cpu_isa_supported(CPU_ISA_AVX512)) {
        assert_non_null(k512);
        assert_ptr_not_equal(k512->levels_rows, kv->levels_rows);
    } else {
        assert_null(k512);
        print_message("[  SKIPPED ] kt AVX-512 kernels: this CPU has no AVX-512\n");
    }
    /* with VBMI, k512 is the byte-permute row; the plain AVX-512 row is checked too */
    const kvt_kernels *plain = kvt_kernels_avx512_plain();
    if (k512 && cpu_has_avx512_vbmi()) {
        assert_ptr_not_equal(k512, plain);
        print_message("[ KT       ] AVX-512 rows: with VBMI (byte-permute levels) and without\n");
    } else if (k512) {
        print_message("[  SKIPPED ] kt AVX-512 VBMI kernels: this CPU has no VBMI\n");
    }
    const kvt_kernels *const rows[4] = {ks, kv, k512, plain};
    const int n_rows = k512 ? (k512 != plain ? 4 : 3) : avx2 ? 2 : 1;
    uint64_t rng = 5;
    for (size_t k = 0; k < sizeof hds / sizeof hds[0]; k++) {
        const int hd = hds[k], ncal = 4 * hd;
        float *X = malloc(sizeof(float) * (size_t)ncal * hd);
        kt_data(X, ncal, hd, &rng);
        for (size_t bi = 0; bi < sizeof bits / sizeof bits[0]; bi++) {
            const int budget = (int)lround(bits[bi] * hd) - 8;
            kvt_head h;
            assert_int_equal(kvt_fit(&h, hd, X, ncal, NULL, budget), 0);
            /* coordinates ordered by bits: groups of 8 of one width (widest
             * first), then the remainders, then those without bits; bit
             * offsets consecutive */
            int nz = 0, widths[8] = {0}, mixed = 0;
            for (int i = 0; i < hd; i++) {
                if (i) assert_int_equal(h.bit_ofs[i], h.bit_ofs[i - 1] + h.bits[i - 1]);
                if (i && h.bits[i]) assert_true(h.bits[i - 1] > 0);
                nz += h.bits[i] > 0;
                widths[h.bits[i]]++;
            }
            /* (widths fall, except once where the groups of 16 end and those of 8 begin) */
            int rises = 0;
            for (int g = 0; g < nz / 8; g++) {
                bool uniform = true;
                for (int j = 1; j < 8; j++) uniform &= h.bits[8 * g + j] == h.bits[8 * g];
                if (!uniform) mixed++;
                else if (g && !mixed && h.bits[8 * g] > h.bits[8 * g - 1]) rises++;
            }
            assert_true(rises <= 1);
            int mixed16 = 0, w16[8] = {0}, rem16 = 0;
            for (int i = 0; i < hd; i++) w16[h.bits[i]]++;
            for (int b = 1; b < 8; b++) rem16 += w16[b] % 16;
            for (int g = 0; g < nz / 16; g++) {
                bool uniform = true;
                for (int j = 1; j < 16; j++) uniform &= h.bits[16 * g + j] == h.bits[16 * g];
                mixed16 += !uniform;
            }
            assert_true(mixed16 <= (rem16 + 15) / 16 + 1);
            int rem = 0;
            for (int b = 1; b < 8; b++) rem += widths[b] % 8;
            assert_true(mixed <= (rem + 7) / 8 + 1);
            float x[MAXN], q[MAXN], qy[MAXN], y[MAXN], o0[MAXN], o1[MAXN], o2[MAXN + 1], o3[MAXN];
            uint8_t row[1024];
            for (int rep = 0; rep < REPS; rep++) {
                for (int i = 0; i < hd; i++) x[i] = expf(-0.08f * i) * test_rand_normal(&rng) + 0.3f;
                for (int i = 0; i < hd; i++) q[i] = test_rand_normal(&rng);
                kvt_encode(&h, x, row);
                const float qmu = kvt_prep_query(&h, q, qy);
                {   /* against the definition in double: qy = sigma * Tinv^T q, q.mu;
                     * kvt_finish: out += Tinv acc + w mu */
                    double m = 0, mm = 0;
                    for (int j = 0; j < hd; j++) m += (double)q[j] * h.mu[j], mm += fabs((double)q[j] * h.mu[j]);
                    assert_true(fabs(qmu - m) <= 1e-5 * (mm + 1e-6));
                    float acc[MAXN], out[MAXN];
                    double aav[MAXN], bbv[MAXN]; /* the bounds' magnitudes, for the rows below */
                    for (int i = 0; i < hd; i++) acc[i] = test_rand_normal(&rng), out[i] = 0.5f;
                    const float wsum = 0.75f;
                    kvt_finish(&h, acc, wsum, out);
                    for (int i = 0; i < hd; i++) {
                        double a = 0, aa = 0, b = 0, bb = 0;
                        for (int j = 0; j < hd; j++) {
                            a += (double)h.Tinv[(size_t)j * hd + i] * q[j];
                            aa += fabs((double)h.Tinv[(size_t)j * hd + i] * q[j]);
                            b += (double)h.Tinv[(size_t)i * hd + j] * acc[j];
                            bb += fabs((double)h.Tinv[(size_t)i * hd + j] * acc[j]);
                        }
                        aav[i] = aa;
                        bbv[i] = bb;
                        if (!(fabs(qy[i] - a * h.sigma[i]) <= 1e-5 * aa * h.sigma[i] + 1e-30))
                            fail_msg("kt hd=%d: qy[%d] %g vs %g", hd, i, qy[i], a * h.sigma[i]);
                        const double want = 0.5 + b + (double)wsum * h.mu[i];
                        if (!(fabs(out[i] - want) <= 1e-5 * (bb + fabs(wsum * h.mu[i]) + 0.5)))
                            fail_msg("kt hd=%d: finish[%d] %g vs %g", hd, i, out[i], want);
                    }
                    /* every row's prep_query and finish against the active one's
                     * (checked above against the definition): twice the bound */
                    for (int ri = 0; ri < n_rows; ri++) {
                        float qy2[MAXN], out2[MAXN];
                        const float qmu2 = rows[ri]->prep_query(&h, q, qy2);
                        assert_true(fabs(qmu2 - qmu) <= 2e-5 * (mm + 1e-6));
                        for (int i = 0; i < hd; i++) out2[i] = 0.5f;
                        rows[ri]->finish(&h, acc, wsum, out2);
                        for (int i = 0; i < hd; i++) {
                            if (!(fabs(qy2[i] - qy[i]) <= 2e-5 * aav[i] * h.sigma[i] + 1e-30))
                                fail_msg("kt hd=%d: row %d qy[%d] %g vs %g", hd, ri, i, qy2[i], qy[i]);
                            if (!(fabs(out2[i] - out[i]) <= 2e-5 * (bbv[i] + fabs(wsum * h.mu[i]) + 0.5)))
                                fail_msg("kt hd=%d: row %d finish[%d] %g vs %g", hd, ri, i, out2[i], out[i]);
                        }
                    }
                }
                /* dot: |diff| <= 1e-5 * s * sum |qy_i c_i| (the reference's terms) */
                kvt_decode(&h, row, y);
                double mag = 0, qx = 0;
                memset(o0, 0, sizeof o0);
                kvt_axpy_ref(&h, row, 1.0f, o0); /* s sigma_i c_i */
                for (int i = 0; i < hd; i++) {
                    mag += h.sigma[i] > 0 ? fabs((double)qy[i] * o0[i] / h.sigma[i]) : 0;
                    qx += (double)q[i] * y[i];
                }
                const double r = kvt_dot_ref(&h, row, qy), ds = ks->dot(&h, row, qy), da = kvt_dot(&h, row, qy);
                assert_true(fabs(ds - r) <= 1e-5 * mag);
                assert_true(fabs(da - r) <= 1e-5 * mag);
                for (int ri = 1; ri < n_rows; ri++) {
                    const double dv = rows[ri]->dot(&h, row, qy);
                    if (!(fabs(dv - r) <= 1e-5 * mag))
                        fail_msg("kt hd=%d bits=%.1f: dot ref %.9g, row %d %.9g", hd, bits[bi], r, ri, dv);
                }
                /* raw levels: s * levels = what kvt_axpy_ref adds with weight 1
                 * over sigma; the twins bit-identical, nothing written past hd */
                float l0[MAXN + 8], l1[MAXN + 8];
                for (int i = 0; i < hd + 8; i++) l0[i] = l1[i] = 7.0f;
                const float s0 = ks->levels(&h, row, l0);
                for (int i = 0; i < hd; i++) {
                    const double want = h.bits[i] ? o0[i] / h.sigma[i] : 0.0;
                    if (!(fabs((double)s0 * l0[i] - want) <= 1e-6 * (fabs(want) + 1e-6)))
                        fail_msg("kt hd=%d bits=%.1f: levels[%d] %g x s %g vs %g", hd, bits[bi], i, l0[i], s0, want);
                }
                for (int i = hd; i < hd + 8; i++) assert_true(l0[i] == 7.0f);
                for (int ri = 1; ri < n_rows; ri++) {
                    for (int i = 0; i < hd + 8; i++) l1[i] = 7.0f;
                    const float s1 = rows[ri]->levels(&h, row, l1);
                    assert_true(s1 == s0);
                    assert_memory_equal(l0, l1, sizeof(float) * (size_t)(hd + 8));
                }
                assert_true(kvt_levels(&h, row, l1) == s0);
                /* the permuted coordinates agree: score = q . decode(row) */
                assert_true(fabs(r + qmu - qx) <= 1e-4 * (fabs(qx) + mag + 1e-3));
                /* axpy */
                const float w = test_rand_normal(&rng);
                float st[MAXN];
                for (int i = 0; i < hd; i++) st[i] = o0[i] = o1[i] = o3[i] = test_rand_normal(&rng);
                memset(y, 0, sizeof y);
                kvt_axpy_ref(&h, row, w, y); /* the added terms */
                kvt_axpy_ref(&h, row, w, o0);
                ks->axpy(&h, row, w, o1);
                kvt_axpy(&h, row, w, o3);
                for (int i = 0; i < hd; i++) {
                    const double bound = 1e-5 * (fabs(o0[i] - y[i]) + fabs(y[i]));
                    assert_true(fabs((double)o1[i] - o0[i]) <= bound);
                    assert_true(fabs((double)o3[i] - o0[i]) <= bound);
                }
                for (int ri = 1; ri < n_rows; ri++) {
                    memcpy(o2, st, sizeof(float) * (size_t)hd);
                    o2[hd] = 12345.0f;
                    rows[ri]->axpy(&h, row, w, o2);
                    for (int i = 0; i < hd; i++) {
                        const double bound = 1e-5 * (fabs(o0[i] - y[i]) + fabs(y[i]));
                        if (!(fabs((double)o2[i] - o0[i]) <= bound))
                            fail_msg("kt hd=%d bits=%.1f: axpy[%d] ref %.9g, row %d %.9g", hd, bits[bi], i, o0[i], ri, o2[i]);
                    }
                    assert_true(o2[hd] == 12345.0f); /* nothing written past hd */
                }
            }
            for (int ri = 0; ri < n_rows; ri++) { /* levels_rows (each row) equals kvt_levels row by row */
                enum { NR = 37, PRE = 3 };
                const size_t stride = h.row_bytes + PRE + 2;
                uint8_t *buf = calloc(NR, stride);
                const uint8_t *rws[NR];
                float *ya = malloc(sizeof(float) * NR * hd), *yb = malloc(sizeof(float) * NR * hd), sa[NR], sb[NR];
                for (int r = 0; r < NR; r++) {
                    for (int i = 0; i < hd; i++) x[i] = expf(-0.08f * i) * test_rand_normal(&rng);
                    kvt_encode(&h, x, buf + (size_t)(NR - 1 - r) * stride + PRE); /* rows out of order */
                    rws[r] = buf + (size_t)(NR - 1 - r) * stride;
                }
                for (int i = 0; i < NR * hd; i++) ya[i] = yb[i] = -3.0f;
                rows[ri]->levels_rows(&h, rws, PRE, NR, ya, sa);
                kvt_levels_rows(&h, rws, PRE, NR, yb, sb); /* the active row */
                assert_memory_equal(sa, sb, sizeof sa);
                assert_memory_equal(ya, yb, sizeof(float) * NR * hd);
                for (int r = 0; r < NR; r++) sb[r] = kvt_levels(&h, rws[r] + PRE, yb + (size_t)r * hd);
                assert_memory_equal(sa, sb, sizeof sa);
                assert_memory_equal(ya, yb, sizeof(float) * NR * hd);
                free(buf);
                free(ya);
                free(yb);
            }
            if (kvt_has_accum_rows(hd)) { /* V rows from the codes = the reference, 1..5 heads */
                enum { NR = 70, PRE = 5, WS = 72 };
                const size_t stride = h.row_bytes + PRE + 3;
                uint8_t *buf = calloc(NR, stride);
                const uint8_t *rws[NR];
                float *W = malloc(sizeof(float) * 5 * WS), *a0 = malloc(sizeof(float) * 5 * hd);
                float *a1 = malloc(sizeof(float) * 5 * hd), *mag = calloc(5 * (size_t)hd, sizeof(float));
                float *yl = malloc(sizeof(float) * hd);
                for (int r = 0; r < NR; r++) {
                    for (int i = 0; i < hd; i++) x[i] = expf(-0.05f * i) * test_rand_normal(&rng);
                    kvt_encode(&h, x, buf + (size_t)((r * 7) % NR) * stride + PRE); /* rows out of order */
                    rws[r] = buf + (size_t)((r * 7) % NR) * stride;
                }
                for (int i = 0; i < 5 * WS; i++) W[i] = test_rand_uniform(&rng);
                for (int ng = 1; ng <= 5; ng++)
                    for (int n = 1; n <= NR; n += 23) {
                        for (int i = 0; i < ng * hd; i++) a0[i] = a1[i] = test_rand_normal(&rng), mag[i] = fabsf(a0[i]);
                        for (int r = 0; r < n; r++) {
                            const float sr = kvt_levels(&h, rws[r] + PRE, yl);
                            for (int g = 0; g < ng; g++)
                                for (int i = 0; i < hd; i++) mag[g * hd + i] += fabsf(W[g * WS + r] * sr * yl[i]);
                        }
                        kvt_accum_rows_ref(&h, rws, PRE, n, W, WS, ng, a0);
                        kvt_accum_rows(&h, rws, PRE, n, W, WS, ng, a1);
                        for (int i = 0; i < ng * hd; i++)
                            if (!(fabsf(a1[i] - a0[i]) <= 1e-5f * mag[i]))
                                fail_msg("kt hd=%d bits=%.1f: accum_rows ng %d n %d [%d] %.9g vs ref %.9g", hd, bits[bi],
                                         ng, n, i, a1[i], a0[i]);
                    }
                free(buf);
                free(W);
                free(a0);
                free(a1);
                free(mag);
                free(yl);
            }
            print_message("[ KT       ] hd=%3d %.1f bits: %d coordinates with bits; widths 6..0: %d %d %d %d %d %d %d\n", hd,
                          bits[bi], nz, widths[6], widths[5], widths[4], widths[3], widths[2], widths[1], widths[0]);
            kvt_free(&h);
        }
        free(X);
    }
}

/* ------------------------------------------------------------------ blocked attention */

/* A cache of n_tok positions filled with random K/V (per-coordinate scales and
 * a mean, so centering and the kt fit have something to do), then attention
 * for a few query positions against attention_reference. */
static void check_attention(rotkv_kv_type type, int n_head, int n_head_kv, int hd, int n_tok, uint32_t sink,
                            uint32_t window, bool center, uint64_t *rng) {
    const int row = n_head_kv * hd;
    if (kv_codec_get(type)->kt_bits > 0) center = false; /* kt* fit their own center (as context.c does) */
    kv_cache_params p = {1, (uint32_t)n_head_kv, (uint32_t)hd, (uint32_t)n_tok, 1, type, type, NULL, NULL, 0,
                         sink, window, center, NULL};
    rotkv_error err;
    kv_cache *kv = kv_cache_create(&p, &err);
    if (!kv) fail_msg("%s", err.msg);
    float *K = malloc(sizeof(float) * (size_t)n_tok * row), *V = malloc(sizeof(float) * (size_t)n_tok * row);
    const int nq = 4;
    float *Q = malloc(sizeof(float) * (size_t)n_tok * n_head * hd);
    for (int t = 0; t < n_tok; t++)
        for (int i = 0; i < row; i++) {
            const float sc = 0.3f + 2.0f * expf(-0.05f * (float)(i % hd));
            K[(size_t)t * row + i] = sc * test_rand_normal(rng) + 0.5f;
            V[(size_t)t * row + i] = sc * test_rand_normal(rng) - 0.2f;
        }
    for (int i = 0; i < n_tok * n_head * hd; i++) Q[i] = 0.7f * test_rand_normal(rng);
    assert_int_equal(kv_cache_reserve(kv, 0, (uint32_t)n_tok, &err), ROTKV_OK);
    const int ncal = n_tok < 256 ? n_tok : 256;
    if (kv_cache_needs_calibration(kv, 0))
        assert_int_equal(kv_cache_calibrate(kv, 0, K, ncal, V, ncal, Q, ncal, n_head, NULL, &err), ROTKV_OK);
    if (center) {
        float *mk = calloc((size_t)row, sizeof(float)), *mv = calloc((size_t)row, sizeof(float));
        for (int t = 0; t < 64; t++)
            for (int i = 0; i < row; i++) {
                mk[i] += K[(size_t)t * row + i] / 64;
                mv[i] += V[(size_t)t * row + i] / 64;
            }
        kv_cache_set_center(kv, 0, 0, mk, mv);
        free(mk);
        free(mv);
    }
    for (int t = 0; t < n_tok; t++) kv_cache_store(kv, 0, 0, (uint32_t)t, K + (size_t)t * row, V + (size_t)t * row);
    /* queries at the end (window rows), past a page, inside the first block, in a partial block */
    int32_t seq[4] = {0, 0, 0, 0}, pos[4] = {n_tok - 1, 300 < n_tok ? 300 : n_tok / 2, 5, n_tok - 40};
    float *Qb = malloc(sizeof(float) * (size_t)nq * n_head * hd);
    for (int j = 0; j < nq; j++) memcpy(Qb + (size_t)j * n_head * hd, Q + (size_t)pos[j] * n_head * hd, sizeof(float) * n_head * hd);
    float *O1 = malloc(sizeof(float) * (size_t)nq * n_head * hd), *O2 = malloc(sizeof(float) * (size_t)nq * n_head * hd);
    float *scr = malloc(sizeof(float) * attention_scratch_floats(n_head, n_head_kv, hd));
    attention_args a = {kv, 0, nq, seq, pos, n_head, n_head_kv, hd, 1.0f / sqrtf((float)hd), Qb, O1, scr, 0, 0, 0.0f, NULL};
    attention_batch(NULL, &a);
    /* with 2 and 3 threads (other groups of KV heads per work unit, units
     * dealt out differently): bit-identical to one thread */
    for (int nth = 2; nth <= 3; nth++) {
        threadpool *tp = threadpool_create(nth);
        float *scr_n = malloc(sizeof(float) * attention_scratch_floats(n_head, n_head_kv, hd) * (size_t)nth);
        attention_args an = a;
        an.O = O2;
        an.scratch = scr_n;
        attention_batch(tp, &an);
        if (memcmp(O1, O2, sizeof(float) * (size_t)nq * n_head * hd))
            fail_msg("%s heads %d/%d hd %d, %d tokens: %d threads differ from one", rotkv_kv_type_name(type), n_head,
                     n_head_kv, hd, n_tok, nth);
        free(scr_n);
        threadpool_free(tp);
    }
    a.O = O2;
    attention_reference(&a);
    for (int i = 0; i < nq * n_head * hd; i++)
        if (!(fabsf(O1[i] - O2[i]) <= 1e-4f * (1 + fabsf(O2[i]))))
            fail_msg("%s heads %d/%d hd %d, %d tokens, sink %u window %u center %d: blocked %g vs reference %g at %d",
                     rotkv_kv_type_name(type), n_head, n_head_kv, hd, n_tok, sink, window, center, O1[i], O2[i], i);
    /* split-K (flash-decoding): the positions in 2, 3 and 7 splits, merged
     * exactly; equal to the unsplit result within 1e-6 relative, as the
     * norm of the difference over the norm of each query head's output
     * (float sums of a few hundred terms differ by that much in their
     * rounding alone) */
    for (int ns = 2; ns <= 7; ns += ns == 3 ? 4 : 1) {
        float *O3 = malloc(sizeof(float) * (size_t)nq * n_head * hd);
        attention_args sp = a;
        sp.O = O3;
        sp.n_split = ns;
        attention_batch(NULL, &sp);
        for (int h = 0; h < nq * n_head; h++) {
            double d2 = 0, o2 = 0;
            for (int j = h * hd; j < (h + 1) * hd; j++) {
                d2 += ((double)O3[j] - O1[j]) * ((double)O3[j] - O1[j]);
                o2 += (double)O1[j] * O1[j];
            }
            if (!(sqrt(d2) <= 1e-6 * sqrt(o2)))
                fail_msg("%s heads %d/%d hd %d, %d tokens: %d splits differ from one by %.3g relative (query head %d)",
                         rotkv_kv_type_name(type), n_head, n_head_kv, hd, n_tok, ns, sqrt(d2 / o2), h);
        }
        free(O3);
    }
    /* the batch shares each decoded block among its tokens (one tile of 4
     * query tokens); with several query heads per KV head each token alone
     * goes through the same tile kernels, so the results are bit-identical */
    if (n_head != n_head_kv)
        for (int j = 0; j < nq; j++) {
            attention_args one = {kv, 0, 1, seq + j, pos + j, n_head, n_head_kv, hd, 1.0f / sqrtf((float)hd),
                                  Qb + (size_t)j * n_head * hd, O2, scr, 0, 0, 0.0f, NULL};
            attention_batch(NULL, &one);
            if (memcmp(O2, O1 + (size_t)j * n_head * hd, sizeof(float) * (size_t)n_head * hd))
                fail_msg("%s heads %d/%d hd %d: token %d (pos %d) alone differs from the batch",
                         rotkv_kv_type_name(type), n_head, n_head_kv, hd, j, pos[j]);
        }
    free(K);
    free(V);
    free(Q);
    free(Qb);
    free(O1);
    free(O2);
    free(scr);
    kv_cache_free(kv);
}

static void t_attention_long(void **state) {
    (void)state;
    uint64_t rng = 99;
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++) {
        const rotkv_kv_type ty = (rotkv_kv_type)t;
        if (!strcmp(rotkv_kv_type_name(ty), "unknown")) continue;
        /* GQA (4 query heads per KV head), head_dim 64, 3 pages, sinks + window, centered */
        check_attention(ty, 8, 2, 64, 600, 4, 48, true, &rng);
        /* MHA, no sinks or window, not centered */
        check_attention(ty, 2, 2, 64, 300, 0, 0, false, &rng);
        /* GQA with 2 heads per KV head, head_dim 128, window only */
        check_attention(ty, 4, 2, 128, 280, 0, 20, false, &rng);
        /* 8 KV heads of 64: for tq3 and kt3.5 a page is a whole number of 4 KiB
         * pages, so the last row ends where the mapping does (no over-read) */
        check_attention(ty, 16, 8, 64, 260, 0, 0, false, &rng);
    }
    /* past 2 * 1024 positions: a single-sequence batch is split at fixed
     * positions (flash-decoding) by itself, every KV head of a unit at once */
    const char *long_types[] = {"f16", "q8_0", "q4_0", "kt3.5", "kt2"};
    for (size_t i = 0; i < sizeof long_types / sizeof *long_types; i++) {
        check_attention(rotkv_kv_type_from_name(long_types[i]), 16, 4, 64, 2300, 4, 32, true, &rng);
        check_attention(rotkv_kv_type_from_name(long_types[i]), 8, 8, 32, 2100, 0, 0, false, &rng);
    }
    /* head_dim 16 (tile kernels with 16 columns; ggml blocks spanning heads),
     * head_dim 20 (not a multiple of 8: the scalar tile kernels) */
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++)
        if (strcmp(rotkv_kv_type_name((rotkv_kv_type)t), "unknown")) {
            check_attention((rotkv_kv_type)t, 8, 4, 16, 100, 2, 8, false, &rng);
            check_attention((rotkv_kv_type)t, 16, 8, 20, 90, 1, 4, false, &rng);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_codec_twins),
        cmocka_unit_test(t_attn_tile_twins),
        cmocka_unit_test(t_kt_twins),
        cmocka_unit_test(t_attention_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
