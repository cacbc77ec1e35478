/* test_gguf.c — the GGUF parser (src/gguf.c) against files built in memory by
 * tests/gguf_writer.h: valid v2/v3 files with every metadata type, nested
 * arrays and non-default alignments; the accessors and their type rules; and a
 * corpus of broken files (every truncation, seeded random bit flips, huge
 * counts, overflowing dims, bad types/offsets/alignment/magic/version,
 * duplicates) that must each fail with a message naming the problem and its
 * byte offset — never crash or read outside the buffer (run under ASan with
 * `make test-asan`).
 *
 *   ./build/tests/test_gguf                          run the tests
 *   ./build/tests/test_gguf --write-fuzz-seeds DIR   write fuzz seed files to DIR
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "quant.h"
#include "testutil.h"

#define ERRLEN 512

/* ------------------------------------------------------------------ helpers */

/* Parses an exactly sized heap copy of buf (so ASan sees any over-read). */
static gguf_file *parse_copy(const uint8_t *buf, size_t len, uint8_t **copy, char *err) {
    *copy = gw_dup(buf, len);
    err[0] = 0;
    return gguf_open_buffer(*copy, len, err, ERRLEN);
}

/* Expects the parse to fail with a message containing "byte offset", the
 * expected offset (if want_off != SIZE_MAX) and every non-NULL needle. */
static void expect_fail_impl(int line, const uint8_t *buf, size_t len, size_t want_off, const char *n1,
                             const char *n2) {
    char err[ERRLEN];
    uint8_t *copy;
    gguf_file *f = parse_copy(buf, len, &copy, err);
    if (f) {
        gguf_close(f);
        free(copy);
        fail_msg("line %d: a broken file (%zu bytes) was accepted", line, len);
    }
    free(copy);
    bool ok = err[0] && strstr(err, "byte offset");
    if (ok && want_off != SIZE_MAX) {
        char at[64];
        snprintf(at, sizeof at, "(at byte offset %zu)", want_off);
        ok = strstr(err, at) != NULL;
    }
    if (ok && n1) ok = strstr(err, n1) != NULL;
    if (ok && n2) ok = strstr(err, n2) != NULL;
    if (!ok)
        fail_msg("line %d: message \"%s\" lacks \"byte offset\"%s%zu or \"%s\" / \"%s\"", line, err,
                 want_off != SIZE_MAX ? " " : "", want_off != SIZE_MAX ? want_off : 0, n1 ? n1 : "",
                 n2 ? n2 : "");
}
#define EXPECT_FAIL(buf, len, n1, n2) expect_fail_impl(__LINE__, (buf), (len), SIZE_MAX, (n1), (n2))
#define EXPECT_FAIL_AT(buf, len, off, n1, n2) expect_fail_impl(__LINE__, (buf), (len), (off), (n1), (n2))

/* Invariants every successfully parsed file must satisfy. */
static void check_parsed(const gguf_file *f, const uint8_t *buf, size_t len) {
    assert_true(f->version == 2 || f->version == 3);
    assert_true(f->alignment > 0 && (f->alignment & (f->alignment - 1)) == 0);
    assert_ptr_equal(f->map, buf);
    assert_int_equal(f->size, len);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        assert_true(kv->key.len > 0);
        assert_true((const uint8_t *)kv->key.ptr >= buf && kv->key.len <= len - (size_t)((const uint8_t *)kv->key.ptr - buf));
        assert_true(kv->type < GGUF_TYPE_COUNT);
        assert_true(kv->offset < len);
        if (kv->type == GGUF_TYPE_STRING)
            assert_true((const uint8_t *)kv->str.ptr >= buf &&
                        kv->str.len <= len - (size_t)((const uint8_t *)kv->str.ptr - buf));
        else if (kv->type == GGUF_TYPE_ARRAY) {
            size_t es = gw_scalar_size(kv->arr_type);
            if (es) {
                assert_true(kv->data >= buf && kv->arr_n <= (len - (size_t)(kv->data - buf)) / es);
                if (kv->arr_n) {
                    double d;
                    /* first and last element readable (ASan checks the bytes) */
                    if (kv->arr_type != GGUF_TYPE_BOOL) {
                        assert_true(gguf_arr_get_num(kv, 0, &d));
                        assert_true(gguf_arr_get_num(kv, kv->arr_n - 1, &d));
                    }
                }
            }
            if (kv->arr_type == GGUF_TYPE_STRING) {
                assert_non_null(kv->strs);
                for (uint64_t j = 0; j < kv->arr_n; j++)
                    assert_true((const uint8_t *)kv->strs[j].ptr >= buf &&
                                kv->strs[j].len <= len - (size_t)((const uint8_t *)kv->strs[j].ptr - buf));
            }
        } else {
            assert_true(kv->data >= buf && gw_scalar_size(kv->type) <= len - (size_t)(kv->data - buf));
        }
        /* the accessors never crash, whatever the type */
        char key[256];
        gguf_str_cpy(kv->key, key, sizeof key);
        if (strlen(key) == kv->key.len) { /* keys with NULs cannot be looked up by C string */
            uint32_t u; int64_t i64; float fl; bool b; gguf_str s; const gguf_str *ss; uint64_t n;
            assert_non_null(gguf_find(f, key));
            (void)gguf_get_u32(f, key, &u);
            (void)gguf_get_i64(f, key, &i64);
            (void)gguf_get_f32(f, key, &fl);
            (void)gguf_get_bool(f, key, &b);
            (void)gguf_get_str(f, key, &s);
            (void)gguf_get_arr_str(f, key, &ss, &n);
        }
    }
    assert_true(f->data_offset % f->alignment == 0);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        assert_true(t->name.len > 0 && t->name.len < 64);
        assert_true(t->n_dims >= 1 && t->n_dims <= GGUF_MAX_DIMS);
        const quant_traits *tr = quant_get_traits(t->type);
        assert_non_null(tr);
        assert_true(tr->supported);
        uint64_t nel = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            assert_true(t->ne[d] >= 1);
            assert_true(t->ne[d] <= (uint64_t)INT64_MAX / nel);
            nel *= t->ne[d];
        }
        assert_int_equal(t->ne[0] % (uint64_t)tr->blck_size, 0);
        assert_int_equal(t->nbytes, nel / (uint64_t)tr->blck_size * tr->type_size);
        assert_int_equal(t->offset % f->alignment, 0);
        const uint8_t *d = t->data;
        assert_true(d >= buf + f->data_offset);
        assert_ptr_equal(d, buf + f->data_offset + t->offset);
        assert_true(t->nbytes <= len - (size_t)(d - buf));
        if (t->nbytes) { /* touch first and last byte: ASan would flag an over-read */
            volatile uint8_t x = d[0];
            x ^= d[t->nbytes - 1];
            (void)x;
        }
        char name[80];
        gguf_str_cpy(t->name, name, sizeof name);
        if (strlen(name) == t->name.len) assert_ptr_equal(gguf_find_tensor(f, name), t);
    }
}

/* ------------------------------------------------------------------ fixture */

typedef struct {
    gguf_builder g;
    uint8_t *buf;
    size_t len;
} fixture;

static const uint8_t A_U8[] = {1, 2, 255};
static const int8_t A_I8[] = {-1, 2, -128};
static const uint16_t A_U16[] = {0, 65535};
static const int16_t A_I16[] = {-32768, 32767};
static const uint32_t A_U32[] = {7, 4000000000u, 0};
static const int32_t A_I32[] = {-5, 2147483647};
static const float A_F32[] = {0.5f, -2.0f, 1e30f};
static const uint8_t A_BOOL[] = {1, 0, 1};
static const uint64_t A_U64[] = {UINT64_C(1) << 40};
static const int64_t A_I64[] = {-(INT64_C(1) << 50), 3};
static const double A_F64[] = {3.25, -1e300};
static const char *const A_STR[] = {"a", "", "ccc"};

/* Tensor data used by the fixture (patterns so that offsets can be checked). */
static const float T_TOK[3] = {1.0f, 2.0f, 3.0f};

/* Builds a file with every metadata type and a few tensors of different types
 * and ranks. alignment 0: leave general.alignment out (default 32). */
