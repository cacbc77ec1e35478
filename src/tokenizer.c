/* tokenizer.c — tokenizers built from GGUF metadata, matching llama.cpp.
 *
 * Two vocabulary types:
 *  - "llama" (SPM): spaces escaped to U+2581, optional space prefix, greedy
 *    bigram merging by token score (highest score first, leftmost on ties),
 *    then byte fallback through <0xNN> tokens.
 *  - "gpt2" (BPE): the text is split by the pre-tokenizer regexes chosen by
 *    tokenizer.ggml.pre (PCRE2), each piece is mapped byte-by-byte to the GPT-2
 *    "bytes to unicode" alphabet and merged by merge rank (lowest first).
 *
 * Before either, text equal to a special token (control / user-defined /
 * unknown, longest first) is split off as that token, as llama.cpp's
 * tokenizer_st_partition does. Control and unknown tokens are only split off
 * with parse_special; user-defined tokens always are.
 *
 * One deliberate deviation: when an SPM vocab has no byte tokens (<0xNN>) for a
 * character that is not in the vocab, llama.cpp crashes. We do what the model's
 * own Hugging Face tokenizer does (BPE with byte_fallback and fuse_unk): the
 * character becomes the unknown token, and consecutive such characters share
 * one unknown token.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include "hash.h"

#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ definitions */

enum { VOCAB_SPM = 1, VOCAB_BPE = 2 };

/* Pre-tokenizer families (tokenizer.ggml.pre), as llama.cpp groups them. */
enum {
    PRE_DEFAULT,  /* "default" or missing: four regexes applied in sequence */
    PRE_LLAMA3,   /* llama3 regex, whole-word lookup before merging */
    PRE_LLAMA3RX, /* llama3 regex only (smaug-bpe, dbrx, chatglm) */
    PRE_QWEN2,    /* like llama3 but single digits */
    PRE_QWEN35,   /* qwen2 with combining marks joined to letters */
    PRE_GPT2,     /* the original GPT-2 regex */
    PRE_GPT4O,    /* o200k (gpt-oss, "gpt-4o"): case-split words, 1-3 digits */
};

/* GGUF tokenizer.ggml.token_type values. */
enum { TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4,
       TT_UNUSED = 5, TT_BYTE = 6 };

/* Token attributes (llama.cpp's llama_token_attr bits). */
enum {
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_LSTRIP = 1 << 7,
    ATTR_RSTRIP = 1 << 8,
};

#define MAX_REGEX 4

/* One BPE merge rule "first second"; split is the byte offset of the space. */
typedef struct {
    const char *p;
    uint32_t len, split;
    int32_t rank;
} bpe_merge;

struct tokenizer {
    const gguf_file *f;
    int type, pre;
    int32_t n;         /* vocabulary size */
    gguf_str *text;    /* (n) token text used for matching (empty tokens renamed) */
    const gguf_str *raw; /* (n) token text as stored in the file */
    float *score;      /* (n) */
    uint16_t *attr;    /* (n) ATTR_* bits */
    uint8_t *eog;      /* (n) 1 if end-of-generation */

    int32_t *tok_ht;   /* open-addressing table: text -> id, -1 = empty */
    uint32_t tok_mask;

    bpe_merge *merges; /* BPE only */
    int32_t n_merges;
    int32_t *mrg_ht;   /* (first, second) -> index into merges, -1 = empty */
    uint32_t mrg_mask;

    int32_t bos, eos, unk, eot, eom, pad, sep, mask;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;

    int32_t *special;  /* special tokens, longest text first */
    int32_t n_special;

    int32_t byte_tok[256];      /* SPM byte fallback: <0xNN> (or the 1-byte token), -1 if none */
    char byte_enc[256][2];      /* GPT-2 byte -> UTF-8 of its stand-in code point */
    uint8_t byte_enc_len[256];
    int16_t cp_byte[512];       /* stand-in code point -> byte, -1 if not one */

    pcre2_code *re[MAX_REGEX];
    int n_re;

    char **owned;      /* strings allocated for renamed empty tokens */
    int32_t n_owned;
};

/* ------------------------------------------------------------ small utils */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool bytes_eq(const char *a, size_t la, const char *b, size_t lb) {
    return la == lb && (la == 0 || memcmp(a, b, la) == 0);
}

/* First occurrence of needle in hay (memmem is a GNU extension). */
static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    if (m == 0) return hay;
    while (n >= m) {
        const char *p = memchr(hay, needle[0], n - m + 1);
        if (!p) return NULL;
        if (memcmp(p, needle, m) == 0) return p;
        n -= (size_t)(p - hay) + 1;
        hay = p + 1;
    }
    return NULL;
}

/* Growable arrays used by the encoder. */
typedef struct {
    int32_t *v;
    size_t n, cap;
    bool oom;
} ivec;

static void ivec_push(ivec *a, int32_t x) {
    if (a->oom) return;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) { a->oom = true; return; }
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = x;
}

/* Ensures *buf holds at least need elements of size sz. */
static bool grow(void **buf, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 64;
    while (nc < need) nc *= 2;
    void *nb = realloc(*buf, nc * sz);
    if (!nb) return false;
    *buf = nb;
    *cap = nc;
    return true;
}

/* Byte length of a UTF-8 sequence from its first byte, as llama.cpp's
 * unicode_len_utf8 (no validation: continuation bytes count as 1). */
static size_t utf8_len_lead(uint8_t b) {
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[b >> 4];
}

/* Decodes one code point the way llama.cpp (build 11669) does: an invalid
 * byte, an overlong form or a value above U+10FFFF becomes U+FFFD and consumes
 * one byte; surrogate code points pass (checked against the peer). */
static uint32_t utf8_decode_lenient(const uint8_t *s, size_t n, size_t *pos) {
    size_t i = *pos;
    uint8_t b = s[i];
    uint32_t cp;
    size_t len;
    if (!(b & 0x80)) { *pos = i + 1; return b; }
    if (!(b & 0x40)) goto bad;
    if (!(b & 0x20)) {
        if (i + 1 >= n || (s[i + 1] & 0xc0) != 0x80) goto bad;
        cp = ((uint32_t)(b & 0x1f) << 6) | (s[i + 1] & 0x3f);
        if (cp < 0x80) goto bad;
        len = 2;
    } else if (!(b & 0x10)) {
        if (i + 2 >= n || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80) goto bad;
        cp = ((uint32_t)(b & 0x0f) << 12) | ((uint32_t)(s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
        if (cp < 0x800) goto bad;
        len = 3;
    } else if (!(b & 0x08)) {
        if (i + 3 >= n || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 ||
            (s[i + 3] & 0xc0) != 0x80)
            goto bad;
        cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3f) << 12) |
             ((uint32_t)(s[i + 2] & 0x3f) << 6) | (s[i + 3] & 0x3f);
        if (cp < 0x10000 || cp > 0x10ffff) goto bad;
        len = 4;
    } else
        goto bad;
    *pos = i + len;
    return cp;
bad:
    *pos = i + 1;
    return 0xFFFD;
}

/* Encodes cp (surrogates included, as llama.cpp does); cp > 0x10FFFF -> U+FFFD. */
static size_t utf8_encode(uint32_t cp, char *o) {
    if (cp <= 0x7f) { o[0] = (char)cp; return 1; }
    if (cp <= 0x7ff) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp > 0x10ffff) cp = 0xfffd;
    if (cp <= 0xffff) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Length of the valid UTF-8 sequence at s[0..n) (strict: no overlongs, no
 * surrogates, <= U+10FFFF). Returns k > 0 for a complete valid sequence of k
 * bytes, 0 if s is a valid but incomplete prefix, -k if the first k bytes are
 * an invalid (maximal) subpart to be replaced by one U+FFFD. */
