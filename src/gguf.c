/* gguf.c — GGUF v2/v3 parser with full validation.
 *
 * Layout (little-endian):
 *   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv × { string key | u32 type | value }
 *   n_tensors × { string name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
 *   padding to general.alignment (default 32) | tensor data
 * A string is u64 length + bytes; an array is u32 elem type + u64 count + elems.
 *
 * Every read goes through a cursor that checks the remaining byte count first,
 * so a truncated or lying file produces an error message, never an out-of-bounds
 * read. Counts are checked against the bytes left before anything is allocated.
 */
#include "gguf.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant.h"

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NAME 64          /* ggml's GGML_MAX_NAME, including the NUL */
#define GGUF_MAX_ARRAY_DEPTH 8    /* nested arrays deeper than this are refused */

typedef struct {
    const uint8_t *p;
    uint64_t size, pos;
    char *err;
    size_t errlen;
} cursor;

static bool fail(cursor *c, uint64_t at, const char *fmt, ...) {
    if (c->err && c->errlen) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        snprintf(c->err, c->errlen, "%s (at byte offset %llu)", msg, (unsigned long long)at);
    }
    return false;
}

static bool need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return fail(c, c->pos, "file truncated: %s needs %llu bytes, %llu left", what,
                    (unsigned long long)n, (unsigned long long)(c->size - c->pos));
    return true;
}

static bool rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (!need(c, 4, what)) return false;
    memcpy(v, c->p + c->pos, 4);
    c->pos += 4;
    return true;
}

static bool rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (!need(c, 8, what)) return false;
    memcpy(v, c->p + c->pos, 8);
    c->pos += 8;
    return true;
}

static bool rd_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t at = c->pos, len;
    if (!rd_u64(c, &len, what)) return false;
    if (len > c->size - c->pos)
        return fail(c, at, "%s: string length %llu exceeds the %llu bytes left in the file", what,
                    (unsigned long long)len, (unsigned long long)(c->size - c->pos));
    s->ptr = (const char *)(c->p + c->pos);
    s->len = len;
    c->pos += len;
    return true;
}

