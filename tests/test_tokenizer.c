/* test_tokenizer.c — tokenizer against llama.cpp's golden tokenizations, plus
 * detokenization, special tokens, malformed input and load errors. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "tokenizer.h"

/* ------------------------------------------------------------ helpers */

enum { V_TINY, V_LLAMA3, V_QWEN3, N_VOCABS };
static const char *const vocab_names[N_VOCABS] = {"tinystories-656k-f32", "vocab-llama3", "vocab-qwen3"};

typedef struct {
    gguf_file *f;
    tokenizer *tok;
    bool tried;
} vocab;
static vocab vocabs[N_VOCABS];

/* Loads (once) a vocabulary from ../shared/models; skips the test without it. */
static tokenizer *get_vocab(int v) {
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "models/%s.gguf", vocab_names[v]);
    SKIP_WITHOUT_SHARED(path, rel);
    if (!vocabs[v].tried) {
        vocabs[v].tried = true;
        char err[512] = "";
        vocabs[v].f = gguf_open(path, err, sizeof err);
        if (!vocabs[v].f) fail_msg("gguf_open(%s): %s", path, err);
        vocabs[v].tok = tokenizer_load(vocabs[v].f, err, sizeof err);
        if (!vocabs[v].tok) fail_msg("tokenizer_load(%s): %s", path, err);
    }
    if (!vocabs[v].tok) fail_msg("%s did not load", vocab_names[v]);
    return vocabs[v].tok;
}

static int free_vocabs(void **state) {
    (void)state;
    for (int v = 0; v < N_VOCABS; v++) {
        tokenizer_free(vocabs[v].tok);
        gguf_close(vocabs[v].f);
    }
    return 0;
}

/* Tokenizes into a malloc'ed array; *n gets the count. */
static int32_t *encode(const tokenizer *tok, const char *s, size_t len, bool add_special, bool parse_special,
                       int32_t *n) {
    int32_t need = tokenizer_encode(tok, s, len, NULL, 0, add_special, parse_special);
    assert_true(need != INT32_MIN);
    if (need < 0) need = -need;
    int32_t *ids = malloc(((size_t)need + 1) * sizeof *ids);
    assert_non_null(ids);
    *n = tokenizer_encode(tok, s, len, ids, need, add_special, parse_special);
    assert_int_equal(*n, need);
    return ids;
}

/* Strict UTF-8 check (no overlongs, surrogates or code points > U+10FFFF). */
static bool utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) { len = 3; if (c == 0xe0) lo = 0xa0; if (c == 0xed) hi = 0x9f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; if (c == 0xf0) lo = 0x90; if (c == 0xf4) hi = 0x8f; }
        else return false;
        if (i + len > n) return false;
        if (p[i + 1] < lo || p[i + 1] > hi) return false;
        for (size_t k = 2; k < len; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf) return false;
        i += len;
    }
    return true;
}

/* Decodes the golden-file escapes \n, \t and \\ in place; returns the length. */
static size_t unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] == 'n') { *w++ = '\n'; r++; }
        else if (r[0] == '\\' && r[1] == 't') { *w++ = '\t'; r++; }
        else if (r[0] == '\\' && r[1] == '\\') { *w++ = '\\'; r++; }
        else *w++ = *r;
    }
    *w = 0;
    return (size_t)(w - s);
}

/* Concatenates the pieces of ids through the streaming detokenizer, checking
 * that every chunk it hands out is valid UTF-8. Caller frees. */
static char *detok_all(const tokenizer *tok, const int32_t *ids, int32_t n, size_t *len) {
    tokenizer_detok *d = tokenizer_detok_create(tok);
    assert_non_null(d);
    size_t cap = 64, o = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (int32_t i = 0; i <= n; i++) {
        const char *chunk = i < n ? tokenizer_detok_push(d, ids[i]) : tokenizer_detok_flush(d);
        assert_non_null(chunk);
        size_t cl = strlen(chunk);
        if (!utf8_valid(chunk, cl)) fail_msg("detokenizer emitted invalid UTF-8 after token %d", (int)i);
        while (o + cl + 1 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + o, chunk, cl);
        o += cl;
    }
    out[o] = 0;
    tokenizer_detok_free(d);
    *len = o;
    return out;
}

/* ------------------------------------------------------------ golden data */

typedef struct {
    char *raw;      /* the line as written in the file (escaped) */
    int32_t *ids;
    int32_t n;
    bool from_hf;   /* ids from the model's HF tokenizer (llama.cpp crashed) */
} golden_line;

typedef struct {
    golden_line *lines;
    int n;
} golden_block;

/* Reads the "## parse_special=<special>" block of a tok-*.txt file. */
static golden_block read_golden_file(const char *path, int special) {
    golden_block b = {NULL, 0};
    char *data = test_read_file(path, NULL);
    if (!data) fail_msg("cannot read %s", path);
    char header[64];
    snprintf(header, sizeof header, "## parse_special=%d", special);
    bool in_block = false;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (strncmp(line, "## ", 3) == 0) {
            in_block = strcmp(line, header) == 0;
            continue;
        }
        if (!in_block) continue;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        char *ids = tab + 1, *comment = strchr(ids, '\t');
        if (comment) *comment++ = 0;
        b.lines = realloc(b.lines, (size_t)(b.n + 1) * sizeof *b.lines);
        assert_non_null(b.lines);
        golden_line *g = &b.lines[b.n++];
        g->raw = strdup(line);
        g->from_hf = comment && strstr(comment, "HF");
        g->n = 0;
        g->ids = malloc((strlen(ids) / 2 + 2) * sizeof *g->ids);
        assert_non_null(g->ids);
        for (char *p = ids; *p;) {
            char *e;
            long v = strtol(p, &e, 10);
            if (e == p) break;
            g->ids[g->n++] = (int32_t)v;
            p = e;
        }
    }
    free(data);
    return b;
}

