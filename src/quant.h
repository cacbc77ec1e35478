/* quant.h — weight tensor types: block layouts, dequantization, dot products.
 *
 * One traits table lists every type the engine can read from a GGUF file
 * (ids are ggml's, as stored in GGUF tensor infos). Block layouts follow ggml's
 * on-disk definitions exactly; each block struct has a compile-time size check
 * in quant.c.
 */
#ifndef ROTKV_QUANT_H
#define ROTKV_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu.h"

/* ggml type ids (the numbering used in GGUF files). */
enum ggml_type_id {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_COUNT = 40
};

/* Dequantize n values (n a multiple of blck_size) from src into dst. */
typedef void (*dequantize_row_fn)(const void *src, float *dst, int64_t n);
/* Dot product of n values of a row of this type with an f32 vector. */
typedef float (*vec_dot_f32_fn)(const void *row, const float *x, int64_t n);
/* Quantize n f32 values into blocks (ggml's reference rounding); NULL if the
 * type has no quantizer here. */
typedef void (*quantize_row_fn)(const float *src, void *dst, int64_t n);

/* --- Kernels of the matrix multiplication (like ggml's type_traits_cpu) ---
 *
 * A matmul does not dot weight rows with f32 activations: each activation row
 * is first converted once, by from_float of the weight type's vec_dot_type,
 * into a format whose dot product with the weight blocks can run in integer
 * arithmetic:
 *   q4_0, q5_0, q8_0, iq4_nl, mxfp4 -> q8_0  (32 int8 + f16 scale, like ggml)
 *   q4_1, q5_1               -> q8_1  (q8_0 plus s = d * sum(q), for the offset m)
 *   q2_K .. q6_K             -> q8_K  (256 int8, f32 scale, 16 sums of 16 codes)
 *   f32, f16, bf16           -> f32   (activations stay f32)
 * Activation rounding follows ggml's CPU kernels: q8_0/q8_1 use d = amax/127,
 * codes rint(x * 127/amax) (round half to even); q8_K uses ggml's
 * quantize_row_q8_K_ref (scale from the signed maximum, d = 1/(-127/max)).
 *
 * Every function below has a scalar reference and twins at the ISA levels of
 * cpu.h (AVX2, 256-bit VNNI, AVX-512); quant_kernels_of() hands out the twin
 * chosen once at start-up, quant_get_kernels() any one (tests).
 *  - Activation quantizers: the twins write identical bytes.
 *  - Quantized weights: a dot product is, block by block (super-block for the
 *    K-quants), an exact integer sum of code products followed by the
 *    reference's float steps (sum += d_w * d_a * isum ...), so the twins
 *    return identical floats, whatever the tile shape or path.
 *  - f32/f16/bf16 weights: the AVX2 twin sums in 8 lanes (one FMA per 8
 *    values, lanes added at the end); it agrees with the reference to
 *    rounding, and its tiles compute every element with exactly the
 *    operations of its vec_dot.
 * So within one ISA a matmul's result does not depend on how its rows and
 * tokens are tiled, packed or split across threads. */

/* Dot product of n values: a weight row of this type with an activation row
 * already converted to the vec_dot_type (a const float * for f32). */
typedef float (*vec_dot_fn)(const void *row, const void *act, int64_t n);
/* A tile of dot products: nr weight rows (row i at w + i*w_stride bytes) with
 * nt activation rows (row j at a + j*a_stride bytes):
 * y[j * y_stride + i] = vec_dot(row i, act j, n). Any nr, nt >= 1 work; the
 * fast shapes are (decode_rows x 1) and (tile_rows x tile_tokens) and their
 * (tile_rows x 1), (1 x tile_tokens) remainders. */
typedef void (*vec_dot_tile_fn)(int64_t n, int nr, int nt, const void *w, size_t w_stride, const void *a,
                                size_t a_stride, float *y, size_t y_stride);


