/* trellis.h — a bitshift trellis quantizer for unit-Gaussian coordinates
 * (lab module, in the style of QTIP, Tseng et al. 2024).
 *
 * A sequence of n values x_0..x_{n-1} is coded as one bit string of
 * B = k_0 + ... + k_{n-1} bits (step t shifts in k_t bits, 1 <= k_t <= 4, so
 * a sequence can mix rates: 32 steps at 3 bits and 32 at 2 give 2.5 bits per
 * value). The trellis state is the last L bits of the string, a window that
 * slides by k_t bits at step t; the reconstruction of step t is
 *     y_t = table[k_t][s_t],   s_t = the L bits ending after step t's bits.
 * Decoding slides the window and looks up (no arithmetic); encoding is a
 * Viterbi search over the 2^L states for the bit string of least squared
 * error sum (x_t - y_t)^2.
 *
 * Tail-biting: the string is circular — the window of the first steps reaches
 * back into the last bits of the string — so a sequence costs exactly B bits,
 * with no start state stored and no loss at the start. The constraint is that
 * the state before step 0 equals the state after step n-1 (their low L - k_0
 * bits; the top k_0 bits fall out before step 0 uses them). The exact
 * tail-biting optimum needs one Viterbi per start state (2^(L-k_0) runs,
 * trellis_encode_exact, for tests and measurements); trellis_encode is QTIP's
 * two-pass approximation: a free-start Viterbi over the sequence rotated by
 * n/2 picks the state at the wrap point, then one Viterbi over the sequence
 * from that state, ending in it. Cost: 2 Viterbi runs, and a squared error
 * 0.1-1.3% above the exact tail-biting optimum at L = 11 (docs/kv-codecs.md,
 * "Trellis-coded quantization (lab)").
 *
 * Bit layout: bit j of the string is bit (7 - j % 8) of byte j / 8 (MSB
 * first); step t's k_t bits are written MSB first right after step t-1's;
 * the unused low bits of the last byte are zero. The state is the integer
 * read from the window with the newest bit as its least significant bit.
 *
 * Requires B >= L (the window never overlaps itself): encode and decode
 * reject shorter sequences. */
#ifndef ROTKV_TRELLIS_H
#define ROTKV_TRELLIS_H

#include <stddef.h>
#include <stdint.h>

#define TRELLIS_L_MIN 4
#define TRELLIS_L_MAX 14
#define TRELLIS_K_MIN 1
#define TRELLIS_K_MAX 4
#define TRELLIS_N_MAX 256
#define TRELLIS_L_DEFAULT 11 /* the shipped code (trellis_default) */
/* strings shorter than this many bits try TRELLIS_SHORT_TRIES wrap points (trellis.c, encode_path) */
#define TRELLIS_SHORT_BITS 64
#define TRELLIS_SHORT_TRIES 8

/* A code: for each k in 1..4 a table of 2^L reconstruction values. */
typedef struct {
    int L;
    float *table[TRELLIS_K_MAX + 1]; /* table[k][s]; table[0] unused (NULL) */
} trellis_code;

/* Builds a code of window L (TRELLIS_L_MIN..TRELLIS_L_MAX), deterministic
 * for a given seed: each table starts as 2^L pseudo-random N(0,1) values,
 * antisymmetric (table[~s] = -table[s]), then takes `rounds` k-means
 * updates: `train_vectors` training vectors of 64 N(0,1) values are encoded
 * at the fixed k, and every entry moves to the mean of the values coded to
 * it (its negation contributing the negated values). rounds = 0 keeps the
 * random table. Returns 0, or -1 on bad arguments / out of memory. */
int trellis_code_init(trellis_code *tc, int L, uint64_t seed, int rounds, int train_vectors);
void trellis_code_free(trellis_code *tc);

/* The shipped code: L = TRELLIS_L_DEFAULT, seed 1, 3 rounds on 512 vectors,
 * built once on first use (thread-safe). NULL if out of memory. */
const trellis_code *trellis_default(void);

/* Bytes of scratch an encode of n steps needs (work argument). */
size_t trellis_work_size(int L, int n);
/* Bits of a sequence: sum of k[0..n-1]. */
int trellis_bits(const uint8_t *k, int n);

/* Encodes x[0..n-1] with step bit counts k[0..n-1] into bits
 * ((trellis_bits + 7) / 8 bytes), two-pass tail-biting (see above). xhat, if
 * not NULL, receives the reconstruction (equal to trellis_decode's output).
 * work: trellis_work_size(L, n) bytes, or NULL to allocate per call.
 * Returns 0, or -1 for: NULL tc/x/k/bits, n outside 1..TRELLIS_N_MAX, a k_t
 * outside 1..4, sum k < L, a non-finite x_t, out of memory. */
int trellis_encode(const trellis_code *tc, const float *x, int n, const uint8_t *k, uint8_t *bits,
                   float *xhat, void *work);

/* trellis_encode minimizing the weighted error sum w_t (x_t - y_t)^2 instead
 * (w NULL: all 1, trellis_encode itself; each w_t finite and >= 0, else -1):
 * what a sequence of coordinates of unequal variances needs when it is scaled
 * to unit variance for the code (kv_trellis.c). */
int trellis_encode_weighted(const trellis_code *tc, const float *x, const float *w, int n, const uint8_t *k,
                            uint8_t *bits, float *xhat, void *work);

/* The exact tail-biting optimum: one Viterbi per start state (2^(L-k_0)
 * runs). Same arguments and result as trellis_encode. */
int trellis_encode_exact(const trellis_code *tc, const float *x, int n, const uint8_t *k,
                         uint8_t *bits, float *xhat, void *work);
/* The same with weights (trellis_encode_weighted's error). */
int trellis_encode_exact_weighted(const trellis_code *tc, const float *x, const float *w, int n, const uint8_t *k,
                                  uint8_t *bits, float *xhat, void *work);

/* The encoders' Viterbi step runs with AVX2 when the CPU has it. enable 0
 * forces the scalar step, 1 asks for AVX2 (granted only if available), -1
 * only queries. Returns whether AVX2 is used. Both give the same bits. */
int trellis_simd(int enable);

/* bits -> y[0..n-1]. Returns 0, or -1 on the argument errors above. */
int trellis_decode(const trellis_code *tc, const uint8_t *bits, int n, const uint8_t *k, float *y);

/* Slow reference: tries every bit string of sum k <= 24 bits, decoding each
 * with trellis_decode, and returns the least squared error (the optimum
 * both encoders are tested against), writing its string to bits if not
 * NULL. Returns -1 on bad arguments or sum k > 24. */
double trellis_encode_exhaustive(const trellis_code *tc, const float *x, int n, const uint8_t *k,
                                 uint8_t *bits);
/* The same with weights (trellis_encode_weighted's error). */
double trellis_encode_exhaustive_weighted(const trellis_code *tc, const float *x, const float *w, int n,
                                          const uint8_t *k, uint8_t *bits);

#endif
