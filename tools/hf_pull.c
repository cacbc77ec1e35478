/* hf_pull.c — `rotkv pull` and -hf: GGUF files from the Hugging Face Hub into
 * a local cache (see hf_pull.h for the environment it reads).
 *
 * The file list comes from {endpoint}/api/models/OWNER/NAME/tree/main?recursive=true,
 * each file from {endpoint}/OWNER/NAME/resolve/main/PATH (redirects to any
 * host are followed; libcurl sends the Authorization header only while the
 * redirect stays on the original host). A download goes to PATH.part, resumes
 * with a Range request after an interrupted attempt (3 attempts), and becomes
 * PATH only once its size and the SHA-256 the Hub publishes for LFS files
 * match; then the sidecar PATH.json records them, so that reuse, --list and
 * offline use need no network. Progress: one updating line on a terminal,
 * else a line at the start, at every 10% and at the end. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <curl/curl.h>
#include <openssl/evp.h>

#include "cli.h"
#include "hf_pull.h"

#define HF_REVISION "main"
#define HF_DEFAULT_TAG "Q4_K_M"
#define HF_ATTEMPTS 3
#define HF_MAX_JSON (64u << 20)
#define HF_MAX_DEPTH 8

typedef struct {
    char *path;      /* inside the repository */
    uint64_t size;
    char sha256[65]; /* lower-case hex; "" when the Hub publishes none (not an LFS file) */
    char oid[65];    /* the git blob id ("" if unknown) */
} hf_file;

typedef struct {
    hf_file *v;
    size_t n, cap;
} hf_files;

typedef struct {
    char owner[97], name[97];
    const char *sel; /* QUANT or FILE.gguf after the ':', or NULL */
} hf_spec;

typedef struct {
    char *endpoint;    /* without a trailing slash */
    const char *token; /* $HF_TOKEN, NULL if unset */
    char *cache;       /* the cache root */
    long timeout_s;
    bool tty;
} hf_env;

typedef struct {
    long status; /* HTTP status of the last response (0 if none) */
    CURLcode cc;
    char err[CURL_ERROR_SIZE];
} http_result;

/* ---- small helpers ---- */

static void hf_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("rotkv: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Allocation failure ends the program with a message (the caller cannot do better). */
static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("rotkv: error: out of memory\n", stderr);
        exit(1);
    }
    return q;
}

static char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xrealloc(NULL, n >= 0 ? (size_t)n + 1 : 1);
    if (n < 0) {
        *s = 0;
        return s;
    }
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static bool ends_with_ci(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void fmt_size(uint64_t b, char *buf, size_t n) {
    if (b < 1024) snprintf(buf, n, "%llu B", (unsigned long long)b);
    else if (b < 1048576) snprintf(buf, n, "%.1f KiB", b / 1024.0);
    else if (b < 1073741824) snprintf(buf, n, "%.1f MiB", b / 1048576.0);
    else snprintf(buf, n, "%.2f GiB", b / 1073741824.0);
}

static bool file_size(const char *path, uint64_t *size) {
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return false;
    *size = (uint64_t)st.st_size;
    return true;
}

static bool mkdirs(const char *dir) {
    char *p = str_printf("%s", dir);
    bool ok = true;
    for (char *c = p + 1; ok; c++) {
        if (*c != '/' && *c) continue;
        const char save = *c;
        *c = 0;
        if (mkdir(p, 0755) && errno != EEXIST) {
            hf_err("cannot create directory %s: %s", p, strerror(errno));
            ok = false;
        }
        *c = save;
        if (!save) break;
    }
    free(p);
    return ok;
}

static bool fsync_path(const char *path, int flags) {
    const int fd = open(path, flags);
    if (fd < 0) return false;
    const bool ok = fsync(fd) == 0;
    close(fd);
    return ok;
}

static bool sha256_file(const char *path, char hex[65]) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    ok = ok && buf;
    size_t r;
    while (ok && (r = fread(buf, 1, CHUNK, fp)) > 0) ok = EVP_DigestUpdate(md, buf, r);
    ok = ok && !ferror(fp);
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int dn = 0;
    ok = ok && EVP_DigestFinal_ex(md, dig, &dn) && dn == 32;
    for (unsigned i = 0; ok && i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    free(buf);
    EVP_MD_CTX_free(md);
    fclose(fp);
    return ok;
}

/* ---- spec, environment, repository paths ---- */

static bool valid_id(const char *s, size_t n) {
    if (n == 0 || n > 96 || !isalnum((unsigned char)s[0])) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i])) return false;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '.' && s[i + 1] == '.') return false;
    return true;
}

static bool parse_spec(const char *spec, hf_spec *s) {
    const char *slash = strchr(spec, '/'), *colon = strchr(spec, ':');
    const char *name = slash ? slash + 1 : NULL;
    const size_t ol = slash ? (size_t)(slash - spec) : 0;
    const size_t nl = !name ? 0 : colon ? (size_t)(colon - name) : strlen(name);
    if (!slash || (colon && colon < slash) || (colon && !colon[1]) || !valid_id(spec, ol) || !valid_id(name, nl)) {
        hf_err("'%s' is not a model on the Hub: use OWNER/NAME[:QUANT|:FILE.gguf], e.g. "
               "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
               spec);
        return false;
    }
    memcpy(s->owner, spec, ol);
    s->owner[ol] = 0;
    memcpy(s->name, name, nl);
    s->name[nl] = 0;
    s->sel = colon ? colon + 1 : NULL;
    return true;
}