/* Reads the "## parse_special=<special>" block of ../shared/golden/tok-<name>.txt. */
static golden_block read_golden(const char *name, int special) {
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "golden/tok-%s.txt", name);
    golden_block b = {NULL, 0};
    if (!test_shared_path(rel, path, sizeof path)) return b;
    return read_golden_file(path, special);
}

static void free_golden(golden_block *b) {
    for (int i = 0; i < b->n; i++) {
        free(b->lines[i].raw);
        free(b->lines[i].ids);
    }
    free(b->lines);
}

/* The test strings of ../shared/golden/tokenizer-lines.txt, escaped as written. */
static char **read_test_lines(int *n) {
    char path[1024];
    *n = 0;
    if (!test_shared_path("golden/tokenizer-lines.txt", path, sizeof path)) return NULL;
    char *data = test_read_file(path, NULL);
    if (!data) fail_msg("cannot read %s", path);
    char **lines = NULL;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lines = realloc(lines, (size_t)(*n + 1) * sizeof *lines);
        assert_non_null(lines);
        lines[(*n)++] = strdup(line);
    }
    free(data);
    return lines;
}

static void print_ids(const char *what, const int32_t *ids, int32_t n) {
    print_message("    %s:", what);
    for (int32_t i = 0; i < n; i++) print_message(" %d", (int)ids[i]);
    print_message("\n");
}

/* Every line of tokenizer-lines.txt must tokenize to the golden ids
 * (add_special = false) in both parse_special modes. */
static void check_golden(int v) {
    const tokenizer *tok = get_vocab(v);
    int n_lines;
    char **lines = read_test_lines(&n_lines);
    assert_true(n_lines > 0);
    int mismatches = 0, hf_lines = 0;
    for (int special = 0; special <= 1; special++) {
        golden_block b = read_golden(vocab_names[v], special);
        assert_int_equal(b.n, n_lines);
        for (int i = 0; i < n_lines; i++) {
            const golden_line *g = NULL;
            for (int j = 0; j < b.n && !g; j++)
                if (strcmp(b.lines[j].raw, lines[i]) == 0) g = &b.lines[j];
            if (!g) fail_msg("line %d missing from the golden file: %s", i + 1, lines[i]);
            hf_lines += g->from_hf;
            char *text = strdup(lines[i]);
            size_t len = unescape(text);
            int32_t n;
            int32_t *ids = encode(tok, text, len, false, special, &n);
            if (n != g->n || memcmp(ids, g->ids, (size_t)n * sizeof *ids) != 0) {
                mismatches++;
                print_message("[ MISMATCH ] %s parse_special=%d line %d: %s%s\n", vocab_names[v], special, i + 1,
                              lines[i], g->from_hf ? " (golden from HF tokenizers)" : "");
                print_ids("expected", g->ids, g->n);
                print_ids("got     ", ids, n);
            }
            free(ids);
            free(text);
        }
        free_golden(&b);
    }
    print_message("    %s: %d lines x 2 modes checked (%d line/mode pairs with HF-tokenizer ids)\n",
                  vocab_names[v], n_lines, hf_lines);
    for (int i = 0; i < n_lines; i++) free(lines[i]);
    free(lines);
    assert_int_equal(mismatches, 0);
}

static void test_golden_tinystories(void **state) { (void)state; check_golden(V_TINY); }
static void test_golden_llama3(void **state) { (void)state; check_golden(V_LLAMA3); }
static void test_golden_qwen3(void **state) { (void)state; check_golden(V_QWEN3); }

/* gpt-oss's pre-tokenizer ("gpt-4o", o200k) with the Qwen3 vocabulary and merges: llama.cpp's
 * ids (tests/models/tok-vocab-qwen3-gpt4o.txt: llama-tok on vocab-qwen3.gguf with
 * tokenizer.ggml.pre set to gpt-4o, over tokenizer-lines.txt and tests/models/tok-lines-gpt4o.txt,
 * made by scripts/make-test-models.sh tok-gpt4o). No GGUF with the o200k vocabulary is shared,
 * so this checks the splitting, the part that is the pre-tokenizer's. */
static void test_golden_qwen3_gpt4o(void **state) {
    (void)state;
    char path[1024], err[512] = "";
    SKIP_WITHOUT_SHARED(path, "models/vocab-qwen3.gguf");
    gguf_file *f = gguf_open(path, err, sizeof err);
    if (!f) fail_msg("%s", err);
    tokenizer *tok = tokenizer_load_pre(f, "gpt-4o", err, sizeof err);
    if (!tok) fail_msg("%s", err);
    int checked = 0, mismatches = 0;
    for (int special = 0; special <= 1; special++) {
        golden_block b = read_golden_file("tests/models/tok-vocab-qwen3-gpt4o.txt", special);
        assert_true(b.n >= 40);
        for (int i = 0; i < b.n; i++) {
            char *text = strdup(b.lines[i].raw);
            size_t len = unescape(text);
            int32_t n;
            int32_t *ids = encode(tok, text, len, false, special, &n);
            if (n != b.lines[i].n || memcmp(ids, b.lines[i].ids, (size_t)n * sizeof *ids) != 0) {
                mismatches++;
                print_message("[ MISMATCH ] gpt-4o parse_special=%d: %s\n", special, b.lines[i].raw);
                print_ids("expected", b.lines[i].ids, b.lines[i].n);
                print_ids("got     ", ids, n);
            }
            checked++;
            free(ids);
            free(text);
        }
        free_golden(&b);
    }
    print_message("    vocab-qwen3 with pre gpt-4o: %d line/mode pairs checked\n", checked);
    tokenizer_free(tok);
    gguf_close(f);
    assert_int_equal(mismatches, 0);
}

