/* gguf_writer.h — a small in-memory GGUF writer for tests and fuzz seeds.
 *
 * Header-only (every function is static inline) because the Makefile links
 * only tests/testutil.o into each test program.
 *
 * Two layers:
 *  - gw_*: a growable byte buffer with little-endian primitives (u8 .. f64,
 *    strings, zero padding) and in-place patching of already written bytes.
 *    Use it directly to hand-craft malformed files.
 *  - gb_*: a GGUF builder. Add metadata (every value type, arrays of scalars
 *    and strings; nested arrays by writing the value with gw_* after gb_key)
 *    and tensors, then gb_finish() lays the file out exactly like ggml does:
 *      header | kv pairs | tensor infos | pad to alignment | data (each tensor
 *      at an aligned offset relative to the data section)
 *    and records where every piece landed (kv offsets, tensor info offsets,
 *    the byte positions of each tensor's n_dims / ne / type / offset fields,
 *    data offsets), so tests can corrupt one field precisely and check error
 *    messages against byte offsets.
 */
#ifndef ROTKV_TEST_GGUF_WRITER_H
#define ROTKV_TEST_GGUF_WRITER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

/* ------------------------------------------------------------ byte buffer */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} gw_buf;

static inline uint8_t *gw_grow(gw_buf *b, size_t n) {
    if (n > b->cap - b->len || !b->p) {
        size_t c = b->cap ? b->cap : 256;
        while (c - b->len < n) c *= 2;
        uint8_t *q = realloc(b->p, c);
        if (!q) {
            fprintf(stderr, "gguf_writer: out of memory\n");
            abort();
        }
        b->p = q;
        b->cap = c;
    }
    uint8_t *at = b->p + b->len;
    b->len += n;
    return at;
}

static inline void gw_raw(gw_buf *b, const void *d, size_t n) {
    uint8_t *at = gw_grow(b, n);
    if (n) memcpy(at, d, n);
}
static inline void gw_zeros(gw_buf *b, size_t n) {
    uint8_t *at = gw_grow(b, n);
    if (n) memset(at, 0, n);
}
/* Little-endian stores, independent of the host's byte order. */
static inline void gw_put_le(uint8_t *at, uint64_t v, int n) {
    for (int i = 0; i < n; i++) at[i] = (uint8_t)(v >> (8 * i));
}
static inline void gw_patch_u32(uint8_t *buf, size_t at, uint32_t v) { gw_put_le(buf + at, v, 4); }
static inline void gw_patch_u64(uint8_t *buf, size_t at, uint64_t v) { gw_put_le(buf + at, v, 8); }
static inline uint64_t gw_read_le(const uint8_t *at, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)at[i] << (8 * i);
    return v;
}

