/* context.c — the public API: model handles, inference contexts and the
 * forward pass of a llama-shaped transformer over a batch of tokens. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attention.h"
#include "context.h"
#include "kv_cache.h"
#include "kv_calib.h"
#include "cpu.h"
#include "model.h"
#include "moe.h"
#include "ops.h"
#include "quant.h"
#include "rotation.h"
#include "rotkv.h"
#include "threadpool.h"
#include "tokenizer.h"

const char *rotkv_status_str(rotkv_status s) {
    switch (s) {
    case ROTKV_OK: return "ok";
    case ROTKV_ERR_IO: return "I/O error";
    case ROTKV_ERR_FORMAT: return "format error";
    case ROTKV_ERR_UNSUPPORTED: return "unsupported";
    case ROTKV_ERR_OOM: return "out of memory";
    case ROTKV_ERR_INVALID_ARG: return "invalid argument";
    case ROTKV_ERR_CONTEXT_FULL: return "context full";
    case ROTKV_ERR_MISMATCH: return "mismatch";
    case ROTKV_ERR_KV_BUDGET: return "KV budget exhausted";
    }
    return "unknown status";
}

/* ------------------------------------------------------------------ model */

rotkv_model_params rotkv_model_default_params(void) {
    rotkv_model_params p = {.vocab_only = false, .progress = NULL, .progress_user = NULL};
    return p;
}

rotkv_status rotkv_model_load(const char *path, const rotkv_model_params *params, rotkv_model **out,
                              rotkv_error *err) {
    if (!path || !out) return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "rotkv_model_load: NULL argument");
    rotkv_model_params p = params ? *params : rotkv_model_default_params();
    return model_load(path, &p, out, err);
}

void rotkv_model_free(rotkv_model *model) { model_free(model); }

void rotkv_model_get_info(const rotkv_model *m, rotkv_model_info *info) {
    memset(info, 0, sizeof *info);
    const model_hparams *hp = &m->hp;
    snprintf(info->arch, sizeof info->arch, "%s", m->vocab_only ? "(vocab only)" : hp->arch_name);
    info->n_vocab = hp->n_vocab;
    info->n_ctx_train = hp->n_ctx_train;
    info->n_embd = hp->n_embd;
    info->n_layer = hp->n_layer;
    info->n_head = hp->n_head;
    info->n_head_kv = hp->n_head_kv;
    info->head_dim = hp->head_dim_k;
    info->n_ff = hp->n_ff;
    info->rope_freq_base = hp->rope_freq_base;
    info->norm_eps = hp->norm_eps;
    info->n_params = m->n_params;
    info->weight_bytes = m->weight_bytes;
    info->matmul_bytes = m->matmul_bytes;
    info->repacked_bytes = m->repacked_bytes;
    snprintf(info->isa, sizeof info->isa, "%s", cpu_isa_name(cpu_isa_active()));
    snprintf(info->name, sizeof info->name, "%s", m->name);
    info->n_expert = hp->n_expert;
    info->n_expert_used = hp->n_expert_used;
    info->n_ff_exp = hp->n_ff_exp;
    info->n_swa = hp->n_swa;
    for (uint32_t l = 0; hp->n_swa && l < hp->n_layer; l++) info->n_layer_swa += hp->swa_layer[l];
}

const char *rotkv_kernel_isa(void) { return cpu_isa_name(cpu_isa_active()); }
const char *rotkv_kernel_isa_error(void) { return cpu_isa_env_error(); }

