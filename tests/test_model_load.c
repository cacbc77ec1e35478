/* test_model_load.c — model loading and decoding on a tiny llama GGUF built by
 * the test itself (tests/gguf_writer.h): 2 layers, n_embd 16, 4 query heads on
 * 2 KV heads of size 8 (key_length != n_embd / n_head, so a transposed
 * attn_q.weight has a different shape), n_ff 32, a 16-token "llama" vocabulary,
 * all tensors F32 with seeded random values.
 *
 *  - the model loads; rotkv_decode gives finite logits that match a naive
 *    double-precision reference forward pass (RoPE, causal GQA attention,
 *    SwiGLU) within 1e-4, for a whole prompt and token by token;
 *  - broken variants are refused with the right status and a message naming
 *    the tensor or key: wrong shape, missing tensor, missing key, unsupported
 *    architecture, head_count not a multiple of head_count_kv, unsupported
 *    tensor type, extra dimension;
 *  - rotkv_decode refuses token ids outside the vocabulary, positions that do
 *    not continue the sequence and tokens beyond n_ctx, without crashing or
 *    changing the sequence.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_writer.h"
#include "quant.h"
#include "rotkv.h"
#include "testutil.h"

#define N_EMBD 16
#define N_VOCAB 16
#define N_LAYER 2
#define N_HEAD 4
#define N_HEAD_KV 2
#define HEAD_DIM 8
#define N_FF 32
#define N_CTX_TRAIN 64
#define Q_DIM (N_HEAD * HEAD_DIM)
#define KV_DIM (N_HEAD_KV * HEAD_DIM)
#define RMS_EPS 1e-5f
#define ROPE_BASE 10000.0f

/* ------------------------------------------------------------ the weights */

typedef struct {
    float attn_norm[N_EMBD], ffn_norm[N_EMBD];
    float wq[Q_DIM * N_EMBD], wk[KV_DIM * N_EMBD], wv[KV_DIM * N_EMBD], wo[N_EMBD * Q_DIM];
    float w_gate[N_FF * N_EMBD], w_up[N_FF * N_EMBD], w_down[N_EMBD * N_FF];
} ref_layer;

typedef struct {
    float tok_embd[N_VOCAB * N_EMBD], output_norm[N_EMBD], output[N_VOCAB * N_EMBD];
    ref_layer l[N_LAYER];
} ref_model;

static ref_model W;

static void fill(float *x, size_t n, uint64_t *rng, float scale, float offset) {
    for (size_t i = 0; i < n; i++) x[i] = offset + scale * test_rand_normal(rng);
}

static void init_weights(void) {
    uint64_t rng = 0x70de1;
    fill(W.tok_embd, N_VOCAB * N_EMBD, &rng, 1.0f, 0);
    fill(W.output_norm, N_EMBD, &rng, 0.1f, 1.0f);
    fill(W.output, N_VOCAB * N_EMBD, &rng, 0.25f, 0);
    for (int l = 0; l < N_LAYER; l++) {
        ref_layer *L = &W.l[l];
        fill(L->attn_norm, N_EMBD, &rng, 0.1f, 1.0f);
        fill(L->ffn_norm, N_EMBD, &rng, 0.1f, 1.0f);
        fill(L->wq, sizeof L->wq / 4, &rng, 0.5f, 0);
        fill(L->wk, sizeof L->wk / 4, &rng, 0.5f, 0);
        fill(L->wv, sizeof L->wv / 4, &rng, 0.25f, 0);
        fill(L->wo, sizeof L->wo / 4, &rng, 0.25f, 0);
        fill(L->w_gate, sizeof L->w_gate / 4, &rng, 0.25f, 0);
        fill(L->w_up, sizeof L->w_up / 4, &rng, 0.25f, 0);
        fill(L->w_down, sizeof L->w_down / 4, &rng, 0.25f, 0);
    }
}

/* ------------------------------------------------------- building the file */

