/* server_engine.c — the engine thread of `rotkv serve` / `rotkv chat`:
 * admission against the KV budget, a FIFO queue, batched decoding of all
 * running slots, stop strings, prefix reuse and saved slots (see server.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "hash.h"
#include "server.h"

double srv_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------- requests */

srv_request *srv_request_new(srv_req_kind kind) {
    srv_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->kind = kind;
    r->slot_id = -1;
    r->slot_used = -1;
    r->sp = rotkv_sampler_default_params();
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->cancelled, false);
    atomic_init(&r->refs, 1);
    return r;
}

void srv_request_ref(srv_request *r) { atomic_fetch_add(&r->refs, 1); }

void srv_request_unref(srv_request *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1) return;
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->filename);
    free(r->text);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void req_fail_locked(srv_request *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void req_fail_locked(srv_request *r, int status, const char *type, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
    r->status = status;
    r->error_type = type;
    r->done = true;
    pthread_cond_broadcast(&r->cv);
}

/* Appends text for the consumer (under r->mu). */
static void req_emit(srv_request *r, const char *s, size_t n) {
    if (!n) return;
    pthread_mutex_lock(&r->mu);
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < r->text_len + n + 1) cap *= 2;
        char *nt = realloc(r->text, cap);
        if (!nt) {
            pthread_mutex_unlock(&r->mu);
            return;
        }
        r->text = nt;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------- engine */

typedef struct {
    int id;
    srv_request *req;      /* NULL: idle (its cache is prefix cache) */
    rotkv_token *cache;    /* tokens in this sequence's KV cache */
    int32_t n_cache, cap_cache;
    int32_t n_prompt_done; /* prompt tokens in the cache */
    uint64_t reserved;     /* blocks reserved while running */
    rotkv_sampler *smp;
    rotkv_detok *dt;
    char *gen;             /* generated text (for stop strings) */
    size_t gen_len, gen_cap, gen_emitted;
    rotkv_token pending;
    bool has_pending;
    int n_gen;
    uint64_t last_used;
    double t_start;
} slot;

struct srv_engine {
    rotkv_model *model;
    rotkv_context *ctx;
    srv_params p;
    uint32_t n_ctx, n_batch;
    uint64_t budget_blocks;
    slot *slots;
    uint64_t tick;
    uint64_t model_fp;
    char kv_format[64];
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    srv_request *q_head, *q_tail;
    int q_len;
    srv_metrics m; /* under mu */
    double win_start;
    uint64_t win_tokens;
    /* batch scratch */
    rotkv_token *b_tok;
    int32_t *b_seq;
    int8_t *b_logits;
    int *b_slot;
};

static uint64_t blocks_for(const srv_engine *e, int32_t n) {
    return n <= 0 ? 0 : rotkv_kv_blocks_for_tokens(e->ctx, (uint32_t)n);
}

uint32_t srv_n_ctx(const srv_engine *e) { return e->n_ctx; }

static bool cache_reserve(slot *s, int32_t n) {
    if (n <= s->cap_cache) return true;
    int32_t cap = s->cap_cache ? s->cap_cache : 256;
    while (cap < n) cap *= 2;
    rotkv_token *nc = realloc(s->cache, (size_t)cap * sizeof *nc);
    if (!nc) return false;
    s->cache = nc;
    s->cap_cache = cap;
    return true;
}

static void gen_append(slot *s, const char *p) {
    size_t n = strlen(p);
    if (!n) return;
    if (s->gen_len + n + 1 > s->gen_cap) {
        size_t cap = s->gen_cap ? s->gen_cap : 256;
        while (cap < s->gen_len + n + 1) cap *= 2;
        char *ng = realloc(s->gen, cap);
        if (!ng) return;
        s->gen = ng;
        s->gen_cap = cap;
    }
    memcpy(s->gen + s->gen_len, p, n);
    s->gen_len += n;
    s->gen[s->gen_len] = 0;
}

static int32_t common_prefix(const rotkv_token *a, int32_t na, const rotkv_token *b, int32_t nb) {
    int32_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Blocks held by idle slots' caches (the prefix cache), except one slot. */
static uint64_t prefix_blocks(const srv_engine *e, int except) {
    uint64_t b = 0;
    for (int i = 0; i < e->p.n_parallel; i++)
        if (i != except && !e->slots[i].req) b += blocks_for(e, e->slots[i].n_cache);
    return b;
}
static uint64_t reserved_blocks(const srv_engine *e) {
    uint64_t b = 0;
    for (int i = 0; i < e->p.n_parallel; i++)
        if (e->slots[i].req) b += e->slots[i].reserved;
    return b;
}

static void slot_drop_cache(srv_engine *e, slot *s) {
    rotkv_seq_clear(e->ctx, s->id);
    s->n_cache = 0;
}

/* Frees blocks of idle caches (LRU first, never `keep` or `keep2`) until
 * `need` blocks are free. False if that cannot be reached. */
static bool make_room(srv_engine *e, uint64_t need, int keep, int keep2) {
    uint64_t res = reserved_blocks(e);
    if (res + need > e->budget_blocks) return false;
    for (;;) {
        uint64_t used = res + prefix_blocks(e, -1) - (keep >= 0 && !e->slots[keep].req
                                                           ? blocks_for(e, e->slots[keep].n_cache)
                                                           : 0);
        if (used + need <= e->budget_blocks) return true;
        int victim = -1;
        for (int i = 0; i < e->p.n_parallel; i++) {
            slot *s = &e->slots[i];
            if (s->req || i == keep || i == keep2 || !s->n_cache) continue;
            if (victim < 0 || s->last_used < e->slots[victim].last_used) victim = i;
        }
        if (victim < 0) {
            if (keep2 >= 0) { /* give up the copy source too */
                keep2 = -1;
                continue;
            }
            return false;
        }
        slot_drop_cache(e, &e->slots[victim]);
    }
}

static void slot_release(srv_engine *e, slot *s, bool drop_cache) {
    rotkv_sampler_free(s->smp);
    rotkv_detok_free(s->dt);
    s->smp = NULL;
    s->dt = NULL;
    s->req = NULL;
    s->reserved = 0;
    s->has_pending = false;
    s->last_used = ++e->tick;
    if (drop_cache) slot_drop_cache(e, s);
}

static void finish(srv_engine *e, slot *s, const char *reason) {
    srv_request *r = s->req;
    pthread_mutex_lock(&r->mu);
    r->finish_reason = reason;
    r->n_gen_tokens = s->n_gen;
    r->done = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->mu);
    e->m.requests_ok++;
    pthread_mutex_unlock(&e->mu);
    slot_release(e, s, false);
    srv_request_unref(r);
}

static void fail_slot(srv_engine *e, slot *s, int status, const char *msg) {
    srv_request *r = s->req;
    pthread_mutex_lock(&r->mu);
    req_fail_locked(r, status, status >= 500 ? "server_error" : "invalid_request_error", "%s", msg);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->mu);
    e->m.requests_error++;
    pthread_mutex_unlock(&e->mu);
    slot_release(e, s, true);
    srv_request_unref(r);
}