/* A repository path is stored under the cache: relative, no '.', '..' or empty components. */
static bool safe_rel_path(const char *p) {
    if (!*p || *p == '/') return false;
    for (const char *c = p; *c; c++)
        if (*c == '\\' || (unsigned char)*c < 0x20) return false;
    for (const char *c = p;;) {
        const char *e = strchr(c, '/');
        const size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return false;
        if (!e) return true;
        c = e + 1;
    }
}

/* path with everything but unreserved characters and '/' percent-encoded (malloc'd) */
static char *url_path(const char *p) {
    char *out = xrealloc(NULL, 3 * strlen(p) + 1), *o = out;
    for (; *p; p++) {
        const unsigned char c = (unsigned char)*p;
        if (isalnum(c) || strchr("-._~/", c)) *o++ = (char)c;
        else o += sprintf(o, "%%%02X", c);
    }
    *o = 0;
    return out;
}

static char *cache_root(void) {
    const char *d = getenv("ROTKV_CACHE");
    if (d && *d) return str_printf("%s", d);
    d = getenv("XDG_CACHE_HOME");
    if (d && *d) return str_printf("%s/rotkv", d);
    d = getenv("HOME");
    if (d && *d) return str_printf("%s/.cache/rotkv", d);
    hf_err("no cache directory: set ROTKV_CACHE (or HOME)");
    return NULL;
}

static bool env_init(hf_env *e) {
    memset(e, 0, sizeof *e);
    e->cache = cache_root();
    if (!e->cache) return false;
    const char *ep = getenv("HF_ENDPOINT");
    e->endpoint = str_printf("%s", ep && *ep ? ep : "https://huggingface.co");
    for (size_t n = strlen(e->endpoint); n > 0 && e->endpoint[n - 1] == '/'; n--) e->endpoint[n - 1] = 0;
    const char *tok = getenv("HF_TOKEN");
    e->token = tok && *tok ? tok : NULL;
    e->timeout_s = 30;
    const char *t = getenv("ROTKV_HTTP_TIMEOUT");
    if (t && *t) {
        char *end;
        const long v = strtol(t, &end, 10);
        if (*end || v <= 0 || v > 86400)
            fprintf(stderr, "rotkv: warning: ROTKV_HTTP_TIMEOUT='%s' is not a number of seconds; using 30\n", t);
        else e->timeout_s = v;
    }
    e->tty = isatty(STDERR_FILENO);
    return true;
}

static void env_free(hf_env *e) {
    free(e->endpoint);
    free(e->cache);
}

/* ---- HTTP ---- */

/* A transfer's watch: stall detection (no byte for the timeout) and, when
 * show, the progress display. */
typedef struct {
    bool show, tty;
    double timeout_ms;
    uint64_t offset, total; /* bytes already in the .part before this attempt; the file's size */
    uint64_t last_done;     /* shown on the terminal line */
    double t0, last_ms, last_data_ms;
    curl_off_t last_now;
    int decile;
    bool drawn, stalled;
} progress;


static int on_progress(void *u, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);

/* A handle for url with the common options; pg watches it for stalls. */
static CURL *http_open(const hf_env *e, const char *url, struct curl_slist **hdrs, http_result *r, progress *pg) {
    memset(r, 0, sizeof *r);
    r->cc = CURLE_OUT_OF_MEMORY;
    *hdrs = NULL;
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    if (e->token) {
        char *h = str_printf("Authorization: Bearer %s", e->token);
        *hdrs = curl_slist_append(NULL, h);
        free(h);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->err);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "rotkv/" ROTKV_VERSION);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, e->timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* curl's LOW_SPEED_TIME averages over a window of seconds: a stall is
     * detected here instead, exactly timeout_s after the last byte */
    pg->timeout_ms = e->timeout_s * 1e3;
    pg->t0 = pg->last_data_ms = cli_now_ms();
    pg->last_now = 0;
    pg->stalled = false;
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, pg);
    return c;
}

static void http_perform(CURL *c, struct curl_slist *hdrs, http_result *r, const progress *pg) {
    r->cc = curl_easy_perform(c);
    if (r->cc == CURLE_ABORTED_BY_CALLBACK && pg->stalled) r->cc = CURLE_OPERATION_TIMEDOUT;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
}

/* The Hub could not be used at all (no connection, a stall, a server error):
 * the cache may stand in for it. */
static bool http_unreachable(const http_result *r) {
    return r->cc != CURLE_OK && (r->cc != CURLE_HTTP_RETURNED_ERROR || r->status >= 500);
}

/* Why a transfer failed for a reason other than a 4xx answer. */
static void http_describe(const hf_env *e, const http_result *r, char *buf, size_t n) {
    if (r->cc == CURLE_HTTP_RETURNED_ERROR) snprintf(buf, n, "HTTP %ld from %s", r->status, e->endpoint);
    else if (r->cc == CURLE_WEIRD_SERVER_REPLY) snprintf(buf, n, "%s: %s", e->endpoint, r->err);
    else if (r->cc == CURLE_OPERATION_TIMEDOUT)
        snprintf(buf, n, "timed out: no data for %ld s (ROTKV_HTTP_TIMEOUT) from %s", e->timeout_s, e->endpoint);
    else if (r->cc == CURLE_COULDNT_CONNECT || r->cc == CURLE_COULDNT_RESOLVE_HOST || r->cc == CURLE_COULDNT_RESOLVE_PROXY)
        snprintf(buf, n, "cannot reach %s: %s", e->endpoint, r->err[0] ? r->err : curl_easy_strerror(r->cc));
    else snprintf(buf, n, "transfer failed: %s", r->err[0] ? r->err : curl_easy_strerror(r->cc));
}

