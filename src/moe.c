/* moe.c — the mixture-of-experts feed-forward block: routing, tokens grouped
 * by expert, one batched matmul per expert and projection (see moe.h). */
#include "moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

bool moe_scratch_init(moe_scratch *s, const model_hparams *hp, int n_batch) {
    memset(s, 0, sizeof *s);
    if (!hp->n_expert) return true;
    const size_t B = (size_t)n_batch, X = hp->n_expert, K = hp->n_expert_used, E = hp->n_embd, F = hp->n_ff_exp;
    s->probs = malloc(sizeof(float) * B * X);
    s->sel = malloc(sizeof(int32_t) * B * K);
    s->sel_w = malloc(sizeof(float) * B * K);
    s->start = malloc(sizeof(int32_t) * (X + 1));
    s->rows = malloc(sizeof(int32_t) * B * K);
    s->row_w = malloc(sizeof(float) * B * K);
    s->x = malloc(sizeof(float) * B * E);
    s->y = malloc(sizeof(float) * B * E);
    s->gate = malloc(sizeof(float) * B * F);
    s->up = malloc(sizeof(float) * B * F);
    if (!s->probs || !s->sel || !s->sel_w || !s->start || !s->rows || !s->row_w || !s->x || !s->y || !s->gate ||
        !s->up) {
        moe_scratch_free(s);
        return false;
    }
    return true;
}

void moe_scratch_free(moe_scratch *s) {
    free(s->probs); free(s->sel); free(s->sel_w); free(s->start); free(s->rows); free(s->row_w);
    free(s->x); free(s->y); free(s->gate); free(s->up);
    memset(s, 0, sizeof *s);
}

void moe_route(float *probs, int n_expert, int k, bool norm, int32_t *sel, float *w) {
    float mx = probs[0];
    for (int e = 1; e < n_expert; e++) mx = probs[e] > mx ? probs[e] : mx;
    double sum = 0;
    for (int e = 0; e < n_expert; e++) {
        probs[e] = expf(probs[e] - mx);
        sum += probs[e];
    }
    const float inv = (float)(1.0 / sum);
    for (int e = 0; e < n_expert; e++) probs[e] *= inv;
    /* top k by insertion: k is small (2..8), n_expert at most 512 */
    int n = 0;
    for (int e = 0; e < n_expert; e++) {
        if (n == k && !(probs[e] > probs[sel[k - 1]])) continue;
        int i = n < k ? n++ : k - 1;
        while (i > 0 && probs[e] > probs[sel[i - 1]]) {
            sel[i] = sel[i - 1];
            i--;
        }
        sel[i] = e;
    }
    float wsum = 0;
    for (int i = 0; i < k; i++) {
        w[i] = probs[sel[i]];
        wsum += w[i];
    }
    if (norm) {
        if (wsum < 6.103515625e-5f) wsum = 6.103515625e-5f;
        for (int i = 0; i < k; i++) w[i] /= wsum;
    }
}

static void timed_matmul(threadpool *tp, const weight *w, const float *x, int n, float *y, void *scratch,
                         double *t_ms) {
    const double t0 = now_ms();
    matmul(tp, w, x, n, y, scratch);
    *t_ms += now_ms() - t0;
}

void moe_ffn(threadpool *tp, const model_hparams *hp, const layer_weights *L, const float *xb, int n, float *out,
             moe_scratch *s, void *mm_scratch, double *t_matmul_ms) {
    const int X = (int)hp->n_expert, K = (int)hp->n_expert_used, E = (int)hp->n_embd, F = (int)hp->n_ff_exp;
    /* router: logits (n, X), then each token's top K and their weights */
    timed_matmul(tp, &L->ffn_gate_inp, xb, n, s->probs, mm_scratch, t_matmul_ms);
    for (int t = 0; t < n; t++)
        moe_route(s->probs + (size_t)t * X, X, K, hp->expert_weights_norm, s->sel + (size_t)t * K,
                  s->sel_w + (size_t)t * K);
    /* group the (token, expert) pairs by expert: counting sort, tokens in order */
    memset(s->start, 0, sizeof(int32_t) * (size_t)(X + 1));
    for (int i = 0; i < n * K; i++) s->start[s->sel[i] + 1]++;
    for (int e = 0; e < X; e++) s->start[e + 1] += s->start[e];
    for (int t = 0; t < n; t++)
        for (int j = 0; j < K; j++) {
            const int e = s->sel[(size_t)t * K + j];
            /* start[e] is advanced while filling and restored below */
            s->rows[s->start[e]] = t;
            s->row_w[s->start[e]] = s->sel_w[(size_t)t * K + j];
            s->start[e]++;
        }
    for (int e = X; e > 0; e--) s->start[e] = s->start[e - 1];
    s->start[0] = 0;
    memset(out, 0, sizeof(float) * (size_t)n * E);
    for (int e = 0; e < X; e++) {
        const int r0 = s->start[e], m = s->start[e + 1] - r0;
        if (m == 0) continue; /* no token chose this expert: its matrices are not read */
        for (int i = 0; i < m; i++)
            memcpy(s->x + (size_t)i * E, xb + (size_t)s->rows[r0 + i] * E, sizeof(float) * (size_t)E);
        timed_matmul(tp, &L->gate_exps[e], s->x, m, s->gate, mm_scratch, t_matmul_ms);
        timed_matmul(tp, &L->up_exps[e], s->x, m, s->up, mm_scratch, t_matmul_ms);
        swiglu(s->gate, s->up, m * F);
        timed_matmul(tp, &L->down_exps[e], s->gate, m, s->y, mm_scratch, t_matmul_ms);
        for (int i = 0; i < m; i++) {
            float *o = out + (size_t)s->rows[r0 + i] * E;
            const float *y = s->y + (size_t)i * E, wi = s->row_w[r0 + i];
            for (int d = 0; d < E; d++) o[d] += wi * y[d];
        }
        s->expert_rows += (uint64_t)m;
        s->expert_matmuls++;
    }
}
