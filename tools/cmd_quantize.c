/* cmd_quantize.c — `rotkv quantize`: rewrites a GGUF with its 2-D weight
 * matrices and 3-D expert tensors in another type, as llama-quantize does for
 * one uniform type. Metadata and tensor order are kept (general.file_type is
 * set to the new type); 1-D tensors (norms, biases, rope factors), MoE routers
 * (ffn_gate_inp, kept as llama-quantize keeps them) and matrices whose rows the
 * type's block size does not divide are copied unchanged. Each quantized row is
 * dequantized to f32 with quant.c's reference and re-quantized with the
 * target's reference quantizer. The file is written to a temporary name and
 * renamed into place (gguf_write.h), so a failure leaves OUT as it was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

static void usage(FILE *fp) {
    fprintf(fp, "usage: rotkv quantize -m IN.gguf -o OUT.gguf --type TYPE\n"
                "  TYPE: %s\n"
                "  2-D .weight tensors and 3-D expert tensors are converted; norms, biases, MoE routers\n"
                "  (ffn_gate_inp) and rows the block size does not divide stay as they are. OUT is written to a\n"
                "  temporary file and renamed into place.\n",
                ggw_file_type_names());
}

static bool ends_with(gguf_str s, const char *suffix) {
    const size_t n = strlen(suffix);
    return s.len >= n && !memcmp(s.ptr + s.len - n, suffix, n);
}

/* Whether tensor t is converted to `type`. */
static bool converts(const gguf_tensor *t, uint32_t type) {
    const quant_traits *src = quant_get_traits(t->type), *dst = quant_get_traits(type);
    return (t->n_dims == 2 || t->n_dims == 3) && t->ne[1] > 1 && ends_with(t->name, ".weight") &&
           !ends_with(t->name, "ffn_gate_inp.weight") && src && src->supported &&
           src->dequantize_row && dst && dst->quantize_row && t->ne[0] % (uint64_t)dst->blck_size == 0;
}

static uint64_t out_bytes(const gguf_tensor *t, uint32_t type) {
    if (!converts(t, type)) return t->nbytes;
    uint64_t rows = 1;
    for (uint32_t d = 1; d < t->n_dims; d++) rows *= t->ne[d];
    return quant_row_size(type, (int64_t)t->ne[0]) * rows;
}

static void write_tensor(ggw *w, const gguf_tensor *t, uint32_t type, float *row, void *q) {
    if (!converts(t, type)) {
        ggw_raw(w, t->data, t->nbytes);
        return;
    }
    const quant_traits *src = quant_get_traits(t->type), *dst = quant_get_traits(type);
    const int64_t n = (int64_t)t->ne[0];
    const size_t in_row = quant_row_size(t->type, n), out_row = quant_row_size(type, n);
    for (uint64_t r = 0; r < t->ne[1] * t->ne[2] && w->ok; r++) {
        src->dequantize_row((const uint8_t *)t->data + r * in_row, row, n);
        dst->quantize_row(row, q, n);
        ggw_raw(w, q, out_row);
    }
}

int cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type_name = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "rotkv quantize: option %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) in = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--type")) type_name = v;
        else {
            fprintf(stderr, "rotkv quantize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!in || !out || !type_name) {
        usage(stderr);
        return 2;
    }
    const ggw_file_type *ft = ggw_file_type_named(type_name);
    if (!ft) {
        fprintf(stderr, "rotkv quantize: unknown type '%s' (one of %s)\n", type_name, ggw_file_type_names());
        return 2;
    }
    char err[256];
    gguf_file *f = gguf_open(in, err, sizeof err);
    if (!f) {
        fprintf(stderr, "rotkv quantize: %s\n", err);
        return 1;
    }
    const double t0 = cli_now_ms();
    uint64_t max_ne0 = 1, n_conv = 0, in_size = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (t->ne[0] > max_ne0) max_ne0 = t->ne[0];
        n_conv += converts(t, ft->type);
        in_size += t->nbytes;
    }
    float *row = malloc(sizeof(float) * max_ne0);
    void *q = malloc(quant_row_size(GGML_TYPE_F32, (int64_t)max_ne0));
    const bool has_ftype = gguf_find(f, "general.file_type") != NULL;
    ggw w;
    if (!row || !q || !ggw_open(&w, out, (uint32_t)f->alignment)) {
        if (!row || !q) fprintf(stderr, "rotkv quantize: out of memory\n");
        free(row);
        free(q);
        gguf_close(f);
        return 1;
    }
    ggw_header(&w, f->n_tensors, f->n_kv + !has_ftype);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (gguf_str_eq(f->kv[i].key, "general.file_type")) ggw_kv_u32(&w, "general.file_type", ft->ftype);
        else ggw_copy_kv(&w, &f->kv[i]);
    }
    if (!has_ftype) ggw_kv_u32(&w, "general.file_type", ft->ftype);
    uint64_t offset = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        ggw_tensor_info(&w, t->name.ptr, t->name.len, t->n_dims, t->ne, converts(t, ft->type) ? ft->type : t->type,
                        offset);
        offset += (out_bytes(t, ft->type) + w.align - 1) / w.align * w.align;
    }
    ggw_pad(&w);
    cli_progress prog;
    cli_progress_begin(&prog, "converting tensors");
    for (uint64_t i = 0; i < f->n_tensors && w.ok; i++) {
        write_tensor(&w, &f->tensors[i], ft->type, row, q);
        ggw_pad(&w);
        cli_progress_update(&prog, (double)i + 1, (double)f->n_tensors, "tensors");
    }
    cli_progress_end(&prog);
    const uint64_t size = w.pos;
    const bool ok = ggw_commit(&w);
    if (ok)
        fprintf(stderr, "rotkv quantize: wrote %s: %llu of %llu tensors as %s, %.2f MiB of tensor data -> %.2f MiB file, %.1f s\n",
                out, (unsigned long long)n_conv, (unsigned long long)f->n_tensors, ft->name, (double)in_size / 1048576.0,
                (double)size / 1048576.0, (cli_now_ms() - t0) / 1e3);
    else
        fprintf(stderr, "rotkv quantize: %s was not written\n", out);
    free(row);
    free(q);
    gguf_close(f);
    return ok ? 0 : 1;
}