typedef struct {
    const char *arch;          /* default "llama" */
    const char *omit_key;      /* a key left out */
    const char *omit_tensor;   /* a tensor left out */
    const char *swap_tensor;   /* a 2-D tensor written with ne0 and ne1 swapped */
    const char *extra_dim_tensor; /* a tensor written as [ne0, ne1 / 2, 2] */
    const char *retype_tensor; /* a tensor whose type id is patched to `retype` */
    uint32_t retype;
    uint32_t n_head_kv;        /* default N_HEAD_KV */
    bool tied;                 /* no output.weight (tied to token_embd) */
} model_opts;

static void add_tensor(gguf_builder *g, const model_opts *o, const char *name, const float *data, uint64_t ne0,
                       uint64_t ne1) {
    if (o->omit_tensor && strcmp(name, o->omit_tensor) == 0) return;
    if (o->swap_tensor && strcmp(name, o->swap_tensor) == 0) {
        uint64_t t = ne0;
        ne0 = ne1;
        ne1 = t;
    }
    if (o->extra_dim_tensor && strcmp(name, o->extra_dim_tensor) == 0)
        gb_tensor_f32(g, name, 3, (uint64_t[]){ne0, ne1 / 2, 2}, data);
    else if (ne1 == 0)
        gb_tensor_f32(g, name, 1, (uint64_t[]){ne0}, data);
    else
        gb_tensor_f32(g, name, 2, (uint64_t[]){ne0, ne1}, data);
}

static void kv_u32(gguf_builder *g, const model_opts *o, const char *arch, const char *suffix, uint32_t v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (o->omit_key && strcmp(key, o->omit_key) == 0) return;
    gb_kv_u32(g, key, v);
}

static void kv_f32(gguf_builder *g, const model_opts *o, const char *arch, const char *suffix, float v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (o->omit_key && strcmp(key, o->omit_key) == 0) return;
    gb_kv_f32(g, key, v);
}

static const char *const VOCAB[N_VOCAB] = {
    "<unk>", "<s>", "</s>", "\u2581", "\u2581a", "\u2581b", "a", "b",
    "c", "ab", "\u2581ab", "<0x0A>", "<0x20>", "d", "e", "\u2581the"};

/* Builds the model GGUF as described by o; returns the bytes (caller frees). */
static uint8_t *build_model(const model_opts *o, size_t *len) {
    const char *arch = o->arch ? o->arch : "llama";
    gguf_builder g;
    gb_init(&g, 3);
    gb_kv_str(&g, "general.architecture", arch);
    gb_kv_str(&g, "general.name", "tiny test llama");
    kv_u32(&g, o, arch, "context_length", N_CTX_TRAIN);
    kv_u32(&g, o, arch, "embedding_length", N_EMBD);
    kv_u32(&g, o, arch, "block_count", N_LAYER);
    kv_u32(&g, o, arch, "feed_forward_length", N_FF);
    kv_u32(&g, o, arch, "attention.head_count", N_HEAD);
    kv_u32(&g, o, arch, "attention.head_count_kv", o->n_head_kv ? o->n_head_kv : N_HEAD_KV);
    kv_u32(&g, o, arch, "attention.key_length", HEAD_DIM);
    kv_u32(&g, o, arch, "attention.value_length", HEAD_DIM);
    kv_u32(&g, o, arch, "rope.dimension_count", HEAD_DIM);
    kv_f32(&g, o, arch, "attention.layer_norm_rms_epsilon", RMS_EPS);
    kv_f32(&g, o, arch, "rope.freq_base", ROPE_BASE);
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    gb_kv_arr_str(&g, "tokenizer.ggml.tokens", N_VOCAB, VOCAB);
    float scores[N_VOCAB];
    int32_t types[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) {
        scores[i] = -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : (i == 11 || i == 12) ? 6 : 1;
    }
    gb_kv_arr(&g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, N_VOCAB, scores);
    gb_kv_arr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, N_VOCAB, types);
    gb_kv_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    gb_kv_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    gb_kv_u32(&g, "tokenizer.ggml.unknown_token_id", 0);

    add_tensor(&g, o, "token_embd.weight", W.tok_embd, N_EMBD, N_VOCAB);
    add_tensor(&g, o, "output_norm.weight", W.output_norm, N_EMBD, 0);
    if (!o->tied) add_tensor(&g, o, "output.weight", W.output, N_EMBD, N_VOCAB);
    for (int l = 0; l < N_LAYER; l++) {
        const ref_layer *L = &W.l[l];
        char n[64];
#define T(s, data, ne0, ne1) (snprintf(n, sizeof n, "blk.%d." s, l), add_tensor(&g, o, n, data, ne0, ne1))
        T("attn_norm.weight", L->attn_norm, N_EMBD, 0);
        T("attn_q.weight", L->wq, N_EMBD, Q_DIM);
        T("attn_k.weight", L->wk, N_EMBD, KV_DIM);
        T("attn_v.weight", L->wv, N_EMBD, KV_DIM);
        T("attn_output.weight", L->wo, Q_DIM, N_EMBD);
        T("ffn_norm.weight", L->ffn_norm, N_EMBD, 0);
        T("ffn_gate.weight", L->w_gate, N_EMBD, N_FF);
        T("ffn_up.weight", L->w_up, N_EMBD, N_FF);
        T("ffn_down.weight", L->w_down, N_FF, N_EMBD);
#undef T
    }
    uint8_t *buf = gb_finish(&g, len);
    if (o->retype_tensor)
        for (size_t i = 0; i < g.n_t; i++)
            if (strcmp(g.t[i].name, o->retype_tensor) == 0) gw_patch_u32(buf, g.t[i].type_at, o->retype);
    gb_free(&g);
    return buf;
}