size_t gguf_scalar_size(uint32_t type) {
    switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_type_name(uint32_t type) {
    static const char *names[GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    return type < GGUF_TYPE_COUNT ? names[type] : "invalid";
}

static void key_for_msg(gguf_str key, char *buf, size_t len) {
    gguf_str_cpy(key, buf, len);
    for (char *q = buf; *q; q++)
        if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f) *q = '?';
}

/* Skips (validates) one value of the given type; used for nested arrays. */
static bool skip_value(cursor *c, uint32_t type, const char *key, int depth) {
    if (type == GGUF_TYPE_STRING) {
        gguf_str s;
        return rd_str(c, &s, key);
    }
    if (type == GGUF_TYPE_ARRAY) {
        uint64_t at = c->pos, n;
        uint32_t et;
        if (depth >= GGUF_MAX_ARRAY_DEPTH)
            return fail(c, at, "key '%s': arrays nested deeper than %d", key, GGUF_MAX_ARRAY_DEPTH);
        if (!rd_u32(c, &et, key) || !rd_u64(c, &n, key)) return false;
        if (et >= GGUF_TYPE_COUNT) return fail(c, at, "key '%s': invalid array element type %u", key, et);
        size_t es = gguf_scalar_size(et);
        if (es) {
            if (n > (c->size - c->pos) / es)
                return fail(c, at, "key '%s': array of %llu %s elements exceeds the file size", key,
                            (unsigned long long)n, gguf_type_name(et));
            c->pos += n * es;
            return true;
        }
        /* strings take >= 8 bytes, arrays >= 12: bound n before looping */
        uint64_t min = et == GGUF_TYPE_STRING ? 8 : 12;
        if (n > (c->size - c->pos) / min)
            return fail(c, at, "key '%s': array count %llu exceeds the file size", key, (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++)
            if (!skip_value(c, et, key, depth + 1)) return false;
        return true;
    }
    size_t sz = gguf_scalar_size(type);
    if (!sz) return fail(c, c->pos, "key '%s': invalid value type %u", key, type);
    if (!need(c, sz, key)) return false;
    c->pos += sz;
    return true;
}

static bool parse_kv(cursor *c, gguf_kv *kv) {
    char key[128];
    kv->offset = c->pos;
    if (!rd_str(c, &kv->key, "metadata key")) return false;
    key_for_msg(kv->key, key, sizeof key);
    if (kv->key.len == 0) return fail(c, kv->offset, "empty metadata key");
    if (!rd_u32(c, &kv->type, key)) return false;
    if (kv->type >= GGUF_TYPE_COUNT)
        return fail(c, kv->offset, "key '%s': invalid value type %u", key, kv->type);
    if (kv->type == GGUF_TYPE_STRING) return rd_str(c, &kv->str, key);
    if (kv->type != GGUF_TYPE_ARRAY) {
        kv->data = c->p + c->pos;
        return skip_value(c, kv->type, key, 0);
    }
    uint64_t at = c->pos;
    if (!rd_u32(c, &kv->arr_type, key) || !rd_u64(c, &kv->arr_n, key)) return false;
    if (kv->arr_type >= GGUF_TYPE_COUNT)
        return fail(c, at, "key '%s': invalid array element type %u", key, kv->arr_type);
    kv->data = c->p + c->pos;
    if (kv->arr_type == GGUF_TYPE_STRING) {
        if (kv->arr_n > (c->size - c->pos) / 8)
            return fail(c, at, "key '%s': array of %llu strings exceeds the file size", key,
                        (unsigned long long)kv->arr_n);
        kv->strs = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(gguf_str));
        if (!kv->strs) return fail(c, at, "key '%s': out of memory for %llu strings", key,
                                   (unsigned long long)kv->arr_n);
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if (!rd_str(c, &kv->strs[i], key)) return false;
        return true;
    }
    c->pos = at;
    return skip_value(c, GGUF_TYPE_ARRAY, key, 0);
}

static bool parse_tensor_info(cursor *c, gguf_tensor *t, uint64_t alignment) {
    char name[GGUF_MAX_NAME + 8];
    t->info_offset = c->pos;
    if (!rd_str(c, &t->name, "tensor name")) return false;
    key_for_msg(t->name, name, sizeof name);
    if (t->name.len == 0) return fail(c, t->info_offset, "empty tensor name");
    if (t->name.len >= GGUF_MAX_NAME)
        return fail(c, t->info_offset, "tensor '%s': name longer than %d bytes", name, GGUF_MAX_NAME - 1);
    if (!rd_u32(c, &t->n_dims, name)) return false;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return fail(c, t->info_offset, "tensor '%s': %u dimensions (1..%d allowed)", name, t->n_dims,
                    GGUF_MAX_DIMS);
    uint64_t nel = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (!rd_u64(c, &t->ne[d], name)) return false;
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX / nel)
            return fail(c, t->info_offset, "tensor '%s': dimension %u = %llu is zero or overflows", name,
                        d, (unsigned long long)t->ne[d]);
        nel *= t->ne[d];
    }
    if (!rd_u32(c, &t->type, name)) return false;
    const quant_traits *tr = quant_get_traits(t->type);
    if (!tr || !tr->supported)
        return fail(c, t->info_offset, "tensor '%s': unsupported tensor type %u (%s)", name, t->type,
                    quant_type_name(t->type));
    if (t->ne[0] % (uint64_t)tr->blck_size)
        return fail(c, t->info_offset, "tensor '%s': row length %llu is not a multiple of the %s block size %d",
                    name, (unsigned long long)t->ne[0], tr->name, tr->blck_size);
    uint64_t blocks = nel / (uint64_t)tr->blck_size;
    if (blocks > UINT64_MAX / tr->type_size)
        return fail(c, t->info_offset, "tensor '%s': byte size overflows", name);
    t->nbytes = blocks * tr->type_size;
    if (!rd_u64(c, &t->offset, name)) return false;
    if (t->offset % alignment)
        return fail(c, t->info_offset, "tensor '%s': data offset %llu is not a multiple of the alignment %llu",
                    name, (unsigned long long)t->offset, (unsigned long long)alignment);
    return true;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kv[i].strs);
    free(f->kv);
    free(f->tensors);
    if (f->owns_map && f->map) munmap((void *)f->map, f->size);
    free(f);
}

typedef struct {
    gguf_str s;
    uint64_t idx;
} named;

