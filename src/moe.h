/* moe.h — the mixture-of-experts feed-forward block (qwen3moe, qwen2moe, Mixtral, gpt-oss):
 * a router picks n_expert_used of n_expert SwiGLU experts per token and the
 * block's output is their weighted sum.
 *
 * Only the routed experts are read: a token in decode multiplies by its
 * n_expert_used experts' matrices and no others; a prompt batch is grouped by
 * expert, so each expert's matrices are multiplied once by all the tokens
 * routed to it (the ordinary batched matmul of ops.h, packed kernels
 * included), and experts no token chose are skipped. Experts with a single
 * token (all of them in decode) are run together: their gate and up products
 * in one dispatch of the thread pool, their down products in another
 * (matmul_many), instead of three dispatches per expert.
 *
 * Each token's output sums its experts' outputs in expert order whichever
 * path computed them, so a token gives bit-identical output alone or in any
 * batch, with any number of threads.
 *
 * qwen2moe adds a shared expert every token runs, its output scaled by
 * sigmoid(ffn_gate_inp_shexp · x) and added after the routed ones (as
 * llama.cpp adds it); in decode its products join the same two dispatches.
 *
 * gpt-oss routes by the softmax over the top k logits (moe_route_softmax_topk), adds a bias to
 * the router's logits and to each expert's gate, up and down products, and its experts use the
 * clamped SwiGLU (swiglu_oai). */
#ifndef ROTKV_MOE_H
#define ROTKV_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "ops.h"
#include "threadpool.h"

/* Working memory for batches of up to n_batch tokens; shapes per batch. */
typedef struct {
    float *probs;            /* (n_batch, n_expert) router logits, then softmax probabilities */
    int32_t *sel;            /* (n_batch, n_expert_used) the experts each token is routed to */
    float *sel_w;            /* (n_batch, n_expert_used) their weights */
    int32_t *start;          /* (n_expert + 1) first row of each expert's group in rows/row_w */
    int32_t *rows;           /* (n_batch * n_expert_used) token of each routed row, grouped by expert */
    float *row_w;            /* (n_batch * n_expert_used) the row's weight */
    float *x;                /* (n_batch, n_embd) an expert's gathered inputs */
    float *gate, *up;        /* (n_batch * n_expert_used, n_ff_exp) per routed row */
    float *y;                /* (n_batch * n_expert_used, n_embd) per routed row: the expert's output */
    matvec_req *req;         /* (2 * n_expert + 2) requests of the single-token experts (+ the shared one) */
    float *sh_gate, *sh_up;  /* (n_batch, n_ff_shexp) qwen2moe's shared expert, or NULL */
    float *sh_y;             /* (n_batch, n_embd) its output */
    uint64_t expert_rows;    /* routed (token, expert) pairs computed so far */
    uint64_t expert_matmuls; /* experts multiplied by (once per expert and batch) */
} moe_scratch;

/* Allocates s for hp's experts (all pointers NULL and true for a dense model). */
bool moe_scratch_init(moe_scratch *s, const model_hparams *hp, int n_batch);
void moe_scratch_free(moe_scratch *s);

/* Routing of one token as llama.cpp does it for these architectures: softmax
 * over the n_expert router logits (in place: probs becomes the
 * probabilities), the k largest probabilities (ties: the lower expert id
 * first) into sel in descending order, their probabilities into w, then, when
 * norm, w divided by its sum (clamped below at 2^-14, as llama.cpp does). */
void moe_route(float *probs, int n_expert, int k, bool norm, int32_t *sel, float *w);

/* gpt-oss's routing (llama.cpp's SOFTMAX_WEIGHT gating): the k largest of the n_expert router
 * logits (ties: the lower expert id first) into sel in descending order, and as their weights
 * w the softmax over those k logits alone. */
void moe_route_softmax_topk(const float *logits, int n_expert, int k, int32_t *sel, float *w);

/* Tokens of matmul scratch moe_ffn needs beyond the batch's: matmul_many's
 * one activation row per request. */
int moe_scratch_tokens(const model_hparams *hp);

/* out (n, n_embd) = the MoE block of layer L on xb (n, n_embd), the
 * ffn-normed inputs. mm_scratch: matmul scratch for rows of up to
 * max(n_embd, n_ff_exp) values and max(n, moe_scratch_tokens) tokens. The
 * time spent in matmuls is added to *t_matmul_ms. False only when out of
 * memory. */
bool moe_ffn(threadpool *tp, const model_hparams *hp, const layer_weights *L, const float *xb, int n, float *out,
             moe_scratch *s, void *mm_scratch, double *t_matmul_ms);

#endif