/* Detokenizing the tokens of each line gives the line back: always for the
 * byte-level BPE vocabs; for the SPM vocab whenever no <unk> was needed (and
 * with the space prefix the tokenizer added). */
static void check_roundtrip(int v) {
    const tokenizer *tok = get_vocab(v);
    int n_lines;
    char **lines = read_test_lines(&n_lines);
    int checked = 0;
    for (int i = 0; i < n_lines; i++) {
        char *text = strdup(lines[i]);
        size_t len = unescape(text);
        int32_t n;
        int32_t *ids = encode(tok, text, len, false, false, &n);
        bool lossless = true;
        if (v == V_TINY)
            for (int32_t k = 0; k < n; k++)
                if (ids[k] == 0) lossless = false;
        size_t dl;
        char *dec = detok_all(tok, ids, n, &dl);
        /* the same through tokenizer_token_to_piece */
        char *cat = malloc(dl + 1);
        size_t o = 0;
        for (int32_t k = 0; k < n; k++) {
            char pbuf[256];
            int32_t pl = tokenizer_token_to_piece(tok, ids[k], pbuf, sizeof pbuf);
            assert_true(pl >= 0);
            assert_true(o + (size_t)pl <= dl);
            memcpy(cat + o, pbuf, (size_t)pl);
            o += (size_t)pl;
        }
        if (lossless) {
            const char *expect = text;
            size_t el = len;
            if (v == V_TINY) { /* the SPM space prefix */
                assert_true(dl >= 1 && dec[0] == ' ');
                assert_true(o == dl && memcmp(cat, dec, dl) == 0);
                if (dl - 1 != el || memcmp(dec + 1, expect, el) != 0)
                    fail_msg("%s line %d does not round-trip: '%s' -> '%s'", vocab_names[v], i + 1, lines[i], dec);
            } else {
                if (o != dl || memcmp(cat, dec, dl) != 0) fail_msg("pieces and streaming detok differ");
                if (dl != el || memcmp(dec, expect, el) != 0)
                    fail_msg("%s line %d does not round-trip: '%s' -> '%s'", vocab_names[v], i + 1, lines[i], dec);
            }
            checked++;
        }
        free(cat);
        free(dec);
        free(ids);
        free(text);
        free(lines[i]);
    }
    free(lines);
    print_message("    %s: %d of %d lines round-trip\n", vocab_names[v], checked, n_lines);
    if (v != V_TINY) assert_int_equal(checked, n_lines);
    else assert_true(checked >= 10);
}

static void test_roundtrip_tinystories(void **state) { (void)state; check_roundtrip(V_TINY); }
static void test_roundtrip_llama3(void **state) { (void)state; check_roundtrip(V_LLAMA3); }
static void test_roundtrip_qwen3(void **state) { (void)state; check_roundtrip(V_QWEN3); }

/* The prompt of the logits golden files: prompt.txt tokenized by llama.cpp with
 * BOS (add_special = true, parse_special = false), for every model there. */
static void test_golden_prompt_tokens(void **state) {
    (void)state;
    char path[1024];
    SKIP_WITHOUT_SHARED(path, "golden/prompt.txt");
    size_t plen;
    char *prompt = test_read_file(path, &plen);
    assert_non_null(prompt);
    static const char *const models[] = {"tinystories-656k-f32", "student-h64-F32", "student-h64-Q4_0",
        "syn-llama-gqa-F32", "syn-llama-gqa-Q4_K_M", "syn-qwen2-kout-F32", "syn-qwen3-h128-F16"};
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        char rel[256], gpath[1024], mpath[1024], err[512] = "";
        snprintf(rel, sizeof rel, "golden/%s.logits.txt", models[m]);
        test_shared_path(rel, gpath, sizeof gpath);
        snprintf(rel, sizeof rel, "models/%s.gguf", models[m]);
        test_shared_path(rel, mpath, sizeof mpath);
        char *gold = test_read_file(gpath, NULL);
        if (!gold) fail_msg("cannot read %s", gpath);
        char *line = strstr(gold, "\ntokens:");
        assert_non_null(line);
        int32_t expect[4096], n_expect = 0;
        for (char *q = line + 8; *q && *q != '\n';) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q) break;
            expect[n_expect++] = (int32_t)v;
            q = e;
        }
        gguf_file *f = gguf_open(mpath, err, sizeof err);
        if (!f) fail_msg("gguf_open(%s): %s", mpath, err);
        tokenizer *tok = tokenizer_load(f, err, sizeof err);
        if (!tok) fail_msg("tokenizer_load(%s): %s", mpath, err);
        int32_t n;
        int32_t *ids = encode(tok, prompt, plen, true, false, &n);
        if (n != n_expect || memcmp(ids, expect, (size_t)n * sizeof *ids) != 0)
            fail_msg("%s: prompt tokens differ from %s", models[m], gpath);
        free(ids);
        tokenizer_free(tok);
        gguf_close(f);
        free(gold);
    }
    free(prompt);
}

/* ------------------------------------------------------------ special tokens */

static int32_t find_token(const tokenizer *tok, const char *text) {
    size_t len = strlen(text);
    for (int32_t i = 0; i < tokenizer_n_vocab(tok); i++) {
        gguf_str s = tokenizer_token_text(tok, i);
        if (s.len == len && memcmp(s.ptr, text, len) == 0) return i;
    }
    return -1;
}

