/* model.c — reading hyperparameters and weights from GGUF, with every tensor's
 * shape and type checked against the hyperparameters before use. */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "quant.h"

rotkv_status rotkv_set_error(rotkv_error *err, rotkv_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

typedef struct {
    const gguf_file *f;
    const char *arch;
    rotkv_error *err;
} loader;

static void arch_key(const loader *L, const char *suffix, char *buf, size_t len) {
    snprintf(buf, len, "%s.%s", L->arch, suffix);
}

/* Reads "<arch>.<suffix>" as u32; required keys fail when missing. */
static bool get_u32(loader *L, const char *suffix, uint32_t *out, bool required, uint32_t def) {
    char key[128];
    arch_key(L, suffix, key, sizeof key);
    const gguf_kv *kv = gguf_find(L->f, key);
    if (!kv) {
        if (required) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "required key '%s' is missing", key);
            return false;
        }
        *out = def;
        return true;
    }
    if (!gguf_get_u32(L->f, key, out)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "key '%s' (at byte offset %llu) must be a non-negative 32-bit integer, is %s",
                        key, (unsigned long long)kv->offset, gguf_type_name(kv->type));
        return false;
    }
    return true;
}

static bool get_f32(loader *L, const char *suffix, float *out, bool required, float def) {
    char key[128];
    arch_key(L, suffix, key, sizeof key);
    const gguf_kv *kv = gguf_find(L->f, key);
    if (!kv) {
        if (required) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "required key '%s' is missing", key);
            return false;
        }
        *out = def;
        return true;
    }
    if (!gguf_get_f32(L->f, key, out) || !isfinite(*out)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "key '%s' (at byte offset %llu) must be a finite number",
                        key, (unsigned long long)kv->offset);
        return false;
    }
    return true;
}

/* Mixture-of-experts keys as llama.cpp's converter writes them. qwen3moe and
 * qwen2moe always route; llama routes when expert_count > 0 (Mixtral). All
 * take the softmax over all experts and keep the top expert_used_count;
 * qwen3moe and llama renormalize their weights to sum 1, qwen2moe does not
 * (llama.cpp decides so per architecture, whatever norm_topk_prob was).
 * qwen2moe adds a shared expert. Structure rotkv does not implement — expert
 * groups, shared experts elsewhere — is refused by name rather than ignored. */
static bool read_moe_hparams(loader *L, model_hparams *hp) {
    const bool moe_arch = hp->arch == ARCH_QWEN3MOE || hp->arch == ARCH_QWEN2MOE || hp->arch == ARCH_GPTOSS;
    if (!get_u32(L, "expert_count", &hp->n_expert, moe_arch, 0) ||
        !get_u32(L, "expert_used_count", &hp->n_expert_used, hp->n_expert > 0, 0))
        return false;
    if (hp->n_expert == 0) {
        hp->n_expert_used = 0;
        return true;
    }
    if (!moe_arch && hp->arch != ARCH_LLAMA) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "%s.expert_count is %u: mixture of experts is supported for "
                        "qwen3moe, qwen2moe, gpt-oss and llama (Mixtral) only", L->arch, hp->n_expert);
        return false;
    }
    if (hp->n_expert > 512 || hp->n_expert_used == 0 || hp->n_expert_used > hp->n_expert) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s.expert_used_count %u must be in [1, expert_count %u], and "
                        "expert_count at most 512", L->arch, hp->n_expert_used, hp->n_expert);
        return false;
    }
    /* llama (Mixtral) experts are feed_forward_length wide; qwen3moe says so
     * in its own key, else (as llama.cpp) n_ff / expert_used_count */
    uint32_t def = hp->arch == ARCH_LLAMA ? hp->n_ff : hp->n_ff / hp->n_expert_used;
    if (!get_u32(L, "expert_feed_forward_length", &hp->n_ff_exp, false, def)) return false;
    if (hp->arch == ARCH_LLAMA) hp->n_ff_exp = hp->n_ff;
    if (hp->n_ff_exp == 0 || hp->n_ff_exp > (1u << 18)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s: expert feed-forward length %u is out of range", L->arch,
                        hp->n_ff_exp);
        return false;
    }
    uint32_t v = 0;
    if (!get_u32(L, "expert_group_count", &v, false, 0)) return false;
    if (v > 1) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "%s.expert_group_count %u: grouped expert selection is not supported",
                        L->arch, v);
        return false;
    }
    /* gpt-oss (llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX_WEIGHT, fixed for the architecture):
     * the top k of the raw router logits (plus the router's bias), weighted by the softmax over
     * those k, and each expert's FFN the clamped SwiGLU with biases */
    hp->expert_weights_norm = hp->arch != ARCH_QWEN2MOE && hp->arch != ARCH_GPTOSS;
    hp->expert_softmax_topk = hp->ffn_swiglu_oai = hp->arch == ARCH_GPTOSS;
    if (hp->arch == ARCH_QWEN2MOE) { /* its shared expert: feed_forward_length wide unless said */
        if (!get_u32(L, "expert_shared_feed_forward_length", &hp->n_ff_shexp, false, hp->n_ff)) return false;
        if (hp->n_ff_shexp == 0 || hp->n_ff_shexp > (1u << 18)) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s: shared expert feed-forward length %u is out of range",
                            L->arch, hp->n_ff_shexp);
            return false;
        }
        return true;
    }
    if (!get_u32(L, "expert_shared_count", &v, false, 0)) return false;
    if (v > 0 || gguf_find_tensor(L->f, "blk.0.ffn_up_shexp.weight")) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "%s: shared experts (%s) are not part of this architecture",
                        L->arch, v > 0 ? "expert_shared_count" : "tensor blk.0.ffn_up_shexp.weight");
        return false;
    }
    return true;
}

/* Keys that change the math and that rotkv implements for no architecture
 * (or not for this one): refused by name rather than ignored. */
static bool refuse_keys(loader *L, const char *const *suffixes, int n, const char *why) {
    for (int i = 0; i < n; i++) {
        char key[128];
        arch_key(L, suffixes[i], key, sizeof key);
        if (gguf_find(L->f, key)) {
            rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "key '%s' is not supported %s", key, why);
            return false;
        }
    }
    return true;
}

