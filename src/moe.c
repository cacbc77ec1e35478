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
    s->gate = malloc(sizeof(float) * B * K * F);
    s->up = malloc(sizeof(float) * B * K * F);
    s->y = malloc(sizeof(float) * B * K * E);
    s->req = malloc(sizeof(matvec_req) * (2 * X + 2));
    if (!s->probs || !s->sel || !s->sel_w || !s->start || !s->rows || !s->row_w || !s->x || !s->y || !s->gate ||
        !s->up || !s->req) {
        moe_scratch_free(s);
        return false;
    }
    if (hp->n_ff_shexp) {
        s->sh_gate = malloc(sizeof(float) * B * hp->n_ff_shexp);
        s->sh_up = malloc(sizeof(float) * B * hp->n_ff_shexp);
        s->sh_y = malloc(sizeof(float) * B * E);
        if (!s->sh_gate || !s->sh_up || !s->sh_y) {
            moe_scratch_free(s);
            return false;
        }
    }
    return true;
}

int moe_scratch_tokens(const model_hparams *hp) { return 2 * (int)hp->n_expert + 2; }

void moe_scratch_free(moe_scratch *s) {
    free(s->probs); free(s->sel); free(s->sel_w); free(s->start); free(s->rows); free(s->row_w);
    free(s->x); free(s->y); free(s->gate); free(s->up); free(s->req);
    free(s->sh_gate); free(s->sh_up); free(s->sh_y);
    memset(s, 0, sizeof *s);
}

/* sel[0..k-1] = the ids of the k largest of v[0..n-1], largest first, ties to
 * the lower id; by insertion: k is small (2..8), n at most 512. */
