/* test_kv_cache.c — the KV cache around its codecs: attn-rot rotation,
 * rotation invariance of the logits, context shift, per-layer types, the
 * memory budget, block-wise growth, fused attention vs a reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "context.h"
#include "kv_cache.h"
#include "rotation.h"
#include "rotkv.h"
#include "testutil.h"

static void t_rotation_orthonormal(void **state) {
    (void)state;
    const int dims[] = {1, 2, 16, 48, 64, 80, 96, 112, 128, 256};
    uint64_t rs = 42;
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        const int n = dims[d];
        rotation r;
        assert_int_equal(rotation_init(&r, n, 7), 0);
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        for (int trial = 0; trial < 20; trial++) {
            double nx = 0, ny = 0;
            for (int i = 0; i < n; i++) {
                x[i] = test_rand_normal(&rs);
                nx += (double)x[i] * x[i];
            }
            memcpy(y, x, sizeof(float) * n);
            rotation_apply(&r, y);
            for (int i = 0; i < n; i++) ny += (double)y[i] * y[i];
            assert_true(fabs(sqrt(nx) - sqrt(ny)) <= 1e-6 * sqrt(nx) + 1e-6);
            rotation_apply_inverse(&r, y);
            for (int i = 0; i < n; i++) assert_true(fabsf(y[i] - x[i]) <= 1e-6f * (1 + fabsf(x[i])));
        }
        /* not the identity (for n > 1): the rotation spreads an outlier channel */
        if (n >= 16) {
            memset(x, 0, sizeof(float) * n);
            x[0] = 1;
            rotation_apply(&r, x);
            float mx = 0;
            for (int i = 0; i < n; i++) mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
            assert_true(mx < 0.6f);
        }
        free(x);
        free(y);
        rotation_free(&r);
    }
}