static void make_full(fixture *fx, uint32_t version, uint32_t alignment) {
    gguf_builder *g = &fx->g;
    gb_init(g, version);
    gb_kv_str(g, "general.architecture", "llama");
    if (alignment) gb_set_alignment(g, alignment);
    gb_kv_u8(g, "t.u8", 200);
    gb_kv_i8(g, "t.i8", -100);
    gb_kv_u16(g, "t.u16", 60000);
    gb_kv_i16(g, "t.i16", -30000);
    gb_kv_u32(g, "t.u32", 4000000000u);
    gb_kv_i32(g, "t.i32", -2000000000);
    gb_kv_i32(g, "t.i32pos", 7);
    gb_kv_f32(g, "t.f32", 1.5f);
    gb_kv_bool(g, "t.bool", true);
    gb_kv_bool(g, "t.bool_false", false);
    gb_kv_str(g, "t.str", "hello");
    gb_kv_str(g, "t.str_empty", "");
    gb_kv_u64(g, "t.u64", UINT64_C(5000000000));
    gb_kv_u64(g, "t.u64small", 42);
    gb_kv_u64(g, "t.u64big", UINT64_MAX);
    gb_kv_i64(g, "t.i64", -INT64_C(5000000000));
    gb_kv_i64(g, "t.i64small", 9);
    gb_kv_f64(g, "t.f64", 2.25);
    gb_kv_arr(g, "a.u8", GGUF_TYPE_UINT8, 3, A_U8);
    gb_kv_arr(g, "a.i8", GGUF_TYPE_INT8, 3, A_I8);
    gb_kv_arr(g, "a.u16", GGUF_TYPE_UINT16, 2, A_U16);
    gb_kv_arr(g, "a.i16", GGUF_TYPE_INT16, 2, A_I16);
    gb_kv_arr(g, "a.u32", GGUF_TYPE_UINT32, 3, A_U32);
    gb_kv_arr(g, "a.i32", GGUF_TYPE_INT32, 2, A_I32);
    gb_kv_arr(g, "a.f32", GGUF_TYPE_FLOAT32, 3, A_F32);
    gb_kv_arr(g, "a.bool", GGUF_TYPE_BOOL, 3, A_BOOL);
    gb_kv_arr(g, "a.u64", GGUF_TYPE_UINT64, 1, A_U64);
    gb_kv_arr(g, "a.i64", GGUF_TYPE_INT64, 2, A_I64);
    gb_kv_arr(g, "a.f64", GGUF_TYPE_FLOAT64, 2, A_F64);
    gb_kv_arr_str(g, "a.str", 3, A_STR);
    gb_kv_arr(g, "a.empty", GGUF_TYPE_UINT32, 0, NULL);
    gb_kv_arr_str(g, "a.empty_str", 0, NULL);
    /* [[1, 2, 3], [4]] */
    gb_key(g, "a.nested", GGUF_TYPE_ARRAY);
    gw_u32(&g->kv, GGUF_TYPE_ARRAY);
    gw_u64(&g->kv, 2);
    gw_u32(&g->kv, GGUF_TYPE_UINT32); gw_u64(&g->kv, 3); gw_u32(&g->kv, 1); gw_u32(&g->kv, 2); gw_u32(&g->kv, 3);
    gw_u32(&g->kv, GGUF_TYPE_UINT32); gw_u64(&g->kv, 1); gw_u32(&g->kv, 4);
    /* [["x", "yy"], []] */
    gb_key(g, "a.nested_str", GGUF_TYPE_ARRAY);
    gw_u32(&g->kv, GGUF_TYPE_ARRAY);
    gw_u64(&g->kv, 2);
    gw_u32(&g->kv, GGUF_TYPE_STRING); gw_u64(&g->kv, 2); gw_str(&g->kv, "x"); gw_str(&g->kv, "yy");
    gw_u32(&g->kv, GGUF_TYPE_STRING); gw_u64(&g->kv, 0);
    /* [[[-1, 1]]] */
    gb_key(g, "a.nested3", GGUF_TYPE_ARRAY);
    gw_u32(&g->kv, GGUF_TYPE_ARRAY); gw_u64(&g->kv, 1);
    gw_u32(&g->kv, GGUF_TYPE_ARRAY); gw_u64(&g->kv, 1);
    gw_u32(&g->kv, GGUF_TYPE_INT8); gw_u64(&g->kv, 2); gw_i8(&g->kv, -1); gw_i8(&g->kv, 1);

    uint8_t pattern[68];
    for (int i = 0; i < 68; i++) pattern[i] = (uint8_t)(i * 7 + 1);
    gb_tensor_f32(g, "tok", 1, (uint64_t[]){3}, T_TOK);
    gb_tensor_add(g, "w.f16", 2, (uint64_t[]){4, 2}, GGML_TYPE_F16, pattern, 16);
    gb_tensor_add(g, "w.q8_0", 2, (uint64_t[]){32, 2}, GGML_TYPE_Q8_0, pattern, 68); /* 2 blocks x 34 bytes */
    gb_tensor_f32(g, "t3", 3, (uint64_t[]){2, 2, 2}, NULL);
    gb_tensor_f32(g, "t4", 4, (uint64_t[]){1, 2, 1, 2}, NULL);
    fx->buf = gb_finish(g, &fx->len);
}

static void fixture_free(fixture *fx) {
    free(fx->buf);
    gb_free(&fx->g);
}

/* ------------------------------------------------------------- valid files */

static void check_full(uint32_t version, uint32_t alignment) {
    fixture fx;
    make_full(&fx, version, alignment);
    char err[ERRLEN] = "";
    gguf_file *f = gguf_open_buffer(fx.buf, fx.len, err, sizeof err);
    if (!f) fail_msg("v%u alignment %u: %s", version, alignment, err);
    check_parsed(f, fx.buf, fx.len);
    assert_int_equal(f->version, version);
    assert_int_equal(f->n_kv, fx.g.n_kv);
    assert_int_equal(f->n_tensors, 5);
    assert_int_equal(f->alignment, alignment ? alignment : 32);
    assert_int_equal(f->data_offset, fx.g.data_offset);
    assert_false(f->owns_map);
    for (uint64_t i = 0; i < f->n_kv; i++) assert_int_equal(f->kv[i].offset, gb_kv_offset(&fx.g, i));
    for (size_t i = 0; i < fx.g.n_t; i++) {
        const gb_tensor *w = &fx.g.t[i];
        const gguf_tensor *t = gguf_find_tensor(f, w->name);
        assert_non_null(t);
        assert_ptr_equal(t, &f->tensors[i]);
        assert_int_equal(t->n_dims, w->n_dims);
        for (int d = 0; d < GGUF_MAX_DIMS; d++) assert_int_equal(t->ne[d], w->ne[d]);
        assert_int_equal(t->type, w->type);
        assert_int_equal(t->offset, w->offset);
        assert_int_equal(t->nbytes, w->nbytes);
        assert_int_equal(t->info_offset, w->info_at);
        assert_ptr_equal(t->data, fx.buf + w->data_at);
        assert_int_equal((size_t)((const uint8_t *)t->data - fx.buf) % f->alignment, 0);
        assert_memory_equal(t->data, w->data, w->nbytes);
    }
    float v[3];
    memcpy(v, gguf_find_tensor(f, "tok")->data, sizeof v);
    assert_true(v[0] == 1.0f && v[1] == 2.0f && v[2] == 3.0f);
    assert_null(gguf_find_tensor(f, "to"));
    assert_null(gguf_find_tensor(f, "tok2"));
    gguf_close(f);
    fixture_free(&fx);
}

static void test_valid_v3(void **state) { check_full(3, 0); }
static void test_valid_v2(void **state) { check_full(2, 0); }
static void test_valid_alignments(void **state) {
    const uint32_t al[] = {1, 2, 8, 32, 64, 256, 4096};
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++) {
        check_full(3, al[i]);
        check_full(2, al[i]);
    }
}

