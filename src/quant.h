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
    GGML_TYPE_COUNT = 40
};

/* Dequantize n values (n a multiple of blck_size) from src into dst. */
typedef void (*dequantize_row_fn)(const void *src, float *dst, int64_t n);
/* Dot product of n values of a row of this type with an f32 vector. */
typedef float (*vec_dot_f32_fn)(const void *row, const float *x, int64_t n);
/* Quantize n f32 values into blocks (ggml's reference rounding); NULL if the
 * type has no quantizer here. */
typedef void (*quantize_row_fn)(const float *src, void *dst, int64_t n);

typedef struct {
    const char *name;      /* "q4_K", "f16", ... as ggml names it */
    int blck_size;         /* values per block */
    size_t type_size;      /* bytes per block */
    bool supported;        /* readable by this engine */
    dequantize_row_fn dequantize_row;
    vec_dot_f32_fn vec_dot_f32;
    quantize_row_fn quantize_row;
} quant_traits;

/* Traits of a type id; NULL if the id is unknown or out of range. */
const quant_traits *quant_get_traits(uint32_t type);
/* Name of a type id, or "unknown". */
const char *quant_type_name(uint32_t type);
/* Bytes taken by a row of n values; 0 if n is not a multiple of the block size
 * or the type is unknown. */
size_t quant_row_size(uint32_t type, int64_t n);

#endif
