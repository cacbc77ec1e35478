/* fuzz_gguf.c — libFuzzer target for the GGUF parser (src/gguf.c).
 *
 * Parses the input with gguf_open_buffer from an exactly sized heap copy (so
 * AddressSanitizer flags any read past the end), and on success exercises
 * everything a caller may touch: every key through every accessor, every
 * array element, every tensor lookup and the first and last byte of every
 * tensor's data. On failure the message must be non-empty and name a byte
 * offset. Build and run: see fuzz/README.md.
 */
#include "fuzz_common.h"
#include "gguf.h"
#include "quant.h"

static volatile uint8_t sink;

/* p[0, n) lies inside buf[0, size) */
static int inside(const uint8_t *buf, size_t size, const void *p, uint64_t n) {
    const uint8_t *q = p;
    return q >= buf && q <= buf + size && n <= (uint64_t)(buf + size - q);
}

static void touch(const void *p, uint64_t n) {
    if (!n) return;
    const volatile uint8_t *q = p;
    sink ^= q[0];
    sink ^= q[n - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_copy(data, size, false);
    char err[256];
    err[0] = 0;
    gguf_file *f = gguf_open_buffer(buf, size, err, sizeof err);
    if (!f) {
        CHECK(err[0] != 0);
        CHECK(strstr(err, "byte offset") != NULL);
        free(buf);
        return 0;
    }
    CHECK(f->version == 2 || f->version == 3);
    CHECK(f->alignment && !(f->alignment & (f->alignment - 1)));
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        CHECK(kv->key.len > 0 && inside(buf, size, kv->key.ptr, kv->key.len));
        touch(kv->key.ptr, kv->key.len);
        char key[512];
        gguf_str_cpy(kv->key, key, sizeof key);
        if (strlen(key) == kv->key.len) { /* findable by C string */
            CHECK(gguf_find(f, key) == kv);
            uint32_t u;
            int64_t i64;
            float fl;
            bool b;
            gguf_str s;
            const gguf_str *ss;
            uint64_t n;
            if (gguf_get_u32(f, key, &u)) sink ^= (uint8_t)u;
            if (gguf_get_i64(f, key, &i64)) sink ^= (uint8_t)i64;
            if (gguf_get_f32(f, key, &fl)) sink ^= (uint8_t)(fl == fl);
            if (gguf_get_bool(f, key, &b)) sink ^= (uint8_t)b;
            if (gguf_get_str(f, key, &s)) {
                CHECK(inside(buf, size, s.ptr, s.len));
                touch(s.ptr, s.len);
            }
            if (gguf_get_arr_str(f, key, &ss, &n)) {
                CHECK(n == kv->arr_n);
                for (uint64_t j = 0; j < n; j++) {
                    CHECK(inside(buf, size, ss[j].ptr, ss[j].len));
                    touch(ss[j].ptr, ss[j].len);
                }
            }
        }
        if (kv->type == GGUF_TYPE_ARRAY) {
            double d;
            for (uint64_t j = 0; j < kv->arr_n && j < 4096; j++)
                if (gguf_arr_get_num(kv, j, &d)) sink ^= (uint8_t)(d == d);
            if (kv->arr_n && gguf_arr_get_num(kv, kv->arr_n - 1, &d)) sink ^= (uint8_t)(d == d);
            CHECK(!gguf_arr_get_num(kv, kv->arr_n, &d));
        }
    }
    CHECK(f->data_offset % f->alignment == 0);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        CHECK(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        const quant_traits *tr = quant_get_traits(t->type);
        CHECK(tr && tr->supported);
        CHECK(t->offset % f->alignment == 0);
        CHECK((const uint8_t *)t->data == buf + f->data_offset + t->offset);
        CHECK(inside(buf, size, t->data, t->nbytes));
        touch(t->data, t->nbytes);
        char name[80];
        gguf_str_cpy(t->name, name, sizeof name);
        if (strlen(name) == t->name.len) CHECK(gguf_find_tensor(f, name) == t);
    }
    gguf_close(f);
    free(buf);
    return 0;
}
