/* test_chat_template.c — chat templates rendered by rotkv equal python3-jinja2's
 * rendering of the template text itself (tests/server/jinja_render.py, the HF
 * settings), for every supported family (gpt-oss's harmony with a fixed date) and for the real templates in
 * vocab-llama3.gguf and vocab-qwen3.gguf, over tests/server/conversations.json
 * (multi-turn, system prompts, <think> turns, tools, unicode whitespace). */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_template.h"
#include "rotkv.h"
#include "testutil.h"

#define CONVS "tests/server/conversations.json"
#define ORACLE "tests/server/jinja_render.py"

static bool have_jinja(void) {
    static int have = -1;
    if (have < 0) have = system("python3 -c 'import jinja2' >/dev/null 2>&1") == 0;
    return have;
}

static char *shell_quote(const char *s) {
    size_t n = strlen(s);
    char *q = malloc(4 * n + 3), *p = q;
    *p++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy(p, "'\\''", 4);
            p += 4;
        } else {
            *p++ = *s;
        }
    }
    *p++ = '\'';
    *p = 0;
    return q;
}

static char *run_capture(const char *cmd) {
    FILE *fp = popen(cmd, "r");
    if (!fp) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += r;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    if (pclose(fp) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Renders every conversation with t and compares with the oracle's output for
 * source (a --template FILE or --gguf FILE argument). */
static void compare_all(const chat_template *t, const char *source_arg, const char *label) {
    size_t len;
    char *convs_txt = test_read_file(CONVS, &len);
    assert_non_null(convs_txt);
    cJSON *convs = cJSON_Parse(convs_txt);
    assert_non_null(convs);
    char *qb = shell_quote(t->bos), *qe = shell_quote(t->eos);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "python3 %s %s %s --bos %s --eos %s", ORACLE, source_arg, CONVS, qb, qe);
    free(qb);
    free(qe);
    char *out = run_capture(cmd);
    assert_non_null(out);
    cJSON *want = cJSON_Parse(out);
    assert_non_null(want);
    assert_int_equal(cJSON_GetArraySize(want), cJSON_GetArraySize(convs));
    int idx = 0, n_text = 0, n_err = 0;
    cJSON *conv;
    cJSON_ArrayForEach(conv, convs) {
        cJSON *msgs = cJSON_GetObjectItem(conv, "messages");
        int n = cJSON_GetArraySize(msgs);
        chat_msg *m = calloc((size_t)n + 1, sizeof *m);
        for (int i = 0; i < n; i++) {
            cJSON *mi = cJSON_GetArrayItem(msgs, i);
            m[i].role = cJSON_GetStringValue(cJSON_GetObjectItem(mi, "role"));
            m[i].content = cJSON_GetStringValue(cJSON_GetObjectItem(mi, "content"));
            m[i].reasoning = cJSON_GetStringValue(cJSON_GetObjectItem(mi, "reasoning_content"));
        }
        cJSON *agp = cJSON_GetObjectItem(conv, "add_generation_prompt");
        cJSON *et = cJSON_GetObjectItem(conv, "enable_thinking");
        bool gen = agp ? cJSON_IsTrue(agp) : true;
        int thinking = et ? cJSON_IsTrue(et) : -1;
        char err[256] = "";
        char *got = chat_template_render(t, m, n, gen, thinking, err, sizeof err);
        cJSON *w = cJSON_GetArrayItem(want, idx);
        const char *wtext = cJSON_GetStringValue(cJSON_GetObjectItem(w, "text"));
        const char *werr = cJSON_GetStringValue(cJSON_GetObjectItem(w, "error"));
        if (wtext) {
            if (!got || strcmp(got, wtext)) {
                print_error("%s, conversation %d:\n--- jinja2:\n%s\n--- rotkv:\n%s\n(%s)\n", label, idx, wtext,
                            got ? got : "(error)", err);
                fail();
            }
            n_text++;
        } else {
            if (got) {
                print_error("%s, conversation %d: jinja2 raised '%s' but rotkv rendered:\n%s\n", label, idx, werr,
                            got);
                fail();
            }
            assert_string_equal(err, werr);
            n_err++;
        }
        free(got);
        free(m);
        idx++;
    }
    print_message("[ INFO     ] %s (%s): %d conversations equal to jinja2, %d raise the same error\n", label,
                  chat_family_name(t->family), n_text, n_err);
    cJSON_Delete(want);
    cJSON_Delete(convs);
    free(out);
    free(convs_txt);
}

static const struct {
    const char *file;
    chat_family family;
} families[] = {
    {"chatml-openhermes.jinja", CHAT_CHATML}, {"qwen2.5.jinja", CHAT_CHATML},   {"llama3-instruct.jinja", CHAT_LLAMA3},
    {"llama2-chat.jinja", CHAT_LLAMA2},       {"mistral-v0.2.jinja", CHAT_MISTRAL}, {"gemma-it.jinja", CHAT_GEMMA},
    {"phi3-mini.jinja", CHAT_PHI3},           {"zephyr.jinja", CHAT_ZEPHYR},     {"gemma3-it.jinja", CHAT_GEMMA},
    {"gpt-oss.jinja", CHAT_HARMONY},
};

static void test_families_vs_jinja(void **state) {
    (void)state;
    if (!have_jinja()) {
        print_message("[ SKIP     ] python3-jinja2 not installed (apt-get install python3-jinja2)\n");
        skip();
    }
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        char path[512], arg[600];
        snprintf(path, sizeof path, "tests/server/templates/%s", families[i].file);
        size_t len;
        char *src = test_read_file(path, &len);
        assert_non_null(src);
        chat_template t;
        char warn[256];
        assert_true(chat_template_init(&t, src, "<s>", "</s>", warn, sizeof warn));
        assert_int_equal(t.family, families[i].family);
        snprintf(arg, sizeof arg, "--template %s", path);
        if (t.family == CHAT_HARMONY) { /* a fixed day for its strftime_now; reasoning_content is its "thinking" */
            t.date = strdup("2026-12-07");
            snprintf(arg, sizeof arg, "--template %s --date 2026-12-07 --thinking-from-reasoning", path);
        }
        compare_all(&t, arg, families[i].file);
        chat_template_free(&t);
        free(src);
    }
}

