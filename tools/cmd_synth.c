/* cmd_synth.c — `rotkv synth`: writes a GGUF with the exact tensor shapes and
 * hyperparameters of a real model (Llama-3.2-1B, Qwen2.5-0.5B,
 * Llama-3.1-8B; the mixture-of-experts Qwen3-30B-A3B, OLMoE-1B-7B's shape as
 * a qwen3moe, Mixtral-8x7B) but seeded random weights, and the tokenizer of a
 * vocab GGUF.
 * For measuring speed at real sizes without downloading weights; llama.cpp
 * loads the same file, so both engines can be timed on it.
 *
 * Layout as llama.cpp's converter writes it: GGUF v3, metadata
 * (general.*, <arch>.*, then every tokenizer.* key of --vocab copied
 * verbatim), tensor infos, data aligned to 32 bytes. 2-D weights are in
 * --type (quantized with quant.c's reference quantizers), norms, biases and
 * llama3 rope frequency factors in f32. The vocabulary size is the vocab
 * file's token count (128256 for vocab-llama3.gguf, 151936 for
 * vocab-qwen3.gguf — Qwen2.5's padded size). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

typedef struct {
    const char *name, *arch, *display;
    uint32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx;
    float rope_base, eps;
    bool tied, qkv_bias;
    float rope_scale_factor; /* llama3 rope scaling factor, 0 if none */
    /* mixture of experts (0 experts: dense); qwen3moe also has per-head q/k norms */
    uint32_t n_expert, n_expert_used, n_ff_exp;
    /* gemma2 / gemma3: the sliding window (llama.cpp's layer pattern), gemma3's local RoPE base
     * and the global layers' linear RoPE scaling (0: none) */
    uint32_t n_swa;
    float rope_base_swa, rope_linear;
} synth_shape;

static const synth_shape k_shapes[] = {
    {"llama3.2-1b", "llama", "Llama-3.2-1B (synthetic weights)", 2048, 16, 32, 8, 64, 8192, 131072, 500000.0f, 1e-5f,
     true, false, 32.0f, 0, 0, 0, 0, 0.0f, 0.0f},
    {"qwen2.5-0.5b", "qwen2", "Qwen2.5-0.5B (synthetic weights)", 896, 24, 14, 2, 64, 4864, 32768, 1000000.0f, 1e-6f,
     true, true, 0.0f, 0, 0, 0, 0, 0.0f, 0.0f},
    {"llama3.1-8b", "llama", "Llama-3.1-8B (synthetic weights)", 4096, 32, 32, 8, 128, 14336, 131072, 500000.0f, 1e-5f,
     false, false, 8.0f, 0, 0, 0, 0, 0.0f, 0.0f},
    /* 128 experts of 768, 8 routed: ~3.3B of 30.5B parameters active; ~17 GB in Q4_0 (--layers 24 halves it) */
    {"qwen3-30b-a3b", "qwen3moe", "Qwen3-30B-A3B (synthetic weights)", 2048, 48, 32, 4, 128, 6144, 40960, 1000000.0f,
     1e-6f, false, false, 0.0f, 128, 8, 768, 0, 0.0f, 0.0f},
    /* OLMoE-1B-7B's sizes (64 experts of 1024, 8 routed, 16 heads without GQA) in a qwen3moe layer (OLMoE's own
     * q/k norms span all heads; qwen3moe's are per head, the same work): ~4 GB in Q4_0 */
    {"olmoe-1b-7b", "qwen3moe", "OLMoE-1B-7B shape as qwen3moe (synthetic weights)", 2048, 16, 16, 16, 128, 1024, 4096,
     10000.0f, 1e-5f, false, false, 0.0f, 64, 8, 1024, 0, 0.0f, 0.0f},
    /* llama with llama.expert_count as Mixtral is written: 8 experts of 14336, 2 routed; ~26 GB in Q4_0
     * (--layers 12 for ~10 GB) */
    {"mixtral-8x7b", "llama", "Mixtral-8x7B (synthetic weights)", 4096, 32, 32, 8, 128, 14336, 32768, 1000000.0f, 1e-5f,
     false, false, 0.0f, 8, 2, 14336, 0, 0.0f, 0.0f},
    /* Gemma-3-4B: 34 layers, 5 sliding-window (1024) to 1 global, head 256, linear RoPE scaling 8 on the
     * global layers, local base 10000; ~2.3 GB in Q4_0 with its 262k vocabulary, less with a smaller one */
    {"gemma3-4b", "gemma3", "Gemma-3-4B (synthetic weights)", 2560, 34, 8, 4, 256, 10240, 131072, 1000000.0f, 1e-6f,
     true, false, 0.0f, 0, 0, 0, 1024, 10000.0f, 8.0f},
    /* Gemma-2-2B: 26 layers alternating sliding-window (4096) and global, soft-caps 50 / 30 */
    {"gemma2-2b", "gemma2", "Gemma-2-2B (synthetic weights)", 2304, 26, 8, 4, 256, 9216, 8192, 10000.0f, 1e-6f,
     true, false, 0.0f, 0, 0, 0, 4096, 0.0f, 0.0f},
};