static void http_report(const hf_env *e, const char *what, const http_result *r) {
    const long st = r->status;
    if (r->cc == CURLE_HTTP_RETURNED_ERROR && (st == 401 || st == 403)) {
        if (e->token)
            hf_err("%s: access denied (HTTP %ld) with the token in HF_TOKEN: the repository may be gated (accept "
                   "its conditions on its Hub page) or private, or the token lacks read access to it",
                   what, st);
        else
            hf_err("%s: access denied (HTTP %ld): the repository may not exist, or be gated or private; accept its "
                   "conditions on its Hub page and set HF_TOKEN to an access token",
                   what, st);
    } else if (r->cc == CURLE_HTTP_RETURNED_ERROR && st == 404) {
        hf_err("repository or file not found: %s", what);
    } else {
        char why[CURL_ERROR_SIZE + 200];
        http_describe(e, r, why, sizeof why);
        hf_err("%s: %s", what, why);
    }
}

typedef struct {
    char *p;
    size_t n;
} membuf;

static size_t mem_write(char *d, size_t sz, size_t nm, void *u) {
    membuf *b = u;
    const size_t k = sz * nm;
    if (b->n + k > HF_MAX_JSON) return 0;
    char *q = realloc(b->p, b->n + k + 1);
    if (!q) return 0;
    memcpy(q + b->n, d, k);
    b->n += k;
    q[b->n] = 0;
    b->p = q;
    return k;
}

/* ---- the repository's file list ---- */

static void files_free(hf_files *f) {
    for (size_t i = 0; i < f->n; i++) free(f->v[i].path);
    free(f->v);
    memset(f, 0, sizeof *f);
}

static void copy_hex(char *dst, const char *src) {
    size_t n = src ? strlen(src) : 0;
    bool hex = n > 0 && n <= 64;
    for (size_t i = 0; hex && i < n; i++) hex = isxdigit((unsigned char)src[i]);
    if (!hex) n = 0;
    for (size_t i = 0; i < n; i++) dst[i] = (char)tolower((unsigned char)src[i]);
    dst[n] = 0;
}

static void files_add(hf_files *f, const char *path, uint64_t size, const char *sha256, const char *oid) {
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 16;
        f->v = xrealloc(f->v, f->cap * sizeof *f->v);
    }
    hf_file *x = &f->v[f->n++];
    x->path = str_printf("%s", path);
    x->size = size;
    copy_hex(x->sha256, sha256 && strlen(sha256) == 64 ? sha256 : NULL);
    copy_hex(x->oid, oid);
}

