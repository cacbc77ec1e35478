/* test_moe.c — the mixture-of-experts block (src/moe.c) and the loading of
 * the phi3, qwen3moe and llama-MoE (Mixtral) architectures (src/model.c).
 * The agreement of whole models with llama.cpp is test_golden's job; here:
 *
 *  - moe_route: softmax, top-k (ties to the lower id) and renormalized weights
 *    equal a double-precision reference on random logits;
 *  - matmul_many (one dispatch for many one-token products) gives outputs
 *    bit-identical to matmul's, for several weight types, repacked or not,
 *    with 1 and 3 threads;
 *  - moe_ffn equals a naive double-precision MoE (every expert computed, the
 *    routed ones summed with their weights) for a batch of tokens; a token
 *    gives bit-identical output alone and in the batch, with 1 or 3 threads;
 *    the same for gpt-oss's block (biases, clamped SwiGLU, softmax over the top
 *    k), and moe_route_softmax_topk and swiglu_oai against references;
 *  - decode reads only the routed experts: every other expert's matrices are
 *    mprotect(PROT_NONE)ed and moe_ffn of one token still runs (a read would
 *    be a SIGSEGV); a batch multiplies by each chosen expert exactly once;
 *  - tiny qwen3moe / qwen2moe / llama-MoE / phi3 GGUFs built here load, report their
 *    experts in rotkv_model_get_info, decode to finite logits, and broken
 *    variants are refused with a message naming the key or tensor:
 *    expert_used_count > expert_count or 0, a missing or misshapen expert
 *    tensor, a 2-D expert tensor, a missing router, a shared expert, expert
 *    groups, experts on phi3, a misshapen fused attn_qkv / ffn_up, half of
 *    LongRoPE's factors or LongRoPE outside phi3, an unknown architecture; the early Mixtral layout (a 2-D tensor
 *    per expert) gives the same logits as the 3-D tensors;
 *  - every dimension (and the type) of every tensor of three real test files
 *    corrupted in turn: each load is refused with a message, none crashes;
 *  - the test models in tests/models carry their family's real chat template
 *    and rotkv recognises it (phi3, qwen3, mistral, gpt-oss's harmony). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "chat_template.h"
#include "gguf_writer.h"
#include "model.h"
#include "moe.h"
#include "ops.h"
#include "quant.h"
#include "quant_blocks.h"
#include "rotkv.h"
#include "testutil.h"
#include "threadpool.h"

/* ------------------------------------------------------------- routing */

static void ref_route(const float *logits, int X, int K, bool norm, int *sel, double *w) {
    double p[512], mx = -INFINITY, s = 0;
    for (int e = 0; e < X; e++) mx = logits[e] > mx ? logits[e] : mx;
    for (int e = 0; e < X; e++) s += p[e] = exp(logits[e] - mx);
    bool used[512] = {0};
    double ws = 0;
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int e = 0; e < X; e++)
            if (!used[e] && (best < 0 || p[e] > p[best])) best = e;
        used[best] = true;
        sel[j] = best;
        w[j] = p[best] / s;
        ws += w[j];
    }
    if (norm)
        for (int j = 0; j < K; j++) w[j] /= ws;
}

