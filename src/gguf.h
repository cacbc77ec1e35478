/* gguf.h — reader for GGUF v2/v3 model files.
 *
 * The whole file is memory-mapped read-only. Every header field, metadata value
 * and tensor info is validated against the file size before anything points
 * into it, so the rest of the engine can trust what this module returns.
 * Strings returned here point into the mapping and are NOT NUL-terminated.
 */
#ifndef ROTKV_GGUF_H
#define ROTKV_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS 4

/* Metadata value types, as numbered by the GGUF specification. */
enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
};

typedef struct {
    const char *ptr; /* into the mapping; not NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct {
    gguf_str key;
    uint32_t type;     /* enum gguf_value_type */
    uint32_t arr_type; /* element type when type == ARRAY */
    uint64_t arr_n;    /* element count when type == ARRAY */
    const uint8_t *data;   /* scalar value, or first array element */
    gguf_str *strs;        /* arr_n entries when an array of strings, else NULL */
    gguf_str str;          /* the value when type == STRING */
    uint64_t offset;       /* byte offset of this key/value pair in the file */
} gguf_kv;

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims are 1 */
    uint32_t type;              /* ggml type id, see quant.h */
    uint64_t offset;            /* relative to the data section */
    uint64_t nbytes;
    const void *data;           /* into the mapping */
    uint64_t info_offset;       /* byte offset of the tensor info in the file */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset; /* start of tensor data in the file */
    const uint8_t *map;
    uint64_t size;
    bool owns_map;        /* false when opened from a caller's buffer */
} gguf_file;

/* Open and validate a file. On failure returns NULL and writes a message naming
 * the problem (key/tensor name, byte offset) to err. */
gguf_file *gguf_open(const char *path, char *err, size_t errlen);
/* Parse a buffer in memory (used by tests and the fuzzer). The buffer must stay
 * alive as long as the returned handle. */
gguf_file *gguf_open_buffer(const void *buf, size_t size, char *err, size_t errlen);
void gguf_close(gguf_file *f);

const char *gguf_type_name(uint32_t type);
/* Bytes of one value of a scalar metadata type; 0 for strings, arrays and unknown types. */
size_t gguf_scalar_size(uint32_t type);

/* Lookups by key. Return NULL / false when the key is absent or has a type
 * that cannot be converted. Integer getters accept any integer type whose
 * value fits in the requested one. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f32(const gguf_file *f, const char *key, float *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
/* Array accessors: the array's element type must match (ints: any integer type). */
bool gguf_get_arr_str(const gguf_file *f, const char *key, const gguf_str **strs, uint64_t *n);
/* Reads element i of an integer or float array as double. */
bool gguf_arr_get_num(const gguf_kv *kv, uint64_t i, double *out);

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

bool gguf_str_eq(gguf_str s, const char *c);
/* Copies s into buf as a NUL-terminated string, truncated to fit. */
const char *gguf_str_cpy(gguf_str s, char *buf, size_t buflen);

#endif