static const char *json_str(const cJSON *o, const char *key) {
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* The .gguf files of a tree listing; false if it is not a JSON array. */
static bool parse_tree(const char *json, hf_files *out) {
    cJSON *root = cJSON_Parse(json);
    if (!cJSON_IsArray(root)) {
        cJSON_Delete(root);
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const char *type = json_str(it, "type"), *path = json_str(it, "path");
        if (!type || strcmp(type, "file") || !path || !ends_with_ci(path, ".gguf") || !safe_rel_path(path)) continue;
        const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(it, "lfs");
        if (!cJSON_IsObject(lfs)) lfs = NULL;
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(lfs ? lfs : it, "size");
        if (!cJSON_IsNumber(size) || !(size->valuedouble >= 0)) continue;
        files_add(out, path, (uint64_t)size->valuedouble, lfs ? json_str(lfs, "oid") : NULL, json_str(it, "oid"));
    }
    cJSON_Delete(root);
    return true;
}

/* A "Link: <URL>; rel="next"" header (the Hub's pagination): *next = URL. */
static size_t on_header(char *d, size_t sz, size_t nm, void *u) {
    char **next = u;
    const size_t k = sz * nm;
    if (k < 5 || strncasecmp(d, "link:", 5)) return k;
    char *line = xrealloc(NULL, k + 1);
    memcpy(line, d, k);
    line[k] = 0;
    char *save = NULL;
    for (char *item = strtok_r(line + 5, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *lt = strchr(item, '<'), *gt = lt ? strchr(lt, '>') : NULL;
        if (gt && (strstr(gt, "rel=\"next\"") || strstr(gt, "rel=next"))) {
            free(*next);
            *next = str_printf("%.*s", (int)(gt - lt - 1), lt + 1);
        }
    }
    free(line);
    return k;
}

/* One page of the file list into out; *next: the next page's URL, or NULL. */
static bool fetch_tree_page(const hf_env *e, const char *url, hf_files *out, char **next, http_result *r) {
    membuf body = {0};
    struct curl_slist *h;
    progress pg = {0};
    *next = NULL;
    CURL *c = http_open(e, url, &h, r, &pg);
    if (c) {
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, next);
        http_perform(c, h, r, &pg);
    }
    const bool ok = r->cc == CURLE_OK && body.p && parse_tree(body.p, out);
    if (r->cc == CURLE_OK && !ok) {
        r->cc = CURLE_WEIRD_SERVER_REPLY; /* as if unreachable: a portal's page, a broken proxy */
        snprintf(r->err, sizeof r->err, "its file list is not a JSON array");
    }
    free(body.p);
    if (!ok) {
        free(*next);
        *next = NULL;
    }
    return ok;
}

static bool fetch_tree(const hf_env *e, const hf_spec *s, hf_files *out, http_result *r) {
    char *url = str_printf("%s/api/models/%s/%s/tree/" HF_REVISION "?recursive=true", e->endpoint, s->owner, s->name);
    const size_t prefix = strlen(e->endpoint);
    bool ok = true;
    for (int page = 0; url && ok; page++) {
        char *next = NULL;
        /* the token goes with every page: only to the endpoint */
        if (page == 10000 || strncmp(url, e->endpoint, prefix) || url[prefix] != '/') {
            r->cc = CURLE_WEIRD_SERVER_REPLY;
            snprintf(r->err, sizeof r->err, "its file list continues outside %s (or without end)", e->endpoint);
            ok = false;
            break;
        }
        ok = fetch_tree_page(e, url, out, &next, r);
        free(url);
        url = next;
    }
    free(url);
    return ok;
}

/* ---- selection ---- */

/* ".../NAME-00002-of-00003.gguf": *stem = strlen(".../NAME"), part 2, count 3. */
static bool split_parse(const char *path, size_t *stem, int *part, int *count) {
    const size_t n = strlen(path), tail = strlen("-00001-of-00003.gguf");
    if (n <= tail) return false;
    const char *t = path + n - tail;
    if (t[0] != '-' || strncmp(t + 6, "-of-", 4) || strcasecmp(t + 15, ".gguf")) return false;
    int a = 0, b = 0;
    for (int i = 0; i < 5; i++) {
        if (!isdigit((unsigned char)t[1 + i]) || !isdigit((unsigned char)t[10 + i])) return false;
        a = 10 * a + (t[1 + i] - '0');
        b = 10 * b + (t[10 + i] - '0');
    }
    if (b < 2 || a < 1 || a > b) return false;
    *stem = n - tail;
    *part = a;
    *count = b;
    return true;
}

int hf_split_count(const char *path) {
    size_t stem;
    int part, count;
    return split_parse(path, &stem, &part, &count) ? count : 0;
}

/* a and b are the same model: the same file, or parts of one split model */
static bool same_model(const char *a, const char *b) {
    size_t sa, sb;
    int pa, pb, ca, cb;
    if (!split_parse(a, &sa, &pa, &ca) || !split_parse(b, &sb, &pb, &cb)) return !strcmp(a, b);
    return ca == cb && sa == sb && !strncmp(a, b, sa);
}

static bool is_word(char c) { return isalnum((unsigned char)c) || c == '_'; }

/* The tag occurs in the file's name as a token of its own (case-insensitive):
 * Q4_K_M in "Llama-3.2-1B-Q4_K_M.gguf", but Q4_K not in it. */
static bool tag_matches(const char *path, const char *tag) {
    const char *b = base_name(path);
    const size_t n = strlen(b) - 5, t = strlen(tag); /* without ".gguf" */
    for (size_t i = 0; i + t <= n; i++)
        if (!strncasecmp(b + i, tag, t) && (i == 0 || !is_word(b[i - 1])) && (i + t == n || !is_word(b[i + t])))
            return true;
    return false;
}

static bool is_mmproj(const char *path) { return !strncasecmp(base_name(path), "mmproj", 6); }

/* Prints each model among the marked files once (a split model as its first part). */
static void print_models(const hf_files *f, const bool *mark) {
    for (size_t i = 0; i < f->n; i++) {
        bool first = mark[i];
        for (size_t j = 0; first && j < i; j++) first = !(mark[j] && same_model(f->v[j].path, f->v[i].path));
        if (!first) continue;
        char sz[32];
        fmt_size(f->v[i].size, sz, sizeof sz);
        const int parts = hf_split_count(f->v[i].path);
        if (parts) fprintf(stderr, "  %s (split into %d parts)\n", f->v[i].path, parts);
        else fprintf(stderr, "  %s (%s)\n", f->v[i].path, sz);
    }
}

/* Marks the files the selection names; returns how many distinct models they are
 * and the index of one of them in *rep. */
static size_t mark_candidates(const hf_files *f, const char *sel, bool *mark, size_t *rep) {
    const bool by_file = sel && ends_with_ci(sel, ".gguf");
    const char *tag = sel ? sel : HF_DEFAULT_TAG;
    size_t n = 0;
    for (int pass = 0; pass < 2 && n == 0; pass++)
        for (size_t i = 0; i < f->n; i++) {
            const char *p = f->v[i].path;
            if (by_file) mark[i] = pass == 0 ? !strcmp(p, sel) : !strcmp(base_name(p), sel);
            else if (pass == 0) mark[i] = !is_mmproj(p) && tag_matches(p, tag);
            else mark[i] = !sel && !is_mmproj(p); /* no tag and no Q4_K_M: any single model */
            n += mark[i];
        }
    size_t models = 0;
    for (size_t i = 0; i < f->n; i++) {
        bool first = mark[i];
        for (size_t j = 0; first && j < i; j++) first = !(mark[j] && same_model(f->v[j].path, f->v[i].path));
        if (first) {
            models++;
            *rep = i;
        }
    }
    return models;
}

static bool select_model(const hf_files *f, const hf_spec *s, const char *repo, size_t *rep) {
    if (f->n == 0) {
        hf_err("%s has no .gguf files", repo);
        return false;
    }
    bool *mark = xrealloc(NULL, f->n * sizeof *mark);
    const size_t models = mark_candidates(f, s->sel, mark, rep);
    if (models == 0) {
        if (s->sel && ends_with_ci(s->sel, ".gguf")) hf_err("%s has no file %s; its GGUF files:", repo, s->sel);
        else hf_err("%s has no %s file; give one of its GGUF files as :FILE.gguf or its quantization as :QUANT:", repo,
                    s->sel ? s->sel : HF_DEFAULT_TAG);
        for (size_t i = 0; i < f->n; i++) mark[i] = true;
    } else if (models > 1) {
        hf_err("%s%s%s names %zu models; pick one with :FILE.gguf (or :QUANT):", repo, s->sel ? ":" : "",
               s->sel ? s->sel : "", models);
    }
    if (models != 1) print_models(f, mark);
    free(mark);
    return models == 1;
}

/* The files of the model rep belongs to, in part order (itself if not split). */
static size_t *model_parts(const hf_files *f, size_t rep, const char *repo, size_t *n_out) {
    int count = hf_split_count(f->v[rep].path);
    const size_t n = count ? (size_t)count : 1;
    size_t *idx = xrealloc(NULL, n * sizeof *idx);
    idx[0] = rep;
    for (int k = 1; count && k <= count; k++) {
        bool found = false;
        for (size_t j = 0; j < f->n && !found; j++) {
            size_t stem;
            int part, cnt;
            if (same_model(f->v[rep].path, f->v[j].path) && split_parse(f->v[j].path, &stem, &part, &cnt) && part == k) {
                idx[k - 1] = j;
                found = true;
            }
        }
        if (!found) {
            hf_err("%s: part %d of %d of %s is missing", repo, k, count, f->v[rep].path);
            free(idx);
            return NULL;
        }
    }
    *n_out = n;
    return idx;
}

/* ---- the cache ---- */

static bool sidecar_read(const char *local, hf_file *f) {
    char *p = str_printf("%s.json", local);
    char *text = NULL;
    FILE *fp = fopen(p, "rb");
    free(p);
    if (fp) {
        enum { MAX = 1 << 16 };
        text = xrealloc(NULL, MAX + 1);
        const size_t n = fread(text, 1, MAX, fp);
        text[n] = 0;
        fclose(fp);
    }
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(j, "size");
    const char *sha = json_str(j, "sha256");
    const bool ok = cJSON_IsNumber(size) && size->valuedouble >= 0 && sha && strlen(sha) == 64;
    if (ok) {
        f->size = (uint64_t)size->valuedouble;
        copy_hex(f->sha256, sha);
        copy_hex(f->oid, json_str(j, "oid"));
    }
    cJSON_Delete(j);
    return ok;
}

static bool sidecar_write(const char *local, const hf_file *f, const char *repo) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "repo", repo);
    cJSON_AddStringToObject(j, "path", f->path);
    cJSON_AddNumberToObject(j, "size", (double)f->size);
    cJSON_AddStringToObject(j, "sha256", f->sha256);
    cJSON_AddStringToObject(j, "oid", f->oid);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    char *tmp = str_printf("%s.json.tmp", local), *dst = str_printf("%s.json", local);
    FILE *fp = text ? fopen(tmp, "wb") : NULL;
    bool ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
    ok = fp && fclose(fp) == 0 && ok && rename(tmp, dst) == 0;
    if (!ok) {
        hf_err("cannot write %s: %s", dst, strerror(errno));
        unlink(tmp);
    }
    free(text);
    free(tmp);
    free(dst);
    return ok;
}