static void test_route(void **state) {
    (void)state;
    uint64_t rng = 0x5e1ec7;
    const int shapes[][2] = {{8, 2}, {4, 2}, {128, 8}, {60, 4}, {3, 3}, {1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int X = shapes[s][0], K = shapes[s][1];
        for (int trial = 0; trial < 50; trial++) {
            float logits[512], probs[512];
            for (int e = 0; e < X; e++) logits[e] = 2.0f * test_rand_normal(&rng);
            if (trial % 5 == 0 && X > 2) logits[X - 1] = logits[0]; /* a tie: the lower id wins */
            for (int norm = 0; norm < 2; norm++) {
                memcpy(probs, logits, sizeof(float) * (size_t)X);
                int32_t sel[16];
                float w[16];
                int rsel[16];
                double rw[16];
                moe_route(probs, X, K, norm, sel, w);
                ref_route(logits, X, K, norm, rsel, rw);
                for (int j = 0; j < K; j++) {
                    assert_int_equal(sel[j], rsel[j]);
                    assert_true(fabs(w[j] - rw[j]) < 1e-6);
                }
            }
        }
    }
}

/* ------------------------------------------------------- matmul_many */

/* K-quant blocks (no quantizer in quant.c) of random codes with small,
 * finite scales. */
static void random_k_blocks(uint32_t type, uint8_t *dst, int nb, uint64_t *rng) {
    const size_t bs = quant_row_size(type, QK_K);
    for (size_t i = 0; i < (size_t)nb * bs; i++) dst[i] = (uint8_t)(test_rand_u64(rng) >> 56);
    for (int b = 0; b < nb; b++) {
        if (type == GGML_TYPE_Q4_K) {
            block_q4_K *q = (block_q4_K *)(dst + (size_t)b * bs);
            q->d = 0x2000 | (uint16_t)(test_rand_u64(rng) & 0x3ff); /* ~2^-7 */
            q->dmin = 0x1c00 | (uint16_t)(test_rand_u64(rng) & 0x3ff);
        } else {
            block_q6_K *q = (block_q6_K *)(dst + (size_t)b * bs);
            q->d = 0x2000 | (uint16_t)(test_rand_u64(rng) & 0x3ff);
        }
    }
}

static void test_matmul_many_equals_matmul(void **state) {
    (void)state;
    const uint32_t types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                              GGML_TYPE_IQ4_NL, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    enum { NR = 5, COLS = 512 };
    const int64_t rows[NR] = {70, 8, 1, 129, 300};
    uint64_t rng = 0x3a7;
    int n_repacked = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const quant_traits *tr = quant_get_traits(types[ti]);
        assert_non_null(tr);
        weight w[NR];
        void *data[NR];
        float *x[NR], *y[NR], *ref[NR];
        for (int i = 0; i < NR; i++) {
            const size_t rb = quant_row_size(types[ti], COLS);
            data[i] = malloc(rb * (size_t)rows[i]);
            float row[COLS];
            for (int64_t r = 0; r < rows[i]; r++) {
                for (int c = 0; c < COLS; c++) row[c] = 0.1f * test_rand_normal(&rng);
                uint8_t *dst = (uint8_t *)data[i] + (size_t)r * rb;
                if (types[ti] == GGML_TYPE_F32) memcpy(dst, row, rb);
                else if (tr->quantize_row) tr->quantize_row(row, dst, COLS);
                else random_k_blocks(types[ti], dst, COLS / QK_K, &rng);
            }
            w[i] = (weight){.data = data[i], .type = types[ti], .ne0 = COLS, .ne1 = rows[i], .row_bytes = rb};
            x[i] = malloc(sizeof(float) * COLS);
            y[i] = malloc(sizeof(float) * (size_t)rows[i]);
            ref[i] = malloc(sizeof(float) * (size_t)rows[i]);
            for (int c = 0; c < COLS; c++) x[i][c] = test_rand_normal(&rng);
        }
        for (int repack = 0; repack < 2; repack++) {
            uint64_t bytes = 0;
            if (repack)
                for (int i = 0; i < NR; i++) n_repacked += weight_repack(&w[i], &bytes); /* where the type has a layout */
            for (int nth = 1; nth <= 3; nth += 2) {
                threadpool *tp = threadpool_create(nth);
                void *mm = malloc(matmul_scratch_bytes(nth, COLS, NR));
                matvec_req req[NR];
                for (int i = 0; i < NR; i++) {
                    matmul(tp, &w[i], x[i], 1, ref[i], mm);
                    req[i] = (matvec_req){&w[i], x[i], y[i]};
                }
                assert_true(matmul_many(tp, req, NR, mm));
                for (int i = 0; i < NR; i++)
                    if (memcmp(y[i], ref[i], sizeof(float) * (size_t)rows[i]))
                        fail_msg("%s%s, %d threads: request %d differs from matmul", quant_type_name(types[ti]),
                                 repack ? " repacked" : "", nth, i);
                free(mm);
                threadpool_free(tp);
            }
        }
        for (int i = 0; i < NR; i++) {
            free(w[i].repacked);
            free(data[i]);
            free(x[i]);
            free(y[i]);
            free(ref[i]);
        }
    }
    print_message("[ INFO     ] matmul_many: %d matrices compared repacked at kernel level %s\n", n_repacked,
                  rotkv_kernel_isa());
}

/* ------------------------------------------------ the block on its own */

#define E 64  /* n_embd */
#define F 32  /* n_ff_exp */
#define X 8   /* experts */
#define K 2   /* used per token */
#define NT 16 /* tokens */

typedef struct {
    float *mem[X];                /* each expert's gate, up, down on pages of their own */
    size_t bytes;
    float router[X * E];
    weight gate[X], up[X], down[X];
    bool oss;                     /* gpt-oss: router and expert biases, the clamped SwiGLU, softmax over the top k */
    float router_b[X], gate_b[X * F], up_b[X * F], down_b[X * E];
    layer_weights L;
    model_hparams hp;
} moe_layer;

static weight f32_weight(const float *data, int64_t ne0, int64_t ne1) {
    weight w = {.data = data, .type = 0 /* F32 */, .ne0 = ne0, .ne1 = ne1, .row_bytes = (size_t)ne0 * sizeof(float)};
    return w;
}

