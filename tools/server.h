/* server.h — the inference engine behind `rotkv serve` and `rotkv chat`.
 *
 * One engine thread owns the rotkv_context (the library is not thread-safe).
 * Other threads build a srv_request, submit it, and read its output under the
 * request's mutex (text appended as it is generated; done set at the end).
 *
 * Slots: the context has n_parallel sequences; each running request holds one.
 * Every step decodes one token for each generating slot plus prompt chunks of
 * the slots still reading their prompt, all in one rotkv_decode batch.
 *
 * KV admission: a request is started only when the blocks for its prompt plus
 * max_tokens can be reserved out of the budget (blocks of the other running
 * requests are their full reservations, so running requests never run out);
 * otherwise it waits in a FIFO queue. A finished slot keeps its tokens as a
 * prefix cache (reused by the next request sharing a prefix: same slot and
 * truncate, or rotkv_seq_copy from another slot); idle caches are dropped
 * (least recently used first) when a new request needs their blocks. */
#ifndef ROTKV_SERVER_H
#define ROTKV_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rotkv.h"

typedef struct {
    int n_parallel;           /* slots (sequences) */
    uint64_t kv_budget_bytes; /* 0: room for n_parallel full contexts */
    int queue_max;            /* requests waiting at most; more get 503 */
    double timeout_s;         /* per request, queue wait included */
    const char *model_path;   /* for the saved-slot header */
    const char *slot_save_path; /* NULL: save/restore disabled */
} srv_params;

typedef enum { REQ_GENERATE, REQ_SLOT_SAVE, REQ_SLOT_RESTORE, REQ_SLOT_ERASE } srv_req_kind;

typedef struct srv_request {
    /* ---- input: set before srv_submit, read-only afterwards */
    srv_req_kind kind;
    rotkv_token *prompt; /* malloc'd, freed with the request */
    int32_t n_prompt;
    int max_tokens;
    rotkv_sampler_params sp;
    char **stop; /* malloc'd strings */
    int n_stop;
    int slot_id;    /* save/restore/erase */
    char *filename; /* save/restore: a plain file name inside slot_save_path */

    /* ---- output: under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *text; /* generated text so far (stop strings never included) */
    size_t text_len, text_cap;
    bool done;
    int status;         /* HTTP status on error, 0 = success */
    char error[384];
    const char *error_type; /* OpenAI error type */
    const char *finish_reason;
    int n_prompt_tokens, n_gen_tokens, n_cached_tokens;
    int n_io_tokens;  /* save/restore: tokens saved/restored */
    long n_io_bytes;  /* save/restore: file size */
    double io_ms;
    int slot_used;

    /* ---- control */
    atomic_bool cancelled;
    atomic_int refs;
    double t_submit_ms, deadline_ms;
    struct srv_request *next; /* queue link (engine) */
} srv_request;

typedef struct srv_engine srv_engine;

typedef struct {
    uint64_t requests_ok, requests_error, requests_cancelled, requests_rejected;
    uint64_t prompt_tokens, prompt_tokens_cached, gen_tokens;
    double gen_tps;       /* generation tokens/s over the last window */
    double busy_ms;       /* time spent in rotkv_decode */
    uint64_t steps;
    int queue_len, active;
    uint64_t blocks_budget, blocks_used, blocks_reserved, blocks_prefix, blocks_free;
    uint64_t bytes_per_block;
    uint32_t tokens_per_block;
    int n_parallel;
    uint32_t n_ctx;
} srv_metrics;

srv_request *srv_request_new(srv_req_kind kind);
void srv_request_ref(srv_request *r);
void srv_request_unref(srv_request *r);

/* Creates the context and starts the engine thread; NULL with a message. */
srv_engine *srv_engine_start(rotkv_model *m, const rotkv_context_params *cp, const srv_params *p, char *err,
                             size_t errlen);
void srv_engine_stop(srv_engine *e);
uint32_t srv_n_ctx(const srv_engine *e);

/* Queues a request. Returns 0, or an HTTP status (400: can never fit, 503:
 * queue full) with the message in r->error. The engine holds a reference
 * until the request is done. */
int srv_submit(srv_engine *e, srv_request *r);
/* The client went away: stop generating and free the slot at once. */
void srv_cancel(srv_engine *e, srv_request *r);
void srv_get_metrics(srv_engine *e, srv_metrics *m);

double srv_now_ms(void);

/* What a saved slot file must match to be restored (the engine's model,
 * KV format and context). */
typedef struct {
    uint64_t model_fp;
    const char *kv_format;
    uint32_t n_ctx;
    int32_t n_vocab;
} srv_slot_expect;

/* Checks a saved slot file of size bytes whose first avail bytes are in buf
 * (avail < size: it could not all be read). On success the tokens (malloc'd)
 * and their count; else false with the reason, naming filename, in err. */
bool srv_slot_parse(const void *buf, size_t avail, uint64_t size, const srv_slot_expect *x, const char *filename,
                    rotkv_token **toks, int32_t *n, char *err, size_t errlen);

/* ------------------------------------------------------------ HTTP layer */

struct chat_template;

typedef struct {
    const char *host;       /* bind address (127.0.0.1 unless told otherwise) */
    int port;               /* 0: any free port */
    const char *api_key;    /* NULL: no authentication */
    const char *model_id;   /* the one model name clients must use */
    size_t max_body;        /* request body limit (bytes) */
    int max_tokens_limit;   /* upper bound of max_tokens */
    int default_max_tokens; /* when the request has none (<= 0: to the end of the context) */
    int max_conn;           /* concurrent connections */
    rotkv_sampler_params sp; /* defaults for sampling parameters */
} http_opts;

/* Serves until SIGINT/SIGTERM. Prints "listening on http://HOST:PORT" to
 * stderr once the socket is bound. Returns a process exit code. */
int http_serve(srv_engine *e, rotkv_model *m, const struct chat_template *t, const http_opts *o);
/* Tokenizes a prompt rendered by the chat template: BOS added per the model
 * unless the text already starts with it. NULL on failure. */
rotkv_token *srv_tokenize_chat(const rotkv_model *m, const struct chat_template *t, const char *text, int32_t *n);

/* ------------------------------------- request bodies (server_request.c) */

typedef struct {
    const rotkv_model *model;
    const struct chat_template *tmpl;
    const http_opts *o;
    uint32_t n_ctx;          /* bounds max_tokens */
    uint64_t seed_salt;      /* mixed into the default seed (the request counter) */
    pthread_mutex_t *tok_mu; /* held while tokenizing; NULL: none */
} srv_parse_ctx;

typedef struct {
    int status;        /* HTTP status: 400, 404 (unknown model) or 500 */
    const char *code;  /* OpenAI error code (NULL: none) */
    const char *param; /* the offending field (NULL: none) */
    char msg[400];
} srv_parse_error;

/* The body (len bytes, need not be NUL-terminated) of /v1/chat/completions
 * (chat) or /v1/completions, validated and tokenized into a REQ_GENERATE
 * request (max_tokens already bounded by n_ctx), with its stream and
 * stream_options.include_usage flags. NULL with e filled if it is invalid. */
srv_request *srv_parse_generate(const srv_parse_ctx *c, const char *body, size_t len, bool chat, bool *stream,
                                bool *include_usage, srv_parse_error *e);
/* POST /slots/ID?action=ACTION: the ID text, the action (NULL if missing) and
 * the body ({"filename": ...} for save and restore) into a slot request. */
srv_request *srv_parse_slot(const char *id, const char *action, const char *body, size_t len, srv_parse_error *e);

#endif
