/* test_swa.c — sliding-window layers (gemma2, gemma3, gpt-oss): the attention mask, the
 * ring KV cache and what uses it. The agreement of the whole models with
 * llama.cpp (at 142 positions, far past their window of 16) is test_golden's;
 * here:
 *
 *  - attention over a sliding-window ring equals the two-pass reference (which
 *    reads only [p - W + 1, p]) for every cache type, codecs and kt* alike, on
 *    the gemma and gpt-oss test models after 100 tokens, with and without soft-capping, and
 *    with attention sinks (gpt-oss's learned logits, also across split runs); a
 *    query whose first blocks are all before its window gets no NaN;
 *  - the ring at the kv_cache level: the rows read back are those stored at
 *    the position (f32 codec: exactly) for positions the ring holds, while it
 *    turns many times; a context shift renumbers the held positions and moves
 *    the kept ones exactly; the ring's pages stay at R rows;
 *  - memory: at 4x the window the cache's resident pages (mincore) equal
 *    rotkv_kv_bytes_at within 5% (gemma2, gemma3, gpt-oss; f16, and q8_0 / q4_0 / tq3
 *    on a larger shape where the OS page does not dominate); from 4x to 8x the
 *    window only the global layers grow;
 *  - generation with context shifts past 3x the context on the three models: finite
 *    logits, the length kept under the context, memory bounded;
 *  - prefix reuse: rotkv_seq_can_truncate / rotkv_seq_truncate / rotkv_seq_copy
 *    refuse a cut the ring has moved past (truncate drops the sequence), and a
 *    cut it holds gives the same logits as the first time;
 *  - loading: the keys llama.cpp writes (sliding_window, pattern as a period or
 *    per-layer booleans, freq_base_swa, soft-caps) and refusals naming the key
 *    or tensor: soft-capping or a pattern on llama, an attention soft-cap on
 *    gemma3, a missing post-FFN norm, a pattern of the wrong length, a key
 *    rotkv does not implement (attention.scale);
 *  - the test models carry Gemma 2's and Gemma 3's chat templates, recognised
 *    and rendered as they render (Gemma 3: the system text before the first turn). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attention.h"
#include "chat_template.h"
#include "context.h"
#include "gguf_writer.h"
#include "kv_cache.h"
#include "model.h"
#include "rotkv.h"
#include "testutil.h"

static rotkv_model *load(const char *path) {
    rotkv_model *m = NULL;
    rotkv_error err = {0};
    if (rotkv_model_load(path, NULL, &m, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    return m;
}

static rotkv_context *make_ctx(rotkv_model *m, uint32_t n_ctx, rotkv_kv_type tk, rotkv_kv_type tv) {
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = 2;
    cp.type_k = tk;
    cp.type_v = tv;
    rotkv_context *c = NULL;
    rotkv_error err = {0};
    if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    return c;
}

static void prompt_tokens(rotkv_token *t, int n) {
    for (int i = 0; i < n; i++) t[i] = 3 + (i * 131 + 7) % 2000;
}

/* gemma2 (layers 0, 2 of 4 slide), gemma3 (0-4 of 6), gpt-oss (0, 2 of 4; sinks), all with a window of 16 */
static const char *const MODELS[] = {"tests/models/syn-gemma2-F32.gguf", "tests/models/syn-gemma3-F32.gguf",
                                     "tests/models/syn-gptoss-F32.gguf"};
#define N_MODELS 3

/* ------------------------------------------------------- attention vs reference */

