/* chat_template.c — recognise a GGUF chat template's family and render
 * conversations exactly as that template does (see chat_template.h). */
#include "chat_template.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "model.h"
#include "tokenizer.h"

static const char *const family_names[CHAT_FAMILY_COUNT] = {"chatml", "qwen3", "llama3", "llama2",  "mistral",
                                                            "gemma",  "phi3",  "zephyr", "gpt-oss"};

const char *chat_family_name(chat_family f) {
    return (unsigned)f < CHAT_FAMILY_COUNT ? family_names[f] : "unknown";
}

int chat_family_from_name(const char *name) {
    for (int i = 0; i < CHAT_FAMILY_COUNT; i++)
        if (!strcmp(name, family_names[i])) return i;
    return -1;
}

/* ------------------------------------------------------------ string builder */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_add(sbuf *b, const char *s) { sb_addn(b, s, strlen(s)); }

/* ------------------------------------------------- Python str methods */

/* Length of the Python-whitespace character (str.isspace) at s, or 0. */
static size_t py_space_len(const unsigned char *s, size_t n) {
    if (!n) return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (n >= 3) {
        unsigned cp = 0;
        if ((c & 0xf0) == 0xe0 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80)
            cp = ((c & 0x0f) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
        if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
            cp == 0x205f || cp == 0x3000)
            return 3;
    }
    return 0;
}

/* Python-whitespace character ending at s[n-1], or 0. */
static size_t py_space_len_back(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        const unsigned char *p = s + n - k;
        if ((*p & 0xc0) == 0x80) continue; /* inside a multi-byte character */
        return py_space_len(p, k) == k ? k : 0;
    }
    return 0;
}

typedef struct {
    const char *p;
    size_t n;
} sv;

static sv sv_of(const char *s) { return (sv){s, strlen(s)}; }

/* str.strip() / jinja's trim: Python whitespace on both ends */
static sv py_strip(sv s) {
    size_t k;
    while ((k = py_space_len((const unsigned char *)s.p, s.n))) s.p += k, s.n -= k;
    while ((k = py_space_len_back((const unsigned char *)s.p, s.n))) s.n -= k;
    return s;
}
static sv lstrip_nl(sv s) {
    while (s.n && s.p[0] == '\n') s.p++, s.n--;
    return s;
}
static sv rstrip_nl(sv s) {
    while (s.n && s.p[s.n - 1] == '\n') s.n--;
    return s;
}
static const char *sv_find(sv s, const char *needle) {
    size_t m = strlen(needle);
    if (m > s.n) return NULL;
    for (size_t i = 0; i + m <= s.n; i++)
        if (!memcmp(s.p + i, needle, m)) return s.p + i;
    return NULL;
}
static const char *sv_rfind(sv s, const char *needle) {
    size_t m = strlen(needle);
    if (m > s.n) return NULL;
    for (size_t i = s.n - m + 1; i-- > 0;)
        if (!memcmp(s.p + i, needle, m)) return s.p + i;
    return NULL;
}
static void sb_sv(sbuf *b, sv s) { sb_addn(b, s.p, s.n); }

static bool is_role(const chat_msg *m, const char *r) { return m->role && !strcmp(m->role, r); }

static bool set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return false;
}

#define ALTERNATE_MSG "Conversation roles must alternate user/assistant/user/assistant/..."

/* ----------------------------------------------------------- families */