static void gguf_vs_jinja(const char *rel, chat_family fam) {
    char path[512], arg[600];
    SKIP_WITHOUT_SHARED(path, rel);
    if (!have_jinja()) {
        print_message("[ SKIP     ] python3-jinja2 not installed (apt-get install python3-jinja2)\n");
        skip();
    }
    rotkv_model_params mp = rotkv_model_default_params();
    mp.vocab_only = true;
    rotkv_model *m = NULL;
    rotkv_error err;
    assert_int_equal(rotkv_model_load(path, &mp, &m, &err), ROTKV_OK);
    chat_template t;
    char warn[256];
    assert_true(chat_template_init_model(&t, m, -1, warn, sizeof warn));
    assert_true(t.recognised);
    assert_int_equal(t.family, fam);
    snprintf(arg, sizeof arg, "--gguf %s", path);
    compare_all(&t, arg, rel);
    chat_template_free(&t);
    rotkv_model_free(m);
}

static void test_gguf_llama3(void **state) {
    (void)state;
    gguf_vs_jinja("models/vocab-llama3.gguf", CHAT_LLAMA3);
}
static void test_gguf_qwen3(void **state) {
    (void)state;
    gguf_vs_jinja("models/vocab-qwen3.gguf", CHAT_QWEN3);
}

/* Hand-checked renderings that need no python. */
static void test_fixed_outputs(void **state) {
    (void)state;
    chat_template t;
    char warn[256], err[256];
    chat_msg conv[] = {{"system", "S", NULL}, {"user", "U", NULL}};
    /* no template: ChatML fallback, with a warning */
    assert_false(chat_template_init(&t, NULL, "<s>", "</s>", warn, sizeof warn));
    assert_non_null(strstr(warn, "ChatML"));
    char *r = chat_template_render(&t, conv, 2, true, -1, err, sizeof err);
    assert_string_equal(r, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
    free(r);
    chat_template_free(&t);
    /* an unknown template is reported, not silently used */
    assert_false(chat_template_init(&t, "{{ messages[0].content }} ### Response:", "", "", warn, sizeof warn));
    assert_false(t.recognised);
    assert_non_null(strstr(warn, "unrecognised chat template"));
    chat_template_free(&t);
    /* gemma refuses a system prompt like its template does */
    assert_true(chat_template_init(&t, "{{ bos_token }}<start_of_turn>", "<bos>", "<eos>", warn, sizeof warn));
    assert_null(chat_template_render(&t, conv, 2, true, -1, err, sizeof err));
    assert_string_equal(err, "System role not supported");
    chat_template_free(&t);
    assert_int_equal(chat_family_from_name("qwen3"), CHAT_QWEN3);
    assert_int_equal(chat_family_from_name("nope"), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_outputs),
        cmocka_unit_test(test_families_vs_jinja),
        cmocka_unit_test(test_gguf_llama3),
        cmocka_unit_test(test_gguf_qwen3),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