void rotkv_model_describe(const rotkv_model *m, void *file) {
    FILE *fp = file;
    const model_hparams *hp = &m->hp;
    fprintf(fp, "file:            GGUF v%u, %llu tensors, %llu metadata keys\n", m->gguf->version,
            (unsigned long long)m->gguf->n_tensors, (unsigned long long)m->gguf->n_kv);
    if (m->name[0]) fprintf(fp, "name:            %s\n", m->name);
    fprintf(fp, "vocab:           %d tokens, bos=%d eos=%d add_bos=%d\n", tokenizer_n_vocab(m->tok),
            tokenizer_bos(m->tok), tokenizer_eos(m->tok), tokenizer_add_bos(m->tok));
    if (m->vocab_only) {
        fprintf(fp, "architecture:    (vocab only: no weights)\n");
        return;
    }
    fprintf(fp, "architecture:    %s\n", hp->arch_name);
    fprintf(fp, "n_ctx_train:     %u\n", hp->n_ctx_train);
    fprintf(fp, "n_embd:          %u\n", hp->n_embd);
    fprintf(fp, "n_layer:         %u\n", hp->n_layer);
    fprintf(fp, "n_head:          %u (kv heads %u, GQA group %u)\n", hp->n_head, hp->n_head_kv,
            hp->n_head / hp->n_head_kv);
    fprintf(fp, "head_dim:        %u (rope dims %u, %s)\n", hp->head_dim_k, hp->n_rot,
            hp->rope == ROPE_NEOX ? "neox" : "normal");
    if (hp->n_expert) {
        fprintf(fp, "n_ff:            %u%s\n", hp->n_ff,
                hp->arch == ARCH_QWEN3MOE || hp->arch == ARCH_QWEN2MOE || hp->arch == ARCH_GPTOSS
                    ? " (dense; unused: every layer is MoE)" : "");
        if (hp->expert_softmax_topk)
            fprintf(fp, "experts:         %u per layer, %u used per token (expert n_ff %u, top-%u router logits weighted "
                        "by their softmax; biases, clamped SwiGLU)\n",
                    hp->n_expert, hp->n_expert_used, hp->n_ff_exp, hp->n_expert_used);
        else
            fprintf(fp, "experts:         %u per layer, %u used per token (expert n_ff %u, softmax router, top-%u weights %s)\n",
                    hp->n_expert, hp->n_expert_used, hp->n_ff_exp, hp->n_expert_used,
                    hp->expert_weights_norm ? "renormalized" : "as they are");
        if (hp->n_ff_shexp)
            fprintf(fp, "shared expert:   n_ff %u, every token, behind a sigmoid gate\n", hp->n_ff_shexp);
        fprintf(fp, "active weights:  %.2f MiB of matrices read per token (routed experts only)\n",
                m->matmul_bytes / 1048576.0);
    } else {
        fprintf(fp, "n_ff:            %u\n", hp->n_ff);
    }
    fprintf(fp, "rope_freq_base:  %g%s%s\n", hp->rope_freq_base, m->rope_factors ? " (llama3 freq factors)" : "",
            hp->rope_freq_scale != 1.0f ? " (linear scaling)" : "");
    if (hp->rope_yarn)
        fprintf(fp, "rope scaling:    YaRN: factor %g on an original context of %u, beta_fast %g, beta_slow %g, "
                    "ext_factor %g, attn_factor %g\n",
                1.0f / hp->yarn_freq_scale, hp->n_ctx_orig, hp->yarn_beta_fast, hp->yarn_beta_slow, hp->yarn_ext_factor,
                hp->yarn_attn_factor);
    if (m->layers && m->layers[0].attn_sinks)
        fprintf(fp, "attention sinks: one learned logit per query head (in each head's softmax denominator)\n");
    if (m->rope_factors_long)
        fprintf(fp, "rope scaling:    LongRoPE: long factors for a context (rounded up to 256) above %u, else short; "
                    "attn_factor %g\n",
                hp->n_ctx_orig, hp->rope_attn_factor);
    if (hp->n_swa) {
        uint32_t n_swa_layers = 0;
        for (uint32_t l = 0; l < hp->n_layer; l++) n_swa_layers += hp->swa_layer[l];
        fprintf(fp, "sliding window:  %u positions on %u of %u layers (", hp->n_swa, n_swa_layers, hp->n_layer);
        for (uint32_t l = 0; l < hp->n_layer && l < 64; l++) fputc(hp->swa_layer[l] ? 'S' : 'G', fp);
        fprintf(fp, "%s); their RoPE base %g%s\n", hp->n_layer > 64 ? "..." : "", hp->rope_freq_base_swa,
                hp->rope_yarn ? ", YaRN as the global layers" : hp->rope_freq_scale_swa != 1.0f ? " (linear scaling)" : ", no scaling");
    }
    if (hp->attn_softcap > 0 || hp->final_softcap > 0)
        fprintf(fp, "soft-capping:    attention %g, final logits %g (0: none)\n", hp->attn_softcap, hp->final_softcap);
    if (hp->ffn_gelu) fprintf(fp, "ffn:             GeGLU; embedding scaled by %g; post-attention and post-FFN norms\n",
                              hp->embd_scale);
    fprintf(fp, "rms_norm_eps:    %g\n", hp->norm_eps);
    fprintf(fp, "output:          %s\n", m->output.data == m->tok_embd.data ? "tied to token_embd" : "separate");
    fprintf(fp, "kernels:         %s (CPU: %s%s)\n", cpu_isa_name(cpu_isa_active()), cpu_isa_name(cpu_isa_detect()),
            getenv("ROTKV_ISA") ? ", capped by ROTKV_ISA" : "");
    if (m->repacked_bytes)
        fprintf(fp, "repacked:        %.2f MiB of weights in the kernels' layout at load (their file pages are released: "
                    "no extra memory)\n", m->repacked_bytes / 1048576.0);
    else
        fprintf(fp, "repacked:        none (the kernels read the file's layout)\n");
    fprintf(fp, "parameters:      %llu (%.2f MiB of tensor data)\n", (unsigned long long)m->n_params,
            m->weight_bytes / 1048576.0);
    /* per-type totals, then every tensor */
    uint64_t bytes[GGML_TYPE_COUNT] = {0}, count[GGML_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const gguf_tensor *t = &m->gguf->tensors[i];
        if (t->type < GGML_TYPE_COUNT) {
            bytes[t->type] += t->nbytes;
            count[t->type]++;
        }
    }
    fprintf(fp, "tensor types:   ");
    for (int t = 0; t < GGML_TYPE_COUNT; t++)
        if (count[t]) fprintf(fp, " %s x%llu (%.2f MiB)", quant_type_name((uint32_t)t), (unsigned long long)count[t],
                              bytes[t] / 1048576.0);
    fprintf(fp, "\n");
    const double kv_f16 = 2.0 * hp->n_layer * hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v);
    if (hp->n_swa) { /* the sliding-window layers hold their window (and a slack: `rotkv info -c N` tells) */
        uint32_t n_swa_layers = 0;
        for (uint32_t l = 0; l < hp->n_layer; l++) n_swa_layers += hp->swa_layer[l];
        const double per_layer = kv_f16 / hp->n_layer;
        const uint32_t w = hp->n_swa < hp->n_ctx_train ? hp->n_swa : hp->n_ctx_train;
        fprintf(fp, "KV cache:        %.0f bytes/token with f16 K and V in the %u global layers, %.0f in the %u "
                    "sliding-window ones up to their window (%.2f MiB at n_ctx_train=%u, about %.2f MiB without the window)\n",
                per_layer * (hp->n_layer - n_swa_layers), hp->n_layer - n_swa_layers, per_layer * n_swa_layers,
                n_swa_layers,
                (per_layer * (hp->n_layer - n_swa_layers) * hp->n_ctx_train + per_layer * n_swa_layers * w) / 1048576.0,
                hp->n_ctx_train, kv_f16 * hp->n_ctx_train / 1048576.0);
    } else
        fprintf(fp, "KV cache:        %.0f bytes/token with f16 K and V (%.2f MiB at n_ctx_train=%u)\n", kv_f16,
                kv_f16 * hp->n_ctx_train / 1048576.0, hp->n_ctx_train);
    fprintf(fp, "tensors:\n");
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const gguf_tensor *t = &m->gguf->tensors[i];
        char name[80];
        fprintf(fp, "  %-32s %-6s [", gguf_str_cpy(t->name, name, sizeof name), quant_type_name(t->type));
        for (uint32_t d = 0; d < t->n_dims; d++) fprintf(fp, "%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
        fprintf(fp, "] %llu bytes\n", (unsigned long long)t->nbytes);
    }
}

/* -------------------------------------------------------------- tokenizer */

int32_t rotkv_n_vocab(const rotkv_model *m) { return tokenizer_n_vocab(m->tok); }
rotkv_token rotkv_token_bos(const rotkv_model *m) { return tokenizer_bos(m->tok); }
rotkv_token rotkv_token_eos(const rotkv_model *m) { return tokenizer_eos(m->tok); }
bool rotkv_add_bos(const rotkv_model *m) { return tokenizer_add_bos(m->tok); }
bool rotkv_token_is_eog(const rotkv_model *m, rotkv_token t) { return tokenizer_is_eog(m->tok, t); }

int32_t rotkv_tokenize(const rotkv_model *m, const char *text, size_t len, rotkv_token *out, int32_t n_max,
                       bool add_special, bool parse_special) {
    return tokenizer_encode(m->tok, text, len, out, n_max, add_special, parse_special);
}

int32_t rotkv_token_to_piece(const rotkv_model *m, rotkv_token t, char *buf, int32_t buflen) {
    return tokenizer_token_to_piece(m->tok, t, buf, buflen);
}

struct rotkv_detok {
    tokenizer_detok *d;
};

rotkv_detok *rotkv_detok_create(const rotkv_model *m) {
    rotkv_detok *d = malloc(sizeof *d);
    if (!d) return NULL;
    d->d = tokenizer_detok_create(m->tok);
    if (!d->d) {
        free(d);
        return NULL;
    }
    return d;
}
const char *rotkv_detok_push(rotkv_detok *d, rotkv_token t) { return tokenizer_detok_push(d->d, t); }
const char *rotkv_detok_flush(rotkv_detok *d) { return tokenizer_detok_flush(d->d); }
void rotkv_detok_free(rotkv_detok *d) {
    if (!d) return;
    tokenizer_detok_free(d->d);
    free(d);
}

/* ---------------------------------------------------------------- context */