static void make_layer_ex(moe_layer *ml, uint64_t seed, bool oss) {
    memset(ml, 0, sizeof *ml);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    ml->bytes = (3 * (size_t)E * F * sizeof(float) + page - 1) / page * page;
    uint64_t rng = seed;
    for (int i = 0; i < X * E; i++) ml->router[i] = 0.3f * test_rand_normal(&rng);
    for (int e = 0; e < X; e++) {
        void *p = mmap(NULL, ml->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(p != MAP_FAILED);
        ml->mem[e] = p;
        for (int i = 0; i < 3 * E * F; i++) ml->mem[e][i] = 0.2f * test_rand_normal(&rng);
        ml->gate[e] = f32_weight(ml->mem[e], E, F);
        ml->up[e] = f32_weight(ml->mem[e] + E * F, E, F);
        ml->down[e] = f32_weight(ml->mem[e] + 2 * E * F, F, E);
    }
    ml->L.ffn_gate_inp = f32_weight(ml->router, E, X);
    ml->L.gate_exps = ml->gate;
    ml->L.up_exps = ml->up;
    ml->L.down_exps = ml->down;
    ml->hp.n_embd = E;
    ml->hp.n_expert = X;
    ml->hp.n_expert_used = K;
    ml->hp.n_ff_exp = F;
    ml->hp.expert_weights_norm = true;
    if (!oss) return;
    ml->oss = true;
    for (int i = 0; i < X; i++) ml->router_b[i] = 0.5f * test_rand_normal(&rng);
    for (int i = 0; i < X * F; i++) { /* gate and up beyond the clamp at 7 for some units */
        ml->gate_b[i] = 4.0f * test_rand_normal(&rng);
        ml->up_b[i] = 4.0f * test_rand_normal(&rng);
    }
    for (int i = 0; i < X * E; i++) ml->down_b[i] = 0.3f * test_rand_normal(&rng);
    ml->L.ffn_gate_inp_b = ml->router_b;
    ml->L.gate_exps_b = ml->gate_b;
    ml->L.up_exps_b = ml->up_b;
    ml->L.down_exps_b = ml->down_b;
    ml->hp.expert_weights_norm = false;
    ml->hp.expert_softmax_topk = ml->hp.ffn_swiglu_oai = true;
}

static void make_layer(moe_layer *ml, uint64_t seed) { make_layer_ex(ml, seed, false); }

static void free_layer(moe_layer *ml) {
    for (int e = 0; e < X; e++) munmap(ml->mem[e], ml->bytes);
}

/* out (E) of one token, in double: every expert's FFN, the routed ones summed */
static void ref_moe(const moe_layer *ml, const float *x, double *out, int *sel) {
    float logits[X];
    for (int e = 0; e < X; e++) {
        double s = 0;
        for (int d = 0; d < E; d++) s += (double)ml->router[e * E + d] * x[d];
        logits[e] = (float)s + (ml->oss ? ml->router_b[e] : 0.0f);
    }
    double w[K];
    ref_route(logits, X, K, true, sel, w); /* (gpt-oss's softmax over the top k logits is the same weights) */
    memset(out, 0, sizeof(double) * E);
    for (int j = 0; j < K; j++) {
        const float *m = ml->mem[sel[j]];
        double h[F];
        for (int f = 0; f < F; f++) {
            double g = 0, u = 0;
            for (int d = 0; d < E; d++) {
                g += (double)m[f * E + d] * x[d];
                u += (double)m[E * F + f * E + d] * x[d];
            }
            if (ml->oss) { /* the clamped SwiGLU (ggml_swiglu_oai) on the biased products */
                g = fmin(g + ml->gate_b[sel[j] * F + f], 7.0);
                u = fmax(-7.0, fmin(7.0, u + ml->up_b[sel[j] * F + f]));
                h[f] = g / (1 + exp(-1.702 * g)) * (u + 1);
            } else {
                h[f] = g / (1 + exp(-g)) * u;
            }
        }
        for (int d = 0; d < E; d++) {
            double y = 0;
            for (int f = 0; f < F; f++) y += (double)m[2 * E * F + d * F + f] * h[f];
            if (ml->oss) y += ml->down_b[sel[j] * E + d];
            out[d] += w[j] * y;
        }
    }
}

static void moe_ffn_vs_reference(bool oss) {
    moe_layer ml;
    make_layer_ex(&ml, 0xabcdef, oss);
    uint64_t rng = 42;
    float x[NT * E];
    for (int i = 0; i < NT * E; i++) x[i] = test_rand_normal(&rng);
    float out[NT * E], one[E];
    void *mm = malloc(matmul_scratch_bytes(3, E, NT > 2 * X ? NT : 2 * X));
    for (int nth = 1; nth <= 3; nth += 2) {
        threadpool *tp = threadpool_create(nth);
        moe_scratch s;
        assert_true(moe_scratch_init(&s, &ml.hp, NT));
        double t_ms = 0;
        assert_true(moe_ffn(tp, &ml.hp, &ml.L, x, NT, out, &s, mm, &t_ms));
        /* each chosen expert multiplied once for the whole batch */
        bool chosen[X] = {0};
        int n_chosen = 0;
        for (int t = 0; t < NT; t++) {
            double ref[E];
            int sel[K];
            ref_moe(&ml, x + t * E, ref, sel);
            for (int j = 0; j < K; j++) {
                n_chosen += !chosen[sel[j]];
                chosen[sel[j]] = true;
            }
            for (int d = 0; d < E; d++)
                if (fabs(out[t * E + d] - ref[d]) > 1e-4 * (1 + fabs(ref[d])))
                    fail_msg("token %d dim %d: %g, reference %g", t, d, out[t * E + d], ref[d]);
        }
        assert_int_equal(s.expert_matmuls, (uint64_t)n_chosen);
        assert_int_equal(s.expert_rows, (uint64_t)NT * K);
        assert_true(n_chosen > K); /* the batch really spreads over experts */
        /* alone = in the batch, bit for bit */
        for (int t = 0; t < NT; t++) {
            assert_true(moe_ffn(tp, &ml.hp, &ml.L, x + t * E, 1, one, &s, mm, &t_ms));
            assert_memory_equal(one, out + t * E, sizeof one);
        }
        moe_scratch_free(&s);
        threadpool_free(tp);
    }
    free(mm);
    free_layer(&ml);
}

static void test_moe_ffn_matches_reference(void **state) {
    (void)state;
    moe_ffn_vs_reference(false);
}

/* gpt-oss's block: router bias, the top k logits weighted by their softmax, the experts' gate/up/down
 * biases and the clamped SwiGLU (biases of std 4, so a few percent of the units are clamped) */
static void test_moe_ffn_gptoss_matches_reference(void **state) {
    (void)state;
    moe_ffn_vs_reference(true);
    uint64_t rng = 5;
    for (int trial = 0; trial < 200; trial++) { /* moe_route_softmax_topk against the reference */
        const int n_x = 2 + trial % 30, k = 1 + trial % (n_x < 4 ? n_x : 4);
        float logits[32];
        for (int e = 0; e < n_x; e++) logits[e] = 3.0f * test_rand_normal(&rng);
        if (trial % 7 == 0) logits[n_x - 1] = logits[0]; /* a tie: the lower id first */
        int32_t sel[8];
        float w[8];
        int rsel[8];
        double rw[8];
        moe_route_softmax_topk(logits, n_x, k, sel, w);
        ref_route(logits, n_x, k, true, rsel, rw);
        for (int j = 0; j < k; j++) {
            assert_int_equal(sel[j], rsel[j]);
            assert_true(fabs(w[j] - rw[j]) < 1e-6);
        }
    }
    const float g[] = {-20, -1, 0, 0.5f, 6.9f, 7, 8, 100}, u[] = {-9, -7, -0.5f, 0, 1, 6.5f, 7.5f, 50};
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            float a = g[i];
            swiglu_oai(&a, &u[j], 1);
            const double x = fmin(g[i], 7.0), y = fmax(-7.0, fmin(7.0, u[j]));
            const double want = x / (1 + exp(-1.702 * x)) * (y + 1);
            assert_true(fabs(a - want) < 1e-5 * (1 + fabs(want)));
        }
}

