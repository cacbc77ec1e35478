/* server_request.c — the JSON bodies of `rotkv serve`'s endpoints turned into
 * validated srv_requests (see server.h), with no HTTP or socket in the way:
 * server_http.c calls these, and so does fuzz/fuzz_server_request.c. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "server.h"

/* ---------------------------------------------------------- validation */

typedef struct {
    char msg[400];
    const char *param;
} verr;

static bool bad(verr *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool bad(verr *e, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->param = param;
    return false;
}

static bool get_num(const cJSON *o, const char *k, double lo, double hi, double *out, verr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(e, k, "'%s' must be a number", k);
    if (v->valuedouble < lo || v->valuedouble > hi) return bad(e, k, "'%s' must be between %g and %g", k, lo, hi);
    *out = v->valuedouble;
    return true;
}

static bool get_int(const cJSON *o, const char *k, double lo, double hi, long long *out, verr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return bad(e, k, "'%s' must be an integer", k);
    if (v->valuedouble < lo || v->valuedouble > hi) return bad(e, k, "'%s' must be between %.0f and %.0f", k, lo, hi);
    *out = (long long)v->valuedouble;
    return true;
}

static bool get_bool(const cJSON *o, const char *k, bool *out, verr *e) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return true;
    if (!cJSON_IsBool(v)) return bad(e, k, "'%s' must be a boolean", k);
    *out = cJSON_IsTrue(v);
    return true;
}

typedef struct {
    bool chat, stream, include_usage;
    int max_tokens; /* -1: default */
    rotkv_sampler_params sp;
    char **stop;
    int n_stop;
    int enable_thinking;
} gen_params;

static void gen_params_free(gen_params *g) {
    for (int i = 0; i < g->n_stop; i++) free(g->stop[i]);
    free(g->stop);
    g->stop = NULL;
    g->n_stop = 0;
}