static inline void gw_u8(gw_buf *b, uint8_t v) { gw_put_le(gw_grow(b, 1), v, 1); }
static inline void gw_u16(gw_buf *b, uint16_t v) { gw_put_le(gw_grow(b, 2), v, 2); }
static inline void gw_u32(gw_buf *b, uint32_t v) { gw_put_le(gw_grow(b, 4), v, 4); }
static inline void gw_u64(gw_buf *b, uint64_t v) { gw_put_le(gw_grow(b, 8), v, 8); }
static inline void gw_i8(gw_buf *b, int8_t v) { gw_u8(b, (uint8_t)v); }
static inline void gw_i16(gw_buf *b, int16_t v) { gw_u16(b, (uint16_t)v); }
static inline void gw_i32(gw_buf *b, int32_t v) { gw_u32(b, (uint32_t)v); }
static inline void gw_i64(gw_buf *b, int64_t v) { gw_u64(b, (uint64_t)v); }
static inline void gw_f32(gw_buf *b, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    gw_u32(b, u);
}
static inline void gw_f64(gw_buf *b, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    gw_u64(b, u);
}
/* GGUF string: u64 length + bytes (no NUL). */
static inline void gw_strn(gw_buf *b, const char *s, size_t n) {
    gw_u64(b, n);
    gw_raw(b, s, n);
}
static inline void gw_str(gw_buf *b, const char *s) { gw_strn(b, s, strlen(s)); }
/* Zero bytes until len is a multiple of align (align > 0). */
static inline void gw_pad(gw_buf *b, size_t align) { gw_zeros(b, (align - b->len % align) % align); }
/* GGUF header: magic, version, tensor count, kv count. */
static inline void gw_header(gw_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    gw_raw(b, "GGUF", 4);
    gw_u32(b, version);
    gw_u64(b, n_tensors);
    gw_u64(b, n_kv);
}
static inline void gw_free(gw_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Size of one scalar metadata value of this type (0 for string/array/invalid). */
static inline size_t gw_scalar_size(uint32_t type) {
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

/* ----------------------------------------------------------- GGUF builder */

#define GB_HEADER_SIZE 24

typedef struct {
    char name[128];
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint8_t *data; /* owned copy */
    size_t nbytes;
    /* filled by gb_finish (absolute byte positions in the finished file) */
    uint64_t offset;   /* relative to the data section, as written */
    size_t info_at;    /* start of the tensor info (its name's length field) */
    size_t ndims_at, ne_at, type_at, offset_at;
    size_t data_at;    /* start of the tensor's data */
} gb_tensor;

typedef struct {
    uint32_t version;   /* default 3 */
    uint32_t alignment; /* layout alignment used by gb_finish (default 32) */
    bool pad_end;       /* pad after the last tensor's data too (ggml does) */
    gw_buf kv;          /* serialized kv pairs */
    uint64_t n_kv;
    size_t *kv_at;      /* position of each kv in `kv` (absolute = GB_HEADER_SIZE + kv_at[i]) */
    size_t kv_cap;
    gb_tensor *t;
    size_t n_t, t_cap;
    size_t data_offset; /* filled by gb_finish */
    size_t file_len;    /* filled by gb_finish */
} gguf_builder;

static inline void gb_init(gguf_builder *g, uint32_t version) {
    memset(g, 0, sizeof *g);
    g->version = version;
    g->alignment = 32;
}

static inline void gb_free(gguf_builder *g) {
    gw_free(&g->kv);
    free(g->kv_at);
    for (size_t i = 0; i < g->n_t; i++) free(g->t[i].data);
    free(g->t);
    memset(g, 0, sizeof *g);
}

/* Starts a kv pair: writes key and value type; the caller then writes the
 * value into &g->kv with gw_* (this is how nested arrays are made). */
static inline void gb_key(gguf_builder *g, const char *key, uint32_t type) {
    if (g->n_kv == g->kv_cap) {
        g->kv_cap = g->kv_cap ? 2 * g->kv_cap : 16;
        g->kv_at = realloc(g->kv_at, g->kv_cap * sizeof *g->kv_at);
        if (!g->kv_at) abort();
    }
    g->kv_at[g->n_kv++] = g->kv.len;
    gw_str(&g->kv, key);
    gw_u32(&g->kv, type);
}
/* Absolute file offset of kv pair i (valid once the file is laid out by gb_finish). */
static inline size_t gb_kv_offset(const gguf_builder *g, size_t i) { return GB_HEADER_SIZE + g->kv_at[i]; }

static inline void gb_kv_u8(gguf_builder *g, const char *k, uint8_t v) { gb_key(g, k, GGUF_TYPE_UINT8); gw_u8(&g->kv, v); }
static inline void gb_kv_i8(gguf_builder *g, const char *k, int8_t v) { gb_key(g, k, GGUF_TYPE_INT8); gw_i8(&g->kv, v); }
static inline void gb_kv_u16(gguf_builder *g, const char *k, uint16_t v) { gb_key(g, k, GGUF_TYPE_UINT16); gw_u16(&g->kv, v); }
static inline void gb_kv_i16(gguf_builder *g, const char *k, int16_t v) { gb_key(g, k, GGUF_TYPE_INT16); gw_i16(&g->kv, v); }
static inline void gb_kv_u32(gguf_builder *g, const char *k, uint32_t v) { gb_key(g, k, GGUF_TYPE_UINT32); gw_u32(&g->kv, v); }
static inline void gb_kv_i32(gguf_builder *g, const char *k, int32_t v) { gb_key(g, k, GGUF_TYPE_INT32); gw_i32(&g->kv, v); }
static inline void gb_kv_f32(gguf_builder *g, const char *k, float v) { gb_key(g, k, GGUF_TYPE_FLOAT32); gw_f32(&g->kv, v); }
static inline void gb_kv_bool(gguf_builder *g, const char *k, bool v) { gb_key(g, k, GGUF_TYPE_BOOL); gw_u8(&g->kv, v ? 1 : 0); }
static inline void gb_kv_str(gguf_builder *g, const char *k, const char *v) { gb_key(g, k, GGUF_TYPE_STRING); gw_str(&g->kv, v); }
static inline void gb_kv_u64(gguf_builder *g, const char *k, uint64_t v) { gb_key(g, k, GGUF_TYPE_UINT64); gw_u64(&g->kv, v); }
static inline void gb_kv_i64(gguf_builder *g, const char *k, int64_t v) { gb_key(g, k, GGUF_TYPE_INT64); gw_i64(&g->kv, v); }
static inline void gb_kv_f64(gguf_builder *g, const char *k, double v) { gb_key(g, k, GGUF_TYPE_FLOAT64); gw_f64(&g->kv, v); }

/* Array of n scalars; elems is a host array of the matching C type
 * (uint8_t for u8 and bool, int16_t for i16, float for f32, ...). */
static inline void gb_kv_arr(gguf_builder *g, const char *k, uint32_t elem_type, uint64_t n, const void *elems) {
    size_t es = gw_scalar_size(elem_type);
    gb_key(g, k, GGUF_TYPE_ARRAY);
    gw_u32(&g->kv, elem_type);
    gw_u64(&g->kv, n);
    const uint8_t *e = elems;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = 0;
        /* read the host value, write it little-endian */
        switch (es) {
        case 1: { uint8_t x; memcpy(&x, e + i, 1); v = x; break; }
        case 2: { uint16_t x; memcpy(&x, e + 2 * i, 2); v = x; break; }
        case 4: { uint32_t x; memcpy(&x, e + 4 * i, 4); v = x; break; }
        case 8: { uint64_t x; memcpy(&x, e + 8 * i, 8); v = x; break; }
        default: abort();
        }
        gw_put_le(gw_grow(&g->kv, es), v, (int)es);
    }
}

static inline void gb_kv_arr_str(gguf_builder *g, const char *k, uint64_t n, const char *const *strs) {
    gb_key(g, k, GGUF_TYPE_ARRAY);
    gw_u32(&g->kv, GGUF_TYPE_STRING);
    gw_u64(&g->kv, n);
    for (uint64_t i = 0; i < n; i++) gw_str(&g->kv, strs[i]);
}

/* Sets the layout alignment and writes general.alignment (u32). */
static inline void gb_set_alignment(gguf_builder *g, uint32_t a) {
    g->alignment = a;
    gb_kv_u32(g, "general.alignment", a);
}

/* Adds a tensor; data (nbytes) is copied, or zero-filled when data is NULL.
 * ne has n_dims entries (n_dims may be anything, for malformed files; at most
 * GGUF_MAX_DIMS entries are stored, more are written as 1). */
static inline gb_tensor *gb_tensor_add(gguf_builder *g, const char *name, uint32_t n_dims, const uint64_t *ne,
                                       uint32_t type, const void *data, size_t nbytes) {
    if (g->n_t == g->t_cap) {
        g->t_cap = g->t_cap ? 2 * g->t_cap : 16;
        g->t = realloc(g->t, g->t_cap * sizeof *g->t);
        if (!g->t) abort();
    }
    gb_tensor *t = &g->t[g->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    t->type = type;
    t->nbytes = nbytes;
    t->data = calloc(nbytes ? nbytes : 1, 1);
    if (!t->data) abort();
    if (data && nbytes) memcpy(t->data, data, nbytes);
    return t;
}

/* F32 tensor of the given shape; data holds ne0*ne1*... floats (NULL: zeros). */
static inline gb_tensor *gb_tensor_f32(gguf_builder *g, const char *name, uint32_t n_dims, const uint64_t *ne,
                                       const float *data) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++) n *= ne[d];
    gb_tensor *t = gb_tensor_add(g, name, n_dims, ne, 0 /* GGML_TYPE_F32 */, NULL, (size_t)n * 4);
    if (data)
        for (uint64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &data[i], 4);
            gw_put_le(t->data + 4 * i, u, 4);
        }
    return t;
}

