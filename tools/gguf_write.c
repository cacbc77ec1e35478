/* gguf_write.c — see gguf_write.h. */
#include "gguf_write.h"
#include "atomic_file.h"
#include "quant.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

bool ggw_open(ggw *w, const char *dest, uint32_t align) {
    memset(w, 0, sizeof *w);
    w->align = align ? align : 32;
    if (!atomic_file_open(&w->af, dest)) {
        fprintf(stderr, "rotkv: cannot write %s.tmp.%ld: %s\n", dest, (long)getpid(), strerror(errno));
        return false;
    }
    w->fp = w->af.fp;
    w->ok = true;
    return true;
}

void ggw_abort(ggw *w) {
    if (w->fp) atomic_file_abort(&w->af);
    w->fp = NULL;
    w->ok = false;
}

bool ggw_commit(ggw *w) {
    if (!w->fp) return false;
    char *dest = strdup(w->af.dest);
    bool ok = atomic_file_commit(&w->af, w->ok);
    if (!ok) fprintf(stderr, "rotkv: failed writing %s: %s\n", dest ? dest : "the output", strerror(errno));
    free(dest);
    w->fp = NULL;
    w->ok = false;
    return ok;
}

void ggw_raw(ggw *w, const void *p, size_t n) {
    if (!w->ok || !n) return;
    if (fwrite(p, 1, n, w->fp) != n) w->ok = false;
    w->pos += n;
}

void ggw_u32(ggw *w, uint32_t v) {
    const uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    ggw_raw(w, b, 4);
}

void ggw_u64(ggw *w, uint64_t v) {
    ggw_u32(w, (uint32_t)v);
    ggw_u32(w, (uint32_t)(v >> 32));
}

void ggw_str(ggw *w, const char *s, size_t n) {
    ggw_u64(w, n);
    ggw_raw(w, s, n);
}

void ggw_pad(ggw *w) {
    static const uint8_t zeros[256];
    uint64_t pad = (w->align - w->pos % w->align) % w->align;
    while (pad) {
        const size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
        ggw_raw(w, zeros, k);
        pad -= k;
    }
}

void ggw_header(ggw *w, uint64_t n_tensors, uint64_t n_kv) {
    ggw_raw(w, "GGUF", 4);
    ggw_u32(w, 3);
    ggw_u64(w, n_tensors);
    ggw_u64(w, n_kv);
}

static void ggw_key(ggw *w, const char *key, uint32_t type) {
    ggw_str(w, key, strlen(key));
    ggw_u32(w, type);
}

void ggw_kv_u32(ggw *w, const char *key, uint32_t v) {
    ggw_key(w, key, GGUF_TYPE_UINT32);
    ggw_u32(w, v);
}

void ggw_kv_f32(ggw *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    ggw_key(w, key, GGUF_TYPE_FLOAT32);
    ggw_u32(w, u);
}

void ggw_kv_str(ggw *w, const char *key, const char *v) {
    ggw_key(w, key, GGUF_TYPE_STRING);
    ggw_str(w, v, strlen(v));
}

bool ggw_copy_kv(ggw *w, const gguf_kv *kv) {
    ggw_str(w, kv->key.ptr, kv->key.len);
    ggw_u32(w, kv->type);
    if (kv->type == GGUF_TYPE_STRING) {
        ggw_str(w, kv->str.ptr, kv->str.len);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        ggw_u32(w, kv->arr_type);
        ggw_u64(w, kv->arr_n);
        if (kv->arr_type == GGUF_TYPE_STRING) {
            for (uint64_t i = 0; i < kv->arr_n; i++) ggw_str(w, kv->strs[i].ptr, kv->strs[i].len);
        } else {
            const size_t es = gguf_scalar_size(kv->arr_type);
            if (!es) return w->ok = false;
            ggw_raw(w, kv->data, es * kv->arr_n);
        }
    } else {
        const size_t es = gguf_scalar_size(kv->type);
        if (!es) return w->ok = false;
        ggw_raw(w, kv->data, es);
    }
    return w->ok;
}

void ggw_tensor_info(ggw *w, const char *name, size_t name_len, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset) {
    ggw_str(w, name, name_len);
    ggw_u32(w, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) ggw_u64(w, ne[d]);
    ggw_u32(w, type);
    ggw_u64(w, offset);
}

static const ggw_file_type k_file_types[] = {
    {"F32", GGML_TYPE_F32, 0},   {"F16", GGML_TYPE_F16, 1},   {"BF16", GGML_TYPE_BF16, 32},
    {"Q8_0", GGML_TYPE_Q8_0, 7}, {"Q5_1", GGML_TYPE_Q5_1, 9}, {"Q5_0", GGML_TYPE_Q5_0, 8},
    {"Q4_1", GGML_TYPE_Q4_1, 3}, {"Q4_0", GGML_TYPE_Q4_0, 2}, {"IQ4_NL", GGML_TYPE_IQ4_NL, 25},
};

const ggw_file_type *ggw_file_type_named(const char *name) {
    for (size_t i = 0; i < sizeof k_file_types / sizeof k_file_types[0]; i++)
        if (!strcasecmp(name, k_file_types[i].name)) return &k_file_types[i];
    return NULL;
}

const char *ggw_file_type_names(void) { return "F32 F16 BF16 Q8_0 Q5_1 Q5_0 Q4_1 Q4_0 IQ4_NL"; }