#define ALIGN 32

typedef struct {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[3];
    uint32_t type;
    uint64_t offset, nbytes;
    enum { T_WEIGHT, T_ONES, T_BIAS, T_ROPE } fill;
} synth_tensor;

/* ------------------------------------------------------------ contents */

/* xorshift64* — fast, seeded per tensor so files are reproducible. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform values with standard deviation 0.02 (typical initialization scale:
 * activations stay O(1) through the layers). */
static void fill_random(float *v, int64_t n, uint64_t *s) {
    const float a = 0.02f * 1.7320508f;
    for (int64_t i = 0; i < n; i++) v[i] = a * (2.0f * (float)(rng_next(s) >> 40) * (1.0f / 16777216.0f) - 1.0f);
}

/* llama3 rope scaling (as in llama.cpp's converter): per frequency, divide by
 * 1 (short wavelengths), factor (long ones), or a smooth blend between. */
static void llama3_rope_factors(const synth_shape *sh, float *out) {
    const double lo_factor = 1.0, hi_factor = 4.0, old_ctx = 8192.0;
    const double lo_wavelen = old_ctx / lo_factor, hi_wavelen = old_ctx / hi_factor;
    for (uint32_t i = 0; i < sh->head_dim / 2; i++) {
        const double freq = 1.0 / pow(sh->rope_base, (2.0 * i) / sh->head_dim);
        const double wavelen = 2.0 * M_PI / freq;
        double f;
        if (wavelen < hi_wavelen) f = 1.0;
        else if (wavelen > lo_wavelen) f = sh->rope_scale_factor;
        else {
            const double smooth = (old_ctx / wavelen - lo_factor) / (hi_factor - lo_factor);
            f = 1.0 / ((1.0 - smooth) / sh->rope_scale_factor + smooth);
        }
        out[i] = (float)f;
    }
}

/* A tensor of ne1 rows (ne1 = 0: a vector) of ne0 values, times ne2 (> 1: the
 * 3-D expert tensors, one block of rows per expert). */
static int add_tensor3(synth_tensor *ts, int n, const char *name, uint32_t type, uint64_t ne0, uint64_t ne1,
                       uint64_t ne2, int fill) {
    synth_tensor *t = &ts[n];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = ne2 > 1 ? 3 : ne1 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 ? ne1 : 1;
    t->ne[2] = ne2 > 1 ? ne2 : 1;
    t->type = type;
    t->nbytes = quant_row_size(type, (int64_t)ne0) * t->ne[1] * t->ne[2];
    t->fill = fill;
    return n + 1;
}

static int add_tensor(synth_tensor *ts, int n, const char *name, uint32_t type, uint64_t ne0, uint64_t ne1, int fill) {
    return add_tensor3(ts, n, name, type, ne0, ne1, 1, fill);
}

static void usage(FILE *fp) {
    fprintf(fp, "usage: rotkv synth --shape SHAPE --type TYPE --vocab VOCAB.gguf -o OUT.gguf [--seed N] [--layers N]\n"
                "  SHAPE: llama3.2-1b | qwen2.5-0.5b | llama3.1-8b, or custom:EMBD,HEADS,KV_HEADS,HEAD_DIM,FF,LAYERS[,qwen2]\n"
                "         (a small llama, or qwen2 with q/k/v biases, of any head size and GQA ratio);\n"
                "         sliding-window layers: gemma3-4b, gemma2-2b\n"
                "         mixture of experts: qwen3-30b-a3b (~17 GB in Q4_0), olmoe-1b-7b (OLMoE's sizes in a\n"
                "         qwen3moe, ~4 GB), mixtral-8x7b (llama with experts, ~26 GB: use --layers)\n"
                "  TYPE:  F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL (2-D weights; norms stay f32)\n"
                "  VOCAB: a GGUF whose tokenizer.* metadata is copied (e.g. vocab-llama3.gguf)\n"
                "  --layers N keeps only the first N blocks (smaller files for quick checks)\n");
}