static void test_kv_types(void **state) {
    fixture fx;
    make_full(&fx, 3, 64);
    char err[ERRLEN];
    gguf_file *f = gguf_open_buffer(fx.buf, fx.len, err, sizeof err);
    assert_non_null(f);
    static const struct { const char *key; uint32_t type, arr_type; uint64_t arr_n; } want[] = {
        {"t.u8", GGUF_TYPE_UINT8, 0, 0},      {"t.i8", GGUF_TYPE_INT8, 0, 0},
        {"t.u16", GGUF_TYPE_UINT16, 0, 0},    {"t.i16", GGUF_TYPE_INT16, 0, 0},
        {"t.u32", GGUF_TYPE_UINT32, 0, 0},    {"t.i32", GGUF_TYPE_INT32, 0, 0},
        {"t.f32", GGUF_TYPE_FLOAT32, 0, 0},   {"t.bool", GGUF_TYPE_BOOL, 0, 0},
        {"t.str", GGUF_TYPE_STRING, 0, 0},    {"t.u64", GGUF_TYPE_UINT64, 0, 0},
        {"t.i64", GGUF_TYPE_INT64, 0, 0},     {"t.f64", GGUF_TYPE_FLOAT64, 0, 0},
        {"a.u8", GGUF_TYPE_ARRAY, GGUF_TYPE_UINT8, 3},   {"a.i8", GGUF_TYPE_ARRAY, GGUF_TYPE_INT8, 3},
        {"a.u16", GGUF_TYPE_ARRAY, GGUF_TYPE_UINT16, 2}, {"a.i16", GGUF_TYPE_ARRAY, GGUF_TYPE_INT16, 2},
        {"a.u32", GGUF_TYPE_ARRAY, GGUF_TYPE_UINT32, 3}, {"a.i32", GGUF_TYPE_ARRAY, GGUF_TYPE_INT32, 2},
        {"a.f32", GGUF_TYPE_ARRAY, GGUF_TYPE_FLOAT32, 3}, {"a.bool", GGUF_TYPE_ARRAY, GGUF_TYPE_BOOL, 3},
        {"a.u64", GGUF_TYPE_ARRAY, GGUF_TYPE_UINT64, 1}, {"a.i64", GGUF_TYPE_ARRAY, GGUF_TYPE_INT64, 2},
        {"a.f64", GGUF_TYPE_ARRAY, GGUF_TYPE_FLOAT64, 2}, {"a.str", GGUF_TYPE_ARRAY, GGUF_TYPE_STRING, 3},
        {"a.empty", GGUF_TYPE_ARRAY, GGUF_TYPE_UINT32, 0}, {"a.empty_str", GGUF_TYPE_ARRAY, GGUF_TYPE_STRING, 0},
        {"a.nested", GGUF_TYPE_ARRAY, GGUF_TYPE_ARRAY, 2}, {"a.nested_str", GGUF_TYPE_ARRAY, GGUF_TYPE_ARRAY, 2},
        {"a.nested3", GGUF_TYPE_ARRAY, GGUF_TYPE_ARRAY, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const gguf_kv *kv = gguf_find(f, want[i].key);
        if (!kv) fail_msg("key %s not found", want[i].key);
        assert_int_equal(kv->type, want[i].type);
        if (want[i].type == GGUF_TYPE_ARRAY) {
            assert_int_equal(kv->arr_type, want[i].arr_type);
            assert_int_equal(kv->arr_n, want[i].arr_n);
            if (want[i].arr_type == GGUF_TYPE_STRING) assert_non_null(kv->strs);
            else assert_null(kv->strs);
        }
    }
    assert_null(gguf_find(f, "t.u"));
    assert_null(gguf_find(f, "t.u88"));
    assert_null(gguf_find(f, ""));
    /* gguf_find returns the entry whose offset the writer recorded */
    for (size_t i = 0; i < fx.g.n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        char key[128];
        assert_ptr_equal(gguf_find(f, gguf_str_cpy(kv->key, key, sizeof key)), kv);
    }
    gguf_close(f);
    fixture_free(&fx);
}

static void test_accessors(void **state) {
    fixture fx;
    make_full(&fx, 3, 0);
    char err[ERRLEN];
    gguf_file *f = gguf_open_buffer(fx.buf, fx.len, err, sizeof err);
    assert_non_null(f);
    uint32_t u;
    int64_t i64;
    float fl;
    bool b;
    gguf_str s;

    /* u32: any integer type whose value fits */
    assert_true(gguf_get_u32(f, "t.u8", &u)); assert_int_equal(u, 200);
    assert_true(gguf_get_u32(f, "t.u16", &u)); assert_int_equal(u, 60000);
    assert_true(gguf_get_u32(f, "t.u32", &u)); assert_int_equal(u, 4000000000u);
    assert_true(gguf_get_u32(f, "t.i32pos", &u)); assert_int_equal(u, 7);
    assert_true(gguf_get_u32(f, "t.u64small", &u)); assert_int_equal(u, 42);
    assert_true(gguf_get_u32(f, "t.i64small", &u)); assert_int_equal(u, 9);
    assert_false(gguf_get_u32(f, "t.i8", &u));     /* negative */
    assert_false(gguf_get_u32(f, "t.i16", &u));
    assert_false(gguf_get_u32(f, "t.i32", &u));
    assert_false(gguf_get_u32(f, "t.i64", &u));
    assert_false(gguf_get_u32(f, "t.u64", &u));    /* > UINT32_MAX */
    assert_false(gguf_get_u32(f, "t.u64big", &u));
    assert_false(gguf_get_u32(f, "t.f32", &u));    /* not an integer type */
    assert_false(gguf_get_u32(f, "t.f64", &u));
    assert_false(gguf_get_u32(f, "t.bool", &u));
    assert_false(gguf_get_u32(f, "t.str", &u));
    assert_false(gguf_get_u32(f, "a.u32", &u));
    assert_false(gguf_get_u32(f, "missing", &u));

    /* i64 */
    assert_true(gguf_get_i64(f, "t.u8", &i64)); assert_int_equal(i64, 200);
    assert_true(gguf_get_i64(f, "t.i8", &i64)); assert_true(i64 == -100);
    assert_true(gguf_get_i64(f, "t.i16", &i64)); assert_true(i64 == -30000);
    assert_true(gguf_get_i64(f, "t.u32", &i64)); assert_true(i64 == 4000000000);
    assert_true(gguf_get_i64(f, "t.i32", &i64)); assert_true(i64 == -2000000000);
    assert_true(gguf_get_i64(f, "t.u64", &i64)); assert_true(i64 == 5000000000);
    assert_true(gguf_get_i64(f, "t.i64", &i64)); assert_true(i64 == -5000000000);
    assert_false(gguf_get_i64(f, "t.u64big", &i64)); /* > INT64_MAX */
    assert_false(gguf_get_i64(f, "t.f32", &i64));
    assert_false(gguf_get_i64(f, "t.f64", &i64));
    assert_false(gguf_get_i64(f, "t.bool", &i64));
    assert_false(gguf_get_i64(f, "t.str", &i64));
    assert_false(gguf_get_i64(f, "a.i64", &i64));
    assert_false(gguf_get_i64(f, "missing", &i64));

    /* f32: any number, not bool/string/array */
    assert_true(gguf_get_f32(f, "t.f32", &fl)); assert_true(fl == 1.5f);
    assert_true(gguf_get_f32(f, "t.f64", &fl)); assert_true(fl == 2.25f);
    assert_true(gguf_get_f32(f, "t.u8", &fl)); assert_true(fl == 200.0f);
    assert_true(gguf_get_f32(f, "t.i8", &fl)); assert_true(fl == -100.0f);
    assert_true(gguf_get_f32(f, "t.i64", &fl)); assert_true(fl == -5e9f);
    assert_false(gguf_get_f32(f, "t.bool", &fl));
    assert_false(gguf_get_f32(f, "t.str", &fl));
    assert_false(gguf_get_f32(f, "a.f32", &fl));
    assert_false(gguf_get_f32(f, "missing", &fl));

    /* bool: only bool */
    assert_true(gguf_get_bool(f, "t.bool", &b)); assert_true(b);
    assert_true(gguf_get_bool(f, "t.bool_false", &b)); assert_false(b);
    assert_false(gguf_get_bool(f, "t.u8", &b));
    assert_false(gguf_get_bool(f, "t.str", &b));
    assert_false(gguf_get_bool(f, "a.bool", &b));
    assert_false(gguf_get_bool(f, "missing", &b));

    /* str: only string */
    assert_true(gguf_get_str(f, "t.str", &s));
    assert_true(gguf_str_eq(s, "hello"));
    assert_false(gguf_str_eq(s, "hell"));
    assert_false(gguf_str_eq(s, "hello!"));
    assert_true(gguf_get_str(f, "t.str_empty", &s)); assert_int_equal(s.len, 0);
    assert_true(gguf_str_eq(s, ""));
    assert_true(gguf_get_str(f, "general.architecture", &s)); assert_true(gguf_str_eq(s, "llama"));
    assert_false(gguf_get_str(f, "t.u32", &s));
    assert_false(gguf_get_str(f, "a.str", &s));
    assert_false(gguf_get_str(f, "missing", &s));

    /* arrays of strings */
    const gguf_str *ss;
    uint64_t n;
    assert_true(gguf_get_arr_str(f, "a.str", &ss, &n));
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) assert_true(gguf_str_eq(ss[i], A_STR[i]));
    assert_true(gguf_get_arr_str(f, "a.empty_str", &ss, &n)); assert_int_equal(n, 0);
    assert_false(gguf_get_arr_str(f, "a.u32", &ss, &n));
    assert_false(gguf_get_arr_str(f, "a.nested_str", &ss, &n)); /* array of arrays */
    assert_false(gguf_get_arr_str(f, "t.str", &ss, &n));
    assert_false(gguf_get_arr_str(f, "missing", &ss, &n));

    /* numeric array elements */
    double d;
#define ARR_EQ(key, arr)                                                            \
    do {                                                                            \
        const gguf_kv *kv_ = gguf_find(f, key);                                     \
        assert_non_null(kv_);                                                       \
        size_t n_ = sizeof(arr) / sizeof((arr)[0]);                                 \
        for (size_t i_ = 0; i_ < n_; i_++) {                                        \
            assert_true(gguf_arr_get_num(kv_, i_, &d));                             \
            if (d != (double)(arr)[i_]) fail_msg("%s[%zu] = %g, want %g", key, i_, d, (double)(arr)[i_]); \
        }                                                                           \
        assert_false(gguf_arr_get_num(kv_, n_, &d));                                \
        assert_false(gguf_arr_get_num(kv_, UINT64_MAX, &d));                        \
    } while (0)
    ARR_EQ("a.u8", A_U8);
    ARR_EQ("a.i8", A_I8);
    ARR_EQ("a.u16", A_U16);
    ARR_EQ("a.i16", A_I16);
    ARR_EQ("a.u32", A_U32);
    ARR_EQ("a.i32", A_I32);
    ARR_EQ("a.f32", A_F32);
    ARR_EQ("a.bool", A_BOOL);
    ARR_EQ("a.u64", A_U64);
    ARR_EQ("a.i64", A_I64);
    ARR_EQ("a.f64", A_F64);
#undef ARR_EQ
    assert_false(gguf_arr_get_num(gguf_find(f, "a.empty"), 0, &d));
    assert_false(gguf_arr_get_num(gguf_find(f, "a.str"), 0, &d));
    assert_false(gguf_arr_get_num(gguf_find(f, "a.nested"), 0, &d));
    assert_false(gguf_arr_get_num(gguf_find(f, "t.u32"), 0, &d)); /* not an array */
    assert_false(gguf_arr_get_num(NULL, 0, &d));

    /* nested arrays are kept as raw arrays whose elements are arrays */
    const gguf_kv *nested = gguf_find(f, "a.nested");
    uint32_t inner_type = (uint32_t)gw_read_le(nested->data, 4);
    assert_int_equal(inner_type, GGUF_TYPE_UINT32);
    assert_int_equal(gw_read_le(nested->data + 4, 8), 3);

    /* string helpers */
    char small[4];
    assert_true(gguf_get_arr_str(f, "a.str", &ss, &n));
    assert_string_equal(gguf_str_cpy(ss[1], small, sizeof small), ""); /* the empty element */
    assert_string_equal(gguf_str_cpy(ss[2], small, 1), "");              /* room for the NUL only */
    assert_true(gguf_get_str(f, "t.str", &s));
    assert_string_equal(gguf_str_cpy(s, small, sizeof small), "hel");
    char big[16];
    assert_string_equal(gguf_str_cpy(s, big, sizeof big), "hello");
    assert_string_equal(gguf_type_name(GGUF_TYPE_FLOAT32), "f32");
    assert_string_equal(gguf_type_name(GGUF_TYPE_ARRAY), "array");
    assert_string_equal(gguf_type_name(GGUF_TYPE_COUNT), "invalid");
    assert_string_equal(gguf_type_name(UINT32_MAX), "invalid");
    gguf_close(f);
    gguf_close(NULL);
    fixture_free(&fx);
}

