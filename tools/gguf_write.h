/* gguf_write.h — writing GGUF files (rotkv synth, rotkv quantize).
 *
 * A file is written under a temporary name beside the destination
 * (DEST.tmp.PID, src/atomic_file.h), flushed to disk and renamed into place by
 * ggw_commit, so a failed or interrupted write never leaves a torn file under
 * DEST and never destroys a file that was there. Numbers are written little-endian, as GGUF
 * stores them. Errors are sticky: after the first failed write every later
 * call is a no-op and ggw_commit reports the failure. */
#ifndef ROTKV_GGUF_WRITE_H
#define ROTKV_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "atomic_file.h"
#include "gguf.h"

typedef struct {
    atomic_file af;
    FILE *fp;       /* af.fp while open */
    uint64_t pos;   /* bytes written so far */
    uint32_t align; /* data alignment (general.alignment; 32 by default) */
    bool ok;
} ggw;

/* Opens DEST.tmp.PID for writing; false (with a message) on failure. */
bool ggw_open(ggw *w, const char *dest, uint32_t align);
/* Flushes, fsyncs and renames the temporary file to DEST; on any earlier
 * failure removes it instead. Returns whether DEST now holds the new file. */
bool ggw_commit(ggw *w);
/* Removes the temporary file (DEST is untouched). */
void ggw_abort(ggw *w);

void ggw_raw(ggw *w, const void *p, size_t n);
void ggw_u32(ggw *w, uint32_t v);
void ggw_u64(ggw *w, uint64_t v);
void ggw_str(ggw *w, const char *s, size_t n);
/* Zero bytes up to the next multiple of w->align. */
void ggw_pad(ggw *w);

/* The file header: magic, version 3, counts. */
void ggw_header(ggw *w, uint64_t n_tensors, uint64_t n_kv);
/* Metadata pairs. */
void ggw_kv_u32(ggw *w, const char *key, uint32_t v);
void ggw_kv_f32(ggw *w, const char *key, float v);
void ggw_kv_str(ggw *w, const char *key, const char *v);
/* Re-serializes a pair read by gguf.c (strings, scalars, arrays of scalars or
 * strings). false for nested arrays, which rotkv never needs to copy. */
bool ggw_copy_kv(ggw *w, const gguf_kv *kv);
/* One tensor info record. */
void ggw_tensor_info(ggw *w, const char *name, size_t name_len, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                     uint64_t offset);


/* The weight types rotkv writes: their names ("Q8_0", ...), ggml type ids and
 * llama.cpp's general.file_type values. */
typedef struct {
    const char *name;
    uint32_t type, ftype;
} ggw_file_type;
/* Case-insensitive lookup; NULL if rotkv cannot write that type. */
const ggw_file_type *ggw_file_type_named(const char *name);
/* "F32 F16 ..." for usage messages. */
const char *ggw_file_type_names(void);

#endif