static int cmp_named(const void *a, const void *b) {
    const named *x = a, *y = b;
    const uint64_t n = x->s.len < y->s.len ? x->s.len : y->s.len;
    int r = n ? memcmp(x->s.ptr, y->s.ptr, n) : 0;
    if (r) return r;
    if (x->s.len != y->s.len) return x->s.len < y->s.len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Finds, in O(n log n), the smallest index whose name (a gguf_str at name_ofs
 * inside each element) repeats an earlier one; *dup = n if none. False on OOM. */
static bool first_duplicate(const void *elems, size_t elem_size, size_t name_ofs, uint64_t n, uint64_t *dup) {
    *dup = n;
    if (n < 2) return true;
    named *v = malloc(n * sizeof *v);
    if (!v) return false;
    for (uint64_t i = 0; i < n; i++) {
        memcpy(&v[i].s, (const uint8_t *)elems + i * elem_size + name_ofs, sizeof(gguf_str));
        v[i].idx = i;
    }
    qsort(v, n, sizeof *v, cmp_named);
    for (uint64_t i = 1; i < n; i++)
        if (v[i].s.len == v[i - 1].s.len && (v[i].s.len == 0 || !memcmp(v[i].s.ptr, v[i - 1].s.ptr, v[i].s.len)) &&
            v[i].idx < *dup)
            *dup = v[i].idx; /* sorted by index within equal names: v[i] is a later occurrence */
    free(v);
    return true;
}

static bool gguf_parse(gguf_file *f, char *err, size_t errlen) {
    cursor c = {f->map, f->size, 0, err, errlen};
    uint32_t magic;
    if (!rd_u32(&c, &magic, "magic")) return false;
    if (memcmp(f->map, "GGUF", 4) != 0) return fail(&c, 0, "not a GGUF file (bad magic)");
    if (!rd_u32(&c, &f->version, "version")) return false;
    if (f->version == 1) return fail(&c, 4, "GGUF version 1 is not supported (only 2 and 3)");
    if (f->version != 2 && f->version != 3) {
        if (f->version && (f->version & 0xffff) == 0)
            return fail(&c, 4, "GGUF version %u looks big-endian; only little-endian files are supported",
                        f->version);
        return fail(&c, 4, "unsupported GGUF version %u (only 2 and 3)", f->version);
    }
    if (!rd_u64(&c, &f->n_tensors, "tensor count") || !rd_u64(&c, &f->n_kv, "metadata count")) return false;
    /* each kv takes at least 12 bytes (key length + type), each tensor info at least 24 */
    if (f->n_kv > (c.size - c.pos) / 12)
        return fail(&c, 16, "metadata count %llu is impossible for a file of %llu bytes",
                    (unsigned long long)f->n_kv, (unsigned long long)c.size);
    if (f->n_tensors > (c.size - c.pos) / 24)
        return fail(&c, 8, "tensor count %llu is impossible for a file of %llu bytes",
                    (unsigned long long)f->n_tensors, (unsigned long long)c.size);
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->kv || !f->tensors) return fail(&c, 0, "out of memory");
    uint64_t n_kv = f->n_kv;
    f->n_kv = 0; /* count only parsed entries so gguf_close frees the right ones */
    for (uint64_t i = 0; i < n_kv; i++) {
        f->n_kv = i + 1;
        if (!parse_kv(&c, &f->kv[i])) return false;
    }
    uint64_t dup;
    if (!first_duplicate(f->kv, sizeof *f->kv, offsetof(gguf_kv, key), f->n_kv, &dup))
        return fail(&c, 0, "out of memory");
    if (dup < f->n_kv) {
        char key[128];
        key_for_msg(f->kv[dup].key, key, sizeof key);
        return fail(&c, f->kv[dup].offset, "duplicate metadata key '%s'", key);
    }
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_TYPE_UINT32)
            return fail(&c, al->offset, "key 'general.alignment' must be u32, is %s", gguf_type_name(al->type));
        uint32_t a;
        memcpy(&a, al->data, 4);
        if (a == 0 || (a & (a - 1)))
            return fail(&c, al->offset, "key 'general.alignment' = %u is not a power of two", a);
        f->alignment = a;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (!parse_tensor_info(&c, &f->tensors[i], f->alignment)) return false;
    }
    if (!first_duplicate(f->tensors, sizeof *f->tensors, offsetof(gguf_tensor, name), f->n_tensors, &dup))
        return fail(&c, 0, "out of memory");
    if (dup < f->n_tensors) {
        char name[GGUF_MAX_NAME + 8];
        key_for_msg(f->tensors[dup].name, name, sizeof name);
        return fail(&c, f->tensors[dup].info_offset, "duplicate tensor name '%s'", name);
    }
    uint64_t pad = (f->alignment - c.pos % f->alignment) % f->alignment;
    f->data_offset = c.pos + pad;
    if (f->n_tensors == 0) return true;
    if (f->data_offset > f->size)
        return fail(&c, c.pos, "file truncated before the tensor data section");
    uint64_t avail = f->size - f->data_offset;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            char name[GGUF_MAX_NAME + 8];
            key_for_msg(t->name, name, sizeof name);
            return fail(&c, t->info_offset,
                        "tensor '%s': data [%llu, +%llu) lies outside the file's %llu data bytes", name,
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                        (unsigned long long)avail);
        }
        t->data = f->map + f->data_offset + t->offset;
    }
    return true;
}