int cmd_synth(int argc, char **argv) {
    const char *shape = NULL, *type = NULL, *vocab = NULL, *out = NULL;
    unsigned long long seed = 1;
    long layers = -1;
    for (int i = 0; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "rotkv synth: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--shape")) shape = v;
        else if (!strcmp(a, "--type")) type = v;
        else if (!strcmp(a, "--vocab")) vocab = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--layers")) layers = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "rotkv synth: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!shape || !type || !vocab || !out) {
        usage(stderr);
        return 2;
    }
    const synth_shape *sh = NULL;
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (!strcmp(shape, k_shapes[i].name)) sh = &k_shapes[i];
    synth_shape custom = {"custom", "llama", "custom (synthetic weights)", 0, 0, 0, 0, 0, 0, 4096, 10000.0f, 1e-5f,
                          false, false, 0.0f, 0, 0, 0, 0, 0.0f, 0.0f};
    if (!strncmp(shape, "custom:", 7)) {
        unsigned e, h, kv, hd, ff, l;
        char arch[16] = "";
        const int got = sscanf(shape + 7, "%u,%u,%u,%u,%u,%u,%15s", &e, &h, &kv, &hd, &ff, &l, arch);
        if (got < 6 || !e || !h || !kv || h % kv || !hd || hd % 2 || !ff || !l || e > 65536 || h > 1024 || hd > 1024 ||
            ff > 1 << 20 || l > 1024 || (got == 7 && strcmp(arch, "qwen2") && strcmp(arch, "llama"))) {
            fprintf(stderr, "rotkv synth: '%s' is not custom:EMBD,HEADS,KV_HEADS,HEAD_DIM,FF,LAYERS[,qwen2|llama] "
                            "(KV_HEADS dividing HEADS, HEAD_DIM even)\n", shape);
            return 2;
        }
        custom.n_embd = e, custom.n_head = h, custom.n_head_kv = kv, custom.head_dim = hd, custom.n_ff = ff;
        custom.n_layer = l;
        if (got == 7 && !strcmp(arch, "qwen2")) custom.arch = "qwen2", custom.qkv_bias = true;
        sh = &custom;
    }
    const ggw_file_type *ft = ggw_file_type_named(type);
    if (!sh || !ft) {
        fprintf(stderr, "rotkv synth: unknown %s '%s'\n", sh ? "type" : "shape", sh ? type : shape);
        usage(stderr);
        return 2;
    }
    const uint32_t wt = ft->type;
    const uint32_t n_layer = layers > 0 && (uint32_t)layers < sh->n_layer ? (uint32_t)layers : sh->n_layer;

    char err[256];
    gguf_file *vf = gguf_open(vocab, err, sizeof err);
    if (!vf) {
        fprintf(stderr, "rotkv synth: %s\n", err);
        return 1;
    }
    const gguf_str *toks;
    uint64_t n_vocab = 0;
    if (!gguf_get_arr_str(vf, "tokenizer.ggml.tokens", &toks, &n_vocab) || n_vocab == 0) {
        fprintf(stderr, "rotkv synth: %s has no tokenizer.ggml.tokens\n", vocab);
        gguf_close(vf);
        return 1;
    }

    /* tensors, in the order llama.cpp's converter writes them */
    const uint64_t E = sh->n_embd, Q = (uint64_t)sh->n_head * sh->head_dim, K = (uint64_t)sh->n_head_kv * sh->head_dim;
    const int max_tensors = 4 + 16 * (int)n_layer;
    synth_tensor *ts = calloc((size_t)max_tensors, sizeof *ts);
    if (!ts) {
        gguf_close(vf);
        return 1;
    }
    int nt = 0;
    nt = add_tensor(ts, nt, "token_embd.weight", wt, E, n_vocab, T_WEIGHT);
    if (sh->rope_scale_factor > 0) nt = add_tensor(ts, nt, "rope_freqs.weight", GGML_TYPE_F32, sh->head_dim / 2, 0, T_ROPE);
    nt = add_tensor(ts, nt, "output_norm.weight", GGML_TYPE_F32, E, 0, T_ONES);
    if (!sh->tied) nt = add_tensor(ts, nt, "output.weight", wt, E, n_vocab, T_WEIGHT);
    for (uint32_t il = 0; il < n_layer; il++) {
        char n[64];
#define BLK(s) (snprintf(n, sizeof n, "blk.%u.%s", il, s), n)
        nt = add_tensor(ts, nt, BLK("attn_norm.weight"), GGML_TYPE_F32, E, 0, T_ONES);
        nt = add_tensor(ts, nt, BLK("attn_q.weight"), wt, E, Q, T_WEIGHT);
        nt = add_tensor(ts, nt, BLK("attn_k.weight"), wt, E, K, T_WEIGHT);
        nt = add_tensor(ts, nt, BLK("attn_v.weight"), wt, E, K, T_WEIGHT);
        if (sh->qkv_bias) {
            nt = add_tensor(ts, nt, BLK("attn_q.bias"), GGML_TYPE_F32, Q, 0, T_BIAS);
            nt = add_tensor(ts, nt, BLK("attn_k.bias"), GGML_TYPE_F32, K, 0, T_BIAS);
            nt = add_tensor(ts, nt, BLK("attn_v.bias"), GGML_TYPE_F32, K, 0, T_BIAS);
        }
        if (!strcmp(sh->arch, "qwen3moe") || !strcmp(sh->arch, "gemma3")) {
            nt = add_tensor(ts, nt, BLK("attn_q_norm.weight"), GGML_TYPE_F32, sh->head_dim, 0, T_ONES);
            nt = add_tensor(ts, nt, BLK("attn_k_norm.weight"), GGML_TYPE_F32, sh->head_dim, 0, T_ONES);
        }
        nt = add_tensor(ts, nt, BLK("attn_output.weight"), wt, Q, E, T_WEIGHT);
        if (sh->n_swa) { /* gemma: the sublayers' output norms */
            nt = add_tensor(ts, nt, BLK("post_attention_norm.weight"), GGML_TYPE_F32, E, 0, T_ONES);
            nt = add_tensor(ts, nt, BLK("post_ffw_norm.weight"), GGML_TYPE_F32, E, 0, T_ONES);
        }
        nt = add_tensor(ts, nt, BLK("ffn_norm.weight"), GGML_TYPE_F32, E, 0, T_ONES);
        if (sh->n_expert) { /* the router stays f32, as llama-quantize leaves it */
            const uint64_t FX = sh->n_ff_exp, X = sh->n_expert;
            nt = add_tensor(ts, nt, BLK("ffn_gate_inp.weight"), GGML_TYPE_F32, E, X, T_WEIGHT);
            nt = add_tensor3(ts, nt, BLK("ffn_gate_exps.weight"), wt, E, FX, X, T_WEIGHT);
            nt = add_tensor3(ts, nt, BLK("ffn_up_exps.weight"), wt, E, FX, X, T_WEIGHT);
            nt = add_tensor3(ts, nt, BLK("ffn_down_exps.weight"), wt, FX, E, X, T_WEIGHT);
        } else {
            nt = add_tensor(ts, nt, BLK("ffn_gate.weight"), wt, E, sh->n_ff, T_WEIGHT);
            nt = add_tensor(ts, nt, BLK("ffn_up.weight"), wt, E, sh->n_ff, T_WEIGHT);
            nt = add_tensor(ts, nt, BLK("ffn_down.weight"), wt, sh->n_ff, E, T_WEIGHT);
        }
#undef BLK
    }
    uint64_t data_size = 0;
    for (int i = 0; i < nt; i++) {
        ts[i].offset = data_size;
        data_size += (ts[i].nbytes + ALIGN - 1) / ALIGN * ALIGN;
    }

    /* metadata */
    uint64_t n_tok_kv = 0;
    for (uint64_t i = 0; i < vf->n_kv; i++)
        if (vf->kv[i].key.len > 10 && !memcmp(vf->kv[i].key.ptr, "tokenizer.", 10)) n_tok_kv++;
    ggw w;
    if (!ggw_open(&w, out, ALIGN)) {
        free(ts);
        gguf_close(vf);
        return 1;
    }
    const uint64_t n_own_kv = 14 + (sh->head_dim * sh->n_head != sh->n_embd ? 2 : 0) +
                              (sh->n_expert ? (!strcmp(sh->arch, "qwen3moe") ? 3 : 2) : 0) +
                              (sh->n_swa ? 1 : 0) + (sh->rope_base_swa > 0 ? 1 : 0) + (sh->rope_linear > 0 ? 2 : 0);
    ggw_header(&w, (uint64_t)nt, n_own_kv + n_tok_kv);
    char key[96];
