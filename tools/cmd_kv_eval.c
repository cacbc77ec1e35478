/* cmd_kv_eval.c — `rotkv kv-eval`: how much each KV cache type distorts the
 * vectors it stores, against the rate it spends (docs/kv-eval.md).
 *
 * For every selected type (default: all), with its bits per value counted by
 * kv_codec_bits (scales and norms included):
 *   - Gaussian vectors, n = 64 and 128: N vectors x of i.i.d. N(0,1)
 *     coordinates, the same vectors for every type.
 *       MSE     = Σ‖x̂ − x‖² / (N n)                      (per coordinate)
 *       IP err  = Σ (q·x̂ − q·x)² / Σ (q·x)²,  q ~ N(0, I) fresh per vector,
 *                 q·x̂ from the codec's fused dot (not decode-then-dot)
 *       ratio   = MSE / 4^−bits  (Shannon's D(R) = 4^−R for i.i.d. unit
 *                 Gaussian coordinates; ≥ 1 for any code)
 *     kt* types need a fitted transform: it is fitted on a separate
 *     calibration sample of the same distribution, identity metric.
 *   - Throughput at n = 128: encoded vectors per second and fused dots per
 *     second over a cache-resident set of up to 1024 vectors (a kt* query is prepared once per pass over the vectors, as
 *     attention does once per query), timed with CLOCK_MONOTONIC. Informative.
 *   - Real K and V (-m MODEL -f TEXT): the model runs over the text in chunks
 *     of -c tokens with an f32 cache, attn-rot off and centering off, so
 *     kv_cache_load returns the raw post-RoPE K and V; every (layer, KV head,
 *     position) vector is recorded. Per (layer, head), the first half of the
 *     positions (in text order) is the fit set of the kt* transforms (identity
 *     metric) and the second half is the evaluation set of every type.
 *     nMSE = Σ‖x̂ − x‖² / Σ‖x‖² over the evaluation set, with attn-rot off
 *     and on (the rotation applied here before encoding; its norm is 1, so
 *     the error is the same in either basis).
 *   - Lloyd-Max check: the b-bit codebook of lloyd_max_gaussian applied to
 *     Monte-Carlo N(0,1) scalars reproduces Max's (1960) distortions to 2%.
 * Output: Markdown tables or one CSV row per type; --chart draws MSE vs bits
 * with gnuplot (the script is bench/kv-eval-chart.gp). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "context.h"
#include "kv_cache.h"
#include "kv_transform.h"
#include "kv_trellis.h"
#include "lloyd_max.h"
#include "rotation.h"

#define N_DIMS 2
static const int gauss_dims[N_DIMS] = {64, 128};
#define TIMING_DIM 1          /* throughput measured at gauss_dims[1] = 128 */
#define TIMING_MS 40          /* default --time-ms: each throughput figure runs at least this long */
#define TIMING_VECTORS 1024   /* timed working set: cache-resident, so the codec is measured, not DRAM */
#define LLOYD_SAMPLES 1000000 /* Monte-Carlo scalars per bit width (>= 10^6) */
#define LLOYD_TOL 0.02
#define CAL_MIN 2048          /* calibration vectors of the Gaussian kt* fits (at least) */

/* Max (1960), Table I: MSE of the optimal b-bit quantizer of N(0,1). */
static const double max1960[5] = {1.0, 0.3634, 0.1175, 0.03454, 0.009497};

/* The gnuplot script of --chart; bench/kv-eval-chart.gp is the same text
 * (tests/test_kv_eval.c compares them through --chart-script). */