static bool render_chatml(const chat_template *t, const chat_msg *m, int n, bool gen, sbuf *b) {
    if (t->leading_bos) sb_add(b, t->bos);
    if (t->default_system && (n == 0 || !is_role(&m[0], "system"))) {
        sb_add(b, "<|im_start|>system\n");
        sb_add(b, t->default_system);
        sb_add(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        if (t->qwen_tools && is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool")) sb_add(b, "<|im_start|>user");
            sb_add(b, "\n<tool_response>\n");
            sb_add(b, m[i].content);
            sb_add(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool")) sb_add(b, "<|im_end|>\n");
            continue;
        }
        sb_add(b, "<|im_start|>");
        sb_add(b, m[i].role);
        sb_add(b, "\n");
        sb_add(b, m[i].content);
        sb_add(b, "<|im_end|>\n");
    }
    if (gen) sb_add(b, "<|im_start|>assistant\n");
    return true;
}

static bool render_qwen3(const chat_template *t, const chat_msg *m, int n, bool gen, int thinking, sbuf *b,
                         char *err, size_t errlen) {
    if (n == 0) return set_err(err, errlen, "the Qwen3 template needs at least one message");
    if (t->leading_bos) sb_add(b, t->bos);
    if (is_role(&m[0], "system")) {
        sb_add(b, "<|im_start|>system\n");
        sb_add(b, m[0].content);
        sb_add(b, "<|im_end|>\n");
    }
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        sv c = sv_of(m[i].content);
        bool tool_resp = c.n >= 15 && !memcmp(c.p, "<tool_response>", 15) && c.n >= 16 &&
                         !memcmp(c.p + c.n - 16, "</tool_response>", 16);
        if (is_role(&m[i], "user") && !tool_resp) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        if (is_role(&m[i], "user") || (is_role(&m[i], "system") && i > 0)) {
            sb_add(b, "<|im_start|>");
            sb_add(b, m[i].role);
            sb_add(b, "\n");
            sb_add(b, m[i].content);
            sb_add(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "assistant")) {
            sv content = sv_of(m[i].content), reasoning = {"", 0};
            if (m[i].reasoning) {
                reasoning = sv_of(m[i].reasoning);
            } else if (sv_find(content, "</think>")) {
                const char *last = sv_rfind(content, "</think>") + 8;
                const char *first = sv_find(content, "</think>");
                sv before = {content.p, (size_t)(first - content.p)};
                before = rstrip_nl(before);
                const char *th = sv_rfind(before, "<think>");
                if (th) before = (sv){th + 7, (size_t)(before.p + before.n - (th + 7))};
                reasoning = lstrip_nl(before);
                content = lstrip_nl((sv){last, (size_t)(content.p + content.n - last)});
            }
            if (i > last_query && (i == n - 1 || reasoning.n)) {
                sb_add(b, "<|im_start|>assistant\n<think>\n");
                sb_sv(b, rstrip_nl(lstrip_nl(reasoning)));
                sb_add(b, "\n</think>\n\n");
                sb_sv(b, lstrip_nl(content));
            } else {
                sb_add(b, "<|im_start|>assistant\n");
                sb_sv(b, content);
            }
            sb_add(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool")) sb_add(b, "<|im_start|>user");
            sb_add(b, "\n<tool_response>\n");
            sb_add(b, m[i].content);
            sb_add(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool")) sb_add(b, "<|im_end|>\n");
        }
    }
    if (gen) {
        sb_add(b, "<|im_start|>assistant\n");
        if (thinking == 0) sb_add(b, "<think>\n\n</think>\n\n");
    }
    return true;
}

static bool render_llama3(const chat_template *t, const chat_msg *m, int n, bool gen, sbuf *b) {
    for (int i = 0; i < n; i++) {
        if (i == 0) sb_add(b, t->bos);
        sb_add(b, "<|start_header_id|>");
        sb_add(b, m[i].role);
        sb_add(b, "<|end_header_id|>\n\n");
        sb_sv(b, py_strip(sv_of(m[i].content)));
        sb_add(b, "<|eot_id|>");
    }
    if (gen || t->gen_prompt_always) sb_add(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return true;
}

static bool render_llama2(const chat_template *t, const chat_msg *m, int n, sbuf *b, char *err, size_t errlen) {
    if (n == 0) return set_err(err, errlen, "the Llama-2 template needs at least one message");
    if (t->leading_bos) sb_add(b, t->bos);
    const char *sys = NULL;
    int start = 0;
    if (is_role(&m[0], "system")) sys = m[0].content, start = 1;
    for (int i = start; i < n; i++) {
        int j = i - start;
        if (is_role(&m[i], "user") != (j % 2 == 0)) return set_err(err, errlen, ALTERNATE_MSG);
        sbuf c = {0};
        if (j == 0 && sys) {
            sb_add(&c, "<<SYS>>\n");
            sb_add(&c, sys);
            sb_add(&c, "\n<</SYS>>\n\n");
        }
        sb_add(&c, m[i].content);
        if (c.oom) {
            free(c.p);
            return set_err(err, errlen, "out of memory");
        }
        sv cs = py_strip((sv){c.p ? c.p : "", c.n});
        if (is_role(&m[i], "user")) {
            sb_add(b, t->bos);
            sb_add(b, "[INST] ");
            sb_sv(b, cs);
            sb_add(b, " [/INST]");
        } else if (is_role(&m[i], "assistant")) {
            sb_add(b, " ");
            sb_sv(b, cs);
            sb_add(b, " ");
            sb_add(b, t->eos);
        }
        free(c.p);
    }
    return true;
}

static bool render_mistral(const chat_template *t, const chat_msg *m, int n, sbuf *b, char *err, size_t errlen) {
    if (t->leading_bos) sb_add(b, t->bos);
    for (int i = 0; i < n; i++) {
        if (is_role(&m[i], "user") != (i % 2 == 0)) return set_err(err, errlen, ALTERNATE_MSG);
        if (is_role(&m[i], "user")) {
            sb_add(b, "[INST] ");
            sb_add(b, m[i].content);
            sb_add(b, " [/INST]");
        } else if (is_role(&m[i], "assistant")) {
            sb_add(b, m[i].content);
            sb_add(b, t->eos);
        } else {
            return set_err(err, errlen, "Only user and assistant roles are supported!");
        }
    }
    return true;
}

static bool render_gemma(const chat_template *t, const chat_msg *m, int n, bool gen, sbuf *b, char *err,
                         size_t errlen) {
    if (t->leading_bos) sb_add(b, t->bos);
    const chat_msg *sys = NULL;
    if (n > 0 && is_role(&m[0], "system")) {
        if (!t->gemma_sys_prefix) return set_err(err, errlen, "System role not supported");
        sys = &m[0]; /* Gemma 3: in front of the first turn's text */
        m++;
        n--;
    }
    for (int i = 0; i < n; i++) {
        if (is_role(&m[i], "user") != (i % 2 == 0)) return set_err(err, errlen, ALTERNATE_MSG);
        sb_add(b, "<start_of_turn>");
        sb_add(b, is_role(&m[i], "assistant") ? "model" : m[i].role);
        sb_add(b, "\n");
        if (sys && i == 0) {
            sb_add(b, sys->content);
            sb_add(b, "\n\n");
        }
        sb_sv(b, py_strip(sv_of(m[i].content)));
        sb_add(b, "<end_of_turn>\n");
    }
    if (gen) sb_add(b, "<start_of_turn>model\n");
    return true;
}

static bool render_phi3(const chat_template *t, const chat_msg *m, int n, bool gen, sbuf *b) {
    if (t->leading_bos) sb_add(b, t->bos);
    for (int i = 0; i < n; i++) {
        if (!is_role(&m[i], "system") && !is_role(&m[i], "user") && !is_role(&m[i], "assistant")) continue;
        sb_add(b, "<|");
        sb_add(b, m[i].role);
        sb_add(b, "|>\n");
        sb_add(b, m[i].content);
        sb_add(b, "<|end|>\n");
    }
    sb_add(b, gen ? "<|assistant|>\n" : t->eos);
    return true;
}

static bool render_zephyr(const chat_template *t, const chat_msg *m, int n, bool gen, sbuf *b) {
    if (t->leading_bos) sb_add(b, t->bos);
    for (int i = 0; i < n; i++) {
        if (is_role(&m[i], "system") || is_role(&m[i], "user") || is_role(&m[i], "assistant")) {
            sb_add(b, "<|");
            sb_add(b, m[i].role);
            sb_add(b, "|>\n");
            sb_add(b, m[i].content);
            sb_add(b, t->eos);
            sb_add(b, "\n");
        }
        if (i == n - 1 && gen) sb_add(b, "<|assistant|>\n");
    }
    return true;
}

/* gpt-oss's harmony template (openai/gpt-oss-20b, -120b) without tools, builtin_tools or its
 * kwargs (model_identity, reasoning_effort: their defaults): the system header with the date;
 * a first system or developer message as the developer's "# Instructions" (none if empty);
 * user turns; assistant turns in the final channel, the last one (without a generation
 * prompt) ending in <|return|> after its thinking (chat_msg.reasoning) in the analysis channel;
 * earlier thinking dropped; later system/developer messages not rendered; a tool message is
 * the template's error (rotkv's messages carry no tool calls). */
static bool render_harmony(const chat_template *t, const chat_msg *m, int n, bool gen, sbuf *b, char *err,
                           size_t errlen) {
    static const char *const channel_tags[2] = {"<|channel|>analysis<|message|>", "<|channel|>final<|message|>"};
    char date[32];
    if (t->date) {
        snprintf(date, sizeof date, "%s", t->date);
    } else {
        const time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(date, sizeof date, "%Y-%m-%d", &tm);
    }
    sb_add(b, "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
              "Knowledge cutoff: 2024-06\nCurrent date: ");
    sb_add(b, date);
    sb_add(b, "\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be included for "
              "every message.<|end|>");
    int i0 = 0;
    if (n > 0 && (is_role(&m[0], "developer") || is_role(&m[0], "system"))) {
        if (m[0].content[0]) {
            sb_add(b, "<|start|>developer<|message|># Instructions\n\n");
            sb_add(b, m[0].content);
            sb_add(b, "\n\n<|end|>");
        }
        i0 = 1;
    }
    for (int i = i0; i < n; i++) {
        if (is_role(&m[i], "assistant")) {
            for (int f = 0; f < 2; f++) {
                const char *field = f ? m[i].reasoning : m[i].content;
                if (field && (strstr(field, channel_tags[0]) || strstr(field, channel_tags[1])))
                    return set_err(err, errlen,
                                   "You have passed a message containing <|channel|> tags in the %s field. Instead of "
                                   "doing this, you should pass analysis messages (the string between '<|message|>' and "
                                   "'<|end|>') in the 'thinking' field, and final messages (the string between "
                                   "'<|message|>' and '<|end|>') in the 'content' field.", f ? "thinking" : "content");
            }
            const bool last = i == n - 1 && !gen;
            if (last && m[i].reasoning) {
                sb_add(b, "<|start|>assistant<|channel|>analysis<|message|>");
                sb_add(b, m[i].reasoning);
                sb_add(b, "<|end|>");
            }
            sb_add(b, "<|start|>assistant<|channel|>final<|message|>");
            sb_add(b, m[i].content);
            sb_add(b, last ? "<|return|>" : "<|end|>");
        } else if (is_role(&m[i], "tool")) {
            return set_err(err, errlen, "Message has tool role, but there was no previous assistant message with a tool call!");
        } else if (is_role(&m[i], "user")) {
            sb_add(b, "<|start|>user<|message|>");
            sb_add(b, m[i].content);
            sb_add(b, "<|end|>");
        }
    }
    if (gen) sb_add(b, "<|start|>assistant");
    return true;
}

char *chat_template_render(const chat_template *t, const chat_msg *m, int n, bool gen, int thinking, char *err,
                           size_t errlen) {
    for (int i = 0; i < n; i++)
        if (!m[i].role || !m[i].content) {
            set_err(err, errlen, "message %d has no role or no content", i);
            return NULL;
        }
    sbuf b = {0};
    sb_add(&b, "");
    bool ok = false;
    switch (t->family) {
    case CHAT_CHATML: ok = render_chatml(t, m, n, gen, &b); break;
    case CHAT_QWEN3: ok = render_qwen3(t, m, n, gen, thinking, &b, err, errlen); break;
    case CHAT_LLAMA3: ok = render_llama3(t, m, n, gen, &b); break;
    case CHAT_LLAMA2: ok = render_llama2(t, m, n, &b, err, errlen); break;
    case CHAT_MISTRAL: ok = render_mistral(t, m, n, &b, err, errlen); break;
    case CHAT_GEMMA: ok = render_gemma(t, m, n, gen, &b, err, errlen); break;
    case CHAT_PHI3: ok = render_phi3(t, m, n, gen, &b); break;
    case CHAT_ZEPHYR: ok = render_zephyr(t, m, n, gen, &b); break;
    case CHAT_HARMONY: ok = render_harmony(t, m, n, gen, &b, err, errlen); break;
    default: set_err(err, errlen, "unknown chat template family"); break;
    }
    if (ok && b.oom) ok = set_err(err, errlen, "out of memory rendering the chat template");
    if (!ok) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ----------------------------------------------------------- detection */

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* A ChatML template's built-in system prompt: a literal '<|im_start|>system\n...'
 * that is not immediately followed by the closing quote (i.e. not the header of
 * messages[0]). Handles \n escapes. */
static char *chatml_default_system(const char *src) {
    static const char *const heads[] = {"'<|im_start|>system\\n", "\"<|im_start|>system\\n"};
    for (int h = 0; h < 2; h++) {
        const char *p = src;
        while ((p = strstr(p, heads[h]))) {
            p += strlen(heads[h]);
            char q = heads[h][0];
            if (*p == q) continue;
            const char *end = strstr(p, "<|im_end|>");
            const char *qe = strchr(p, q);
            if (!end || (qe && qe < end)) continue;
            char *out = malloc((size_t)(end - p) + 1);
            if (!out) return NULL;
            size_t k = 0;
            for (const char *s = p; s < end; s++) {
                if (*s == '\\' && s + 1 < end) {
                    s++;
                    out[k++] = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
                } else {
                    out[k++] = *s;
                }
            }
            out[k] = 0;
            return out;
        }
    }
    return NULL;
}

static bool starts_with_bos(const char *src) {
    while (*src == ' ' || *src == '\n' || *src == '\t') src++;
    return !strncmp(src, "{{ bos_token }}", 15) || !strncmp(src, "{{- bos_token }}", 16) ||
           !strncmp(src, "{{bos_token}}", 13) || !strncmp(src, "{{- bos_token -}}", 17);
}

bool chat_template_init(chat_template *t, const char *src, const char *bos, const char *eos, char *warn,
                        size_t warnlen) {
    memset(t, 0, sizeof *t);
    t->bos = dup_str(bos ? bos : "");
    t->eos = dup_str(eos ? eos : "");
    if (warn && warnlen) warn[0] = 0;
    t->family = CHAT_CHATML;
    if (!src || !*src) {
        set_err(warn, warnlen, "the model has no tokenizer.chat_template: using ChatML");
        return false;
    }
    t->leading_bos = starts_with_bos(src);
    t->recognised = true;
    if (strstr(src, "<|start|>") && strstr(src, "<|channel|>") && strstr(src, "<|message|>")) {
        t->family = CHAT_HARMONY;
        if (strstr(src, "tools") || strstr(src, "builtin_tools"))
            set_err(warn, warnlen, "chat template is gpt-oss's harmony: rendered without tools, builtin_tools, "
                                   "model_identity or reasoning_effort (their defaults)");
    } else if (strstr(src, "<|im_start|>")) {
        if (strstr(src, "<think>") && strstr(src, "last_query_index")) t->family = CHAT_QWEN3;
        else {
            t->family = CHAT_CHATML;
            t->default_system = chatml_default_system(src);
            t->qwen_tools = strstr(src, "<tool_response>") != NULL;
        }
    } else if (strstr(src, "<|start_header_id|>") && strstr(src, "<|eot_id|>")) {
        t->family = CHAT_LLAMA3;
        t->gen_prompt_always = strstr(src, "add_generation_prompt") == NULL;
        if (strstr(src, "Cutting Knowledge Date")) {
            set_err(warn, warnlen,
                    "chat template looks like Llama-3.1+ (date header, tools): rendered in the plain Llama-3 format "
                    "without the date header");
        }
    } else if (strstr(src, "<start_of_turn>")) {
        t->family = CHAT_GEMMA;
        t->gemma_sys_prefix = strstr(src, "first_user_prefix") != NULL;
    } else if (strstr(src, "[INST]")) {
        t->family = strstr(src, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    } else if (strstr(src, "<|user|>")) {
        t->family = strstr(src, "<|end|>") ? CHAT_PHI3 : CHAT_ZEPHYR;
    } else {
        t->recognised = false;
        t->leading_bos = false;
        set_err(warn, warnlen, "unrecognised chat template (not ChatML, Qwen3, Llama-2/3, Mistral, Gemma, Phi-3, "
                               "Zephyr or gpt-oss): falling back to ChatML; choose one with --chat-template NAME");
        return false;
    }
    return true;
}

char *chat_template_source(const rotkv_model *m) {
    gguf_str s;
    if (!m || !m->gguf || !gguf_get_str(m->gguf, "tokenizer.chat_template", &s)) return NULL;
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    memcpy(out, s.ptr, s.len);
    out[s.len] = 0;
    return out;
}

static char *token_text(const rotkv_model *m, int32_t id) {
    if (id < 0 || id >= tokenizer_n_vocab(m->tok)) return dup_str("");
    gguf_str s = tokenizer_token_text(m->tok, id);
    char *out = malloc(s.len + 1);
    if (!out) return NULL;
    memcpy(out, s.ptr, s.len);
    out[s.len] = 0;
    return out;
}

bool chat_template_init_model(chat_template *t, const rotkv_model *m, int force_family, char *warn, size_t warnlen) {
    char *src = chat_template_source(m);
    char *bos = token_text(m, tokenizer_bos(m->tok)), *eos = token_text(m, tokenizer_eos(m->tok));
    bool ok = chat_template_init(t, src, bos, eos, warn, warnlen);
    if (force_family >= 0 && force_family < CHAT_FAMILY_COUNT) {
        t->family = (chat_family)force_family;
        t->recognised = true;
        if (!src) t->leading_bos = force_family == CHAT_MISTRAL || force_family == CHAT_GEMMA;
        if (warn && warnlen) warn[0] = 0;
        ok = true;
    }
    free(src);
    free(bos);
    free(eos);
    return ok;
}

void chat_template_free(chat_template *t) {
    if (!t) return;
    free(t->bos);
    free(t->eos);
    free(t->default_system);
    free(t->date);
    memset(t, 0, sizeof *t);
}