static char *dupstr(const char *s) {
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

static bool parse_common(const srv_parse_ctx *s, const cJSON *req, gen_params *g, verr *e) {
    g->sp = s->o->sp;
    g->max_tokens = -1;
    g->enable_thinking = -1;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(req, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) return bad(e, "model", "'model' must be a string");
        if (strcmp(model->valuestring, s->o->model_id)) {
            e->param = "model";
            snprintf(e->msg, sizeof e->msg, "The model '%.150s' does not exist (this server has '%.150s')",
                     model->valuestring, s->o->model_id);
            return false;
        }
    }
    long long mt = -1, n = 1, topk = g->sp.top_k, seed = -1;
    double temp = g->sp.temp, top_p = g->sp.top_p, min_p = g->sp.min_p;
    if (!get_int(req, "max_tokens", 1, s->o->max_tokens_limit, &mt, e)) return false;
    if (!get_int(req, "max_completion_tokens", 1, s->o->max_tokens_limit, &mt, e)) return false;
    if (!get_int(req, "n", 1, 1, &n, e)) return false;
    if (!get_num(req, "temperature", 0, 2, &temp, e)) return false;
    if (!get_num(req, "top_p", 0, 1, &top_p, e)) return false;
    if (!get_num(req, "min_p", 0, 1, &min_p, e)) return false;
    if (!get_int(req, "top_k", 0, 1e6, &topk, e)) return false;
    if (!get_int(req, "seed", -9.2e18, 9.2e18, &seed, e)) return false;
    if (!get_bool(req, "stream", &g->stream, e)) return false;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(req, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return bad(e, "stream_options", "'stream_options' must be an object");
        if (!get_bool(so, "include_usage", &g->include_usage, e)) return false;
    }
    g->max_tokens = (int)mt;
    g->sp.temp = (float)temp;
    g->sp.top_p = (float)top_p;
    g->sp.min_p = (float)min_p;
    g->sp.top_k = (int32_t)topk;
    if (seed != -1) g->sp.seed = (uint64_t)seed;
    else g->sp.seed = s->o->sp.seed ^ (s->seed_salt * 0x9e3779b97f4a7c15ull);
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(req, "stop");
    if (stop && !cJSON_IsNull(stop)) {
        int cnt = cJSON_IsString(stop) ? 1 : cJSON_IsArray(stop) ? cJSON_GetArraySize(stop) : -1;
        if (cnt < 0) return bad(e, "stop", "'stop' must be a string or an array of strings");
        if (cnt > 16) return bad(e, "stop", "'stop' may hold at most 16 strings");
        g->stop = calloc((size_t)cnt + 1, sizeof *g->stop);
        for (int i = 0; i < cnt; i++) {
            const cJSON *si = cJSON_IsString(stop) ? stop : cJSON_GetArrayItem(stop, i);
            if (!cJSON_IsString(si)) return bad(e, "stop", "'stop' must be a string or an array of strings");
            size_t L = strlen(si->valuestring);
            if (L == 0 || L > 512) return bad(e, "stop", "each stop string must have 1 to 512 bytes");
            g->stop[g->n_stop++] = dupstr(si->valuestring);
        }
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(req, "tools");
    if (tools && !cJSON_IsNull(tools) && !(cJSON_IsArray(tools) && cJSON_GetArraySize(tools) == 0))
        return bad(e, "tools", "tools / function calling are not supported by this server");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(req, "chat_template_kwargs");
    if (kw && !cJSON_IsNull(kw)) {
        if (!cJSON_IsObject(kw)) return bad(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
        bool et = true;
        const cJSON *etv = cJSON_GetObjectItemCaseSensitive(kw, "enable_thinking");
        if (etv) {
            if (!get_bool(kw, "enable_thinking", &et, e)) return false;
            g->enable_thinking = et;
        }
    }
    return true;
}

/* Text of a message content: a string, or an array of {"type":"text","text":...}. */
static char *content_text(const cJSON *c, int i, verr *e) {
    if (cJSON_IsString(c)) return dupstr(c->valuestring);
    if (cJSON_IsArray(c)) {
        size_t n = 0;
        const cJSON *part;
        cJSON_ArrayForEach(part, c) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "type");
            const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") || !cJSON_IsString(tx)) {
                bad(e, "messages", "messages[%d].content: only text parts ({\"type\": \"text\", \"text\": ...}) are supported", i);
                return NULL;
            }
            n += strlen(tx->valuestring) + 1;
        }
        char *out = malloc(n + 1), *p = out;
        if (!out) return NULL;
        bool first = true;
        cJSON_ArrayForEach(part, c) {
            const char *tx = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
            if (!first) *p++ = '\n';
            first = false;
            size_t L = strlen(tx);
            memcpy(p, tx, L);
            p += L;
        }
        *p = 0;
        return out;
    }
    bad(e, "messages", "messages[%d].content must be a string or an array of text parts", i);
    return NULL;
}

rotkv_token *srv_tokenize_chat(const rotkv_model *m, const chat_template *t, const char *text, int32_t *n) {
    size_t len = strlen(text);
    bool has_bos = t && t->bos[0] && !strncmp(text, t->bos, strlen(t->bos));
    int32_t cap = (int32_t)(len + 16 < (1u << 28) ? len + 16 : (1u << 28));
    rotkv_token *toks = malloc((size_t)cap * sizeof *toks);
    if (!toks) return NULL;
    int32_t k = rotkv_tokenize(m, text, len, toks, cap, !has_bos, true);
    if (k < 0) {
        free(toks);
        return NULL;
    }
    *n = k;
    return toks;
}