static const char chart_script[] =
    "# kv-eval-chart.gp -- the chart of `rotkv kv-eval --chart FILE`: MSE per\n"
    "# coordinate on N(0,1) vectors of 128 values against bits per value, one\n"
    "# labelled point per KV cache type, with the Shannon bound D(R) = 4^-R of\n"
    "# i.i.d. unit Gaussian coordinates; left all types, right the 2-6 bit region.\n"
    "# rotkv feeds this same script to gnuplot (`rotkv kv-eval --chart-script`\n"
    "# prints it). To redraw from saved CSV output:\n"
    "#   ./build/rotkv kv-eval -o csv > kv.csv\n"
    "#   gnuplot -e \"data='kv.csv'; out='kv.svg'\" bench/kv-eval-chart.gp\n"
    "# Variables: data (a CSV written by rotkv kv-eval -o csv), out (the image),\n"
    "# term ('svg', the default, or 'pngcairo').\n"
    "if (!exists(\"term\")) term = 'svg'\n"
    "if (term eq 'pngcairo') {\n"
    "    set terminal pngcairo size 1400,680 enhanced font 'sans,10'\n"
    "} else {\n"
    "    set terminal svg size 1400,680 enhanced font 'sans,12' background rgb 'white'\n"
    "}\n"
    "set output out\n"
    "set datafile separator comma\n"
    "set datafile columnheaders\n"
    "# family of a type name: 1 f32/f16/bf16, 2 llama.cpp block types, 3 tq*, 4 kt*\n"
    "fam(s) = s[1:2] eq 'kt' ? 4 : s[1:2] eq 'tq' ? 3 : (s[1:1] eq 'q' || s[1:2] eq 'iq') ? 2 : 1\n"
    "array family[4] = ['f32, f16, bf16', 'llama.cpp block types', 'tq* (Lloyd-Max codebook)', 'kt* (fitted transform)']\n"
    "sel(f, v) = (fam(stringcolumn('type')) == f && v > 0) ? v : NaN\n"
    "shannon(b) = 4**(-b)\n"
    "set multiplot layout 1,2 title 'KV cache types on N(0,1) vectors of n = 128 values: distortion vs rate'\n"
    "set xlabel 'bits per value (scales and norms included)'\n"
    "set ylabel 'MSE per coordinate'\n"
    "set logscale y\n"
    "set format y '10^{%L}'\n"
    "set grid xtics ytics lc rgb '#dddddd'\n"
    "set key bottom left box opaque\n"
    "set title 'all types (dotted box: the zoom on the right)'\n"
    "set xrange [1.5:17]\n"
    "set yrange [1e-10:1]\n"
    "set xtics 2\n"
    "set object 1 rect from 1.8,5e-4 to 6.3,0.3 fs empty border lc rgb '#999999' dt 3\n"
    "plot shannon(x) with lines lw 2 dt 2 lc rgb '#555555' title 'Shannon bound 4^{-b}', \\\n"
    "     for [f=1:4] data using 'bits128':(sel(f, column('mse128'))) with points pt 7 ps 0.9 lc f \\\n"
    "          title family[f], \\\n"
    "     data using 'bits128':(column('bits128') > 6.5 ? sel(fam(stringcolumn('type')), column('mse128')) : NaN):'type' \\\n"
    "          with labels left offset char 0.7,0.4 font ',9' noenhanced notitle\n"
    "unset object 1\n"
    "set title 'zoom: 1.8 to 6.3 bits per value'\n"
    "set xrange [1.8:6.3]\n"
    "set yrange [5e-4:0.3]\n"
    "set xtics 0.5\n"
    "set key top right box opaque\n"
    "plot shannon(x) with lines lw 2 dt 2 lc rgb '#555555' title 'Shannon bound 4^{-b}', \\\n"
    "     for [f=2:4] data using 'bits128':(sel(f, column('mse128'))) with points pt 7 ps 0.9 lc f notitle, \\\n"
    "     data using 'bits128':(sel(2, column('mse128'))):'type' with labels left offset char 0.7,0 \\\n"
    "          font ',9' noenhanced notitle, \\\n"
    "     data using 'bits128':(sel(3, column('mse128'))):'type' with labels left offset char 0.6,-0.6 \\\n"
    "          font ',9' noenhanced notitle, \\\n"
    "     data using 'bits128':(sel(4, column('mse128'))):'type' with labels right offset char -0.6,0.5 \\\n"
    "          font ',9' noenhanced notitle\n"
    "unset multiplot\n";

/* ------------------------------------------------------------ random numbers */

typedef struct {
    uint64_t s;
    int have;
    double spare;
} rng;