static int utf8_check(const uint8_t *s, size_t n) {
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
    } else
        return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t lb = i == 1 ? lo : 0x80, hb = i == 1 ? hi : 0xbf;
        if (s[i] < lb || s[i] > hb) return -i;
    }
    return len;
}

/* ------------------------------------------------------------ hash tables */

static uint32_t table_size_for(uint64_t n) {
    uint64_t sz = 16;
    while (sz < n * 2) sz <<= 1;
    return (uint32_t)sz;
}

static int32_t tok_find(const tokenizer *t, const char *s, size_t len) {
    uint32_t i = (uint32_t)fnv1a(FNV1A_SEED, s, len) & t->tok_mask;
    for (;;) {
        int32_t id = t->tok_ht[i];
        if (id < 0) return -1;
        if (bytes_eq(t->text[id].ptr, t->text[id].len, s, len)) return id;
        i = (i + 1) & t->tok_mask;
    }
}

static int32_t tok_find_cstr(const tokenizer *t, const char *s) { return tok_find(t, s, strlen(s)); }

/* Rank of the merge (a, b), -1 if none. */
static int32_t merge_rank(const tokenizer *t, const char *a, size_t la, const char *b, size_t lb) {
    if (!t->mrg_ht) return -1;
    uint64_t h = fnv1a(fnv1a(fnv1a(FNV1A_SEED, a, la), " ", 1), b, lb);
    uint32_t i = (uint32_t)h & t->mrg_mask;
    for (;;) {
        int32_t k = t->mrg_ht[i];
        if (k < 0) return -1;
        const bpe_merge *m = &t->merges[k];
        if (m->split == la && m->len == la + 1 + lb && memcmp(m->p, a, la) == 0 &&
            memcmp(m->p + la + 1, b, lb) == 0)
            return m->rank;
        i = (i + 1) & t->mrg_mask;
    }
}

/* ------------------------------------------------------------ loading */

/* Reads an optional token-id key into *id. Absent: *id unchanged. A value of
 * -1 means "none". Out of range: error naming the key. */
static bool load_id_key(const gguf_file *f, const char *key, int32_t n, int32_t *id, bool strict,
                        char *err, size_t errlen) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return true;
    int64_t v;
    if (!gguf_get_i64(f, key, &v)) {
        set_err(err, errlen, "%s: expected an integer token id, got type %s", key, gguf_type_name(kv->type));
        return false;
    }
    if (v == -1) { *id = -1; return true; }
    if (v < 0 || v >= n) {
        if (!strict) return true; /* llama.cpp ignores bad optional ids */
        set_err(err, errlen, "%s = %lld is out of range (vocabulary has %d tokens)", key, (long long)v, n);
        return false;
    }
    *id = (int32_t)v;
    return true;
}

static bool load_bool_key(const gguf_file *f, const char *key, bool *out, char *err, size_t errlen) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return true;
    if (!gguf_get_bool(f, key, out)) {
        set_err(err, errlen, "%s: expected a bool, got type %s", key, gguf_type_name(kv->type));
        return false;
    }
    return true;
}

static bool str_is(gguf_str s, const char *c) { return bytes_eq(s.ptr, s.len, c, strlen(c)); }

static int pre_from_name(gguf_str pre, bool *known) {
    static const struct { const char *name; int pre; } names[] = {
        {"default", PRE_DEFAULT},
        {"llama3", PRE_LLAMA3}, {"llama-v3", PRE_LLAMA3}, {"llama-bpe", PRE_LLAMA3},
        {"falcon3", PRE_LLAMA3}, {"falcon-h1", PRE_LLAMA3}, {"pixtral", PRE_LLAMA3},
        {"midm-2.0", PRE_LLAMA3}, {"lfm2", PRE_LLAMA3}, {"jina-v5-nano", PRE_LLAMA3},
        {"smaug-bpe", PRE_LLAMA3RX}, {"dbrx", PRE_LLAMA3RX}, {"glm4", PRE_LLAMA3RX},
        {"chatglm-bpe", PRE_LLAMA3RX},
        {"qwen2", PRE_QWEN2}, {"deepseek-r1-qwen", PRE_QWEN2}, {"kormo", PRE_QWEN2},
        {"f2llmv2", PRE_QWEN2}, {"megrez", PRE_QWEN2}, {"stablelm2", PRE_QWEN2},
        {"hunyuan", PRE_QWEN2}, {"solar-open", PRE_QWEN2},
        {"qwen35", PRE_QWEN35},
        {"gpt2", PRE_GPT2}, {"gpt-2", PRE_GPT2}, {"phi-2", PRE_GPT2}, {"jina-es", PRE_GPT2},
        {"jina-de", PRE_GPT2}, {"gigachat", PRE_GPT2}, {"jina-v2-es", PRE_GPT2},
        {"jina-v2-de", PRE_GPT2}, {"a.x-4.0", PRE_GPT2}, {"mellum", PRE_GPT2},
        {"modern-bert", PRE_GPT2}, {"exaone4", PRE_GPT2}, {"mpt", PRE_GPT2}, {"olmo", PRE_GPT2},
        {"jais", PRE_GPT2}, {"trillion", PRE_GPT2}, {"granite-docling", PRE_GPT2},
        {"gpt-4o", PRE_GPT4O},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (str_is(pre, names[i].name)) { *known = true; return names[i].pre; }
    *known = false;
    return PRE_DEFAULT;
}

/* Pre-tokenizer regexes, written for PCRE2 from the Hugging Face patterns.
 * \s is spelled out as the Unicode White_Space set that llama.cpp's tables use
 * (PCRE2's \s is defined differently), and the case-insensitive contractions are spelled out
 * with explicit cases as llama.cpp's adapted regex does (PCRE2's (?i) would also
 * match U+017F for 's').
 *
 * llama.cpp's category tables are Unicode 15.1; PCRE2 10.42 knows Unicode 14.
 * The *_U151 ranges are the code points assigned to each category in Unicode
 * 15.0 and 15.1 (CJK extensions H and I, Kawi, Nag Mundari, ...), so the
 * classes agree with llama.cpp (verified against build 11669 for every code
 * point). Characters added in Unicode 16 are "other" to llama.cpp. */
#define WS "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define L_U151                                                                                     \
    "\\x{1123F}-\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"                  \
    "\\x{13441}-\\x{13446}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}"                  \
    "\\x{1E4D0}-\\x{1E4EB}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
#define N_U151 "\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"
#define M_U151                                                                                     \
    "\\x{CF3}\\x{ECE}\\x{10EFD}-\\x{10EFF}\\x{11241}\\x{11F00}-\\x{11F01}\\x{11F03}\\x{11F34}-\\x{11F3A}"   \
    "\\x{11F3E}-\\x{11F42}\\x{13440}\\x{13447}-\\x{13455}\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}"
#define P_U151 "\\x{11B00}-\\x{11B09}\\x{11F43}-\\x{11F4F}"
/* class bodies, to be used inside [...] */
#define CL "\\p{L}" L_U151
#define CN "\\p{N}" N_U151
#define CM "\\p{M}" M_U151
#define CP "\\p{P}" P_U151
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define WS_TAIL "|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+"
static const char RX_LLAMA3[] =
    CONTRACTIONS "|[^\\r\\n" CL CN "]?[" CL "]+|[" CN "]{1,3}| ?[^" WS CL CN "]+[\\r\\n]*" WS_TAIL;
static const char RX_QWEN2[] =
    CONTRACTIONS "|[^\\r\\n" CL CN "]?[" CL "]+|[" CN "]| ?[^" WS CL CN "]+[\\r\\n]*" WS_TAIL;
static const char RX_QWEN35[] =
    CONTRACTIONS "|[^\\r\\n" CL CN "]?[" CL CM "]+|[" CN "]| ?[^" WS CL CM CN "]+[\\r\\n]*" WS_TAIL;
/* llama.cpp runs this one through a hand-written splitter that also takes a
 * lone whitespace run (the trailing |\s+ of the HF pattern). */
static const char RX_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?[" CL "]+| ?[" CN "]+| ?[^" WS CL CN "]+|[" WS "]+(?![^" WS "])|[" WS "]+";
/* o200k as llama.cpp adapts it: HF's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]* / [\p{Ll}\p{Lm}\p{Lo}\p{M}]+ become
 * "a letter that is not a-z" / "a letter that is not A-Z", (?i:'s|...) the spelled-out cases */
#define RX_NOT_LOWER "(?:(?=[" CL "])[^a-z])"
#define RX_NOT_UPPER "(?:(?=[" CL "])[^A-Z])"
static const char RX_GPT4O[] =
    "[^\\r\\n" CL CN "]?" RX_NOT_LOWER "*" RX_NOT_UPPER "+" CONTRACTIONS "?"
    "|[^\\r\\n" CL CN "]?" RX_NOT_LOWER "+" RX_NOT_UPPER "*" CONTRACTIONS "?"
    "|[" CN "]{1,3}| ?[^" WS CL CN "]+[\\r\\n/]*" WS_TAIL;
static const char RX_PUNCT[] = "[" CP "\\$\\+<=>\\^~\\|]+";
static const char RX_NUMBERS[] = "[" CN "]+";
static const char RX_DIGITS3[] = "[0-9][0-9][0-9]";

static bool compile_regexes(tokenizer *t, char *err, size_t errlen) {
    const char *rx[MAX_REGEX];
    int n = 0;
    switch (t->pre) {
    case PRE_LLAMA3:
    case PRE_LLAMA3RX: rx[n++] = RX_LLAMA3; break;
    case PRE_QWEN2: rx[n++] = RX_QWEN2; break;
    case PRE_QWEN35: rx[n++] = RX_QWEN35; break;
    case PRE_GPT2: rx[n++] = RX_GPT2; break;
    case PRE_GPT4O: rx[n++] = RX_GPT4O; break;
    default:
        rx[n++] = RX_PUNCT;
        rx[n++] = RX_GPT2;
        rx[n++] = RX_NUMBERS;
        rx[n++] = RX_DIGITS3;
        break;
    }
    for (int i = 0; i < n; i++) {
        int ec;
        PCRE2_SIZE eo;
        t->re[i] = pcre2_compile((PCRE2_SPTR)rx[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            set_err(err, errlen, "tokenizer.ggml.pre: cannot compile pre-tokenizer regex at %zu: %s",
                    (size_t)eo, (const char *)msg);
            return false;
        }
        pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE); /* optional speed-up */
        t->n_re = i + 1;
    }
    return true;
}

/* GPT-2's reversible byte -> printable code point mapping. */
static void init_byte_encoding(tokenizer *t) {
    for (int i = 0; i < 512; i++) t->cp_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
        t->byte_enc_len[b] = (uint8_t)utf8_encode(cp, t->byte_enc[b]);
        t->cp_byte[cp] = (int16_t)b;
    }
}