gguf_file *gguf_open_buffer(const void *buf, size_t size, char *err, size_t errlen) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->map = buf;
    f->size = size;
    if (!gguf_parse(f, err, errlen)) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

gguf_file *gguf_open(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size < 24) {
        snprintf(err, errlen, "%s: file of %lld bytes is too small to be a GGUF file", path,
                 (long long)st.st_size);
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
        return NULL;
    }
    char msg[480];
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(map, (size_t)st.st_size);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->map = map;
    f->size = (uint64_t)st.st_size;
    f->owns_map = true;
    if (!gguf_parse(f, msg, sizeof msg)) {
        snprintf(err, errlen, "%s: %s", path, msg);
        gguf_close(f);
        return NULL;
    }
    return f;
}

/* ------------------------------------------------------------- lookups */

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

const char *gguf_str_cpy(gguf_str s, char *buf, size_t buflen) {
    if (!buflen) return buf;
    size_t n = s.len < buflen - 1 ? (size_t)s.len : buflen - 1;
    if (n) memcpy(buf, s.ptr, n);
    buf[n] = 0;
    return buf;
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (gguf_str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* Reads a numeric scalar at p of the given type as double; false if not numeric. */
static bool num_at(uint32_t type, const uint8_t *p, double *out) {
    union { uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
            float f32; uint64_t u64; int64_t i64; double f64; } v;
    size_t sz = gguf_scalar_size(type);
    if (!sz || type == GGUF_TYPE_BOOL) return false;
    memcpy(&v, p, sz);
    switch (type) {
    case GGUF_TYPE_UINT8: *out = v.u8; break;
    case GGUF_TYPE_INT8: *out = v.i8; break;
    case GGUF_TYPE_UINT16: *out = v.u16; break;
    case GGUF_TYPE_INT16: *out = v.i16; break;
    case GGUF_TYPE_UINT32: *out = v.u32; break;
    case GGUF_TYPE_INT32: *out = v.i32; break;
    case GGUF_TYPE_FLOAT32: *out = v.f32; break;
    case GGUF_TYPE_UINT64: *out = (double)v.u64; break;
    case GGUF_TYPE_INT64: *out = (double)v.i64; break;
    case GGUF_TYPE_FLOAT64: *out = v.f64; break;
    default: return false;
    }
    return true;
}

static bool is_int_type(uint32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_INT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_INT16 ||
           t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || !is_int_type(kv->type)) return false;
    if (kv->type == GGUF_TYPE_UINT64) {
        uint64_t u;
        memcpy(&u, kv->data, 8);
        if (u > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)u;
        return true;
    }
    if (kv->type == GGUF_TYPE_INT64) {
        memcpy(out, kv->data, 8);
        return true;
    }
    double d;
    num_at(kv->type, kv->data, &d);
    *out = (int64_t)d;
    return true;
}

bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    int64_t v;
    if (!gguf_get_i64(f, key, &v) || v < 0 || v > (int64_t)UINT32_MAX) return false;
    *out = (uint32_t)v;
    return true;
}

bool gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv = gguf_find(f, key);
    double d;
    if (!kv || !num_at(kv->type, kv->data, &d)) return false;
    *out = (float)d;
    return true;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_TYPE_BOOL) return false;
    *out = kv->data[0] != 0;
    return true;
}

bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_TYPE_STRING) return false;
    *out = kv->str;
    return true;
}

bool gguf_get_arr_str(const gguf_file *f, const char *key, const gguf_str **strs, uint64_t *n) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING) return false;
    *strs = kv->strs;
    *n = kv->arr_n;
    return true;
}

bool gguf_arr_get_num(const gguf_kv *kv, uint64_t i, double *out) {
    if (!kv || kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_n) return false;
    size_t sz = gguf_scalar_size(kv->arr_type);
    if (!sz) return false;
    if (kv->arr_type == GGUF_TYPE_BOOL) {
        *out = kv->data[i] != 0;
        return true;
    }
    return num_at(kv->arr_type, kv->data + i * sz, out);
}