static uint64_t rng_u64(rng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(rng *r) { return ((double)(rng_u64(r) >> 11) + 0.5) * 0x1.0p-53; } /* (0, 1) */

static double rng_normal(rng *r) { /* Box-Muller */
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    const double u = rng_uniform(r), v = rng_uniform(r), rad = sqrt(-2.0 * log(u));
    r->spare = rad * sin(2.0 * M_PI * v);
    r->have = 1;
    return rad * cos(2.0 * M_PI * v);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ a codec instance
 *
 * Fixed codecs are stateless; kt* codecs carry the transform fitted for the
 * data at hand. One interface for both. */

typedef struct {
    const kv_codec *c;
    int n;
    bool kt;
    kvt_head h;       /* fitted transform (kt only) */
    size_t row_bytes; /* stride of one encoded vector */
} codec_inst;

/* cal: (n_cal, n) calibration vectors for a kt* fit (ignored otherwise). */
static int inst_init(codec_inst *ci, const kv_codec *c, int n, const float *cal, int n_cal) {
    memset(ci, 0, sizeof *ci);
    ci->c = c;
    ci->n = n;
    ci->kt = c->kt_bits > 0;
    ci->row_bytes = c->row_bytes(n);
    if (!ci->kt) return 0;
    if (kvt_fit(&ci->h, n, cal, n_cal, NULL, kv_codec_kt_budget_bits(c, n)) != 0) return -1;
    if (c->trellis && ktt_make(&ci->h) != 0) { /* ktt*: the same fit, trellis-coded (kv_trellis.h) */
        kvt_free(&ci->h);
        return -1;
    }
    if (ci->h.row_bytes > ci->row_bytes) ci->row_bytes = ci->h.row_bytes;
    return 0;
}

static void inst_free(codec_inst *ci) {
    if (ci->kt) kvt_free(&ci->h);
}

static void inst_encode(const codec_inst *ci, const float *x, uint8_t *dst) {
    if (ci->kt) kvt_encode(&ci->h, x, dst);
    else ci->c->encode(x, dst, ci->n);
}

static void inst_decode(const codec_inst *ci, const uint8_t *src, float *x) {
    if (ci->kt) kvt_decode(&ci->h, src, x);
    else ci->c->kern->decode(src, x, ci->n);
}

/* Query preparation (kt: qy = T^{-T} q · sigma, returns q·mu; else nothing). */
static float inst_prep(const codec_inst *ci, const float *q, float *qy) {
    return ci->kt ? kvt_prep_query(&ci->h, q, qy) : 0.0f;
}

/* q·x̂ by the fused kernel. */
static float inst_dot(const codec_inst *ci, const uint8_t *src, const float *q, const float *qy, float qmu) {
    return ci->kt ? kvt_dot(&ci->h, src, qy) + qmu : ci->c->kern->dot(src, q, ci->n);
}

/* ------------------------------------------------------------ results */

typedef struct {
    rotkv_kv_type t;
    const kv_codec *c;
    bool g_ok[N_DIMS];
    double g_bits[N_DIMS], g_mse[N_DIMS], g_ip[N_DIMS];
    bool timed;
    double enc_per_s, dot_per_s;
    bool r_ok;
    double r_bits;
    double r_nmse[2][2]; /* [K, V][rot off, on] */
} type_result;

typedef struct {
    int bits;
    double measured, exact, textbook, dev;
    bool ok;
} lloyd_row;

/* ------------------------------------------------------------ Lloyd-Max check */

static int nearest_level(const double *mid, int k, double x) {
    int lo = 0, hi = k - 1; /* number of midpoints <= x */
    while (lo < hi) {
        const int m = (lo + hi) / 2;
        if (mid[m] <= x) lo = m + 1;
        else hi = m;
    }
    return lo;
}

static bool lloyd_check(uint64_t seed, lloyd_row rows[4]) {
    bool all = true;
    for (int b = 1; b <= 4; b++) {
        double c[16], mid[15];
        const int k = 1 << b;
        lloyd_max_gaussian(b, c);
        for (int i = 0; i + 1 < k; i++) mid[i] = 0.5 * (c[i] + c[i + 1]);
        rng r = {seed, 0, 0};
        double se = 0;
        for (long s = 0; s < LLOYD_SAMPLES; s++) {
            const double x = rng_normal(&r), e = x - c[nearest_level(mid, k, x)];
            se += e * e;
        }
        lloyd_row *L = &rows[b - 1];
        L->bits = b;
        L->measured = se / LLOYD_SAMPLES;
        L->exact = lloyd_max_mse(c, k);
        L->textbook = max1960[b];
        L->dev = L->measured / L->textbook - 1.0;
        L->ok = fabs(L->dev) <= LLOYD_TOL;
        all = all && L->ok;
    }
    return all;
}

/* ------------------------------------------------------------ Gaussian vectors */

static float *gaussian_matrix(int rows, int n, uint64_t seed) {
    float *X = malloc(sizeof(float) * (size_t)rows * n);
    if (!X) return NULL;
    rng r = {seed, 0, 0};
    for (size_t i = 0; i < (size_t)rows * n; i++) X[i] = (float)rng_normal(&r);
    return X;
}

/* MSE per coordinate and normalized inner-product error of one codec on the
 * N vectors X (N, n); queries drawn from qseed. */
static int eval_gauss(const codec_inst *ci, const float *X, int N, uint64_t qseed, double *mse, double *ip) {
    const int n = ci->n;
    uint8_t *buf = malloc(ci->row_bytes);
    float *xh = malloc(sizeof(float) * n), *q = malloc(sizeof(float) * n), *qy = malloc(sizeof(float) * n);
    if (!buf || !xh || !q || !qy) {
        free(buf), free(xh), free(q), free(qy);
        return -1;
    }
    rng r = {qseed, 0, 0};
    double se = 0, sip = 0, sqx = 0;
    for (int v = 0; v < N; v++) {
        const float *x = X + (size_t)v * n;
        inst_encode(ci, x, buf);
        inst_decode(ci, buf, xh);
        double exact = 0;
        for (int i = 0; i < n; i++) {
            const double e = (double)xh[i] - x[i];
            se += e * e;
            q[i] = (float)rng_normal(&r);
            exact += (double)q[i] * x[i];
        }
        const float qmu = inst_prep(ci, q, qy);
        const double d = (double)inst_dot(ci, buf, q, qy, qmu) - exact;
        sip += d * d;
        sqx += exact * exact;
    }
    *mse = se / ((double)N * n);
    *ip = sqx > 0 ? sip / sqx : 0;
    free(buf), free(xh), free(q), free(qy);
    return 0;
}

/* Encoded vectors per second and fused dots per second over the first
 * min(N, TIMING_VECTORS) vectors of X (N, n), repeated for at least min_s. */
static int time_codec(const codec_inst *ci, const float *X, int N, const float *Qs, int n_q, double min_s,
                      double *enc_s, double *dot_s) {
    const int n = ci->n;
    if (N > TIMING_VECTORS) N = TIMING_VECTORS;
    uint8_t *E = malloc(ci->row_bytes * (size_t)N);
    float *qy = malloc(sizeof(float) * n);
    if (!E || !qy) {
        free(E), free(qy);
        return -1;
    }
    double t0 = now_s(), dt;
    long count = 0;
    do {
        for (int v = 0; v < N; v++) inst_encode(ci, X + (size_t)v * n, E + ci->row_bytes * v);
        count += N;
    } while ((dt = now_s() - t0) < min_s);
    *enc_s = count / dt;
    volatile float sink = 0;
    count = 0;
    t0 = now_s();
    int pass = 0;
    do {
        const float *q = Qs + (size_t)(pass++ % n_q) * n;
        const float qmu = inst_prep(ci, q, qy);
        float acc = 0;
        for (int v = 0; v < N; v++) acc += inst_dot(ci, E + ci->row_bytes * v, q, qy, qmu);
        sink += acc;
        count += N;
    } while ((dt = now_s() - t0) < min_s);
    *dot_s = count / dt;
    (void)sink;
    free(E), free(qy);
    return 0;
}

/* ------------------------------------------------------------ real K and V */

typedef struct {
    int n_layer, n_head_kv, hd, n_tok, n_chunks, chunk;
    float *K, *V; /* (n_layer, n_head_kv, n_tok, hd): per (layer, head), the vectors in text order */
} real_data;

static float *real_at(const real_data *rd, float *base, int layer, int head) {
    return base + (((size_t)layer * rd->n_head_kv + head) * rd->n_tok) * rd->hd;
}

/* Runs the model over the text and records every K and V head vector. */
static int record_real(const char *model_path, const char *text_path, int n_ctx, int n_threads, real_data *rd,
                       uint64_t *rot_seed) {
    memset(rd, 0, sizeof *rd);
    cli_opts o;
    memset(&o, 0, sizeof o);
    o.model = model_path;
    o.file = text_path;
    int rc = -1;
    size_t len = 0;
    char *text = NULL;
    rotkv_token *toks = NULL;
    rotkv_context *ctx = NULL;
    float *k = NULL, *v = NULL;
    rotkv_model *m = cli_load_model(&o, false, NULL);
    if (!m) return -1;
    text = cli_read_text(&o, &len);
    if (!text) goto done;
    int32_t n_tok = 0;
    toks = cli_tokenize(m, text, len, true, false, &n_tok);
    if (!toks) goto done;
    if (n_tok < 4) {
        fprintf(stderr, "rotkv kv-eval: '%s' has %d tokens; at least 4 are needed (half fit, half evaluation)\n",
                text_path, n_tok);
        goto done;
    }
    rotkv_model_info mi;
    rotkv_model_get_info(m, &mi);
    if (n_ctx <= 0) n_ctx = 512;
    if (mi.n_ctx_train > 0 && (uint32_t)n_ctx > mi.n_ctx_train) n_ctx = (int)mi.n_ctx_train;
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)(n_ctx < 512 ? n_ctx : 512);
    cp.n_threads = n_threads;
    cp.type_k = cp.type_v = ROTKV_KV_F32;
    cp.rot_k = cp.rot_v = ROTKV_ROT_OFF;
    cp.kv_center = ROTKV_ROT_OFF;
    cp.kv_sink = cp.kv_window = 0;
    rotkv_error err = {0};
    if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv kv-eval: %s\n", err.msg);
        goto done;
    }
    *rot_seed = cp.rot_seed;
    rd->n_layer = (int)mi.n_layer;
    rd->n_head_kv = (int)mi.n_head_kv;
    rd->hd = (int)mi.head_dim;
    rd->n_tok = n_tok;
    rd->chunk = n_ctx;
    const size_t row = (size_t)rd->n_head_kv * rd->hd, total = (size_t)rd->n_layer * row * n_tok;
    rd->K = malloc(sizeof(float) * total);
    rd->V = malloc(sizeof(float) * total);
    k = malloc(sizeof(float) * row);
    v = malloc(sizeof(float) * row);
    if (!rd->K || !rd->V || !k || !v) {
        fprintf(stderr, "rotkv kv-eval: out of memory recording %zu K and V values\n", total);
        goto done;
    }
    const rotkv_token bos = rotkv_token_bos(m);
    const bool add_bos = rotkv_add_bos(m) && bos >= 0;
    const kv_cache *kv = context_kv(ctx);
    fprintf(stderr, "rotkv kv-eval: recording K and V over %d tokens in chunks of %d\n", n_tok, n_ctx);
    for (int start = 0; start < n_tok; start += n_ctx) {
        const int n = n_tok - start < n_ctx ? n_tok - start : n_ctx;
        rotkv_token *chunk = toks + start;
        const rotkv_token saved = chunk[0];
        if (add_bos) chunk[0] = bos; /* every chunk starts as a text does (as rotkv perplexity) */
        rotkv_seq_clear(ctx, 0);
        rotkv_batch b = {.n_tokens = n, .token = chunk};
        const rotkv_status st = rotkv_decode(ctx, &b, &err);
        chunk[0] = saved;
        if (st != ROTKV_OK) {
            fprintf(stderr, "rotkv kv-eval: %s\n", err.msg);
            goto done;
        }
        for (int l = 0; l < rd->n_layer; l++)
            for (int p = 0; p < n; p++) {
                kv_cache_load(kv, 0, (uint32_t)l, (uint32_t)p, k, v);
                for (int h = 0; h < rd->n_head_kv; h++) {
                    const size_t at = (size_t)(start + p) * rd->hd;
                    memcpy(real_at(rd, rd->K, l, h) + at, k + (size_t)h * rd->hd, sizeof(float) * rd->hd);
                    memcpy(real_at(rd, rd->V, l, h) + at, v + (size_t)h * rd->hd, sizeof(float) * rd->hd);
                }
            }
        rd->n_chunks++;
    }
    rc = 0;
done:
    if (rc != 0) {
        free(rd->K), free(rd->V);
        rd->K = rd->V = NULL;
    }
    free(k), free(v), free(toks), free(text);
    rotkv_context_free(ctx);
    rotkv_model_free(m);
    return rc;
}