static void t_window_attention_vs_reference(void **state) {
    (void)state;
    uint64_t rs = 5;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        rotkv_model *m = load(MODELS[mi]);
        rotkv_model_info info;
        rotkv_model_get_info(m, &info);
        assert_int_equal(info.n_swa, 16);
        assert_int_equal(info.n_layer_swa, mi == 1 ? 5 : 2);
        for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++) {
            if (!strcmp(rotkv_kv_type_name((rotkv_kv_type)t), "unknown")) continue;
            rotkv_context *c = make_ctx(m, 256, (rotkv_kv_type)t, (rotkv_kv_type)t);
            rotkv_token toks[100];
            prompt_tokens(toks, 100);
            rotkv_batch b = {.n_tokens = 100, .token = toks};
            assert_int_equal(rotkv_decode(c, &b, NULL), ROTKV_OK);
            const int nh = (int)info.n_head, nkv = (int)info.n_head_kv, hd = (int)info.head_dim;
            enum { NQ = 5 };
            float *Q = malloc(sizeof(float) * NQ * nh * hd), *O1 = malloc(sizeof(float) * NQ * nh * hd);
            float *O2 = malloc(sizeof(float) * NQ * nh * hd);
            float *scr = malloc(sizeof(float) * 2 * attention_scratch_floats(nh, nkv, hd));
            for (int i = 0; i < NQ * nh * hd; i++) Q[i] = 2.0f * test_rand_normal(&rs);
            /* the ring holds 68..99: queries whose window starts in a block they never see */
            int32_t seq[NQ] = {0, 0, 0, 0, 0}, pos[NQ] = {83, 90, 95, 98, 99};
            kv_cache *kv = context_kv(c);
            int n_ring = 0;
            for (uint32_t layer = 0; layer < info.n_layer; layer++) {
                const int32_t W = (int32_t)kv_cache_window(kv, layer);
                if (!W) continue;
                n_ring++;
                assert_int_equal(W, 16);
                assert_int_equal(kv_cache_ring_slots(kv, layer), 32);
                assert_int_equal(kv_cache_first_pos(kv, 0, layer), 68);
                /* variants: plain, soft-capped, with attention sinks (gpt-oss: a logit per query head
                 * counted in the softmax), with sinks and the positions split in 3 runs (merged once) */
                float sinks[64];
                for (int h = 0; h < nh; h++) sinks[h] = 2.0f * test_rand_normal(&rs) + (h == 0 ? 8.0f : 0.0f);
                for (int cap = 0; cap < 4; cap++) {
                    attention_args a = {kv, layer, NQ, seq, pos, nh, nkv, hd, 1.0f / sqrtf((float)hd), Q, O1, scr,
                                        cap == 3 ? 3 : 0, W, cap == 1 ? 3.0f : 0.0f, cap >= 2 ? sinks : NULL};
                    attention_batch(NULL, &a);
                    a.O = O2;
                    attention_reference(&a);
                    for (int i = 0; i < NQ * nh * hd; i++)
                        if (!isfinite(O1[i]) || fabsf(O1[i] - O2[i]) > 1e-4f * (1 + fabsf(O2[i])))
                            fail_msg("%s %s layer %u softcap %d: fused %g vs reference %g at %d", MODELS[mi],
                                     rotkv_kv_type_name((rotkv_kv_type)t), layer, cap, O1[i], O2[i], i);
                    if (cap >= 2) { /* the sinks change the output: head 0's (logit ~8) weighs most */
                        attention_args nosink = a;
                        nosink.sinks = NULL;
                        nosink.O = O2;
                        attention_batch(NULL, &nosink);
                        double d = 0;
                        for (int i = 0; i < hd; i++) d += fabsf(O1[i] - O2[i]);
                        assert_true(d > 1e-3);
                    }
                    /* one query at a time (decode) gives the same */
                    for (int j = 0; j < NQ; j++) {
                        attention_args one = a;
                        one.n_tok = 1;
                        one.seq = seq + j;
                        one.pos = pos + j;
                        one.Q = Q + (size_t)j * nh * hd;
                        one.O = O2 + (size_t)j * nh * hd;
                        attention_batch(NULL, &one);
                    }
                    for (int i = 0; i < NQ * nh * hd; i++)
                        if (fabsf(O1[i] - O2[i]) > 1e-5f * (1 + fabsf(O2[i])))
                            fail_msg("%s %s layer %u: batch %g vs one by one %g", MODELS[mi],
                                     rotkv_kv_type_name((rotkv_kv_type)t), layer, O1[i], O2[i]);
                }
            }
            assert_int_equal(n_ring, (int)info.n_layer_swa);
            free(Q);
            free(O1);
            free(O2);
            free(scr);
            rotkv_context_free(c);
        }
        rotkv_model_free(m);
    }
}

/* ------------------------------------------------------------- ring mechanics */

#define RH 2  /* KV heads */
#define RD 32 /* head size */

static void row_of(uint32_t pos, int is_v, float *x) {
    for (int i = 0; i < RH * RD; i++) x[i] = (float)pos * 0.5f + (float)i * 0.001f + (is_v ? 1000.0f : 0.0f);
}