/* The cached copy at local is complete (its size is the sidecar's) and, when
 * remote is given, the version the Hub lists: the same size and SHA-256 (the
 * git id for files without one). Fills *c from the sidecar. */
static bool cache_valid(const char *local, const hf_file *remote, hf_file *c) {
    uint64_t size;
    if (!sidecar_read(local, c) || !file_size(local, &size) || size != c->size) return false;
    if (!remote) return true;
    if (remote->size != c->size) return false;
    return remote->sha256[0] ? !strcmp(remote->sha256, c->sha256) : remote->oid[0] && !strcmp(remote->oid, c->oid);
}

typedef void (*walk_fn)(void *u, const char *rel, const char *full);

/* Calls fn for every regular file under root/rel, in name order. */
static void walk_files(const char *root, const char *rel, int depth, walk_fn fn, void *u) {
    char *dir = rel[0] ? str_printf("%s/%s", root, rel) : str_printf("%s", root);
    struct dirent **list = NULL;
    const int n = scandir(dir, &list, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        const char *nm = list[i]->d_name;
        if (strcmp(nm, ".") && strcmp(nm, "..")) {
            char *crel = rel[0] ? str_printf("%s/%s", rel, nm) : str_printf("%s", nm);
            char *full = str_printf("%s/%s", dir, nm);
            struct stat st;
            if (!stat(full, &st) && S_ISDIR(st.st_mode) && depth < HF_MAX_DEPTH) walk_files(root, crel, depth + 1, fn, u);
            else if (!stat(full, &st) && S_ISREG(st.st_mode)) fn(u, crel, full);
            free(crel);
            free(full);
        }
        free(list[i]);
    }
    free(list);
    free(dir);
}