/* nMSE of a codec on one recorded set (K or V, rotated or not): per (layer,
 * head) a kt* transform is fitted on the first half of the positions, and
 * every type is evaluated on the second half. */
static int eval_real(const kv_codec *c, const real_data *rd, float *data, double *nmse) {
    const int hd = rd->hd, n_fit = rd->n_tok / 2;
    uint8_t *buf = NULL;
    float *xh = malloc(sizeof(float) * hd);
    double se = 0, sx = 0;
    int rc = -1;
    if (!xh) return -1;
    for (int l = 0; l < rd->n_layer; l++)
        for (int h = 0; h < rd->n_head_kv; h++) {
            const float *base = real_at(rd, data, l, h);
            codec_inst ci;
            if (inst_init(&ci, c, hd, base, n_fit) != 0) goto done;
            uint8_t *nb = realloc(buf, ci.row_bytes);
            if (!nb) {
                inst_free(&ci);
                goto done;
            }
            buf = nb;
            for (int t = n_fit; t < rd->n_tok; t++) {
                const float *x = base + (size_t)t * hd;
                inst_encode(&ci, x, buf);
                inst_decode(&ci, buf, xh);
                for (int i = 0; i < hd; i++) {
                    const double e = (double)xh[i] - x[i];
                    se += e * e;
                    sx += (double)x[i] * x[i];
                }
            }
            inst_free(&ci);
        }
    *nmse = sx > 0 ? se / sx : 0;
    rc = 0;
done:
    free(buf), free(xh);
    return rc;
}

