/* trellis.c — bitshift trellis quantizer; see trellis.h.
 *
 * Viterbi step t (k = k_t bits, M = 2^(L-k)): a new state s' = (s << k | b)
 * mod 2^L has the 2^k predecessors s = top * M + (s' >> k), top = 0..2^k-1,
 * which all new states with the same m = s' >> k share. So a step is
 *     best[m] = min_top cost[top * M + m]        (2^L compares, contiguous)
 *     cost'[s'] = best[s' >> k] + (x_t - T[s'])^2 (2^L multiply-adds)
 * and stores the winning top per m (one byte) for the traceback: the work is
 * 2 * 2^L per step whatever k is. */
#include "trellis.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Bits                                                                      */
/* ------------------------------------------------------------------------ */

static void put_bits(uint8_t *buf, int pos, uint32_t v, int cnt) {
    for (int i = cnt - 1; i >= 0; i--, pos++)
        if ((v >> i) & 1u) buf[pos >> 3] |= (uint8_t)(0x80u >> (pos & 7));
}

static uint32_t get_bits(const uint8_t *buf, int pos, int cnt) {
    uint32_t v = 0;
    for (int i = 0; i < cnt; i++, pos++) v = (v << 1) | ((buf[pos >> 3] >> (7 - (pos & 7))) & 1u);
    return v;
}

int trellis_bits(const uint8_t *k, int n) {
    int b = 0;
    for (int t = 0; t < n; t++) b += k[t];
    return b;
}

/* Common argument checks; returns B or -1. */
static int check_args(const trellis_code *tc, const void *x, int n, const uint8_t *k, const void *bits) {
    if (!tc || !x || !k || !bits || n < 1 || n > TRELLIS_N_MAX) return -1;
    if (tc->L < TRELLIS_L_MIN || tc->L > TRELLIS_L_MAX) return -1;
    int B = 0;
    for (int t = 0; t < n; t++) {
        if (k[t] < TRELLIS_K_MIN || k[t] > TRELLIS_K_MAX || !tc->table[k[t]]) return -1;
        B += k[t];
    }
    return B >= tc->L ? B : -1;
}

/* ------------------------------------------------------------------------ */
/* Viterbi                                                                   */
/* ------------------------------------------------------------------------ */

size_t trellis_work_size(int L, int n) {
    if (L < TRELLIS_L_MIN || L > TRELLIS_L_MAX || n < 1 || n > TRELLIS_N_MAX) return 0;
    const size_t S = (size_t)1 << L;
    /* cost, cost', best (+ 8 floats of padding for the SIMD loads), and per
     * step the backpointer bits: (2^k - 1) * 2^(L-k) <= 2^L bits */
    return sizeof(float) * (2 * S + S / 2 + 8) + (size_t)n * (S / 8 + 1);
}

/* Backpointers: bit (top-1) * M + m of a step's row is set when predecessor
 * top beat every lower top for group m; the winner is the highest set top. */