static void test_add_special(void **state) {
    (void)state;
    const char *s = "Hello world";
    for (int v = 0; v < N_VOCABS; v++) {
        const tokenizer *tok = get_vocab(v);
        int32_t n0, n1;
        int32_t *a = encode(tok, s, strlen(s), false, false, &n0);
        int32_t *b = encode(tok, s, strlen(s), true, false, &n1);
        int32_t extra = (tokenizer_add_bos(tok) ? 1 : 0) + (tokenizer_add_eos(tok) ? 1 : 0);
        assert_int_equal(n1, n0 + extra);
        int32_t off = tokenizer_add_bos(tok) ? 1 : 0;
        if (off) assert_int_equal(b[0], tokenizer_bos(tok));
        assert_memory_equal(a, b + off, (size_t)n0 * sizeof *a);
        free(a);
        free(b);
    }
    /* TinyStories asks for BOS (id 1); the Llama-3 and Qwen3 vocab files set
     * add_bos_token = false, which llama.cpp follows too. */
    const tokenizer *tiny = get_vocab(V_TINY);
    assert_true(tokenizer_add_bos(tiny));
    assert_int_equal(tokenizer_bos(tiny), 1);
    assert_int_equal(tokenizer_eos(tiny), 2);
    assert_false(tokenizer_add_bos(get_vocab(V_LLAMA3)));
    assert_int_equal(tokenizer_bos(get_vocab(V_LLAMA3)), 128000);
    assert_false(tokenizer_add_bos(get_vocab(V_QWEN3)));
    /* empty text: nothing, or just BOS */
    int32_t id = -1;
    assert_int_equal(tokenizer_encode(tiny, "", 0, &id, 1, false, false), 0);
    assert_int_equal(tokenizer_encode(tiny, NULL, 0, &id, 1, true, true), 1);
    assert_int_equal(id, 1);
    assert_int_equal(tokenizer_encode(get_vocab(V_QWEN3), "", 0, &id, 1, true, true), 0);
}

static void test_eog(void **state) {
    (void)state;
    const tokenizer *l3 = get_vocab(V_LLAMA3);
    int32_t eot = find_token(l3, "<|eot_id|>");
    assert_int_equal(eot, 128009);
    assert_true(tokenizer_is_eog(l3, eot));
    assert_true(tokenizer_is_eog(l3, tokenizer_eos(l3)));
    assert_int_equal(find_token(l3, "<|eom_id|>"), -1); /* Llama 3.0 has no <|eom_id|> */
    assert_true(tokenizer_is_eog(l3, find_token(l3, "<|end_of_text|>")));
    assert_false(tokenizer_is_eog(l3, 9906)); /* "Hello" */
    assert_false(tokenizer_is_eog(l3, tokenizer_bos(l3)));
    assert_false(tokenizer_is_eog(l3, -1));
    assert_false(tokenizer_is_eog(l3, tokenizer_n_vocab(l3)));
    assert_true(tokenizer_is_control(l3, eot));

    const tokenizer *q3 = get_vocab(V_QWEN3);
    int32_t im_end = find_token(q3, "<|im_end|>");
    assert_int_equal(im_end, 151645);
    assert_true(tokenizer_is_eog(q3, im_end));
    assert_true(tokenizer_is_eog(q3, find_token(q3, "<|endoftext|>")));
    assert_false(tokenizer_is_eog(q3, find_token(q3, "<|im_start|>")));
    assert_false(tokenizer_is_eog(q3, find_token(q3, "<think>")));

    const tokenizer *tiny = get_vocab(V_TINY);
    assert_true(tokenizer_is_eog(tiny, 2));
    assert_false(tokenizer_is_eog(tiny, 1));
}

static void test_special_tokens(void **state) {
    (void)state;
    const tokenizer *l3 = get_vocab(V_LLAMA3);
    const char *s = "<|eot_id|>";
    int32_t n;
    int32_t *ids = encode(l3, s, strlen(s), false, true, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 128009);
    free(ids);
    ids = encode(l3, s, strlen(s), false, false, &n);
    assert_true(n > 1);
    for (int32_t i = 0; i < n; i++) assert_true(ids[i] < 128000);
    free(ids);
    /* control tokens have no text; the detokenizer drops them */
    char buf[32];
    assert_int_equal(tokenizer_token_to_piece(l3, 128009, buf, sizeof buf), 0);

    /* Qwen3's <think> is user-defined: split off even without parse_special
     * (as llama.cpp does), and it keeps its text when detokenized. */
    const tokenizer *q3 = get_vocab(V_QWEN3);
    s = "a<think>b";
    for (int special = 0; special <= 1; special++) {
        ids = encode(q3, s, strlen(s), false, special, &n);
        assert_int_equal(n, 3);
        assert_int_equal(ids[1], 151667);
        free(ids);
    }
    assert_int_equal(tokenizer_token_to_piece(q3, 151667, buf, sizeof buf), 7);
    assert_memory_equal(buf, "<think>", 7);
    assert_int_equal(tokenizer_token_to_piece(q3, 151645, buf, sizeof buf), 0);
    /* longest match first: <|im_start|> is not split into shorter specials */
    s = "<|im_start|><|im_end|>";
    ids = encode(q3, s, strlen(s), false, true, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 151644);
    assert_int_equal(ids[1], 151645);
    free(ids);
}

/* ------------------------------------------------------------ robustness */