/* ------------------------------------------------------------ output */

static void print_md(FILE *fp, const type_result *R, int n_types, const lloyd_row *L, int N, int n_cal,
                     const real_data *rd, const char *model, const char *text) {
    fprintf(fp, "## Lloyd-Max codebooks on N(0,1) scalars (%d Monte-Carlo samples)\n\n", LLOYD_SAMPLES);
    fprintf(fp, "| bits | measured MSE | exact integral | textbook (Max 1960) | deviation | within 2%% |\n");
    fprintf(fp, "|------|--------------|----------------|---------------------|-----------|-----------|\n");
    for (int b = 0; b < 4; b++)
        fprintf(fp, "| %d | %.6f | %.6f | %g | %+.2f%% | %s |\n", L[b].bits, L[b].measured, L[b].exact, L[b].textbook,
                100 * L[b].dev, L[b].ok ? "yes" : "NO");
    fprintf(fp, "\n## Gaussian vectors: %d vectors of i.i.d. N(0,1) coordinates per dimension\n\n", N);
    fprintf(fp, "kt* types: transform fitted on a separate calibration sample of %d N(0,1) vectors, identity metric.\n"
                "ratio = MSE / 4^-bits (Shannon bound of i.i.d. unit Gaussian coordinates). "
                "IP err = E[(q.x^ - q.x)^2] / E[(q.x)^2], q ~ N(0,I), fused dot.\n"
                "Throughput at n = %d, one thread, %d vectors (cache-resident) encoded or dotted repeatedly.\n\n",
            n_cal, gauss_dims[TIMING_DIM], N < TIMING_VECTORS ? N : TIMING_VECTORS);
    fprintf(fp, "| type | bits@64 | MSE@64 | IP err@64 | ratio@64 | bits@128 | MSE@128 | IP err@128 | ratio@128 "
                "| encode Mvec/s | dot Mdot/s |\n");
    fprintf(fp, "|------|---------|--------|-----------|----------|----------|---------|------------|-----------"
                "|---------------|------------|\n");
    for (int i = 0; i < n_types; i++) {
        const type_result *r = &R[i];
        fprintf(fp, "| %s |", r->c->name);
        for (int d = 0; d < N_DIMS; d++) {
            if (!r->g_ok[d]) {
                fprintf(fp, " n/a | n/a | n/a | n/a |");
                continue;
            }
            fprintf(fp, " %g | %.3e | %.3e | %.4g |", r->g_bits[d], r->g_mse[d], r->g_ip[d],
                    r->g_mse[d] / pow(4.0, -r->g_bits[d]));
        }
        if (r->timed) fprintf(fp, " %.3g | %.3g |\n", r->enc_per_s / 1e6, r->dot_per_s / 1e6);
        else fprintf(fp, " n/a | n/a |\n");
    }
    if (!rd) return;
    fprintf(fp, "\n## Real K and V vectors: %s on %s\n\n", model, text);
    fprintf(fp, "%d tokens in %d chunk(s) of up to %d, %d layers x %d KV heads, head_dim %d; f32 cache, attn-rot off, "
                "centering off.\nPer (layer, KV head): kt* transforms fitted on the first %d positions (identity metric); "
                "every type evaluated on the last %d.\nnMSE = sum |x^ - x|^2 / sum |x|^2; \"rot on\": attn-rot applied "
                "before encoding.\n\n",
            rd->n_tok, rd->n_chunks, rd->chunk, rd->n_layer, rd->n_head_kv, rd->hd, rd->n_tok / 2,
            rd->n_tok - rd->n_tok / 2);
    fprintf(fp, "| type | bits@%d | K nMSE rot off | K nMSE rot on | V nMSE rot off | V nMSE rot on |\n", rd->hd);
    fprintf(fp, "|------|---------|----------------|---------------|----------------|---------------|\n");
    for (int i = 0; i < n_types; i++) {
        const type_result *r = &R[i];
        if (!r->r_ok) {
            fprintf(fp, "| %s | n/a | n/a | n/a | n/a | n/a |\n", r->c->name);
            continue;
        }
        fprintf(fp, "| %s | %g | %.3e | %.3e | %.3e | %.3e |\n", r->c->name, r->r_bits, r->r_nmse[0][0],
                r->r_nmse[0][1], r->r_nmse[1][0], r->r_nmse[1][1]);
    }
}