/* Order of special tokens: longer text first (llama.cpp), then lower id. */
static bool special_before(const tokenizer *t, int32_t x, int32_t y) {
    uint64_t lx = t->text[x].len, ly = t->text[y].len;
    return lx != ly ? lx > ly : x < y;
}

/* Insertion sort: the special-token list is a few hundred entries at most and
 * arrives almost sorted (by id). */
static void sort_special(tokenizer *t) {
    for (int32_t i = 1; i < t->n_special; i++) {
        int32_t v = t->special[i], j = i - 1;
        while (j >= 0 && special_before(t, v, t->special[j])) {
            t->special[j + 1] = t->special[j];
            j--;
        }
        t->special[j + 1] = v;
    }
}

/* Marks id as control if it is not yet (llama.cpp overrides the type of
 * control-looking tokens found by text). */
static void force_control(tokenizer *t, int32_t id) { t->attr[id] |= ATTR_CONTROL; }

/* First token (in list order) whose text is one of names; -1 if none. */
static int32_t find_first(const tokenizer *t, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int32_t id = tok_find_cstr(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

/* The text-based special-token detection and end-of-generation set of
 * llama.cpp's vocab loader, in the same order. */
static void detect_special_tokens(tokenizer *t) {
    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
        "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "<end_of_utterance>", NULL};
    static const char *const eom_names[] = {"<|eom_id|>", NULL};
    static const char *const fim_pre_names[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>",
        "<|prefix|>", NULL};
    static const char *const fim_suf_names[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>",
        "<|suffix|>", NULL};
    static const char *const fim_mid_names[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>",
        "<|middle|>", NULL};
    static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
    static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
        "<reponame>", NULL};
    static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};
    static const char *const eog_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
        "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>",
        "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~[", NULL};

    struct { int32_t *id; const char *const *names; } auto_ids[] = {
        {&t->eot, eot_names}, {&t->eom, eom_names}, {&t->fim_pre, fim_pre_names},
        {&t->fim_suf, fim_suf_names}, {&t->fim_mid, fim_mid_names}, {&t->fim_pad, fim_pad_names},
        {&t->fim_rep, fim_rep_names}, {&t->fim_sep, fim_sep_names},
    };
    for (size_t i = 0; i < sizeof auto_ids / sizeof auto_ids[0]; i++) {
        if (*auto_ids[i].id >= 0) continue;
        int32_t id = find_first(t, auto_ids[i].names);
        if (id >= 0) {
            *auto_ids[i].id = id;
            force_control(t, id);
        }
    }

    /* control tokens named "...unused..." are unused */
    for (int32_t id = 0; id < t->n; id++)
        if ((t->attr[id] & ATTR_CONTROL) && t->text[id].len >= 6 &&
            find_bytes(t->text[id].ptr, t->text[id].len, "unused", 6))
            t->attr[id] |= ATTR_UNUSED;

    if (t->fim_pad >= 0) t->eog[t->fim_pad] = 1;
    if (t->fim_rep >= 0) t->eog[t->fim_rep] = 1;
    if (t->fim_sep >= 0) t->eog[t->fim_sep] = 1;
    for (int i = 0; eog_names[i]; i++) {
        int32_t id = tok_find_cstr(t, eog_names[i]);
        if (id >= 0) {
            t->eog[id] = 1;
            force_control(t, id);
        }
    }

    /* gpt-oss: these are always rendered */
    static const char *const rendered[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};
    for (int i = 0; rendered[i]; i++) {
        int32_t id = tok_find_cstr(t, rendered[i]);
        if (id >= 0) t->attr[id] = ATTR_USER_DEFINED;
    }

    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    if (t->eom >= 0) t->eog[t->eom] = 1;

    /* o200k_harmony / solar-open: "<|end|>" is not end-of-generation there */
    {
        int32_t ret = tok_find_cstr(t, "<|return|>"), call = tok_find_cstr(t, "<|call|>");
        int32_t calls = tok_find_cstr(t, "<|calls|>"), flush = tok_find_cstr(t, "<|flush|>");
        int32_t end = tok_find_cstr(t, "<|end|>");
        bool has_ret = ret >= 0 && t->eog[ret];
        bool has_call = (call >= 0 && t->eog[call]) || (calls >= 0 && t->eog[calls]);
        bool has_flush = flush >= 0 && t->eog[flush];
        bool has_end = end >= 0 && t->eog[end];
        if ((has_ret && has_call && has_end) || (has_call && has_flush && has_end)) {
            t->eog[end] = 0;
            t->attr[end] = ATTR_USER_DEFINED;
        }
    }
    /* gemma4 / paddleocr: "</s>" is not end-of-generation when "<|tool_response>" is */
    {
        int32_t tr = tok_find_cstr(t, "<|tool_response>"), s = tok_find_cstr(t, "</s>");
        if (tr >= 0 && t->eog[tr] && s >= 0 && t->eog[s]) {
            t->eog[s] = 0;
            t->attr[s] = ATTR_NORMAL;
        }
    }
}

