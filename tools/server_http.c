/* server_http.c — the OpenAI-compatible HTTP API of `rotkv serve`, on
 * libmicrohttpd (a thread per connection) and cJSON.
 *
 *   POST /v1/chat/completions, /v1/completions   (stream: server-sent events)
 *   GET  /v1/models, /health, /metrics (Prometheus text)
 *   POST /slots/{id}?action=save|restore|erase   (llama-server's shape)
 *
 * Handlers validate the request, tokenize and queue it on the engine, then
 * wait for its text under the request's mutex. A client that goes away is
 * noticed (socket closed while waiting, a failed write, or MHD's completed
 * callback) and its request is cancelled at once. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chat_template.h"
#include "server.h"

typedef struct {
    srv_engine *eng;
    rotkv_model *model;
    const chat_template *tmpl;
    http_opts o;
    pthread_mutex_t tok_mu; /* tokenization, to be safe with the shared tokenizer */
    atomic_ulong n_http[6]; /* by status class: 1xx..5xx, [0] other */
    atomic_ulong id_counter;
    atomic_bool shutting_down;
    double t_start;
} http_server;

typedef struct {
    char *body;
    size_t len, cap;
    bool too_big;
    bool seen;
    srv_request *req; /* a generation in progress, for cancellation */
} conn_ctx;

/* ------------------------------------------------------------ responses */

static enum MHD_Result send_text(http_server *s, struct MHD_Connection *c, unsigned status, const char *ctype,
                                 char *text /* malloc'd, taken */) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add(&s->n_http[status / 100 < 6 ? status / 100 : 0], 1);
    return ret;
}

static enum MHD_Result send_json(http_server *s, struct MHD_Connection *c, unsigned status, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!txt) return MHD_NO;
    return send_text(s, c, status, "application/json", txt);
}

static cJSON *error_json(const char *type, const char *code, const char *param, const char *msg) {
    cJSON *j = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(j, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    if (code) cJSON_AddStringToObject(e, "code", code);
    else cJSON_AddNullToObject(e, "code");
    return j;
}

static enum MHD_Result send_error(http_server *s, struct MHD_Connection *c, unsigned status, const char *code,
                                  const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static enum MHD_Result send_error(http_server *s, struct MHD_Connection *c, unsigned status, const char *code,
                                  const char *param, const char *fmt, ...) {
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *type = status == 401   ? "authentication_error"
                       : status == 404 ? "not_found_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    if (status == 503) type = "unavailable_error";
    return send_json(s, c, status, error_json(type, code, param, msg));
}

/* ------------------------------------------------------ client liveness */

static int conn_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* True when the peer has closed (or reset) its side of the connection. */
static bool peer_closed(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) return true;
    if (p.revents & POLLIN) {
        char ch;
        ssize_t k = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
}

static void wait_100ms(srv_request *r) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

/* ------------------------------------------------------- JSON bodies */

typedef struct {
    http_server *srv;
    srv_request *req;
    bool chat, include_usage;
    char id[48];
    long created;
    int fd;
    size_t sent; /* bytes of req->text already sent */
    int phase;   /* 0: nothing sent, 1: streaming, 2: finished */
    char *pend;
    size_t plen, poff;
} stream_ctx;

static cJSON *usage_json(const srv_request *r) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", r->n_prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", r->n_gen_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", r->n_prompt_tokens + r->n_gen_tokens);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", r->n_cached_tokens);
    return u;
}