/* Optional packed path for many tokens (prefill): QUANT_PACK_ROWS
 * consecutive weight rows are repacked once per matmul (pack_rows, into
 * pack_bytes(n) bytes) into a layout whose dot products with many tokens take
 * fewer instructions; gemm_packed then computes those rows against nt tokens,
 * y[j * y_stride + i] = vec_dot(row i, act j, n), bit-identical to vec_dot. */
#define QUANT_PACK_ROWS 8
typedef size_t (*pack_bytes_fn)(int64_t n);
typedef void (*pack_rows_fn)(int64_t n, const void *w, size_t w_stride, void *dst);
typedef void (*gemm_packed_fn)(int64_t n, const void *packed, int nt, const void *a, size_t a_stride, float *y,
                               size_t y_stride);

/* --- Weights repacked at load (decode and prefill) ---
 * A kernel row with repack_rows = R > 0 reads a weight matrix in groups of R
 * consecutive rows interleaved block by block, made once when the model is
 * loaded (model.c; the file's rows stay untouched in the mapping and serve
 * the last rows % R rows and every non-matmul use). For the 32-value types
 * (q4_0, iq4_nl, q8_0) a group of R rows of n values is n/32 records, one
 * per block index i, of R * type_size bytes (exactly the bytes of the R
 * original blocks, so a repacked matrix is as large as the file's):
 *     f16 d[R]                       the R rows' block scales
 *     S steps k of R x 4 bytes       row r's 4 bytes at 4r .. 4r+3
 * nibble types (S = 4): the bytes qs[4k .. 4k+3] of row r's block as stored
 *   (low nibbles = elements 4k.., high nibbles = elements 16+4k..);
 * q8_0 (S = 8): codes 4k .. 4k+3 of row r plus 128 (as unsigned bytes).
 * So a 32-bit lane holds 4 codes of one row, and one VNNI dot product
 * (vpdpbusd) of that vector with 4 broadcast activation codes advances the
 * exact integer sums of R rows at once, with no horizontal reduction.
 * The K-quants (q4_K, q6_K) use records per 256-value super-block, R rows:
 * q4_K (148 R bytes; the 6-bit scales unpacked to bytes):
 *     f16 d[R], f16 dmin[R], u8 sc[8][R], u8 m[8][R],
 *     then for pairs p = 0..3 of sub-blocks, steps k = 0..7: R x 4 bytes,
 *     row r's qs[32p + 4k .. 32p + 4k + 3] (low nibbles: sub-block 2p,
 *     high: 2p + 1)
 * q6_K (210 R bytes, as the file):
 *     f16 d[R], i8 sc[16][R], then for halves h = 0, 1, steps j = 0..7:
 *     three vectors of R x 4 bytes: row r's ql[64h + 4j ..], ql[64h + 32 + 4j ..],
 *     qh[32h + 4j ..]
 * gemm_repacked computes one group against nt tokens:
 * y[j * y_stride + r] = vec_dot(row r, act j, n), bit-identical to the
 * scalar reference. */
typedef void (*repack_fn)(int64_t n, const void *w, size_t w_stride, void *dst);
/* asum (32-value types; NULL: the kernel sums itself): the sums of the 32
 * codes of each q8_0 activation block, token j's n/32 sums at asum + j * (n/32)
 * (quant_q8_0_block_sums); the K-quants take theirs from q8_K's bsums. */
typedef void (*gemm_repacked_fn)(int64_t n, const void *group, int nt, const void *a, size_t a_stride,
                                 const int32_t *asum, float *y, size_t y_stride);

/* The compute kernels of one type at one ISA level (like ggml's
 * type_traits_cpu). Each level's rows form one const table in its arch file
 * (src/arch/x86/quant_*.c; quant.c holds the scalar one); quant_kernels_of()
 * hands out, per type, the row of the active level or of the highest level
 * below it that has one, chosen once per process. */
