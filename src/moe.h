/* moe.h — the mixture-of-experts feed-forward block (qwen3moe, Mixtral):
 * a router picks n_expert_used of n_expert SwiGLU experts per token and the
 * block's output is their weighted sum.
 *
 * Only the routed experts are read: a token in decode multiplies by its
 * n_expert_used experts' matrices and no others; a prompt batch is grouped by
 * expert, so each expert's matrices are multiplied once by all the tokens
 * routed to it (the ordinary batched matmul of ops.h, packed kernels
 * included), and experts no token chose are skipped. */
#ifndef ROTKV_MOE_H
#define ROTKV_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "threadpool.h"

/* Working memory for batches of up to n_batch tokens; shapes per batch. */
typedef struct {
    float *probs;            /* (n_batch, n_expert) router logits, then softmax probabilities */
    int32_t *sel;            /* (n_batch, n_expert_used) the experts each token is routed to */
    float *sel_w;            /* (n_batch, n_expert_used) their weights */
    int32_t *start;          /* (n_expert + 1) first row of each expert's group in rows/row_w */
    int32_t *rows;           /* (n_batch * n_expert_used) token of each routed row, grouped by expert */
    float *row_w;            /* (n_batch * n_expert_used) the row's weight */
    float *x, *y;            /* (n_batch, n_embd) an expert's gathered inputs, its outputs */
    float *gate, *up;        /* (n_batch, n_ff_exp) */
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

/* out (n, n_embd) = the MoE block of layer L on xb (n, n_embd), the
 * ffn-normed inputs. mm_scratch: matmul scratch for rows of up to
 * max(n_embd, n_ff_exp) values and n tokens. The time spent in matmuls is
 * added to *t_matmul_ms. */
void moe_ffn(threadpool *tp, const model_hparams *hp, const layer_weights *L, const float *xb, int n, float *out,
             moe_scratch *s, void *mm_scratch, double *t_matmul_ms);

#endif
