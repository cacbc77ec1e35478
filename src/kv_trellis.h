/* kv_trellis.h — trellis-coded kt cache types ("ktt": ktt4, ktt3.5, ktt3,
 * ktt2.5, ktt2; docs/kv-codecs.md, "Trellis-coded kt types").
 *
 * A ktt head is a kt head (kv_transform.h: the same fitted transform, center
 * and per-coordinate bit allocation b_i from kvt_fit / kvt_fit_moments, the
 * same budget) whose coordinates are coded differently: the y_i / (s sigma_i)
 * with 1 <= b_i <= 4 form one tail-biting bitshift trellis sequence (trellis.h,
 * the default L = 11 code, step t shifting in b_i bits) chosen by a Viterbi
 * search that weights each coordinate's squared error by sigma_i^2 (its error
 * in the transform space, which is the error that matters); coordinates with
 * 5 or 6 bits keep kt's Lloyd-Max levels; coordinates without bits are 0.
 *
 * Row layout (row_bytes as the kt type of the same bits/value):
 *     u8 scale code (kvt_scale_table) | the index field
 * the field: the trellis string (B = sum of its b_i bits, MSB first, trellis.h)
 * followed by the Lloyd-Max indices of the 5/6-bit coordinates (b_i bits each,
 * MSB first), zero-padded to a byte. Every bit counted: bits/value is
 * 8 * row_bytes / head_dim, exactly kt's.
 *
 * ktt_make reorders the head's coordinates (T's rows, Tinv's columns, sigma,
 * bits): the trellis coordinates first, their widths interleaved evenly along
 * the sequence (a width's coordinates keep kt's order, largest variance first;
 * interleaving avoids the split penalty of one run per width, docs/kv-codecs.md),
 * then the Lloyd-Max ones, then those without bits. kvt_prep_query and
 * kvt_finish work on that order unchanged; every other kvt_* entry point sees
 * h->tt and comes here. If the trellis coordinates have fewer than
 * KTT_MIN_BITS bits in all (a tiny head at a tiny budget), ktt_make leaves
 * the head a kt head (h->tt NULL): its rows are kt rows.
 *
 * Decoders: ktt_levels_ref reads the string with trellis_decode (bit by bit)
 * and is the reference; the fast kernels (one const row per ISA level:
 * scalar, AVX2, AVX-512; ktt_kernels_at) read each step's state from a 32-bit
 * big-endian window at a precomputed byte and shift (vector gathers in the
 * SIMD rows) and look it up in one concatenated table of the four k's: the
 * same entries, so bit-identical output. */
#ifndef ROTKV_KV_TRELLIS_H
#define ROTKV_KV_TRELLIS_H

#include <stdint.h>
#include <string.h>

#include "cpu.h"
#include "kv_transform.h"
#include "trellis.h"

#define KTT_L TRELLIS_L_DEFAULT
#define KTT_MAX_HD TRELLIS_N_MAX
/* The trellis codes a head's 1..4-bit coordinates only when they hold at
 * least this many bits: below it the two-pass tail-biting search is far from
 * the optimum (1.15x at 32 bits, 1.5x at 20, 8 wrap points tried; trellis.c)
 * and no better than Lloyd-Max levels, which code them instead. */
#define KTT_MIN_BITS 40
/* ktt_encode: a row with a coordinate beyond KTT_SCALE_SEARCH_U (in units of
 * its sigma, at the RMS scale) also tries KTT_SCALE_TRIES larger scales */
#define KTT_SCALE_SEARCH_U 2.5
#ifndef KTT_SCALE_TRIES
#define KTT_SCALE_TRIES 12
#endif
#ifndef KTT_SCALE_TRIES_ALL
#define KTT_SCALE_TRIES_ALL 2
#endif
#ifndef KTT_SCALE_STEP
#define KTT_SCALE_STEP 2
#endif
/* Version of the ktt row format and code construction; ktt_code_id hashes it
 * with the tables themselves. */
#define KTT_VERSION 2