#define AK(s) (snprintf(key, sizeof key, "%s.%s", sh->arch, s), key)
    ggw_kv_str(&w, "general.architecture", sh->arch);
    ggw_kv_str(&w, "general.name", sh->display);
    ggw_kv_u32(&w, "general.file_type", ft->ftype);
    ggw_kv_u32(&w, "general.quantization_version", 2);
    ggw_kv_u32(&w, AK("context_length"), sh->n_ctx);
    ggw_kv_u32(&w, AK("embedding_length"), sh->n_embd);
    ggw_kv_u32(&w, AK("block_count"), n_layer);
    ggw_kv_u32(&w, AK("feed_forward_length"), sh->n_ff);
    ggw_kv_u32(&w, AK("attention.head_count"), sh->n_head);
    ggw_kv_u32(&w, AK("attention.head_count_kv"), sh->n_head_kv);
    ggw_kv_f32(&w, AK("rope.freq_base"), sh->rope_base);
    ggw_kv_f32(&w, AK("attention.layer_norm_rms_epsilon"), sh->eps);
    ggw_kv_u32(&w, AK("rope.dimension_count"), sh->head_dim);
    if (sh->head_dim * sh->n_head != sh->n_embd) {
        ggw_kv_u32(&w, AK("attention.key_length"), sh->head_dim);
        ggw_kv_u32(&w, AK("attention.value_length"), sh->head_dim);
    }
    ggw_kv_u32(&w, AK("vocab_size"), (uint32_t)n_vocab);
    if (sh->n_expert) {
        ggw_kv_u32(&w, AK("expert_count"), sh->n_expert);
        ggw_kv_u32(&w, AK("expert_used_count"), sh->n_expert_used);
        if (!strcmp(sh->arch, "qwen3moe")) ggw_kv_u32(&w, AK("expert_feed_forward_length"), sh->n_ff_exp);
    }
    if (sh->n_swa) ggw_kv_u32(&w, AK("attention.sliding_window"), sh->n_swa);
    if (sh->rope_base_swa > 0) ggw_kv_f32(&w, AK("rope.freq_base_swa"), sh->rope_base_swa);
    if (sh->rope_linear > 0) {
        ggw_kv_str(&w, AK("rope.scaling.type"), "linear");
        ggw_kv_f32(&w, AK("rope.scaling.factor"), sh->rope_linear);
    }