static void test_decode_reads_only_routed_experts(void **state) {
    (void)state;
    moe_layer ml;
    make_layer(&ml, 0x1234);
    uint64_t rng = 7;
    threadpool *tp = threadpool_create(2);
    void *mm = malloc(matmul_scratch_bytes(2, E, moe_scratch_tokens(&ml.hp)));
    moe_scratch s;
    assert_true(moe_scratch_init(&s, &ml.hp, 1));
    for (int trial = 0; trial < 8; trial++) {
        float x[E], out[E];
        for (int d = 0; d < E; d++) x[d] = test_rand_normal(&rng);
        double ref[E];
        int sel[K];
        ref_moe(&ml, x, ref, sel);
        for (int e = 0; e < X; e++)
            if (e != sel[0] && e != sel[1]) assert_int_equal(mprotect(ml.mem[e], ml.bytes, PROT_NONE), 0);
        double t_ms = 0;
        const uint64_t before = s.expert_matmuls;
        assert_true(moe_ffn(tp, &ml.hp, &ml.L, x, 1, out, &s, mm, &t_ms)); /* would fault on an unrouted expert */
        assert_int_equal(s.expert_matmuls - before, K);
        for (int e = 0; e < X; e++) assert_int_equal(mprotect(ml.mem[e], ml.bytes, PROT_READ | PROT_WRITE), 0);
        for (int d = 0; d < E; d++) assert_true(fabs(out[d] - ref[d]) < 1e-4 * (1 + fabs(ref[d])));
    }
    moe_scratch_free(&s);
    free(mm);
    threadpool_free(tp);
    free_layer(&ml);
}

/* ------------------------------------------- tiny GGUFs of each architecture */

#define M_VOCAB 16
#define M_EMBD 32
#define M_HEAD 4
#define M_HEAD_KV 2
#define M_HD 8
#define M_FF 32
#define M_LAYER 2

static const char *const VOCAB[M_VOCAB] = {
    "<unk>", "<s>", "</s>", "\u2581", "\u2581a", "\u2581b", "a", "b",
    "c", "ab", "\u2581ab", "<0x0A>", "<0x20>", "d", "e", "\u2581the"};

typedef struct {
    const char *arch;          /* qwen3moe, llama, phi3, ... */
    uint32_t n_expert, n_expert_used; /* 0: key not written */
    const char *omit_tensor;   /* a tensor left out (any layer's name with %d = 0) */
    const char *bad_tensor;    /* a tensor written with its last dimension one too large */
    const char *flat_tensor;   /* a 3-D tensor written as 2-D [ne0, ne1 * ne2] */
    const char *extra_key;     /* "<arch>.<suffix>" written as u32 2 */
    const char *extra_tensor;  /* a 1-D tensor of M_HD / 2 values added */
    bool split_experts;        /* experts as 2-D ffn_{gate,up,down}.<e> tensors (early Mixtral files) */
    const char *omit_key;      /* gpt-oss: a key suffix left out */
    const char *extra_f32_key; /* "<arch>.<suffix>" written as f32 0.5 */
} arch_opts;

static float g_data[1 << 16];

static void tensor(gguf_builder *g, const arch_opts *o, const char *name, int nd, uint64_t ne0, uint64_t ne1,
                   uint64_t ne2) {
    if (o->omit_tensor && !strcmp(name, o->omit_tensor)) return;
    uint64_t ne[3] = {ne0, ne1, ne2};
    if (o->bad_tensor && !strcmp(name, o->bad_tensor)) ne[nd - 1]++;
    if (o->flat_tensor && !strcmp(name, o->flat_tensor) && nd == 3) {
        ne[1] *= ne[2];
        nd = 2;
    }
    gb_tensor_f32(g, name, (uint32_t)nd, ne, g_data);
}