/* Writes the model to a fresh temp file and loads it. */
static rotkv_status load_variant(const model_opts *o, rotkv_model **m, rotkv_error *err) {
    size_t len;
    uint8_t *buf = build_model(o, &len);
    char path[] = "/tmp/rotkv_test_model_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_true(gw_write_file(path, buf, len));
    free(buf);
    memset(err, 0, sizeof *err);
    rotkv_model_params mp = rotkv_model_default_params();
    rotkv_status st = rotkv_model_load(path, &mp, m, err);
    unlink(path);
    return st;
}

/* ------------------------------------------------- reference forward pass */

static void rmsnorm_ref(double *out, const double *x, const float *w, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + RMS_EPS);
    for (int i = 0; i < n; i++) out[i] = x[i] * s * w[i];
}

/* y[r] = sum_i W[r][i] x[i]; W has rows of n_in values (GGUF ne0 = n_in). */
static void matvec_ref(double *y, const float *w, const double *x, int n_in, int n_out) {
    for (int r = 0; r < n_out; r++) {
        double s = 0;
        for (int i = 0; i < n_in; i++) s += (double)w[(size_t)r * n_in + i] * x[i];
        y[r] = s;
    }
}

/* llama.cpp's "normal" RoPE: rotates the pairs (x[2i], x[2i+1]). */
static void rope_ref(double *x, int pos) {
    for (int i = 0; i < HEAD_DIM / 2; i++) {
        double theta = pos * pow(ROPE_BASE, -2.0 * i / HEAD_DIM);
        double c = cos(theta), s = sin(theta), x0 = x[2 * i], x1 = x[2 * i + 1];
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x0 * s + x1 * c;
    }
}

