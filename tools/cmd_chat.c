/* cmd_chat.c — `rotkv chat`: an interactive terminal chat with the model's chat
 * template, on the same engine as `rotkv serve` (one slot; the conversation so
 * far stays in the KV cache and is reused as the prefix of the next turn).
 *
 *   --print-template   prints the model's tokenizer.chat_template and exits
 *   --render FILE      renders the conversations in FILE (a JSON list of
 *                      {"messages": [...], "add_generation_prompt": bool,
 *                      "enable_thinking": bool}) and prints a JSON list of
 *                      {"text": ...} or {"error": ...}: what the tests compare
 *                      with python3-jinja2. Both work on vocab-only models. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cli.h"
#include "server.h"

static int render_file(const rotkv_model *m, const chat_template *t, const char *path) {
    cli_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.file = path;
    size_t len;
    char *txt = cli_read_text(&fo, &len);
    if (!txt) return 1;
    cJSON *convs = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!cJSON_IsArray(convs)) {
        fprintf(stderr, "rotkv chat: %s: expected a JSON list of conversations\n", path);
        cJSON_Delete(convs);
        return 1;
    }
    cJSON *out = cJSON_CreateArray(), *conv;
    cJSON_ArrayForEach(conv, convs) {
        cJSON *msgs = cJSON_GetObjectItem(conv, "messages");
        int n = cJSON_GetArraySize(msgs);
        chat_msg *cm = calloc((size_t)n + 1, sizeof *cm);
        for (int i = 0; i < n; i++) {
            cJSON *mi = cJSON_GetArrayItem(msgs, i);
            cm[i].role = cJSON_GetStringValue(cJSON_GetObjectItem(mi, "role"));
            cm[i].content = cJSON_GetStringValue(cJSON_GetObjectItem(mi, "content"));
            cm[i].reasoning = cJSON_GetStringValue(cJSON_GetObjectItem(mi, "reasoning_content"));
        }
        cJSON *agp = cJSON_GetObjectItem(conv, "add_generation_prompt"), *et = cJSON_GetObjectItem(conv, "enable_thinking");
        char err[256] = "";
        char *r = chat_template_render(t, cm, n, agp ? cJSON_IsTrue(agp) : true, et ? cJSON_IsTrue(et) : -1, err,
                                       sizeof err);
        cJSON *o = cJSON_CreateObject();
        if (r) cJSON_AddStringToObject(o, "text", r);
        else cJSON_AddStringToObject(o, "error", err);
        cJSON_AddItemToArray(out, o);
        free(r);
        free(cm);
    }
    char *s = cJSON_PrintUnformatted(out);
    puts(s ? s : "[]");
    free(s);
    cJSON_Delete(out);
    cJSON_Delete(convs);
    (void)m;
    return 0;
}

typedef struct {
    chat_msg *m;
    char **own;
    int n, cap;
} history;

static void hist_add(history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->m = realloc(h->m, (size_t)h->cap * sizeof *h->m);
        h->own = realloc(h->own, (size_t)h->cap * sizeof *h->own);
    }
    size_t L = strlen(content);
    h->own[h->n] = malloc(L + 1);
    memcpy(h->own[h->n], content, L + 1);
    h->m[h->n] = (chat_msg){role, h->own[h->n], NULL};
    h->n++;
}

static void hist_clear(history *h, int keep) {
    while (h->n > keep) free(h->own[--h->n]);
}

int cmd_chat(int argc, char **argv) {
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv chat -m MODEL [--system TEXT] [-n N] [-c CTX] [-ctk T] [-ctv T] [--temp T] [--top-k K]\n"
               "       [--top-p P] [--min-p P] [--seed S] [--chat-template NAME]\n"
               "       rotkv chat -m MODEL --print-template | --render CONVERSATIONS.json\n"
               "  Type a message and press enter; /reset starts over, /exit (or end of input) quits.\n");
        return 0;
    }
    cli_opts o;
    if (!cli_parse(argc, argv, &o)) return 2;
    cli_default_model(&o);
    int force = -1;
    if (o.chat_template && (force = chat_family_from_name(o.chat_template)) < 0) {
        fprintf(stderr, "rotkv: unknown --chat-template '%s'\n", o.chat_template);
        return 2;
    }
    const bool tool_only = o.print_template || o.render;
    rotkv_model *m = cli_load_model(&o, tool_only, NULL);
    if (!m) return 1;
    int rc = 0;
    if (o.print_template) {
        char *src = chat_template_source(m);
        if (!src) {
            fprintf(stderr, "rotkv chat: the model has no tokenizer.chat_template\n");
            rc = 1;
        } else {
            fputs(src, stdout);
            free(src);
        }
        cli_kv_release(&o);
        rotkv_model_free(m);
        return rc;
    }
    chat_template t;
    char warn[300];
    if (!chat_template_init_model(&t, m, force, warn, sizeof warn) || warn[0])
        fprintf(stderr, "rotkv chat: warning: %s\n", warn);
    if (o.render) {
        rc = render_file(m, &t, o.render);
        chat_template_free(&t);
        cli_kv_release(&o);
        rotkv_model_free(m);
        return rc;
    }
    rotkv_context_params cp;
    if (!cli_context_params(&o, &cp) || !cli_layer_overrides(&o, m, &cp)) {
        chat_template_free(&t);
        cli_kv_release(&o);
        rotkv_model_free(m);
        return 2;
    }
    srv_params sp = {.n_parallel = 1, .kv_budget_bytes = o.kv_budget, .queue_max = 1, .timeout_s = 1e9,
                     .model_path = cli_model_path(&o)};
    char err[512];
    srv_engine *e = srv_engine_start(m, &cp, &sp, err, sizeof err);
    if (!e) {
        fprintf(stderr, "rotkv chat: error: %s\n", err);
        chat_template_free(&t);
        cli_kv_release(&o);
        rotkv_model_free(m);
        return 1;
    }
    fprintf(stderr, "rotkv chat: template %s, context %u tokens. /reset starts over, /exit quits.\n",
            chat_family_name(t.family), srv_n_ctx(e));
    history h = {0};
    int base = 0;
    if (o.system_prompt) {
        hist_add(&h, "system", o.system_prompt);
        base = 1;
    }
    char *line = NULL;
    size_t cap = 0;
    for (;;) {
        fprintf(stderr, "> ");
        fflush(stderr);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            hist_clear(&h, base);
            continue;
        }
        if (!n) continue;
        hist_add(&h, "user", line);
        char rerr[256] = "";
        char *text = chat_template_render(&t, h.m, h.n, true, -1, rerr, sizeof rerr);
        if (!text) {
            fprintf(stderr, "rotkv chat: the chat template refuses this conversation: %s\n", rerr);
            hist_clear(&h, h.n - 1);
            continue;
        }
        int32_t np = 0;
        rotkv_token *toks = srv_tokenize_chat(m, &t, text, &np);
        free(text);
        srv_request *r = srv_request_new(REQ_GENERATE);
        r->prompt = toks;
        r->n_prompt = np;
        int room = (int)srv_n_ctx(e) - np;
        r->max_tokens = o.n_predict > 0 && o.n_predict < room ? o.n_predict : room > 0 ? room : 1;
        r->sp = o.sp;
        int st = toks ? srv_submit(e, r) : 400;
        if (st) {
            fprintf(stderr, "rotkv chat: %s\n", toks ? r->error : "tokenization failed");
            srv_request_unref(r);
            hist_clear(&h, h.n - 1);
            continue;
        }
        size_t sent = 0;
        pthread_mutex_lock(&r->mu);
        for (;;) {
            while (!r->done && r->text_len == sent) pthread_cond_wait(&r->cv, &r->mu);
            if (r->text_len > sent) {
                fwrite(r->text + sent, 1, r->text_len - sent, stdout);
                fflush(stdout);
                sent = r->text_len;
            }
            if (r->done) break;
        }
        pthread_mutex_unlock(&r->mu);
        fputc('\n', stdout);
        if (r->status) {
            fprintf(stderr, "rotkv chat: error: %s\n", r->error);
            hist_clear(&h, h.n - 1);
        } else {
            hist_add(&h, "assistant", r->text ? r->text : "");
            fprintf(stderr, "[%d prompt tokens (%d cached), %d generated, %s]\n", r->n_prompt_tokens,
                    r->n_cached_tokens, r->n_gen_tokens, r->finish_reason);
        }
        srv_request_unref(r);
    }
    free(line);
    hist_clear(&h, 0);
    free(h.m);
    free(h.own);
    srv_engine_stop(e);
    chat_template_free(&t);
    cli_kv_release(&o);
    rotkv_model_free(m);
    return 0;
}