/* Per-model lstrip/rstrip attributes, as llama.cpp sets them by model name. */
static void set_strip_attributes(tokenizer *t) {
    gguf_str name;
    if (!gguf_get_str(t->f, "general.name", &name)) return;
    char low[256];
    size_t n = name.len < sizeof low - 1 ? (size_t)name.len : sizeof low - 1;
    for (size_t i = 0; i < n; i++) {
        char c = name.ptr[i];
        low[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return;
    for (int32_t i = 0; i < t->n_special; i++) t->attr[t->special[i]] |= ATTR_RSTRIP;
    int32_t id = tok_find_cstr(t, "</s>");
    if (id >= 0) t->attr[id] |= ATTR_RSTRIP;
    static const char *const no_rstrip[] = {"<unk>", "<s>", "<|endoftext|>"};
    for (int i = 0; i < 3; i++) {
        id = tok_find_cstr(t, no_rstrip[i]);
        if (id >= 0) t->attr[id] &= (uint16_t)~ATTR_RSTRIP;
    }
}

static bool load_merges(tokenizer *t, char *err, size_t errlen) {
    const char *key = "tokenizer.ggml.merges";
    const gguf_kv *kv = gguf_find(t->f, key);
    if (!kv) {
        set_err(err, errlen, "%s: missing (required for a \"gpt2\" tokenizer)", key);
        return false;
    }
    const gguf_str *strs;
    uint64_t n;
    if (!gguf_get_arr_str(t->f, key, &strs, &n)) {
        set_err(err, errlen, "%s: expected an array of strings", key);
        return false;
    }
    if (n > INT32_MAX) {
        set_err(err, errlen, "%s: too many merges (%llu)", key, (unsigned long long)n);
        return false;
    }
    t->merges = malloc((n ? n : 1) * sizeof *t->merges);
    t->mrg_mask = table_size_for(n) - 1;
    t->mrg_ht = malloc(((size_t)t->mrg_mask + 1) * sizeof *t->mrg_ht);
    if (!t->merges || !t->mrg_ht) {
        set_err(err, errlen, "%s: out of memory", key);
        return false;
    }
    memset(t->mrg_ht, 0xff, ((size_t)t->mrg_mask + 1) * sizeof *t->mrg_ht);
    for (uint64_t i = 0; i < n; i++) {
        const char *p = strs[i].ptr;
        uint64_t len = strs[i].len;
        /* split at the first space after position 0, as llama.cpp */
        const char *sp = len > 1 ? memchr(p + 1, ' ', (size_t)len - 1) : NULL;
        if (!sp || len > UINT32_MAX) continue; /* llama.cpp keys it ("", ""), which never matches */
        uint32_t split = (uint32_t)(sp - p);
        uint64_t h = fnv1a(FNV1A_SEED, p, (size_t)len);
        uint32_t j = (uint32_t)h & t->mrg_mask;
        bool dup = false;
        for (;;) {
            int32_t k = t->mrg_ht[j];
            if (k < 0) break;
            if (t->merges[k].split == split && bytes_eq(t->merges[k].p, t->merges[k].len, p, (size_t)len)) {
                dup = true; /* the first (lowest rank) one wins */
                break;
            }
            j = (j + 1) & t->mrg_mask;
        }
        if (dup) continue;
        bpe_merge *m = &t->merges[t->n_merges];
        m->p = p;
        m->len = (uint32_t)len;
        m->split = split;
        m->rank = (int32_t)i;
        t->mrg_ht[j] = t->n_merges++;
    }
    return true;
}

tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen) { return tokenizer_load_pre(f, NULL, err, errlen); }

tokenizer *tokenizer_load_pre(const gguf_file *f, const char *pre_override, char *err, size_t errlen) {
    if (!f) {
        set_err(err, errlen, "tokenizer_load: no file");
        return NULL;
    }
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "tokenizer: out of memory");
        return NULL;
    }
    t->f = f;

    /* --- vocabulary type and its defaults */
    gguf_str model;
    if (!gguf_find(f, "tokenizer.ggml.model")) {
        set_err(err, errlen, "tokenizer.ggml.model: missing");
        goto fail;
    }
    if (!gguf_get_str(f, "tokenizer.ggml.model", &model)) {
        set_err(err, errlen, "tokenizer.ggml.model: expected a string");
        goto fail;
    }
    gguf_str pre = {"", 0};
    if (gguf_find(f, "tokenizer.ggml.pre") && !gguf_get_str(f, "tokenizer.ggml.pre", &pre)) {
        set_err(err, errlen, "tokenizer.ggml.pre: expected a string");
        goto fail;
    }
    if (pre_override) pre = (gguf_str){pre_override, strlen(pre_override)};
    t->eot = t->eom = t->sep = t->pad = t->mask = -1;
    t->fim_pre = t->fim_suf = t->fim_mid = t->fim_pad = t->fim_rep = t->fim_sep = -1;
    if (str_is(model, "llama")) {
        t->type = VOCAB_SPM;
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->pre = PRE_DEFAULT;
        t->add_space_prefix = true;
        t->add_bos = true;
        t->add_eos = false;
    } else if (str_is(model, "gpt2")) {
        t->type = VOCAB_BPE;
        t->bos = 11;
        t->eos = 11;
        t->unk = -1;
        t->add_space_prefix = false;
        bool known;
        t->pre = pre_from_name(pre, &known);
        if (!known && pre.len > 0) {
            char v[128];
            set_err(err, errlen, "tokenizer.ggml.pre: unsupported pre-tokenizer '%s'", gguf_str_cpy(pre, v, sizeof v));
            goto fail;
        }
        if (t->pre == PRE_LLAMA3) {
            t->ignore_merges = true;
            t->add_bos = true;
        }
        if (str_is(pre, "glm4") || str_is(pre, "chatglm-bpe")) t->bos = -1;
    } else {
        char v[128];
        set_err(err, errlen, "tokenizer.ggml.model: unsupported tokenizer '%s' (supported: \"llama\", \"gpt2\")",
                gguf_str_cpy(model, v, sizeof v));
        goto fail;
    }
    if (!load_bool_key(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err, errlen)) goto fail;

    /* --- tokens, scores, types */
    const char *tkey = "tokenizer.ggml.tokens";
    uint64_t n64;
    if (!gguf_find(f, tkey)) {
        set_err(err, errlen, "%s: missing", tkey);
        goto fail;
    }
    if (!gguf_get_arr_str(f, tkey, &t->raw, &n64)) {
        set_err(err, errlen, "%s: expected an array of strings", tkey);
        goto fail;
    }
    if (n64 == 0 || n64 > INT32_MAX / 2) {
        set_err(err, errlen, "%s: bad vocabulary size %llu", tkey, (unsigned long long)n64);
        goto fail;
    }
    t->n = (int32_t)n64;

    const gguf_kv *skv = gguf_find(f, "tokenizer.ggml.scores");
    if (skv && (skv->type != GGUF_TYPE_ARRAY ||
                (skv->arr_type != GGUF_TYPE_FLOAT32 && skv->arr_type != GGUF_TYPE_INT32))) {
        set_err(err, errlen, "tokenizer.ggml.scores: expected an array of float32 or int32");
        goto fail;
    }
    if (skv && skv->arr_n < n64) {
        set_err(err, errlen, "tokenizer.ggml.scores: %llu entries for %d tokens", (unsigned long long)skv->arr_n, t->n);
        goto fail;
    }
    const gguf_kv *tkv = gguf_find(f, "tokenizer.ggml.token_type");
    if (tkv && (tkv->type != GGUF_TYPE_ARRAY || tkv->arr_type != GGUF_TYPE_INT32)) {
        set_err(err, errlen, "tokenizer.ggml.token_type: expected an array of int32");
        goto fail;
    }
    if (tkv && tkv->arr_n < n64) {
        set_err(err, errlen, "tokenizer.ggml.token_type: %llu entries for %d tokens",
                (unsigned long long)tkv->arr_n, t->n);
        goto fail;
    }

    size_t n = (size_t)t->n;
    t->text = malloc(n * sizeof *t->text);
    t->score = malloc(n * sizeof *t->score);
    t->attr = malloc(n * sizeof *t->attr);
    t->eog = calloc(n, 1);
    t->tok_mask = table_size_for(n) - 1;
    t->tok_ht = malloc(((size_t)t->tok_mask + 1) * sizeof *t->tok_ht);
    if (!t->text || !t->score || !t->attr || !t->eog || !t->tok_ht) {
        set_err(err, errlen, "tokenizer: out of memory for %d tokens", t->n);
        goto fail;
    }
    memset(t->tok_ht, 0xff, ((size_t)t->tok_mask + 1) * sizeof *t->tok_ht);
    for (int32_t i = 0; i < t->n; i++) {
        t->text[i] = t->raw[i];
        if (t->text[i].len == 0) { /* llama.cpp renames empty tokens */
            char **no = realloc(t->owned, ((size_t)t->n_owned + 1) * sizeof *no);
            char *s = malloc(32);
            if (!no || !s) {
                if (no) t->owned = no;
                free(s);
                set_err(err, errlen, "tokenizer: out of memory");
                goto fail;
            }
            t->owned = no;
            t->owned[t->n_owned++] = s;
            snprintf(s, 32, "[EMPTY_%d]", (int)i);
            t->text[i].ptr = s;
            t->text[i].len = strlen(s);
        }
        float sc = 0.0f;
        if (skv) {
            if (skv->arr_type == GGUF_TYPE_FLOAT32) memcpy(&sc, skv->data + 4 * (size_t)i, 4);
            else {
                int32_t si;
                memcpy(&si, skv->data + 4 * (size_t)i, 4);
                sc = (float)si;
            }
        }
        t->score[i] = sc;
        uint16_t a = ATTR_NORMAL;
        if (tkv) {
            int32_t tt;
            memcpy(&tt, tkv->data + 4 * (size_t)i, 4);
            switch (tt) {
            case TT_UNKNOWN: a = ATTR_UNKNOWN; break;
            case TT_UNUSED: a = ATTR_UNUSED; break;
            case TT_NORMAL: a = ATTR_NORMAL; break;
            case TT_CONTROL: a = ATTR_CONTROL; break;
            case TT_USER_DEFINED: a = ATTR_USER_DEFINED; break;
            case TT_BYTE: a = ATTR_BYTE; break;
            default: a = 0; break;
            }
        }
        t->attr[i] = a;
        /* insert into the text -> id table */
        const char *s = t->text[i].ptr;
        size_t len = (size_t)t->text[i].len;
        uint32_t j = (uint32_t)fnv1a(FNV1A_SEED, s, len) & t->tok_mask;
        while (t->tok_ht[j] >= 0) {
            int32_t o = t->tok_ht[j];
            if (bytes_eq(t->text[o].ptr, t->text[o].len, s, len)) {
                char v[64];
                set_err(err, errlen, "%s: duplicate token '%s' at ids %d and %d", tkey,
                        gguf_str_cpy(t->text[i], v, sizeof v), (int)o, (int)i);
                goto fail;
            }
            j = (j + 1) & t->tok_mask;
        }
        t->tok_ht[j] = i;
    }

    if (t->type == VOCAB_BPE) {
        if (!load_merges(t, err, errlen)) goto fail;
        init_byte_encoding(t);
        if (!compile_regexes(t, err, errlen)) goto fail;
    } else {
        static const char hex[] = "0123456789ABCDEF";
        for (int b = 0; b < 256; b++) {
            char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
            int32_t id = tok_find(t, name, 6);
            if (id < 0) {
                char one = (char)b;
                id = tok_find(t, &one, 1);
            }
            t->byte_tok[b] = id;
        }
    }

    /* --- special token ids (defaults outside the vocabulary are dropped) */
    int32_t *defaults[] = {&t->bos, &t->eos, &t->unk};
    for (int i = 0; i < 3; i++)
        if (*defaults[i] >= t->n) *defaults[i] = -1;
    struct { const char *key; int32_t *id; bool strict; } ids[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos, true},
        {"tokenizer.ggml.eos_token_id", &t->eos, true},
        {"tokenizer.ggml.eot_token_id", &t->eot, true},
        {"tokenizer.ggml.eom_token_id", &t->eom, true},
        {"tokenizer.ggml.unknown_token_id", &t->unk, true},
        {"tokenizer.ggml.seperator_token_id", &t->sep, false},
        {"tokenizer.ggml.padding_token_id", &t->pad, true},
        {"tokenizer.ggml.mask_token_id", &t->mask, false},
        {"tokenizer.ggml.fim_pre_token_id", &t->fim_pre, false},
        {"tokenizer.ggml.fim_suf_token_id", &t->fim_suf, false},
        {"tokenizer.ggml.fim_mid_token_id", &t->fim_mid, false},
        {"tokenizer.ggml.fim_pad_token_id", &t->fim_pad, false},
        {"tokenizer.ggml.fim_rep_token_id", &t->fim_rep, false},
        {"tokenizer.ggml.fim_sep_token_id", &t->fim_sep, false},
        {"tokenizer.ggml.prefix_token_id", &t->fim_pre, false},
        {"tokenizer.ggml.suffix_token_id", &t->fim_suf, false},
        {"tokenizer.ggml.middle_token_id", &t->fim_mid, false},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (!load_id_key(f, ids[i].key, t->n, ids[i].id, ids[i].strict, err, errlen)) goto fail;

    if (!load_bool_key(f, "tokenizer.ggml.add_bos_token", &t->add_bos, err, errlen)) goto fail;
    if (!load_bool_key(f, "tokenizer.ggml.add_eos_token", &t->add_eos, err, errlen)) goto fail;
    if (t->add_bos && t->bos < 0) {
        set_err(err, errlen, "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set");
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        set_err(err, errlen, "tokenizer.ggml.add_eos_token is true, but tokenizer.ggml.eos_token_id is not set");
        goto fail;
    }

    detect_special_tokens(t);

    /* --- special tokens for tokenizer_st_partition, longest first */
    t->special = malloc(n * sizeof *t->special);
    if (!t->special) {
        set_err(err, errlen, "tokenizer: out of memory");
        goto fail;
    }
    for (int32_t i = 0; i < t->n; i++)
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) t->special[t->n_special++] = i;
    sort_special(t);
    set_strip_attributes(t);
    return t;