static void print_csv(FILE *fp, const type_result *R, int n_types, const lloyd_row *L, int N, int n_cal,
                      const real_data *rd, const char *model, const char *text) {
    for (int b = 0; b < 4; b++)
        fprintf(fp, "# lloyd-max bits=%d measured=%.6f exact=%.6f textbook=%g deviation=%+.2f%% %s\n", L[b].bits,
                L[b].measured, L[b].exact, L[b].textbook, 100 * L[b].dev, L[b].ok ? "ok" : "FAIL");
    fprintf(fp, "# gaussian: %d vectors per dimension; kt* fitted on %d separate N(0,1) vectors, identity metric\n", N,
            n_cal);
    if (rd)
        fprintf(fp, "# real: %s on %s, %d tokens; kt* fitted on the first %d positions per (layer, head), "
                    "all types evaluated on the last %d\n",
                model, text, rd->n_tok, rd->n_tok / 2, rd->n_tok - rd->n_tok / 2);
    fprintf(fp, "type,bits64,mse64,ip64,ratio64,bits128,mse128,ip128,ratio128,encode_per_s,dot_per_s,"
                "real_bits,k_nmse_rot_off,k_nmse_rot_on,v_nmse_rot_off,v_nmse_rot_on\n");
    for (int i = 0; i < n_types; i++) {
        const type_result *r = &R[i];
        fprintf(fp, "%s", r->c->name);
        for (int d = 0; d < N_DIMS; d++) {
            if (r->g_ok[d])
                fprintf(fp, ",%g,%.6g,%.6g,%.6g", r->g_bits[d], r->g_mse[d], r->g_ip[d],
                        r->g_mse[d] / pow(4.0, -r->g_bits[d]));
            else fprintf(fp, ",,,,");
        }
        if (r->timed) fprintf(fp, ",%.4g,%.4g", r->enc_per_s, r->dot_per_s);
        else fprintf(fp, ",,");
        if (r->r_ok)
            fprintf(fp, ",%g,%.6g,%.6g,%.6g,%.6g\n", r->r_bits, r->r_nmse[0][0], r->r_nmse[0][1], r->r_nmse[1][0],
                    r->r_nmse[1][1]);
        else fprintf(fp, ",,,,,\n");
    }
}

/* ------------------------------------------------------------ chart */

static const char *gnuplot_bin(void) {
    const char *g = getenv("ROTKV_GNUPLOT");
    return g && *g ? g : "gnuplot";
}

static bool gnuplot_available(const char *gp) {
    if (strchr(gp, '\'')) return false;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "command -v '%s' >/dev/null 2>&1", gp);
    return system(cmd) == 0;
}

static bool gnuplot_has_pngcairo(const char *gp) {
    char cmd[1024], out[64] = "";
    snprintf(cmd, sizeof cmd, "'%s' -e \"print strstrt(GPVAL_TERMINALS, 'pngcairo') > 0\" 2>&1", gp);
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    if (!fgets(out, sizeof out, p)) out[0] = 0;
    pclose(p);
    return out[0] == '1';
}

/* A gnuplot single-quoted string: ' doubled. */
static void put_gp_string(FILE *fp, const char *s) {
    fputc('\'', fp);
    for (; *s; s++) {
        if (*s == '\'') fputc('\'', fp);
        fputc(*s, fp);
    }
    fputc('\'', fp);
}