struct rotkv_context {
    rotkv_model *model;
    rotkv_context_params params;
    threadpool *tp;
    kv_cache *kv;
    rotation rot;          /* attn-rot matrix for one head */
    const float *rope_factors; /* (n_rot/2,) RoPE frequency divisors for this context (llama3, LongRoPE), or NULL */
    float rope_mscale;         /* rotated dims of q and k scaled by it (LongRoPE's attn_factor, YaRN's mscale), else 1 */
    float *yarn_factors;       /* (n_rot/2,) YaRN's per-dimension frequency divisors (rope_factors then), or NULL */
    bool *rot_k, *rot_v;   /* (n_layer,) resolved from the params (AUTO -> quantized non-kt types) */
    uint32_t *layer_window; /* (n_layer,) sliding window of each layer (0: global) */
    int32_t *seq_len; /* (n_seq,) tokens cached per sequence */
    /* activations for up to n_batch tokens; shapes per token in comments */
    float *x;       /* (n_embd) residual stream */
    float *xb;      /* (max(n_embd, n_head*hd)) normed input / attention output */
    float *q;       /* (n_head*hd) */
    float *k, *v;   /* (n_head_kv*hd) */
    float *tmp;     /* (n_embd) */
    float *center;  /* (2 * n_head_kv * hd) mean K and V rows of a sequence's first batch */
    float *gate, *up; /* (n_ff) */
    moe_scratch moe;  /* MoE layers' routing and expert buffers (empty for a dense model) */
    float *mm_scratch;   /* nth * max row length */
    float *att_scratch;  /* nth * group * hd */
    int32_t *tok_seq, *tok_pos; /* (n_batch) */
    float *logits;       /* (n_logits_cap, n_vocab) */
    int32_t n_logits_cap, n_logits;
    int32_t *logits_row; /* (n_batch_last) batch index -> row in logits, -1 if none */
    int32_t logits_row_cap, last_logits_row;
    int32_t last_batch_n; /* tokens in the last rotkv_decode batch */
    rotkv_kv_calib *collect; /* rotkv_kv_calib_attach: moments collected from every batch */
    rotkv_perf perf;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* matmul, its time counted in c->perf */
static void timed_matmul(rotkv_context *c, const weight *w, const float *x, int n, float *y) {
    const double t0 = now_ms();
    matmul(c->tp, w, x, n, y, c->mm_scratch);
    c->perf.t_matmul_ms += now_ms() - t0;
}

void rotkv_perf_get(const rotkv_context *c, rotkv_perf *p) { *p = c->perf; }
void rotkv_perf_reset(rotkv_context *c) { memset(&c->perf, 0, sizeof c->perf); }

rotkv_context_params rotkv_context_default_params(void) {
    rotkv_context_params p = {.n_ctx = 0, .n_seq_max = 1, .n_batch = 512, .n_threads = 0,
                              .type_k = ROTKV_KV_F16, .type_v = ROTKV_KV_F16,
                              .rot_k = ROTKV_ROT_AUTO, .rot_v = ROTKV_ROT_AUTO, .rot_seed = 0x726f746b76ull,
                              .kv_center = ROTKV_ROT_AUTO};
    return p;
}

void rotkv_context_free(rotkv_context *c) {
    if (!c) return;
    threadpool_free(c->tp);
    kv_cache_free(c->kv);
    rotation_free(&c->rot);
    free(c->rot_k);
    free(c->rot_v);
    free(c->layer_window);
    free(c->yarn_factors);
    free(c->seq_len);
    free(c->center);
    free(c->x); free(c->xb); free(c->q); free(c->k); free(c->v); free(c->tmp);
    free(c->gate); free(c->up); free(c->mm_scratch); free(c->att_scratch);
    moe_scratch_free(&c->moe);
    free(c->tok_seq); free(c->tok_pos); free(c->logits); free(c->logits_row);
    free(c);
}

static double *value_metric(const rotkv_model *m, const layer_weights *L);

/* YaRN as ggml's CPU rope computes it (rope_yarn, ggml_rope_yarn_corr_dims): dimension pair i
 * turns by theta_i = pos * base^(-2i/n_rot) * (s (1 - r_i) + r_i) with s = 1/factor and the
 * ramp r_i = ext_factor * (1 - clamp((i - lo) / max(0.001, hi - lo), 0, 1)) between the
 * correction dims lo = max(0, floor(d(beta_fast))), hi = min(n_rot - 1, ceil(d(beta_slow))),
 * d(b) = n_rot ln(n_ctx_orig / (2 pi b)) / (2 ln base); the rotated values are scaled by
 * mscale = attn_factor (1 + 0.1 ln(1/s)) (with ext_factor 0: attn_factor). The angle is linear
 * in pos, so the blend is a per-pair frequency divisor 1 / (s (1 - r_i) + r_i): rope_apply's
 * freq_factors, which a context shift and the kt* fits rotate by too; mscale is applied to q
 * and k once, after RoPE, as LongRoPE's attn_factor is. */
static float *yarn_factors(const model_hparams *hp, float *mscale) {
    const int n = (int)hp->n_rot, half = n / 2;
    float *f = malloc(sizeof(float) * (size_t)(half ? half : 1));
    if (!f) return NULL;
    const float base = hp->rope_freq_base, s = hp->yarn_freq_scale, ext = hp->yarn_ext_factor;
    const float pi = 3.14159265358979323846f;
    const float d_fast = n * logf((float)hp->n_ctx_orig / (hp->yarn_beta_fast * 2 * pi)) / (2 * logf(base));
    const float d_slow = n * logf((float)hp->n_ctx_orig / (hp->yarn_beta_slow * 2 * pi)) / (2 * logf(base));
    const float lo = fmaxf(0.0f, floorf(d_fast)), hi = fminf((float)(n - 1), ceilf(d_slow));
    for (int i = 0; i < half; i++) {
        const float y = ((float)i - lo) / fmaxf(0.001f, hi - lo);
        const float r = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * ext;
        f[i] = 1.0f / (s * (1.0f - r) + r);
    }
    *mscale = hp->yarn_attn_factor * (ext != 0.0f ? 1.0f + 0.1f * logf(1.0f / s) : 1.0f);
    return f;
}

static float *alloc_f(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

rotkv_status rotkv_context_create(rotkv_model *m, const rotkv_context_params *params, rotkv_context **out,
                                  rotkv_error *err) {
    *out = NULL;
    if (m->vocab_only)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "model was loaded vocab-only: it has no weights to run");
    rotkv_context_params p = params ? *params : rotkv_context_default_params();
    const model_hparams *hp = &m->hp;
    if (p.n_ctx == 0) p.n_ctx = hp->n_ctx_train;
    if (p.n_seq_max == 0) p.n_seq_max = 1;
    if (p.n_batch == 0) p.n_batch = 512;
    if (p.n_threads <= 0) p.n_threads = threadpool_physical_cores();
    if (p.n_ctx > (1u << 24) || p.n_seq_max > 4096 || p.n_batch > 65536 || p.n_threads > 512)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "context parameters out of range (n_ctx=%u n_seq=%u n_batch=%u threads=%d)",
                               p.n_ctx, p.n_seq_max, p.n_batch, p.n_threads);
    if (hp->n_head / hp->n_head_kv > 64)
        return rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED, "GQA group of %u query heads per KV head (max 64)",
                               hp->n_head / hp->n_head_kv);
    rotkv_context *c = calloc(1, sizeof *c);
    if (!c) return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    c->model = m;
    c->params = p;
    /* LongRoPE: the long factors when the context outgrows the original one. llama.cpp
     * decides on its cache size, n_ctx rounded up to a multiple of 256; so does rotkv,
     * to give the same logits (a context of 100 on an original 64 takes the long ones). */
    const uint32_t n_ctx_pad = (p.n_ctx + 255) / 256 * 256;
    c->rope_factors = m->rope_factors_long ? (n_ctx_pad > hp->n_ctx_orig ? m->rope_factors_long : m->rope_factors_short)
                                           : m->rope_factors;
    c->rope_mscale = hp->rope_attn_factor;
    if (hp->rope_yarn) {
        c->yarn_factors = yarn_factors(hp, &c->rope_mscale);
        if (!c->yarn_factors) {
            rotkv_context_free(c);
            return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        }
        c->rope_factors = c->yarn_factors;
    }
    bool any_quantized = false;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kv_codec *ck = kv_codec_get(p.layer_types_k ? p.layer_types_k[l] : p.type_k);
        const kv_codec *cv = kv_codec_get(p.layer_types_v ? p.layer_types_v[l] : p.type_v);
        any_quantized |= (ck && ck->quantized && ck->kt_bits == 0) || (cv && cv->quantized && cv->kt_bits == 0);
    }
    /* kt* types fit their own center and basis: rotation and centering are
     * subsumed there, and decided per layer and side for the other types */
    const bool center = p.kv_center == ROTKV_ROT_ON || (p.kv_center == ROTKV_ROT_AUTO && any_quantized);
    c->layer_window = calloc(hp->n_layer, sizeof(uint32_t));
    if (!c->layer_window) {
        rotkv_context_free(c);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) c->layer_window[l] = hp->swa_layer[l] ? hp->n_swa : 0;
    kv_cache_params kp = {hp->n_layer, hp->n_head_kv, hp->head_dim_k, p.n_ctx, p.n_seq_max, p.type_k, p.type_v,
                          p.layer_types_k, p.layer_types_v, p.kv_budget_bytes, p.kv_sink, p.kv_window, center,
                          c->layer_window};
    c->kv = kv_cache_create(&kp, err);
    if (!c->kv) {
        rotkv_context_free(c);
        return err ? err->code : ROTKV_ERR_INVALID_ARG;
    }
    /* attn-rot per layer: ON rotates every layer whose type is not kt*; AUTO
     * the layers whose type is quantized (and not kt*) */
    c->rot_k = calloc(hp->n_layer, sizeof(bool));
    c->rot_v = calloc(hp->n_layer, sizeof(bool));
    if (!c->rot_k || !c->rot_v) {
        rotkv_context_free(c);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kv_codec *ck = kv_cache_layout_k(c->kv, l)->codec, *cv = kv_cache_layout_v(c->kv, l)->codec;
        c->rot_k[l] = ck->kt_bits == 0 && (p.rot_k == ROTKV_ROT_ON || (p.rot_k == ROTKV_ROT_AUTO && ck->quantized));
        c->rot_v[l] = cv->kt_bits == 0 && (p.rot_v == ROTKV_ROT_ON || (p.rot_v == ROTKV_ROT_AUTO && cv->quantized));
    }
    c->params.layer_types_k = c->params.layer_types_v = NULL; /* the caller owns them; the cache has its copy */
    if (p.kv_calib) {
        const rotkv_kv_calib *cal = p.kv_calib;
        if (!cal->finished || cal->model_id != kv_calib_model_id(m) || cal->n_layer != hp->n_layer ||
            cal->n_head_kv != hp->n_head_kv || cal->head_dim != hp->head_dim_k) {
            rotkv_context_free(c);
            return rotkv_set_error(err, ROTKV_ERR_MISMATCH, "the KV calibration was made for another model%s",
                                   cal->finished ? "" : " (or is not finished)");
        }
        for (uint32_t l = 0; l < hp->n_layer; l++) {
            if (!kv_cache_needs_calibration(c->kv, l)) continue;
            double *vm = value_metric(m, &m->layers[l]);
            rotkv_status st = vm ? kv_cache_calibrate_moments(c->kv, l, cal, vm, err)
                                 : rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory calibrating the KV transforms");
            free(vm);
            if (st != ROTKV_OK) {
                rotkv_context_free(c);
                return st;
            }
        }
    }
    if (rotation_init(&c->rot, (int)hp->head_dim_k, p.rot_seed) != 0) {
        rotkv_context_free(c);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    }
    c->center = alloc_f(2 * (size_t)hp->n_head_kv * hp->head_dim_k);
    if (!c->center) {
        rotkv_context_free(c);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    }
    c->tp = threadpool_create(p.n_threads);
    const size_t B = p.n_batch, E = hp->n_embd, Qd = (size_t)hp->n_head * hp->head_dim_k;
    /* an MoE model's layers are all MoE (the experts have their own buffers): no dense FFN width */
    const size_t Kd = (size_t)hp->n_head_kv * hp->head_dim_k, F = hp->n_expert ? 1 : hp->n_ff;
    size_t maxrow = E > F ? E : F;
    if (Qd > maxrow) maxrow = Qd;
    if (hp->n_ff_exp > maxrow) maxrow = hp->n_ff_exp;
    if (hp->n_ff_shexp > maxrow) maxrow = hp->n_ff_shexp;
    const int nth = threadpool_size(c->tp);
    c->seq_len = calloc(p.n_seq_max, sizeof *c->seq_len);
    c->x = alloc_f(B * E);
    c->xb = alloc_f(B * (E > Qd ? E : Qd));
    c->q = alloc_f(B * Qd);
    c->k = alloc_f(B * Kd);
    c->v = alloc_f(B * Kd);
    c->tmp = alloc_f(B * E);
    c->gate = alloc_f(B * F);
    c->up = alloc_f(B * F);
    const int mm_tokens = hp->n_expert && moe_scratch_tokens(hp) > (int)B ? moe_scratch_tokens(hp) : (int)B;
    c->mm_scratch = malloc(matmul_scratch_bytes(nth, (int64_t)maxrow, mm_tokens));
    c->att_scratch = alloc_f((size_t)nth * attention_scratch_floats((int)hp->n_head, (int)hp->n_head_kv, (int)hp->head_dim_k));
    c->tok_seq = malloc(B * sizeof(int32_t));
    c->tok_pos = malloc(B * sizeof(int32_t));
    if (!c->tp || !c->seq_len || !c->x || !c->xb || !c->q || !c->k || !c->v || !c->tmp || !c->gate || !c->up ||
        !c->mm_scratch || !c->att_scratch || !c->tok_seq || !c->tok_pos || !moe_scratch_init(&c->moe, hp, (int)B)) {
        rotkv_context_free(c);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory allocating activations for n_batch=%u", p.n_batch);
    }
    *out = c;
    return ROTKV_OK;
}