fail:
    tokenizer_free(t);
    return NULL;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_re; i++) pcre2_code_free(t->re[i]);
    for (int32_t i = 0; i < t->n_owned; i++) free(t->owned[i]);
    free(t->owned);
    free(t->text);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t->tok_ht);
    free(t->merges);
    free(t->mrg_ht);
    free(t->special);
    free(t);
}

int32_t tokenizer_n_vocab(const tokenizer *t) { return t ? t->n : 0; }
int32_t tokenizer_bos(const tokenizer *t) { return t ? t->bos : -1; }
int32_t tokenizer_eos(const tokenizer *t) { return t ? t->eos : -1; }
int32_t tokenizer_unk(const tokenizer *t) { return t ? t->unk : -1; }
bool tokenizer_add_bos(const tokenizer *t) { return t && t->add_bos; }
bool tokenizer_add_eos(const tokenizer *t) { return t && t->add_eos; }

bool tokenizer_is_eog(const tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n && t->eog[id];
}

bool tokenizer_is_control(const tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n && (t->attr[id] & ATTR_CONTROL);
}

gguf_str tokenizer_token_text(const tokenizer *t, int32_t id) {
    gguf_str none = {"", 0};
    if (!t || id < 0 || id >= t->n) return none;
    return t->raw[id];
}