static uint8_t *build_arch(const arch_opts *o, size_t *len) {
    gguf_builder g;
    gb_init(&g, 3);
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, o->arch), k)
    gb_kv_str(&g, "general.architecture", o->arch);
    gb_kv_u32(&g, KEY("context_length"), 64);
    gb_kv_u32(&g, KEY("embedding_length"), M_EMBD);
    gb_kv_u32(&g, KEY("block_count"), M_LAYER);
    gb_kv_u32(&g, KEY("feed_forward_length"), M_FF);
    gb_kv_u32(&g, KEY("attention.head_count"), M_HEAD);
    gb_kv_u32(&g, KEY("attention.head_count_kv"), M_HEAD_KV);
    gb_kv_u32(&g, KEY("attention.key_length"), M_HD);
    gb_kv_u32(&g, KEY("attention.value_length"), M_HD);
    gb_kv_f32(&g, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    if (o->n_expert) gb_kv_u32(&g, KEY("expert_count"), o->n_expert);
    if (o->n_expert_used) gb_kv_u32(&g, KEY("expert_used_count"), o->n_expert_used);
    if (!strcmp(o->arch, "qwen3moe") || !strcmp(o->arch, "qwen2moe")) gb_kv_u32(&g, KEY("expert_feed_forward_length"), M_FF);
    if (!strcmp(o->arch, "qwen2moe")) gb_kv_u32(&g, KEY("expert_shared_feed_forward_length"), 2 * M_FF);
    if (!strcmp(o->arch, "gpt-oss")) {
        gb_kv_u32(&g, KEY("expert_feed_forward_length"), M_FF);
        if (!o->omit_key || strcmp(o->omit_key, "attention.sliding_window")) gb_kv_u32(&g, KEY("attention.sliding_window"), 4);
        gb_kv_str(&g, KEY("rope.scaling.type"), "yarn");
        gb_kv_f32(&g, KEY("rope.scaling.factor"), 8.0f);
        gb_kv_u32(&g, KEY("rope.scaling.original_context_length"), 16);
    }
    if (o->extra_key) gb_kv_u32(&g, o->extra_key, 2);
    if (o->extra_f32_key) gb_kv_f32(&g, o->extra_f32_key, 0.5f);
#undef KEY
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    gb_kv_arr_str(&g, "tokenizer.ggml.tokens", M_VOCAB, VOCAB);
    float scores[M_VOCAB];
    int32_t types[M_VOCAB];
    for (int i = 0; i < M_VOCAB; i++) {
        scores[i] = -(float)i;
        types[i] = i == 0 ? 2 : i < 3 ? 3 : (i == 11 || i == 12) ? 6 : 1;
    }
    gb_kv_arr(&g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, M_VOCAB, scores);
    gb_kv_arr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, M_VOCAB, types);
    gb_kv_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    gb_kv_u32(&g, "tokenizer.ggml.eos_token_id", 2);

    const bool phi3 = !strcmp(o->arch, "phi3"), qk_norm = !strcmp(o->arch, "qwen3moe");
    const bool qwen2moe = !strcmp(o->arch, "qwen2moe"), oss = !strcmp(o->arch, "gpt-oss");
    const uint64_t Q = M_HEAD * M_HD, KV = M_HEAD_KV * M_HD, XE = o->n_expert;
    tensor(&g, o, "token_embd.weight", 2, M_EMBD, M_VOCAB, 1);
    tensor(&g, o, "output_norm.weight", 1, M_EMBD, 1, 1);
    if (o->extra_tensor) gb_tensor_f32(&g, o->extra_tensor, 1, (uint64_t[]){M_HD / 2}, g_data);
    for (int l = 0; l < M_LAYER; l++) {
        char n[64];
#define T(s, nd, a, b, c) (snprintf(n, sizeof n, "blk.%d." s, l), tensor(&g, o, n, nd, a, b, c))
        T("attn_norm.weight", 1, M_EMBD, 1, 1);
        if (phi3) {
            T("attn_qkv.weight", 2, M_EMBD, Q + 2 * KV, 1);
        } else {
            T("attn_q.weight", 2, M_EMBD, Q, 1);
            T("attn_k.weight", 2, M_EMBD, KV, 1);
            T("attn_v.weight", 2, M_EMBD, KV, 1);
        }
        if (oss) {
            T("attn_q.bias", 1, Q, 1, 1);
            T("attn_k.bias", 1, KV, 1, 1);
            T("attn_v.bias", 1, KV, 1, 1);
            T("attn_output.bias", 1, M_EMBD, 1, 1);
            T("attn_sinks.weight", 1, M_HEAD, 1, 1);
            T("ffn_gate_inp.bias", 1, XE, 1, 1);
            T("ffn_gate_exps.bias", 2, M_FF, XE, 1);
            T("ffn_up_exps.bias", 2, M_FF, XE, 1);
            T("ffn_down_exps.bias", 2, M_EMBD, XE, 1);
        }
        if (qwen2moe) {
            T("attn_q.bias", 1, Q, 1, 1);
            T("attn_k.bias", 1, KV, 1, 1);
            T("attn_v.bias", 1, KV, 1, 1);
            T("ffn_gate_inp_shexp.weight", 2, M_EMBD, 1, 1);
            T("ffn_gate_shexp.weight", 2, M_EMBD, 2 * M_FF, 1);
            T("ffn_up_shexp.weight", 2, M_EMBD, 2 * M_FF, 1);
            T("ffn_down_shexp.weight", 2, 2 * M_FF, M_EMBD, 1);
        }
        if (qk_norm) {
            T("attn_q_norm.weight", 1, M_HD, 1, 1);
            T("attn_k_norm.weight", 1, M_HD, 1, 1);
        }
        T("attn_output.weight", 2, Q, M_EMBD, 1);
        if (oss) T("post_attention_norm.weight", 1, M_EMBD, 1, 1);
        else T("ffn_norm.weight", 1, M_EMBD, 1, 1);
        if (XE) {
            T("ffn_gate_inp.weight", 2, M_EMBD, XE, 1);
            if (o->split_experts) {
                for (uint64_t e = 0; e < XE; e++) {
                    snprintf(n, sizeof n, "blk.%d.ffn_gate.%d.weight", l, (int)e);
                    gb_tensor_f32(&g, n, 2, (uint64_t[]){M_EMBD, M_FF}, g_data + (size_t)M_EMBD * M_FF * e);
                    snprintf(n, sizeof n, "blk.%d.ffn_up.%d.weight", l, (int)e);
                    gb_tensor_f32(&g, n, 2, (uint64_t[]){M_EMBD, M_FF}, g_data + (size_t)M_EMBD * M_FF * e);
                    snprintf(n, sizeof n, "blk.%d.ffn_down.%d.weight", l, (int)e);
                    if (!o->omit_tensor || strcmp(n, o->omit_tensor))
                        gb_tensor_f32(&g, n, 2, (uint64_t[]){M_FF, M_EMBD}, g_data + (size_t)M_EMBD * M_FF * e);
                }
            } else {
                T("ffn_gate_exps.weight", 3, M_EMBD, M_FF, XE);
                T("ffn_up_exps.weight", 3, M_EMBD, M_FF, XE);
                T("ffn_down_exps.weight", 3, M_FF, M_EMBD, XE);
            }
        } else if (phi3) {
            T("ffn_up.weight", 2, M_EMBD, 2 * M_FF, 1);
            T("ffn_down.weight", 2, M_FF, M_EMBD, 1);
        } else {
            T("ffn_gate.weight", 2, M_EMBD, M_FF, 1);
            T("ffn_up.weight", 2, M_EMBD, M_FF, 1);
            T("ffn_down.weight", 2, M_FF, M_EMBD, 1);
        }
#undef T
    }
    uint8_t *buf = gb_finish(&g, len);
    gb_free(&g);
    return buf;
}