kv_cache *context_kv(rotkv_context *c) { return c->kv; }

const rotkv_model *rotkv_context_model(const rotkv_context *c) { return c->model; }

uint32_t rotkv_n_ctx(const rotkv_context *c) { return c->params.n_ctx; }
int rotkv_n_threads(const rotkv_context *c) { return threadpool_size(c->tp); }
double rotkv_kv_bytes_per_token(const rotkv_context *c) { return kv_cache_bytes_per_token(c->kv); }

int32_t rotkv_seq_len(const rotkv_context *c, int32_t seq) {
    if (seq < 0 || (uint32_t)seq >= c->params.n_seq_max) return 0;
    return c->seq_len[seq];
}

/* The RoPE base and scale of a layer: gemma3's sliding-window layers have their own. */
static void layer_rope(const model_hparams *hp, uint32_t il, float *base, float *scale) {
    const bool swa = hp->n_swa && hp->swa_layer[il];
    *base = swa ? hp->rope_freq_base_swa : hp->rope_freq_base;
    *scale = swa ? hp->rope_freq_scale_swa : hp->rope_freq_scale;
}

void rotkv_seq_truncate(rotkv_context *c, int32_t seq, int32_t n_keep) {
    if (seq < 0 || (uint32_t)seq >= c->params.n_seq_max || n_keep < 0) return;
    if (n_keep < c->seq_len[seq]) {
        /* a sliding-window layer's ring may have moved past what the query at n_keep needs */
        if (!kv_cache_can_truncate(c->kv, (uint32_t)seq, (uint32_t)n_keep)) n_keep = 0;
        c->seq_len[seq] = n_keep;
        kv_cache_truncate(c->kv, (uint32_t)seq, (uint32_t)n_keep);
    }
}