/* gpt-oss, as llama.cpp reads it (LLM_ARCH_OPENAI_MOE): attention.sliding_window is required and
 * every other layer slides, from layer 0 (llama.cpp's fixed pattern 2: no pattern key, which
 * the caller refuses); both kinds of layer rotate alike (base, YaRN); q·k is scaled by
 * 1/sqrt(n_rot), and llama.cpp reshapes q and k by n_rot, so n_rot must be the head size. */
static bool read_gptoss_hparams(loader *L, model_hparams *hp) {
    if (hp->n_rot != hp->head_dim_k) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "gpt-oss.rope.dimension_count %u must equal the head size %u",
                        hp->n_rot, hp->head_dim_k);
        return false;
    }
    hp->attn_scale = 1.0f / sqrtf((float)hp->n_rot);
    if (!get_u32(L, "attention.sliding_window", &hp->n_swa, true, 0)) return false;
    if (hp->n_swa == 0 || hp->n_swa > (1u << 24)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "gpt-oss.attention.sliding_window %u is out of range", hp->n_swa);
        return false;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++) hp->swa_layer[il] = il % 2 == 0;
    return true;
}

/* gemma2 / gemma3, as llama.cpp reads them. Sliding-window layers: gemma2
 * every other one from layer 0 (pattern 2), gemma3 five in six (pattern 6:
 * layer il slides when il % 6 < 5), both unless attention.sliding_window_pattern
 * says otherwise (a period, or one boolean per layer); gemma3 without
 * attention.sliding_window has none. gemma2's soft-caps default to 50 and 30
 * (llama.cpp's), gemma3 has no attention soft-cap and a final one only if the
 * key is there. The sliding-window layers of gemma3 rotate with
 * rope.freq_base_swa (default 10000) and no linear scaling; the global ones
 * with rope.freq_base and the scaling. q·k is scaled by 1/sqrt(head_dim),
 * except in the 27B models (gemma2 46 layers, gemma3 62: llama.cpp picks them
 * by layer count) by 1/sqrt(n_embd / n_head). The embedding is multiplied by
 * sqrt(n_embd); the norm weights are stored with gemma's +1 already added by
 * the converter, so every RMSNorm is the plain one. */
static bool read_gemma_hparams(loader *L, model_hparams *hp) {
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim_k);
    hp->embd_scale = 1.0f;
    hp->rope_freq_base_swa = hp->rope_freq_base;
    hp->rope_freq_scale_swa = hp->rope_freq_scale;
    const bool gemma = hp->arch == ARCH_GEMMA2 || hp->arch == ARCH_GEMMA3;
    static const char *const swa_keys[] = {"attention.sliding_window", "attention.sliding_window_pattern",
                                           "rope.freq_base_swa", "attn_logit_softcapping", "final_logit_softcapping"};
    static const char *const never[] = {"attention.scale", "embedding_scale", "attention.key_length_swa",
                                        "attention.value_length_swa", "rope.dimension_count_swa", "logit_scale",
                                        "attention.output_scale", "attention.value_scale"};
    if (!refuse_keys(L, never, (int)(sizeof never / sizeof never[0]), "(rotkv does not implement it)")) return false;
    /* attention.sliding_window itself llama.cpp ignores on these architectures (phi3 writes it and
     * llama.cpp switches it off: "Phi SWA is currently disabled"), and so does rotkv */
    if (!gemma) {
        if (!refuse_keys(L, swa_keys + 1, (int)(sizeof swa_keys / sizeof swa_keys[0]) - 1,
                         "for this architecture (sliding-window patterns and soft-capping: gemma2, gemma3)"))
            return false;
        return hp->arch != ARCH_GPTOSS || read_gptoss_hparams(L, hp);
    }
    hp->ffn_gelu = true;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    const bool g2 = hp->arch == ARCH_GEMMA2;
    if ((g2 && hp->n_layer == 46) || (!g2 && hp->n_layer == 62))
        hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
    if (!get_u32(L, "attention.sliding_window", &hp->n_swa, false, g2 ? 4096 : 0) ||
        !get_f32(L, "final_logit_softcapping", &hp->final_softcap, false, g2 ? 30.0f : 0.0f) ||
        !get_f32(L, "attn_logit_softcapping", &hp->attn_softcap, false, g2 ? 50.0f : 0.0f))
        return false;
    if (!g2 && hp->attn_softcap != 0.0f) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "gemma3.attn_logit_softcapping: gemma3 has no attention soft-cap");
        return false;
    }
    if (hp->final_softcap < 0 || hp->attn_softcap < 0) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s: soft-capping values must not be negative (attention %g, final %g)",
                        L->arch, hp->attn_softcap, hp->final_softcap);
        return false;
    }
    if (!g2) {
        if (!get_f32(L, "rope.freq_base_swa", &hp->rope_freq_base_swa, false, 10000.0f)) return false;
        hp->rope_freq_scale_swa = 1.0f;
        if (!(hp->rope_freq_base_swa > 0)) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "gemma3.rope.freq_base_swa %g must be positive", hp->rope_freq_base_swa);
            return false;
        }
    } else if (!refuse_keys(L, swa_keys + 2, 1, "for gemma2 (its sliding-window layers rotate as the global ones)")) {
        return false;
    }
    if (hp->n_swa == 0) return true; /* gemma3 without a window: every layer global */
    if (hp->n_swa > (1u << 24)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s.attention.sliding_window %u is implausible", L->arch, hp->n_swa);
        return false;
    }
    uint32_t period = g2 ? 2 : 6;
    char key[128];
    arch_key(L, "attention.sliding_window_pattern", key, sizeof key);
    const gguf_kv *pk = gguf_find(L->f, key);
    if (pk && pk->type == GGUF_TYPE_ARRAY) {
        double v = 0;
        if (pk->arr_n != hp->n_layer || pk->strs) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "key '%s' must be one boolean per layer (%u)", key, hp->n_layer);
            return false;
        }
        for (uint32_t il = 0; il < hp->n_layer; il++) {
            if (pk->arr_type == GGUF_TYPE_BOOL) v = pk->data[il];
            else if (!gguf_arr_get_num(pk, il, &v)) {
                rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "key '%s' must be one boolean per layer", key);
                return false;
            }
            hp->swa_layer[il] = v != 0;
        }
        return true;
    }
    if (pk && !get_u32(L, "attention.sliding_window_pattern", &period, true, 0)) return false;
    for (uint32_t il = 0; il < hp->n_layer; il++) hp->swa_layer[il] = period == 0 || il % period < period - 1;
    return true;
}

