/* quant_neon.c — the aarch64 rows of the matmul kernels (quant_arch.h):
 * quant_neon.h's kernels instantiated twice from the same source:
 *   quant_kernels_neon      baseline Advanced SIMD (every ARMv8-A CPU)
 *   quant_kernels_dotprod   the same with SDOT (ARMv8.2-A dotprod), compiled
 *                           with that target for these functions only
 * The library is built for baseline armv8-a; quant.c takes the dotprod row
 * only where cpu.c found the feature. Types without a kernel of their own at a
 * level fall back to the level below (quant.c), ending at the scalar
 * reference. The i8mm level has no rows of its own (it runs the dotprod rows).
 * Off aarch64 both tables are empty. */
#include <math.h>
#include <string.h>

#include "fp16.h"
#include "quant_blocks.h"
#include "arch/quant_arch.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))

#include <arm_neon.h>

/* ------------------------------------------------------------ baseline NEON */

/* acc += a . b in 16-bit products, pairwise into the 4 lanes */
static inline int32x4_t neon_dot_s8(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
}

#define NEON_NAME(x) neon_##x
#define DOT_S8(acc, a, b) neon_dot_s8(acc, a, b)
#include "quant_neon.h"
NEON_TILE(neon_f32_dot)
NEON_TILE(neon_f16_dot)
NEON_TILE(neon_bf16_dot)
NEON_TILE(neon_q2_K_dot)
NEON_TILE(neon_q3_K_dot)
NEON_TILE(neon_q4_K_dot)
NEON_TILE(neon_q5_K_dot)
NEON_TILE(neon_q6_K_dot)
#undef NEON_TILE
#undef NEON_NAME
#undef DOT_S8

#define WROW(dot) { .vec_dot = dot, .vec_dot_tile = dot##_tile, .tile_rows = 1, .tile_tokens = 1, .decode_rows = 1 }
/* the 32-value types: 4-row x 2-token register tiles (quant_neon.h), 4 rows side by side in decode */
#define WROW4(p, t) .vec_dot = p##_##t##_dot, .vec_dot_tile = p##_##t##_tile4, .tile_rows = 4, .tile_tokens = 2, \
                    .decode_rows = 4
const quant_kernels quant_kernels_neon[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = { .from_float = neon_f32_copy, .vec_dot = neon_f32_dot, .vec_dot_tile = neon_f32_dot_tile,
                        .tile_rows = 1, .tile_tokens = 1, .decode_rows = 1 },
    [GGML_TYPE_F16] = WROW(neon_f16_dot),
    [GGML_TYPE_BF16] = WROW(neon_bf16_dot),
    [GGML_TYPE_Q4_0] = { WROW4(neon, q4_0) },
    [GGML_TYPE_Q4_1] = { WROW4(neon, q4_1) },
    [GGML_TYPE_Q5_0] = { WROW4(neon, q5_0) },
    [GGML_TYPE_Q5_1] = { WROW4(neon, q5_1) },
    [GGML_TYPE_IQ4_NL] = { WROW4(neon, iq4_nl) },
    [GGML_TYPE_Q8_0] = { .from_float = neon_from_float_q8_0, WROW4(neon, q8_0) },
    [GGML_TYPE_Q8_1] = { .from_float = neon_from_float_q8_1 },
    [GGML_TYPE_Q8_K] = { .from_float = neon_from_float_q8_K },
    [GGML_TYPE_Q2_K] = WROW(neon_q2_K_dot),
    [GGML_TYPE_Q3_K] = WROW(neon_q3_K_dot),
    [GGML_TYPE_Q4_K] = WROW(neon_q4_K_dot),
    [GGML_TYPE_Q5_K] = WROW(neon_q5_K_dot),
    [GGML_TYPE_Q6_K] = WROW(neon_q6_K_dot),
};

/* ---------------------------------------------------------------- dotprod */

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif

#define NEON_NAME(x) dotprod_##x
#define DOT_S8(acc, a, b) vdotq_s32(acc, a, b)
#include "quant_neon.h"
NEON_TILE(dotprod_q2_K_dot)
NEON_TILE(dotprod_q3_K_dot)
NEON_TILE(dotprod_q4_K_dot)
NEON_TILE(dotprod_q5_K_dot)
NEON_TILE(dotprod_q6_K_dot)
#undef NEON_TILE
#undef NEON_NAME
#undef DOT_S8

/* The float dots and the q8_1 / q8_K quantizers have no integer dot products:
 * the dotprod level keeps the NEON rows for them (quant.c falls back per
 * type). q8_0 is a weight type too, so its row carries the NEON quantizer. */
const quant_kernels quant_kernels_dotprod[GGML_TYPE_COUNT] = {
    [GGML_TYPE_Q4_0] = { WROW4(dotprod, q4_0) },
    [GGML_TYPE_Q4_1] = { WROW4(dotprod, q4_1) },
    [GGML_TYPE_Q5_0] = { WROW4(dotprod, q5_0) },
    [GGML_TYPE_Q5_1] = { WROW4(dotprod, q5_1) },
    [GGML_TYPE_IQ4_NL] = { WROW4(dotprod, iq4_nl) },
    [GGML_TYPE_Q8_0] = { .from_float = neon_from_float_q8_0, WROW4(dotprod, q8_0) },
    [GGML_TYPE_Q2_K] = WROW(dotprod_q2_K_dot),
    [GGML_TYPE_Q3_K] = WROW(dotprod_q3_K_dot),
    [GGML_TYPE_Q4_K] = WROW(dotprod_q4_K_dot),
    [GGML_TYPE_Q5_K] = WROW(dotprod_q5_K_dot),
    [GGML_TYPE_Q6_K] = WROW(dotprod_q6_K_dot),
};
#undef WROW
#undef WROW4

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else /* not aarch64 */

const quant_kernels quant_kernels_neon[GGML_TYPE_COUNT];
const quant_kernels quant_kernels_dotprod[GGML_TYPE_COUNT];

#endif