void rotkv_seq_clear(rotkv_context *c, int32_t seq) { rotkv_seq_truncate(c, seq, 0); }

rotkv_status rotkv_seq_shift(rotkv_context *c, int32_t seq, int32_t n_keep, int32_t n_discard, rotkv_error *err) {
    if (seq < 0 || (uint32_t)seq >= c->params.n_seq_max || n_keep < 0 || n_discard < 0 ||
        n_keep + n_discard > c->seq_len[seq])
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "rotkv_seq_shift: bad arguments (seq %d, keep %d, discard %d, length %d)",
                               seq, n_keep, n_discard, seq >= 0 && (uint32_t)seq < c->params.n_seq_max ? c->seq_len[seq] : -1);
    if (n_discard == 0) return ROTKV_OK;
    const model_hparams *hp = &c->model->hp;
    const int hd = (int)hp->head_dim_k, nkv = (int)hp->n_head_kv;
    const int32_t len = c->seq_len[seq];
    float *k = c->k, *v = c->v; /* scratch rows of n_head_kv * hd floats */
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        float base, scale;
        layer_rope(hp, l, &base, &scale);
        int32_t p0 = n_keep + n_discard;
        if (kv_cache_ring_slots(c->kv, l)) {
            /* a sliding-window ring: positions renumbered in place, the kept ones moved; then the
             * keys it still holds past n_keep are re-rotated where they are */
            rotkv_status st = kv_cache_ring_shift(c->kv, (uint32_t)seq, l, (uint32_t)n_keep, (uint32_t)n_discard,
                                                  (uint32_t)len, err);
            if (st != ROTKV_OK) return st;
            const int32_t first = (int32_t)kv_cache_first_pos(c->kv, (uint32_t)seq, l);
            p0 = (first > n_keep ? first : n_keep) + n_discard;
        }
        for (int32_t p = p0; p < len; p++) {
            const bool ring = kv_cache_ring_slots(c->kv, l) != 0;
            kv_cache_load(c->kv, (uint32_t)seq, l, (uint32_t)(ring ? p - n_discard : p), k, v);
            for (int h = 0; h < nkv; h++) {
                float *kh = k + (size_t)h * hd;
                if (c->rot_k[l]) rotation_apply_inverse(&c->rot, kh);
                /* RoPE angles add: rotating by -n_discard moves the key to p - n_discard */
                rope_apply(kh, (int)hp->n_rot, -n_discard, base, scale, c->rope_factors, hp->rope);
                if (c->rot_k[l]) rotation_apply(&c->rot, kh);
            }
            kv_cache_store(c->kv, (uint32_t)seq, l, (uint32_t)(p - n_discard), k, v);
        }
    }
    c->seq_len[seq] = len - n_discard;
    kv_cache_truncate(c->kv, (uint32_t)seq, (uint32_t)c->seq_len[seq]);
    return ROTKV_OK;
}

rotkv_status rotkv_seq_copy(rotkv_context *c, int32_t src, int32_t dst, int32_t n_tokens, rotkv_error *err) {
    if (src < 0 || dst < 0 || (uint32_t)src >= c->params.n_seq_max || (uint32_t)dst >= c->params.n_seq_max ||
        src == dst || n_tokens < 0 || n_tokens > c->seq_len[src])
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "rotkv_seq_copy: bad arguments (%d -> %d, %d tokens)", src,
                               dst, n_tokens);
    if (n_tokens < c->seq_len[src] && !kv_cache_can_truncate(c->kv, (uint32_t)src, (uint32_t)n_tokens))
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG,
                               "rotkv_seq_copy: the sliding-window layers of sequence %d no longer hold the window "
                               "before position %d", src, n_tokens);
    c->seq_len[dst] = 0;
    rotkv_status st = kv_cache_copy(c->kv, (uint32_t)src, (uint32_t)dst, (uint32_t)n_tokens, err);
    if (st == ROTKV_OK) c->seq_len[dst] = n_tokens;
    return st;
}

void rotkv_kv_get_stats(const rotkv_context *c, rotkv_kv_stats *st) {
    st->tokens_per_block = KV_PAGE_TOKENS;
    st->bytes_per_block = kv_cache_page_bytes(c->kv);
    st->blocks_used = kv_cache_allocated_bytes(c->kv) / st->bytes_per_block;
    st->blocks_budget = c->params.kv_budget_bytes / st->bytes_per_block;
    st->bytes_per_token = kv_cache_bytes_per_token(c->kv);
    st->f16_side_bytes = kv_cache_f16_side_bytes(c->kv);
    st->bytes_per_token_global = kv_cache_bytes_per_token_kind(c->kv, false);
    st->bytes_per_token_swa = kv_cache_bytes_per_token_kind(c->kv, true);
    st->n_layer_swa = st->swa_window = st->swa_ring_tokens = 0;
    for (uint32_t l = 0; l < c->model->hp.n_layer; l++)
        if (kv_cache_ring_slots(c->kv, l)) {
            st->n_layer_swa++;
            st->swa_window = kv_cache_window(c->kv, l);
            st->swa_ring_tokens = kv_cache_ring_slots(c->kv, l);
        }
}

uint64_t rotkv_kv_bytes_at(const rotkv_context *c, uint32_t n_tokens) {
    return kv_cache_seq_bytes(c->kv, n_tokens) + kv_cache_f16_side_bytes(c->kv);
}

bool rotkv_seq_can_truncate(const rotkv_context *c, int32_t seq, int32_t n_keep) {
    if (seq < 0 || (uint32_t)seq >= c->params.n_seq_max || n_keep < 0) return false;
    return n_keep >= c->seq_len[seq] || kv_cache_can_truncate(c->kv, (uint32_t)seq, (uint32_t)n_keep);
}

double rotkv_kv_bits_per_value(const rotkv_context *c, uint32_t n_tokens) {
    const model_hparams *hp = &c->model->hp;
    const double values = 2.0 * hp->n_layer * hp->n_head_kv * hp->head_dim_k; /* K and V per token */
    if (n_tokens == 0) return 8.0 * kv_cache_bytes_per_token(c->kv) / values;
    const uint32_t side = c->params.kv_sink + c->params.kv_window;
    const uint32_t in_side = n_tokens < side ? n_tokens : side;
    /* side rows are f16 (2 bytes/value); the rest use the codecs (per layer: a
     * sliding-window layer holds its ring's rows at most, and no side rows) */
    const double layer_values = 2.0 * hp->n_head_kv * hp->head_dim_k;
    double bytes = 0, vals = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const double rb = (double)(kv_cache_layout_k(c->kv, l)->row_bytes + kv_cache_layout_v(c->kv, l)->row_bytes);
        const uint32_t R = kv_cache_ring_slots(c->kv, l);
        if (R) {
            const uint32_t rows = n_tokens < R ? n_tokens : R;
            bytes += rows * rb;
            vals += rows * layer_values;
        } else {
            bytes += (double)(n_tokens - in_side) * rb + in_side * layer_values * 2.0;
            vals += (double)n_tokens * layer_values;
        }
    }
    return 8.0 * bytes / vals;
}

