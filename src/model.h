/* model.h — hyperparameters and weights of a llama-shaped transformer
 * (llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3, and the mixture-of-experts qwen3moe,
 * qwen2moe, llama/Mixtral and gpt-oss), read from a GGUF file and checked against each other before use. */
#ifndef ROTKV_MODEL_H
#define ROTKV_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"
#include "quant.h"
#include "rotkv.h"
#include "tokenizer.h"

typedef enum { ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3, ARCH_PHI3, ARCH_QWEN3MOE, ARCH_QWEN2MOE, ARCH_GEMMA2, ARCH_GEMMA3,
               ARCH_GPTOSS } model_arch;

#define MODEL_MAX_LAYERS 1024

/* RoPE pairing: NORM rotates (x[2i], x[2i+1]) (llama, after the converter's
 * permutation); NEOX rotates (x[i], x[i + n_rot/2]) (qwen2/qwen3). */
typedef enum { ROPE_NORM, ROPE_NEOX } rope_style;

typedef struct {
    model_arch arch;
    char arch_name[32];
    uint32_t n_vocab, n_ctx_train, n_embd, n_layer, n_ff;
    uint32_t n_head, n_head_kv;
    uint32_t head_dim_k, head_dim_v; /* per head; may differ from n_embd / n_head */
    uint32_t n_rot;                  /* rotated dims per head (<= head_dim_k) */
    float rope_freq_base;
    float rope_freq_scale;           /* 1 / linear scaling factor */
    uint32_t n_ctx_orig;             /* rope.scaling.original_context_length (LongRoPE picks its factors by it) */
    float rope_attn_factor;          /* rope.scaling.attn_factor: rotated dims of q and k scaled by it (LongRoPE) */
    rope_style rope;
    float norm_eps;
    /* mixture of experts (qwen3moe; llama as Mixtral writes it): 0 experts = dense FFN */
    uint32_t n_expert, n_expert_used; /* <arch>.expert_count, <arch>.expert_used_count */
    uint32_t n_ff_exp;                /* one expert's FFN width */
    bool expert_weights_norm;         /* the top-k router weights are renormalized to sum 1 */
    bool expert_softmax_topk;         /* gpt-oss: the top k of the raw router logits, their weights the
                                         softmax over those k (instead of the softmax over all, then top k) */
    bool ffn_swiglu_oai;              /* gpt-oss: the experts' clamped SwiGLU (alpha 1.702, limit 7) */
    uint32_t n_ff_shexp;              /* qwen2moe: the shared expert's FFN width (0: none) */
    /* gemma2 / gemma3 */
    uint32_t n_swa;                   /* attention.sliding_window: a sliding-window layer's query at p
                                         sees keys p - n_swa + 1 .. p (0: no such layers) */
    bool swa_layer[MODEL_MAX_LAYERS]; /* the layers that attend over the window only */
    float rope_freq_base_swa;         /* RoPE base of the sliding-window layers (gemma3: rope.freq_base_swa) */
    float rope_freq_scale_swa;        /* ... and their scale (1: linear scaling is the global layers') */
    float attn_softcap, final_softcap;/* logit soft-capping c·tanh(s/c) of the scores and the output (0: off) */
    float attn_scale;                 /* multiplies q·k (1/sqrt(head_dim) unless the architecture says otherwise) */
    float embd_scale;                 /* the token embedding is multiplied by it (gemma: sqrt(n_embd)), else 1 */
    bool ffn_gelu;                    /* GeGLU (gelu-tanh of the gate) instead of SwiGLU */
    /* YaRN RoPE scaling (gpt-oss): rope.scaling.type "yarn" */
    bool rope_yarn;
    float yarn_freq_scale;            /* 1 / rope.scaling.factor (rope_freq_scale stays 1: the scaling is
                                         per dimension, see the context's rope factors) */
    float yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
} model_hparams;

/* A 2-D weight matrix in its file type: rows of ne0 values, ne1 rows. */
typedef struct {
    const void *data; /* into the GGUF mapping */
    uint32_t type;    /* ggml type id */
    int64_t ne0, ne1;
    size_t row_bytes;
    /* The rows repacked at load for the kernels (quant.h: groups of
     * repacked_kernels->repack_rows rows, the last one padded with zero rows),
     * owned by the model; NULL: the matmul reads data as it is. */
    void *repacked;
    const quant_kernels *repacked_kernels;
} weight;