/* Files with nothing in them, and no tensors at all. */
static void test_valid_minimal(void **state) {
    gw_buf b = {0};
    gw_header(&b, 3, 0, 0);
    char err[ERRLEN];
    uint8_t *copy;
    gguf_file *f = parse_copy(b.p, b.len, &copy, err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(f->n_kv, 0);
    assert_int_equal(f->n_tensors, 0);
    assert_int_equal(f->alignment, 32);
    assert_null(gguf_find(f, "general.architecture"));
    assert_null(gguf_find_tensor(f, "x"));
    gguf_close(f);
    free(copy);
    gw_free(&b);

    gguf_builder g;
    gb_init(&g, 2);
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    size_t len;
    uint8_t *buf = gb_finish(&g, &len);
    f = parse_copy(buf, len, &copy, err);
    if (!f) fail_msg("%s", err);
    check_parsed(f, copy, len);
    assert_int_equal(f->n_tensors, 0);
    gguf_close(f);
    free(copy);
    free(buf);
    gb_free(&g);
}

/* Nested arrays up to 8 levels are accepted, deeper ones refused by name. */
static void test_nesting_depth(void **state) {
    for (int depth = 1; depth <= 10; depth++) {
        gguf_builder g;
        gb_init(&g, 3);
        gb_key(&g, "deep", GGUF_TYPE_ARRAY);
        for (int i = 1; i < depth; i++) {
            gw_u32(&g.kv, GGUF_TYPE_ARRAY);
            gw_u64(&g.kv, 1);
        }
        gw_u32(&g.kv, GGUF_TYPE_UINT8);
        gw_u64(&g.kv, 1);
        gw_u8(&g.kv, 42);
        size_t len;
        uint8_t *buf = gb_finish(&g, &len);
        if (depth <= 8) {
            char err[ERRLEN];
            uint8_t *copy;
            gguf_file *f = parse_copy(buf, len, &copy, err);
            if (!f) fail_msg("depth %d: %s", depth, err);
            check_parsed(f, copy, len);
            gguf_close(f);
            free(copy);
        } else {
            EXPECT_FAIL_AT(buf, len, GB_HEADER_SIZE + 8 + 4 + 4 + 12 * 8, "'deep'", "nested deeper");
        }
        free(buf);
        gb_free(&g);
    }
}

/* gguf_open on a real file, plus paths that are not GGUF files. */
static void test_open_path(void **state) {
    fixture fx;
    make_full(&fx, 3, 64);
    char path[] = "/tmp/rotkv_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_true(gw_write_file(path, fx.buf, fx.len));
    char err[ERRLEN] = "";
    gguf_file *f = gguf_open(path, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_true(f->owns_map);
    check_parsed(f, f->map, fx.len);
    assert_int_equal(f->n_tensors, 5);
    assert_int_equal(f->data_offset, fx.g.data_offset);
    assert_memory_equal(gguf_find_tensor(f, "w.q8_0")->data, fx.g.t[2].data, 68);
    uint32_t al;
    assert_true(gguf_get_u32(f, "general.alignment", &al));
    assert_int_equal(al, 64);
    gguf_close(f);

    /* truncated on disk: the message starts with the path and gives the offset */
    assert_true(gw_write_file(path, fx.buf, fx.len - 1));
    assert_null(gguf_open(path, err, sizeof err));
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_non_null(strstr(err, "byte offset"));
    assert_non_null(strstr(err, "'t4'"));

    /* too small to hold a header */
    assert_true(gw_write_file(path, fx.buf, 10));
    assert_null(gguf_open(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "too small"));
    assert_true(gw_write_file(path, "", 0));
    assert_null(gguf_open(path, err, sizeof err));
    assert_non_null(strstr(err, "too small"));

    /* bad magic on disk */
    uint8_t *bad = gw_dup(fx.buf, fx.len);
    bad[0] = 'X';
    assert_true(gw_write_file(path, bad, fx.len));
    assert_null(gguf_open(path, err, sizeof err));
    assert_non_null(strstr(err, "bad magic"));
    free(bad);
    unlink(path);

    /* nonexistent path */
    err[0] = 0;
    assert_null(gguf_open(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "cannot open"));
    /* a directory */
    assert_null(gguf_open("/tmp", err, sizeof err));
    assert_non_null(strstr(err, "/tmp"));
    assert_non_null(strstr(err, "not a regular file"));
    fixture_free(&fx);
}

/* ------------------------------------------------------------ broken files */

/* Every proper prefix of a valid file must be refused with a message. */
static void truncations(uint32_t version, uint32_t alignment) {
    fixture fx;
    make_full(&fx, version, alignment);
    for (size_t n = 0; n < fx.len; n++) {
        char err[ERRLEN];
        uint8_t *copy;
        gguf_file *f = parse_copy(fx.buf, n, &copy, err);
        if (f) fail_msg("v%u: prefix of %zu/%zu bytes accepted", version, n, fx.len);
        if (!strstr(err, "byte offset") || !(strstr(err, "truncated") || strstr(err, "exceeds") ||
                                              strstr(err, "impossible") || strstr(err, "outside")))
            fail_msg("v%u: prefix of %zu bytes: unhelpful message \"%s\"", version, n, err);
        free(copy);
    }
    /* the full file still parses */
    char err[ERRLEN];
    uint8_t *copy;
    gguf_file *f = parse_copy(fx.buf, fx.len, &copy, err);
    assert_non_null(f);
    gguf_close(f);
    free(copy);
    fixture_free(&fx);
}

static void test_truncation(void **state) {
    truncations(3, 0);
    truncations(2, 0);
    truncations(3, 64);
    truncations(3, 1);
    /* a few messages name what was cut */
    fixture fx;
    make_full(&fx, 3, 0);
    EXPECT_FAIL_AT(fx.buf, 2, 0, "truncated", "magic");
    EXPECT_FAIL_AT(fx.buf, 6, 4, "truncated", "version");
    EXPECT_FAIL_AT(fx.buf, 12, 8, "truncated", "tensor count");
    EXPECT_FAIL_AT(fx.buf, 20, 16, "truncated", "metadata count");
    /* last tensor's data cut by one byte: names the tensor and its info offset */
    const gb_tensor *last = &fx.g.t[fx.g.n_t - 1];
    EXPECT_FAIL_AT(fx.buf, fx.len - 1, last->info_at, "'t4'", "outside");
    /* cut inside the tensor infos: names the tensor being read */
    EXPECT_FAIL(fx.buf, fx.g.t[1].type_at + 2, "w.f16", "truncated");
    /* cut inside the innermost elements of the last (nested) key */
    size_t kv_last = gb_kv_offset(&fx.g, fx.g.n_kv - 1);
    EXPECT_FAIL_AT(fx.buf, kv_last + 8 + 9 + 4 + 36 + 1, kv_last + 8 + 9 + 4 + 24, "'a.nested3'", "exceeds");
    /* cut inside a scalar value */
    {
        gguf_builder g;
        gb_init(&g, 3);
        gb_kv_u32(&g, "x", 1);
        gb_kv_u64(&g, "t.u64", 5);
        size_t len;
        uint8_t *buf = gb_finish(&g, &len);
        EXPECT_FAIL_AT(buf, gb_kv_offset(&g, 1) + 8 + 5 + 4 + 3, gb_kv_offset(&g, 1) + 8 + 5 + 4, "t.u64 needs 8 bytes",
                       "truncated");
        free(buf);
        gb_free(&g);
    }
    /* cut between the infos and the data section */
    EXPECT_FAIL(fx.buf, fx.g.data_offset - 1, "truncated", "data section");
    fixture_free(&fx);
}

/* Seeded random corruption: every result either parses into something
 * consistent (all data inside the buffer) or fails with a message. */
static void test_bit_flips(void **state) {
    fixture fxs[3];
    make_full(&fxs[0], 3, 0);
    make_full(&fxs[1], 2, 64);
    make_full(&fxs[2], 3, 8);
    uint64_t rng = 0x5eed0123456789ull;
    int parsed = 0, failed = 0;
    const int N = 12000;
    for (int it = 0; it < N; it++) {
        fixture *fx = &fxs[it % 3];
        uint8_t *buf = gw_dup(fx->buf, fx->len);
        size_t len = fx->len;
        /* most bytes are metadata; bias half of the damage to the part before the data */
        size_t region = (test_rand_u64(&rng) & 1) ? fx->g.data_offset : len;
        int mode = (int)(test_rand_u64(&rng) % 4);
        int nflip = 1 + (int)(test_rand_u64(&rng) % 4);
        for (int k = 0; k < nflip; k++) {
            size_t at = (size_t)(test_rand_u64(&rng) % region);
            if (mode == 0 || mode == 1) {
                buf[at] ^= (uint8_t)(1u << (test_rand_u64(&rng) % 8));
            } else if (mode == 2) {
                static const uint8_t special[] = {0x00, 0xff, 0x7f, 0x80, 0x01, 0x40, 0x20};
                buf[at] = special[test_rand_u64(&rng) % sizeof special];
            } else {
                /* overwrite an 8-byte little-endian field with a big value */
                static const uint64_t big[] = {UINT64_MAX, UINT64_MAX - 7, UINT64_C(1) << 63, UINT64_C(1) << 32,
                                               UINT64_MAX / 8 + 1, UINT64_MAX / 12 + 1, 0};
                uint64_t v = big[test_rand_u64(&rng) % (sizeof big / sizeof big[0])];
                if (at + 8 <= len) gw_patch_u64(buf, at, v);
            }
        }
        if (mode == 1 && (test_rand_u64(&rng) & 1)) len = (size_t)(test_rand_u64(&rng) % len);
        uint8_t *exact = gw_dup(buf, len);
        free(buf);
        char err[ERRLEN];
        err[0] = 0;
        gguf_file *f = gguf_open_buffer(exact, len, err, sizeof err);
        if (f) {
            check_parsed(f, exact, len);
            gguf_close(f);
            parsed++;
        } else {
            if (!err[0] || !strstr(err, "byte offset")) fail_msg("iteration %d: failed without a message (\"%s\")", it, err);
            if (memchr(err, '\n', strlen(err))) fail_msg("iteration %d: raw control character in \"%s\"", it, err);
            failed++;
        }
        free(exact);
    }
    print_message("           bit flips: %d parsed, %d refused\n", parsed, failed);
    assert_true(parsed > 0 && failed > 0); /* both outcomes were exercised */
    for (int i = 0; i < 3; i++) fixture_free(&fxs[i]);
}

/* Header-only files with lying counts. */
static void test_huge_counts(void **state) {
    static const uint64_t lies[] = {UINT64_MAX, UINT64_MAX - 1, UINT64_C(1) << 63, UINT64_MAX / 12 + 1,
                                    UINT64_MAX / 24 + 1, UINT64_C(1) << 32, 1000};
    for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        gw_buf b = {0};
        gw_header(&b, 3, 0, lies[i]);
        gw_zeros(&b, 64);
        EXPECT_FAIL_AT(b.p, b.len, 16, "metadata count", NULL);
        gw_free(&b);
        gw_header(&b, 3, lies[i], 0);
        gw_zeros(&b, 64);
        EXPECT_FAIL_AT(b.p, b.len, 8, "tensor count", NULL);
        gw_free(&b);
    }
    /* a count that fits the byte budget but not the contents */
    gw_buf b = {0};
    gw_header(&b, 3, 0, 2);
    gw_str(&b, "k");
    gw_u32(&b, GGUF_TYPE_UINT8);
    gw_u8(&b, 1);
    gw_zeros(&b, 12); /* second key: empty */
    EXPECT_FAIL_AT(b.p, b.len, 24 + 8 + 1 + 4 + 1, "empty metadata key", NULL);
    gw_free(&b);

    /* string lengths near UINT64_MAX: key, value, array element, tensor name */
    static const uint64_t slen[] = {UINT64_MAX, UINT64_MAX - 7, UINT64_MAX - 24, UINT64_C(1) << 63, 1000};
    for (size_t i = 0; i < sizeof slen / sizeof slen[0]; i++) {
        gw_header(&b, 3, 0, 1);
        gw_u64(&b, slen[i]);
        gw_raw(&b, "general.name", 12);
        gw_zeros(&b, 16);
        EXPECT_FAIL_AT(b.p, b.len, 24, "metadata key", "string length");
        gw_free(&b);

        gw_header(&b, 3, 0, 1);
        gw_str(&b, "general.name");
        gw_u32(&b, GGUF_TYPE_STRING);
        gw_u64(&b, slen[i]);
        gw_zeros(&b, 16);
        EXPECT_FAIL_AT(b.p, b.len, 24 + 8 + 12 + 4, "general.name", "string length");
        gw_free(&b);

        gw_header(&b, 3, 0, 1);
        gw_str(&b, "tokenizer.ggml.tokens");
        gw_u32(&b, GGUF_TYPE_ARRAY);
        gw_u32(&b, GGUF_TYPE_STRING);
        gw_u64(&b, 2);
        gw_str(&b, "a");
        gw_u64(&b, slen[i]);
        gw_zeros(&b, 16);
        EXPECT_FAIL_AT(b.p, b.len, 24 + 8 + 21 + 4 + 4 + 8 + 9, "tokenizer.ggml.tokens", "string length");
        gw_free(&b);

        gw_header(&b, 3, 1, 0);
        gw_u64(&b, slen[i]);
        gw_raw(&b, "tok", 3);
        gw_zeros(&b, 40);
        EXPECT_FAIL_AT(b.p, b.len, 24, "tensor name", "string length");
        gw_free(&b);
    }

    /* array counts near UINT64_MAX for every element type, including ones
     * whose byte size (n * elem_size) wraps around to a small number */
    for (uint32_t et = 0; et < GGUF_TYPE_COUNT; et++) {
        size_t es = gw_scalar_size(et);
        /* es > 1: UINT64_MAX / es + 1 is 2^64 / es, whose byte size wraps to exactly 0 */
        uint64_t counts[] = {UINT64_MAX, UINT64_C(1) << 63, es > 1 ? UINT64_MAX / es + 1 : UINT64_C(1) << 62,
                             es > 1 ? UINT64_MAX / es + 2 : UINT64_MAX - 1, 10000};
        for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            gw_header(&b, 3, 0, 1);
            gw_str(&b, "arr");
            gw_u32(&b, GGUF_TYPE_ARRAY);
            gw_u32(&b, et);
            gw_u64(&b, counts[i]);
            gw_zeros(&b, 48);
            EXPECT_FAIL_AT(b.p, b.len, 24 + 8 + 3 + 4, "'arr'", "exceeds");
            gw_free(&b);
            /* the same inside a nested array */
            gw_header(&b, 3, 0, 1);
            gw_str(&b, "arr");
            gw_u32(&b, GGUF_TYPE_ARRAY);
            gw_u32(&b, GGUF_TYPE_ARRAY);
            gw_u64(&b, 1);
            gw_u32(&b, et);
            gw_u64(&b, counts[i]);
            gw_zeros(&b, 48);
            EXPECT_FAIL_AT(b.p, b.len, 24 + 8 + 3 + 4 + 12, "'arr'", "exceeds");
            gw_free(&b);
        }
    }
    /* outer count of a nested array that lies */
    gw_header(&b, 3, 0, 1);
    gw_str(&b, "arr");
    gw_u32(&b, GGUF_TYPE_ARRAY);
    gw_u32(&b, GGUF_TYPE_ARRAY);
    gw_u64(&b, 3);
    gw_u32(&b, GGUF_TYPE_UINT8);
    gw_u64(&b, 1);
    gw_u8(&b, 1);
    gw_zeros(&b, 20);
    EXPECT_FAIL(b.p, b.len, "'arr'", NULL);
    gw_free(&b);
}