static cJSON *chunk_json(const stream_ctx *st, const char *text, size_t len, const char *finish, bool role) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", st->id);
    cJSON_AddStringToObject(j, "object", st->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddNumberToObject(j, "created", (double)st->created);
    cJSON_AddStringToObject(j, "model", st->srv->o.model_id);
    cJSON_AddStringToObject(j, "system_fingerprint", "rotkv-" ROTKV_VERSION);
    cJSON *choices = cJSON_AddArrayToObject(j, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    char *t = malloc(len + 1);
    if (t) {
        memcpy(t, text, len);
        t[len] = 0;
    }
    if (st->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (role || len) cJSON_AddStringToObject(d, "content", t ? t : "");
    } else {
        cJSON_AddStringToObject(c, "text", t ? t : "");
    }
    free(t);
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return j;
}

static void pend_add(stream_ctx *st, const char *s, size_t n) {
    if (st->plen + n + 1 > 0) {
        char *np = realloc(st->pend, st->plen + n + 1);
        if (!np) return;
        st->pend = np;
    }
    memcpy(st->pend + st->plen, s, n);
    st->plen += n;
}

static void pend_event(stream_ctx *st, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!txt) return;
    pend_add(st, "data: ", 6);
    pend_add(st, txt, strlen(txt));
    pend_add(st, "\n\n", 2);
    free(txt);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_ctx *st = cls;
    srv_request *r = st->req;
    for (;;) {
        if (st->poff < st->plen) {
            size_t n = st->plen - st->poff < max ? st->plen - st->poff : max;
            memcpy(buf, st->pend + st->poff, n);
            st->poff += n;
            if (st->poff == st->plen) st->poff = st->plen = 0;
            return (ssize_t)n;
        }
        if (st->phase == 2) return MHD_CONTENT_READER_END_OF_STREAM;
        if (st->phase == 0) {
            st->phase = 1;
            if (st->chat) {
                pend_event(st, chunk_json(st, "", 0, NULL, true));
                continue;
            }
        }
        pthread_mutex_lock(&r->mu);
        while (!r->done && r->text_len == st->sent) {
            wait_100ms(r);
            if (!r->done && r->text_len == st->sent &&
                (peer_closed(st->fd) || atomic_load(&st->srv->shutting_down))) {
                pthread_mutex_unlock(&r->mu);
                srv_cancel(st->srv->eng, r);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        size_t from = st->sent, to = r->text_len;
        char *piece = NULL;
        if (to > from && (piece = malloc(to - from))) memcpy(piece, r->text + from, to - from);
        st->sent = to;
        bool done = r->done;
        pthread_mutex_unlock(&r->mu);
        if (piece) {
            pend_event(st, chunk_json(st, piece, to - from, NULL, false));
            free(piece);
        }
        if (done) {
            if (r->status) {
                cJSON *ej = error_json(r->error_type ? r->error_type : "server_error", NULL, NULL, r->error);
                pend_event(st, ej);
            } else if (r->finish_reason && strcmp(r->finish_reason, "cancelled")) {
                cJSON *fin = chunk_json(st, "", 0, r->finish_reason, false);
                cJSON_AddItemToObject(fin, "usage", usage_json(r));
                pend_event(st, fin);
                if (st->include_usage) {
                    cJSON *u = chunk_json(st, "", 0, NULL, false);
                    cJSON_ReplaceItemInObject(u, "choices", cJSON_CreateArray());
                    cJSON_AddItemToObject(u, "usage", usage_json(r));
                    pend_event(st, u);
                }
            }
            pend_add(st, "data: [DONE]\n\n", 14);
            st->phase = 2;
        }
    }
}

static void stream_free(void *cls) {
    stream_ctx *st = cls;
    srv_cancel(st->srv->eng, st->req); /* no-op when already done */
    srv_request_unref(st->req);
    free(st->pend);
    free(st);
}

static enum MHD_Result handle_generate(http_server *s, struct MHD_Connection *c, conn_ctx *cc, bool chat) {
    const srv_parse_ctx pc = {s->model, s->tmpl, &s->o, srv_n_ctx(s->eng), atomic_load(&s->id_counter), &s->tok_mu};
    srv_parse_error e;
    bool stream = false, include_usage = false;
    srv_request *r = srv_parse_generate(&pc, cc->body, cc->len, chat, &stream, &include_usage, &e);
    if (!r) return send_error(s, c, (unsigned)e.status, e.code, e.param, "%s", e.msg);
    int st = srv_submit(s->eng, r);
    if (st) {
        enum MHD_Result ret = send_error(s, c, (unsigned)st, st == 503 ? "server_busy" : "context_length_exceeded",
                                         st == 503 ? NULL : "messages", "%s", r->error);
        srv_request_unref(r);
        return ret;
    }
    unsigned long idn = atomic_fetch_add(&s->id_counter, 1);
    if (stream) {
        stream_ctx *sc = calloc(1, sizeof *sc);
        if (!sc) {
            srv_cancel(s->eng, r);
            srv_request_unref(r);
            return send_error(s, c, 500, NULL, NULL, "out of memory");
        }
        sc->srv = s;
        sc->req = r; /* the handler's reference moves to the stream */
        sc->chat = chat;
        sc->include_usage = include_usage;
        sc->created = (long)time(NULL);
        sc->fd = conn_fd(c);
        snprintf(sc->id, sizeof sc->id, "%s-%lu", chat ? "chatcmpl" : "cmpl", idn);
        srv_request_ref(r);
        cc->req = r;
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, sc, stream_free);
        if (!resp) {
            stream_free(sc);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        atomic_fetch_add(&s->n_http[2], 1);
        return ret;
    }
    /* non-streaming: wait here, watching the socket */
    cc->req = r;
    srv_request_ref(r);
    const int fd = conn_fd(c);
    pthread_mutex_lock(&r->mu);
    while (!r->done) {
        wait_100ms(r);
        if (!r->done && (peer_closed(fd) || atomic_load(&s->shutting_down))) {
            pthread_mutex_unlock(&r->mu);
            srv_cancel(s->eng, r);
            srv_request_unref(r);
            return MHD_NO; /* closes the connection */
        }
    }
    pthread_mutex_unlock(&r->mu);
    enum MHD_Result ret;
    if (r->status) {
        ret = send_error(s, c, (unsigned)r->status, NULL, NULL, "%s", r->error);
    } else {
        cJSON *j = cJSON_CreateObject();
        char id[48];
        snprintf(id, sizeof id, "%s-%lu", chat ? "chatcmpl" : "cmpl", idn);
        cJSON_AddStringToObject(j, "id", id);
        cJSON_AddStringToObject(j, "object", chat ? "chat.completion" : "text_completion");
        cJSON_AddNumberToObject(j, "created", (double)time(NULL));
        cJSON_AddStringToObject(j, "model", s->o.model_id);
        cJSON_AddStringToObject(j, "system_fingerprint", "rotkv-" ROTKV_VERSION);
        cJSON *choices = cJSON_AddArrayToObject(j, "choices");
        cJSON *ch = cJSON_CreateObject();
        cJSON_AddItemToArray(choices, ch);
        cJSON_AddNumberToObject(ch, "index", 0);
        if (chat) {
            cJSON *m = cJSON_AddObjectToObject(ch, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", r->text ? r->text : "");
        } else {
            cJSON_AddStringToObject(ch, "text", r->text ? r->text : "");
        }
        cJSON_AddNullToObject(ch, "logprobs");
        cJSON_AddStringToObject(ch, "finish_reason", r->finish_reason ? r->finish_reason : "stop");
        cJSON_AddItemToObject(j, "usage", usage_json(r));
        ret = send_json(s, c, 200, j);
    }
    srv_request_unref(r);
    return ret;
}

/* ------------------------------------------------------------- others */

static enum MHD_Result handle_models(http_server *s, struct MHD_Connection *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(j, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", s->o.model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)(long)s->t_start);
    cJSON_AddStringToObject(m, "owned_by", "rotkv");
    cJSON *meta = cJSON_AddObjectToObject(m, "meta");
    rotkv_model_info info;
    rotkv_model_get_info(s->model, &info);
    cJSON_AddStringToObject(meta, "arch", info.arch);
    cJSON_AddNumberToObject(meta, "n_vocab", info.n_vocab);
    cJSON_AddNumberToObject(meta, "n_ctx", srv_n_ctx(s->eng));
    cJSON_AddNumberToObject(meta, "n_params", (double)info.n_params);
    cJSON_AddStringToObject(meta, "chat_template", chat_family_name(s->tmpl->family));
    return send_json(s, c, 200, j);
}

static long rss_bytes(void) {
    FILE *fp = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(fp);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static enum MHD_Result handle_metrics(http_server *s, struct MHD_Connection *c) {
    srv_metrics m;
    srv_get_metrics(s->eng, &m);
    char *buf = malloc(8192);
    if (!buf) return MHD_NO;
    int n = 0;
#define P(...) n += snprintf(buf + n, 8192 - (size_t)n, __VA_ARGS__)
#define METRIC(name, type, help, fmt, val) P("# HELP " name " " help "\n# TYPE " name " " type "\n" name " " fmt "\n", val)
    P("# HELP rotkv_requests_total Generation requests by outcome.\n# TYPE rotkv_requests_total counter\n");
    P("rotkv_requests_total{outcome=\"ok\"} %llu\n", (unsigned long long)m.requests_ok);
    P("rotkv_requests_total{outcome=\"error\"} %llu\n", (unsigned long long)m.requests_error);
    P("rotkv_requests_total{outcome=\"cancelled\"} %llu\n", (unsigned long long)m.requests_cancelled);
    P("rotkv_requests_total{outcome=\"rejected\"} %llu\n", (unsigned long long)m.requests_rejected);
    P("# HELP rotkv_http_responses_total HTTP responses by status class.\n# TYPE rotkv_http_responses_total counter\n");
    for (int k = 2; k <= 5; k++)
        P("rotkv_http_responses_total{code=\"%dxx\"} %lu\n", k, (unsigned long)atomic_load(&s->n_http[k]));
    METRIC("rotkv_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", "%llu",
           (unsigned long long)m.prompt_tokens);
    METRIC("rotkv_prompt_tokens_cached_total", "counter", "Prompt tokens reused from the prefix cache.", "%llu",
           (unsigned long long)m.prompt_tokens_cached);
    METRIC("rotkv_generated_tokens_total", "counter", "Generated tokens.", "%llu", (unsigned long long)m.gen_tokens);
    METRIC("rotkv_tokens_per_second", "gauge", "Generation tokens per second over the last window.", "%.2f",
           m.gen_tps);
    METRIC("rotkv_decode_seconds_total", "counter", "Time spent in batched decode steps.", "%.3f", m.busy_ms / 1e3);
    METRIC("rotkv_decode_steps_total", "counter", "Batched decode steps.", "%llu", (unsigned long long)m.steps);
    METRIC("rotkv_queue_length", "gauge", "Requests waiting for KV blocks or a slot.", "%d", m.queue_len);
    METRIC("rotkv_slots_active", "gauge", "Slots running a request.", "%d", m.active);
    METRIC("rotkv_slots_total", "gauge", "Slots (--parallel).", "%d", m.n_parallel);
    METRIC("rotkv_kv_blocks_budget", "gauge", "KV blocks in the budget (--kv-budget).", "%llu",
           (unsigned long long)m.blocks_budget);
    METRIC("rotkv_kv_blocks_used", "gauge", "KV blocks allocated (running requests + prefix cache).", "%llu",
           (unsigned long long)m.blocks_used);
    METRIC("rotkv_kv_blocks_reserved", "gauge", "KV blocks reserved by running requests (prompt + max_tokens).",
           "%llu", (unsigned long long)m.blocks_reserved);
    METRIC("rotkv_kv_blocks_prefix_cache", "gauge", "KV blocks held by the prefix cache of idle slots.", "%llu",
           (unsigned long long)m.blocks_prefix);
    METRIC("rotkv_kv_blocks_free", "gauge", "KV blocks neither reserved nor in the prefix cache.", "%llu",
           (unsigned long long)m.blocks_free);
    METRIC("rotkv_kv_block_bytes", "gauge", "Bytes of one KV block (all layers).", "%llu",
           (unsigned long long)m.bytes_per_block);
    METRIC("rotkv_kv_block_tokens", "gauge", "Tokens per KV block.", "%u", m.tokens_per_block);
    METRIC("rotkv_process_resident_bytes", "gauge", "Resident set size of the server.", "%ld", rss_bytes());
#undef METRIC
#undef P
    return send_text(s, c, 200, "text/plain; version=0.0.4", buf);
}

static enum MHD_Result handle_slots(http_server *s, struct MHD_Connection *c, conn_ctx *cc, const char *url) {
    srv_parse_error e;
    srv_request *r = srv_parse_slot(url + strlen("/slots/"),
                                    MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "action"), cc->body, cc->len, &e);
    if (!r) return send_error(s, c, (unsigned)e.status, e.code, e.param, "%s", e.msg);
    const srv_req_kind kind = r->kind;
    int st = srv_submit(s->eng, r);
    if (st) {
        enum MHD_Result ret = send_error(s, c, (unsigned)st, NULL, NULL, "%s", r->error);
        srv_request_unref(r);
        return ret;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->done) wait_100ms(r);
    pthread_mutex_unlock(&r->mu);
    enum MHD_Result ret;
    if (r->status) {
        ret = send_error(s, c, (unsigned)r->status, NULL, NULL, "%s", r->error);
    } else {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "id_slot", r->slot_id);
        if (kind != REQ_SLOT_ERASE) cJSON_AddStringToObject(j, "filename", r->filename);
        if (kind == REQ_SLOT_SAVE) {
            cJSON_AddNumberToObject(j, "n_saved", r->n_io_tokens);
            cJSON_AddNumberToObject(j, "n_written", (double)r->n_io_bytes);
            cJSON_AddNumberToObject(cJSON_AddObjectToObject(j, "timings"), "save_ms", r->io_ms);
        } else if (kind == REQ_SLOT_RESTORE) {
            cJSON_AddNumberToObject(j, "n_restored", r->n_io_tokens);
            cJSON_AddNumberToObject(j, "n_read", (double)r->n_io_bytes);
            cJSON_AddNumberToObject(cJSON_AddObjectToObject(j, "timings"), "restore_ms", r->io_ms);
        } else {
            cJSON_AddNumberToObject(j, "n_erased", r->n_io_tokens);
        }
        ret = send_json(s, c, 200, j);
    }
    srv_request_unref(r);
    return ret;
}

/* ---------------------------------------------------------- dispatch */

static bool auth_ok(http_server *s, struct MHD_Connection *c) {
    if (!s->o.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    const char *k = h + 7, *want = s->o.api_key;
    size_t nk = strlen(k), nw = strlen(want);
    /* constant time in the key's content: always walks the expected key */
    unsigned char diff = (unsigned char)(nk != nw);
    for (size_t i = 0; i < nw; i++) diff |= (unsigned char)(want[i] ^ (i < nk ? k[i] : 0));
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    http_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        *con_cls = cc;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body)
            return send_error(s, c, 413, "request_too_large", NULL, "request body larger than %zu bytes", s->o.max_body);
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cc->too_big) {
            if (cc->len + *upload_data_size > s->o.max_body) {
                cc->too_big = true;
            } else {
                if (cc->len + *upload_data_size + 1 > cc->cap) {
                    size_t cap = cc->cap ? cc->cap : 4096;
                    while (cap < cc->len + *upload_data_size + 1) cap *= 2;
                    char *nb = realloc(cc->body, cap);
                    if (!nb) return MHD_NO;
                    cc->body = nb;
                    cc->cap = cap;
                }
                memcpy(cc->body + cc->len, upload_data, *upload_data_size);
                cc->len += *upload_data_size;
                cc->body[cc->len] = 0;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (cc->too_big)
        return send_error(s, c, 413, "request_too_large", NULL, "request body larger than %zu bytes", s->o.max_body);
    const bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) return send_error(s, c, 405, NULL, NULL, "use GET /health");
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "status", "ok");
        return send_json(s, c, 200, j);
    }
    if (!auth_ok(s, c)) return send_error(s, c, 401, "invalid_api_key", NULL, "invalid or missing API key (Authorization: Bearer KEY)");
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions")) {
        if (!post) return send_error(s, c, 405, NULL, NULL, "use POST %s", url);
        return handle_generate(s, c, cc, true);
    }
    if (!strcmp(url, "/v1/completions") || !strcmp(url, "/completions")) {
        if (!post) return send_error(s, c, 405, NULL, NULL, "use POST %s", url);
        return handle_generate(s, c, cc, false);
    }
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models")) {
        if (!get) return send_error(s, c, 405, NULL, NULL, "use GET %s", url);
        return handle_models(s, c);
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) return send_error(s, c, 405, NULL, NULL, "use GET /metrics");
        return handle_metrics(s, c);
    }
    if (!strncmp(url, "/slots/", 7)) {
        if (!post) return send_error(s, c, 405, NULL, NULL, "use POST /slots/ID?action=save|restore|erase");
        return handle_slots(s, c, cc, url);
    }
    return send_error(s, c, 404, "not_found", NULL, "no such endpoint: %.100s %.200s", method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    http_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) return;
    if (cc->req) {
        /* finished normally or not: a request still running is cancelled */
        srv_cancel(s->eng, cc->req);
        srv_request_unref(cc->req);
    }
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