static void add_cached(void *u, const char *rel, const char *full) {
    hf_file c = {0};
    if (ends_with_ci(rel, ".gguf") && cache_valid(full, NULL, &c)) files_add(u, rel, c.size, c.sha256, c.oid);
}

/* The verified files of the repository in the cache, as a file list. */
static void scan_cache(const hf_env *e, const hf_spec *s, hf_files *out) {
    char *root = str_printf("%s/%s/%s", e->cache, s->owner, s->name);
    walk_files(root, "", 0, add_cached, out);
    free(root);
}

/* ---- download ---- */

static void fmt_eta(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 360000) snprintf(buf, n, "--:--");
    else if (s >= 3600) snprintf(buf, n, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
    else snprintf(buf, n, "%d:%02d", (int)s / 60, (int)s % 60);
}

static int on_progress(void *u, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    progress *p = u;
    const double now = cli_now_ms(), secs = (now - p->t0) / 1e3;
    if (dlnow != p->last_now) {
        p->last_now = dlnow;
        p->last_data_ms = now;
    } else if (now - p->last_data_ms > p->timeout_ms) {
        p->stalled = true;
        return 1;
    }
    if (!p->show) return 0;
    const uint64_t done = p->offset + (uint64_t)dlnow;
    const double rate = secs > 0 ? dlnow / secs : 0; /* bytes/s in this attempt */
    if (p->tty) {
        if (now - p->last_ms < 100 && (done < p->total || done == p->last_done)) return 0;
        p->last_ms = now;
        p->last_done = done;
        char eta[32];
        fmt_eta(rate > 0 ? (p->total - done) / rate : -1, eta, sizeof eta);
        fprintf(stderr, "\rrotkv:   %.1f / %.1f MiB  %.2f MB/s  ETA %s   ", done / 1048576.0, p->total / 1048576.0,
                rate / 1e6, eta);
        p->drawn = true;
    } else {
        const int d = p->total ? (int)(done * 10 / p->total) : 0;
        if (d > p->decile && d < 10) {
            p->decile = d;
            fprintf(stderr, "rotkv:   %d%% (%.1f / %.1f MiB, %.2f MB/s)\n", 10 * d, done / 1048576.0,
                    p->total / 1048576.0, rate / 1e6);
        }
    }
    return 0;
}

enum xfer { XFER_OK, XFER_RETRY, XFER_RESTART, XFER_FAIL };

/* One attempt: appends to part from its current size (a Range request when > 0).
 * Reports local errors itself; an HTTP error answer is left in *r. */
static enum xfer transfer(const hf_env *e, const char *url, const char *part, progress *pg, http_result *r) {
    memset(r, 0, sizeof *r);
    FILE *fp = fopen(part, "ab");
    if (!fp) {
        hf_err("cannot write %s: %s", part, strerror(errno));
        return XFER_FAIL;
    }
    if (!file_size(part, &pg->offset)) pg->offset = 0;
    struct curl_slist *h;
    CURL *c = http_open(e, url, &h, r, pg);
    if (!c) {
        hf_err("cannot start a transfer (libcurl)");
        fclose(fp);
        return XFER_FAIL;
    }
    curl_easy_setopt(c, CURLOPT_WRITEDATA, fp);
    if (pg->offset) curl_easy_setopt(c, CURLOPT_RESUME_FROM_LARGE, (curl_off_t)pg->offset);
    http_perform(c, h, r, pg);
    const bool closed = fclose(fp) == 0;
    if (pg->drawn) fputc('\n', stderr);
    pg->drawn = false;
    if ((r->cc == CURLE_OK && r->status == 416) || r->cc == CURLE_RANGE_ERROR) return XFER_RESTART;
    if (r->cc == CURLE_WRITE_ERROR || (r->cc == CURLE_OK && !closed)) {
        hf_err("cannot write %s: %s", part, strerror(errno));
        return XFER_FAIL;
    }
    if (r->cc == CURLE_OK) return XFER_OK;
    return http_unreachable(r) ? XFER_RETRY : XFER_FAIL;
}

/* Brings part to the file's full size, resuming and retrying; *resumed: some
 * bytes were there before (a leftover .part, or an interrupted attempt). */