#undef AK
    bool ok = true;
    for (uint64_t i = 0; i < vf->n_kv; i++)
        if (vf->kv[i].key.len > 10 && !memcmp(vf->kv[i].key.ptr, "tokenizer.", 10)) ok &= ggw_copy_kv(&w, &vf->kv[i]);
    for (int i = 0; i < nt; i++)
        ggw_tensor_info(&w, ts[i].name, strlen(ts[i].name), ts[i].n_dims, ts[i].ne, ts[i].type, ts[i].offset);
    ggw_pad(&w);

    /* data, one row at a time */
    uint64_t max_row = E > sh->n_ff ? E : sh->n_ff;
    if (sh->n_ff_exp > max_row) max_row = sh->n_ff_exp;
    float *row = malloc(sizeof(float) * (max_row > n_vocab ? max_row : n_vocab));
    uint8_t *q = malloc(quant_row_size(GGML_TYPE_F32, (int64_t)max_row));
    if (!row || !q) ok = false;
    const double t0 = cli_now_ms();
    cli_progress prog;
    cli_progress_begin(&prog, "writing tensors");
    for (int i = 0; i < nt && ok && w.ok; i++) {
        const synth_tensor *t = &ts[i];
        uint64_t s = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(i + 1) * 0xD1B54A32D192ED03ull;
        if (!s) s = 1;
        const quant_traits *tr = quant_get_traits(t->type);
        for (uint64_t r = 0; r < t->ne[1] * t->ne[2]; r++) {
            switch (t->fill) {
            case T_WEIGHT: fill_random(row, (int64_t)t->ne[0], &s); break;
            case T_ONES: for (uint64_t j = 0; j < t->ne[0]; j++) row[j] = 1.0f; break;
            case T_BIAS: fill_random(row, (int64_t)t->ne[0], &s); break;
            case T_ROPE: llama3_rope_factors(sh, row); break;
            }
            tr->quantize_row(row, q, (int64_t)t->ne[0]);
            ggw_raw(&w, q, quant_row_size(t->type, (int64_t)t->ne[0]));
        }
        ggw_pad(&w);
        cli_progress_update(&prog, i + 1, nt, "tensors");
    }
    cli_progress_end(&prog);
    const uint64_t size = w.pos;
    if (!ok) ggw_abort(&w);
    else ok = ggw_commit(&w);
    if (!ok) {
        fprintf(stderr, "rotkv synth: failed writing %s\n", out);
    } else {
        fprintf(stderr, "rotkv synth: wrote %s: %s, %u layers, %s weights, %llu tokens, %.1f MiB in %.1f s\n", out,
                sh->display, n_layer, ft->name, (unsigned long long)n_vocab,
                (double)size / 1048576.0, (cli_now_ms() - t0) / 1e3);
    }
    free(row);
    free(q);
    free(ts);
    gguf_close(vf);
    return ok ? 0 : 1;
}
