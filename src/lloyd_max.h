/* lloyd_max.h — Lloyd-Max scalar quantizers for the unit Gaussian N(0,1).
 *
 * After a random orthonormal rotation, the coordinates of a head vector
 * scaled by sqrt(n)/|x| are close to N(0,1); the tq* KV codecs quantize them
 * to the MSE-optimal codebook for that density. The codebooks are computed
 * here with Lloyd's algorithm on the exact Gaussian density: every integral a
 * Lloyd step needs over a cell [a, b] has a closed form in erf and exp
 *     P  = Phi(b) - Phi(a)
 *     M1 = phi(a) - phi(b)                     (integral of x phi(x))
 *     M2 = P + a phi(a) - b phi(b)             (integral of x^2 phi(x))
 * so the integration is exact up to double rounding.
 *
 * Reference distortions (Max 1960): 1 bit 0.3634, 2 bits 0.1175,
 * 3 bits 0.03454, 4 bits 0.009497. */
#ifndef ROTKV_LLOYD_MAX_H
#define ROTKV_LLOYD_MAX_H

#define LLOYD_MAX_BITS_MAX 6    /* lloyd_max_gaussian accepts 1..6 bits */
#define LLOYD_MAX_TABLE_BITS 4  /* lloyd_max_table caches 1..4 bits */

/* Computes the 2^bits-level Lloyd-Max codebook of N(0,1) into c (ascending,
 * symmetric about 0), iterating until no centroid moves by more than 1e-13.
 * Returns the number of Lloyd iterations, or -1 if bits is out of range. */
int lloyd_max_gaussian(int bits, double *c);

/* Expected squared error E[(X - Q(X))^2], X ~ N(0,1), of nearest-neighbour
 * quantization to the k ascending levels c (cells split at the midpoints),
 * integrated exactly with erf/exp as above. */
double lloyd_max_mse(const double *c, int k);

/* A cached codebook for 1 <= bits <= LLOYD_MAX_TABLE_BITS, computed once on
 * first use (thread-safe, pthread_once), as floats:
 *   levels:     2^bits ascending centroids
 *   thresholds: the 2^bits - 1 midpoints between neighbouring levels; the
 *               nearest level of u is the number of thresholds <= u.
 * Returns NULL for an out-of-range bits. */
typedef struct {
    int bits, k;
    const float *levels;
    const float *thresholds;
} lloyd_max_codebook;

const lloyd_max_codebook *lloyd_max_table(int bits);

#endif
