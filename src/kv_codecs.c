/* kv_codecs.c — the KV codec traits table: one row per rotkv_kv_type.
 * Full-precision codecs live here; quantized ones in their own sections. */
#include <string.h>

#include "fp16.h"
#include "kv_cache.h"

/* ------------------------------------------------------------ f32 */

static size_t f32_row_bytes(int n) { return (size_t)n * 4; }
static void f32_encode(const float *x, void *dst, int n) { memcpy(dst, x, (size_t)n * sizeof(float)); }
static void f32_decode(const void *src, float *x, int n) { memcpy(x, src, (size_t)n * sizeof(float)); }
static float f32_dot(const void *src, const float *q, int n) {
    const float *k = src;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += k[i] * q[i];
    return s;
}
static void f32_axpy(const void *src, float w, float *out, int n) {
    const float *v = src;
    for (int i = 0; i < n; i++) out[i] += w * v[i];
}

/* ------------------------------------------------------------ f16 */

static size_t h16_row_bytes(int n) { return (size_t)n * 2; }
static void f16_encode(const float *x, void *dst, int n) {
    uint16_t *h = dst;
    for (int i = 0; i < n; i++) h[i] = fp32_to_fp16(x[i]);
}
static void f16_decode(const void *src, float *x, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) x[i] = fp16_to_fp32(h[i]);
}
static float f16_dot(const void *src, const float *q, int n) {
    const uint16_t *h = src;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += fp16_to_fp32(h[i]) * q[i];
    return s;
}
static void f16_axpy(const void *src, float w, float *out, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) out[i] += w * fp16_to_fp32(h[i]);
}

/* ------------------------------------------------------------ bf16 */

static void bf16_encode(const float *x, void *dst, int n) {
    uint16_t *h = dst;
    for (int i = 0; i < n; i++) h[i] = fp32_to_bf16(x[i]);
}
static void bf16_decode(const void *src, float *x, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) x[i] = bf16_to_fp32(h[i]);
}
static float bf16_dot(const void *src, const float *q, int n) {
    const uint16_t *h = src;
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += bf16_to_fp32(h[i]) * q[i];
    return s;
}
static void bf16_axpy(const void *src, float w, float *out, int n) {
    const uint16_t *h = src;
    for (int i = 0; i < n; i++) out[i] += w * bf16_to_fp32(h[i]);
}

/* ------------------------------------------------------------ the table */

static const kv_codec codecs[ROTKV_KV_TYPE_COUNT] = {
    [ROTKV_KV_F32] = {"f32", 1, false, f32_row_bytes, f32_encode, f32_decode, f32_dot, f32_axpy},
    [ROTKV_KV_F16] = {"f16", 1, false, h16_row_bytes, f16_encode, f16_decode, f16_dot, f16_axpy},
    [ROTKV_KV_BF16] = {"bf16", 1, false, h16_row_bytes, bf16_encode, bf16_decode, bf16_dot, bf16_axpy},
};

const kv_codec *kv_codec_get(rotkv_kv_type t) {
    if ((int)t < 0 || t >= ROTKV_KV_TYPE_COUNT || !codecs[t].name) return NULL;
    return &codecs[t];
}

double kv_codec_bits(const kv_codec *c, int n) { return 8.0 * (double)c->row_bytes(n) / n; }

const char *rotkv_kv_type_name(rotkv_kv_type t) {
    const kv_codec *c = kv_codec_get(t);
    return c ? c->name : "unknown";
}

int rotkv_kv_type_from_name(const char *name) {
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++)
        if (codecs[t].name && strcmp(codecs[t].name, name) == 0) return t;
    return -1;
}