static rotkv_model *load(const char *rel) {
    char path[512];
    if (!test_shared_path(rel, path, sizeof path)) return NULL;
    rotkv_model *m = NULL;
    rotkv_error err;
    if (rotkv_model_load(path, NULL, &m, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    return m;
}

static rotkv_context *make_ctx(rotkv_model *m, uint32_t n_ctx, rotkv_kv_type tk, rotkv_kv_type tv, rotkv_rot_mode rot) {
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = 2;
    cp.type_k = tk;
    cp.type_v = tv;
    cp.rot_k = cp.rot_v = rot;
    rotkv_context *c = NULL;
    rotkv_error err;
    if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    return c;
}

static const rotkv_token some_tokens[] = {1, 80, 147, 201, 282, 215, 286, 598, 877, 163, 1049, 1468, 267, 800, 592,
                                          1154, 1736, 373, 66, 1670, 661, 1699, 627, 278, 808, 521, 1358, 242};
#define N_SOME ((int)(sizeof some_tokens / sizeof some_tokens[0]))

/* With an f32 cache the rotation changes nothing but rounding. */
static void t_rotation_invariant_logits(void **state) {
    (void)state;
    const char *models[] = {"models/student-h64-F32.gguf", "models/tinystories-656k-f32.gguf",
                            "models/syn-qwen3-h128-F16.gguf"};
    for (size_t mi = 0; mi < 3; mi++) {
        char p[512];
        SKIP_WITHOUT_SHARED(p, models[mi]);
        rotkv_model *m = load(models[mi]);
        rotkv_context *a = make_ctx(m, 64, ROTKV_KV_F32, ROTKV_KV_F32, ROTKV_ROT_OFF);
        rotkv_context *b = make_ctx(m, 64, ROTKV_KV_F32, ROTKV_KV_F32, ROTKV_ROT_ON);
        rotkv_batch bt = {.n_tokens = N_SOME, .token = some_tokens};
        assert_int_equal(rotkv_decode(a, &bt, NULL), ROTKV_OK);
        assert_int_equal(rotkv_decode(b, &bt, NULL), ROTKV_OK);
        const float *la = rotkv_get_logits(a, -1), *lb = rotkv_get_logits(b, -1);
        double md = 0;
        for (int i = 0; i < rotkv_n_vocab(m); i++) md = fmax(md, fabs(la[i] - lb[i]));
        print_message("[ ROT      ] %s: max |logit(rot on) - logit(rot off)| = %.2e (f32 cache)\n", models[mi], md);
        assert_true(md <= 1e-4);
        rotkv_context_free(a);
        rotkv_context_free(b);
        rotkv_model_free(m);
    }
}

/* After a shift, layer-0 keys (which depend only on token and position) equal
 * those of a fresh evaluation of the remaining tokens. */
static void t_context_shift_rerope(void **state) {
    (void)state;
    char p[512];
    SKIP_WITHOUT_SHARED(p, "models/student-h64-F32.gguf");
    rotkv_model *m = load("models/student-h64-F32.gguf");
    for (int rot = 0; rot < 2; rot++) {
        rotkv_context *a = make_ctx(m, 64, ROTKV_KV_F32, ROTKV_KV_F32, rot ? ROTKV_ROT_ON : ROTKV_ROT_OFF);
        rotkv_context *b = make_ctx(m, 64, ROTKV_KV_F32, ROTKV_KV_F32, rot ? ROTKV_ROT_ON : ROTKV_ROT_OFF);
        rotkv_batch bt = {.n_tokens = 12, .token = some_tokens};
        assert_int_equal(rotkv_decode(a, &bt, NULL), ROTKV_OK);
        const int keep = 1, discard = 4;
        assert_int_equal(rotkv_seq_shift(a, 0, keep, discard, NULL), ROTKV_OK);
        assert_int_equal(rotkv_seq_len(a, 0), 12 - discard);
        rotkv_token rest[12];
        int n = 0;
        for (int i = 0; i < 12; i++)
            if (i < keep || i >= keep + discard) rest[n++] = some_tokens[i];
        rotkv_batch bb = {.n_tokens = n, .token = rest};
        assert_int_equal(rotkv_decode(b, &bb, NULL), ROTKV_OK);
        float ka[512], va[512], kb[512], vb[512];
        double md = 0;
        for (int pos = 0; pos < n; pos++) {
            kv_cache_load(context_kv(a), 0, 0, (uint32_t)pos, ka, va);
            kv_cache_load(context_kv(b), 0, 0, (uint32_t)pos, kb, vb);
            for (int i = 0; i < 128; i++) md = fmax(md, fabs(ka[i] - kb[i]));
            for (int i = 0; i < 128; i++) assert_true(fabsf(va[i] - vb[i]) <= 1e-5f);
        }
        print_message("[ SHIFT    ] rot %s: max |K(shifted) - K(fresh)| = %.2e\n", rot ? "on" : "off", md);
        assert_true(md < 1e-4);
        /* decoding continues after a shift */
        rotkv_token t = 100;
        rotkv_batch one = {.n_tokens = 1, .token = &t};
        assert_int_equal(rotkv_decode(a, &one, NULL), ROTKV_OK);
        rotkv_context_free(a);
        rotkv_context_free(b);
    }
    rotkv_model_free(m);
}

/* Generation of 3x the context with shifting, for every cache type. */
static void t_context_shift_every_type(void **state) {
    (void)state;
    char p[512];
    SKIP_WITHOUT_SHARED(p, "models/tinystories-656k-f32.gguf");
    const char *models[] = {"models/tinystories-656k-f32.gguf", "models/student-h64-Q4_0.gguf"};
    for (size_t mi = 0; mi < 2; mi++) {
        rotkv_model *m = load(models[mi]);
        for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++) {
            if (!strcmp(rotkv_kv_type_name((rotkv_kv_type)t), "unknown")) continue;
            const uint32_t n_ctx = 32;
            rotkv_context *c = make_ctx(m, n_ctx, (rotkv_kv_type)t, (rotkv_kv_type)t, ROTKV_ROT_AUTO);
            rotkv_token tok = 1;
            int shifts = 0;
            for (uint32_t i = 0; i < 3 * n_ctx; i++) {
                if ((uint32_t)rotkv_seq_len(c, 0) >= n_ctx) {
                    const int32_t past = rotkv_seq_len(c, 0);
                    assert_int_equal(rotkv_seq_shift(c, 0, 1, (past - 1) / 2, NULL), ROTKV_OK);
                    shifts++;
                }
                rotkv_batch one = {.n_tokens = 1, .token = &tok};
                rotkv_error err;
                if (rotkv_decode(c, &one, &err) != ROTKV_OK) fail_msg("%s: %s", rotkv_kv_type_name((rotkv_kv_type)t), err.msg);
                const float *lg = rotkv_get_logits(c, -1);
                tok = 0;
                for (int v = 1; v < rotkv_n_vocab(m); v++)
                    if (lg[v] > lg[tok]) tok = v;
                assert_true(isfinite(lg[tok]));
            }
            assert_true(shifts >= 3);
            rotkv_context_free(c);
        }
        rotkv_model_free(m);
    }
}

/* Memory grows in blocks; the budget is enforced; per-layer types change bytes/token. */
static void t_blocks_budget_override(void **state) {
    (void)state;
    char p[512];
    SKIP_WITHOUT_SHARED(p, "models/student-h64-F32.gguf");
    rotkv_model *m = load("models/student-h64-F32.gguf");
    rotkv_model_info mi;
    rotkv_model_get_info(m, &mi);
    rotkv_context *c = make_ctx(m, 1024, ROTKV_KV_F16, ROTKV_KV_F16, ROTKV_ROT_AUTO);
    rotkv_kv_stats st;
    rotkv_kv_get_stats(c, &st);
    assert_int_equal(st.blocks_used, 0);
    const double f16_bpt = 2.0 * 2 * mi.n_layer * mi.n_head_kv * mi.head_dim;
    assert_true(fabs(st.bytes_per_token - f16_bpt) < 1e-9);
    rotkv_token toks[300];
    for (int i = 0; i < 300; i++) toks[i] = some_tokens[i % N_SOME];
    rotkv_batch b = {.n_tokens = 300, .token = toks};
    assert_int_equal(rotkv_decode(c, &b, NULL), ROTKV_OK);
    rotkv_kv_get_stats(c, &st);
    assert_int_equal(st.blocks_used, (300 + st.tokens_per_block - 1) / st.tokens_per_block);
    rotkv_seq_truncate(c, 0, 10);
    rotkv_kv_get_stats(c, &st);
    assert_int_equal(st.blocks_used, 1);
    rotkv_context_free(c);

    /* a budget of one block: the second block is refused with a clear error */
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = 1024;
    cp.n_threads = 1;
    cp.kv_budget_bytes = (uint64_t)(f16_bpt * 256);
    rotkv_error err;
    assert_int_equal(rotkv_context_create(m, &cp, &c, &err), ROTKV_OK);
    assert_int_equal(rotkv_decode(c, &b, &err), ROTKV_ERR_KV_BUDGET);
    assert_non_null(strstr(err.msg, "budget"));
    rotkv_batch b2 = {.n_tokens = 200, .token = toks};
    assert_int_equal(rotkv_decode(c, &b2, &err), ROTKV_OK);
    rotkv_context_free(c);

    /* first and last layers at f32, the rest f16 */
    rotkv_kv_type lt[64];
    for (uint32_t l = 0; l < mi.n_layer; l++) lt[l] = ROTKV_KV_F16;
    lt[0] = lt[mi.n_layer - 1] = ROTKV_KV_F32;
    cp.kv_budget_bytes = 0;
    cp.layer_types_k = cp.layer_types_v = lt;
    assert_int_equal(rotkv_context_create(m, &cp, &c, &err), ROTKV_OK);
    rotkv_kv_get_stats(c, &st);
    const double row = 2.0 * mi.n_head_kv * mi.head_dim; /* K + V values per layer */
    assert_true(fabs(st.bytes_per_token - row * (2 * 4 + (mi.n_layer - 2) * 2)) < 1e-9);
    rotkv_context_free(c);
    rotkv_model_free(m);
}

/* The fused online-softmax attention equals the two-pass reference for every
 * cache type (tinystories: blocks spanning heads; student: per-head blocks). */
static void t_attention_fused_vs_reference(void **state) {
    (void)state;
    char p[512];
    SKIP_WITHOUT_SHARED(p, "models/tinystories-656k-f32.gguf");
    const char *models[] = {"models/tinystories-656k-f32.gguf", "models/student-h64-F32.gguf"};
    uint64_t rs = 9;
    for (size_t mi = 0; mi < 2; mi++) {
        rotkv_model *m = load(models[mi]);
        rotkv_model_info info;
        rotkv_model_get_info(m, &info);
        for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++) {
            if (!strcmp(rotkv_kv_type_name((rotkv_kv_type)t), "unknown")) continue;
            rotkv_context *c = make_ctx(m, 64, (rotkv_kv_type)t, (rotkv_kv_type)t, ROTKV_ROT_AUTO);
            rotkv_batch b = {.n_tokens = 20, .token = some_tokens};
            assert_int_equal(rotkv_decode(c, &b, NULL), ROTKV_OK);
            const int nh = (int)info.n_head, nkv = (int)info.n_head_kv, hd = (int)info.head_dim;
            const int nq = 3;
            float *Q = malloc(sizeof(float) * nq * nh * hd), *O1 = malloc(sizeof(float) * nq * nh * hd);
            float *O2 = malloc(sizeof(float) * nq * nh * hd);
            float *scr = malloc(sizeof(float) * attention_scratch_floats(nh, nkv, hd));
            for (int i = 0; i < nq * nh * hd; i++) Q[i] = test_rand_normal(&rs);
            int32_t seq[3] = {0, 0, 0}, pos[3] = {0, 9, 19};
            for (uint32_t layer = 0; layer < info.n_layer; layer++) {
                attention_args a = {context_kv(c), layer, nq, seq, pos, nh, nkv, hd, 1.0f / sqrtf((float)hd), Q, O1, scr, 0, 0, 0.0f, NULL};
                attention_batch(NULL, &a);
                a.O = O2;
                attention_reference(&a);
                for (int i = 0; i < nq * nh * hd; i++)
                    if (fabsf(O1[i] - O2[i]) > 1e-4f * (1 + fabsf(O2[i])))
                        fail_msg("%s %s layer %u: fused %g vs reference %g at %d", models[mi],
                                 rotkv_kv_type_name((rotkv_kv_type)t), layer, O1[i], O2[i], i);
            }
            free(Q);
            free(O1);
            free(O2);
            free(scr);
            rotkv_context_free(c);
        }
        rotkv_model_free(m);
    }
}