/* ------------------------------------------------------------ encoding */

/* Piece of the input: either raw text [off, off+len) or a special token. */
typedef struct {
    int32_t token; /* -1 for text */
    size_t off, len;
} fragment;

typedef struct {
    int32_t prev, next;
    uint32_t start, n; /* bytes [start, start+n) of the current text */
} symbol;

typedef struct {
    double key; /* lower pops first: -score (SPM) or rank (BPE) */
    int32_t left, right;
    uint32_t size;
} bigram;

/* Scratch memory of one tokenizer_encode call. */
typedef struct {
    ivec out;
    fragment *frag, *frag2;
    size_t n_frag, cap_frag, cap_frag2;
    char *buf;    /* escaped SPM text / sanitized BPE text */
    size_t cap_buf;
    char *rx;     /* BPE: the text the regexes see */
    size_t cap_rx;
    size_t *seg, *seg2; /* BPE: word boundaries (start, end) pairs */
    size_t n_seg, cap_seg, cap_seg2;
    char *word;   /* BPE: byte-encoded word */
    size_t cap_word;
    symbol *sym;
    size_t cap_sym;
    bigram *heap;
    size_t n_heap, cap_heap;
    pcre2_match_data *md;
    bool oom; /* out of memory (or a regex engine failure): the call fails */
} work;

static void work_free(work *w) {
    free(w->out.v);
    free(w->frag);
    free(w->frag2);
    free(w->buf);
    free(w->rx);
    free(w->seg);
    free(w->seg2);
    free(w->word);
    free(w->sym);
    free(w->heap);
    if (w->md) pcre2_match_data_free(w->md);
}