int http_serve(srv_engine *eng, rotkv_model *m, const chat_template *t, const http_opts *o) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) return 1;
    s->eng = eng;
    s->model = m;
    s->tmpl = t;
    s->o = *o;
    s->t_start = (double)time(NULL);
    pthread_mutex_init(&s->tok_mu, NULL);
    atomic_init(&s->shutting_down, false);

    /* signals: handled by sigwait in this thread only */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in sa4;
    struct sockaddr_in6 sa6;
    memset(&sa4, 0, sizeof sa4);
    memset(&sa6, 0, sizeof sa6);
    const char *host = o->host ? o->host : "127.0.0.1";
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    const struct sockaddr *addr;
    if (inet_pton(AF_INET, host, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons((uint16_t)o->port);
        addr = (const struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, host, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons((uint16_t)o->port);
        addr = (const struct sockaddr *)&sa6;
        flags |= MHD_USE_IPv6;
    } else {
        fprintf(stderr, "rotkv serve: --host '%s' is not an IPv4 or IPv6 address\n", host);
        free(s);
        return 2;
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(o->max_conn > 0 ? o->max_conn : 256), MHD_OPTION_PER_IP_CONNECTION_LIMIT, 0u,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_LISTEN_BACKLOG_SIZE, 256u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "rotkv serve: cannot listen on %s:%d: %s\n", host, o->port, strerror(errno));
        pthread_mutex_destroy(&s->tok_mu);
        free(s);
        return 1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = di ? di->port : o->port;
    fprintf(stderr, "rotkv serve: listening on http://%s%s%s:%d (model '%s')\n", strchr(host, ':') ? "[" : "", host,
            strchr(host, ':') ? "]" : "", port, o->model_id);
    fflush(stderr);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "rotkv serve: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&s->shutting_down, true);
    MHD_stop_daemon(d);
    pthread_mutex_destroy(&s->tok_mu);
    free(s);
    return 0;
}