/* YaRN (gpt-oss), with llama.cpp's defaults: ext_factor -1 (= 1 for YaRN), attn_factor 1,
 * beta_fast 32, beta_slow 1, the original context rope.scaling.original_context_length
 * (read by the caller). rope.scaling.yarn_truncate, which the converter writes from HF's
 * "truncate", llama.cpp does not read: it always rounds the correction range outwards, and so
 * does rotkv. yarn_log_multiplier (DeepSeek's) is refused. */
static bool read_yarn(loader *L, model_hparams *hp, float factor) {
    if (!(factor > 0)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s.rope.scaling.factor %g must be positive for YaRN", L->arch, factor);
        return false;
    }
    hp->rope_yarn = true;
    hp->yarn_freq_scale = 1.0f / factor;
    float log_mul = 0.0f;
    if (!get_f32(L, "rope.scaling.yarn_ext_factor", &hp->yarn_ext_factor, false, -1.0f) ||
        !get_f32(L, "rope.scaling.yarn_attn_factor", &hp->yarn_attn_factor, false, 1.0f) ||
        !get_f32(L, "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast, false, 32.0f) ||
        !get_f32(L, "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow, false, 1.0f) ||
        !get_f32(L, "rope.scaling.yarn_log_multiplier", &log_mul, false, 0.0f))
        return false;
    if (hp->yarn_ext_factor < 0) hp->yarn_ext_factor = 1.0f;
    if (log_mul != 0.0f) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "key '%s.rope.scaling.yarn_log_multiplier' (%g) is not supported",
                        L->arch, log_mul);
        return false;
    }
    if (!(hp->yarn_attn_factor > 0) || !(hp->yarn_beta_fast > 0) || !(hp->yarn_beta_slow > 0) || hp->n_ctx_orig == 0) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s: YaRN attn_factor %g, beta_fast %g, beta_slow %g and the original "
                        "context %u must be positive", L->arch, hp->yarn_attn_factor, hp->yarn_beta_fast,
                        hp->yarn_beta_slow, hp->n_ctx_orig);
        return false;
    }
    return true;
}

static bool read_hparams(loader *L, model_hparams *hp) {
    if (strcmp(L->arch, "llama") == 0 || strcmp(L->arch, "mistral") == 0) {
        hp->arch = ARCH_LLAMA;
        hp->rope = ROPE_NORM;
    } else if (strcmp(L->arch, "qwen2") == 0) {
        hp->arch = ARCH_QWEN2;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "qwen3") == 0) {
        hp->arch = ARCH_QWEN3;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "qwen3moe") == 0) {
        hp->arch = ARCH_QWEN3MOE;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "qwen2moe") == 0) {
        hp->arch = ARCH_QWEN2MOE;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "phi3") == 0) {
        hp->arch = ARCH_PHI3;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "gemma2") == 0) {
        hp->arch = ARCH_GEMMA2;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "gemma3") == 0) {
        hp->arch = ARCH_GEMMA3;
        hp->rope = ROPE_NEOX;
    } else if (strcmp(L->arch, "gpt-oss") == 0) {
        hp->arch = ARCH_GPTOSS;
        hp->rope = ROPE_NEOX;
    } else {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED,
                        "unsupported architecture '%s' (supported: llama, mistral, qwen2, qwen3, qwen3moe, qwen2moe, phi3, "
                        "gemma2, gemma3, gpt-oss)", L->arch);
        return false;
    }
    snprintf(hp->arch_name, sizeof hp->arch_name, "%s", L->arch);
    if (!get_u32(L, "context_length", &hp->n_ctx_train, true, 0) ||
        !get_u32(L, "embedding_length", &hp->n_embd, true, 0) ||
        !get_u32(L, "block_count", &hp->n_layer, true, 0) ||
        !get_u32(L, "feed_forward_length", &hp->n_ff, true, 0) ||
        !get_u32(L, "attention.head_count", &hp->n_head, true, 0) ||
        !get_u32(L, "attention.head_count_kv", &hp->n_head_kv, false, hp->n_head) ||
        !get_f32(L, "attention.layer_norm_rms_epsilon", &hp->norm_eps, true, 0) ||
        !get_f32(L, "rope.freq_base", &hp->rope_freq_base, false, 10000.0f))
        return false;
    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_ff == 0 || hp->n_head == 0 || hp->n_head_kv == 0 ||
        hp->n_ctx_train == 0) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s: a size hyperparameter is zero (n_embd=%u n_layer=%u n_ff=%u n_head=%u n_head_kv=%u n_ctx=%u)",
                        L->arch, hp->n_embd, hp->n_layer, hp->n_ff, hp->n_head, hp->n_head_kv, hp->n_ctx_train);
        return false;
    }
    if (hp->n_embd > (1u << 16) || hp->n_ff > (1u << 18) || hp->n_head > 1024 || hp->n_layer > MODEL_MAX_LAYERS) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "%s: implausible sizes (n_embd=%u n_ff=%u n_head=%u n_layer=%u)",
                        L->arch, hp->n_embd, hp->n_ff, hp->n_head, hp->n_layer);
        return false;
    }
    if (hp->n_head % hp->n_head_kv) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "head_count %u is not a multiple of head_count_kv %u",
                        hp->n_head, hp->n_head_kv);
        return false;
    }
    uint32_t hd_default = hp->n_embd / hp->n_head;
    if (!get_u32(L, "attention.key_length", &hp->head_dim_k, false, hd_default) ||
        !get_u32(L, "attention.value_length", &hp->head_dim_v, false, hd_default) ||
        !get_u32(L, "rope.dimension_count", &hp->n_rot, false, hp->head_dim_k))
        return false;
    if (hp->head_dim_k == 0 || hp->head_dim_v == 0 || hp->head_dim_k > 1024 || hp->head_dim_v > 1024 ||
        hp->n_rot > hp->head_dim_k || hp->n_rot % 2) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "invalid head sizes: key_length=%u value_length=%u rope dims=%u",
                        hp->head_dim_k, hp->head_dim_v, hp->n_rot);
        return false;
    }
    if (hp->head_dim_k != hp->head_dim_v) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "key_length %u != value_length %u is not supported",
                        hp->head_dim_k, hp->head_dim_v);
        return false;
    }
    if (!(hp->norm_eps > 0) || !(hp->rope_freq_base > 0)) {
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "rms epsilon (%g) and rope freq_base (%g) must be positive",
                        hp->norm_eps, hp->rope_freq_base);
        return false;
    }
    if (!read_moe_hparams(L, hp)) return false;
    if (!get_u32(L, "rope.scaling.original_context_length", &hp->n_ctx_orig, false, hp->n_ctx_train) ||
        !get_f32(L, "rope.scaling.attn_factor", &hp->rope_attn_factor, false, 1.0f))
        return false;
    if (!(hp->rope_attn_factor > 0) || (hp->rope_attn_factor != 1.0f && hp->arch != ARCH_PHI3)) {
        rotkv_set_error(L->err, hp->rope_attn_factor > 0 ? ROTKV_ERR_UNSUPPORTED : ROTKV_ERR_FORMAT,
                        "%s.rope.scaling.attn_factor %g: supported for phi3 LongRoPE only, and must be positive",
                        L->arch, hp->rope_attn_factor);
        return false;
    }
    hp->rope_freq_scale = 1.0f;
    char key[128];
    arch_key(L, "rope.scaling.type", key, sizeof key);
    gguf_str st;
    if (gguf_get_str(L->f, key, &st) && !gguf_str_eq(st, "none")) {
        float factor = 1.0f;
        if (!get_f32(L, "rope.scaling.factor", &factor, false, 1.0f)) return false;
        if (gguf_str_eq(st, "linear")) {
            if (!(factor > 0)) {
                rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "rope scaling factor %g must be positive", factor);
                return false;
            }
            hp->rope_freq_scale = 1.0f / factor;
        } else if (gguf_str_eq(st, "yarn") && hp->arch == ARCH_GPTOSS) {
            if (!read_yarn(L, hp, factor)) return false;
        } else if (!(factor == 0.0f || factor == 1.0f)) {
            char name[64];
            rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "rope scaling type '%s' is not supported",
                            gguf_str_cpy(st, name, sizeof name));
            return false;
        }
    }
    return read_gemma_hparams(L, hp);
}