static void cancel_slot(srv_engine *e, slot *s) {
    srv_request *r = s->req;
    pthread_mutex_lock(&r->mu);
    r->done = true;
    r->finish_reason = "cancelled";
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&e->mu);
    e->m.requests_cancelled++;
    pthread_mutex_unlock(&e->mu);
    slot_release(e, s, true);
    srv_request_unref(r);
}

/* ------------------------------------------------------- saved slots */

#define SLOT_MAGIC "RKVSLOT1"

/* Slot file names: no paths, no dot files, and never the name of a
 * temporary a save was writing (atomic_file.h), so a save that was killed
 * midway can never be restored. */
static bool valid_filename(const char *f) {
    size_t n = strlen(f);
    if (n == 0 || n > 128 || f[0] == '.' || atomic_file_is_temp(f)) return false;
    for (size_t i = 0; i < n; i++) {
        char c = f[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

typedef struct {
    char magic[8];
    uint32_t version, n_tokens;
    uint64_t model_fp;
    char kv_format[64];
    char model_name[128];
} slot_file_header;

static void slot_save(srv_engine *e, srv_request *r) {
    double t0 = srv_now_ms();
    slot *s = &e->slots[r->slot_id];
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", e->p.slot_save_path, r->filename);
    slot_file_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SLOT_MAGIC, 8);
    h.version = 1;
    h.n_tokens = (uint32_t)s->n_cache;
    h.model_fp = e->model_fp;
    snprintf(h.kv_format, sizeof h.kv_format, "%s", e->kv_format);
    rotkv_model_info info;
    rotkv_model_get_info(e->model, &info);
    snprintf(h.model_name, sizeof h.model_name, "%s", info.name);
    uint64_t sum = fnv1a(FNV1A_SEED, &h, sizeof h);
    sum = fnv1a(sum, s->cache, (size_t)s->n_cache * sizeof(rotkv_token));
    atomic_file af;
    bool ok = atomic_file_open(&af, path);
    if (ok) {
        ok = fwrite(&h, sizeof h, 1, af.fp) == 1 &&
             fwrite(s->cache, sizeof(rotkv_token), (size_t)s->n_cache, af.fp) == (size_t)s->n_cache &&
             fwrite(&sum, sizeof sum, 1, af.fp) == 1;
        ok = atomic_file_commit(&af, ok);
    }
    const int err = errno;
    pthread_mutex_lock(&r->mu);
    if (!ok) {
        req_fail_locked(r, 500, "server_error", "cannot write slot file '%s': %s", r->filename, strerror(err));
    } else {
        r->n_io_tokens = s->n_cache;
        r->n_io_bytes = (long)(sizeof h + (size_t)s->n_cache * sizeof(rotkv_token) + sizeof sum);
        r->io_ms = srv_now_ms() - t0;
        r->done = true;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

bool srv_slot_parse(const void *buf, size_t avail, uint64_t size, const srv_slot_expect *x, const char *filename,
                    rotkv_token **toks_out, int32_t *n_out, char *err, size_t errlen) {
    slot_file_header h;
    const char *why = NULL;
    *toks_out = NULL;
    *n_out = 0;
    const bool whole_header = size >= sizeof h + 8 && avail >= sizeof h;
    if (whole_header) memcpy(&h, buf, sizeof h);
    if (!whole_header || memcmp(h.magic, SLOT_MAGIC, 8))
        why = "not a rotkv slot file (bad magic or truncated)";
    else if (h.version != 1)
        why = "unsupported slot file version";
    else if (size != sizeof h + (uint64_t)h.n_tokens * sizeof(rotkv_token) + 8)
        why = "damaged slot file (size does not match its header)";
    else if (h.model_fp != x->model_fp) {
        snprintf(err, errlen, "slot file was saved for another model ('%.100s'), not this one", h.model_name);
        return false;
    } else if (strncmp(h.kv_format, x->kv_format, sizeof h.kv_format))
        why = "slot file was saved with another KV cache format";
    else if (h.n_tokens == 0 || h.n_tokens > x->n_ctx)
        why = "slot file holds no tokens or more than the context size";
    else if (avail < size)
        why = "damaged slot file (short read)";
    rotkv_token *toks = NULL;
    if (!why && !(toks = malloc((size_t)h.n_tokens * sizeof *toks))) why = "damaged slot file (short read)";
    if (!why) {
        const uint8_t *p = (const uint8_t *)buf + sizeof h;
        uint64_t sum;
        memcpy(toks, p, (size_t)h.n_tokens * sizeof *toks);
        memcpy(&sum, p + (size_t)h.n_tokens * sizeof *toks, sizeof sum);
        if (fnv1a(fnv1a(FNV1A_SEED, &h, sizeof h), toks, (size_t)h.n_tokens * sizeof *toks) != sum)
            why = "damaged slot file (checksum mismatch)";
        for (uint32_t i = 0; !why && i < h.n_tokens; i++)
            if (toks[i] < 0 || toks[i] >= x->n_vocab) why = "damaged slot file (token out of range)";
    }
    if (why) {
        free(toks);
        snprintf(err, errlen, "%s: '%s'", why, filename);
        return false;
    }
    *toks_out = toks;
    *n_out = (int32_t)h.n_tokens;
    return true;
}

/* Reads and checks a slot file; on success the tokens are in r->prompt. */
static bool slot_read(srv_engine *e, srv_request *r) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", e->p.slot_save_path, r->filename);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        pthread_mutex_lock(&r->mu);
        req_fail_locked(r, 404, "invalid_request_error", "slot file '%s' not found", r->filename);
        pthread_mutex_unlock(&r->mu);
        return false;
    }
    long size = 0;
    if (fseek(fp, 0, SEEK_END) == 0) size = ftell(fp);
    rewind(fp);
    if (size < 0) size = 0;
    /* no valid file is larger than a full context's tokens */
    const size_t largest = sizeof(slot_file_header) + (size_t)e->n_ctx * sizeof(rotkv_token) + 8;
    const size_t want = (uint64_t)size < largest ? (size_t)size : largest;
    uint8_t *buf = malloc(want ? want : 1);
    const size_t got = buf ? fread(buf, 1, want, fp) : 0;
    fclose(fp);
    const srv_slot_expect x = {e->model_fp, e->kv_format, e->n_ctx, rotkv_n_vocab(e->model)};
    rotkv_token *toks;
    int32_t n;
    char err[sizeof r->error];
    const bool ok = srv_slot_parse(buf ? buf : (const uint8_t *)"", got, (uint64_t)size, &x, r->filename, &toks, &n,
                                   err, sizeof err);
    free(buf);
    if (!ok) {
        pthread_mutex_lock(&r->mu);
        req_fail_locked(r, 400, "invalid_request_error", "%s", err);
        pthread_mutex_unlock(&r->mu);
        return false;
    }
    free(r->prompt);
    r->prompt = toks;
    r->n_prompt = n;
    r->n_io_bytes = size;
    return true;
}

/* ------------------------------------------------------------ admission */

/* Starts r in a slot if its blocks can be reserved. Called with e->mu held,
 * on the engine thread. Returns false if r has to wait. */
static bool try_admit(srv_engine *e, srv_request *r) {
    const int np = e->p.n_parallel;
    if (r->kind == REQ_SLOT_SAVE || r->kind == REQ_SLOT_ERASE || r->kind == REQ_SLOT_RESTORE) {
        slot *s = &e->slots[r->slot_id];
        if (s->req) {
            pthread_mutex_lock(&r->mu);
            req_fail_locked(r, 409, "invalid_request_error", "slot %d is processing a request", r->slot_id);
            pthread_mutex_unlock(&r->mu);
            srv_request_unref(r);
            return true;
        }
        if (r->kind == REQ_SLOT_SAVE) {
            slot_save(e, r);
            srv_request_unref(r);
            return true;
        }
        if (r->kind == REQ_SLOT_ERASE) {
            pthread_mutex_lock(&r->mu);
            r->n_io_tokens = s->n_cache;
            slot_drop_cache(e, s);
            r->done = true;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            srv_request_unref(r);
            return true;
        }
        /* restore: re-evaluate the saved tokens in that slot */
        if (!r->prompt && !slot_read(e, r)) {
            srv_request_unref(r);
            return true;
        }
        uint64_t need = blocks_for(e, r->n_prompt);
        if (need > e->budget_blocks) {
            pthread_mutex_lock(&r->mu);
            req_fail_locked(r, 400, "invalid_request_error", "the saved slot needs %llu KV blocks, the budget has %llu",
                            (unsigned long long)need, (unsigned long long)e->budget_blocks);
            pthread_mutex_unlock(&r->mu);
            srv_request_unref(r);
            return true;
        }
        slot_drop_cache(e, s);
        if (!make_room(e, need, r->slot_id, -1)) return false;
        if (!cache_reserve(s, r->n_prompt)) {
            pthread_mutex_lock(&r->mu);
            req_fail_locked(r, 500, "server_error", "out of memory");
            pthread_mutex_unlock(&r->mu);
            srv_request_unref(r);
            return true;
        }
        s->req = r;
        s->reserved = need;
        s->n_prompt_done = 0;
        s->n_gen = 0;
        s->t_start = srv_now_ms();
        r->max_tokens = 0;
        r->slot_used = s->id;
        return true;
    }
    /* choose a slot: the idle one sharing the longest prefix, else an empty
     * one, else the least recently used */
    int best = -1;
    int32_t best_lcp = -1;
    for (int i = 0; i < np; i++) {
        slot *s = &e->slots[i];
        if (s->req) continue;
        int32_t l = common_prefix(s->cache, s->n_cache, r->prompt, r->n_prompt);
        if (l > best_lcp || (l == best_lcp && (s->n_cache < e->slots[best].n_cache ||
                                               (s->n_cache == e->slots[best].n_cache &&
                                                s->last_used < e->slots[best].last_used)))) {
            best = i;
            best_lcp = l;
        }
    }
    if (best < 0) return false;
    if (best_lcp * 2 < e->slots[best].n_cache) {
        /* a poor match: keep that cache for someone else if an empty slot is free */
        for (int i = 0; i < np; i++)
            if (!e->slots[i].req && e->slots[i].n_cache == 0) {
                best = i;
                best_lcp = 0;
                break;
            }
    }
    const int32_t max_keep = r->n_prompt - 1; /* the last prompt token is always decoded for its logits */
    int32_t keep = best_lcp < max_keep ? best_lcp : max_keep;
    /* a longer prefix in another slot (running or idle) is copied */
    int src = -1;
    int32_t src_keep = keep;
    for (int i = 0; i < np; i++) {
        if (i == best) continue;
        slot *s = &e->slots[i];
        int32_t l = common_prefix(s->cache, s->n_cache, r->prompt, r->n_prompt);
        if (l > max_keep) l = max_keep;
        if (l > src_keep) {
            src = i;
            src_keep = l;
        }
    }
    int32_t total = r->n_prompt + r->max_tokens;
    if ((uint32_t)total > e->n_ctx) total = (int32_t)e->n_ctx;
    const uint64_t need = blocks_for(e, total);
    if (!make_room(e, need, best, src)) return false;
    slot *s = &e->slots[best];
    if (src >= 0 && (e->slots[src].n_cache >= src_keep)) {
        rotkv_error err = {0};
        if (rotkv_seq_copy(e->ctx, src, best, src_keep, &err) == ROTKV_OK) {
            cache_reserve(s, src_keep);
            memcpy(s->cache, e->slots[src].cache, (size_t)src_keep * sizeof(rotkv_token));
            s->n_cache = keep = src_keep;
        } else {
            rotkv_seq_truncate(e->ctx, best, keep);
            s->n_cache = keep = rotkv_seq_len(e->ctx, best);
        }
    } else {
        /* a sliding-window layer whose ring has moved past the window before `keep` makes
         * the library drop the whole cache instead: the prompt is then decoded from 0 */
        rotkv_seq_truncate(e->ctx, best, keep);
        s->n_cache = keep = rotkv_seq_len(e->ctx, best);
    }
    s->req = r;
    s->reserved = need;
    s->n_prompt_done = keep;
    s->n_gen = 0;
    s->gen_len = s->gen_emitted = 0;
    s->has_pending = false;
    s->t_start = srv_now_ms();
    s->smp = rotkv_sampler_create(&r->sp, rotkv_n_vocab(e->model));
    s->dt = rotkv_detok_create(e->model);
    pthread_mutex_lock(&r->mu);
    r->n_cached_tokens = keep;
    r->n_prompt_tokens = r->n_prompt;
    r->slot_used = best;
    pthread_mutex_unlock(&r->mu);
    e->m.prompt_tokens += (uint64_t)r->n_prompt;
    e->m.prompt_tokens_cached += (uint64_t)keep;
    if (!s->smp || !s->dt || !cache_reserve(s, total + 1)) {
        fail_slot(e, s, 500, "out of memory");
        return true;
    }
    return true;
}

/* --------------------------------------------------------- generation */

/* Emits what is safe of the generated text; true if a stop string matched. */
static bool emit_text(slot *s, bool final) {
    srv_request *r = s->req;
    size_t start = s->gen_emitted;
    if (r->n_stop) {
        size_t best = (size_t)-1;
        for (int i = 0; i < r->n_stop; i++) {
            const char *p = s->gen_len > start ? strstr(s->gen + start, r->stop[i]) : NULL;
            if (p && (size_t)(p - s->gen) < best) best = (size_t)(p - s->gen);
        }
        if (best != (size_t)-1) {
            req_emit(r, s->gen + start, best - start);
            s->gen_emitted = best;
            return true;
        }
        if (!final) {
            /* hold back a suffix that could begin a stop string */
            size_t hold = 0;
            for (int i = 0; i < r->n_stop; i++) {
                size_t L = strlen(r->stop[i]);
                for (size_t k = L - 1; k > hold; k--)
                    if (k <= s->gen_len - start && !memcmp(s->gen + s->gen_len - k, r->stop[i], k)) {
                        hold = k;
                        break;
                    }
            }
            size_t end = s->gen_len - hold;
            req_emit(r, s->gen + start, end - start);
            s->gen_emitted = end;
            return false;
        }
    }
    req_emit(r, s->gen + start, s->gen_len - start);
    s->gen_emitted = s->gen_len;
    return false;
}

static void on_token(srv_engine *e, slot *s, rotkv_token t) {
    srv_request *r = s->req;
    s->n_gen++;
    pthread_mutex_lock(&r->mu);
    r->n_gen_tokens = s->n_gen;
    pthread_mutex_unlock(&r->mu);
    rotkv_sampler_accept(s->smp, t);
    if (rotkv_token_is_eog(e->model, t)) {
        gen_append(s, rotkv_detok_flush(s->dt));
        if (!emit_text(s, true)) {
            finish(e, s, "stop");
            return;
        }
        finish(e, s, "stop");
        return;
    }
    gen_append(s, rotkv_detok_push(s->dt, t));
    if (emit_text(s, false)) {
        finish(e, s, "stop");
        return;
    }
    if (s->n_gen >= r->max_tokens || (uint32_t)s->n_cache >= e->n_ctx) {
        gen_append(s, rotkv_detok_flush(s->dt));
        bool stopped = emit_text(s, true);
        finish(e, s, stopped ? "stop" : "length");
        return;
    }
    s->pending = t;
    s->has_pending = true;
}

/* One decode step over every running slot. */
static void step(srv_engine *e) {
    const int np = e->p.n_parallel;
    int32_t n = 0;
    /* generating slots: one token each */
    for (int i = 0; i < np; i++) {
        slot *s = &e->slots[i];
        if (!s->req || !s->has_pending) continue;
        e->b_tok[n] = s->pending;
        e->b_seq[n] = s->id;
        e->b_logits[n] = 1;
        e->b_slot[n] = i;
        n++;
    }
    /* prompt chunks with what is left of the batch */
    for (int i = 0; i < np && (uint32_t)n < e->n_batch; i++) {
        slot *s = &e->slots[i];
        if (!s->req || s->has_pending || s->n_prompt_done >= s->req->n_prompt) continue;
        srv_request *r = s->req;
        int32_t room = (int32_t)e->n_batch - n, left = r->n_prompt - s->n_prompt_done;
        int32_t k = left < room ? left : room;
        for (int32_t j = 0; j < k; j++) {
            e->b_tok[n] = r->prompt[s->n_prompt_done + j];
            e->b_seq[n] = s->id;
            e->b_logits[n] = (j == k - 1 && k == left && r->max_tokens > 0) ? 1 : 0;
            e->b_slot[n] = i;
            n++;
        }
    }
    if (n == 0) return;
    rotkv_batch b = {.n_tokens = n, .token = e->b_tok, .seq_id = e->b_seq, .logits = e->b_logits};
    rotkv_error err = {0};
    double t0 = srv_now_ms();
    rotkv_status st = rotkv_decode(e->ctx, &b, &err);
    double t1 = srv_now_ms();
    pthread_mutex_lock(&e->mu);
    e->m.busy_ms += t1 - t0;
    e->m.steps++;
    pthread_mutex_unlock(&e->mu);
    if (st != ROTKV_OK) {
        char msg[600];
        snprintf(msg, sizeof msg, "decode failed: %s", err.msg);
        fprintf(stderr, "rotkv serve: %s\n", msg);
        for (int32_t j = 0; j < n; j++) {
            slot *s = &e->slots[e->b_slot[j]];
            if (s->req) fail_slot(e, s, 500, msg);
        }
        return;
    }
    /* record the decoded tokens, then sample where logits were computed */
    for (int32_t j = 0; j < n; j++) {
        slot *s = &e->slots[e->b_slot[j]];
        s->cache[s->n_cache++] = e->b_tok[j];
        if (s->has_pending) continue;
        s->n_prompt_done++;
    }
    uint64_t gen_now = 0;
    for (int32_t j = 0; j < n; j++) {
        slot *s = &e->slots[e->b_slot[j]];
        if (!s->req) continue;
        if (s->n_prompt_done >= s->req->n_prompt && s->req->max_tokens == 0) {
            /* a restored slot: all tokens are in the cache */
            srv_request *r = s->req;
            pthread_mutex_lock(&r->mu);
            r->n_io_tokens = s->n_cache;
            r->io_ms = srv_now_ms() - s->t_start;
            r->done = true;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            slot_release(e, s, false);
            srv_request_unref(r);
            continue;
        }
        if (!e->b_logits[j]) continue;
        const float *lg = rotkv_get_logits(e->ctx, j);
        if (!lg) {
            fail_slot(e, s, 500, "no logits");
            continue;
        }
        s->has_pending = false;
        rotkv_token t = rotkv_sampler_sample(s->smp, lg);
        gen_now++;
        on_token(e, s, t);
    }
    pthread_mutex_lock(&e->mu);
    e->m.gen_tokens += gen_now;
    e->win_tokens += gen_now;
    if (t1 - e->win_start >= 2000) {
        e->m.gen_tps = e->win_tokens / ((t1 - e->win_start) / 1e3);
        e->win_tokens = 0;
        e->win_start = t1;
    }
    pthread_mutex_unlock(&e->mu);
}

static void update_gauges_locked(srv_engine *e) {
    rotkv_kv_stats st;
    rotkv_kv_get_stats(e->ctx, &st);
    int active = 0;
    for (int i = 0; i < e->p.n_parallel; i++) active += e->slots[i].req != NULL;
    e->m.active = active;
    e->m.queue_len = e->q_len;
    e->m.blocks_budget = e->budget_blocks;
    e->m.blocks_used = st.blocks_used;
    e->m.blocks_reserved = reserved_blocks(e);
    e->m.blocks_prefix = prefix_blocks(e, -1);
    uint64_t taken = e->m.blocks_reserved + e->m.blocks_prefix;
    e->m.blocks_free = taken < e->budget_blocks ? e->budget_blocks - taken : 0;
    e->m.bytes_per_block = st.bytes_per_block;
    e->m.tokens_per_block = st.tokens_per_block;
    if (srv_now_ms() - e->win_start > 4000) { /* idle: the rate decays to 0 */
        e->m.gen_tps = 0;
        e->win_start = srv_now_ms();
        e->win_tokens = 0;
    }
}

static void *engine_main(void *arg) {
    srv_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        for (;;) {
            if (e->stop) break;
            bool active = false;
            for (int i = 0; i < e->p.n_parallel; i++) active |= e->slots[i].req != NULL;
            if (active || e->q_head) break;
            update_gauges_locked(e);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
        if (e->stop) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        const double now = srv_now_ms();
        /* queued requests that were cancelled or waited too long */
        srv_request **pp = &e->q_head, *prev = NULL;
        while (*pp) {
            srv_request *r = *pp;
            bool cancelled = atomic_load(&r->cancelled), expired = now > r->deadline_ms;
            if (cancelled || expired) {
                *pp = r->next;
                if (e->q_tail == r) e->q_tail = prev;
                e->q_len--;
                pthread_mutex_lock(&r->mu);
                if (cancelled) {
                    r->done = true;
                    r->finish_reason = "cancelled";
                    pthread_cond_broadcast(&r->cv);
                    e->m.requests_cancelled++;
                } else {
                    req_fail_locked(r, 503, "server_error", "timed out after %.0f s waiting for free KV blocks",
                                    e->p.timeout_s);
                    e->m.requests_error++;
                }
                pthread_mutex_unlock(&r->mu);
                srv_request_unref(r);
                continue;
            }
            prev = r;
            pp = &r->next;
        }
        pthread_mutex_unlock(&e->mu);
        /* running requests that were cancelled or ran out of time */
        for (int i = 0; i < e->p.n_parallel; i++) {
            slot *s = &e->slots[i];
            if (!s->req) continue;
            if (atomic_load(&s->req->cancelled)) cancel_slot(e, s);
            else if (now > s->req->deadline_ms) {
                char msg[128];
                snprintf(msg, sizeof msg, "request time limit of %.0f s exceeded", e->p.timeout_s);
                fail_slot(e, s, 504, msg);
            }
        }
        /* admission, in arrival order (no overtaking: a large request is not starved) */
        pthread_mutex_lock(&e->mu);
        while (e->q_head) {
            srv_request *r = e->q_head, *next = r->next; /* try_admit may drop r */
            if (!try_admit(e, r)) break;
            e->q_head = next;
            if (!e->q_head) e->q_tail = NULL;
            e->q_len--;
        }
        update_gauges_locked(e);
        pthread_mutex_unlock(&e->mu);
        step(e);
    }
    return NULL;
}

/* ---------------------------------------------------------- public API */

int srv_submit(srv_engine *e, srv_request *r) {
    r->t_submit_ms = srv_now_ms();
    r->deadline_ms = r->t_submit_ms + e->p.timeout_s * 1e3;
    if (r->kind == REQ_GENERATE) {
        int32_t total = r->n_prompt + r->max_tokens;
        if ((uint32_t)total > e->n_ctx) total = (int32_t)e->n_ctx;
        if (r->n_prompt <= 0) {
            snprintf(r->error, sizeof r->error, "the prompt is empty");
            return 400;
        }
        if ((uint32_t)r->n_prompt >= e->n_ctx) {
            snprintf(r->error, sizeof r->error, "the prompt has %d tokens, the context holds %u (leave room to generate)",
                     r->n_prompt, e->n_ctx);
            return 400;
        }
        if (blocks_for(e, total) > e->budget_blocks) {
            snprintf(r->error, sizeof r->error,
                     "prompt (%d tokens) plus max_tokens (%d) needs %llu KV blocks but the whole budget is %llu blocks",
                     r->n_prompt, r->max_tokens, (unsigned long long)blocks_for(e, total),
                     (unsigned long long)e->budget_blocks);
            return 400;
        }
    } else {
        if (r->slot_id < 0 || r->slot_id >= e->p.n_parallel) {
            snprintf(r->error, sizeof r->error, "slot id %d is out of range [0, %d)", r->slot_id, e->p.n_parallel);
            return 400;
        }
        if (r->kind != REQ_SLOT_ERASE) {
            if (!e->p.slot_save_path) {
                snprintf(r->error, sizeof r->error, "slot save/restore is disabled: start the server with --slot-save-path DIR");
                return 501;
            }
            if (!r->filename || !valid_filename(r->filename)) {
                snprintf(r->error, sizeof r->error,
                         "invalid filename: use letters, digits, '.', '_' and '-' only (no paths, not starting with '.', not ending in '.tmp.DIGITS')");
                return 400;
            }
        }
    }
    pthread_mutex_lock(&e->mu);
    if (e->q_len >= e->p.queue_max) {
        e->m.requests_rejected++;
        pthread_mutex_unlock(&e->mu);
        snprintf(r->error, sizeof r->error, "server busy: %d requests are already waiting", e->p.queue_max);
        return 503;
    }
    srv_request_ref(r);
    r->next = NULL;
    if (e->q_tail) e->q_tail->next = r;
    else e->q_head = r;
    e->q_tail = r;
    e->q_len++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void srv_cancel(srv_engine *e, srv_request *r) {
    atomic_store(&r->cancelled, true);
    pthread_mutex_lock(&e->mu);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void srv_get_metrics(srv_engine *e, srv_metrics *m) {
    pthread_mutex_lock(&e->mu);
    *m = e->m;
    m->n_parallel = e->p.n_parallel;
    m->n_ctx = e->n_ctx;
    pthread_mutex_unlock(&e->mu);
}

srv_engine *srv_engine_start(rotkv_model *model, const rotkv_context_params *cp_in, const srv_params *p, char *err,
                             size_t errlen) {
    srv_engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->model = model;
    e->p = *p;
    if (e->p.n_parallel <= 0) e->p.n_parallel = 1;
    if (e->p.queue_max <= 0) e->p.queue_max = 64;
    if (e->p.timeout_s <= 0) e->p.timeout_s = 600;
    rotkv_context_params cp = *cp_in;
    cp.n_seq_max = (uint32_t)e->p.n_parallel;
    rotkv_error rerr = {0};
    /* the budget is enforced by admission; the library's cap is the same number */
    cp.kv_budget_bytes = 0;
    if (rotkv_context_create(model, &cp, &e->ctx, &rerr) != ROTKV_OK) {
        snprintf(err, errlen, "%s", rerr.msg);
        free(e);
        return NULL;
    }
    e->n_ctx = rotkv_n_ctx(e->ctx);
    e->n_batch = cp.n_batch ? cp.n_batch : 512;
    rotkv_kv_stats st;
    rotkv_kv_get_stats(e->ctx, &st);
    uint64_t full = blocks_for(e, (int32_t)e->n_ctx) * (uint64_t)e->p.n_parallel;
    e->budget_blocks = p->kv_budget_bytes ? p->kv_budget_bytes / st.bytes_per_block : full;
    if (e->budget_blocks > full) e->budget_blocks = full;
    if (e->budget_blocks == 0) {
        snprintf(err, errlen, "--kv-budget %llu bytes is less than one KV block (%llu bytes = %u tokens)",
                 (unsigned long long)p->kv_budget_bytes, (unsigned long long)st.bytes_per_block, st.tokens_per_block);
        rotkv_context_free(e->ctx);
        free(e);
        return NULL;
    }
    fprintf(stderr, "rotkv: KV budget %llu blocks of %u tokens (%.2f MiB each, %.2f MiB in all)\n",
            (unsigned long long)e->budget_blocks, st.tokens_per_block, st.bytes_per_block / 1048576.0,
            e->budget_blocks * (double)st.bytes_per_block / 1048576.0);
    /* recreate with the library enforcing the same cap, as a safety net */
    rotkv_context_free(e->ctx);
    cp.kv_budget_bytes = e->budget_blocks * st.bytes_per_block;
    if (rotkv_context_create(model, &cp, &e->ctx, &rerr) != ROTKV_OK) {
        snprintf(err, errlen, "%s", rerr.msg);
        free(e);
        return NULL;
    }
    snprintf(e->kv_format, sizeof e->kv_format, "k=%s v=%s", rotkv_kv_type_name(cp.type_k),
             rotkv_kv_type_name(cp.type_v));
    rotkv_model_info info;
    rotkv_model_get_info(model, &info);
    uint64_t fp = fnv1a(FNV1A_SEED, info.arch, strlen(info.arch));
    fp = fnv1a(fp, info.name, strlen(info.name));
    uint32_t dims[] = {info.n_vocab, info.n_ctx_train, info.n_embd, info.n_layer, info.n_head, info.n_head_kv,
                       info.head_dim, info.n_ff};
    fp = fnv1a(fp, dims, sizeof dims);
    fp = fnv1a(fp, &info.n_params, sizeof info.n_params);
    fp = fnv1a(fp, &info.weight_bytes, sizeof info.weight_bytes);
    struct stat sb;
    if (p->model_path && stat(p->model_path, &sb) == 0) {
        uint64_t size = (uint64_t)sb.st_size;
        fp = fnv1a(fp, &size, sizeof size);
    }
    e->model_fp = fp;
    e->slots = calloc((size_t)e->p.n_parallel, sizeof *e->slots);
    e->b_tok = malloc(e->n_batch * sizeof *e->b_tok);
    e->b_seq = malloc(e->n_batch * sizeof *e->b_seq);
    e->b_logits = malloc(e->n_batch * sizeof *e->b_logits);
    e->b_slot = malloc(e->n_batch * sizeof *e->b_slot);
    if (!e->slots || !e->b_tok || !e->b_seq || !e->b_logits || !e->b_slot || (uint32_t)e->p.n_parallel > e->n_batch) {
        snprintf(err, errlen, !e->slots ? "out of memory" : "--parallel must not exceed the batch size (-b)");
        srv_engine_stop(e);
        return NULL;
    }
    for (int i = 0; i < e->p.n_parallel; i++) e->slots[i].id = i;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->win_start = srv_now_ms();
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        snprintf(err, errlen, "cannot start the engine thread");
        srv_engine_stop(e);
        return NULL;
    }
    e->thread_started = true;
    return e;
}

void srv_engine_stop(srv_engine *e) {
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    while (e->q_head) {
        srv_request *r = e->q_head;
        e->q_head = r->next;
        pthread_mutex_lock(&r->mu);
        req_fail_locked(r, 503, "server_error", "server shutting down");
        pthread_mutex_unlock(&r->mu);
        srv_request_unref(r);
    }
    for (int i = 0; e->slots && i < e->p.n_parallel; i++) {
        slot *s = &e->slots[i];
        if (s->req) {
            pthread_mutex_lock(&s->req->mu);
            req_fail_locked(s->req, 503, "server_error", "server shutting down");
            pthread_mutex_unlock(&s->req->mu);
            srv_request *r = s->req;
            slot_release(e, s, true);
            srv_request_unref(r);
        }
        free(s->cache);
        free(s->gen);
    }
    if (e->thread_started) {
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
    }
    free(e->slots);
    free(e->b_tok);
    free(e->b_seq);
    free(e->b_logits);
    free(e->b_slot);
    rotkv_context_free(e->ctx);
    free(e);
}