/* One tensor with the given dims/type/offset after one kv pair; returns the file. */
static uint8_t *one_tensor(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset, size_t data_bytes,
                           size_t *len, size_t *info_at) {
    gw_buf b = {0};
    gw_header(&b, 3, 1, 1);
    gw_str(&b, "general.architecture");
    gw_u32(&b, GGUF_TYPE_STRING);
    gw_str(&b, "llama");
    *info_at = b.len;
    gw_str(&b, "blk.0.attn_q.weight");
    gw_u32(&b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) gw_u64(&b, ne[d]);
    gw_u32(&b, type);
    gw_u64(&b, offset);
    gw_pad(&b, 32);
    gw_zeros(&b, data_bytes);
    *len = b.len;
    return b.p;
}

static void test_bad_tensor_infos(void **state) {
    size_t len, at;
    uint8_t *buf;
    /* sanity: the helper makes a valid file */
    buf = one_tensor(2, (uint64_t[]){4, 2}, GGML_TYPE_F32, 0, 32, &len, &at);
    {
        char err[ERRLEN];
        uint8_t *copy;
        gguf_file *f = parse_copy(buf, len, &copy, err);
        if (!f) fail_msg("%s", err);
        check_parsed(f, copy, len);
        gguf_close(f);
        free(copy);
    }
    free(buf);

    /* dims that overflow or are zero */
    static const struct { uint32_t n; uint64_t ne[4]; const char *what; } dims[] = {
        {2, {UINT64_C(1) << 32, UINT64_C(1) << 32}, "dimension 1"},
        {1, {UINT64_MAX}, "dimension 0"},
        {1, {UINT64_C(1) << 63}, "dimension 0"},
        {2, {3, INT64_MAX / 2}, "dimension 1"},
        {4, {65536, 65536, 65536, 65536}, "dimension 3"},
        {3, {4, 0, 4}, "dimension 1"},
        {1, {0}, "dimension 0"},
        {2, {UINT64_C(1) << 62, 1}, "byte size overflows"}, /* 2^62 f32 = 2^64 bytes */
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        buf = one_tensor(dims[i].n, dims[i].ne, GGML_TYPE_F32, 0, 64, &len, &at);
        EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", dims[i].what);
        free(buf);
    }
    /* huge but representable: refused because the data is not in the file */
    buf = one_tensor(2, (uint64_t[]){UINT64_C(1) << 30, UINT64_C(1) << 30}, GGML_TYPE_F32, 0, 64, &len, &at);
    EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "outside");
    free(buf);

    /* number of dims */
    static const uint32_t ndims[] = {0, 5, 64, UINT32_MAX};
    for (size_t i = 0; i < sizeof ndims / sizeof ndims[0]; i++) {
        uint64_t ne[5] = {1, 1, 1, 1, 1};
        buf = one_tensor(ndims[i] < 5 ? ndims[i] : 5, ne, GGML_TYPE_F32, 0, 64, &len, &at);
        gw_patch_u32(buf, at + 8 + 19, ndims[i]);
        EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "dimensions");
        free(buf);
    }

    /* unknown and unsupported tensor types */
    static const uint32_t types[] = {4, 5, 9 /* q8_1: known, not readable */, 16, 29, 34, 40, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        buf = one_tensor(1, (uint64_t[]){256}, types[i], 0, 1024, &len, &at);
        EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "unsupported tensor type");
        free(buf);
    }
    /* block-quantized row length not a multiple of the block */
    buf = one_tensor(2, (uint64_t[]){33, 2}, GGML_TYPE_Q8_0, 0, 128, &len, &at);
    EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "block size");
    free(buf);
    buf = one_tensor(1, (uint64_t[]){128}, GGML_TYPE_Q4_K, 0, 1024, &len, &at);
    EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "block size");
    free(buf);

    /* unaligned and out-of-range offsets */
    static const uint64_t bad_off[] = {4, 1, 31, 33, UINT64_MAX};
    for (size_t i = 0; i < sizeof bad_off / sizeof bad_off[0]; i++) {
        buf = one_tensor(1, (uint64_t[]){8}, GGML_TYPE_F32, bad_off[i], 64, &len, &at);
        EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "not a multiple of the alignment");
        free(buf);
    }
    static const uint64_t far_off[] = {64, 96, UINT64_C(1) << 40, UINT64_MAX - 31, UINT64_MAX - 63};
    for (size_t i = 0; i < sizeof far_off / sizeof far_off[0]; i++) {
        buf = one_tensor(1, (uint64_t[]){8}, GGML_TYPE_F32, far_off[i], 64, &len, &at);
        EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "outside");
        free(buf);
    }
    /* exactly at the end is fine; one element more is not */
    buf = one_tensor(1, (uint64_t[]){8}, GGML_TYPE_F32, 32, 64, &len, &at);
    {
        char err[ERRLEN];
        uint8_t *copy;
        gguf_file *f = parse_copy(buf, len, &copy, err);
        if (!f) fail_msg("%s", err);
        assert_ptr_equal(f->tensors[0].data, copy + len - 32);
        gguf_close(f);
        free(copy);
    }
    free(buf);
    buf = one_tensor(1, (uint64_t[]){9}, GGML_TYPE_F32, 32, 64, &len, &at);
    EXPECT_FAIL_AT(buf, len, at, "'blk.0.attn_q.weight'", "outside");
    free(buf);

    /* names: empty, too long (ggml allows 63 bytes) */
    {
        gw_buf b = {0};
        gw_header(&b, 3, 1, 0);
        gw_str(&b, "");
        gw_u32(&b, 1); gw_u64(&b, 1); gw_u32(&b, 0); gw_u64(&b, 0);
        gw_pad(&b, 32);
        gw_zeros(&b, 32);
        EXPECT_FAIL_AT(b.p, b.len, 24, "empty tensor name", NULL);
        gw_free(&b);
        char name[80];
        for (int n = 62; n <= 64; n++) {
            memset(name, 'n', (size_t)n);
            name[n] = 0;
            gw_header(&b, 3, 1, 0);
            gw_str(&b, name);
            gw_u32(&b, 1); gw_u64(&b, 1); gw_u32(&b, 0); gw_u64(&b, 0);
            gw_pad(&b, 32);
            gw_zeros(&b, 32);
            if (n < 64) {
                char err[ERRLEN];
                uint8_t *copy;
                gguf_file *f = parse_copy(b.p, b.len, &copy, err);
                if (!f) fail_msg("name of %d bytes: %s", n, err);
                assert_non_null(gguf_find_tensor(f, name));
                gguf_close(f);
                free(copy);
            } else {
                EXPECT_FAIL_AT(b.p, b.len, 24, "name longer", NULL);
            }
            gw_free(&b);
        }
    }
}