/* Looks up a tensor and checks its shape (ne0, ne1; ne1 = 0 for a vector) and
 * that its type is one the engine can compute with. */
static const gguf_tensor *find_checked3(loader *L, const char *name, int64_t ne0, int64_t ne1, int64_t ne2,
                                        bool required) {
    const gguf_tensor *t = gguf_find_tensor(L->f, name);
    if (!t) {
        if (required) rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "required tensor '%s' is missing", name);
        return NULL;
    }
    bool ok = ne1 == 0 ? (t->n_dims == 1 || (t->ne[1] == 1)) && t->ne[0] == (uint64_t)ne0
                       : t->ne[0] == (uint64_t)ne0 && t->ne[1] == (uint64_t)ne1;
    ok = ok && t->ne[2] == (uint64_t)(ne2 ? ne2 : 1) && t->ne[3] == 1;
    if (!ok) {
        char want[96];
        if (ne2) snprintf(want, sizeof want, "[%lld, %lld, %lld]", (long long)ne0, (long long)ne1, (long long)ne2);
        else snprintf(want, sizeof want, "[%lld, %lld]", (long long)ne0, (long long)(ne1 ? ne1 : 1));
        rotkv_set_error(L->err, ROTKV_ERR_FORMAT,
                        "tensor '%s' (info at byte offset %llu) has shape [%llu, %llu, %llu, %llu], expected %s",
                        name, (unsigned long long)t->info_offset, (unsigned long long)t->ne[0],
                        (unsigned long long)t->ne[1], (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], want);
        L->err->code = ROTKV_ERR_FORMAT;
        return (const gguf_tensor *)-1;
    }
    const quant_traits *tr = quant_get_traits(t->type);
    if (!tr || !tr->supported || !tr->dequantize_row || !tr->vec_dot_f32) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s (%u)", name,
                        quant_type_name(t->type), t->type);
        return (const gguf_tensor *)-1;
    }
    return t;
}

static const gguf_tensor *find_checked(loader *L, const char *name, int64_t ne0, int64_t ne1, bool required) {
    return find_checked3(L, name, ne0, ne1, 0, required);
}

#define BAD_TENSOR ((const gguf_tensor *)-1)

static bool load_weight(loader *L, weight *w, const char *name, int64_t ne0, int64_t ne1, bool required) {
    const gguf_tensor *t = find_checked(L, name, ne0, ne1, required);
    memset(w, 0, sizeof *w);
    if (t == BAD_TENSOR) return false;
    if (!t) return !required;
    w->data = t->data;
    w->type = t->type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = quant_row_size(t->type, ne0);
    return true;
}

/* Rows [r0, r0 + rows) of a loaded matrix as a matrix of their own: fused
 * tensors (phi3's attn_qkv and ffn_up, the experts' 3-D tensors) are split
 * into the matrices the forward pass multiplies by, without copying. */
static weight weight_rows(const weight *w, int64_t r0, int64_t rows) {
    weight v = *w;
    v.data = (const uint8_t *)w->data + (size_t)r0 * w->row_bytes;
    v.ne1 = rows;
    return v;
}

/* The n_expert matrices (ne0 -> rows each) of a 3-D expert tensor
 * [ne0, rows * parts, n_expert]; part p of each expert's rows goes to out[p]
 * (ffn_gate_up_exps holds gate then up). */
static bool load_experts(loader *L, const char *name, int64_t ne0, int64_t rows, uint32_t n_expert, int parts,
                         weight **out, bool required) {
    const gguf_tensor *t = find_checked3(L, name, ne0, rows * parts, n_expert, required);
    if (t == BAD_TENSOR) return false;
    if (!t) return !required;
    weight all = {.data = t->data, .type = t->type, .ne0 = ne0, .ne1 = rows * parts * (int64_t)n_expert,
                  .row_bytes = quant_row_size(t->type, ne0)};
    for (uint32_t e = 0; e < n_expert; e++)
        for (int p = 0; p < parts; p++) out[p][e] = weight_rows(&all, ((int64_t)e * parts + p) * rows, rows);
    return true;
}

