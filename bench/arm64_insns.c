/* arm64_insns.c — instructions per block of one weight kernel (vec_dot) at one
 * ISA level, counted by executing it under qemu (docs/performance.md, ARM64):
 * the program quantizes 2 * NB blocks of random data, then runs the level's
 * vec_dot once over NB blocks (argument "1") or 2 * NB blocks ("2"); the
 * difference between the two runs' executed-instruction counts, divided by NB,
 * is the kernel's cost per block (per 32 values for f32/f16/bf16), loop
 * overhead and float steps included.
 *   make CC=aarch64-linux-gnu-gcc && aarch64-linux-gnu-gcc -O2 -std=c11 -D_DEFAULT_SOURCE -Isrc \
 *       -Iinclude bench/arm64_insns.c build-aarch64/librotkv.a -lm -lpthread -o build-aarch64/arm64_insns
 *   sh bench/arm64-insns.sh     (runs it under qemu -one-insn-per-tb -d exec, every kernel, every level)
 * The KV side the same way:
 *   arm64_insns kv CODEC dot|axpy|decode LEVEL 1|2   one row of NB (2 NB) x 32 values: per 32 values
 *   arm64_insns kt dot|axpy|levels LEVEL 1|2         kt4 at head_dim 128, NB (2 NB) rows: per row
 *   arm64_insns attn scores|accum|exp|max LEVEL 1|2  NB (2 NB) calls on a tile of 32 rows, head_dim 128,
 *                                                    4 query heads (exp, max: 32 scores): per call
 *   arm64_insns fwht rot LEVEL 1|2                   NB (2 NB) Walsh–Hadamard transforms of 128 values */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/kv_arch.h"
#include "cpu.h"
#include "kv_cache.h"
#include "kv_transform.h"
#include "arch/ops_arch.h"
#include "quant.h"
#include "rotation.h"

#define NB 64
/* f32/f16/bf16 have 1-value "blocks": count per 32 values instead */
static int64_t block_values(const quant_traits *tr) { return tr->blck_size == 1 ? 32 : tr->blck_size; }
static volatile float g_sink; /* the result, not printed: printf's cost varies with the value */

static float lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int64_t)(*s >> 40) - (1 << 23)) / (1 << 23);
}