static void expect_row(kv_cache *kv, uint32_t layer, uint32_t pos, uint32_t was) {
    float k[RH * RD], v[RH * RD], ek[RH * RD], ev[RH * RD];
    kv_cache_load(kv, 0, layer, pos, k, v);
    row_of(was, 0, ek);
    row_of(was, 1, ev);
    for (int i = 0; i < RH * RD; i++)
        if (k[i] != ek[i] || v[i] != ev[i]) fail_msg("layer %u pos %u: holds %g/%g, expected the row of %u", layer, pos, k[i], v[i], was);
}

static void t_ring_rows_and_shift(void **state) {
    (void)state;
    const uint32_t windows[2] = {8, 0}; /* layer 0 slides (ring 24 = 8 + 16), layer 1 is global */
    kv_cache_params p = {2, RH, RD, 512, 1, ROTKV_KV_F32, ROTKV_KV_F32, NULL, NULL, 0, 0, 0, false, windows};
    rotkv_error err = {0};
    kv_cache *kv = kv_cache_create(&p, &err);
    if (!kv) fail_msg("%s", err.msg);
    assert_int_equal(kv_cache_ring_slots(kv, 0), 24);
    assert_int_equal(kv_cache_swa_chunk(kv, 0), 17);
    assert_int_equal(kv_cache_ring_slots(kv, 1), 0);
    float k[RH * RD], v[RH * RD];
    uint32_t len = 0;
    /* 300 positions: the ring turns 12 times; every held position reads back exactly */
    for (; len < 300; len++) {
        assert_int_equal(kv_cache_reserve(kv, 0, len + 1, &err), ROTKV_OK);
        row_of(len, 0, k);
        row_of(len, 1, v);
        kv_cache_store(kv, 0, 0, len, k, v);
        kv_cache_store(kv, 0, 1, len, k, v);
        const uint32_t first = len + 1 > 24 ? len + 1 - 24 : 0;
        assert_int_equal(kv_cache_first_pos(kv, 0, 0), first);
        if (len % 37 == 0)
            for (uint32_t q = first; q <= len; q++) expect_row(kv, 0, q, q);
    }
    /* the ring layer holds 24 rows, the global one all 300 (rounded up to pages) */
    const size_t rb = 2 * sizeof(float) * RH * RD;
    assert_int_equal(kv_cache_allocated_bytes(kv), 24 * rb + 2 * KV_PAGE_TOKENS * rb);
    assert_int_equal(kv_cache_seq_bytes(kv, 300), (24 + 300) * rb);
    /* shift: keep 4, drop 50; the ring held 276..299 -> 226..249, kept 0..3 are long gone */
    assert_int_equal(kv_cache_ring_shift(kv, 0, 0, 4, 50, len, &err), ROTKV_OK);
    assert_int_equal(kv_cache_first_pos(kv, 0, 0), 226);
    for (uint32_t q = 226; q < 250; q++) expect_row(kv, 0, q, q + 50);
    assert_false(kv_cache_can_truncate(kv, 0, 230)); /* its window starts at 223: not held */
    assert_true(kv_cache_can_truncate(kv, 0, 240));  /* 233.. is */
    assert_true(kv_cache_can_truncate(kv, 0, 250));
    kv_cache_truncate(kv, 0, 250);
    /* storing on goes on in the ring after the shift */
    for (len = 250; len < 260; len++) {
        assert_int_equal(kv_cache_reserve(kv, 0, len + 1, &err), ROTKV_OK);
        row_of(len + 1000, 0, k);
        row_of(len + 1000, 1, v);
        kv_cache_store(kv, 0, 0, len, k, v);
        kv_cache_store(kv, 0, 1, len, k, v);
    }
    for (uint32_t q = 236; q < 250; q++) expect_row(kv, 0, q, q + 50);
    for (uint32_t q = 250; q < 260; q++) expect_row(kv, 0, q, q + 1000);
    /* a short sequence: the kept positions are still in the ring and move with it */
    kv_cache_truncate(kv, 0, 0);
    assert_int_equal(kv_cache_allocated_bytes(kv), 0);
    for (len = 0; len < 20; len++) {
        assert_int_equal(kv_cache_reserve(kv, 0, len + 1, &err), ROTKV_OK);
        row_of(len, 0, k);
        row_of(len, 1, v);
        kv_cache_store(kv, 0, 0, len, k, v);
    }
    assert_int_equal(kv_cache_ring_shift(kv, 0, 0, 4, 6, 20, &err), ROTKV_OK);
    assert_int_equal(kv_cache_first_pos(kv, 0, 0), 0);
    for (uint32_t q = 0; q < 4; q++) expect_row(kv, 0, q, q);
    for (uint32_t q = 4; q < 14; q++) expect_row(kv, 0, q, q + 6);
    /* and a shift by more than the ring */
    kv_cache_truncate(kv, 0, 14);
    for (len = 14; len < 100; len++) {
        assert_int_equal(kv_cache_reserve(kv, 0, len + 1, &err), ROTKV_OK);
        row_of(len, 0, k);
        row_of(len, 1, v);
        kv_cache_store(kv, 0, 0, len, k, v);
    }
    assert_int_equal(kv_cache_ring_shift(kv, 0, 0, 2, 60, 100, &err), ROTKV_OK);
    assert_int_equal(kv_cache_first_pos(kv, 0, 0), 16);
    for (uint32_t q = 16; q < 40; q++) expect_row(kv, 0, q, q + 60);
    kv_cache_free(kv);
}