/* The first count values of tensor t as a freshly allocated f32 array in
 * *out; an error if memory runs out or a value is not finite. */
static bool load_floats(loader *L, const gguf_tensor *t, const char *name, int64_t count, float **out) {
    float *v = malloc((size_t)count * sizeof(float));
    if (!v) {
        rotkv_set_error(L->err, ROTKV_ERR_OOM, "out of memory loading '%s'", name);
        return false;
    }
    quant_get_traits(t->type)->dequantize_row(t->data, v, count);
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(v[i])) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "tensor '%s' holds a non-finite value at index %lld", name,
                            (long long)i);
            free(v);
            return false;
        }
    *out = v;
    return true;
}

/* Loads a vector (norm weight, bias) as a freshly allocated f32 array. */
static bool load_vector(loader *L, float **out, const char *name, int64_t n, bool required) {
    *out = NULL;
    const gguf_tensor *t = find_checked(L, name, n, 0, required);
    if (t == BAD_TENSOR) return false;
    if (!t) return !required;
    return load_floats(L, t, name, n, out);
}

/* A 2-D bias tensor [n, rows] (gpt-oss's expert biases: one row of n per expert) as a freshly
 * allocated f32 array of rows * n. */
static bool load_bias2(loader *L, float **out, const char *name, int64_t n, int64_t rows) {
    *out = NULL;
    const gguf_tensor *t = find_checked(L, name, n, rows, true);
    if (!t || t == BAD_TENSOR) return false;
    const quant_traits *tr = quant_get_traits(t->type);
    if (tr->blck_size != 1) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "tensor '%s' has type %s: biases must be f32, f16 or bf16", name,
                        quant_type_name(t->type));
        return false;
    }
    return load_floats(L, t, name, n * rows, out);
}

/* An MoE layer: the router ffn_gate_inp and the experts' 3-D tensors
 * ffn_gate_exps / ffn_up_exps (or both fused in ffn_gate_up_exps) and
 * ffn_down_exps, each split into one matrix per expert; or, as the first
 * Mixtral conversions wrote them, one 2-D tensor per expert and projection. */
static bool load_moe(loader *L, const model_hparams *hp, uint32_t il, layer_weights *lw) {
    char n[96];
    const int64_t E = hp->n_embd, F = hp->n_ff_exp;
    const uint32_t X = hp->n_expert;
#define NAME(s) (snprintf(n, sizeof n, "blk.%u." s, il), n)
    lw->gate_exps = calloc(3 * (size_t)X, sizeof(weight));
    if (!lw->gate_exps) {
        rotkv_set_error(L->err, ROTKV_ERR_OOM, "out of memory");
        return false;
    }
    lw->up_exps = lw->gate_exps + X;
    lw->down_exps = lw->gate_exps + 2 * (size_t)X;
    if (!load_weight(L, &lw->ffn_gate_inp, NAME("ffn_gate_inp.weight"), E, X, true)) return false;
    weight *gu[2] = {lw->gate_exps, lw->up_exps};
    const gguf_tensor *fused = gguf_find_tensor(L->f, NAME("ffn_gate_up_exps.weight"));
    if (!fused && !gguf_find_tensor(L->f, NAME("ffn_gate_exps.weight")) && gguf_find_tensor(L->f, NAME("ffn_gate.0.weight"))) {
        /* early Mixtral files: one 2-D tensor per expert, ffn_{gate,up,down}.<e> */
        for (uint32_t e = 0; e < X; e++) {
            snprintf(n, sizeof n, "blk.%u.ffn_gate.%u.weight", il, e);
            if (!load_weight(L, &lw->gate_exps[e], n, E, F, true)) return false;
            snprintf(n, sizeof n, "blk.%u.ffn_up.%u.weight", il, e);
            if (!load_weight(L, &lw->up_exps[e], n, E, F, true)) return false;
            snprintf(n, sizeof n, "blk.%u.ffn_down.%u.weight", il, e);
            if (!load_weight(L, &lw->down_exps[e], n, F, E, true)) return false;
        }
        return true;
    }
    if (fused) {
        if (!load_experts(L, n, E, F, X, 2, gu, true)) return false;
    } else if (!load_experts(L, NAME("ffn_gate_exps.weight"), E, F, X, 1, &gu[0], true) ||
               !load_experts(L, NAME("ffn_up_exps.weight"), E, F, X, 1, &gu[1], true))
        return false;
    weight *down[1] = {lw->down_exps};
    if (!load_experts(L, NAME("ffn_down_exps.weight"), F, E, X, 1, down, true)) return false;
    if (hp->arch == ARCH_GPTOSS) { /* the router's and the experts' biases */
        if (!load_vector(L, &lw->ffn_gate_inp_b, NAME("ffn_gate_inp.bias"), X, true) ||
            !load_bias2(L, &lw->gate_exps_b, NAME("ffn_gate_exps.bias"), F, X) ||
            !load_bias2(L, &lw->up_exps_b, NAME("ffn_up_exps.bias"), F, X) ||
            !load_bias2(L, &lw->down_exps_b, NAME("ffn_down_exps.bias"), E, X))
            return false;
    }
    if (hp->n_ff_shexp) {
        const int64_t FS = hp->n_ff_shexp;
        if (!load_vector(L, &lw->ffn_gate_inp_shexp, NAME("ffn_gate_inp_shexp.weight"), E, true) ||
            !load_weight(L, &lw->gate_shexp, NAME("ffn_gate_shexp.weight"), E, FS, true) ||
            !load_weight(L, &lw->up_shexp, NAME("ffn_up_shexp.weight"), E, FS, true) ||
            !load_weight(L, &lw->down_shexp, NAME("ffn_down_shexp.weight"), FS, E, true))
            return false;
    }
#undef NAME
    return true;
}