/* the KV-side modes (see the top of the file); 0 on success */
static int kv_main(int argc, char **argv) {
    const int kv = !strcmp(argv[1], "kv");
    if (argc != 5 + kv) return 2;
    const int isa = cpu_isa_parse(argv[3 + kv]), reps = (argv[4 + kv][0] == '2' ? 2 : 1) * NB;
    if (isa < 0 || !cpu_isa_supported((cpu_isa)isa)) return 1;
    uint64_t s = 1;
    enum { HD = 128 };
    if (kv) {
        const int t = rotkv_kv_type_from_name(argv[2]);
        const kv_codec *c = t >= 0 ? kv_codec_get_isa((rotkv_kv_type)t, (cpu_isa)isa) : NULL;
        if (!c || !c->kern->dot || (isa > 0 && c->kern == kv_codec_get_isa((rotkv_kv_type)t, CPU_ISA_SCALAR)->kern))
            return 1;
        const int n = 32 * reps;
        float *x = malloc(sizeof(float) * 2 * NB * 32), *q = malloc(sizeof(float) * 2 * NB * 32);
        uint8_t *row = malloc(c->row_bytes(2 * NB * 32) + 64);
        for (int i = 0; i < 2 * NB * 32; i++) x[i] = lcg(&s), q[i] = lcg(&s);
        c->encode(x, row, 2 * NB * 32); /* (the tq codecs' rows of n values are the first values' codes) */
        if (!strcmp(argv[3], "dot")) g_sink = c->kern->dot(row, q, n);
        else if (!strcmp(argv[3], "axpy")) c->kern->axpy(row, 0.5f, q, n);
        else if (!strcmp(argv[3], "decode")) c->kern->decode(row, q, n);
        else return 2;
        g_sink += q[1];
        return 0;
    }
    if (!strcmp(argv[1], "kt")) {
        const kvt_kernels *k = kvt_kernels_at((cpu_isa)isa);
        if (!k) return 1;
        /* (under the trace, log only the kernel: the fit is millions of instructions) */
        enum { NCAL = 256, KHD = 128 };
        float *X = malloc(sizeof(float) * NCAL * KHD), q[KHD], qy[KHD], acc[KHD], y[KHD];
        for (int t = 0; t < NCAL; t++)
            for (int i = 0; i < KHD; i++) X[t * KHD + i] = (1.0f + (float)(i % 7)) * lcg(&s);
        kvt_head h;
        if (kvt_fit(&h, KHD, X, NCAL, NULL, 4 * KHD - 8)) return 1;
        uint8_t *rows = malloc(h.row_bytes * 2 * NB);
        for (int r = 0; r < 2 * NB; r++) kvt_encode(&h, X + (size_t)(r % NCAL) * KHD, rows + (size_t)r * h.row_bytes);
        for (int i = 0; i < KHD; i++) q[i] = lcg(&s), acc[i] = 0.0f;
        k->prep_query(&h, q, qy);
        float sum = 0;
        for (int r = 0; r < reps; r++) {
            const uint8_t *row = rows + (size_t)r * h.row_bytes;
            if (!strcmp(argv[2], "dot")) sum += k->dot(&h, row, qy);
            else if (!strcmp(argv[2], "axpy")) k->axpy(&h, row, 0.25f, acc);
            else if (!strcmp(argv[2], "levels")) sum += k->levels(&h, row, y) + y[3];
            else return 2;
        }
        g_sink = sum + acc[2];
        return 0;
    }
    if (!strcmp(argv[1], "fwht")) {
        const ops_kernels *k = ops_kernels_at((cpu_isa)isa);
        void (*f)(float *, int) = isa == CPU_ISA_SCALAR ? fwht_ref : k ? k->fwht : NULL;
        if (!f) return 1;
        float x[HD];
        for (int i = 0; i < HD; i++) x[i] = lcg(&s);
        for (int r = 0; r < reps; r++) f(x, HD);
        g_sink = x[3];
        return 0;
    }
    if (!strcmp(argv[1], "attn")) {
        const attn_kernels *k = attn_kernels_at((cpu_isa)isa);
        if (!k) return 1;
        enum { NG = 4 };
        float *tile = malloc(sizeof(float) * ATT_TILE_ROWS * HD), *qv = malloc(sizeof(float) * NG * HD);
        float *acc = calloc(NG * HD, sizeof(float)), S[NG * SROW];
        for (int i = 0; i < ATT_TILE_ROWS * HD; i++) tile[i] = lcg(&s);
        for (int i = 0; i < NG * HD; i++) qv[i] = lcg(&s);
        for (int i = 0; i < NG * SROW; i++) S[i] = lcg(&s);
        float sum = 0;
        for (int r = 0; r < reps; r++) {
            if (!strcmp(argv[2], "scores")) k->scores(tile, ATT_BLOCK, HD, qv, NG, NULL, NULL, 0.125f, S);
            else if (!strcmp(argv[2], "accum")) k->accum(tile, ATT_BLOCK, HD, S, NG, acc);
            else if (!strcmp(argv[2], "exp")) /* x = exp(x - 30) stays near e^-30: normal inputs throughout */
                sum += k->exp(S, ATT_BLOCK, 30.0f);
            else if (!strcmp(argv[2], "max")) sum += k->max(S, ATT_BLOCK, -1e30f);
            else return 2;
        }
        g_sink = sum + S[5] + acc[7];
        return 0;
    }
    return 2;
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "kv") || !strcmp(argv[1], "kt") || !strcmp(argv[1], "attn") ||
                     !strcmp(argv[1], "fwht"))) {
        const int rc = kv_main(argc, argv);
        if (rc == 2) fprintf(stderr, "usage: arm64_insns kv CODEC dot|axpy|decode LEVEL 1|2 | kt dot|axpy|levels LEVEL 1|2 | attn scores|accum|exp|max LEVEL 1|2\n");
        if (rc == 1) fprintf(stderr, "no such kernel at that level\n");
        return rc;
    }
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