/* Logits of every position of tokens[0..n) (n <= 16), sequence starting at 0. */
static void forward_ref(const rotkv_token *tokens, int n, double logits[][N_VOCAB]) {
    static double x[16][N_EMBD], kc[N_LAYER][16][KV_DIM], vc[N_LAYER][16][KV_DIM];
    for (int t = 0; t < n; t++)
        for (int i = 0; i < N_EMBD; i++) x[t][i] = W.tok_embd[(size_t)tokens[t] * N_EMBD + i];
    for (int t = 0; t < n; t++) { /* token by token, causal */
        for (int l = 0; l < N_LAYER; l++) {
            const ref_layer *L = &W.l[l];
            double xb[N_EMBD], q[Q_DIM], att[Q_DIM], o[N_EMBD];
            rmsnorm_ref(xb, x[t], L->attn_norm, N_EMBD);
            matvec_ref(q, L->wq, xb, N_EMBD, Q_DIM);
            matvec_ref(kc[l][t], L->wk, xb, N_EMBD, KV_DIM);
            matvec_ref(vc[l][t], L->wv, xb, N_EMBD, KV_DIM);
            for (int h = 0; h < N_HEAD; h++) rope_ref(q + h * HEAD_DIM, t);
            for (int h = 0; h < N_HEAD_KV; h++) rope_ref(kc[l][t] + h * HEAD_DIM, t);
            for (int h = 0; h < N_HEAD; h++) {
                const int hk = h / (N_HEAD / N_HEAD_KV);
                double sc[16], mx = -INFINITY, sum = 0;
                for (int p = 0; p <= t; p++) {
                    double d = 0;
                    for (int j = 0; j < HEAD_DIM; j++) d += q[h * HEAD_DIM + j] * kc[l][p][hk * HEAD_DIM + j];
                    sc[p] = d / sqrt((double)HEAD_DIM);
                    if (sc[p] > mx) mx = sc[p];
                }
                for (int p = 0; p <= t; p++) sum += (sc[p] = exp(sc[p] - mx));
                for (int j = 0; j < HEAD_DIM; j++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++) a += sc[p] / sum * vc[l][p][hk * HEAD_DIM + j];
                    att[h * HEAD_DIM + j] = a;
                }
            }
            matvec_ref(o, L->wo, att, Q_DIM, N_EMBD);
            for (int i = 0; i < N_EMBD; i++) x[t][i] += o[i];
            double g[N_FF], u[N_FF];
            rmsnorm_ref(xb, x[t], L->ffn_norm, N_EMBD);
            matvec_ref(g, L->w_gate, xb, N_EMBD, N_FF);
            matvec_ref(u, L->w_up, xb, N_EMBD, N_FF);
            for (int i = 0; i < N_FF; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            matvec_ref(o, L->w_down, g, N_FF, N_EMBD);
            for (int i = 0; i < N_EMBD; i++) x[t][i] += o[i];
        }
        double xn[N_EMBD];
        rmsnorm_ref(xn, x[t], W.output_norm, N_EMBD);
        matvec_ref(logits[t], W.output, xn, N_EMBD, N_VOCAB);
    }
}

static void expect_logits(const float *got, const double *want, const char *what) {
    assert_non_null(got);
    double scale = 0;
    for (int i = 0; i < N_VOCAB; i++) scale = fmax(scale, fabs(want[i]));
    for (int i = 0; i < N_VOCAB; i++) {
        if (!isfinite(got[i])) fail_msg("%s: logit %d is not finite", what, i);
        if (fabs(got[i] - want[i]) > 1e-4 * (1 + scale))
            fail_msg("%s: logit %d = %.6f, reference %.6f", what, i, got[i], want[i]);
    }
}

static rotkv_context *make_ctx(rotkv_model *m, uint32_t n_ctx, int n_threads) {
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = n_threads;
    cp.type_k = cp.type_v = ROTKV_KV_F32; /* exact cache: compare with the reference tightly */
    rotkv_context *c = NULL;
    rotkv_error err;
    if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("context: %s", err.msg);
    return c;
}

/* ------------------------------------------------------------------ tests */

static int setup(void **state) {
    init_weights();
    return 0;
}