static rotkv_status load_arch(const arch_opts *o, rotkv_model **m, rotkv_error *err) {
    size_t len;
    uint8_t *buf = build_arch(o, &len);
    char path[] = "/tmp/rotkv_test_moe_XXXXXX";
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

static void fill_data(void) {
    uint64_t rng = 99;
    for (size_t i = 0; i < sizeof g_data / sizeof g_data[0]; i++) g_data[i] = 0.3f * test_rand_normal(&rng);
    for (int i = 0; i < M_EMBD; i++) g_data[i] = 1.0f + 0.1f * test_rand_normal(&rng); /* norms start here */
}

static void test_archs_load_and_decode(void **state) {
    (void)state;
    fill_data();
    const arch_opts cases[] = {{.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2},
                               {.arch = "llama", .n_expert = 4, .n_expert_used = 2},
                               {.arch = "llama", .n_expert = 3, .n_expert_used = 3},
                               {.arch = "qwen2moe", .n_expert = 4, .n_expert_used = 2},
                               {.arch = "gpt-oss", .n_expert = 4, .n_expert_used = 2},
                               {.arch = "phi3"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rotkv_model *m;
        rotkv_error err;
        if (load_arch(&cases[i], &m, &err) != ROTKV_OK) fail_msg("%s: %s", cases[i].arch, err.msg);
        rotkv_model_info info;
        rotkv_model_get_info(m, &info);
        assert_string_equal(info.arch, cases[i].arch);
        assert_int_equal(info.n_expert, cases[i].n_expert);
        assert_int_equal(info.n_expert_used, cases[i].n_expert_used);
        if (cases[i].n_expert) assert_int_equal(info.n_ff_exp, M_FF);
        rotkv_context_params cp = rotkv_context_default_params();
        cp.n_ctx = 32;
        cp.n_threads = 2;
        rotkv_context *c;
        if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        rotkv_token toks[6] = {1, 4, 9, 5, 15, 7};
        int8_t want[6] = {1, 1, 1, 1, 1, 1};
        rotkv_batch b = {.n_tokens = 6, .token = toks, .logits = want};
        if (rotkv_decode(c, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        float last[M_VOCAB];
        memcpy(last, rotkv_get_logits(c, 5), sizeof last);
        for (int t = 0; t < 6; t++)
            for (int v = 0; v < M_VOCAB; v++) assert_true(isfinite(rotkv_get_logits(c, t)[v]));
        /* the same tokens one at a time through the cache: the same last logits */
        rotkv_context *c1;
        if (rotkv_context_create(m, &cp, &c1, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        for (int t = 0; t < 6; t++) {
            rotkv_batch one = {.n_tokens = 1, .token = &toks[t]};
            if (rotkv_decode(c1, &one, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        }
        const float *lg = rotkv_get_logits(c1, -1);
        for (int v = 0; v < M_VOCAB; v++) assert_true(fabsf(lg[v] - last[v]) < 1e-4f * (1 + fabsf(last[v])));
        rotkv_context_free(c1);
        rotkv_context_free(c);
        rotkv_model_free(m);
    }
}

static void refused(const arch_opts *o, rotkv_status code, const char *needle) {
    rotkv_model *m;
    rotkv_error err;
    const rotkv_status st = load_arch(o, &m, &err);
    if (st == ROTKV_OK) {
        rotkv_model_free(m);
        fail_msg("%s variant (%s) loaded", o->arch, needle);
    }
    assert_null(m);
    if (st != code || !strstr(err.msg, needle))
        fail_msg("%s: status %d, message '%s'; expected status %d and '%s'", o->arch, st, err.msg, code, needle);
}

/* The early Mixtral layout (one 2-D tensor per expert) gives the same logits
 * as the 3-D tensors holding the same values. */
static void test_split_experts_equal_3d(void **state) {
    (void)state;
    fill_data();
    float lg[2][M_VOCAB];
    for (int split = 0; split < 2; split++) {
        arch_opts o = {.arch = "llama", .n_expert = 4, .n_expert_used = 2, .split_experts = split};
        rotkv_model *m;
        rotkv_error err;
        if (load_arch(&o, &m, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        rotkv_context *c;
        rotkv_context_params cp = rotkv_context_default_params();
        cp.n_ctx = 16;
        if (rotkv_context_create(m, &cp, &c, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        rotkv_token toks[4] = {1, 9, 4, 15};
        rotkv_batch b = {.n_tokens = 4, .token = toks};
        if (rotkv_decode(c, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        memcpy(lg[split], rotkv_get_logits(c, -1), sizeof lg[split]);
        rotkv_context_free(c);
        rotkv_model_free(m);
    }
    assert_memory_equal(lg[0], lg[1], sizeof lg[0]);
    refused(&(arch_opts){.arch = "llama", .n_expert = 4, .n_expert_used = 2, .split_experts = true,
                         .omit_tensor = "blk.1.ffn_down.3.weight"},
            ROTKV_ERR_FORMAT, "'blk.1.ffn_down.3.weight' is missing");
}

static void test_refused_variants(void **state) {
    (void)state;
    fill_data();
    const rotkv_status FMT = ROTKV_ERR_FORMAT, UNS = ROTKV_ERR_UNSUPPORTED;
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 5}, FMT, "expert_used_count 5");
    refused(&(arch_opts){.arch = "llama", .n_expert = 4, .n_expert_used = 9}, FMT, "llama.expert_used_count 9");
    refused(&(arch_opts){.arch = "llama", .n_expert = 4}, FMT, "'llama.expert_used_count' is missing");
    refused(&(arch_opts){.arch = "qwen3moe"}, FMT, "'qwen3moe.expert_count' is missing");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .omit_tensor = "blk.0.ffn_down_exps.weight"},
            FMT, "'blk.0.ffn_down_exps.weight' is missing");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .omit_tensor = "blk.1.ffn_gate_inp.weight"},
            FMT, "'blk.1.ffn_gate_inp.weight' is missing");
    refused(&(arch_opts){.arch = "llama", .n_expert = 4, .n_expert_used = 2, .bad_tensor = "blk.1.ffn_up_exps.weight"},
            FMT, "'blk.1.ffn_up_exps.weight'");
    refused(&(arch_opts){.arch = "llama", .n_expert = 4, .n_expert_used = 2, .bad_tensor = "blk.0.ffn_gate_inp.weight"},
            FMT, "'blk.0.ffn_gate_inp.weight'");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .flat_tensor = "blk.0.ffn_gate_exps.weight"},
            FMT, "expected [32, 32, 4]");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .extra_key = "qwen3moe.expert_shared_count"},
            UNS, "shared experts");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .extra_tensor = "blk.0.ffn_up_shexp.weight"},
            UNS, "shared experts (tensor blk.0.ffn_up_shexp.weight)");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .extra_key = "qwen3moe.expert_group_count"},
            UNS, "expert_group_count 2");
    refused(&(arch_opts){.arch = "phi3", .n_expert = 4, .n_expert_used = 2}, UNS, "phi3.expert_count is 4");
    refused(&(arch_opts){.arch = "qwen2moe", .n_expert = 4, .n_expert_used = 2, .omit_tensor = "blk.1.ffn_gate_inp_shexp.weight"},
            FMT, "'blk.1.ffn_gate_inp_shexp.weight' is missing");
    refused(&(arch_opts){.arch = "qwen2moe", .n_expert = 4, .n_expert_used = 2, .bad_tensor = "blk.0.ffn_down_shexp.weight"},
            FMT, "'blk.0.ffn_down_shexp.weight'");
    refused(&(arch_opts){.arch = "qwen2moe", .n_expert = 4, .n_expert_used = 2, .omit_tensor = "blk.0.attn_k.bias"},
            FMT, "'blk.0.attn_k.bias' is missing");
    refused(&(arch_opts){.arch = "phi3", .bad_tensor = "blk.0.attn_qkv.weight"}, FMT, "'blk.0.attn_qkv.weight'");
    refused(&(arch_opts){.arch = "phi3", .omit_tensor = "blk.1.attn_qkv.weight"}, FMT, "'blk.1.attn_q.weight' is missing");
    refused(&(arch_opts){.arch = "phi3", .bad_tensor = "blk.1.ffn_up.weight"}, FMT, "'blk.1.ffn_up.weight'");
    refused(&(arch_opts){.arch = "phi3", .extra_tensor = "rope_factors_long.weight"}, FMT,
            "'rope_factors_short.weight' is missing");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .extra_tensor = "rope_factors_short.weight"},
            UNS, "LongRoPE factors (rope_factors_long/short) are supported for phi3 only");
    refused(&(arch_opts){.arch = "llama", .extra_key = "llama.rope.scaling.attn_factor"}, UNS,
            "llama.rope.scaling.attn_factor 2: supported for phi3 LongRoPE only");
    refused(&(arch_opts){.arch = "phimoe"}, UNS, "unsupported architecture 'phimoe'");
    /* gpt-oss: its own tensors are required, its window key too; no pattern, no log multiplier */
    const arch_opts oss = {.arch = "gpt-oss", .n_expert = 4, .n_expert_used = 2};
    arch_opts o = oss;
    o.omit_tensor = "blk.1.attn_sinks.weight";
    refused(&o, FMT, "'blk.1.attn_sinks.weight' is missing");
    o.omit_tensor = "blk.0.ffn_down_exps.bias";
    refused(&o, FMT, "'blk.0.ffn_down_exps.bias' is missing");
    o.omit_tensor = "blk.0.attn_output.bias";
    refused(&o, FMT, "'blk.0.attn_output.bias' is missing");
    o.omit_tensor = "blk.1.post_attention_norm.weight";
    refused(&o, FMT, "'blk.1.post_attention_norm.weight' is missing");
    o.omit_tensor = NULL;
    o.bad_tensor = "blk.0.ffn_up_exps.bias";
    refused(&o, FMT, "'blk.0.ffn_up_exps.bias'");
    o = oss;
    o.omit_key = "attention.sliding_window";
    refused(&o, FMT, "'gpt-oss.attention.sliding_window' is missing");
    o = oss;
    o.extra_key = "gpt-oss.attention.sliding_window_pattern";
    refused(&o, UNS, "'gpt-oss.attention.sliding_window_pattern' is not supported");
    o = oss;
    o.extra_f32_key = "gpt-oss.rope.scaling.yarn_log_multiplier";
    refused(&o, UNS, "yarn_log_multiplier");
    o = oss;
    o.extra_key = "gpt-oss.rope.dimension_count"; /* 2 of the head's 8 */
    refused(&o, UNS, "must equal the head size");
    refused(&(arch_opts){.arch = "qwen3moe", .n_expert = 4, .n_expert_used = 2, .extra_key = "qwen3moe.attention.sliding_window_pattern"},
            UNS, "sliding_window_pattern");
}