static void test_n_max(void **state) {
    (void)state;
    for (int v = 0; v < N_VOCABS; v++) {
        const tokenizer *tok = get_vocab(v);
        const char *s = "Once upon a time, there was a little girl.";
        int32_t need = tokenizer_encode(tok, s, strlen(s), NULL, 0, true, false);
        assert_true(need < -1);
        int32_t ids[64];
        assert_int_equal(tokenizer_encode(tok, s, strlen(s), ids, -need - 1, true, false), need);
        assert_int_equal(tokenizer_encode(tok, s, strlen(s), ids, -need, true, false), -need);
        assert_int_equal(tokenizer_encode(tok, s, strlen(s), ids, -5, true, false), need);

        char small[2];
        int32_t first = ids[tokenizer_add_bos(tok) ? 1 : 0];
        int32_t pl = tokenizer_token_to_piece(tok, first, NULL, 0);
        assert_true(pl < 0);
        if (pl < -2) assert_int_equal(tokenizer_token_to_piece(tok, first, small, sizeof small), pl);
        assert_int_equal(tokenizer_token_to_piece(tok, -1, small, sizeof small), 0);
        assert_int_equal(tokenizer_token_to_piece(tok, tokenizer_n_vocab(tok), small, sizeof small), 0);
    }
}

static void test_invalid_utf8(void **state) {
    (void)state;
    static const struct { const char *s; size_t n; } inputs[] = {
        {"\xff", 1}, {"\xfe\xff abc", 6}, {"abc \xe4\xb8", 6}, {"\xc0\x80\xc0\xaf", 4},
        {"\xed\xa0\x80 x \xed\xbf\xbf", 9}, {"\xf4\x90\x80\x80", 4}, {"\xf7\xbf\xbf\xbf", 4},
        {"\x80\x80\x80", 3}, {"a\0b", 3}, {"\xe4\xb8\xad\xe4", 4}, {"<|im_end\xff|>", 11},
        {"  \xf0\x9f\x98", 5}, {"'\xff's", 4},
    };
    for (int v = 0; v < N_VOCABS; v++) {
        const tokenizer *tok = get_vocab(v);
        for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++)
            for (int special = 0; special <= 1; special++) {
                int32_t n;
                int32_t *ids = encode(tok, inputs[i].s, inputs[i].n, true, special, &n);
                for (int32_t k = 0; k < n; k++) assert_true(ids[k] >= 0 && ids[k] < tokenizer_n_vocab(tok));
                size_t dl;
                free(detok_all(tok, ids, n, &dl));
                free(ids);
            }
    }
    /* llama.cpp's BPE reads each invalid byte as U+FFFD; overlong forms and
     * values above U+10FFFF are invalid, every byte of them (build 11669) */
    static const struct { const char *bad, *fixed; } same[] = {
        {"a\xff\xfe b", "a\xef\xbf\xbd\xef\xbf\xbd b"},
        {"a\xc0\xaf b", "a\xef\xbf\xbd\xef\xbf\xbd b"},
        {"a\xe0\x80\xaf", "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80!", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"},
        {"x\xe4\xb8", "x\xef\xbf\xbd\xef\xbf\xbd"},
    };
    for (int v = V_LLAMA3; v <= V_QWEN3; v++) {
        const tokenizer *tok = get_vocab(v);
        for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
            int32_t n1, n2;
            int32_t *a = encode(tok, same[i].bad, strlen(same[i].bad), false, false, &n1);
            int32_t *b = encode(tok, same[i].fixed, strlen(same[i].fixed), false, false, &n2);
            assert_int_equal(n1, n2);
            assert_memory_equal(a, b, (size_t)n1 * sizeof *a);
            free(a);
            free(b);
        }
    }
}

/* llama.cpp classifies characters with Unicode 15.1 tables; PCRE2 may be older
 * or newer. Expected ids from llama.cpp build 11669 (Qwen3 vocab). */