static bool ends_with(const char *s, const char *suf) {
    const size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Writes the CSV to a temporary file and runs the chart script on it.
 * Returns 0 when the chart file was written. */
static int draw_chart(const char *path, const type_result *R, int n_types, const lloyd_row *L, int N, int n_cal) {
    const char *gp = gnuplot_bin();
    if (!gnuplot_available(gp)) {
        fprintf(stderr, "rotkv kv-eval: gnuplot ('%s') not found: no chart drawn (install it: apt-get install "
                        "gnuplot-nox)\n", gp);
        return -1;
    }
    char out[4096];
    snprintf(out, sizeof out, "%s", path);
    const char *term = "svg";
    if (ends_with(path, ".png")) {
        if (gnuplot_has_pngcairo(gp)) term = "pngcairo";
        else {
            snprintf(out, sizeof out, "%.*s.svg", (int)(strlen(path) - 4), path);
            fprintf(stderr, "rotkv kv-eval: gnuplot has no pngcairo terminal; writing SVG to %s instead\n", out);
        }
    }
    const char *tmpdir = getenv("TMPDIR");
    char data[4096];
    snprintf(data, sizeof data, "%s/rotkv-kv-eval-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    const int fd = mkstemp(data);
    if (fd < 0) {
        fprintf(stderr, "rotkv kv-eval: cannot create a temporary file in %s: %s\n", tmpdir ? tmpdir : "/tmp",
                strerror(errno));
        return -1;
    }
    FILE *df = fdopen(fd, "w");
    if (!df) {
        close(fd);
        unlink(data);
        return -1;
    }
    print_csv(df, R, n_types, L, N, n_cal, NULL, NULL, NULL);
    const bool wrote = fclose(df) == 0;
    int rc = -1;
    remove(out);
    FILE *p = wrote ? popen(gp, "w") : NULL;
    if (p) {
        fputs("data = ", p);
        put_gp_string(p, data);
        fputs("\nout = ", p);
        put_gp_string(p, out);
        fprintf(p, "\nterm = '%s'\n", term);
        fputs(chart_script, p);
        fputs("set output\n", p);
        const int st = pclose(p);
        struct stat sb;
        if (st == 0 && stat(out, &sb) == 0 && sb.st_size > 0) rc = 0;
        else fprintf(stderr, "rotkv kv-eval: gnuplot failed (status %d): no chart in %s\n", st, out);
    } else {
        fprintf(stderr, "rotkv kv-eval: cannot run gnuplot\n");
    }
    unlink(data);
    if (rc == 0) fprintf(stderr, "rotkv kv-eval: chart written to %s\n", out);
    return rc;
}

/* ------------------------------------------------------------ main */

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: rotkv kv-eval [-ctk T,T,..|all] [--vectors N] [-m MODEL -f TEXT [-c CTX] [-t N]]\n"
            "                     [--chart FILE.svg|FILE.png] [-o md|csv] [--seed S] [--time-ms 40] [--chart-script]\n"
            "  distortion of every KV cache type (default all) vs its bits per value:\n"
            "  - MSE, inner-product error and MSE / 4^-bits on N vectors of N(0,1) coordinates\n"
            "    (n = 64 and 128; default N = 20000), encode and fused-dot throughput at n = 128;\n"
            "  - with -m/-f: normalized MSE on the model's real K and V vectors over the text\n"
            "    (chunks of -c tokens, default 512), attn-rot off and on; kt* fitted on the first\n"
            "    half of the positions, every type evaluated on the second half;\n"
            "  - a Monte-Carlo check of the Lloyd-Max distortions against Max (1960), 2%%.\n"
            "  --time-ms: minimum time of each throughput figure (whole passes over the vectors);\n"
            "  --chart draws MSE vs bits with gnuplot (ROTKV_GNUPLOT overrides the binary);\n"
            "  --chart-script prints its gnuplot script (bench/kv-eval-chart.gp) and exits.\n");
}

static bool parse_types(char *arg, bool sel[ROTKV_KV_TYPE_COUNT]) {
    memset(sel, 0, sizeof(bool) * ROTKV_KV_TYPE_COUNT);
    if (!strcmp(arg, "all")) {
        for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++) sel[t] = kv_codec_get((rotkv_kv_type)t) != NULL;
        return true;
    }
    char *save = NULL;
    int n = 0;
    for (char *s = strtok_r(arg, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
        const int t = cli_kv_type_lab(s);
        if (t < 0) return false;
        sel[t] = true;
        n++;
    }
    return n > 0;
}

static bool parse_pos_int(const char *flag, const char *s, long max, long *out) {
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 1 || v > max) {
        fprintf(stderr, "rotkv kv-eval: %s expects an integer in 1..%ld, got '%s'\n", flag, max, s);
        return false;
    }
    *out = v;
    return true;
}