/* Every dimension of every tensor of the real qwen3moe and phi3 test files made
 * one larger (and, separately, every tensor's type made unknown): each load
 * fails with a message, none crashes or loads. */
static void test_corrupted_shapes_refused(void **state) {
    (void)state;
    const char *files[] = {"tests/models/syn-qwen3moe-Q4_0.gguf", "tests/models/syn-phi3-Q8_0.gguf",
                           "tests/models/syn-mixtral-Q8_0.gguf", "tests/models/syn-gptoss-MXFP4_MOE.gguf"};
    int n_loads = 0;
    for (size_t fi = 0; fi < sizeof files / sizeof files[0]; fi++) {
        size_t len;
        uint8_t *orig = (uint8_t *)test_read_file(files[fi], &len);
        assert_non_null(orig);
        char err[256];
        gguf_file *g = gguf_open_buffer(orig, len, err, sizeof err);
        assert_non_null(g);
        uint8_t *buf = malloc(len);
        char path[] = "/tmp/rotkv_test_moe_bad_XXXXXX";
        const int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        for (uint64_t ti = 0; ti < g->n_tensors; ti++) {
            const gguf_tensor *t = &g->tensors[ti];
            const size_t ne_at = t->info_offset + 8 + t->name.len + 4; /* name (u64 length + bytes), n_dims */
            for (uint32_t d = 0; d <= t->n_dims; d++) {
                memcpy(buf, orig, len);
                if (d < t->n_dims) gw_patch_u64(buf, ne_at + 8 * d, t->ne[d] + 1);
                else gw_patch_u32(buf, ne_at + 8 * t->n_dims, 99); /* the type */
                assert_true(gw_write_file(path, buf, len));
                rotkv_model *m = NULL;
                rotkv_error e = {0};
                const rotkv_status st = rotkv_model_load(path, NULL, &m, &e);
                char name[96];
                if (st == ROTKV_OK)
                    fail_msg("%s: tensor %s with %s changed loaded", files[fi], gguf_str_cpy(t->name, name, sizeof name),
                             d < t->n_dims ? "a dimension" : "its type");
                assert_null(m);
                assert_true(e.msg[0] != 0);
                n_loads++;
            }
        }
        unlink(path);
        free(buf);
        gguf_close(g);
        free(orig);
    }
    print_message("[ INFO     ] %d corrupted loads refused\n", n_loads);
}