static void test_duplicates(void **state) {
    gguf_builder g;
    gb_init(&g, 3);
    gb_kv_str(&g, "general.name", "a");
    gb_kv_u32(&g, "x", 1);
    gb_kv_str(&g, "general.name", "b");
    size_t len;
    uint8_t *buf = gb_finish(&g, &len);
    EXPECT_FAIL_AT(buf, len, gb_kv_offset(&g, 2), "duplicate metadata key 'general.name'", NULL);
    free(buf);
    gb_free(&g);

    /* same key with a different type is still a duplicate */
    gb_init(&g, 3);
    gb_kv_u32(&g, "llama.block_count", 1);
    gb_kv_u64(&g, "llama.block_count", 1);
    buf = gb_finish(&g, &len);
    EXPECT_FAIL_AT(buf, len, gb_kv_offset(&g, 1), "duplicate metadata key 'llama.block_count'", NULL);
    free(buf);
    gb_free(&g);

    /* keys that share a prefix are not duplicates */
    gb_init(&g, 3);
    gb_kv_u32(&g, "a.b", 1);
    gb_kv_u32(&g, "a.bc", 2);
    gb_kv_u32(&g, "a", 3);
    buf = gb_finish(&g, &len);
    {
        char err[ERRLEN];
        uint8_t *copy;
        gguf_file *f = parse_copy(buf, len, &copy, err);
        if (!f) fail_msg("%s", err);
        uint32_t v;
        assert_true(gguf_get_u32(f, "a.bc", &v)); assert_int_equal(v, 2);
        assert_true(gguf_get_u32(f, "a", &v)); assert_int_equal(v, 3);
        gguf_close(f);
        free(copy);
    }
    free(buf);
    gb_free(&g);

    gb_init(&g, 3);
    gb_tensor_f32(&g, "output.weight", 1, (uint64_t[]){4}, NULL);
    gb_tensor_f32(&g, "token_embd.weight", 1, (uint64_t[]){4}, NULL);
    gb_tensor_f32(&g, "output.weight", 1, (uint64_t[]){8}, NULL);
    buf = gb_finish(&g, &len);
    EXPECT_FAIL_AT(buf, len, g.t[2].info_at, "duplicate tensor name 'output.weight'", NULL);
    free(buf);
    gb_free(&g);
}