static void test_unicode_version(void **state) {
    (void)state;
    const tokenizer *tok = get_vocab(V_QWEN3);
    static const struct { const char *s; int32_t n; int32_t ids[6]; } cases[] = {
        /* CJK Ext. H letter (Unicode 15.0): "'s" splits off after a letter */
        {"\xf0\xb1\x8d\x90's", 5, {172, 109, 235, 238, 594}},
        /* CJK Ext. I letter (Unicode 15.1) */
        {"\xf0\xae\xaf\xb0's", 5, {172, 106, 107, 108, 594}},
        /* Egyptian hieroglyph from Unicode 16: not a letter to llama.cpp */
        {"\xf0\x93\x91\xa0's", 5, {124373, 239, 254, 6, 82}},
        /* Kaktovik numeral (Unicode 15.0): a number */
        {"\xf0\x9d\x8b\x80's", 4, {56252, 233, 222, 594}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t n;
        int32_t *ids = encode(tok, cases[i].s, strlen(cases[i].s), false, false, &n);
        assert_int_equal(n, cases[i].n);
        assert_memory_equal(ids, cases[i].ids, (size_t)n * sizeof *ids);
        free(ids);
    }
}

/* Streaming detokenization of characters split over several byte tokens. */
static void test_detok_streaming(void **state) {
    (void)state;
    const tokenizer *tok = get_vocab(V_LLAMA3);
    /* the token whose piece is exactly one byte, for each byte */
    int32_t byte_id[256];
    for (int b = 0; b < 256; b++) byte_id[b] = -1;
    for (int32_t i = 0; i < tokenizer_n_vocab(tok); i++) {
        char p[8];
        if (tokenizer_token_to_piece(tok, i, p, sizeof p) == 1 && byte_id[(unsigned char)p[0]] < 0)
            byte_id[(unsigned char)p[0]] = i;
    }
    for (int b = 0; b < 256; b++) assert_true(byte_id[b] >= 0);

    const char *text = "a\xe4\xb8\xad\xf0\x9f\xa6\x99\xc3\xa9!"; /* a中🦙é! */
    tokenizer_detok *d = tokenizer_detok_create(tok);
    size_t o = 0;
    char out[64];
    static const char *const expect[] = {"a", "", "", "\xe4\xb8\xad", "", "", "", "\xf0\x9f\xa6\x99", "",
                                         "\xc3\xa9", "!"};
    for (size_t i = 0; text[i]; i++) {
        const char *c = tokenizer_detok_push(d, byte_id[(unsigned char)text[i]]);
        assert_true(utf8_valid(c, strlen(c)));
        assert_string_equal(c, expect[i]);
        memcpy(out + o, c, strlen(c));
        o += strlen(c);
    }
    assert_string_equal(tokenizer_detok_flush(d), "");
    out[o] = 0;
    assert_string_equal(out, text);

    /* incomplete tail at flush, stray and invalid bytes: U+FFFD, never broken UTF-8 */
    assert_string_equal(tokenizer_detok_push(d, byte_id[0xe4]), "");
    assert_string_equal(tokenizer_detok_push(d, byte_id[0xb8]), "");
    assert_string_equal(tokenizer_detok_flush(d), "\xef\xbf\xbd");
    assert_string_equal(tokenizer_detok_push(d, byte_id[0xff]), "\xef\xbf\xbd");
    assert_string_equal(tokenizer_detok_push(d, byte_id[0xe4]), "");
    assert_string_equal(tokenizer_detok_push(d, byte_id['x']), "\xef\xbf\xbdx");
    assert_string_equal(tokenizer_detok_push(d, byte_id[0xed]), ""); /* surrogate lead */
    assert_string_equal(tokenizer_detok_push(d, byte_id[0xa0]), "\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(tokenizer_detok_flush(d), "");
    tokenizer_detok_free(d);

    /* the real tokens of an emoji line split characters across tokens */
    const char *s = "emoji: \xf0\x9f\xa6\x99\xf0\x9f\x9a\x80 \xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb";
    for (int v = V_LLAMA3; v <= V_QWEN3; v++) {
        int32_t n;
        int32_t *ids = encode(get_vocab(v), s, strlen(s), false, false, &n);
        size_t dl;
        char *dec = detok_all(get_vocab(v), ids, n, &dl);
        assert_string_equal(dec, s);
        free(dec);
        free(ids);
    }
}

/* 24 KB inputs with 150k-token vocabularies must be quick. */
static void test_large_input(void **state) {
    (void)state;
    int n_lines;
    char **lines = read_test_lines(&n_lines);
    if (!lines) skip();
    size_t cap = 24 * 1024;
    char *mixed = malloc(cap + 1), *spaces = malloc(cap + 1), *letters = malloc(cap + 1), *digits = malloc(cap + 1);
    size_t o = 0;
    for (int i = 0; o < cap; i = (i + 1) % n_lines) {
        char *t = strdup(lines[i]);
        size_t l = unescape(t);
        if (o + l + 1 > cap) l = cap - o - 1;
        memcpy(mixed + o, t, l);
        o += l;
        mixed[o++] = '\n';
        free(t);
    }
    memset(spaces, ' ', cap);
    spaces[cap - 1] = 'x';
    memset(letters, 'a', cap);
    for (size_t i = 0; i < cap; i++) digits[i] = (char)('0' + i % 10);
    const char *inputs[] = {mixed, spaces, letters, digits};
    for (int v = 0; v < N_VOCABS; v++) {
        const tokenizer *tok = get_vocab(v);
        for (int k = 0; k < 4; k++) {
            clock_t c0 = clock();
            int32_t n;
            int32_t *ids = encode(tok, inputs[k], cap, true, k == 0, &n);
            double sec = (double)(clock() - c0) / CLOCKS_PER_SEC;
            assert_true(n > 0);
            print_message("    %s: 24 KB input %d -> %d tokens in %.3f s\n", vocab_names[v], k, (int)n, sec);
            assert_true(sec < 5.0);
            free(ids);
        }
    }
    free(mixed);
    free(spaces);
    free(letters);
    free(digits);
    for (int i = 0; i < n_lines; i++) free(lines[i]);
    free(lines);
}

/* ------------------------------------------------------------ synthetic GGUFs */

/* A tiny GGUF writer for metadata-only files. */
typedef struct {
    unsigned char *p;
    size_t n, cap;
    uint64_t n_kv;
} gbuf;

static void gb_put(gbuf *g, const void *s, size_t n) {
    while (g->n + n > g->cap) {
        g->cap = g->cap ? g->cap * 2 : 1024;
        g->p = realloc(g->p, g->cap);
        assert_non_null(g->p);
    }
    memcpy(g->p + g->n, s, n);
    g->n += n;
}
static void gb_u32(gbuf *g, uint32_t v) { gb_put(g, &v, 4); }
static void gb_u64(gbuf *g, uint64_t v) { gb_put(g, &v, 8); }
static void gb_str(gbuf *g, const char *s) { gb_u64(g, strlen(s)); gb_put(g, s, strlen(s)); }
static void gb_key(gbuf *g, const char *k, uint32_t type) { gb_str(g, k); gb_u32(g, type); g->n_kv++; }
static void kv_str(gbuf *g, const char *k, const char *v) { gb_key(g, k, GGUF_TYPE_STRING); gb_str(g, v); }
static void kv_u32(gbuf *g, const char *k, uint32_t v) { gb_key(g, k, GGUF_TYPE_UINT32); gb_u32(g, v); }
static void kv_bool(gbuf *g, const char *k, bool v) { unsigned char b = v; gb_key(g, k, GGUF_TYPE_BOOL); gb_put(g, &b, 1); }
static void kv_strs(gbuf *g, const char *k, const char *const *v, uint32_t n) {
    gb_key(g, k, GGUF_TYPE_ARRAY);
    gb_u32(g, GGUF_TYPE_STRING);
    gb_u64(g, n);
    for (uint32_t i = 0; i < n; i++) gb_str(g, v[i]);
}
static void kv_f32s(gbuf *g, const char *k, const float *v, uint32_t n) {
    gb_key(g, k, GGUF_TYPE_ARRAY);
    gb_u32(g, GGUF_TYPE_FLOAT32);
    gb_u64(g, n);
    gb_put(g, v, 4 * (size_t)n);
}
static void kv_i32s(gbuf *g, const char *k, const int32_t *v, uint32_t n) {
    gb_key(g, k, GGUF_TYPE_ARRAY);
    gb_u32(g, GGUF_TYPE_INT32);
    gb_u64(g, n);
    gb_put(g, v, 4 * (size_t)n);
}

/* Header + key/values written so far, padded to the default alignment. */
static unsigned char *gb_finish(gbuf *kvs, size_t *size) {
    gbuf g = {0};
    gb_put(&g, "GGUF", 4);
    gb_u32(&g, 3);
    gb_u64(&g, 0);
    gb_u64(&g, kvs->n_kv);
    gb_put(&g, kvs->p, kvs->n);
    while (g.n % 32) gb_put(&g, "", 1);
    free(kvs->p);
    *size = g.n;
    return g.p;
}

typedef struct {
    unsigned char *buf;
    gguf_file *f;
    tokenizer *tok;
    char err[512];
} synth;

static void synth_open(synth *s, gbuf *kvs) {
    size_t size;
    s->buf = gb_finish(kvs, &size);
    s->err[0] = 0;
    s->f = gguf_open_buffer(s->buf, size, s->err, sizeof s->err);
    if (!s->f) fail_msg("gguf_open_buffer: %s", s->err);
    s->tok = tokenizer_load(s->f, s->err, sizeof s->err);
}

static void synth_close(synth *s) {
    tokenizer_free(s->tok);
    gguf_close(s->f);
    free(s->buf);
}

/* A small SPM vocab: <unk> <s> </s>, optionally the 256 byte tokens, then pieces. */
static const char *const spm_pieces[] = {"\342\226\201", "a", "b", "c", "ab", "\342\226\201a", "abc", "\303\251"};
#define N_PIECES (sizeof spm_pieces / sizeof spm_pieces[0])

static void spm_vocab(gbuf *g, bool bytes) {
    static char names[256][8];
    const char *toks[3 + 256 + N_PIECES];
    float scores[3 + 256 + N_PIECES];
    int32_t types[3 + 256 + N_PIECES];
    uint32_t n = 0;
    toks[n] = "<unk>"; types[n] = 2; scores[n++] = 0;
    toks[n] = "<s>"; types[n] = 3; scores[n++] = 0;
    toks[n] = "</s>"; types[n] = 3; scores[n++] = 0;
    if (bytes)
        for (int b = 0; b < 256; b++) {
            snprintf(names[b], sizeof names[b], "<0x%02X>", b);
            toks[n] = names[b]; types[n] = 6; scores[n++] = 0;
        }
    for (size_t i = 0; i < N_PIECES; i++) {
        toks[n] = spm_pieces[i];
        types[n] = 1;
        scores[n++] = -(float)i; /* earlier pieces are preferred */
    }
    kv_str(g, "tokenizer.ggml.model", "llama");
    kv_strs(g, "tokenizer.ggml.tokens", toks, n);
    kv_f32s(g, "tokenizer.ggml.scores", scores, n);
    kv_i32s(g, "tokenizer.ggml.token_type", types, n);
}

static void test_spm_byte_fallback(void **state) {
    (void)state;
    gbuf g = {0};
    spm_vocab(&g, true);
    synth s;
    synth_open(&s, &g);
    if (!s.tok) fail_msg("tokenizer_load: %s", s.err);
    const int32_t base = 3 + 256; /* id of the first piece */
    const char *text = "ab \xe4\xb8\xad\xc3\xa9";
    int32_t n;
    int32_t *ids = encode(s.tok, text, strlen(text), true, false, &n);
    /* <s> ▁ ab ▁ <0xE4> <0xB8> <0xAD> é */
    int32_t expect[] = {1, base + 0, base + 4, base + 0, 3 + 0xe4, 3 + 0xb8, 3 + 0xad, base + 7};
    assert_int_equal(n, 8);
    assert_memory_equal(ids, expect, sizeof expect);
    size_t dl;
    char *dec = detok_all(s.tok, ids, n, &dl);
    assert_string_equal(dec, " ab \xe4\xb8\xad\xc3\xa9");
    free(dec);
    /* a multi-byte character split over byte tokens streams out whole */
    tokenizer_detok *d = tokenizer_detok_create(s.tok);
    assert_string_equal(tokenizer_detok_push(d, 3 + 0xe4), "");
    assert_string_equal(tokenizer_detok_push(d, 3 + 0xb8), "");
    assert_string_equal(tokenizer_detok_push(d, 3 + 0xad), "\xe4\xb8\xad");
    assert_string_equal(tokenizer_detok_push(d, 1), ""); /* control: no text */
    assert_string_equal(tokenizer_detok_flush(d), "");
    tokenizer_detok_free(d);
    free(ids);
    /* "<s>" in text is the BOS token only with parse_special */
    ids = encode(s.tok, "<s>a", 4, false, true, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], base + 5); /* "▁a": space prefix after a special token */
    free(ids);
    synth_close(&s);
}

static void test_spm_unknown_fused(void **state) {
    (void)state;
    gbuf g = {0};
    spm_vocab(&g, false);
    synth s;
    synth_open(&s, &g);
    if (!s.tok) fail_msg("tokenizer_load: %s", s.err);
    const int32_t base = 3;
    /* without byte tokens, a run of unknown characters is one <unk> (as HF) */
    const char *text = "a\xe4\xb8\xad\xe6\x96\x87" "b \xf0\x9f\xa6\x99\xff";
    int32_t n;
    int32_t *ids = encode(s.tok, text, strlen(text), false, false, &n);
    int32_t expect[] = {base + 5, 0, base + 2, base + 0, 0};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, expect, sizeof expect);
    free(ids);
    synth_close(&s);
}