static bool download(const hf_env *e, const char *url, const char *part, const hf_file *f, const char *label,
                     bool *resumed) {
    char sz[32];
    fmt_size(f->size, sz, sizeof sz);
    fprintf(stderr, "rotkv: downloading %s (%s)\n", label, sz);
    progress pg = {.show = true, .tty = e->tty, .total = f->size};
    const double t0 = cli_now_ms();
    for (int attempt = 1;; attempt++) {
        uint64_t have = 0;
        if (file_size(part, &have) && have > f->size) {
            if (truncate(part, 0)) unlink(part);
            have = 0;
        }
        *resumed |= have > 0;
        if (have == f->size && have > 0) break;
        http_result r;
        const enum xfer x = transfer(e, url, part, &pg, &r);
        char why[CURL_ERROR_SIZE + 200];
        if (x == XFER_FAIL) {
            if (r.cc == CURLE_HTTP_RETURNED_ERROR) http_report(e, label, &r);
            return false;
        }
        if (x == XFER_RESTART) {
            if (truncate(part, 0)) unlink(part);
            snprintf(why, sizeof why, "the server did not resume at byte %llu", (unsigned long long)pg.offset);
        } else if (x == XFER_RETRY) {
            http_describe(e, &r, why, sizeof why);
        } else {
            if (!file_size(part, &have)) have = 0;
            if (have == f->size) break;
            if (have > f->size) {
                unlink(part);
                hf_err("%s: the server sent %llu bytes, the Hub lists %llu", label, (unsigned long long)have,
                       (unsigned long long)f->size);
                return false;
            }
            snprintf(why, sizeof why, "the transfer ended at byte %llu of %llu", (unsigned long long)have,
                     (unsigned long long)f->size);
        }
        if (attempt == HF_ATTEMPTS) {
            hf_err("%s: %s (after %d attempts; run the command again to resume)", label, why, HF_ATTEMPTS);
            return false;
        }
        fprintf(stderr, "rotkv: %s: %s; retrying (attempt %d of %d)\n", label, why, attempt + 1, HF_ATTEMPTS);
        if (x != XFER_RESTART) nanosleep(&(struct timespec){0, 500000000L * attempt}, NULL);
    }
    const double secs = (cli_now_ms() - t0) / 1e3;
    fprintf(stderr, "rotkv: downloaded %s (%s in %.1f s)\n", label, sz, secs);
    return true;
}

enum install { INSTALL_OK, INSTALL_FAIL, INSTALL_AGAIN };

/* Verifies the complete part against the Hub's SHA-256 and moves it to local.
 * A mismatch deletes the part; with again, it is only a note (the caller
 * downloads once more: a resumed part may be left over from another version). */
static enum install install(const char *part, const char *local, const hf_file *f, const char *repo, const char *label,
                            bool again) {
    hf_file rec = *f;
    if (!sha256_file(part, rec.sha256)) {
        hf_err("cannot read %s: %s", part, strerror(errno));
        return INSTALL_FAIL;
    }
    if (f->sha256[0] && strcmp(rec.sha256, f->sha256)) {
        unlink(part);
        if (again) {
            fprintf(stderr, "rotkv: %s: the resumed download does not match its SHA-256 (a partial file of another "
                            "version?); downloading it again from the start\n", label);
            return INSTALL_AGAIN;
        }
        hf_err("SHA-256 mismatch for %s: expected %s, got %s (the download was deleted)", label, f->sha256,
               rec.sha256);
        return INSTALL_FAIL;
    }
    if (!f->sha256[0])
        fprintf(stderr, "rotkv: note: the Hub publishes no SHA-256 for %s (not an LFS file): only its size was checked\n",
                label);
    if (!fsync_path(part, O_RDONLY) || rename(part, local)) {
        hf_err("cannot move %s to %s: %s", part, local, strerror(errno));
        return INSTALL_FAIL;
    }
    char *dir = str_printf("%s", local);
    *strrchr(dir, '/') = 0;
    fsync_path(dir, O_RDONLY | O_DIRECTORY); /* best effort: the rename reaches the disk */
    free(dir);
    return sidecar_write(local, &rec, repo) ? INSTALL_OK : INSTALL_FAIL;
}

/* Downloads f to part and installs it at local (at most twice: see install). */
static bool fetch_file(const hf_env *e, const char *url, const char *part, const char *local, const hf_file *f,
                       const char *repo, const char *label) {
    for (int pass = 0; pass < 2; pass++) {
        bool resumed = false;
        if (!download(e, url, part, f, label, &resumed)) return false;
        const enum install r = install(part, local, f, repo, label, resumed && pass == 0);
        if (r != INSTALL_AGAIN) return r == INSTALL_OK;
    }
    return false;
}

/* The local path of one file (malloc'd), downloading it unless the cache holds that version. */
static char *ensure_file(const hf_env *e, const hf_spec *s, const hf_file *f, bool offline) {
    char *repo = str_printf("%s/%s", s->owner, s->name);
    char *local = str_printf("%s/%s/%s", e->cache, repo, f->path);
    char *label = str_printf("%s/%s", repo, f->path);
    hf_file c = {0};
    bool ok = cache_valid(local, offline ? NULL : f, &c);
    if (ok && !offline) fprintf(stderr, "rotkv: %s is up to date in the cache\n", label);
    if (!ok) {
        char *dir = str_printf("%s", local), *part = str_printf("%s.part", local);
        char *rel = url_path(f->path), *url = str_printf("%s/%s/resolve/" HF_REVISION "/%s", e->endpoint, repo, rel);
        *strrchr(dir, '/') = 0;
        ok = mkdirs(dir) && fetch_file(e, url, part, local, f, repo, label);
        free(dir);
        free(part);
        free(rel);
        free(url);
    }
    free(repo);
    free(label);
    if (!ok) {
        free(local);
        local = NULL;
    }
    return local;
}