typedef struct {
    float *attn_norm;            /* (n_embd,) */
    weight wq, wk, wv, wo;       /* (n_embd -> n_head*hd_k), (-> n_head_kv*hd_k), (-> n_head_kv*hd_v), (n_head*hd_v -> n_embd) */
    float *bq, *bk, *bv;         /* qwen2 biases, or NULL */
    float *bo;                   /* gpt-oss: attn_output.bias (n_embd,), or NULL */
    float *attn_sinks;           /* gpt-oss: learned attention-sink logit per query head (n_head,), or NULL */
    float *q_norm, *k_norm;      /* qwen3/gemma3 per-head RMSNorm weights (head_dim_k,), or NULL */
    float *attn_post_norm;       /* gemma: RMSNorm of the attention output before the residual (n_embd,), or NULL */
    float *ffn_post_norm;        /* gemma: RMSNorm of the FFN output before the residual (n_embd,), or NULL */
    float *ffn_norm;             /* (n_embd,) */
    weight w_gate, w_up, w_down; /* (n_embd -> n_ff) x2, (n_ff -> n_embd); unused in an MoE layer */
    /* MoE layer: the router and each expert's matrices (n_expert each), as views
     * into the 3-D tensors ffn_{gate,up,down}_exps. */
    weight ffn_gate_inp;         /* (n_embd -> n_expert), data NULL for a dense FFN */
    weight *gate_exps, *up_exps; /* (n_expert,) of (n_embd -> n_ff_exp) */
    weight *down_exps;           /* (n_expert,) of (n_ff_exp -> n_embd) */
    /* gpt-oss: biases of the router (n_expert,) and of each expert's projections,
     * (n_expert, n_ff_exp) for gate and up, (n_expert, n_embd) for down; NULL elsewhere */
    float *ffn_gate_inp_b, *gate_exps_b, *up_exps_b, *down_exps_b;
    /* qwen2moe's shared expert, run for every token, its output scaled by
     * sigmoid(ffn_gate_inp_shexp · x); NULL / data NULL when there is none */
    float *ffn_gate_inp_shexp;   /* (n_embd,) */
    weight gate_shexp, up_shexp; /* (n_embd -> n_ff_shexp) */
    weight down_shexp;           /* (n_ff_shexp -> n_embd) */
} layer_weights;

struct rotkv_model {
    gguf_file *gguf;
    tokenizer *tok;
    model_hparams hp;
    bool vocab_only;
    weight tok_embd;   /* (n_vocab rows of n_embd) */
    weight output;     /* (n_embd -> n_vocab); tok_embd when tied */
    float *output_norm;/* (n_embd,) */
    float *rope_factors; /* (n_rot/2,) llama3 frequency divisors, or NULL */
    /* (n_rot/2,) phi3 LongRoPE frequency divisors, or NULL: the long ones for a
     * context longer than n_ctx_orig, else the short ones (as llama.cpp) */
    float *rope_factors_long, *rope_factors_short;
    layer_weights *layers;
    uint64_t n_params, weight_bytes;
    uint64_t matmul_bytes;   /* bytes of the matrices a token's forward pass reads (MoE: the
                                routed share of the experts, n_expert_used / n_expert) */
    uint64_t repacked_bytes; /* heap bytes of the repacked weights (their file pages are released) */
    void *repack_arena;      /* one buffer holding every repacked matrix (2 MiB pages where granted) */
    char name[128];
};

/* Repacks w's rows for the active kernels (quant.h) into w->repacked (the
 * caller frees it) and adds its bytes to *bytes; false, leaving w as it was,
 * if the type has no repacked layout at this ISA level, the matrix is not
 * well formed (row size, block multiple) or memory runs out. */
bool weight_repack(weight *w, uint64_t *bytes);

/* The embedding of a token (< n_vocab) as n_embd floats, from the file's row
 * or, for a tied matrix that was repacked, from its group. */
void model_embedding_row(const struct rotkv_model *m, int32_t token, float *out);

/* Loads and validates; on error returns a status and fills err. */
rotkv_status model_load(const char *path, const rotkv_model_params *params, struct rotkv_model **out,
                        rotkv_error *err);
void model_free(struct rotkv_model *m);

/* Sets err (if non-NULL) and returns code. printf-style. */
rotkv_status rotkv_set_error(rotkv_error *err, rotkv_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