uint64_t rotkv_kv_blocks_for_tokens(const rotkv_context *c, uint32_t n_tokens) {
    /* blocks of KV_PAGE_TOKENS tokens of every layer; sliding-window layers stop growing at their ring */
    const uint64_t bytes = kv_cache_seq_alloc_bytes(c->kv, n_tokens), block = kv_cache_page_bytes(c->kv);
    return (bytes + block - 1) / block;
}

/* Runs the transformer over n tokens (already validated, positions in
 * tok_pos/tok_seq, KV pages reserved) and leaves the final residual in c->x. */
/* Gram matrix of the output-projection columns that read each KV head's
 * values, summed over the head's query group: (n_head_kv, hd, hd). */
static double *value_metric(const rotkv_model *m, const layer_weights *L) {
    const model_hparams *hp = &m->hp;
    const int hd = (int)hp->head_dim_v, nh = (int)hp->n_head, nkv = (int)hp->n_head_kv, group = nh / nkv;
    const int64_t cols = L->wo.ne0, rows = L->wo.ne1;
    double *M = calloc((size_t)nkv * hd * hd, sizeof(double));
    float *r = malloc(sizeof(float) * (size_t)cols);
    if (!M || !r) {
        free(M);
        free(r);
        return NULL;
    }
    const quant_traits *tr = quant_get_traits(L->wo.type);
    for (int64_t i = 0; i < rows; i++) {
        tr->dequantize_row((const uint8_t *)L->wo.data + (size_t)i * L->wo.row_bytes, r, cols);
        for (int h = 0; h < nh; h++) {
            double *Mh = M + (size_t)(h / group) * hd * hd;
            const float *w = r + (size_t)h * hd;
            for (int a = 0; a < hd; a++)
                for (int b = 0; b < hd; b++) Mh[a * hd + b] += (double)w[a] * w[b];
        }
    }
    free(r);
    return M;
}

/* Fits the kt* transforms of a layer on the current batch (c->q/k/v). Keys
 * and queries are post-RoPE, so a fit on positions 0..n alone would not know
 * the rotations of later positions: each key and query is also presented at
 * KT_AUG extra positions spread over the context (RoPE angles add). */
#define KT_AUG 7
/* The layer's keys and queries of the current batch (c->k, c->q), each also
 * at KT_AUG extra positions: Ka (n * (KT_AUG+1), n_head_kv*hd), Qa (.., n_head*hd). */
static void augment_rope(const rotkv_context *c, uint32_t il, int n, float *Ka, float *Qa) {
    const rotkv_model *m = c->model;
    const model_hparams *hp = &m->hp;
    const int hd = (int)hp->head_dim_k, nh = (int)hp->n_head, nkv = (int)hp->n_head_kv;
    const size_t Qd = (size_t)nh * hd, Kd = (size_t)nkv * hd;
    const uint32_t span = c->collect ? c->collect->n_ctx : c->params.n_ctx;
    float rbase, rscale;
    layer_rope(hp, il, &rbase, &rscale);
    uint64_t rs = 0x9e3779b97f4a7c15ull ^ il;
    for (int a = 0; a <= KT_AUG; a++)
        for (int t = 0; t < n; t++) {
            float *k = Ka + ((size_t)a * n + t) * Kd, *q = Qa + ((size_t)a * n + t) * Qd;
            memcpy(k, c->k + (size_t)t * Kd, sizeof(float) * Kd);
            memcpy(q, c->q + (size_t)t * Qd, sizeof(float) * Qd);
            if (a == 0) continue;
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            const int32_t dk = (int32_t)((rs >> 33) % span);
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            const int32_t dq = (int32_t)((rs >> 33) % span);
            for (int h = 0; h < nkv; h++)
                rope_apply(k + (size_t)h * hd, (int)hp->n_rot, dk, rbase, rscale, c->rope_factors, hp->rope);
            for (int h = 0; h < nh; h++)
                rope_apply(q + (size_t)h * hd, (int)hp->n_rot, dq, rbase, rscale, c->rope_factors, hp->rope);
        }
}

/* Fits the kt* transforms of a layer on the current batch (c->q/k/v), or with
 * a calibration attached adds the batch to its moments instead. Keys and
 * queries are post-RoPE, so a fit on positions 0..n alone would not know the
 * rotations of later positions: each key and query is also presented at
 * KT_AUG extra positions spread over the context (RoPE angles add). */
/* The batch's K and V rows of layer il into the cache. A trellis-coded
 * (ktt*) row costs a Viterbi search (~50 us per 64 values), so with several
 * tokens, no f16 window ring (its slots are shared between positions) and a
 * ktt layer the rows are encoded on every thread: each is encoded on its own,
 * so the bytes do not depend on the split. */
typedef struct {
    rotkv_context *c;
    uint32_t il;
    int t0, n; /* tokens [t0, n) */
    size_t Kd;
} store_job;

static void store_worker(void *arg, int ith, int nth) {
    const store_job *j = arg;
    for (int t = j->t0 + ith; t < j->n; t += nth)
        kv_cache_store(j->c->kv, (uint32_t)j->c->tok_seq[t], j->il, (uint32_t)j->c->tok_pos[t], j->c->k + (size_t)t * j->Kd,
                       j->c->v + (size_t)t * j->Kd);
}

/* Stores tokens [t0, n) of the batch in layer il: on all threads where the
 * rows are trellis-coded (ktt*, ~50 us a row) and nothing is shared between
 * the stores (no f16 window to evict from, no sliding-window ring to advance) */
static void store_rows(rotkv_context *c, uint32_t il, int t0, int n, size_t Kd) {
    store_job j = {c, il, t0, n, Kd};
    bool par = (kv_cache_layout_k(c->kv, il)->codec->trellis || kv_cache_layout_v(c->kv, il)->codec->trellis) &&
               n - t0 > 1 && c->params.kv_window == 0 && kv_cache_window(c->kv, il) == 0 && threadpool_size(c->tp) > 1;
    /* a centered side encodes through one shared scratch row */
    for (int t = t0; par && t < n; t++)
        par = !kv_cache_center_k(c->kv, (uint32_t)c->tok_seq[t], il) && !kv_cache_center_v(c->kv, (uint32_t)c->tok_seq[t], il);
    if (par) threadpool_run(c->tp, store_worker, &j);
    else store_worker(&j, 0, 1);
}

static rotkv_status calibrate_layer(rotkv_context *c, uint32_t il, int n, rotkv_error *err) {
    const rotkv_model *m = c->model;
    const model_hparams *hp = &m->hp;
    const int hd = (int)hp->head_dim_k, nh = (int)hp->n_head, nkv = (int)hp->n_head_kv;
    const size_t Qd = (size_t)nh * hd, Kd = (size_t)nkv * hd, na = (size_t)n * (KT_AUG + 1);
    float *Ka = malloc(sizeof(float) * na * Kd), *Qa = malloc(sizeof(float) * na * Qd);
    double *vm = c->collect ? NULL : value_metric(m, &m->layers[il]);
    rotkv_status st = ROTKV_OK;
    if (!Ka || !Qa || (!c->collect && !vm)) {
        st = rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory calibrating the KV transforms");
        goto out;
    }
    augment_rope(c, il, n, Ka, Qa);
    if (c->collect) kv_calib_accumulate(c->collect, il, Ka, (int)na, Qa, (int)na, c->v, n);
    else st = kv_cache_calibrate(c->kv, il, Ka, (int)na, c->v, n, Qa, (int)na, nh, vm, err);
out:
    free(Ka);
    free(Qa);
    free(vm);
    return st;
}