static void test_load_and_decode(void **state) {
    model_opts o = {0};
    rotkv_model *m = NULL;
    rotkv_error err;
    if (load_variant(&o, &m, &err) != ROTKV_OK) fail_msg("load: %s", err.msg);
    assert_non_null(m);
    rotkv_model_info info;
    rotkv_model_get_info(m, &info);
    assert_string_equal(info.arch, "llama");
    assert_string_equal(info.name, "tiny test llama");
    assert_int_equal(info.n_vocab, N_VOCAB);
    assert_int_equal(info.n_embd, N_EMBD);
    assert_int_equal(info.n_layer, N_LAYER);
    assert_int_equal(info.n_head, N_HEAD);
    assert_int_equal(info.n_head_kv, N_HEAD_KV);
    assert_int_equal(info.head_dim, HEAD_DIM);
    assert_int_equal(info.n_ff, N_FF);
    assert_int_equal(info.n_ctx_train, N_CTX_TRAIN);
    const uint64_t n_params = 2 * N_VOCAB * N_EMBD + N_EMBD +
                              N_LAYER * (2 * N_EMBD + 2 * Q_DIM * N_EMBD + 2 * KV_DIM * N_EMBD + 3 * N_FF * N_EMBD);
    assert_int_equal(info.n_params, n_params);
    assert_int_equal(info.weight_bytes, 4 * n_params);
    assert_int_equal(rotkv_n_vocab(m), N_VOCAB);
    assert_int_equal(rotkv_token_bos(m), 1);
    assert_int_equal(rotkv_token_eos(m), 2);

    static const rotkv_token prompt[6] = {1, 4, 9, 15, 7, 3};
    double ref[6][N_VOCAB];
    forward_ref(prompt, 6, ref);

    /* the whole prompt in one batch, logits at every position */
    for (int threads = 1; threads <= 2; threads++) {
        rotkv_context *c = make_ctx(m, 16, threads);
        int8_t want[6] = {1, 1, 1, 1, 1, 1};
        rotkv_batch b = {.n_tokens = 6, .token = prompt, .logits = want};
        if (rotkv_decode(c, &b, &err) != ROTKV_OK) fail_msg("decode: %s", err.msg);
        assert_int_equal(rotkv_seq_len(c, 0), 6);
        for (int t = 0; t < 6; t++) {
            char what[64];
            snprintf(what, sizeof what, "batch, %d thread(s), position %d", threads, t);
            expect_logits(rotkv_get_logits(c, t), ref[t], what);
        }
        expect_logits(rotkv_get_logits(c, -1), ref[5], "batch, last");
        rotkv_context_free(c);
    }

    /* token by token through the cache */
    rotkv_context *c = make_ctx(m, 16, 1);
    for (int t = 0; t < 6; t++) {
        rotkv_batch b = {.n_tokens = 1, .token = &prompt[t]};
        if (rotkv_decode(c, &b, &err) != ROTKV_OK) fail_msg("decode %d: %s", t, err.msg);
        char what[64];
        snprintf(what, sizeof what, "incremental, position %d", t);
        expect_logits(rotkv_get_logits(c, -1), ref[t], what);
    }
    rotkv_context_free(c);
    rotkv_model_free(m);
}

static void test_tied_output(void **state) {
    model_opts o = {.tied = true};
    rotkv_model *m = NULL;
    rotkv_error err;
    if (load_variant(&o, &m, &err) != ROTKV_OK) fail_msg("load: %s", err.msg);
    rotkv_context *c = make_ctx(m, 8, 1);
    rotkv_token t = 5;
    rotkv_batch b = {.n_tokens = 1, .token = &t};
    assert_int_equal(rotkv_decode(c, &b, &err), ROTKV_OK);
    const float *lg = rotkv_get_logits(c, -1);
    assert_non_null(lg);
    for (int i = 0; i < N_VOCAB; i++) assert_true(isfinite(lg[i]));
    rotkv_context_free(c);
    rotkv_model_free(m);
}

