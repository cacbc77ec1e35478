/* ops.h — the math of a transformer layer on f32 activations: RMSNorm, matrix
 * multiplication against weights of any file type, RoPE, SwiGLU, softmax.
 * Each function names the operation it performs; shapes are in comments.
 * Functions with a _ref twin run an AVX2 kernel on CPUs that have it (chosen
 * once, see cpu.h); the _ref twin is the scalar reference it is tested against. */
#ifndef ROTKV_OPS_H
#define ROTKV_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "threadpool.h"

#include <stddef.h>

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], for n values. out may alias x. */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps);

/* Y (n_tok, W.ne1) = X (n_tok, W.ne0) · Wᵀ.
 * Each token's row of X is first converted, once and in parallel, to the
 * weight type's activation format (quant.h: q8_0 / q8_1 / q8_K; f32 weights
 * read X directly); then the rows of W are split across threads and each
 * thread runs register tiles of weight rows x tokens over its rows, in chunks
 * of rows small enough to stay in L2 while every token passes over them
 * (from 4 to 16 tokens on, depending on the type, each group of 8 rows is
 * first repacked into an interleaved layout: quant.h's packed path). Products
 * under 256K multiply-adds run on the calling thread.
 * Every output is computed by the same operations in the same order whatever
 * the number of threads, tokens or tile position: results are bit-identical
 * for any thread count, and a token gives the same output alone or in a batch.
 * scratch: matmul_scratch_bytes(nth, >= W.ne0, >= n_tok) bytes. */
void matmul(threadpool *tp, const weight *W, const float *X, int n_tok, float *Y, void *scratch);
/* Scratch bytes matmul needs for inputs of up to max_cols values and up to
 * max_tokens tokens, with nth threads. */
size_t matmul_scratch_bytes(int nth, int64_t max_cols, int max_tokens);

/* One-token products y = W · x of n different matrices in a single dispatch of
 * the thread pool (waking it costs about as much as a small product): the
 * routed experts of a token in decode. Each y is bit-identical to
 * matmul(W, x, 1, y). scratch: matmul_scratch_bytes(nth, >= every W.ne0, >= n)
 * bytes. False (nothing computed) when out of memory. */
typedef struct {
    const weight *W;
    const float *x; /* (W.ne0) */
    float *y;       /* (W.ne1) */
} matvec_req;
bool matmul_many(threadpool *tp, const matvec_req *req, int n, void *scratch);

/* Rotary position embedding of one head vector x (head_dim values, the first
 * n_rot rotated) at position pos. freq_factors (n_rot/2, llama3) may be NULL. */
void rope_apply(float *x, int n_rot, int32_t pos, float freq_base, float freq_scale,
                const float *freq_factors, rope_style style);

/* x[i] = silu(gate[i]) * up[i] ; written into gate. The AVX2 twin's exp is
 * within a few ulp of expf. */
void swiglu(float *gate, const float *up, int n);
void swiglu_ref(float *gate, const float *up, int n);

/* x[i] = gelu(gate[i]) * up[i] (GeGLU: gelu's tanh form, gelu_pytorch_tanh,
 * through f16 as ggml's CPU backend computes it); written into gate. */
void geglu(float *gate, const float *up, int n);

/* gpt-oss's clamped SwiGLU, as ggml_swiglu_oai (alpha 1.702, limit 7): with g = min(gate, 7)
 * and u = clamp(up, -7, 7), gate[i] = g / (1 + exp(-1.702 g)) * (u + 1). */
void swiglu_oai(float *gate, const float *up, int n);

/* In-place softmax over n values; returns log(sum(exp(x))) before normalizing. */
double softmax_inplace(float *x, int n);
/* log(sum(exp(x))) over n values, computed in double. */
double logsumexp(const float *x, int n);

#endif