int cmd_kv_eval(int argc, char **argv) {
    char all[] = "all";
    char *types_arg = all;
    const char *model = NULL, *text = NULL, *chart = NULL, *fmt = "md";
    long N = 20000, n_ctx = 0, n_threads = 0, seed = 1, time_ms = TIMING_MS;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--chart-script")) {
            fputs(chart_script, stdout);
            return 0;
        }
        char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "rotkv kv-eval: option %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "-ctk") || !strcmp(a, "--cache-type") || !strcmp(a, "--types")) types_arg = v;
        else if (!strcmp(a, "--vectors")) {
            if (!parse_pos_int(a, v, 10000000, &N)) return 2;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) text = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            if (!parse_pos_int(a, v, 1 << 20, &n_ctx)) return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!parse_pos_int(a, v, 512, &n_threads)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!parse_pos_int(a, v, 0x7fffffffL, &seed)) return 2;
        } else if (!strcmp(a, "--time-ms")) {
            if (!parse_pos_int(a, v, 600000, &time_ms)) return 2;
        } else if (!strcmp(a, "--chart")) chart = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) fmt = v;
        else {
            fprintf(stderr, "rotkv kv-eval: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (strcmp(fmt, "md") && strcmp(fmt, "csv")) {
        fprintf(stderr, "rotkv kv-eval: -o expects md or csv\n");
        return 2;
    }
    if (chart && !ends_with(chart, ".svg") && !ends_with(chart, ".png")) {
        fprintf(stderr, "rotkv kv-eval: --chart expects a file name ending in .svg or .png, got '%s'\n", chart);
        return 2;
    }
    if (!model != !text) {
        fprintf(stderr, "rotkv kv-eval: real-data mode needs both -m MODEL and -f TEXT\n");
        return 2;
    }
    bool sel[ROTKV_KV_TYPE_COUNT];
    if (!parse_types(types_arg, sel)) {
        fprintf(stderr, "rotkv kv-eval: -ctk expects a comma list of KV cache types, or all\n");
        return 2;
    }
    type_result R[ROTKV_KV_TYPE_COUNT];
    int n_types = 0;
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++)
        if (sel[t]) {
            memset(&R[n_types], 0, sizeof R[n_types]);
            R[n_types].t = (rotkv_kv_type)t;
            R[n_types].c = kv_codec_get((rotkv_kv_type)t);
            n_types++;
        }

    int rc = 1;
    real_data rd = {0};
    float *rot_k = NULL, *rot_v = NULL;
    rotation rot = {0};
    float *X[N_DIMS] = {0}, *Xcal[N_DIMS] = {0}, *Qs = NULL;
    const int n_cal = N > CAL_MIN ? (int)N : CAL_MIN, n_q = 16;

    /* real data first: a bad model or text fails before the long part */
    if (model) {
        uint64_t rot_seed = 0;
        if (record_real(model, text, (int)n_ctx, (int)n_threads, &rd, &rot_seed) != 0) goto done;
        const size_t total = (size_t)rd.n_layer * rd.n_head_kv * rd.n_tok * rd.hd;
        rot_k = malloc(sizeof(float) * total);
        rot_v = malloc(sizeof(float) * total);
        if (!rot_k || !rot_v || rotation_init(&rot, rd.hd, rot_seed) != 0) {
            fprintf(stderr, "rotkv kv-eval: out of memory\n");
            goto done;
        }
        memcpy(rot_k, rd.K, sizeof(float) * total);
        memcpy(rot_v, rd.V, sizeof(float) * total);
        for (size_t i = 0; i < total; i += rd.hd) {
            rotation_apply(&rot, rot_k + i);
            rotation_apply(&rot, rot_v + i);
        }
    }

    lloyd_row L[4];
    const bool lloyd_ok = lloyd_check((uint64_t)seed * 7919 + 17, L);

    for (int d = 0; d < N_DIMS; d++) {
        const int n = gauss_dims[d];
        X[d] = gaussian_matrix((int)N, n, (uint64_t)seed * 1000003 + (uint64_t)n);
        Xcal[d] = gaussian_matrix(n_cal, n, (uint64_t)seed * 1000033 + (uint64_t)n + 1);
        if (!X[d] || !Xcal[d]) {
            fprintf(stderr, "rotkv kv-eval: out of memory for %ld vectors of %d values\n", N, n);
            goto done;
        }
    }
    Qs = gaussian_matrix(n_q, gauss_dims[TIMING_DIM], (uint64_t)seed * 1000037);
    if (!Qs) goto done;

    for (int i = 0; i < n_types; i++) {
        type_result *r = &R[i];
        const kv_codec *c = r->c;
        for (int d = 0; d < N_DIMS; d++) {
            const int n = gauss_dims[d];
            if (n % c->blck) continue;
            codec_inst ci;
            if (inst_init(&ci, c, n, Xcal[d], n_cal) != 0 ||
                eval_gauss(&ci, X[d], (int)N, (uint64_t)seed * 1000039 + (uint64_t)n, &r->g_mse[d], &r->g_ip[d]) != 0) {
                fprintf(stderr, "rotkv kv-eval: out of memory evaluating %s\n", c->name);
                inst_free(&ci);
                goto done;
            }
            r->g_ok[d] = true;
            r->g_bits[d] = kv_codec_bits(c, n);
            if (d == TIMING_DIM) {
                if (time_codec(&ci, X[d], (int)N, Qs, n_q, time_ms * 1e-3, &r->enc_per_s, &r->dot_per_s) != 0) {
                    inst_free(&ci);
                    goto done;
                }
                r->timed = true;
            }
            inst_free(&ci);
        }
        if (model && rd.hd % c->blck == 0) {
            float *sets[2][2] = {{rd.K, rot_k}, {rd.V, rot_v}};
            for (int kind = 0; kind < 2; kind++)
                for (int on = 0; on < 2; on++)
                    if (eval_real(c, &rd, sets[kind][on], &r->r_nmse[kind][on]) != 0) {
                        fprintf(stderr, "rotkv kv-eval: out of memory evaluating %s on real data\n", c->name);
                        goto done;
                    }
            r->r_ok = true;
            r->r_bits = kv_codec_bits(c, rd.hd);
        }
        fprintf(stderr, "rotkv kv-eval: %s done\n", c->name);
    }

    if (!strcmp(fmt, "md")) print_md(stdout, R, n_types, L, (int)N, n_cal, model ? &rd : NULL, model, text);
    else print_csv(stdout, R, n_types, L, (int)N, n_cal, model ? &rd : NULL, model, text);
    fflush(stdout);
    rc = 0;
    if (!lloyd_ok) {
        fprintf(stderr, "rotkv kv-eval: Lloyd-Max check FAILED: a measured distortion is more than 2%% off Max's\n");
        rc = 1;
    }
    if (chart && draw_chart(chart, R, n_types, L, (int)N, n_cal) != 0) rc = 1;
done:
    for (int d = 0; d < N_DIMS; d++) free(X[d]), free(Xcal[d]);
    free(Qs);
    free(rd.K), free(rd.V), free(rot_k), free(rot_v);
    rotation_free(&rot);
    return rc;
}