/* Inputs from tests/tokdiff.py on which llama.cpp (build 11669) aborts with
 * tinystories-656k (std::out_of_range from its SPM byte fallback: the vocab
 * has no <0xNN> tokens; docs/correctness.md). rotkv must not crash; the ids are
 * rotkv's own (a run of characters without a token is one <unk>, id 0), in
 * both parse_special modes. */
static void test_peer_crash_inputs(void **state) {
    (void)state;
    const tokenizer *tok = get_vocab(V_TINY);
    static const struct {
        const char *text;
        int32_t n, ids[8];
    } cases[] = {
        {"a#b", 3, {85, 0, 54}},
        {"\xe6\x97\xa5\xe6\x9c\xac", 2, {80, 0}},     /* CJK */
        {"\xff\xfe x", 3, {80, 0, 76}},                  /* invalid UTF-8 */
        {"a##b", 3, {85, 0, 54}},
        {"a#\xc3\xa9\xe6\x97\xa5" "b", 3, {85, 0, 54}},     /* a mixed run */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int special = 0; special <= 1; special++) {
            int32_t n;
            int32_t *ids = encode(tok, cases[i].text, strlen(cases[i].text), false, special, &n);
            assert_int_equal(n, cases[i].n);
            assert_memory_equal(ids, cases[i].ids, sizeof(int32_t) * (size_t)n);
            free(ids);
        }
}

