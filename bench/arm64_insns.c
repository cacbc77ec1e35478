/* arm64_insns.c — instructions per block of one weight kernel (vec_dot) at one
 * ISA level, counted by executing it under qemu (docs/performance.md, ARM64):
 * the program quantizes 2 * NB blocks of random data, then runs the level's
 * vec_dot once over NB blocks (argument "1") or 2 * NB blocks ("2"); the
 * difference between the two runs' executed-instruction counts, divided by NB,
 * is the kernel's cost per block (per 32 values for f32/f16/bf16), loop
 * overhead and float steps included.
 *   make CC=aarch64-linux-gnu-gcc && aarch64-linux-gnu-gcc -O2 -std=c11 -D_DEFAULT_SOURCE -Isrc \
 *       -Iinclude bench/arm64_insns.c build-aarch64/librotkv.a -lm -lpthread -o build-aarch64/arm64_insns
 *   sh bench/arm64-insns.sh     (runs it under qemu -one-insn-per-tb -d exec, every kernel, every level) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "quant.h"

#define NB 64
/* f32/f16/bf16 have 1-value "blocks": count per 32 values instead */
static int64_t block_values(const quant_traits *tr) { return tr->blck_size == 1 ? 32 : tr->blck_size; }
static volatile float g_sink; /* the result, not printed: printf's cost varies with the value */

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: arm64_insns TYPE LEVEL 1|2\n");
        return 2;
    }
    uint32_t type = GGML_TYPE_COUNT;
    for (uint32_t t = 0; t < GGML_TYPE_COUNT; t++)
        if (quant_get_traits(t) && !strcmp(quant_type_name(t), argv[1])) type = t;
    const int isa = cpu_isa_parse(argv[2]);
    const quant_traits *tr = type < GGML_TYPE_COUNT ? quant_get_traits(type) : NULL;
    const quant_kernels *k = tr && isa >= 0 ? quant_get_kernels(type, (cpu_isa)isa) : NULL;
    if (!k || !k->vec_dot) {
        fprintf(stderr, "no %s kernel at %s\n", argv[1], argv[2]);
        return 1;
    }
    const int64_t n = 2 * NB * block_values(tr);
    float *x = malloc(sizeof(float) * (size_t)n);
    uint8_t *w = malloc(quant_row_size(type, n));
    uint8_t *a = malloc(quant_row_size(tr->vec_dot_type, n) + sizeof(float) * (size_t)n);
    uint64_t s = 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(s >> 40) - (1 << 23)) / (1 << 23);
    }
    if (tr->quantize_row) tr->quantize_row(x, w, n);
    else for (size_t i = 0; i < quant_row_size(type, n); i++) w[i] = (uint8_t)(i * 37 + 11); /* K-quants: any bytes */
    quant_get_kernels(tr->vec_dot_type, CPU_ISA_SCALAR)->from_float(x, a, n);
    g_sink = k->vec_dot(w, a, (argv[3][0] == '2' ? 2 : 1) * NB * block_values(tr));
    free(x);
    free(w);
    free(a);
    return 0;
}