/* Builds the prompt tokens of a request; false with e filled. */
static bool build_prompt(const srv_parse_ctx *s, const cJSON *req, gen_params *g, rotkv_token **toks, int32_t *n, verr *e) {
    *toks = NULL;
    if (g->chat) {
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
        if (!cJSON_IsArray(msgs)) return bad(e, "messages", "'messages' must be an array of messages");
        int nm = cJSON_GetArraySize(msgs);
        if (nm == 0) return bad(e, "messages", "'messages' must not be empty");
        if (nm > 4096) return bad(e, "messages", "too many messages (%d, at most 4096)", nm);
        chat_msg *cm = calloc((size_t)nm, sizeof *cm);
        char **owned = calloc((size_t)nm, sizeof *owned);
        bool ok = cm && owned;
        for (int i = 0; ok && i < nm; i++) {
            const cJSON *mi = cJSON_GetArrayItem(msgs, i);
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(mi, "role");
            if (!cJSON_IsObject(mi) || !cJSON_IsString(role)) {
                ok = bad(e, "messages", "messages[%d] must be an object with a string 'role'", i);
                break;
            }
            const char *r = role->valuestring;
            if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
                ok = bad(e, "messages", "messages[%d].role '%.40s' is not one of system, user, assistant, tool", i, r);
                break;
            }
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(mi, "content");
            owned[i] = content ? content_text(content, i, e) : NULL;
            if (!owned[i]) {
                if (!content) bad(e, "messages", "messages[%d] has no 'content'", i);
                ok = false;
                break;
            }
            cm[i].role = r;
            cm[i].content = owned[i];
            const cJSON *rc = cJSON_GetObjectItemCaseSensitive(mi, "reasoning_content");
            if (rc && !cJSON_IsNull(rc)) {
                if (!cJSON_IsString(rc)) {
                    ok = bad(e, "messages", "messages[%d].reasoning_content must be a string", i);
                    break;
                }
                cm[i].reasoning = rc->valuestring;
            }
        }
        char *text = NULL;
        if (ok) {
            char err[256] = "";
            text = chat_template_render(s->tmpl, cm, nm, true, g->enable_thinking, err, sizeof err);
            if (!text) ok = bad(e, "messages", "the model's chat template refuses this conversation: %s", err);
        }
        for (int i = 0; owned && i < nm; i++) free(owned[i]);
        free(owned);
        free(cm);
        if (!ok) return false;
        if (s->tok_mu) pthread_mutex_lock(s->tok_mu);
        *toks = srv_tokenize_chat(s->model, s->tmpl, text, n);
        if (s->tok_mu) pthread_mutex_unlock(s->tok_mu);
        free(text);
        if (!*toks) return bad(e, "messages", "tokenization failed");
        return true;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(req, "prompt");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsString(p)) {
        size_t len = strlen(p->valuestring);
        int32_t cap = (int32_t)(len + 16 < (1u << 28) ? len + 16 : (1u << 28));
        *toks = malloc((size_t)cap * sizeof **toks);
        if (!*toks) return bad(e, "prompt", "out of memory");
        if (s->tok_mu) pthread_mutex_lock(s->tok_mu);
        int32_t k = rotkv_tokenize(s->model, p->valuestring, len, *toks, cap, true, true);
        if (s->tok_mu) pthread_mutex_unlock(s->tok_mu);
        if (k < 0) return bad(e, "prompt", "tokenization failed");
        *n = k;
        return true;
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0) {
        int cnt = cJSON_GetArraySize(p), i = 0;
        *toks = malloc((size_t)cnt * sizeof **toks);
        if (!*toks) return bad(e, "prompt", "out of memory");
        const cJSON *t;
        cJSON_ArrayForEach(t, p) {
            if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) || t->valuedouble < 0 ||
                t->valuedouble >= rotkv_n_vocab(s->model))
                return bad(e, "prompt", "'prompt' must be a string, an array of one string, or an array of token ids in [0, %d)",
                           rotkv_n_vocab(s->model));
            (*toks)[i++] = (rotkv_token)t->valuedouble;
        }
        *n = cnt;
        return true;
    }
    return bad(e, "prompt", "'prompt' must be a string, an array of one string, or an array of token ids");
}

/* Fills e from a validation failure; 404 for an unknown model, like OpenAI. */
static void parse_fail(srv_parse_error *e, const verr *v) {
    const bool model = v->param && !strcmp(v->param, "model") && strstr(v->msg, "does not exist");
    e->status = model ? 404 : 400;
    e->code = model ? "model_not_found" : "invalid_value";
    e->param = v->param;
    snprintf(e->msg, sizeof e->msg, "%s", v->msg);
}