/* The file list: from the Hub, else (unreachable) from the cache. */
static bool list_files(const hf_env *e, const hf_spec *s, const char *repo, hf_files *files, bool *offline) {
    http_result r;
    *offline = false;
    if (fetch_tree(e, s, files, &r)) return true;
    if (!http_unreachable(&r)) {
        http_report(e, repo, &r);
        return false;
    }
    char why[CURL_ERROR_SIZE + 200];
    http_describe(e, &r, why, sizeof why);
    files_free(files); /* pages read before the failure */
    scan_cache(e, s, files);
    if (files->n == 0) {
        hf_err("%s: %s; and the cache (%s) holds nothing of it", repo, why, e->cache);
        return false;
    }
    fprintf(stderr, "rotkv: %s: %s; using the cache (offline)\n", repo, why);
    *offline = true;
    return true;
}

static char *resolve(const hf_env *e, const hf_spec *s) {
    char *repo = str_printf("%s/%s", s->owner, s->name);
    hf_files files = {0};
    bool offline;
    size_t rep = 0, n = 0, *parts = NULL;
    char *first = NULL;
    if (list_files(e, s, repo, &files, &offline) && select_model(&files, s, repo, &rep) &&
        (parts = model_parts(&files, rep, repo, &n)))
        for (size_t i = 0; i < n; i++) {
            char *p = ensure_file(e, s, &files.v[parts[i]], offline);
            if (!p) {
                free(first);
                first = NULL;
                break;
            }
            if (i == 0) first = p;
            else free(p);
        }
    if (first && offline) fprintf(stderr, "rotkv: using cached %s (offline)\n", first);
    free(parts);
    files_free(&files);
    free(repo);
    return first;
}

char *hf_resolve_model(const char *spec) {
    hf_spec s;
    hf_env e;
    if (!parse_spec(spec, &s) || !env_init(&e)) return NULL;
    char *path = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {
        path = resolve(&e, &s);
        curl_global_cleanup();
    } else hf_err("cannot initialize libcurl");
    env_free(&e);
    return path;
}

/* ---- rotkv pull ---- */

typedef struct {
    uint64_t total, partial;
    int n, n_partial;
} list_stats;

/* rel is OWNER/NAME/PATH */
static void list_one(void *u, const char *rel, const char *full) {
    list_stats *st = u;
    const char *a = strchr(rel, '/'), *b = a ? strchr(a + 1, '/') : NULL;
    if (!b) return;
    hf_file c = {0};
    uint64_t size = 0;
    char sz[32];
    const bool part = ends_with_ci(rel, ".gguf.part");
    if (part && file_size(full, &size)) {
        fmt_size(size, sz, sizeof sz);
        printf("%.*s:%.*s  %s so far (incomplete download)\n", (int)(b - rel), rel, (int)(strlen(b + 1) - 5), b + 1,
               sz);
        st->partial += size;
        st->n_partial++;
    } else if (ends_with_ci(rel, ".gguf") && cache_valid(full, NULL, &c)) {
        fmt_size(c.size, sz, sizeof sz);
        printf("%.*s:%s  %s\n", (int)(b - rel), rel, b + 1, sz);
        st->total += c.size;
        st->n++;
    }
}

static int list_cache(void) {
    char *root = cache_root();
    if (!root) return 1;
    list_stats st = {0};
    walk_files(root, "", 0, list_one, &st);
    char sz[32];
    fmt_size(st.total, sz, sizeof sz);
    printf("%d file%s, %s in %s\n", st.n, st.n == 1 ? "" : "s", sz, root);
    if (st.n_partial) {
        fmt_size(st.partial, sz, sizeof sz);
        printf("%d incomplete download%s, %s (rotkv pull resumes them)\n", st.n_partial, st.n_partial == 1 ? "" : "s",
               sz);
    }
    free(root);
    return 0;
}

static void pull_usage(FILE *fp) {
    fprintf(fp,
            "usage: rotkv pull OWNER/NAME[:QUANT|:FILE.gguf]   download a GGUF model from the Hugging Face Hub\n"
            "       rotkv pull --list                          what the cache holds, with sizes\n"
            "  :QUANT picks the file whose name has that tag (e.g. Q8_0; default Q4_K_M, else the repo's only GGUF);\n"
            "  :FILE.gguf a file by its path. Every part of a split model is downloaded. Prints the local path.\n"
            "  Any command's -m MODEL can be -hf OWNER/NAME[:QUANT] instead.\n"
            "environment:\n"
            "  HF_TOKEN            access token for gated or private repositories\n"
            "  HF_ENDPOINT         the Hub (default https://huggingface.co)\n"
            "  ROTKV_CACHE         the cache (default $XDG_CACHE_HOME/rotkv, else ~/.cache/rotkv)\n"
            "  ROTKV_HTTP_TIMEOUT  seconds without data before a transfer times out (default 30)\n");
}

int cmd_pull(int argc, char **argv) {
    if (argc == 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        pull_usage(stdout);
        return 0;
    }
    if (argc == 1 && !strcmp(argv[0], "--list")) return list_cache();
    hf_spec s;
    if (argc != 1 || argv[0][0] == '-') {
        pull_usage(stderr);
        return 2;
    }
    if (!parse_spec(argv[0], &s)) return 2;
    char *path = hf_resolve_model(argv[0]);
    if (!path) return 1;
    printf("%s\n", path);
    free(path);
    return 0;
}
