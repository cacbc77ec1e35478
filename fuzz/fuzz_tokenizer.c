/* fuzz_tokenizer.c — libFuzzer target for the tokenizers (src/tokenizer.c).
 *
 * The vocabulary is $ROTKV_FUZZ_VOCAB (default ../shared/models/vocab-llama3.gguf;
 * fuzz/check.sh also runs vocab-qwen3.gguf and the SentencePiece-style
 * tinystories-656k-f32.gguf), loaded once in LLVMFuzzerInitialize.
 *
 * Input: byte 0 holds flags (bit 0 parse_special, bit 1 add_special); the rest
 * is both the text to encode and, read as little-endian int32s, a sequence of
 * token ids to decode (any value: out-of-range and negative ids included).
 *
 * Checks (fuzz/README.md): the two-pass size contract of encode; every id in
 * [0, n_vocab); BOS first when add_special adds it; for strictly valid UTF-8
 * without special parsing and with no <unk> in the ids, decode(encode(x)) == x
 * on byte-level BPE vocabs and " " + x (the SentencePiece space prefix, U+2581
 * read back as ' ') on SentencePiece ones; token_to_piece's size contract for
 * every id; the streaming detokenizer hands out only valid UTF-8 and, on valid
 * text without NUL bytes (its strings end at a NUL), exactly
 * the concatenated pieces. */
#include "fuzz_common.h"
#include "model.h"

static rotkv_model *g_model;
static int32_t g_n_vocab;
static bool g_spm, g_space_prefix;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    g_model = fuzz_load_model("ROTKV_FUZZ_VOCAB", "../shared/models/vocab-llama3.gguf", true);
    g_n_vocab = rotkv_n_vocab(g_model);
    gguf_str kind;
    g_spm = gguf_get_str(g_model->gguf, "tokenizer.ggml.model", &kind) && kind.len == 5 && !memcmp(kind.ptr, "llama", 5);
    bool sp = true;
    gguf_get_bool(g_model->gguf, "tokenizer.ggml.add_space_prefix", &sp);
    g_space_prefix = g_spm && sp;
    return 0;
}

/* Appends the bytes of one token to a growing buffer (via the size contract). */
typedef struct {
    char *p;
    size_t n, cap;
} buf;

static void buf_add(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void add_piece(buf *b, rotkv_token id) {
    char small[8];
    int32_t k = rotkv_token_to_piece(g_model, id, small, sizeof small);
    if (k >= 0) {
        CHECK(k <= (int32_t)sizeof small);
        buf_add(b, small, (size_t)k);
        return;
    }
    const int32_t need = -k;
    CHECK(need > (int32_t)sizeof small);
    char *big = malloc((size_t)need);
    if (!big) abort();
    CHECK(rotkv_token_to_piece(g_model, id, big, need - 1) == -need);
    CHECK(rotkv_token_to_piece(g_model, id, big, need) == need);
    buf_add(b, big, (size_t)need);
    free(big);
}

/* Decodes ids both ways: token_to_piece concatenated (into pieces) and the
 * streaming detokenizer (into text, which must be valid UTF-8). */
static void decode(const rotkv_token *ids, size_t n, buf *pieces, buf *text) {
    rotkv_detok *d = rotkv_detok_create(g_model);
    CHECK(d);
    for (size_t i = 0; i < n; i++) {
        add_piece(pieces, ids[i]);
        const char *s = rotkv_detok_push(d, ids[i]);
        buf_add(text, s, strlen(s));
    }
    const char *s = rotkv_detok_flush(d);
    buf_add(text, s, strlen(s));
    rotkv_detok_free(d);
    CHECK(fuzz_utf8_valid((const uint8_t *)text->p, text->n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const bool parse_special = data[0] & 1, add_special = data[0] & 2;
    const size_t len = size - 1;
    char *text = fuzz_copy(data + 1, len, false);

    /* encode: the size contract, then the ids */
    int32_t n = rotkv_tokenize(g_model, text, len, NULL, 0, add_special, parse_special);
    CHECK(n != INT32_MIN);
    n = n < 0 ? -n : n;
    rotkv_token *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (!ids) abort();
    if (n > 0) CHECK(rotkv_tokenize(g_model, text, len, ids, n - 1, add_special, parse_special) == -n);
    CHECK(rotkv_tokenize(g_model, text, len, ids, n, add_special, parse_special) == n);
    for (int32_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < g_n_vocab);
    if (add_special && rotkv_add_bos(g_model) && rotkv_token_bos(g_model) >= 0)
        CHECK(n > 0 && ids[0] == rotkv_token_bos(g_model));

    /* decode what encode gave; the round trip on valid text */
    buf pieces = {0}, detok = {0};
    buf_add(&pieces, "", 0);
    buf_add(&detok, "", 0);
    decode(ids, (size_t)n, &pieces, &detok);
    bool unk = false; /* a character the vocabulary lacks (no byte fallback) */
    for (int32_t i = 0; i < n; i++) unk |= ids[i] == tokenizer_unk(g_model->tok);
    if (!parse_special && !add_special && !unk && fuzz_utf8_valid((const uint8_t *)text, len)) {
        buf want = {0};
        buf_add(&want, "", 0);
        if (g_space_prefix && len) buf_add(&want, " ", 1);
        for (size_t i = 0; i < len; i++) {
            if (g_spm && i + 3 <= len && !memcmp(text + i, "\xe2\x96\x81", 3)) {
                buf_add(&want, " ", 1);
                i += 2;
            } else
                buf_add(&want, text + i, 1);
        }
        if (pieces.n != want.n || memcmp(pieces.p, want.p, want.n)) {
            fprintf(stderr, "round trip: %zu bytes in, %zu expected, %zu out\n", len, want.n, pieces.n);
            CHECK(!"decode(encode(x)) differs from x");
        }
        if (!memchr(want.p, 0, want.n)) /* the detokenizer's strings end at a NUL */
            CHECK(detok.n == want.n && !memcmp(detok.p, want.p, want.n));
        free(want.p);
    }

    /* decode arbitrary ids */
    const size_t n_raw = len / 4;
    rotkv_token *raw = malloc((n_raw + 1) * sizeof *raw);
    if (!raw) abort();
    if (n_raw) memcpy(raw, text, n_raw * sizeof *raw);
    pieces.n = detok.n = 0;
    decode(raw, n_raw, &pieces, &detok);
    if (fuzz_utf8_valid((const uint8_t *)pieces.p, pieces.n) && !memchr(pieces.p, 0, pieces.n))
        CHECK(detok.n == pieces.n && !memcmp(detok.p, pieces.p, pieces.n));

    free(raw);
    free(pieces.p);
    free(detok.p);
    free(ids);
    free(text);
    return 0;
}