static void test_models_chat_templates(void **state) {
    (void)state;
    const struct {
        const char *file;
        chat_family family;
    } cases[] = {{"tests/models/syn-phi3-Q8_0.gguf", CHAT_PHI3},
                 {"tests/models/syn-qwen3moe-Q8_0.gguf", CHAT_QWEN3},
                 {"tests/models/syn-mixtral-Q8_0.gguf", CHAT_MISTRAL},
                 {"tests/models/syn-gptoss-Q8_0.gguf", CHAT_HARMONY}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rotkv_model *m;
        rotkv_error err;
        rotkv_model_params mp = rotkv_model_default_params();
        mp.vocab_only = true;
        if (rotkv_model_load(cases[i].file, &mp, &m, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        chat_template t;
        char warn[256] = "";
        if (!chat_template_init_model(&t, m, -1, warn, sizeof warn)) fail_msg("%s: %s", cases[i].file, warn);
        assert_true(t.recognised);
        if (t.family != cases[i].family)
            fail_msg("%s: family %s, expected %s", cases[i].file, chat_family_name(t.family),
                     chat_family_name(cases[i].family));
        chat_template_free(&t);
        rotkv_model_free(m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route),
        cmocka_unit_test(test_matmul_many_equals_matmul),
        cmocka_unit_test(test_moe_ffn_matches_reference),
        cmocka_unit_test(test_moe_ffn_gptoss_matches_reference),
        cmocka_unit_test(test_decode_reads_only_routed_experts),
        cmocka_unit_test(test_archs_load_and_decode),
        cmocka_unit_test(test_split_experts_equal_3d),
        cmocka_unit_test(test_refused_variants),
        cmocka_unit_test(test_corrupted_shapes_refused),
        cmocka_unit_test(test_models_chat_templates),
    };
    return cmocka_run_group_tests_name("mixture of experts, phi3", tests, NULL, NULL);
}