static bool load_layer(loader *L, const model_hparams *hp, uint32_t il, layer_weights *lw) {
    char n[96];
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim_k;
    const int64_t K = (int64_t)hp->n_head_kv * hp->head_dim_k, V = (int64_t)hp->n_head_kv * hp->head_dim_v;
    const int64_t O = (int64_t)hp->n_head * hp->head_dim_v;
    const bool bias = hp->arch == ARCH_QWEN2 || hp->arch == ARCH_QWEN2MOE || hp->arch == ARCH_GPTOSS;
    const bool oss = hp->arch == ARCH_GPTOSS;
#define NAME(s) (snprintf(n, sizeof n, "blk.%u." s, il), n)
    if (!load_vector(L, &lw->attn_norm, NAME("attn_norm.weight"), E, true)) return false;
    weight qkv;
    if (!load_weight(L, &qkv, NAME("attn_qkv.weight"), E, Q + K + V, false)) return false;
    if (qkv.data) { /* fused (phi3): the rows of Q, then K, then V */
        lw->wq = weight_rows(&qkv, 0, Q);
        lw->wk = weight_rows(&qkv, Q, K);
        lw->wv = weight_rows(&qkv, Q + K, V);
    } else if (!load_weight(L, &lw->wq, NAME("attn_q.weight"), E, Q, true) ||
               !load_weight(L, &lw->wk, NAME("attn_k.weight"), E, K, true) ||
               !load_weight(L, &lw->wv, NAME("attn_v.weight"), E, V, true))
        return false;
    if (!load_weight(L, &lw->wo, NAME("attn_output.weight"), O, E, true)) return false;
    /* biases: required for qwen2, accepted if present elsewhere */
    if (!load_vector(L, &lw->bq, NAME("attn_q.bias"), Q, bias)) return false;
    if (!load_vector(L, &lw->bk, NAME("attn_k.bias"), K, bias)) return false;
    if (!load_vector(L, &lw->bv, NAME("attn_v.bias"), V, bias)) return false;
    if (oss && (!load_vector(L, &lw->bo, NAME("attn_output.bias"), E, true) ||
                !load_vector(L, &lw->attn_sinks, NAME("attn_sinks.weight"), hp->n_head, true)))
        return false;
    if (hp->arch == ARCH_GEMMA2 || hp->arch == ARCH_GEMMA3) { /* norms of the sublayers' outputs */
        if (!load_vector(L, &lw->attn_post_norm, NAME("post_attention_norm.weight"), E, true) ||
            !load_vector(L, &lw->ffn_post_norm, NAME("post_ffw_norm.weight"), E, true))
            return false;
    }
    if (hp->arch == ARCH_QWEN3 || hp->arch == ARCH_QWEN3MOE || hp->arch == ARCH_GEMMA3) { /* per-head RMSNorm of q and k */
        if (!load_vector(L, &lw->q_norm, NAME("attn_q_norm.weight"), hp->head_dim_k, true)) return false;
        if (!load_vector(L, &lw->k_norm, NAME("attn_k_norm.weight"), hp->head_dim_k, true)) return false;
    }
    /* gpt-oss: the norm before the experts is called post_attention_norm */
    if (!load_vector(L, &lw->ffn_norm, oss ? NAME("post_attention_norm.weight") : NAME("ffn_norm.weight"), E, true))
        return false;
    if (hp->n_expert) {
        if (!load_moe(L, hp, il, lw)) return false;
    } else if (hp->arch == ARCH_PHI3) { /* fused ffn_up: the gate's rows, then the up projection's */
        weight gu;
        if (!load_weight(L, &gu, NAME("ffn_up.weight"), E, 2 * (int64_t)hp->n_ff, true)) return false;
        lw->w_gate = weight_rows(&gu, 0, hp->n_ff);
        lw->w_up = weight_rows(&gu, hp->n_ff, hp->n_ff);
    } else if (!load_weight(L, &lw->w_gate, NAME("ffn_gate.weight"), E, hp->n_ff, true) ||
               !load_weight(L, &lw->w_up, NAME("ffn_up.weight"), E, hp->n_ff, true))
        return false;
    if (!hp->n_expert && !load_weight(L, &lw->w_down, NAME("ffn_down.weight"), hp->n_ff, E, true)) return false;
#undef NAME
    return true;
}

/* The matmul weights of a model (every expert's matrices one by one), for
 * repacking and counting: a malloc'd array of *n entries, NULL when out of
 * memory. */
static weight **model_matmul_weights(struct rotkv_model *m, size_t *n) {
    const size_t per_layer = 11 + 3 * (size_t)m->hp.n_expert; /* the ws list below, then the experts */
    weight **out = malloc(sizeof(weight *) * (per_layer * m->hp.n_layer + 1));
    *n = 0;
    if (!out) return NULL;
    for (uint32_t i = 0; m->layers && i < m->hp.n_layer; i++) {
        layer_weights *lw = &m->layers[i];
        weight *ws[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down, &lw->ffn_gate_inp,
                        &lw->gate_shexp, &lw->up_shexp, &lw->down_shexp};
        for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
            if (ws[k]->data) out[(*n)++] = ws[k];
        for (uint32_t e = 0; lw->gate_exps && e < m->hp.n_expert; e++) {
            out[(*n)++] = &lw->gate_exps[e];
            out[(*n)++] = &lw->up_exps[e];
            out[(*n)++] = &lw->down_exps[e];
        }
    }
    out[(*n)++] = &m->output;
    return out;
}

/* Bytes of the matrices one token's forward pass reads: all of them, but of
 * the experts only the routed share (n_expert_used of n_expert). */
static uint64_t model_matmul_bytes(const struct rotkv_model *m) {
    const model_hparams *hp = &m->hp;
    uint64_t total = (uint64_t)m->output.ne1 * m->output.row_bytes, experts = 0;
    for (uint32_t i = 0; i < hp->n_layer; i++) {
        const layer_weights *lw = &m->layers[i];
        const weight *ws[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down, &lw->ffn_gate_inp,
                              &lw->gate_shexp, &lw->up_shexp, &lw->down_shexp};
        for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++)
            if (ws[k]->data) total += (uint64_t)ws[k]->ne1 * ws[k]->row_bytes;
        for (uint32_t e = 0; lw->gate_exps && e < hp->n_expert; e++)
            experts += (uint64_t)lw->gate_exps[e].ne1 * lw->gate_exps[e].row_bytes +
                       (uint64_t)lw->up_exps[e].ne1 * lw->up_exps[e].row_bytes +
                       (uint64_t)lw->down_exps[e].ne1 * lw->down_exps[e].row_bytes;
    }
    return total + (hp->n_expert ? experts / hp->n_expert * hp->n_expert_used : 0);
}

/* Gives the mapping's pages of a tensor back (they are re-read from the file
 * if anything touches them again). */