typedef struct {
    /* activation side: set on the rows of activation types (q8_0, q8_1, q8_K, f32) */
    quantize_row_fn from_float;
    /* weight side: set on weight types */
    vec_dot_fn vec_dot;
    vec_dot_tile_fn vec_dot_tile;
    int tile_rows, tile_tokens; /* register tile for several tokens (prefill) */
    int decode_rows;            /* rows per tile for one token (decode): rows streamed side by side */
    pack_bytes_fn pack_bytes;   /* packed path, or NULL */
    pack_rows_fn pack_rows;
    gemm_packed_fn gemm_packed;
    int pack_min_tokens;        /* tokens from which packing pays for itself */
    int repack_rows;            /* > 0: weights repacked at load in groups of this many rows */
    size_t (*repack_group_bytes)(int64_t n); /* bytes of one group of rows of n values */
    repack_fn repack;
    gemm_repacked_fn gemm_repacked;
    int repack_tokens;          /* tokens per gemm_repacked call that fill its registers */
    bool repack_asum;           /* gemm_repacked reads asum (a matmul computes it once for all groups) */
} quant_kernels;

/* The file format of a type (like ggml's type_traits): one const row per type. */
typedef struct {
    const char *name;      /* "q4_K", "f16", ... as ggml names it */
    int blck_size;         /* values per block */
    size_t type_size;      /* bytes per block */
    bool supported;        /* readable by this engine */
    dequantize_row_fn dequantize_row;
    vec_dot_f32_fn vec_dot_f32;
    quantize_row_fn quantize_row;
    uint32_t vec_dot_type; /* activation type of the dot products (weight types) */
} quant_traits;

/* Traits of a type id; NULL if the id is unknown or out of range. */
const quant_traits *quant_get_traits(uint32_t type);
/* The kernels matmuls use for a type: the active level's row or that of the
 * highest level below it that has one. NULL for types without kernels. */
const quant_kernels *quant_kernels_of(uint32_t type);
/* The kernels of exactly one ISA level for a type, whether or not that level
 * is the active one; NULL if the type has no kernels at that level or this CPU
 * cannot run them. For tests and benchmarks. */
const quant_kernels *quant_get_kernels(uint32_t type, cpu_isa isa);
/* ISA level of the kernels in use (cpu_isa_active()). */
cpu_isa quant_active_isa(void);
/* out[b] = the sum of the 32 codes of q8_0 block b, for nblocks blocks. */
void quant_q8_0_block_sums(const void *act, int64_t nblocks, int32_t *out);
/* Reference (scalar) repacking of the 32-value types into groups of R rows
 * (the layout above) and back; for the arch kernel rows and for tests.
 * 0 on success, -1 if the type has no repacked layout. */
int quant_repack_b32(uint32_t type, int R, int64_t n, const void *w, size_t w_stride, void *dst);
int quant_unpack_b32(uint32_t type, int R, int64_t n, const void *group, void *w, size_t w_stride);
/* The same for q4_K and q6_K (records above); bytes of one group of R rows. */
int quant_repack_k(uint32_t type, int R, int64_t n, const void *w, size_t w_stride, void *dst);
int quant_unpack_k(uint32_t type, int R, int64_t n, const void *group, void *w, size_t w_stride);
size_t quant_repack_group_bytes(uint32_t type, int R, int64_t n);
/* Row r (< R) of a repacked group back in the file's layout. */
int quant_unpack_b32_row(uint32_t type, int R, int64_t n, const void *group, int r, void *row);
/* Any repacked type: row r of a group (b32 or K layout). */
int quant_unpack_row(uint32_t type, int R, int64_t n, const void *group, int r, void *row);
/* Name of a type id, or "unknown". */
const char *quant_type_name(uint32_t type);
/* Bytes taken by a row of n values; 0 if n is not a multiple of the block size
 * or the type is unknown. */
size_t quant_row_size(uint32_t type, int64_t n);

#endif