static void test_bad_header(void **state) {
    fixture fx;
    make_full(&fx, 3, 0);
    uint8_t *buf = gw_dup(fx.buf, fx.len);
    static const char *const magics[] = {"GGUG", "FUGG", "ggml", "\0\0\0\0", "GGJT"};
    for (size_t i = 0; i < sizeof magics / sizeof magics[0]; i++) {
        memcpy(buf, magics[i], 4);
        EXPECT_FAIL_AT(buf, fx.len, 0, "bad magic", NULL);
    }
    memcpy(buf, "GGUF", 4);
    gw_patch_u32(buf, 4, 1);
    EXPECT_FAIL_AT(buf, fx.len, 4, "version 1", "not supported");
    static const uint32_t versions[] = {0, 4, 5, 0xffff, UINT32_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        gw_patch_u32(buf, 4, versions[i]);
        char want[32];
        snprintf(want, sizeof want, "version %u", versions[i]);
        EXPECT_FAIL_AT(buf, fx.len, 4, "unsupported GGUF", want);
    }
    /* a big-endian v3 / v2 file: version field reads 0x03000000 */
    gw_patch_u32(buf, 4, 0x03000000u);
    EXPECT_FAIL_AT(buf, fx.len, 4, "big-endian", NULL);
    gw_patch_u32(buf, 4, 0x02000000u);
    EXPECT_FAIL_AT(buf, fx.len, 4, "big-endian", NULL);
    /* a whole big-endian header (counts byte-swapped too) */
    gw_buf b = {0};
    gw_raw(&b, "GGUF", 4);
    gw_raw(&b, "\0\0\0\3", 4);
    gw_raw(&b, "\0\0\0\0\0\0\0\1", 8);
    gw_raw(&b, "\0\0\0\0\0\0\0\2", 8);
    gw_zeros(&b, 64);
    EXPECT_FAIL_AT(b.p, b.len, 4, "big-endian", NULL);
    gw_free(&b);
    free(buf);

    /* the small error buffer and no error buffer at all */
    buf = gw_dup(fx.buf, 10);
    char small[16];
    memset(small, 'x', sizeof small);
    assert_null(gguf_open_buffer(buf, 10, small, sizeof small));
    assert_true(memchr(small, 0, sizeof small) != NULL);
    assert_null(gguf_open_buffer(buf, 10, NULL, 0));
    assert_null(gguf_open_buffer(buf, 0, NULL, 0));
    free(buf);
    fixture_free(&fx);
}