/* A variant that must be refused with `code` and a message containing both needles. */
static void expect_refused(int line, const model_opts *o, rotkv_status code, const char *n1, const char *n2) {
    rotkv_model *m = (rotkv_model *)(uintptr_t)1;
    rotkv_error err;
    rotkv_status st = load_variant(o, &m, &err);
    if (st == ROTKV_OK) {
        rotkv_model_free(m);
        fail_msg("line %d: broken model was loaded", line);
    }
    assert_null(m);
    if (st != code || err.code != code)
        fail_msg("line %d: status %d (%s), err.code %d, want %d: %s", line, st, rotkv_status_str(st), err.code, code,
                 err.msg);
    if ((n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
        fail_msg("line %d: message \"%s\" does not contain \"%s\" and \"%s\"", line, err.msg, n1 ? n1 : "",
                 n2 ? n2 : "");
    if (!strstr(err.msg, "/tmp/rotkv_test_model_"))
        fail_msg("line %d: message \"%s\" does not name the file", line, err.msg);
}
#define EXPECT_REFUSED(o, code, n1, n2) expect_refused(__LINE__, (o), (code), (n1), (n2))

static void test_refused_variants(void **state) {
    model_opts o;
    /* transposed: same byte count, so only the shape check stands between it
     * and reads past the end of the tensor */
    o = (model_opts){.swap_tensor = "blk.0.attn_q.weight"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'blk.0.attn_q.weight'", "shape [32, 16");
    o = (model_opts){.swap_tensor = "blk.1.ffn_down.weight"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'blk.1.ffn_down.weight'", "expected [32, 16]");
    o = (model_opts){.swap_tensor = "token_embd.weight"}; /* [16, 16]: swapping keeps the shape */
    {
        rotkv_model *m;
        rotkv_error err;
        assert_int_equal(load_variant(&o, &m, &err), ROTKV_OK);
        rotkv_model_free(m);
    }
    o = (model_opts){.extra_dim_tensor = "blk.1.attn_k.weight"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'blk.1.attn_k.weight'", "shape [16, 8, 2, 1]");
    o = (model_opts){.omit_tensor = "blk.1.ffn_up.weight"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'blk.1.ffn_up.weight'", "missing");
    o = (model_opts){.omit_tensor = "token_embd.weight"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'token_embd.weight'", "missing");
    o = (model_opts){.omit_tensor = "output_norm.weight"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'output_norm.weight'", "missing");
    o = (model_opts){.omit_key = "llama.block_count"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'llama.block_count'", "missing");
    o = (model_opts){.omit_key = "llama.embedding_length"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'llama.embedding_length'", "missing");
    o = (model_opts){.omit_key = "llama.attention.layer_norm_rms_epsilon"};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'llama.attention.layer_norm_rms_epsilon'", "missing");
    o = (model_opts){.arch = "gptx"};
    EXPECT_REFUSED(&o, ROTKV_ERR_UNSUPPORTED, "'gptx'", "unsupported architecture");
    o = (model_opts){.n_head_kv = 3};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "head_count 4", "head_count_kv 3");
    /* tensor types the engine cannot read: refused while parsing, by name */
    o = (model_opts){.retype_tensor = "blk.1.attn_v.weight", .retype = 34}; /* ggml's tq1_0 */
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'blk.1.attn_v.weight'", "unsupported tensor type 34");
    o = (model_opts){.retype_tensor = "output.weight", .retype = GGML_TYPE_Q8_1};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'output.weight'", "unsupported tensor type 9");
    o = (model_opts){.retype_tensor = "blk.0.attn_norm.weight", .retype = UINT32_MAX};
    EXPECT_REFUSED(&o, ROTKV_ERR_FORMAT, "'blk.0.attn_norm.weight'", "unsupported tensor type");
}

static void test_load_io_errors(void **state) {
    rotkv_model *m = NULL;
    rotkv_error err;
    rotkv_model_params mp = rotkv_model_default_params();
    assert_int_equal(rotkv_model_load("/nonexistent/rotkv/model.gguf", &mp, &m, &err), ROTKV_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(err.msg, "/nonexistent/rotkv/model.gguf"));
    assert_int_equal(rotkv_model_load("/tmp", &mp, &m, &err), ROTKV_ERR_IO);
    assert_null(m);
    assert_int_equal(rotkv_model_load(NULL, &mp, &m, &err), ROTKV_ERR_INVALID_ARG);
    /* no error struct: still refused, no crash */
    assert_int_equal(rotkv_model_load("/nonexistent/rotkv/model.gguf", &mp, &m, NULL), ROTKV_ERR_IO);
}

static void test_decode_errors(void **state) {
    model_opts o = {0};
    rotkv_model *m = NULL;
    rotkv_error err;
    if (load_variant(&o, &m, &err) != ROTKV_OK) fail_msg("load: %s", err.msg);
    rotkv_context *c = make_ctx(m, 8, 1);
    assert_int_equal(rotkv_n_ctx(c), 8);

    /* token ids outside the vocabulary */
    const rotkv_token bad_ids[] = {N_VOCAB, -1, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        rotkv_token toks[3] = {1, bad_ids[i], 4};
        rotkv_batch b = {.n_tokens = 3, .token = toks};
        memset(&err, 0, sizeof err);
        assert_int_equal(rotkv_decode(c, &b, &err), ROTKV_ERR_INVALID_ARG);
        assert_int_equal(err.code, ROTKV_ERR_INVALID_ARG);
        assert_non_null(strstr(err.msg, "vocabulary"));
        assert_int_equal(rotkv_seq_len(c, 0), 0); /* nothing was cached */
    }
    /* empty and NULL batches */
    rotkv_batch empty = {.n_tokens = 0, .token = bad_ids};
    assert_int_equal(rotkv_decode(c, &empty, &err), ROTKV_ERR_INVALID_ARG);
    assert_int_equal(rotkv_decode(c, NULL, &err), ROTKV_ERR_INVALID_ARG);
    rotkv_batch nulltok = {.n_tokens = 1, .token = NULL};
    assert_int_equal(rotkv_decode(c, &nulltok, NULL), ROTKV_ERR_INVALID_ARG);

    /* a sequence id that does not exist */
    rotkv_token one = 4;
    int32_t seq = 1;
    rotkv_batch bs = {.n_tokens = 1, .token = &one, .seq_id = &seq};
    assert_int_equal(rotkv_decode(c, &bs, &err), ROTKV_ERR_INVALID_ARG);

    /* positions: must continue the sequence */
    rotkv_token toks[4] = {1, 4, 9, 15};
    rotkv_batch b = {.n_tokens = 4, .token = toks};
    assert_int_equal(rotkv_decode(c, &b, &err), ROTKV_OK);
    assert_int_equal(rotkv_seq_len(c, 0), 4);
    const int32_t bad_pos[] = {100, 8, 3, -1, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_pos / sizeof bad_pos[0]; i++) {
        rotkv_batch bp = {.n_tokens = 1, .token = &one, .pos = &bad_pos[i]};
        assert_int_equal(rotkv_decode(c, &bp, &err), ROTKV_ERR_INVALID_ARG);
        assert_non_null(strstr(err.msg, "position"));
        assert_int_equal(rotkv_seq_len(c, 0), 4);
    }
    /* a batch that would run past n_ctx is refused as a whole */
    rotkv_token five[5] = {4, 5, 6, 7, 8};
    rotkv_batch b5 = {.n_tokens = 5, .token = five};
    assert_int_equal(rotkv_decode(c, &b5, &err), ROTKV_ERR_CONTEXT_FULL);
    assert_int_equal(err.code, ROTKV_ERR_CONTEXT_FULL);
    assert_int_equal(rotkv_seq_len(c, 0), 4);
    /* fill up to n_ctx exactly, then one more */
    rotkv_batch b4 = {.n_tokens = 4, .token = five};
    assert_int_equal(rotkv_decode(c, &b4, &err), ROTKV_OK);
    assert_int_equal(rotkv_seq_len(c, 0), 8);
    const float *lg = rotkv_get_logits(c, -1);
    assert_non_null(lg);
    for (int i = 0; i < N_VOCAB; i++) assert_true(isfinite(lg[i]));
    assert_int_equal(rotkv_decode(c, &(rotkv_batch){.n_tokens = 1, .token = &one}, &err), ROTKV_ERR_CONTEXT_FULL);
    assert_non_null(strstr(err.msg, "context"));
    int32_t p8 = 8;
    assert_int_equal(rotkv_decode(c, &(rotkv_batch){.n_tokens = 1, .token = &one, .pos = &p8}, &err),
                     ROTKV_ERR_CONTEXT_FULL);
    assert_int_equal(rotkv_seq_len(c, 0), 8);
    /* after truncation the same sequence continues */
    rotkv_seq_truncate(c, 0, 7);
    assert_int_equal(rotkv_seq_len(c, 0), 7);
    assert_int_equal(rotkv_decode(c, &(rotkv_batch){.n_tokens = 1, .token = &one}, &err), ROTKV_OK);
    rotkv_context_free(c);
    rotkv_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_decode),
        cmocka_unit_test(test_tied_output),
        cmocka_unit_test(test_refused_variants),
        cmocka_unit_test(test_load_io_errors),
        cmocka_unit_test(test_decode_errors),
    };
    return cmocka_run_group_tests_name("model_load", tests, setup, NULL);
}