rotkv_status rotkv_kv_calib_attach(rotkv_context *c, rotkv_kv_calib *cal, rotkv_error *err) {
    if (!cal) {
        c->collect = NULL;
        return ROTKV_OK;
    }
    const model_hparams *hp = &c->model->hp;
    if (cal->finished) return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV calibration already finished");
    if (cal->model_id != kv_calib_model_id(c->model))
        return rotkv_set_error(err, ROTKV_ERR_MISMATCH, "KV calibration was created for another model");
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kv_codec *ck = kv_cache_layout_k(c->kv, l)->codec, *cv = kv_cache_layout_v(c->kv, l)->codec;
        if (ck->quantized || cv->quantized || c->rot_k[l] || c->rot_v[l])
            return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG,
                                   "KV calibration needs an f32/f16/bf16 cache without attn-rot (layer %u has %s/%s%s)", l,
                                   ck->name, cv->name, c->rot_k[l] || c->rot_v[l] ? ", rotated" : "");
    }
    c->collect = cal;
    return ROTKV_OK;
}

static rotkv_status forward_layers(rotkv_context *c, const rotkv_token *tokens, int n, rotkv_error *err) {
    const rotkv_model *m = c->model;
    const model_hparams *hp = &m->hp;
    const int E = (int)hp->n_embd, hd = (int)hp->head_dim_k, F = (int)hp->n_ff;
    const int nh = (int)hp->n_head, nkv = (int)hp->n_head_kv;
    const int Qd = nh * hd, Kd = nkv * hd;
    for (int t = 0; t < n; t++) {
        model_embedding_row(m, tokens[t], c->x + (size_t)t * E);
        if (hp->embd_scale != 1.0f) /* gemma: sqrt(n_embd) */
            for (int i = 0; i < E; i++) c->x[(size_t)t * E + i] *= hp->embd_scale;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++) {
        const layer_weights *L = &m->layers[il];
        float rbase, rscale;
        layer_rope(hp, il, &rbase, &rscale);
        for (int t = 0; t < n; t++) rmsnorm(c->xb + (size_t)t * E, c->x + (size_t)t * E, L->attn_norm, E, hp->norm_eps);
        timed_matmul(c, &L->wq, c->xb, n, c->q);
        timed_matmul(c, &L->wk, c->xb, n, c->k);
        timed_matmul(c, &L->wv, c->xb, n, c->v);
        for (int t = 0; t < n; t++) {
            float *q = c->q + (size_t)t * Qd, *k = c->k + (size_t)t * Kd, *v = c->v + (size_t)t * Kd;
            if (L->bq) for (int i = 0; i < Qd; i++) q[i] += L->bq[i];
            if (L->bk) for (int i = 0; i < Kd; i++) k[i] += L->bk[i];
            if (L->bv) for (int i = 0; i < Kd; i++) v[i] += L->bv[i];
            for (int h = 0; h < nh; h++) {
                if (L->q_norm) rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, hp->norm_eps);
                rope_apply(q + h * hd, (int)hp->n_rot, c->tok_pos[t], rbase, rscale, c->rope_factors, hp->rope);
                if (c->rope_mscale != 1.0f) /* LongRoPE: the rotated dims' cos/sin carry attn_factor */
                    for (uint32_t i = 0; i < hp->n_rot; i++) q[h * hd + i] *= c->rope_mscale;
            }
            for (int h = 0; h < nkv; h++) {
                if (L->k_norm) rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, hp->norm_eps);
                rope_apply(k + h * hd, (int)hp->n_rot, c->tok_pos[t], rbase, rscale, c->rope_factors, hp->rope);
                if (c->rope_mscale != 1.0f)
                    for (uint32_t i = 0; i < hp->n_rot; i++) k[h * hd + i] *= c->rope_mscale;
            }
            /* attn-rot: q·k is unchanged by the orthonormal rotation; v's is undone on the output */
            if (c->rot_k[il]) {
                for (int h = 0; h < nh; h++) rotation_apply(&c->rot, q + h * hd);
                for (int h = 0; h < nkv; h++) rotation_apply(&c->rot, k + h * hd);
            }
            if (c->rot_v[il])
                for (int h = 0; h < nkv; h++) rotation_apply(&c->rot, v + h * hd);
        }
        /* a sequence's first batch sets its K/V centers (used when centering is on) */
        for (int t = 0; t < n; t++) {
            if (c->tok_pos[t] != 0 || (!kv_cache_center_k(c->kv, (uint32_t)c->tok_seq[t], il) &&
                                       !kv_cache_center_v(c->kv, (uint32_t)c->tok_seq[t], il)))
                continue;
            float *mk = c->center, *mv = c->center + Kd;
            int cnt = 0;
            memset(c->center, 0, sizeof(float) * 2 * (size_t)Kd);
            for (int u = t; u < n; u++) {
                if (c->tok_seq[u] != c->tok_seq[t]) continue;
                for (int i = 0; i < Kd; i++) {
                    mk[i] += c->k[(size_t)u * Kd + i];
                    mv[i] += c->v[(size_t)u * Kd + i];
                }
                cnt++;
            }
            for (int i = 0; i < 2 * Kd; i++) c->center[i] /= (float)cnt;
            kv_cache_set_center(c->kv, (uint32_t)c->tok_seq[t], il, mk, mv);
        }
        if (c->collect || kv_cache_needs_calibration(c->kv, il)) {
            /* kt* cache types are fitted on the first batch this layer sees */
            rotkv_status st = calibrate_layer(c, il, n, err);
            if (st != ROTKV_OK) return st;
        }
        /* a sliding-window layer's ring holds its window plus a slack: the batch is stored and
         * attended in chunks that never evict a position one of their queries still sees */
        const uint32_t chunk = kv_cache_swa_chunk(c->kv, il);
        const int32_t window = (int32_t)kv_cache_window(c->kv, il);
        const size_t rb = kv_cache_layout_k(c->kv, il)->row_bytes + kv_cache_layout_v(c->kv, il)->row_bytes;
        for (int c0 = 0, c1; c0 < n; c0 = c1) {
            c1 = chunk >= (uint32_t)(n - c0) ? n : c0 + (int)chunk;
            store_rows(c, il, c0, c1, Kd);
            attention_args aa = {c->kv, il, c1 - c0, c->tok_seq + c0, c->tok_pos + c0, nh, nkv, hd, hp->attn_scale,
                                 c->q + (size_t)c0 * Qd, c->xb + (size_t)c0 * Qd, c->att_scratch, 0, window,
                                 hp->attn_softcap, L->attn_sinks};
            const double ta = now_ms();
            attention_batch(c->tp, &aa);
            c->perf.t_attention_ms += now_ms() - ta;
        }
        for (int t = 0; t < n; t++)
            c->perf.kv_bytes_attended +=
                (uint64_t)(window && c->tok_pos[t] + 1 > window ? window : c->tok_pos[t] + 1) * rb;
        if (c->rot_v[il])
            for (int i = 0; i < n * nh; i++) rotation_apply_inverse(&c->rot, c->xb + (size_t)i * hd);
        timed_matmul(c, &L->wo, c->xb, n, c->tmp);
        if (L->bo) /* gpt-oss: the output projection's bias */
            for (int t = 0; t < n; t++)
                for (int i = 0; i < E; i++) c->tmp[(size_t)t * E + i] += L->bo[i];
        if (L->attn_post_norm) /* gemma: the sublayer's output normed before the residual */
            for (int t = 0; t < n; t++)
                rmsnorm(c->tmp + (size_t)t * E, c->tmp + (size_t)t * E, L->attn_post_norm, E, hp->norm_eps);
        for (size_t i = 0; i < (size_t)n * E; i++) c->x[i] += c->tmp[i];
        for (int t = 0; t < n; t++) rmsnorm(c->xb + (size_t)t * E, c->x + (size_t)t * E, L->ffn_norm, E, hp->norm_eps);
        if (L->ffn_gate_inp.data) { /* mixture of experts: only the routed experts are read */
            if (!moe_ffn(c->tp, hp, L, c->xb, n, c->tmp, &c->moe, c->mm_scratch, &c->perf.t_matmul_ms))
                return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory in the experts of layer %u", il);
        } else {
            timed_matmul(c, &L->w_gate, c->xb, n, c->gate);
            timed_matmul(c, &L->w_up, c->xb, n, c->up);
            if (hp->ffn_gelu) geglu(c->gate, c->up, n * F);
            else swiglu(c->gate, c->up, n * F);
            timed_matmul(c, &L->w_down, c->gate, n, c->tmp);
        }
        if (L->ffn_post_norm)
            for (int t = 0; t < n; t++)
                rmsnorm(c->tmp + (size_t)t * E, c->tmp + (size_t)t * E, L->ffn_post_norm, E, hp->norm_eps);
        for (size_t i = 0; i < (size_t)n * E; i++) c->x[i] += c->tmp[i];
    }
    return ROTKV_OK;
}