static void top_k(const float *v, int n_v, int k, int32_t *sel) {
    int n = 0;
    for (int e = 0; e < n_v; e++) {
        if (n == k && !(v[e] > v[sel[k - 1]])) continue;
        int i = n < k ? n++ : k - 1;
        while (i > 0 && v[e] > v[sel[i - 1]]) {
            sel[i] = sel[i - 1];
            i--;
        }
        sel[i] = e;
    }
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
    top_k(probs, n_expert, k, sel);
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

void moe_route_softmax_topk(const float *logits, int n_expert, int k, int32_t *sel, float *w) {
    top_k(logits, n_expert, k, sel); /* of the raw logits */
    const float mx = logits[sel[0]];
    double sum = 0;
    for (int i = 0; i < k; i++) {
        w[i] = expf(logits[sel[i]] - mx);
        sum += w[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < k; i++) w[i] *= inv;
}

/* An expert's activation on m rows of its gate and up products (in place in gate): SwiGLU,
 * or for gpt-oss the expert's gate and up biases added, then the clamped SwiGLU. */
static void expert_act(const model_hparams *hp, const layer_weights *L, int e, float *gate, float *up, int m) {
    const int F = (int)hp->n_ff_exp;
    if (L->gate_exps_b)
        for (int r = 0; r < m; r++)
            for (int i = 0; i < F; i++) {
                gate[(size_t)r * F + i] += L->gate_exps_b[(size_t)e * F + i];
                up[(size_t)r * F + i] += L->up_exps_b[(size_t)e * F + i];
            }
    if (hp->ffn_swiglu_oai) swiglu_oai(gate, up, m * F);
    else swiglu(gate, up, m * F);
}

/* The expert's down bias added to m output rows (gpt-oss). */
static void expert_down_bias(const model_hparams *hp, const layer_weights *L, int e, float *y, int m) {
    const int E = (int)hp->n_embd;
    if (!L->down_exps_b) return;
    for (int r = 0; r < m; r++)
        for (int d = 0; d < E; d++) y[(size_t)r * E + d] += L->down_exps_b[(size_t)e * E + d];
}

static void timed_matmul(threadpool *tp, const weight *w, const float *x, int n, float *y, void *scratch,
                         double *t_ms) {
    const double t0 = now_ms();
    matmul(tp, w, x, n, y, scratch);
    *t_ms += now_ms() - t0;
}

/* Each routed row r (rows grouped by expert) gets its expert's output in
 * s->y + r * n_embd: experts with one token together (matmul_many), the others
 * one batched matmul per projection; the shared expert's output (n tokens) goes
 * to s->sh_y, with the single-token experts when n is 1. */
static bool experts_forward(threadpool *tp, const model_hparams *hp, const layer_weights *L, const float *xb, int n,
                            moe_scratch *s, void *mm_scratch, double *t_matmul_ms) {
    const int X = (int)hp->n_expert, E = (int)hp->n_embd, F = (int)hp->n_ff_exp, FS = (int)hp->n_ff_shexp;
    const bool shared = L->gate_shexp.data != NULL, shared_single = shared && n == 1;
    int n1 = 0;
    for (int e = 0; e < X; e++) {
        const int r = s->start[e];
        if (s->start[e + 1] - r != 1) continue;
        const float *x = xb + (size_t)s->rows[r] * E;
        s->req[n1++] = (matvec_req){&L->gate_exps[e], x, s->gate + (size_t)r * F};
        s->req[n1++] = (matvec_req){&L->up_exps[e], x, s->up + (size_t)r * F};
    }
    const int n1_exp = n1;
    if (shared_single) {
        s->req[n1++] = (matvec_req){&L->gate_shexp, xb, s->sh_gate};
        s->req[n1++] = (matvec_req){&L->up_shexp, xb, s->sh_up};
    }
    if (n1) {
        const double t0 = now_ms();
        if (!matmul_many(tp, s->req, n1, mm_scratch)) return false;
        for (int i = 0; i < n1_exp; i += 2)
            expert_act(hp, L, (int)(s->req[i].W - L->gate_exps), s->req[i].y, s->req[i + 1].y, 1);
        if (shared_single) swiglu(s->sh_gate, s->sh_up, FS);
        int nd = 0;
        for (int i = 0; i < n1_exp; i += 2) {
            const int e = (int)(s->req[i].W - L->gate_exps), r = s->start[e];
            s->req[nd++] = (matvec_req){&L->down_exps[e], s->gate + (size_t)r * F, s->y + (size_t)r * E};
        }
        s->expert_matmuls += (uint64_t)nd;
        if (shared_single) s->req[nd++] = (matvec_req){&L->down_shexp, s->sh_gate, s->sh_y};
        if (!matmul_many(tp, s->req, nd, mm_scratch)) return false;
        for (int i = 0; i < n1_exp / 2; i++) {
            const int e = (int)(s->req[i].W - L->down_exps);
            expert_down_bias(hp, L, e, s->y + (size_t)s->start[e] * E, 1);
        }
        *t_matmul_ms += now_ms() - t0;
    }
    if (shared && !shared_single) {
        timed_matmul(tp, &L->gate_shexp, xb, n, s->sh_gate, mm_scratch, t_matmul_ms);
        timed_matmul(tp, &L->up_shexp, xb, n, s->sh_up, mm_scratch, t_matmul_ms);
        swiglu(s->sh_gate, s->sh_up, n * FS);
        timed_matmul(tp, &L->down_shexp, s->sh_gate, n, s->sh_y, mm_scratch, t_matmul_ms);
    }
    for (int e = 0; e < X; e++) {
        const int r0 = s->start[e], m = s->start[e + 1] - r0;
        if (m <= 1) continue; /* none: the expert's matrices are not read; one: done above */
        for (int i = 0; i < m; i++)
            memcpy(s->x + (size_t)i * E, xb + (size_t)s->rows[r0 + i] * E, sizeof(float) * (size_t)E);
        float *g = s->gate + (size_t)r0 * F, *u = s->up + (size_t)r0 * F;
        timed_matmul(tp, &L->gate_exps[e], s->x, m, g, mm_scratch, t_matmul_ms);
        timed_matmul(tp, &L->up_exps[e], s->x, m, u, mm_scratch, t_matmul_ms);
        expert_act(hp, L, e, g, u, m);
        timed_matmul(tp, &L->down_exps[e], g, m, s->y + (size_t)r0 * E, mm_scratch, t_matmul_ms);
        expert_down_bias(hp, L, e, s->y + (size_t)r0 * E, m);
        s->expert_matmuls++;
    }
    return true;
}

bool moe_ffn(threadpool *tp, const model_hparams *hp, const layer_weights *L, const float *xb, int n, float *out,
             moe_scratch *s, void *mm_scratch, double *t_matmul_ms) {
    const int X = (int)hp->n_expert, K = (int)hp->n_expert_used, E = (int)hp->n_embd;
    /* router: logits (n, X), then each token's top K and their weights */
    timed_matmul(tp, &L->ffn_gate_inp, xb, n, s->probs, mm_scratch, t_matmul_ms);
    if (L->ffn_gate_inp_b) /* gpt-oss: the router's bias */
        for (int t = 0; t < n; t++)
            for (int e = 0; e < X; e++) s->probs[(size_t)t * X + e] += L->ffn_gate_inp_b[e];
    for (int t = 0; t < n; t++) {
        if (hp->expert_softmax_topk)
            moe_route_softmax_topk(s->probs + (size_t)t * X, X, K, s->sel + (size_t)t * K, s->sel_w + (size_t)t * K);
        else
            moe_route(s->probs + (size_t)t * X, X, K, hp->expert_weights_norm, s->sel + (size_t)t * K,
                      s->sel_w + (size_t)t * K);
    }
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
    if (!experts_forward(tp, hp, L, xb, n, s, mm_scratch, t_matmul_ms)) return false;
    /* each token's weighted sum, in expert order */
    memset(out, 0, sizeof(float) * (size_t)n * E);
    for (int r = 0; r < n * K; r++) {
        float *o = out + (size_t)s->rows[r] * E;
        const float *y = s->y + (size_t)r * E, w = s->row_w[r];
        for (int d = 0; d < E; d++) o[d] += w * y[d];
    }
    if (L->gate_shexp.data) /* the shared expert, behind its sigmoid gate */
        for (int t = 0; t < n; t++) {
            const float *x = xb + (size_t)t * E, *y = s->sh_y + (size_t)t * E;
            double dot = 0;
            for (int d = 0; d < E; d++) dot += (double)L->ffn_gate_inp_shexp[d] * x[d];
            const float g = 1.0f / (1.0f + expf(-(float)dot));
            float *o = out + (size_t)t * E;
            for (int d = 0; d < E; d++) o[d] += g * y[d];
        }
    s->expert_rows += (uint64_t)n * K;
    return true;
}
