/* fuzz_chat_template.c — libFuzzer target for chat-template detection and
 * rendering (src/chat_template.c).
 *
 * Input: byte 0 holds flags; the rest is split at NUL bytes into fields:
 *   template source, bos text, eos text, then (role, content, reasoning)
 *   triples, at most 64 messages (a missing last field is "").
 * A one-byte role field b is read as system/user/assistant/tool (b % 4), any
 * longer one is used as it is; an empty reasoning field is NULL (undefined).
 * Flags: bit 0 add_generation_prompt; bits 1-2 enable_thinking (1: false,
 * 2: true, else undefined); bits 3-6 f: f in 1..8 forces family f-1 (as
 * --chat-template does), else the family is detected from the source.
 *
 * Checks: detection reports a known family, and a warning exactly when it did
 * not recognise the template; rendering returns text or a non-empty error,
 * the same both times it is run; ChatML output ends with the generation prompt
 * when asked and holds every message's content verbatim. */
#include "chat_template.h"
#include "fuzz_common.h"

#define MAX_MSGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t flags = data[0];
    const bool gen = flags & 1;
    const int thinking = ((flags >> 1) & 3) == 1 ? 0 : ((flags >> 1) & 3) == 2 ? 1 : -1;
    const int force = ((flags >> 3) & 15) - 1;
    char *text = fuzz_copy(data + 1, size - 1, true);
    const char *end = text + size - 1;
    const char *field[3 + 3 * MAX_MSGS];
    int nf = 0;
    for (const char *p = text; nf < (int)(sizeof field / sizeof *field);) {
        field[nf++] = p;
        p += strlen(p);
        if (p >= end) break;
        p++;
    }
    while (nf < 3 || (nf - 3) % 3) field[nf++] = "";
    static const char *const roles[4] = {"system", "user", "assistant", "tool"};
    chat_msg msgs[MAX_MSGS];
    const int n = (nf - 3) / 3;
    for (int i = 0; i < n; i++) {
        const char *r = field[3 + 3 * i];
        msgs[i].role = strlen(r) == 1 ? roles[(uint8_t)r[0] % 4] : r;
        msgs[i].content = field[4 + 3 * i];
        msgs[i].reasoning = *field[5 + 3 * i] ? field[5 + 3 * i] : NULL;
    }

    chat_template t;
    char warn[256];
    bool ok = chat_template_init(&t, field[0], field[1], field[2], warn, sizeof warn);
    CHECK(ok == t.recognised);
    CHECK(ok == !warn[0] || (t.family == CHAT_LLAMA3 && ok)); /* Llama-3.1 is recognised with a warning */
    CHECK((unsigned)t.family < CHAT_FAMILY_COUNT);
    CHECK(chat_family_from_name(chat_family_name(t.family)) == (int)t.family);
    if (force >= 0 && force < CHAT_FAMILY_COUNT) t.family = (chat_family)force;

    char err[256] = "";
    char *out = chat_template_render(&t, msgs, n, gen, thinking, err, sizeof err);
    char err2[256] = "";
    char *again = chat_template_render(&t, msgs, n, gen, thinking, err2, sizeof err2);
    CHECK(!out == !again);
    if (!out) {
        CHECK(err[0] && !strcmp(err, err2));
    } else {
        CHECK(!strcmp(out, again));
        if (t.family == CHAT_CHATML) {
            static const char gp[] = "<|im_start|>assistant\n";
            const size_t L = strlen(out);
            if (gen) CHECK(L >= sizeof gp - 1 && !strcmp(out + L - (sizeof gp - 1), gp));
            for (int i = 0; i < n; i++) CHECK(strstr(out, msgs[i].content));
        }
    }
    free(out);
    free(again);
    chat_template_free(&t);

    /* no template at all: the ChatML fallback, with a warning */
    ok = chat_template_init(&t, NULL, field[1], field[2], warn, sizeof warn);
    CHECK(!ok && warn[0] && t.family == CHAT_CHATML);
    chat_template_free(&t);
    free(text);
    return 0;
}
