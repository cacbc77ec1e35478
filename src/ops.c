/* ops.c — scalar reference implementations of the layer math. */
#include "ops.h"

#include <math.h>
#include <string.h>

#include "quant.h"

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

typedef struct {
    const weight *W;
    const float *X;
    int n_tok;
    float *Y;
    float *scratch;
} matmul_job;

static void matmul_worker(void *arg, int ith, int nth) {
    const matmul_job *j = arg;
    const weight *W = j->W;
    const int64_t rows = W->ne1, cols = W->ne0;
    const int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
    const quant_traits *tr = quant_get_traits(W->type);
    const uint8_t *base = W->data;
    if (j->n_tok == 1) {
        for (int64_t r = r0; r < r1; r++) j->Y[r] = tr->vec_dot_f32(base + r * W->row_bytes, j->X, cols);
        return;
    }
    /* several tokens: dequantize each weight row once, dot it with every token */
    float *row = j->scratch + (size_t)ith * cols;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr;
        if (W->type == GGML_TYPE_F32) {
            wr = (const float *)(base + r * W->row_bytes);
        } else {
            tr->dequantize_row(base + r * W->row_bytes, row, cols);
            wr = row;
        }
        for (int t = 0; t < j->n_tok; t++) {
            const float *x = j->X + (size_t)t * cols;
            float s = 0.0f;
            for (int64_t i = 0; i < cols; i++) s += wr[i] * x[i];
            j->Y[(size_t)t * rows + r] = s;
        }
    }
}

void matmul(threadpool *tp, const weight *W, const float *X, int n_tok, float *Y, float *scratch) {
    matmul_job j = {W, X, n_tok, Y, scratch};
    threadpool_run(tp, matmul_worker, &j);
}

void rope_apply(float *x, int n_rot, int32_t pos, float freq_base, float freq_scale,
                const float *freq_factors, rope_style style) {
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        /* theta_i = pos * base^(-2i/n_rot) * scale / factor_i */
        double theta = (double)pos * pow((double)freq_base, -2.0 * i / n_rot) * freq_scale;
        if (freq_factors) theta /= freq_factors[i];
        const float c = (float)cos(theta), s = (float)sin(theta);
        const int a = style == ROPE_NORM ? 2 * i : i;
        const int b = style == ROPE_NORM ? 2 * i + 1 : i + half;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

void swiglu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

double logsumexp(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

double softmax_inplace(float *x, int n) {
    const double lse = logsumexp(x, n);
    for (int i = 0; i < n; i++) x[i] = (float)exp((double)x[i] - lse);
    return lse;
}