/* One step, scalar: best[m] and the backpointer row from c, then nc. */
static void step_scalar(const float *c, float *nc, float *best, uint8_t *row, uint32_t S, int kt,
                        const float *T, float xt, float wt) {
    const uint32_t M = S >> kt, tops = 1u << kt;
    memset(row, 0, S / 8 + 1);
    for (uint32_t m = 0; m < M; m++) best[m] = c[m];
    for (uint32_t top = 1; top < tops; top++) {
        const float *cc = c + top * M;
        for (uint32_t m = 0; m < M; m++)
            if (cc[m] < best[m]) {
                best[m] = cc[m];
                const uint32_t bit = (top - 1) * M + m;
                row[bit >> 3] |= (uint8_t)(1u << (bit & 7));
            }
    }
    for (uint32_t s = 0; s < S; s++) {
        const float d = xt - T[s];
        nc[s] = best[s >> kt] + (d * d) * wt;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TRELLIS_HAVE_AVX2 1
/* The same step with AVX2 (needs M >= 8): the same compares in the same order,
 * so the same backpointers; no FMA, so the same sums as step_scalar. */
__attribute__((target("avx2"))) static void step_avx2(const float *c, float *nc, float *best,
                                                      uint8_t *row, uint32_t S, int kt,
                                                      const float *T, float xt, float wt) {
    const uint32_t M = S >> kt, tops = 1u << kt;
    const __m256 x = _mm256_set1_ps(xt), wv = _mm256_set1_ps(wt);
    for (uint32_t m = 0; m < M; m += 8) {
        __m256 b = _mm256_loadu_ps(c + m);
        for (uint32_t top = 1; top < tops; top++) {
            const __m256 v = _mm256_loadu_ps(c + top * M + m);
            const __m256 lt = _mm256_cmp_ps(v, b, _CMP_LT_OQ);
            b = _mm256_blendv_ps(b, v, lt);
            row[((top - 1) * M + m) >> 3] = (uint8_t)_mm256_movemask_ps(lt);
        }
        /* the new states whose predecessors are groups m..m+7: 8 << kt of
         * them from (m << kt) on, state (m << kt) + i takes b[i >> kt] */
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (uint32_t j = 0; j < tops; j++) {
            const uint32_t s = (m << kt) + 8 * j;
            const __m256i idx = _mm256_srli_epi32(_mm256_add_epi32(lane, _mm256_set1_epi32((int)(8 * j))), kt);
            const __m256 d = _mm256_sub_ps(x, _mm256_loadu_ps(T + s));
            _mm256_storeu_ps(nc + s, _mm256_add_ps(_mm256_permutevar8x32_ps(b, idx), _mm256_mul_ps(_mm256_mul_ps(d, d), wv)));
        }
    }
    (void)best;
}
#else
#define TRELLIS_HAVE_AVX2 0
#endif

static int simd_state = -1; /* -1: not decided yet; 0 scalar; 1 AVX2 */

int trellis_simd(int enable) {
    int have = 0;
#if TRELLIS_HAVE_AVX2
    __builtin_cpu_init();
    have = __builtin_cpu_supports("avx2");
#endif
    if (simd_state < 0) simd_state = have;
    if (enable >= 0) simd_state = enable && have;
    return simd_state;
}

/* One Viterbi pass over x[0..n-1] (step bits k). start < 0: every start
 * state free; else the state before step 0 is `start`. endmask != 0: the
 * final state must have (s & endmask) == endlow. Writes the winning state
 * sequence to path and returns its squared error. */
static float viterbi(const trellis_code *tc, const float *x, const float *wgt, const uint8_t *k, int n, long start,
                     uint32_t endmask, uint32_t endlow, void *work, uint16_t *path) {
    const int L = tc->L;
    const uint32_t S = 1u << L;
    const size_t rowb = S / 8 + 1;
    float *c = work, *nc = c + S, *best = nc + S;
    uint8_t *bp = (uint8_t *)(best + S / 2 + 8);
    const int simd = simd_state < 0 ? trellis_simd(-1) : simd_state;
    memset(best + S / 2, 0, 8 * sizeof(float));
    if (start < 0) {
        for (uint32_t s = 0; s < S; s++) c[s] = 0.0f;
    } else {
        for (uint32_t s = 0; s < S; s++) c[s] = INFINITY;
        c[start] = 0.0f;
    }
    for (int t = 0; t < n; t++) {
        uint8_t *row = bp + (size_t)t * rowb;
        const float wt = wgt ? wgt[t] : 1.0f;
#if TRELLIS_HAVE_AVX2
        if (simd && (S >> k[t]) >= 8) step_avx2(c, nc, best, row, S, k[t], tc->table[k[t]], x[t], wt);
        else
#endif
            step_scalar(c, nc, best, row, S, k[t], tc->table[k[t]], x[t], wt);
        float *tmp = c;
        c = nc;
        nc = tmp;
    }
    (void)simd;
    uint32_t sb = 0;
    float cb = INFINITY;
    for (uint32_t s = 0; s < S; s++)
        if ((s & endmask) == endlow && c[s] < cb) {
            cb = c[s];
            sb = s;
        }
    for (int t = n - 1; t >= 0; t--) {
        path[t] = (uint16_t)sb;
        const uint32_t M = S >> k[t], m = sb >> k[t];
        const uint8_t *row = bp + (size_t)t * rowb;
        uint32_t top = 0;
        for (uint32_t tp = (1u << k[t]) - 1; tp >= 1; tp--) {
            const uint32_t bit = (tp - 1) * M + m;
            if ((row[bit >> 3] >> (bit & 7)) & 1u) {
                top = tp;
                break;
            }
        }
        sb = top * M + m;
    }
    return cb;
}

static void emit(const trellis_code *tc, const uint16_t *path, int n, const uint8_t *k, int B,
                 uint8_t *bits, float *xhat) {
    memset(bits, 0, (size_t)(B + 7) / 8);
    int pos = 0;
    for (int t = 0; t < n; t++) {
        put_bits(bits, pos, path[t] & ((1u << k[t]) - 1u), k[t]);
        pos += k[t];
        if (xhat) xhat[t] = tc->table[k[t]][path[t]];
    }
}

/* The two-pass tail-biting encode into path; returns the squared error.
 * Pass 1: a free-start Viterbi over the sequence rotated by n/2 steps, so
 * that the wrap point (after step n-1) has context on both sides, picks the
 * state there. Pass 2: the sequence from that state, back into it. (A pass 1
 * over only 2L bits either side of the wrap point is 3% worse at L = 8,
 * k = 2; the survivor paths merge slowly, so it takes the whole sequence.) */
static float encode_path(const trellis_code *tc, const float *x, const float *w, int n, const uint8_t *k,
                         void *work, uint16_t *path) {
    /* A short string (under TRELLIS_SHORT_BITS bits) leaves pass 1 too little
     * context on each side of the wrap point: its state there is often not
     * that of a good circular string (two-pass / exact tail-biting optimum =
     * 1.4 at 32 bits, 1.15 at 48). Such strings try TRELLIS_SHORT_TRIES wrap
     * points (rotations by j n / TRIES), each two passes, and keep the best;
     * they are short, so the Viterbi runs are too. Every string of the
     * tables' training and the measurements in docs/kv-codecs.md is longer. */
    float xr[TRELLIS_N_MAX], wr[TRELLIS_N_MAX];
    uint8_t kr[TRELLIS_N_MAX];
    uint16_t pr[TRELLIS_N_MAX];
    const int tries = trellis_bits(k, n) >= TRELLIS_SHORT_BITS ? 1 : (n < TRELLIS_SHORT_TRIES ? n : TRELLIS_SHORT_TRIES);
    float best = INFINITY;
    for (int j = 0; j < tries; j++) {
        const int r = (n / 2 + j * n / tries) % n;
        for (int i = 0; i < n; i++) {
            xr[i] = x[(i + r) % n];
            kr[i] = k[(i + r) % n];
            wr[i] = w ? w[(i + r) % n] : 1.0f;
        }
        /* pass 1 on the rotated sequence; the wrap point after step n-1 of the
         * original is after step n-1-r of the rotated one */
        viterbi(tc, xr, wr, kr, n, -1, 0, 0, work, pr);
        const uint32_t wrap = pr[n - 1 - r];
        const uint32_t endmask = (1u << (tc->L - k[0])) - 1u;
        const float e = viterbi(tc, x, w, k, n, (long)wrap, endmask, wrap & endmask, work, pr);
        if (e < best) {
            best = e;
            memcpy(path, pr, sizeof(uint16_t) * (size_t)n);
        }
    }
    return best;
}

static int finite_all(const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int weights_ok(const float *wgt, int n) {
    if (!wgt) return 1;
    for (int i = 0; i < n; i++)
        if (!(wgt[i] >= 0.0f) || !isfinite(wgt[i])) return 0;
    return 1;
}

int trellis_encode(const trellis_code *tc, const float *x, int n, const uint8_t *k, uint8_t *bits,
                   float *xhat, void *work) {
    return trellis_encode_weighted(tc, x, NULL, n, k, bits, xhat, work);
}

int trellis_encode_weighted(const trellis_code *tc, const float *x, const float *wgt, int n, const uint8_t *k,
                            uint8_t *bits, float *xhat, void *work) {
    const int B = check_args(tc, x, n, k, bits);
    if (B < 0 || !finite_all(x, n) || !weights_ok(wgt, n)) return -1;
    void *w = work ? work : malloc(trellis_work_size(tc->L, n));
    if (!w) return -1;
    uint16_t path[TRELLIS_N_MAX];
    encode_path(tc, x, wgt, n, k, w, path);
    emit(tc, path, n, k, B, bits, xhat);
    if (!work) free(w);
    return 0;
}

int trellis_encode_exact(const trellis_code *tc, const float *x, int n, const uint8_t *k,
                         uint8_t *bits, float *xhat, void *work) {
    return trellis_encode_exact_weighted(tc, x, NULL, n, k, bits, xhat, work);
}

int trellis_encode_exact_weighted(const trellis_code *tc, const float *x, const float *wgt, int n, const uint8_t *k,
                                  uint8_t *bits, float *xhat, void *work) {
    const int B = check_args(tc, x, n, k, bits);
    if (B < 0 || !finite_all(x, n) || !weights_ok(wgt, n)) return -1;
    void *w = work ? work : malloc(trellis_work_size(tc->L, n));
    if (!w) return -1;
    uint16_t path[TRELLIS_N_MAX], best[TRELLIS_N_MAX];
    const uint32_t endmask = (1u << (tc->L - k[0])) - 1u;
    float cb = INFINITY;
    for (uint32_t s0 = 0; s0 <= endmask; s0++) {
        const float c = viterbi(tc, x, wgt, k, n, (long)s0, endmask, s0, w, path);
        if (c < cb) {
            cb = c;
            memcpy(best, path, sizeof(uint16_t) * (size_t)n);
        }
    }
    emit(tc, best, n, k, B, bits, xhat);
    if (!work) free(w);
    return 0;
}

int trellis_decode(const trellis_code *tc, const uint8_t *bits, int n, const uint8_t *k, float *y) {
    const int B = check_args(tc, y, n, k, bits);
    if (B < 0) return -1;
    const uint32_t mask = (1u << tc->L) - 1u;
    uint32_t s = get_bits(bits, B - tc->L, tc->L); /* circular: the state before step 0 */
    int pos = 0;
    for (int t = 0; t < n; t++) {
        s = ((s << k[t]) | get_bits(bits, pos, k[t])) & mask;
        pos += k[t];
        y[t] = tc->table[k[t]][s];
    }
    return 0;
}

double trellis_encode_exhaustive(const trellis_code *tc, const float *x, int n, const uint8_t *k,
                                 uint8_t *bits) {
    return trellis_encode_exhaustive_weighted(tc, x, NULL, n, k, bits);
}

double trellis_encode_exhaustive_weighted(const trellis_code *tc, const float *x, const float *w, int n,
                                          const uint8_t *k, uint8_t *bits) {
    const int B = check_args(tc, x, n, k, x);
    if (B < 0 || B > 24 || !weights_ok(w, n)) return -1;
    const int nb = (B + 7) / 8;
    uint8_t buf[3], bestbuf[3] = {0};
    float y[TRELLIS_N_MAX];
    double best = INFINITY;
    for (uint32_t v = 0; v < (1u << B); v++) {
        memset(buf, 0, sizeof buf);
        put_bits(buf, 0, v, B);
        trellis_decode(tc, buf, n, k, y);
        double e = 0;
        for (int t = 0; t < n; t++) e += (w ? w[t] : 1.0) * ((double)x[t] - y[t]) * ((double)x[t] - y[t]);
        if (e < best) {
            best = e;
            memcpy(bestbuf, buf, sizeof buf);
        }
    }
    if (bits) memcpy(bits, bestbuf, (size_t)nb);
    return best;
}

/* ------------------------------------------------------------------------ */
/* Codes                                                                     */
/* ------------------------------------------------------------------------ */

static double rng_normal(uint64_t *s) { /* Box-Muller on a 64-bit LCG */
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    const double u = (double)(*s >> 11) / 9007199254740992.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    const double v = ((double)(*s >> 11) + 1.0) / 9007199254740993.0;
    return sqrt(-2.0 * log(v)) * cos(6.283185307179586 * u);
}

void trellis_code_free(trellis_code *tc) {
    if (!tc) return;
    for (int k = 0; k <= TRELLIS_K_MAX; k++) {
        free(tc->table[k]);
        tc->table[k] = NULL;
    }
}

int trellis_code_init(trellis_code *tc, int L, uint64_t seed, int rounds, int train_vectors) {
    if (!tc || L < TRELLIS_L_MIN || L > TRELLIS_L_MAX || rounds < 0 || (rounds > 0 && train_vectors < 1))
        return -1;
    memset(tc, 0, sizeof *tc);
    tc->L = L;
    const uint32_t S = 1u << L;
    enum { TN = 64 };
    void *work = malloc(trellis_work_size(L, TN));
    double *sum = malloc(sizeof(double) * S);
    double *cnt = malloc(sizeof(double) * S);
    int ok = work && sum && cnt;
    for (int k = TRELLIS_K_MIN; ok && k <= TRELLIS_K_MAX; k++) {
        float *T = tc->table[k] = malloc(sizeof(float) * S);
        if (!T) {
            ok = 0;
            break;
        }
        uint64_t rs = seed * 0x9E3779B97F4A7C15ull + (uint64_t)k * 0xD1B54A32D192ED03ull + (uint64_t)L;
        for (uint32_t s = 0; s < S / 2; s++) {
            T[s] = (float)rng_normal(&rs);
            T[s ^ (S - 1)] = -T[s];
        }
        uint8_t kk[TN];
        memset(kk, k, sizeof kk);
        float x[TN];
        uint16_t path[TN];
        for (int r = 0; r < rounds; r++) {
            memset(sum, 0, sizeof(double) * S);
            memset(cnt, 0, sizeof(double) * S);
            uint64_t ds = seed ^ 0x5851F42D4C957F2Dull ^ ((uint64_t)k << 40); /* same data each round */
            for (int v = 0; v < train_vectors; v++) {
                for (int i = 0; i < TN; i++) x[i] = (float)rng_normal(&ds);
                encode_path(tc, x, NULL, TN, kk, work, path);
                for (int i = 0; i < TN; i++) {
                    sum[path[i]] += x[i];
                    cnt[path[i]] += 1;
                    sum[path[i] ^ (S - 1)] -= x[i];
                    cnt[path[i] ^ (S - 1)] += 1;
                }
            }
            for (uint32_t s = 0; s < S; s++)
                if (cnt[s] > 0) T[s] = (float)(sum[s] / cnt[s]);
        }
    }
    free(work);
    free(sum);
    free(cnt);
    if (!ok) {
        trellis_code_free(tc);
        return -1;
    }
    return 0;
}

static trellis_code default_code;
static int default_ok;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_init(void) {
    default_ok = trellis_code_init(&default_code, TRELLIS_L_DEFAULT, 1, 3, 512) == 0;
}

const trellis_code *trellis_default(void) {
    pthread_once(&default_once, default_init);
    return default_ok ? &default_code : NULL;
}