static void set_error(srv_parse_error *e, int status, const char *code, const char *param, const char *msg) {
    e->status = status;
    e->code = code;
    e->param = param;
    snprintf(e->msg, sizeof e->msg, "%s", msg);
}

srv_request *srv_parse_generate(const srv_parse_ctx *s, const char *body, size_t len, bool chat, bool *stream,
                                bool *include_usage, srv_parse_error *e) {
    cJSON *req = cJSON_ParseWithLength(body ? body : "", body ? len : 0);
    if (!req) {
        set_error(e, 400, "invalid_json", NULL, "the request body is not valid JSON");
        return NULL;
    }
    if (!cJSON_IsObject(req)) {
        cJSON_Delete(req);
        set_error(e, 400, "invalid_json", NULL, "the request body must be a JSON object");
        return NULL;
    }
    gen_params g = {.chat = chat};
    verr v = {"", NULL};
    rotkv_token *toks = NULL;
    int32_t n = 0;
    if (!parse_common(s, req, &g, &v) || !build_prompt(s, req, &g, &toks, &n, &v)) {
        cJSON_Delete(req);
        gen_params_free(&g);
        free(toks);
        parse_fail(e, &v);
        return NULL;
    }
    cJSON_Delete(req);
    srv_request *r = srv_request_new(REQ_GENERATE);
    if (!r) {
        gen_params_free(&g);
        free(toks);
        set_error(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    r->prompt = toks;
    r->n_prompt = n;
    int room = (int)s->n_ctx - n;
    int mt = g.max_tokens > 0 ? g.max_tokens : s->o->default_max_tokens > 0 ? s->o->default_max_tokens : room;
    if (mt > room) mt = room;
    if (mt < 1) mt = 1; /* room <= 0: the prompt fills the context (srv_submit refuses it) */
    r->max_tokens = mt;
    r->sp = g.sp;
    r->stop = g.stop;
    r->n_stop = g.n_stop;
    *stream = g.stream;
    *include_usage = g.include_usage;
    return r;
}

srv_request *srv_parse_slot(const char *idp, const char *action, const char *body, size_t len, srv_parse_error *e) {
    char *end;
    errno = 0;
    long id = strtol(idp, &end, 10);
    if (!*idp || *end || errno || id < 0 || id > 1000000) {
        e->status = 400;
        e->code = "invalid_value";
        e->param = "id_slot";
        snprintf(e->msg, sizeof e->msg, "invalid slot id '%.40s'", idp);
        return NULL;
    }
    if (!action) {
        set_error(e, 400, "invalid_value", "action", "missing ?action=save|restore|erase");
        return NULL;
    }
    srv_req_kind kind;
    if (!strcmp(action, "save")) kind = REQ_SLOT_SAVE;
    else if (!strcmp(action, "restore")) kind = REQ_SLOT_RESTORE;
    else if (!strcmp(action, "erase")) kind = REQ_SLOT_ERASE;
    else {
        set_error(e, 400, "invalid_value", "action", "action must be save, restore or erase");
        return NULL;
    }
    srv_request *r = srv_request_new(kind);
    if (!r) {
        set_error(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    r->slot_id = (int)id;
    if (kind != REQ_SLOT_ERASE) {
        cJSON *req = cJSON_ParseWithLength(body ? body : "", body ? len : 0);
        const cJSON *fn = req ? cJSON_GetObjectItemCaseSensitive(req, "filename") : NULL;
        if (!req || !cJSON_IsObject(req) || !cJSON_IsString(fn)) {
            cJSON_Delete(req);
            srv_request_unref(r);
            set_error(e, 400, "invalid_value", "filename", "the body must be {\"filename\": \"NAME\"}");
            return NULL;
        }
        r->filename = dupstr(fn->valuestring);
        cJSON_Delete(req);
    }
    return r;
}