static rotkv_context *make_ctx_sw(rotkv_model *m, uint32_t n_ctx, rotkv_kv_type t, uint32_t sink, uint32_t window) {
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = 2;
    cp.type_k = cp.type_v = t;
    cp.kv_sink = sink;
    cp.kv_window = window;
    rotkv_context *c = NULL;
    rotkv_error err;
    if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    return c;
}

/* Sink and window rows: truncating and re-decoding gives the same logits (the
 * ring's bookkeeping survives rollback), a shift keeps keys right, bits/value
 * counts the f16 rows at the given length. */
static void t_sink_window(void **state) {
    (void)state;
    char p[512];
    SKIP_WITHOUT_SHARED(p, "models/student-h64-F32.gguf");
    rotkv_model *m = load("models/student-h64-F32.gguf");
    rotkv_context *a = make_ctx_sw(m, 64, ROTKV_KV_F16, 2, 4);
    rotkv_context *ref = make_ctx_sw(m, 64, ROTKV_KV_F16, 0, 0);
    rotkv_batch b = {.n_tokens = 20, .token = some_tokens};
    assert_int_equal(rotkv_decode(a, &b, NULL), ROTKV_OK);
    assert_int_equal(rotkv_decode(ref, &b, NULL), ROTKV_OK);
    const int V = rotkv_n_vocab(m);
    float first[4096];
    memcpy(first, rotkv_get_logits(a, -1), sizeof(float) * (size_t)V);
    /* f16 codec: sink/window rows hold the same f16 values, so results are identical */
    for (int i = 0; i < V; i++) assert_true(first[i] == rotkv_get_logits(ref, -1)[i]);
    rotkv_seq_truncate(a, 0, 9);
    rotkv_batch b2 = {.n_tokens = 11, .token = some_tokens + 9};
    assert_int_equal(rotkv_decode(a, &b2, NULL), ROTKV_OK);
    for (int i = 0; i < V; i++) assert_true(first[i] == rotkv_get_logits(a, -1)[i]);
    /* one token at a time through the window gives the batch's result */
    rotkv_seq_clear(a, 0);
    for (int i = 0; i < 20; i++) {
        rotkv_batch one = {.n_tokens = 1, .token = some_tokens + i};
        assert_int_equal(rotkv_decode(a, &one, NULL), ROTKV_OK);
    }
    for (int i = 0; i < V; i++) assert_true(fabsf(first[i] - rotkv_get_logits(a, -1)[i]) < 1e-3f);
    /* shift with sink + window: layer-0 keys equal a fresh evaluation (f16 precision) */
    assert_int_equal(rotkv_seq_shift(a, 0, 2, 5, NULL), ROTKV_OK);
    rotkv_token rest[20];
    int n = 0;
    for (int i = 0; i < 20; i++)
        if (i < 2 || i >= 7) rest[n++] = some_tokens[i];
    rotkv_seq_clear(ref, 0);
    rotkv_batch br = {.n_tokens = n, .token = rest};
    assert_int_equal(rotkv_decode(ref, &br, NULL), ROTKV_OK);
    float ka[512], va[512], kb[512], vb[512];
    for (int pos = 0; pos < n; pos++) {
        kv_cache_load(context_kv(a), 0, 0, (uint32_t)pos, ka, va);
        kv_cache_load(context_kv(ref), 0, 0, (uint32_t)pos, kb, vb);
        for (int i = 0; i < 128; i++) assert_true(fabsf(ka[i] - kb[i]) < 2e-2f * (1 + fabsf(kb[i])));
    }
    /* bits/value: f16 everywhere is 16 whatever the length */
    assert_true(fabs(rotkv_kv_bits_per_value(a, 256) - 16.0) < 1e-9);
    rotkv_context_free(a);
    rotkv_context_free(ref);
    /* f32 codec with a 6-row f16 side: at 256 tokens (250*32 + 6*16)/256 bits */
    a = make_ctx_sw(m, 64, ROTKV_KV_F32, 2, 4);
    assert_true(fabs(rotkv_kv_bits_per_value(a, 256) - (250.0 * 32 + 6 * 16) / 256) < 1e-9);
    rotkv_context_free(a);
    rotkv_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_rotation_orthonormal),
        cmocka_unit_test(t_rotation_invariant_logits),
        cmocka_unit_test(t_context_shift_rerope),
        cmocka_unit_test(t_context_shift_every_type),
        cmocka_unit_test(t_blocks_budget_override),
        cmocka_unit_test(t_attention_fused_vs_reference),
        cmocka_unit_test(t_sink_window),
    };
    return cmocka_run_group_tests_name("KV cache", tests, NULL, NULL);
}
