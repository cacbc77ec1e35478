/* ops.h — the math of a transformer layer on f32 activations: RMSNorm, matrix
 * multiplication against weights of any file type, RoPE, SwiGLU, softmax.
 * Each function names the operation it performs; shapes are in comments. */
#ifndef ROTKV_OPS_H
#define ROTKV_OPS_H

#include <stdint.h>

#include "model.h"
#include "threadpool.h"

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], for n values. out may alias x. */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);

/* Y (n_tok, W.ne1) = X (n_tok, W.ne0) · Wᵀ, rows of W split across threads.
 * scratch: per-thread buffers of W.ne0 floats, nth * W.ne0 in total. */
void matmul(threadpool *tp, const weight *W, const float *X, int n_tok, float *Y, float *scratch);

/* Rotary position embedding of one head vector x (head_dim values, the first
 * n_rot rotated) at position pos. freq_factors (n_rot/2, llama3) may be NULL. */
void rope_apply(float *x, int n_rot, int32_t pos, float freq_base, float freq_scale,
                const float *freq_factors, rope_style style);

/* x[i] = silu(gate[i]) * up[i] ; written into gate. */
void swiglu(float *gate, const float *up, int n);

/* In-place softmax over n values; returns log(sum(exp(x))) before normalizing. */
double softmax_inplace(float *x, int n);
/* log(sum(exp(x))) over n values, computed in double. */
double logsumexp(const float *x, int n);

#endif