static void release_pages(const void *data, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)data + page - 1) / page * page, b = ((uintptr_t)data + n) / page * page;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

/* A buffer the matmuls stream through once per token: big ones are aligned to
 * and asked for as 2 MiB pages (transparent huge pages when the kernel grants
 * them), so a decode pass takes a TLB miss per 2 MiB instead of per 4 KiB. */
static void *alloc_streamed(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    void *buf = NULL;
    if (bytes >= huge) {
        const size_t rounded = (bytes + huge - 1) / huge * huge;
        if (posix_memalign(&buf, huge, rounded) != 0) return NULL;
#ifdef MADV_HUGEPAGE
        madvise(buf, rounded, MADV_HUGEPAGE); /* advice only: 4 KiB pages if refused */
#endif
        return buf;
    }
    return posix_memalign(&buf, 64, bytes ? bytes : 64) == 0 ? buf : NULL;
}

/* Bytes w's repacked groups take, or 0 when w has no repacked layout at the
 * active level or is not a well-formed matrix of its type. */
static size_t weight_repack_size(const weight *w) {
    const quant_kernels *k = quant_kernels_of(w->type);
    const quant_traits *tr = quant_get_traits(w->type);
    if (!k || !tr || k->repack_rows <= 0 || !k->repack || !k->gemm_repacked || w->repacked) return 0;
    if (w->ne0 <= 0 || w->ne1 <= 0 || w->ne0 % tr->blck_size || w->row_bytes != quant_row_size(w->type, w->ne0))
        return 0; /* not a well-formed matrix of its type (load_weight refuses these) */
    const int64_t groups = (w->ne1 + k->repack_rows - 1) / k->repack_rows;
    return (size_t)groups * k->repack_group_bytes(w->ne0);
}

/* Repacks w into buf (weight_repack_size(w) bytes). release: give the file's
 * pages back as the groups are made (w->data is in the model's mapping), so
 * loading never holds both copies. */
static bool weight_repack_into(weight *w, void *buf, bool release) {
    const quant_kernels *k = quant_kernels_of(w->type);
    const int R = k->repack_rows;
    const int64_t groups = (w->ne1 + R - 1) / R;
    const size_t gb = k->repack_group_bytes(w->ne0);
    uint8_t *tail = NULL;
    for (int64_t g = 0; g < groups; g++) {
        const int64_t r = g * R;
        const uint8_t *src = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
        if (r + R > w->ne1) { /* last group: the missing rows are zeros (scale 0) */
            tail = calloc((size_t)R, w->row_bytes);
            if (!tail) return false;
            memcpy(tail, src, (size_t)(w->ne1 - r) * w->row_bytes);
            src = tail;
        }
        k->repack(w->ne0, src, w->row_bytes, (uint8_t *)buf + (size_t)g * gb);
        if (release && (g % 256 == 255 || g + 1 == groups)) { /* every 256 groups (~4.5 MiB of q4_0 at 2048 columns) */
            const int64_t g0 = g / 256 * 256;
            const int64_t r1 = (g + 1) * R < w->ne1 ? (g + 1) * R : w->ne1;
            release_pages((const uint8_t *)w->data + (size_t)(g0 * R) * w->row_bytes, (size_t)(r1 - g0 * R) * w->row_bytes);
        }
    }
    free(tail);
    w->repacked = buf;
    w->repacked_kernels = k;
    return true;
}

bool weight_repack(weight *w, uint64_t *bytes) {
    const size_t total = weight_repack_size(w);
    void *buf = NULL;
    if (!total || posix_memalign(&buf, 64, total) != 0) return false;
    if (!weight_repack_into(w, buf, false)) {
        free(buf);
        return false;
    }
    *bytes += total;
    return true;
}

/* Weights repacked at load (quant.h), unless ROTKV_REPACK=0. A tied output
 * matrix is the token embedding too: its rows are then looked up in the
 * repacked groups (model_embedding_row), so its file pages go as well. */
static void model_repack(struct rotkv_model *m, const rotkv_model_params *params) {
    const char *env = getenv("ROTKV_REPACK");
    if (env && !strcmp(env, "0")) return;
    size_t n = 0;
    weight **ws = model_matmul_weights(m, &n);
    size_t *ofs = malloc(sizeof(size_t) * (n ? n : 1)), *size = malloc(sizeof(size_t) * (n ? n : 1));
    size_t total = 0;
    for (size_t i = 0; ws && ofs && size && i < n; i++) { /* one arena: 64-byte aligned slices, no rounding per tensor */
        size[i] = weight_repack_size(ws[i]);
        ofs[i] = total;
        total += (size[i] + 63) / 64 * 64;
    }
    if (!total || !(m->repack_arena = alloc_streamed(total))) { /* out of memory: the file's rows serve */
        free(ws);
        free(ofs);
        free(size);
        return;
    }
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        weight *w = ws[i];
        if (!size[i]) continue; /* no repacked layout: the file's rows serve */
        if (params->progress) params->progress((double)done / (double)total, params->progress_user);
        done += size[i];
        const bool tied = w == &m->output && w->data == m->tok_embd.data;
        if (!weight_repack_into(w, (uint8_t *)m->repack_arena + ofs[i], true)) continue;
        m->repacked_bytes += size[i];
        if (tied) {
            m->tok_embd.repacked = w->repacked; /* shared with output */
            m->tok_embd.repacked_kernels = w->repacked_kernels;
        }
    }
    free(ws);
    free(ofs);
    free(size);
}

void model_embedding_row(const struct rotkv_model *m, int32_t token, float *out) {
    const weight *w = &m->tok_embd;
    const quant_traits *tr = quant_get_traits(w->type);
    if (w->repacked) {
        const int R = w->repacked_kernels->repack_rows;
        uint8_t row[w->row_bytes];
        const size_t gb = w->repacked_kernels->repack_group_bytes(w->ne0);
        quant_unpack_row(w->type, R, w->ne0, (const uint8_t *)w->repacked + (size_t)(token / R) * gb, token % R, row);
        tr->dequantize_row(row, out, w->ne0);
        return;
    }
    tr->dequantize_row((const uint8_t *)w->data + (size_t)token * w->row_bytes, out, w->ne0);
}

/* Phi-3's LongRoPE (128k variants, Phi-3.5-mini): rope_factors_long and
 * rope_factors_short, both or neither, positive frequency divisors. */