/* ------------------------------------------------------------------- memory */

static void decode_n(rotkv_context *c, int from, int n) {
    rotkv_token toks[512];
    prompt_tokens(toks, from + n);
    rotkv_batch b = {.n_tokens = n, .token = toks + from};
    rotkv_error err = {0};
    if (rotkv_decode(c, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
}

static void check_resident(rotkv_context *c, uint32_t n, const char *what) {
    const double res = (double)kv_cache_resident_bytes(context_kv(c)), rep = (double)rotkv_kv_bytes_at(c, n);
    print_message("[ MEMORY   ] %-40s %u tokens: resident %.0f bytes, reported %.0f (%.2f%%)\n", what, n, res, rep,
                  100.0 * (res - rep) / rep);
    if (fabs(res - rep) > 0.05 * rep) fail_msg("%s at %u tokens: resident %.0f bytes, reported %.0f", what, n, res, rep);
}

static void t_memory_at_4x_window(void **state) {
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        rotkv_model *m = load(MODELS[mi]);
        rotkv_context *c = make_ctx(m, 512, ROTKV_KV_F16, ROTKV_KV_F16);
        rotkv_kv_stats st;
        rotkv_kv_get_stats(c, &st);
        assert_int_equal(st.swa_window, 16);
        assert_int_equal(st.swa_ring_tokens, 32);
        decode_n(c, 0, 64); /* 4x the window */
        check_resident(c, 64, MODELS[mi]);
        const double r64 = (double)kv_cache_resident_bytes(context_kv(c));
        decode_n(c, 64, 64); /* 8x: only the global layers grow */
        check_resident(c, 128, MODELS[mi]);
        const double grow = (double)kv_cache_resident_bytes(context_kv(c)) - r64, want = st.bytes_per_token_global * 64;
        if (fabs(grow - want) > 0.05 * want) fail_msg("%s: from 64 to 128 tokens %.0f bytes more, the global layers' %.0f", MODELS[mi], grow, want);
        assert_true(rotkv_kv_bytes_at(c, 4096) - rotkv_kv_bytes_at(c, 128) == (uint64_t)(st.bytes_per_token_global * (4096 - 128)));
        rotkv_context_free(c);
        rotkv_model_free(m);
    }
    /* codecs on a shape whose rows fill OS pages: 8 KV heads of 128, window 256, 3 layers of which 2 slide */
    const rotkv_kv_type types[] = {ROTKV_KV_Q8_0, ROTKV_KV_Q4_0, ROTKV_KV_TQ3, ROTKV_KV_F16};
    const uint32_t windows[3] = {256, 0, 256};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        kv_cache_params p = {3, 8, 128, 4096, 1, types[ti], types[ti], NULL, NULL, 0, 0, 0, false, windows};
        rotkv_error err = {0};
        kv_cache *kv = kv_cache_create(&p, &err);
        if (!kv) fail_msg("%s", err.msg);
        float *row = malloc(sizeof(float) * 8 * 128);
        uint64_t rs = 3;
        for (uint32_t pos = 0; pos < 1024; pos++) { /* 4x the window */
            assert_int_equal(kv_cache_reserve(kv, 0, pos + 1, &err), ROTKV_OK);
            for (int i = 0; i < 8 * 128; i++) row[i] = test_rand_normal(&rs);
            for (uint32_t l = 0; l < 3; l++) kv_cache_store(kv, 0, l, pos, row, row);
        }
        const double res = (double)kv_cache_resident_bytes(kv), rep = (double)kv_cache_seq_bytes(kv, 1024);
        print_message("[ MEMORY   ] %-40s 1024 tokens: resident %.0f bytes, reported %.0f (%.2f%%)\n",
                      rotkv_kv_type_name(types[ti]), res, rep, 100.0 * (res - rep) / rep);
        if (fabs(res - rep) > 0.05 * rep) fail_msg("%s: resident %.0f, reported %.0f", rotkv_kv_type_name(types[ti]), res, rep);
        /* the two rings: 320 rows each (256 + 64, rounded to 2 pages of 256: 512 slots) at most */
        assert_int_equal(kv_cache_ring_slots(kv, 0), 512);
        free(row);
        kv_cache_free(kv);
    }
}