static bool bigram_less(const bigram *a, const bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static void heap_push(work *w, bigram b) {
    if (!grow((void **)&w->heap, &w->cap_heap, w->n_heap + 1, sizeof *w->heap)) { w->oom = true; return; }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_less(&b, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = b;
}

static bigram heap_pop(work *w) {
    bigram top = w->heap[0];
    bigram last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && bigram_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!bigram_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* Splits text into symbols of one UTF-8 character each (llama.cpp style). */
static size_t split_symbols(work *w, const char *s, size_t len) {
    size_t count = 0;
    for (size_t off = 0; off < len;) {
        size_t cl = utf8_len_lead((uint8_t)s[off]);
        if (cl > len - off) cl = len - off;
        if (!grow((void **)&w->sym, &w->cap_sym, count + 1, sizeof *w->sym)) { w->oom = true; return 0; }
        symbol *sy = &w->sym[count];
        sy->prev = (int32_t)count - 1;
        sy->start = (uint32_t)off;
        sy->n = (uint32_t)cl;
        off += cl;
        sy->next = off == len ? -1 : (int32_t)count + 1;
        count++;
    }
    return count;
}

/* Queues the pair (l, r) if it may merge: SPM when the joined text is a token
 * (priority: its score), BPE when the pair is a merge rule (priority: rank). */
static void add_bigram(const tokenizer *t, work *w, const char *s, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const symbol *a = &w->sym[l], *b = &w->sym[r];
    bigram bg = {0, l, r, a->n + b->n};
    if (t->type == VOCAB_SPM) {
        int32_t id = tok_find(t, s + a->start, (size_t)a->n + b->n);
        if (id < 0) return;
        bg.key = -(double)t->score[id];
    } else {
        int32_t rank = merge_rank(t, s + a->start, a->n, s + b->start, b->n);
        if (rank < 0) return;
        bg.key = rank;
    }
    heap_push(w, bg);
}

/* Merges adjacent symbols, best pair first, until no candidate is left. */
static void merge_symbols(const tokenizer *t, work *w, const char *s) {
    while (w->n_heap > 0 && !w->oom) {
        bigram bg = heap_pop(w);
        symbol *l = &w->sym[bg.left], *r = &w->sym[bg.right];
        /* stale: one side already merged, or a side grew since it was queued */
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = bg.left;
        add_bigram(t, w, s, l->prev, bg.left);
        add_bigram(t, w, s, bg.left, l->next);
    }
}

/* llm_tokenizer_spm_session::tokenize on s[0..len) (already escaped). */
static void spm_tokenize(const tokenizer *t, work *w, const char *s, size_t len) {
    size_t count = split_symbols(w, s, len);
    if (w->oom || count == 0) return;
    w->n_heap = 0;
    for (size_t i = 1; i < count; i++) add_bigram(t, w, s, (int32_t)i - 1, (int32_t)i);
    merge_symbols(t, w, s);
    bool prev_unk = false; /* fuse runs of unknown characters into one <unk> */
    for (int32_t i = 0; i != -1; i = w->sym[i].next) {
        const symbol *sy = &w->sym[i];
        const char *p = s + sy->start;
        int32_t id = tok_find(t, p, sy->n);
        if (id >= 0) {
            ivec_push(&w->out, id);
            prev_unk = false;
            continue;
        }
        /* Not a token: it is a single character (merged symbols always are
         * tokens). Byte fallback if every byte has a token, else <unk>. */
        bool all_bytes = true;
        for (uint32_t k = 0; k < sy->n; k++)
            if (t->byte_tok[(uint8_t)p[k]] < 0) all_bytes = false;
        if (all_bytes) {
            for (uint32_t k = 0; k < sy->n; k++) ivec_push(&w->out, t->byte_tok[(uint8_t)p[k]]);
            prev_unk = false;
        } else if (t->unk >= 0 && !prev_unk) {
            ivec_push(&w->out, t->unk);
            prev_unk = true;
        }
    }
}

/* Converts raw bytes to well-formed text the way llama.cpp's
 * unicode_cpts_from_utf8 + unicode_cpt_to_utf8 do (each bad byte becomes U+FFFD).
 * w->buf gets the text to tokenize; w->rx the same with surrogate code points
 * (which llama.cpp lets through) replaced by U+FFFD so PCRE2 accepts it — both
 * are "other" characters to the regexes and have the same length. */
static size_t sanitize_utf8(work *w, const char *s, size_t len) {
    if (!grow((void **)&w->buf, &w->cap_buf, 3 * len + 4, 1) || !grow((void **)&w->rx, &w->cap_rx, 3 * len + 4, 1)) {
        w->oom = true;
        return 0;
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = utf8_decode_lenient((const uint8_t *)s, len, &i);
        size_t k = utf8_encode(cp, w->buf + o);
        if (cp >= 0xd800 && cp <= 0xdfff) utf8_encode(0xfffd, w->rx + o);
        else memcpy(w->rx + o, w->buf + o, k);
        o += k;
    }
    return o;
}

/* Applies the pre-tokenizer regexes: each one splits every current segment into
 * its matches and the text between them (llama.cpp's unicode_regex_split). */
static size_t bpe_split(const tokenizer *t, work *w, size_t len) {
    w->n_seg = 0;
    if (!grow((void **)&w->seg, &w->cap_seg, 2, sizeof(size_t))) { w->oom = true; return 0; }
    w->seg[0] = 0;
    w->seg[1] = len;
    w->n_seg = 1;
    for (int r = 0; r < t->n_re && !w->oom; r++) {
        size_t n2 = 0;
#define PUSH_SEG(a, b)                                                                             \
    do {                                                                                           \
        if (!grow((void **)&w->seg2, &w->cap_seg2, 2 * (n2 + 1), sizeof(size_t))) {                \
            w->oom = true;                                                                         \
            return 0;                                                                              \
        }                                                                                          \
        w->seg2[2 * n2] = (a);                                                                     \
        w->seg2[2 * n2 + 1] = (b);                                                                 \
        n2++;                                                                                      \
    } while (0)
        for (size_t k = 0; k < w->n_seg; k++) {
            size_t s0 = w->seg[2 * k], s1 = w->seg[2 * k + 1];
            PCRE2_SPTR subj = (PCRE2_SPTR)(w->rx + s0);
            size_t n = s1 - s0, gap = 0, at = 0;
            while (at < n) {
                int rc = pcre2_match(t->re[r], subj, n, at, PCRE2_NO_UTF_CHECK, w->md, NULL);
                if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) /* e.g. JIT stack exhausted: use the interpreter */
                    rc = pcre2_match(t->re[r], subj, n, at, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, w->md, NULL);
                if (rc == PCRE2_ERROR_NOMATCH) break;
                if (rc < 0) { /* never seen with these patterns; fail rather than mis-split */
                    w->oom = true;
                    return 0;
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
                size_t ms = ov[0], me = ov[1];
                if (me <= ms) { /* empty match: skip a character */
                    size_t cl = utf8_len_lead(subj[ms]);
                    at = ms + (cl < n - ms ? cl : n - ms);
                    continue;
                }
                if (ms > gap) PUSH_SEG(s0 + gap, s0 + ms);
                PUSH_SEG(s0 + ms, s0 + me);
                gap = at = me;
            }
            if (gap < n) PUSH_SEG(s0 + gap, s1);
        }
#undef PUSH_SEG
        size_t *tmp = w->seg;
        w->seg = w->seg2;
        w->seg2 = tmp;
        size_t tc = w->cap_seg;
        w->cap_seg = w->cap_seg2;
        w->cap_seg2 = tc;
        w->n_seg = n2;
    }
    return w->n_seg;
}

/* llm_tokenizer_bpe_session::tokenize on one raw-text fragment. */
static void bpe_tokenize(const tokenizer *t, work *w, const char *s, size_t len) {
    size_t clen = sanitize_utf8(w, s, len);
    if (w->oom || clen == 0) return;
    size_t nseg = bpe_split(t, w, clen);
    for (size_t k = 0; k < nseg && !w->oom; k++) {
        const char *src = w->buf + w->seg[2 * k];
        size_t sl = w->seg[2 * k + 1] - w->seg[2 * k];
        /* byte-level encoding of the word */
        if (!grow((void **)&w->word, &w->cap_word, 2 * sl + 1, 1)) { w->oom = true; return; }
        size_t wl = 0;
        for (size_t i = 0; i < sl; i++) {
            uint8_t b = (uint8_t)src[i];
            memcpy(w->word + wl, t->byte_enc[b], t->byte_enc_len[b]);
            wl += t->byte_enc_len[b];
        }
        const char *wd = w->word;
        if (t->ignore_merges) {
            int32_t id = tok_find(t, wd, wl);
            if (id >= 0) {
                ivec_push(&w->out, id);
                continue;
            }
        }
        size_t count = split_symbols(w, wd, wl);
        if (w->oom || count == 0) continue;
        w->n_heap = 0;
        for (size_t i = 1; i < count; i++) add_bigram(t, w, wd, (int32_t)i - 1, (int32_t)i);
        merge_symbols(t, w, wd);
        for (int32_t i = 0; i != -1; i = w->sym[i].next) {
            const symbol *sy = &w->sym[i];
            const char *p = wd + sy->start;
            int32_t id = tok_find(t, p, sy->n);
            if (id >= 0) {
                ivec_push(&w->out, id);
                continue;
            }
            /* llama.cpp falls back to single-byte tokens of the encoded text */
            for (uint32_t j = 0; j < sy->n; j++) {
                int32_t bid = tok_find(t, p + j, 1);
                if (bid >= 0) ivec_push(&w->out, bid);
            }
        }
    }
}

static bool is_space_c(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* tokenizer_st_partition: split raw text on special tokens, longest first. */
static void partition_special(const tokenizer *t, work *w, const char *text, bool parse_special) {
    for (int32_t si = 0; si < t->n_special && !w->oom; si++) {
        int32_t id = t->special[si];
        uint16_t attr = t->attr[id];
        if (!parse_special && (attr & (ATTR_CONTROL | ATTR_UNKNOWN))) continue;
        const char *st = t->text[id].ptr;
        size_t sl = (size_t)t->text[id].len;
        /* quick check: any text fragment containing it? */
        bool any = false;
        for (size_t k = 0; k < w->n_frag && !any; k++)
            if (w->frag[k].token < 0 && find_bytes(text + w->frag[k].off, w->frag[k].len, st, sl)) any = true;
        if (!any) continue;
        size_t n2 = 0;
#define PUSH_FRAG(tk, o, l)                                                                        \
    do {                                                                                           \
        if (!grow((void **)&w->frag2, &w->cap_frag2, n2 + 1, sizeof *w->frag2)) {                  \
            w->oom = true;                                                                         \
            return;                                                                                \
        }                                                                                          \
        w->frag2[n2].token = (tk);                                                                 \
        w->frag2[n2].off = (o);                                                                    \
        w->frag2[n2].len = (l);                                                                    \
        n2++;                                                                                      \
    } while (0)
        for (size_t k = 0; k < w->n_frag; k++) {
            fragment fr = w->frag[k];
            if (fr.token >= 0) {
                PUSH_FRAG(fr.token, 0, 0);
                continue;
            }
            size_t off = fr.off, len = fr.len;
            while (len > 0) {
                const char *m = find_bytes(text + off, len, st, sl);
                if (!m) {
                    PUSH_FRAG(-1, off, len);
                    break;
                }
                size_t mo = (size_t)(m - text);
                size_t left = mo - off;
                if (attr & ATTR_LSTRIP)
                    while (left > 0 && is_space_c(text[off + left - 1])) left--;
                if (left > 0) PUSH_FRAG(-1, off, left);
                PUSH_FRAG(id, 0, 0);
                size_t roff = mo + sl, rlen = off + len - roff;
                if (attr & ATTR_RSTRIP)
                    while (rlen > 0 && is_space_c(text[roff])) {
                        roff++;
                        rlen--;
                    }
                off = roff;
                len = rlen;
            }
        }
#undef PUSH_FRAG
        fragment *tmp = w->frag;
        w->frag = w->frag2;
        w->frag2 = tmp;
        size_t tc = w->cap_frag;
        w->cap_frag = w->cap_frag2;
        w->cap_frag2 = tc;
        w->n_frag = n2;
    }
}

/* Texts longer than this are refused (symbol offsets are 32-bit and the SPM
 * escaping triples the size); llama.cpp refuses more than INT32_MAX bytes. */
#define MAX_TEXT_BYTES ((size_t)1 << 30)

/* Returns INT32_MIN, which no valid call can produce, when the text is too
 * long or memory runs out. */
int32_t tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t *out, int32_t n_max,
                         bool add_special, bool parse_special) {
    if (!t) return 0;
    if (!text) len = 0;
    if (len > MAX_TEXT_BYTES) return INT32_MIN;
    work w;
    memset(&w, 0, sizeof w);
    if (len > 0) {
        if (!grow((void **)&w.frag, &w.cap_frag, 1, sizeof *w.frag)) { w.oom = true; goto done; }
        w.frag[0] = (fragment){-1, 0, len};
        w.n_frag = 1;
        partition_special(t, &w, text, parse_special);
    }
    if (t->type == VOCAB_BPE) {
        w.md = pcre2_match_data_create(4, NULL);
        if (!w.md) { w.oom = true; goto done; }
    }
    if (add_special && t->add_bos) ivec_push(&w.out, t->bos);
    bool prev_special = true; /* SPM: space prefix before the first text and after specials */
    for (size_t k = 0; k < w.n_frag && !w.oom && !w.out.oom; k++) {
        const fragment *fr = &w.frag[k];
        if (fr->token >= 0) {
            ivec_push(&w.out, fr->token);
            prev_special = true;
            continue;
        }
        if (t->type == VOCAB_BPE) {
            bpe_tokenize(t, &w, text + fr->off, fr->len);
            continue;
        }
        /* SPM: optional leading space, then every ' ' -> U+2581 */
        const char *src = text + fr->off;
        size_t need = 3 * (fr->len + 1);
        if (!grow((void **)&w.buf, &w.cap_buf, need, 1)) { w.oom = true; break; }
        size_t o = 0;
        if (t->add_space_prefix && prev_special) {
            memcpy(w.buf, "\xe2\x96\x81", 3);
            o = 3;
        }
        for (size_t i = 0; i < fr->len; i++) {
            if (src[i] == ' ') {
                memcpy(w.buf + o, "\xe2\x96\x81", 3);
                o += 3;
            } else
                w.buf[o++] = src[i];
        }
        prev_special = false;
        spm_tokenize(t, &w, w.buf, o);
    }
    if (add_special && t->add_eos) ivec_push(&w.out, t->eos);
done:;
    int32_t ret;
    if (w.oom || w.out.oom) ret = INT32_MIN; /* out of memory: no sensible count to return */
    else if (w.out.n > (size_t)INT32_MAX) ret = -INT32_MAX;
    else if ((int64_t)w.out.n > (int64_t)(n_max < 0 ? 0 : n_max)) ret = -(int32_t)w.out.n;
    else {
        if (w.out.n) memcpy(out, w.out.v, w.out.n * sizeof *out);
        ret = (int32_t)w.out.n;
    }
    work_free(&w);
    return ret;
}

/* ------------------------------------------------------------ decoding */

/* Appends to a buffer that counts what it could not store (two-pass sizing). */
typedef struct {
    char *p;
    size_t cap, len;
} sink;

static void sink_put(sink *k, const void *s, size_t n) {
    if (k->len + n <= k->cap && n) memcpy(k->p + k->len, s, n);
    k->len += n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* llama.cpp's token_to_piece with special = false. */
static void piece(const tokenizer *t, int32_t id, sink *k) {
    if (id < 0 || id >= t->n) return;
    uint16_t a = t->attr[id];
    if (a & (ATTR_UNKNOWN | ATTR_CONTROL)) return;
    const char *s = t->text[id].ptr;
    size_t n = (size_t)t->text[id].len;
    if (a & ATTR_USER_DEFINED) {
        sink_put(k, s, n);
        return;
    }
    if (a & ATTR_NORMAL) {
        if (t->type == VOCAB_SPM) { /* U+2581 -> ' ' */
            size_t i = 0;
            while (i < n) {
                if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    sink_put(k, " ", 1);
                    i += 3;
                } else
                    sink_put(k, s + i++, 1);
            }
        } else { /* undo the byte-level encoding */
            for (size_t i = 0; i < n;) {
                uint32_t cp = utf8_decode_lenient((const uint8_t *)s, n, &i);
                if (cp < 512 && t->cp_byte[cp] >= 0) {
                    char b = (char)t->cp_byte[cp];
                    sink_put(k, &b, 1);
                } else { /* as llama.cpp: not a byte-level character */
                    char u[4], hx[3];
                    size_t ul = utf8_encode(cp, u);
                    sink_put(k, "[UNK_BYTE_0x", 12);
                    for (size_t j = 0; j < ul; j++) {
                        snprintf(hx, sizeof hx, "%02x", (uint8_t)u[j]);
                        sink_put(k, hx, 2);
                    }
                    sink_put(k, s, n);
                    sink_put(k, "]", 1);
                }
            }
        }
        return;
    }
    if (a & ATTR_BYTE) {
        if (n >= 5) {
            int hi = hexval(s[3]), lo = hexval(s[4]);
            if (hi >= 0 && lo >= 0) {
                char b = (char)(hi * 16 + lo);
                sink_put(k, &b, 1);
            }
        }
    }
}

int32_t tokenizer_token_to_piece(const tokenizer *t, int32_t id, char *buf, int32_t buflen) {
    if (!t) return 0;
    sink count = {NULL, 0, 0};
    piece(t, id, &count);
    if (count.len > (size_t)INT32_MAX) return -INT32_MAX;
    if (buflen < 0 || count.len > (size_t)buflen) return -(int32_t)count.len;
    sink k = {buf, (size_t)buflen, 0};
    piece(t, id, &k);
    return (int32_t)k.len;
}

/* ------------------------------------------------------------ detokenizer */

struct tokenizer_detok {
    const tokenizer *t;
    uint8_t *pend; /* bytes not yet emitted: an incomplete UTF-8 sequence at most */
    size_t n_pend, cap_pend;
    char *out;     /* the string handed out by the last call */
    size_t cap_out;
};

tokenizer_detok *tokenizer_detok_create(const tokenizer *t) {
    if (!t) return NULL;
    tokenizer_detok *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->t = t;
    d->out = malloc(64);
    if (!d->out) {
        free(d);
        return NULL;
    }
    d->cap_out = 64;
    d->out[0] = 0;
    return d;
}

/* Moves every complete character of pend to out; invalid bytes become U+FFFD.
 * With final, an incomplete tail becomes U+FFFD too. */
static const char *detok_drain(tokenizer_detok *d, bool final) {
    if (!grow((void **)&d->out, &d->cap_out, 3 * d->n_pend + 1, 1)) {
        d->out[0] = 0;
        return d->out;
    }
    size_t o = 0, i = 0;
    while (i < d->n_pend) {
        int r = utf8_check(d->pend + i, d->n_pend - i);
        if (r > 0) {
            memcpy(d->out + o, d->pend + i, (size_t)r);
            o += (size_t)r;
            i += (size_t)r;
        } else if (r < 0) {
            memcpy(d->out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += (size_t)-r;
        } else if (final) {
            memcpy(d->out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i = d->n_pend;
        } else
            break;
    }
    if (i) { /* pend is still NULL when nothing was ever pushed */
        memmove(d->pend, d->pend + i, d->n_pend - i);
        d->n_pend -= i;
    }
    d->out[o] = 0;
    return d->out;
}

const char *tokenizer_detok_push(tokenizer_detok *d, int32_t id) {
    if (!d) return "";
    sink count = {NULL, 0, 0};
    piece(d->t, id, &count);
    if (!grow((void **)&d->pend, &d->cap_pend, d->n_pend + count.len + 1, 1)) return detok_drain(d, false);
    sink k = {(char *)d->pend + d->n_pend, count.len, 0};
    piece(d->t, id, &k);
    d->n_pend += k.len;
    return detok_drain(d, false);
}

const char *tokenizer_detok_flush(tokenizer_detok *d) {
    if (!d) return "";
    return detok_drain(d, true);
}

void tokenizer_detok_free(tokenizer_detok *d) {
    if (!d) return;
    free(d->pend);
    free(d->out);
    free(d);
}