static void expect_load_error(gbuf *g, const char *what1, const char *what2) {
    synth s;
    synth_open(&s, g);
    if (s.tok) fail_msg("tokenizer_load succeeded, expected an error about %s", what1);
    if (!strstr(s.err, what1) || (what2 && !strstr(s.err, what2)))
        fail_msg("error '%s' does not name '%s'", s.err, what1);
    print_message("    error: %s\n", s.err);
    synth_close(&s);
}

static void test_load_errors(void **state) {
    (void)state;
    static const char *const toks[] = {"a", "b", "ab"};
    static const float scores[] = {0, 0, 0};
    gbuf g = {0};
    kv_str(&g, "tokenizer.ggml.model", "bert");
    kv_strs(&g, "tokenizer.ggml.tokens", toks, 3);
    expect_load_error(&g, "tokenizer.ggml.model", "bert");

    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    expect_load_error(&g, "tokenizer.ggml.tokens", NULL);

    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", toks, 3);
    kv_u32(&g, "tokenizer.ggml.bos_token_id", 3);
    expect_load_error(&g, "tokenizer.ggml.bos_token_id", NULL);

    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", toks, 3);
    kv_f32s(&g, "tokenizer.ggml.scores", scores, 2);
    expect_load_error(&g, "tokenizer.ggml.scores", NULL);

    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", toks, 3);
    kv_str(&g, "tokenizer.ggml.add_bos_token", "yes");
    expect_load_error(&g, "tokenizer.ggml.add_bos_token", NULL);

    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_strs(&g, "tokenizer.ggml.tokens", toks, 3);
    expect_load_error(&g, "tokenizer.ggml.merges", NULL);

    static const char *const merges[] = {"a b"};
    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_str(&g, "tokenizer.ggml.pre", "no-such-pre");
    kv_strs(&g, "tokenizer.ggml.tokens", toks, 3);
    kv_strs(&g, "tokenizer.ggml.merges", merges, 1);
    expect_load_error(&g, "tokenizer.ggml.pre", "no-such-pre");

    static const char *const dup[] = {"a", "b", "a"};
    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "llama");
    kv_strs(&g, "tokenizer.ggml.tokens", dup, 3);
    expect_load_error(&g, "tokenizer.ggml.tokens", "duplicate");

    /* a minimal BPE vocab loads, and merges apply */
    static const char *const bpe_toks[] = {"a", "b", "ab", "\304\240", "\304\240ab"};
    static const char *const bpe_merges[] = {"a b", "\304\240 ab"};
    memset(&g, 0, sizeof g);
    kv_str(&g, "tokenizer.ggml.model", "gpt2");
    kv_str(&g, "tokenizer.ggml.pre", "qwen2");
    kv_strs(&g, "tokenizer.ggml.tokens", bpe_toks, 5);
    kv_strs(&g, "tokenizer.ggml.merges", bpe_merges, 2);
    kv_bool(&g, "tokenizer.ggml.add_bos_token", false);
    synth s;
    synth_open(&s, &g);
    if (!s.tok) fail_msg("tokenizer_load: %s", s.err);
    int32_t n;
    int32_t *ids = encode(s.tok, "ab ab ba", 8, true, false, &n);
    int32_t expect[] = {2, 4, 3, 1, 0};
    assert_int_equal(n, 5);
    assert_memory_equal(ids, expect, sizeof expect);
    free(ids);
    synth_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_tinystories),
        cmocka_unit_test(test_golden_llama3),
        cmocka_unit_test(test_golden_qwen3),
        cmocka_unit_test(test_golden_qwen3_gpt4o),
        cmocka_unit_test(test_golden_prompt_tokens),
        cmocka_unit_test(test_roundtrip_tinystories),
        cmocka_unit_test(test_roundtrip_llama3),
        cmocka_unit_test(test_roundtrip_qwen3),
        cmocka_unit_test(test_add_special),
        cmocka_unit_test(test_eog),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_n_max),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_unicode_version),
        cmocka_unit_test(test_detok_streaming),
        cmocka_unit_test(test_large_input),
        cmocka_unit_test(test_spm_byte_fallback),
        cmocka_unit_test(test_spm_unknown_fused),
        cmocka_unit_test(test_peer_crash_inputs),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, free_vocabs);
}