static void test_bad_alignment(void **state) {
    static const uint32_t bad[] = {0, 3, 48, 96, 0x80000001u, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gguf_builder g;
        gb_init(&g, 3);
        gb_kv_str(&g, "general.name", "x");
        gb_kv_u32(&g, "general.alignment", bad[i]);
        gb_tensor_f32(&g, "t", 1, (uint64_t[]){8}, NULL);
        size_t len;
        uint8_t *buf = gb_finish(&g, &len);
        EXPECT_FAIL_AT(buf, len, gb_kv_offset(&g, 1), "general.alignment", "power of two");
        free(buf);
        gb_free(&g);
    }
    /* wrong types */
    for (int k = 0; k < 5; k++) {
        gguf_builder g;
        gb_init(&g, 3);
        switch (k) {
        case 0: gb_kv_u64(&g, "general.alignment", 32); break;
        case 1: gb_kv_i32(&g, "general.alignment", 32); break;
        case 2: gb_kv_str(&g, "general.alignment", "32"); break;
        case 3: gb_kv_u16(&g, "general.alignment", 32); break;
        default: gb_kv_arr(&g, "general.alignment", GGUF_TYPE_UINT32, 1, (uint32_t[]){32}); break;
        }
        gb_tensor_f32(&g, "t", 1, (uint64_t[]){8}, NULL);
        size_t len;
        uint8_t *buf = gb_finish(&g, &len);
        EXPECT_FAIL_AT(buf, len, GB_HEADER_SIZE, "general.alignment", "must be u32");
        free(buf);
        gb_free(&g);
    }
    /* a tensor aligned to 32 in a file that declares 64 */
    gguf_builder g;
    gb_init(&g, 3);
    gb_kv_u32(&g, "general.alignment", 64);
    g.alignment = 32; /* lay out with the wrong alignment */
    gb_tensor_f32(&g, "a", 1, (uint64_t[]){8}, NULL);
    gb_tensor_f32(&g, "b", 1, (uint64_t[]){8}, NULL);
    size_t len;
    uint8_t *buf = gb_finish(&g, &len);
    EXPECT_FAIL_AT(buf, len, g.t[1].info_at, "'b'", "alignment 64");
    free(buf);
    gb_free(&g);
}

static void test_bad_kv(void **state) {
    gw_buf b = {0};
    static const uint32_t bad_types[] = {13, 14, 255, 0x80000000u, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        gw_header(&b, 3, 0, 1);
        gw_str(&b, "some.key");
        gw_u32(&b, bad_types[i]);
        gw_zeros(&b, 16);
        EXPECT_FAIL_AT(b.p, b.len, 24, "'some.key'", "invalid value type");
        gw_free(&b);
        gw_header(&b, 3, 0, 1);
        gw_str(&b, "some.key");
        gw_u32(&b, GGUF_TYPE_ARRAY);
        gw_u32(&b, bad_types[i]);
        gw_u64(&b, 1);
        gw_zeros(&b, 16);
        EXPECT_FAIL_AT(b.p, b.len, 24 + 16 + 4, "'some.key'", "invalid array element type");
        gw_free(&b);
        /* inside a nested array */
        gw_header(&b, 3, 0, 1);
        gw_str(&b, "some.key");
        gw_u32(&b, GGUF_TYPE_ARRAY);
        gw_u32(&b, GGUF_TYPE_ARRAY);
        gw_u64(&b, 1);
        gw_u32(&b, bad_types[i]);
        gw_u64(&b, 1);
        gw_zeros(&b, 16);
        EXPECT_FAIL_AT(b.p, b.len, 24 + 16 + 4 + 12, "'some.key'", "invalid array element type");
        gw_free(&b);
    }
    /* empty key */
    gw_header(&b, 3, 0, 1);
    gw_str(&b, "");
    gw_u32(&b, GGUF_TYPE_UINT8);
    gw_u8(&b, 0);
    EXPECT_FAIL_AT(b.p, b.len, 24, "empty metadata key", NULL);
    gw_free(&b);
    /* control characters in a key are not copied raw into the message */
    gw_header(&b, 3, 0, 1);
    gw_str(&b, "bad\nkey\x1b");
    gw_u32(&b, 99);
    gw_zeros(&b, 8);
    EXPECT_FAIL(b.p, b.len, "'bad?key?'", "invalid value type 99");
    gw_free(&b);
    /* a key with a NUL byte inside */
    gw_header(&b, 3, 0, 1);
    gw_strn(&b, "ab\0cd", 5);
    gw_u32(&b, 77);
    gw_zeros(&b, 8);
    EXPECT_FAIL(b.p, b.len, "'ab'", "invalid value type 77");
    gw_free(&b);
}

/* ---------------------------------------------------------- fuzz seeds */

static int write_seeds(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 1;
    }
    int rc = 0;
    char path[4096];
    size_t len;
#define SEED(name, buf, n)                                                       \
    do {                                                                         \
        snprintf(path, sizeof path, "%s/%s", dir, name);                         \
        if (!gw_write_file(path, buf, n)) { perror(path); rc = 1; }              \
        else printf("%s: %zu bytes\n", path, (size_t)(n));                       \
    } while (0)
    fixture fx;
    make_full(&fx, 3, 0);
    SEED("full_v3.gguf", fx.buf, fx.len);
    fixture_free(&fx);
    make_full(&fx, 2, 64);
    SEED("full_v2_align64.gguf", fx.buf, fx.len);
    fixture_free(&fx);

    /* a tiny vocab-only llama tokenizer */
    gguf_builder g;
    gb_init(&g, 3);
    gb_kv_str(&g, "general.architecture", "llama");
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "\u2581a", "b", "<0x0A>"};
    float scores[6] = {0, 0, 0, -1, -2, -3};
    int32_t ttype[6] = {2, 3, 3, 1, 1, 6};
    gb_kv_arr_str(&g, "tokenizer.ggml.tokens", 6, toks);
    gb_kv_arr(&g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, 6, scores);
    gb_kv_arr(&g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, 6, ttype);
    gb_kv_u32(&g, "tokenizer.ggml.bos_token_id", 1);
    gb_kv_u32(&g, "tokenizer.ggml.eos_token_id", 2);
    uint8_t *buf = gb_finish(&g, &len);
    SEED("vocab_only.gguf", buf, len);
    free(buf);
    gb_free(&g);

    /* one tensor of each of a few quantized types, alignment 16 */
    gb_init(&g, 3);
    gb_set_alignment(&g, 16);
    static const uint32_t qt[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q4_0, GGML_TYPE_Q8_0,
                                  GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    for (size_t i = 0; i < sizeof qt / sizeof qt[0]; i++) {
        const quant_traits *tr = quant_get_traits(qt[i]);
        char name[32];
        snprintf(name, sizeof name, "t.%s", tr->name);
        uint64_t ne = (uint64_t)tr->blck_size;
        gb_tensor_add(&g, name, 1, &ne, qt[i], NULL, tr->type_size);
    }
    buf = gb_finish(&g, &len);
    SEED("quant_types.gguf", buf, len);
    free(buf);
    gb_free(&g);

    /* deeply nested arrays */
    gb_init(&g, 3);
    gb_key(&g, "deep", GGUF_TYPE_ARRAY);
    for (int i = 0; i < 7; i++) {
        gw_u32(&g.kv, GGUF_TYPE_ARRAY);
        gw_u64(&g.kv, 1);
    }
    gw_u32(&g.kv, GGUF_TYPE_STRING);
    gw_u64(&g.kv, 2);
    gw_str(&g.kv, "x");
    gw_str(&g.kv, "yz");
    buf = gb_finish(&g, &len);
    SEED("nested.gguf", buf, len);
    free(buf);
    gb_free(&g);

    gw_buf b = {0};
    gw_header(&b, 3, 0, 0);
    SEED("empty.gguf", b.p, b.len);
    gw_free(&b);
#undef SEED
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-fuzz-seeds") == 0) return write_seeds(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v3),
        cmocka_unit_test(test_valid_v2),
        cmocka_unit_test(test_valid_alignments),
        cmocka_unit_test(test_valid_minimal),
        cmocka_unit_test(test_kv_types),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_nesting_depth),
        cmocka_unit_test(test_open_path),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bit_flips),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_bad_tensor_infos),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_bad_kv),
    };
    return cmocka_run_group_tests_name("gguf", tests, NULL, NULL);
}