/* ------------------------------------------------------------ context shift */

static void t_generation_with_context_shift(void **state) {
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        rotkv_model *m = load(MODELS[mi]);
        const uint32_t n_ctx = 48; /* the ring (32) turns within it */
        for (int tq = 0; tq < 2; tq++) {
            rotkv_context *c = make_ctx(m, n_ctx, tq ? ROTKV_KV_Q4_0 : ROTKV_KV_F16, tq ? ROTKV_KV_Q8_0 : ROTKV_KV_F16);
            rotkv_token toks[20];
            prompt_tokens(toks, 20);
            rotkv_batch b = {.n_tokens = 20, .token = toks};
            rotkv_error err = {0};
            if (rotkv_decode(c, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
            int shifts = 0;
            size_t max_res = 0;
            const int V = rotkv_n_vocab(m);
            for (int step = 0; step < 3 * (int)n_ctx + 20; step++) {
                const float *lg = rotkv_get_logits(c, -1);
                int best = 0;
                for (int i = 0; i < V; i++) {
                    if (!isfinite(lg[i])) fail_msg("%s step %d: logit %d is %g", MODELS[mi], step, i, lg[i]);
                    if (lg[i] > lg[best]) best = i;
                }
                if ((uint32_t)rotkv_seq_len(c, 0) >= n_ctx) {
                    const int keep = 4, discard = (rotkv_seq_len(c, 0) - keep) / 2;
                    if (rotkv_seq_shift(c, 0, keep, discard, &err) != ROTKV_OK) fail_msg("shift: %s", err.msg);
                    shifts++;
                }
                rotkv_token t = best;
                rotkv_batch one = {.n_tokens = 1, .token = &t};
                if (rotkv_decode(c, &one, &err) != ROTKV_OK) fail_msg("step %d: %s", step, err.msg);
                const size_t r = kv_cache_resident_bytes(context_kv(c));
                if (r > max_res) max_res = r;
            }
            assert_true(shifts >= 6);
            assert_true((uint32_t)rotkv_seq_len(c, 0) <= n_ctx);
            /* never more than the context's pages of the global layers and full rings */
            assert_true(max_res <= kv_cache_seq_alloc_bytes(context_kv(c), n_ctx));
            rotkv_context_free(c);
        }
        rotkv_model_free(m);
    }
}

/* ------------------------------------------------------------- prefix reuse */

static void t_prefix_reuse(void **state) {
    (void)state;
    for (size_t mi = 0; mi < N_MODELS; mi++) {
        rotkv_model *m = load(MODELS[mi]);
        rotkv_context_params cp = rotkv_context_default_params();
        cp.n_ctx = 256;
        cp.n_threads = 2;
        cp.n_seq_max = 2;
        rotkv_context *c = NULL;
        rotkv_error err = {0};
        if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        rotkv_token toks[100];
        prompt_tokens(toks, 100);
        int8_t want[100];
        memset(want, 1, sizeof want);
        rotkv_batch b = {.n_tokens = 100, .token = toks, .logits = want};
        assert_int_equal(rotkv_decode(c, &b, &err), ROTKV_OK);
        const int V = rotkv_n_vocab(m);
        float *first = malloc(sizeof(float) * 10 * V);
        for (int i = 0; i < 10; i++) memcpy(first + (size_t)i * V, rotkv_get_logits(c, 90 + i), sizeof(float) * V);
        /* the rings hold 68..99: a cut at 90 keeps the window 75..89, one at 50 cannot */
        assert_true(rotkv_seq_can_truncate(c, 0, 90));
        assert_false(rotkv_seq_can_truncate(c, 0, 50));
        assert_int_not_equal(rotkv_seq_copy(c, 0, 1, 50, &err), ROTKV_OK);
        assert_non_null(strstr(err.msg, "sliding-window"));
        assert_int_equal(rotkv_seq_copy(c, 0, 1, 90, &err), ROTKV_OK);
        rotkv_seq_truncate(c, 0, 90);
        assert_int_equal(rotkv_seq_len(c, 0), 90);
        for (int s = 0; s < 2; s++) { /* both continue as the first time */
            rotkv_batch rest = {.n_tokens = 10, .token = toks + 90, .logits = want};
            int32_t ids[10];
            for (int i = 0; i < 10; i++) ids[i] = s;
            rest.seq_id = ids;
            assert_int_equal(rotkv_decode(c, &rest, &err), ROTKV_OK);
            for (int i = 0; i < 10; i++) {
                const float *lg = rotkv_get_logits(c, i);
                for (int v = 0; v < V; v++)
                    if (fabsf(lg[v] - first[(size_t)i * V + v]) > 1e-4f)
                        fail_msg("%s seq %d position %d: %g, the first time %g", MODELS[mi], s, 90 + i, lg[v],
                                 first[(size_t)i * V + v]);
            }
        }
        rotkv_seq_truncate(c, 0, 50); /* the ring moved on: the sequence is dropped */
        assert_int_equal(rotkv_seq_len(c, 0), 0);
        free(first);
        rotkv_context_free(c);
        rotkv_model_free(m);
    }
}

/* ------------------------------------------------------------------ loading */

#define G_VOCAB 16
#define G_EMBD 32
#define G_HD 16
static const char *const GVOCAB[G_VOCAB] = {
    "<unk>", "<s>", "</s>", "\u2581", "\u2581a", "\u2581b", "a", "b",
    "c", "ab", "\u2581ab", "<0x0A>", "<0x20>", "d", "e", "\u2581the"};
static float g_w[1 << 14];

typedef struct {
    const char *arch;
    uint32_t n_layer;
    const char *key_u32, *key_f32; /* "<suffix>" written as u32 3 / f32 3.0 */
    int pattern_len;               /* > 0: attention.sliding_window_pattern as that many booleans (1, 0, 1, ...) */
    const char *omit;              /* a tensor left out */
    bool no_window;                /* attention.sliding_window not written */
} gopts;

static rotkv_status load_gemma(const gopts *o, rotkv_model **m, rotkv_error *err) {
    gguf_builder g;
    gb_init(&g, 3);
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", o->arch, s), k)
    gb_kv_str(&g, "general.architecture", o->arch);
    gb_kv_u32(&g, KEY("context_length"), 64);
    gb_kv_u32(&g, KEY("embedding_length"), G_EMBD);
    gb_kv_u32(&g, KEY("block_count"), o->n_layer);
    gb_kv_u32(&g, KEY("feed_forward_length"), 32);
    gb_kv_u32(&g, KEY("attention.head_count"), 2);
    gb_kv_u32(&g, KEY("attention.head_count_kv"), 1);
    gb_kv_u32(&g, KEY("attention.key_length"), G_HD);
    gb_kv_u32(&g, KEY("attention.value_length"), G_HD);
    gb_kv_f32(&g, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    if (!o->no_window && strncmp(o->arch, "gemma", 5) == 0) gb_kv_u32(&g, KEY("attention.sliding_window"), 4);
    if (o->key_u32) gb_kv_u32(&g, KEY(o->key_u32), 3);
    if (o->key_f32) gb_kv_f32(&g, KEY(o->key_f32), 3.0f);
    if (o->pattern_len > 0) {
        uint8_t pat[16];
        for (int i = 0; i < o->pattern_len; i++) pat[i] = (uint8_t)(i % 2 == 0);
        gb_kv_arr(&g, KEY("attention.sliding_window_pattern"), GGUF_TYPE_BOOL, (uint64_t)o->pattern_len, pat);
    }
#undef KEY
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    gb_kv_arr_str(&g, "tokenizer.ggml.tokens", G_VOCAB, GVOCAB);
    float scores[G_VOCAB];
    int32_t types[G_VOCAB];
    for (int i = 0; i < G_VOCAB; i++) {
        scores[i] = -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : (i == 11 || i == 12) ? 6 : 1;
    }
    gb_kv_arr(&g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, G_VOCAB, scores);
    gb_kv_arr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, G_VOCAB, types);
    gb_kv_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    gb_kv_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    const bool gemma = strncmp(o->arch, "gemma", 5) == 0, g3 = !strcmp(o->arch, "gemma3");
    char n[64];
#define T1(name, a) do { snprintf(n, sizeof n, "%s", name); if (!o->omit || strcmp(n, o->omit)) gb_tensor_f32(&g, n, 1, (uint64_t[]){a}, g_w); } while (0)
#define T2(name, a, b) do { snprintf(n, sizeof n, "%s", name); if (!o->omit || strcmp(n, o->omit)) gb_tensor_f32(&g, n, 2, (uint64_t[]){a, b}, g_w); } while (0)
    T2("token_embd.weight", G_EMBD, G_VOCAB);
    T1("output_norm.weight", G_EMBD);
    for (uint32_t l = 0; l < o->n_layer; l++) {
        char b[64];
#define L1(s, a) do { snprintf(b, sizeof b, "blk.%u." s, l); T1(b, a); } while (0)
#define L2(s, a, c) do { snprintf(b, sizeof b, "blk.%u." s, l); T2(b, a, c); } while (0)
        L1("attn_norm.weight", G_EMBD);
        L2("attn_q.weight", G_EMBD, 2 * G_HD);
        L2("attn_k.weight", G_EMBD, G_HD);
        L2("attn_v.weight", G_EMBD, G_HD);
        L2("attn_output.weight", 2 * G_HD, G_EMBD);
        if (g3) {
            L1("attn_q_norm.weight", G_HD);
            L1("attn_k_norm.weight", G_HD);
        }
        if (gemma) {
            L1("post_attention_norm.weight", G_EMBD);
            L1("post_ffw_norm.weight", G_EMBD);
        }
        L1("ffn_norm.weight", G_EMBD);
        L2("ffn_gate.weight", G_EMBD, 32);
        L2("ffn_up.weight", G_EMBD, 32);
        L2("ffn_down.weight", 32, G_EMBD);
#undef L1
#undef L2
    }
#undef T1
#undef T2
    size_t len;
    uint8_t *buf = gb_finish(&g, &len);
    gb_free(&g);
    char path[] = "/tmp/rotkv_test_swa_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_true(gw_write_file(path, buf, len));
    free(buf);
    memset(err, 0, sizeof *err);
    *m = NULL;
    rotkv_status st = rotkv_model_load(path, NULL, m, err);
    unlink(path);
    return st;
}

static void expect_refused(const gopts *o, const char *needle) {
    rotkv_model *m;
    rotkv_error err;
    if (load_gemma(o, &m, &err) == ROTKV_OK) fail_msg("%s: loaded, expected a refusal naming '%s'", o->arch, needle);
    if (!strstr(err.msg, needle)) fail_msg("%s: message '%s' does not name '%s'", o->arch, err.msg, needle);
}

static void t_loading(void **state) {
    (void)state;
    uint64_t rs = 11;
    for (size_t i = 0; i < sizeof g_w / sizeof g_w[0]; i++) g_w[i] = 0.3f * test_rand_normal(&rs);
    for (int i = 0; i < G_EMBD; i++) g_w[i] = 1.0f + 0.1f * test_rand_normal(&rs);
    struct {
        gopts o;
        uint32_t n_swa_layers;
        const char *layout; /* S/G per layer */
    } ok[] = {
        {{.arch = "gemma2", .n_layer = 4}, 2, "SGSG"},
        {{.arch = "gemma3", .n_layer = 7}, 6, "SSSSSGS"},
        {{.arch = "gemma3", .n_layer = 4, .no_window = true}, 0, "GGGG"},
        {{.arch = "gemma3", .n_layer = 4, .key_u32 = "attention.sliding_window_pattern"}, 3, "SSGS"},
        {{.arch = "gemma2", .n_layer = 3, .pattern_len = 3}, 2, "SGS"},
        {{.arch = "gemma3", .n_layer = 4, .key_f32 = "rope.freq_base_swa"}, 4, "SSSS"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        rotkv_model *m;
        rotkv_error err;
        if (load_gemma(&ok[i].o, &m, &err) != ROTKV_OK) fail_msg("case %zu (%s): %s", i, ok[i].o.arch, err.msg);
        rotkv_model_info info;
        rotkv_model_get_info(m, &info);
        assert_int_equal(info.n_swa, ok[i].o.no_window ? 0 : 4);
        assert_int_equal(info.n_layer_swa, ok[i].n_swa_layers);
        for (uint32_t l = 0; l < ok[i].o.n_layer; l++) /* which layers slide: the ring layers of a context */
            assert_int_equal(m->hp.swa_layer[l] && m->hp.n_swa, ok[i].layout[l] == 'S');
        /* decode a few tokens: finite logits past the window of 4 */
        rotkv_context *c = make_ctx(m, 32, ROTKV_KV_F16, ROTKV_KV_F16);
        rotkv_token toks[12] = {1, 4, 9, 5, 15, 7, 6, 8, 10, 13, 14, 4};
        rotkv_batch b = {.n_tokens = 12, .token = toks};
        assert_int_equal(rotkv_decode(c, &b, &err), ROTKV_OK);
        const float *lg = rotkv_get_logits(c, -1);
        for (int v = 0; v < G_VOCAB; v++) assert_true(isfinite(lg[v]));
        rotkv_context_free(c);
        rotkv_model_free(m);
    }
    /* refusals name the key or tensor */
    expect_refused(&(gopts){.arch = "gemma3", .n_layer = 2, .key_f32 = "attn_logit_softcapping"}, "attn_logit_softcapping");
    expect_refused(&(gopts){.arch = "llama", .n_layer = 2, .key_f32 = "final_logit_softcapping"}, "llama.final_logit_softcapping");
    expect_refused(&(gopts){.arch = "qwen2", .n_layer = 2, .key_u32 = "attention.sliding_window_pattern"},
                   "qwen2.attention.sliding_window_pattern");
    expect_refused(&(gopts){.arch = "gemma2", .n_layer = 2, .key_f32 = "attention.scale"}, "gemma2.attention.scale");
    expect_refused(&(gopts){.arch = "gemma2", .n_layer = 2, .key_f32 = "rope.freq_base_swa"}, "gemma2.rope.freq_base_swa");
    expect_refused(&(gopts){.arch = "gemma2", .n_layer = 3, .pattern_len = 2}, "sliding_window_pattern");
    expect_refused(&(gopts){.arch = "gemma2", .n_layer = 2, .omit = "blk.1.post_ffw_norm.weight"}, "blk.1.post_ffw_norm.weight");
    expect_refused(&(gopts){.arch = "gemma3", .n_layer = 2, .omit = "blk.0.attn_k_norm.weight"}, "blk.0.attn_k_norm.weight");
    expect_refused(&(gopts){.arch = "gemma4", .n_layer = 2}, "gemma4");
}

/* the test models carry Gemma 2's and Gemma 3's real templates, and rotkv renders them as those do */
static void t_chat_templates(void **state) {
    (void)state;
    for (size_t mi = 0; mi < 2; mi++) {
        rotkv_model *m;
        rotkv_error err;
        rotkv_model_params mp = rotkv_model_default_params();
        mp.vocab_only = true;
        if (rotkv_model_load(MODELS[mi], &mp, &m, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        chat_template t;
        char warn[256] = "", e[256] = "";
        if (!chat_template_init_model(&t, m, -1, warn, sizeof warn)) fail_msg("%s: %s", MODELS[mi], warn);
        assert_true(t.recognised);
        assert_int_equal(t.family, CHAT_GEMMA);
        const chat_msg conv[2] = {{"system", "Be brief.", NULL}, {"user", " Hi ", NULL}};
        char *r = chat_template_render(&t, conv, 2, true, -1, e, sizeof e);
        if (mi == 0) { /* Gemma 2 refuses a system message, as its template does */
            assert_null(r);
            assert_string_equal(e, "System role not supported");
        } else {
            assert_non_null(r); /* (the TinyStories vocabulary's BOS) */
            assert_string_equal(r, "<|start_story|><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
        }
        free(r);
        chat_template_free(&t);
        rotkv_model_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_window_attention_vs_reference), cmocka_unit_test(t_ring_rows_and_shift),
        cmocka_unit_test(t_memory_at_4x_window),           cmocka_unit_test(t_generation_with_context_shift),
        cmocka_unit_test(t_prefix_reuse),                  cmocka_unit_test(t_loading),
        cmocka_unit_test(t_chat_templates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