/* Lays the file out and returns it (malloc'd, exactly *len bytes; caller frees).
 * Fills the position fields of every tensor and g->data_offset / g->file_len. */
static inline uint8_t *gb_finish(gguf_builder *g, size_t *len) {
    gw_buf b = {0};
    const size_t A = g->alignment ? g->alignment : 32;
    gw_header(&b, g->version, g->n_t, g->n_kv);
    gw_raw(&b, g->kv.p, g->kv.len);
    uint64_t off = 0;
    for (size_t i = 0; i < g->n_t; i++) {
        gb_tensor *t = &g->t[i];
        t->offset = off;
        off += t->nbytes;
        off += (A - off % A) % A;
        t->info_at = b.len;
        gw_str(&b, t->name);
        t->ndims_at = b.len;
        gw_u32(&b, t->n_dims);
        t->ne_at = b.len;
        for (uint32_t d = 0; d < t->n_dims; d++) gw_u64(&b, d < GGUF_MAX_DIMS ? t->ne[d] : 1);
        t->type_at = b.len;
        gw_u32(&b, t->type);
        t->offset_at = b.len;
        gw_u64(&b, t->offset);
    }
    gw_pad(&b, A);
    g->data_offset = b.len;
    for (size_t i = 0; i < g->n_t; i++) {
        gb_tensor *t = &g->t[i];
        t->data_at = b.len;
        gw_raw(&b, t->data, t->nbytes);
        if (i + 1 < g->n_t || g->pad_end) gw_pad(&b, A);
    }
    /* return an exactly sized copy so AddressSanitizer catches any over-read */
    uint8_t *out = malloc(b.len ? b.len : 1);
    if (!out) abort();
    memcpy(out, b.p, b.len);
    *len = g->file_len = b.len;
    gw_free(&b);
    return out;
}

/* Returns a malloc'd, exactly sized copy of buf's first len bytes. */
static inline uint8_t *gw_dup(const void *buf, size_t len) {
    uint8_t *p = malloc(len ? len : 1);
    if (!p) abort();
    if (len) memcpy(p, buf, len);
    return p;
}

/* Writes len bytes to path; returns false on error. */
static inline bool gw_write_file(const char *path, const void *buf, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return false;
    bool ok = fwrite(buf, 1, len, fp) == len;
    return fclose(fp) == 0 && ok;
}

#endif