static bool load_longrope(loader *L, struct rotkv_model *m) {
    const model_hparams *hp = &m->hp;
    const bool has_long = gguf_find_tensor(L->f, "rope_factors_long.weight") != NULL;
    const bool has_short = gguf_find_tensor(L->f, "rope_factors_short.weight") != NULL;
    if (!has_long && !has_short) return true;
    if (hp->arch != ARCH_PHI3) {
        rotkv_set_error(L->err, ROTKV_ERR_UNSUPPORTED, "%s: LongRoPE factors (rope_factors_long/short) are supported "
                        "for phi3 only", hp->arch_name);
        return false;
    }
    if (!load_vector(L, &m->rope_factors_long, "rope_factors_long.weight", hp->n_rot / 2, true) ||
        !load_vector(L, &m->rope_factors_short, "rope_factors_short.weight", hp->n_rot / 2, true))
        return false;
    for (uint32_t i = 0; i < hp->n_rot / 2; i++)
        if (!(m->rope_factors_long[i] > 0) || !(m->rope_factors_short[i] > 0)) {
            rotkv_set_error(L->err, ROTKV_ERR_FORMAT, "LongRoPE factor %u is not positive", i);
            return false;
        }
    return true;
}

void model_free(struct rotkv_model *m) {
    if (!m) return;
    free(m->repack_arena);
    if (m->layers)
        for (uint32_t i = 0; i < m->hp.n_layer; i++) {
            layer_weights *lw = &m->layers[i];
            free(lw->attn_norm); free(lw->bq); free(lw->bk); free(lw->bv);
            free(lw->q_norm); free(lw->k_norm); free(lw->ffn_norm);
            free(lw->attn_post_norm); free(lw->ffn_post_norm);
            free(lw->gate_exps); /* up_exps and down_exps live in the same block */
            free(lw->ffn_gate_inp_shexp);
            free(lw->bo); free(lw->attn_sinks);
            free(lw->ffn_gate_inp_b); free(lw->gate_exps_b); free(lw->up_exps_b); free(lw->down_exps_b);
        }
    free(m->layers);
    free(m->output_norm);
    free(m->rope_factors);
    free(m->rope_factors_long);
    free(m->rope_factors_short);
    tokenizer_free(m->tok);
    gguf_close(m->gguf);
    free(m);
}

rotkv_status model_load(const char *path, const rotkv_model_params *params, struct rotkv_model **out,
                        rotkv_error *err) {
    const bool vocab_only = params->vocab_only;
    *out = NULL;
    rotkv_error local;
    if (!err) err = &local;
    err->code = ROTKV_OK;
    err->msg[0] = 0;
    struct rotkv_model *m = calloc(1, sizeof *m);
    if (!m) return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
    char msg[480];
    m->gguf = gguf_open(path, msg, sizeof msg);
    if (!m->gguf) {
        free(m);
        bool io = strstr(msg, "cannot open") || strstr(msg, "not a regular file") || strstr(msg, "mmap failed");
        return rotkv_set_error(err, io ? ROTKV_ERR_IO : ROTKV_ERR_FORMAT, "%s", msg);
    }
    m->vocab_only = vocab_only;
    gguf_str s;
    if (gguf_get_str(m->gguf, "general.name", &s)) gguf_str_cpy(s, m->name, sizeof m->name);
    m->tok = tokenizer_load(m->gguf, msg, sizeof msg);
    if (!m->tok) {
        rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: tokenizer: %s", path, msg);
        model_free(m);
        return err->code;
    }
    if (vocab_only) {
        m->hp.n_vocab = (uint32_t)tokenizer_n_vocab(m->tok);
        *out = m;
        return ROTKV_OK;
    }
    char arch[32];
    if (!gguf_get_str(m->gguf, "general.architecture", &s)) {
        rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: required key 'general.architecture' is missing or not a string", path);
        model_free(m);
        return err->code;
    }
    gguf_str_cpy(s, arch, sizeof arch);
    loader L = {m->gguf, arch, err};
    model_hparams *hp = &m->hp;
    bool ok = read_hparams(&L, hp);
    if (ok) {
        hp->n_vocab = (uint32_t)tokenizer_n_vocab(m->tok);
        ok = load_weight(&L, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true) &&
             load_vector(&L, &m->output_norm, "output_norm.weight", hp->n_embd, true) &&
             load_weight(&L, &m->output, "output.weight", hp->n_embd, hp->n_vocab, false);
    }
    if (ok && !m->output.data) m->output = m->tok_embd; /* tied embeddings */
    if (ok) ok = load_longrope(&L, m);
    if (ok) ok = load_vector(&L, &m->rope_factors, "rope_freqs.weight", hp->n_rot / 2, false);
    if (ok && m->rope_factors && hp->rope_yarn)
        ok = rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED, "rope_freqs.weight together with YaRN scaling is not supported") ==
             ROTKV_OK;
    if (ok && m->rope_factors)
        for (uint32_t i = 0; i < hp->n_rot / 2; i++)
            if (!(m->rope_factors[i] > 0)) {
                rotkv_set_error(err, ROTKV_ERR_FORMAT, "tensor 'rope_freqs.weight': factor %u is not positive", i);
                ok = false;
                break;
            }
    if (ok) {
        m->layers = calloc(hp->n_layer, sizeof *m->layers);
        if (!m->layers) ok = rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory") == ROTKV_OK;
    }
    for (uint32_t il = 0; ok && il < hp->n_layer; il++) ok = load_layer(&L, hp, il, &m->layers[il]);
    if (!ok) {
        char tmp[sizeof err->msg + 1024];
        snprintf(tmp, sizeof tmp, "%s: %s", path, err->msg);
        size_t n = strlen(tmp) < sizeof err->msg - 1 ? strlen(tmp) : sizeof err->msg - 1;
        memcpy(err->msg, tmp, n);
        err->msg[n] = 0;
        rotkv_status code = err->code;
        model_free(m);
        return code;
    }
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const gguf_tensor *t = &m->gguf->tensors[i];
        m->n_params += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        m->weight_bytes += t->nbytes;
    }
    m->matmul_bytes = model_matmul_bytes(m);
    model_repack(m, params);
    if (params->progress) params->progress(1.0, params->progress_user);
    *out = m;
    return ROTKV_OK;
}