struct ktt_plan {
    const trellis_code *tc;
    int n_tt;                /* coordinates [0, n_tt): the trellis sequence */
    int n_lm;                /* [n_tt, n_tt + n_lm): Lloyd-Max levels (5..6 bits) */
    int B;                   /* bits of the trellis string */
    int n_wrap;              /* steps t < n_wrap: their window crosses the wrap point */
    uint32_t field_bytes;    /* bytes of the index field */
    uint32_t small;          /* field_bytes < 4: kernels read a zero-padded copy */
    uint32_t mask;           /* 2^L - 1 */
    uint8_t k[KTT_MAX_HD];   /* bits of step t (= bits[t]) */
    /* step t >= n_wrap (and the Lloyd-Max coordinates at index n_tt + j): its
     * bits are (be32(field + byte[t]) >> shift[t]) & mask (for a Lloyd-Max
     * index: & (2^b - 1)); tab[t] = (k[t] - 1) << L, its table in ktt_tables */
    int32_t byte[KTT_MAX_HD];
    int32_t shift[KTT_MAX_HD];
    int32_t tab[KTT_MAX_HD];
    uint32_t lm_ofs[KTT_MAX_HD]; /* bit offset in the field of Lloyd-Max coordinate n_tt + j */
    uint32_t packed[KTT_MAX_HD]; /* the scalar kernel's step t: byte | shift << 8 | tab << 13 (one load) */
    float w[KTT_MAX_HD];         /* encode weights sigma_i^2 / max sigma^2 of the trellis coordinates */
};

/* The four tables of the default code, k = 1..4, one after the other: entry
 * ((k - 1) << L) + s is table[k][s]. Ready once any ktt head exists. */
extern const float *ktt_tables;

/* Turns a head fitted by kvt_fit / kvt_fit_moments into a ktt head (see
 * above; a head whose 1..4-bit coordinates hold fewer than KTT_MIN_BITS bits
 * is left as it is). Returns 0, or -1 if head_dim > KTT_MAX_HD, the code cannot be built
 * or out of memory (the head is then left as it was). */
int ktt_make(kvt_head *h);
/* A fingerprint of the trellis code this process builds (KTT_VERSION, L and
 * every table entry): stored in calibrations that measured ktt types, so one
 * made with other tables is refused. 0 if the code cannot be built. */
uint64_t ktt_code_id(void);

void ktt_encode(const kvt_head *h, const float *x, uint8_t *dst);
void ktt_decode(const kvt_head *h, const uint8_t *src, float *x);
/* The reference: y[i] = level of coordinate i (0 without bits), returns the
 * row's scale s; the string read by trellis_decode. */
float ktt_levels_ref(const kvt_head *h, const uint8_t *src, float *y);
/* The row of x coded at scale code `code` (kvt_scale_table) alone, without
 * ktt_encode's search; returns its squared error in the transform space, or -1
 * for a zero scale. ktt_encode keeps the least of these over its candidates
 * (tests check it against this). */
double ktt_encode_at(const kvt_head *h, const float *x, int code, uint8_t *dst);
/* kvt_levels / kvt_levels_rows / kvt_dot / kvt_axpy / kvt_accum_rows of a ktt
 * head (same contracts), with the kernels of the active level. */
float ktt_levels(const kvt_head *h, const uint8_t *src, float *y);
void ktt_levels_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, float *s);
float ktt_dot(const kvt_head *h, const uint8_t *src, const float *qy);
void ktt_axpy(const kvt_head *h, const uint8_t *src, float w, float *acc_y);
void ktt_accum_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W, int w_stride,
                    int ng, float *acc_y);

/* One level's decoder: ktt_levels of one row. */
typedef struct {
    float (*levels)(const kvt_head *h, const uint8_t *src, float *y);
} ktt_kernels;

extern const ktt_kernels ktt_kernels_scalar;
extern const ktt_kernels ktt_kernels_avx2;   /* NULL levels off x86 */
extern const ktt_kernels ktt_kernels_avx512; /* NULL levels off x86 */
/* The row of exactly one level (NULL if this CPU cannot run it or it has none
 * of its own), tables ready. For tests and benchmarks. */
const ktt_kernels *ktt_kernels_at(cpu_isa isa);

/* The scalar kernel's shared parts, for the SIMD rows: the steps t < n_wrap
 * and the Lloyd-Max coordinates and zeros after the trellis, into y; returns
 * the field to read (f, or a zero-padded copy in pad when the field is small). */
const uint8_t *ktt_row_prologue(const struct ktt_plan *p, const uint8_t *f, uint8_t pad[8], float *y);
void ktt_row_epilogue(const kvt_head *h, const uint8_t *f, float *y);

static inline uint32_t ktt_be32(const uint8_t *p) {
    uint32_t w;
    memcpy(&w, p, 4);
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap32(w);
#else
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
#endif
}

#endif