static rotkv_status ensure_logits(rotkv_context *c, int32_t rows, int32_t batch, rotkv_error *err) {
    const size_t V = c->model->hp.n_vocab;
    if (rows > c->n_logits_cap) {
        float *nl = realloc(c->logits, (size_t)rows * V * sizeof(float));
        if (!nl) return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory for %d rows of logits", rows);
        c->logits = nl;
        c->n_logits_cap = rows;
    }
    if (batch > c->logits_row_cap) {
        int32_t *nr = realloc(c->logits_row, (size_t)batch * sizeof(int32_t));
        if (!nr) return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        c->logits_row = nr;
        c->logits_row_cap = batch;
    }
    return ROTKV_OK;
}

rotkv_status rotkv_decode(rotkv_context *c, const rotkv_batch *b, rotkv_error *err) {
    if (!c || !b || b->n_tokens <= 0 || !b->token)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "rotkv_decode: empty or NULL batch");
    const rotkv_model *m = c->model;
    const int32_t N = b->n_tokens, V = (int32_t)m->hp.n_vocab;
    /* validate everything before touching the cache */
    int32_t *next = malloc(c->params.n_seq_max * sizeof(int32_t));
    if (!next) return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    memcpy(next, c->seq_len, c->params.n_seq_max * sizeof(int32_t));
    int32_t n_out = 0;
    rotkv_status st = ROTKV_OK;
    for (int32_t i = 0; i < N && st == ROTKV_OK; i++) {
        const int32_t s = b->seq_id ? b->seq_id[i] : 0;
        if (b->token[i] < 0 || b->token[i] >= V)
            st = rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "batch token %d: id %d is outside the vocabulary [0, %d)",
                                 i, b->token[i], V);
        else if (s < 0 || (uint32_t)s >= c->params.n_seq_max)
            st = rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "batch token %d: sequence id %d outside [0, %u)", i, s,
                                 c->params.n_seq_max);
        else if (b->pos && b->pos[i] != next[s])
            st = rotkv_set_error(err, ROTKV_ERR_INVALID_ARG,
                                 "batch token %d: position %d does not continue sequence %d (expected %d)", i,
                                 b->pos[i], s, next[s]);
        else if ((uint32_t)next[s] >= c->params.n_ctx)
            st = rotkv_set_error(err, ROTKV_ERR_CONTEXT_FULL,
                                 "context full: sequence %d already holds %d tokens (n_ctx = %u)", s, next[s],
                                 c->params.n_ctx);
        else
            next[s]++;
        if (b->logits ? b->logits[i] : i == N - 1) n_out++;
    }
    for (uint32_t s = 0; st == ROTKV_OK && s < c->params.n_seq_max; s++)
        if (next[s] > c->seq_len[s]) st = kv_cache_reserve(c->kv, s, (uint32_t)next[s], err);
    free(next);
    if (st == ROTKV_OK) st = ensure_logits(c, n_out, N, err);
    if (st != ROTKV_OK) return st;

    const int E = (int)m->hp.n_embd;
    const double t_start = now_ms();
    c->n_logits = 0;
    c->last_logits_row = -1;
    c->last_batch_n = N;
    for (int32_t start = 0; start < N; start += (int32_t)c->params.n_batch) {
        const int32_t n = N - start < (int32_t)c->params.n_batch ? N - start : (int32_t)c->params.n_batch;
        for (int32_t t = 0; t < n; t++) {
            const int32_t s = b->seq_id ? b->seq_id[start + t] : 0;
            c->tok_seq[t] = s;
            c->tok_pos[t] = c->seq_len[s]++;
        }
        rotkv_status fst = forward_layers(c, b->token + start, n, err);
        if (fst != ROTKV_OK) {
            /* roll back the positions this batch claimed (and what the rings recorded of them) */
            for (int32_t t = 0; t < n; t++) c->seq_len[c->tok_seq[t]]--;
            for (int32_t t = 0; t < n; t++) {
                const int32_t s = c->tok_seq[t];
                if (!kv_cache_can_truncate(c->kv, (uint32_t)s, (uint32_t)c->seq_len[s])) c->seq_len[s] = 0;
                kv_cache_truncate(c->kv, (uint32_t)s, (uint32_t)c->seq_len[s]);
            }
            return fst;
        }
        /* final norm and output projection for the tokens that want logits */
        int32_t rows = 0;
        for (int32_t t = 0; t < n; t++) {
            const int32_t i = start + t;
            const bool want = b->logits ? b->logits[i] != 0 : i == N - 1;
            c->logits_row[i] = want ? c->n_logits + rows : -1;
            if (want) {
                rmsnorm(c->xb + (size_t)rows * E, c->x + (size_t)t * E, m->output_norm, E, m->hp.norm_eps);
                rows++;
            }
        }
        if (rows) {
            timed_matmul(c, &m->output, c->xb, rows, c->logits + (size_t)c->n_logits * V);
            if (m->hp.final_softcap > 0) { /* gemma2: cap * tanh(logit / cap) */
                const float cap = m->hp.final_softcap, icap = 1.0f / m->hp.final_softcap;
                float *lg = c->logits + (size_t)c->n_logits * V;
                for (size_t i = 0; i < (size_t)rows * V; i++) lg[i] = cap * tanhf(lg[i] * icap);
            }
            c->n_logits += rows;
            c->last_logits_row = c->n_logits - 1;
        }
    }
    c->perf.t_decode_ms += now_ms() - t_start;
    c->perf.n_tokens += (uint64_t)N;
    return ROTKV_OK;
}

const float *rotkv_get_logits(rotkv_context *c, int32_t i) {
    const size_t V = c->model->hp.n_vocab;
    if (i < 0) return c->last_logits_row >= 0 ? c->logits + (size_t)c->last_logits_row * V : NULL;
    if (i >= c->last_batch_n || c->logits_row[i] < 0 || c->logits_row[i] >= c->n_logits) return NULL;
    return c->logits + (size_t)c->logits_row[i] * V;
}
