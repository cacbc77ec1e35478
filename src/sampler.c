/* sampler.c — token sampling: repetition penalty, then greedy or
 * temperature with top-k, top-p and min-p filtering, from a seeded PRNG
 * (xoshiro256**), so the same seed gives the same text. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rotkv.h"

typedef struct {
    float logit;
    int32_t id;
} cand;

struct rotkv_sampler {
    rotkv_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    rotkv_token *history; /* ring of the last repeat_last_n tokens */
    int32_t hist_len, hist_pos;
    float *work;          /* (n_vocab,) penalized logits */
    cand *c;              /* (n_vocab,) candidates */
};

rotkv_sampler_params rotkv_sampler_default_params(void) {
    rotkv_sampler_params p = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                              .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0xC0FFEEull};
    return p;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t *s) {
    const uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform double in [0, 1). */
static double rng_uniform(rotkv_sampler *s) { return (xoshiro_next(s->rng) >> 11) * (1.0 / 9007199254740992.0); }

rotkv_sampler *rotkv_sampler_create(const rotkv_sampler_params *params, int32_t n_vocab) {
    if (n_vocab <= 0) return NULL;
    rotkv_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = params ? *params : rotkv_sampler_default_params();
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    s->n_vocab = n_vocab;
    uint64_t seed = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed);
    s->history = malloc(sizeof(rotkv_token) * (size_t)(s->p.repeat_last_n ? s->p.repeat_last_n : 1));
    s->work = malloc(sizeof(float) * (size_t)n_vocab);
    s->c = malloc(sizeof(cand) * (size_t)n_vocab);
    if (!s->history || !s->work || !s->c) {
        rotkv_sampler_free(s);
        return NULL;
    }
    return s;
}

void rotkv_sampler_free(rotkv_sampler *s) {
    if (!s) return;
    free(s->history);
    free(s->work);
    free(s->c);
    free(s);
}

void rotkv_sampler_accept(rotkv_sampler *s, rotkv_token t) {
    if (!s->p.repeat_last_n) return;
    s->history[s->hist_pos] = t;
    s->hist_pos = (s->hist_pos + 1) % s->p.repeat_last_n;
    if (s->hist_len < s->p.repeat_last_n) s->hist_len++;
}

static int cmp_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

rotkv_token rotkv_sampler_sample(rotkv_sampler *s, const float *logits) {
    const int32_t V = s->n_vocab;
    float *w = s->work;
    memcpy(w, logits, sizeof(float) * (size_t)V);
    /* repetition penalty (llama.cpp/CTRL style): divide positive logits, multiply negative */
    if (s->p.repeat_penalty != 1.0f && s->p.repeat_penalty > 0)
        for (int32_t i = 0; i < s->hist_len; i++) {
            const rotkv_token t = s->history[i];
            if (t < 0 || t >= V) continue;
            bool dup = false; /* penalize each distinct token once */
            for (int32_t j = 0; j < i; j++) dup |= s->history[j] == t;
            if (!dup) w[t] = w[t] > 0 ? w[t] / s->p.repeat_penalty : w[t] * s->p.repeat_penalty;
        }
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (w[i] > w[best]) best = i;
    if (s->p.temp <= 0.0f) return best;

    /* candidates sorted by logit, cut by top-k */
    int32_t n = V;
    for (int32_t i = 0; i < V; i++) s->c[i] = (cand){w[i], i};
    qsort(s->c, (size_t)V, sizeof(cand), cmp_desc);
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;
    /* probabilities at temperature */
    const double mx = s->c[0].logit;
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((s->c[i].logit - mx) / s->p.temp);
    /* min-p: keep tokens with p >= min_p * p_max (p_max is exp(0)/sum) */
    if (s->p.min_p > 0.0f) {
        int32_t keep = 1;
        while (keep < n && exp((s->c[keep].logit - mx) / s->p.temp) >= s->p.min_p) keep++;
        n = keep;
        sum = 0.0;
        for (int32_t i = 0; i < n; i++) sum += exp((s->c[i].logit - mx) / s->p.temp);
    }
    /* top-p: smallest prefix whose mass reaches top_p */
    if (s->p.top_p < 1.0f) {
        double cum = 0.0;
        int32_t keep = 0;
        while (keep < n) {
            cum += exp((s->c[keep].logit - mx) / s->p.temp) / sum;
            keep++;
            if (cum >= s->p.top_p) break;
        }
        n = keep;
        sum = 0.0;
        for (int32_t i = 0; i < n; i++) sum += exp((s->c[i].logit - mx) / s->p.temp);
    }
    double r = rng_uniform(s) * sum;
    for (int32_t i = 0; i < n; i++) {
        r -= exp((s->c[i].logit - mx) / s->p.temp);
        if (r < 0) return s->c[i].id;
    }
    return s->c[n - 1].id;
}
