/* test_server.c — integration tests of `rotkv serve`: the real server
 * (ROTKV_BIN, default build/rotkv) on a free loopback port with
 * tinystories-656k, driven with curl; the official `openai` npm client
 * (tests/server/openai_client.mjs) when node and npm are available; and the
 * chat templates of vocab-llama3/vocab-qwen3 rendered by `rotkv chat --render`
 * against python3-jinja2. Long load/abuse runs: tests/server/load.sh. */
#include <cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define TINY "models/tinystories-656k-f32.gguf"

typedef struct {
    pid_t pid;
    int port;
    char log[400];
} server;

static server g_srv = {0};   /* the main server (no API key) */
static char g_tmp[256];      /* scratch directory */
static char g_model[512];
static bool g_have_model;

static const char *rotkv_bin(void) {
    const char *b = getenv("ROTKV_BIN");
    return b && *b ? b : "build/rotkv";
}

static void msleep(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts `rotkv serve` with extra args; waits for "listening on". */
static bool server_start(server *s, const char *const *extra) {
    snprintf(s->log, sizeof s->log, "%s/server-%d.log", g_tmp, (int)time(NULL) ^ rand());
    const char *argv[64];
    int n = 0;
    argv[n++] = rotkv_bin();
    argv[n++] = "serve";
    argv[n++] = "-m";
    argv[n++] = g_model;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "-t";
    argv[n++] = "2";
    for (int i = 0; extra && extra[i]; i++) argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        FILE *fp = freopen(s->log, "w", stderr);
        (void)fp;
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 600; i++) { /* up to 60 s (ASan) */
        msleep(100);
        size_t len;
        char *txt = test_read_file(s->log, &len);
        const char *p = txt ? strstr(txt, "listening on http://127.0.0.1:") : NULL;
        if (p) {
            s->port = atoi(p + strlen("listening on http://127.0.0.1:"));
            free(txt);
            return s->port > 0;
        }
        free(txt);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            return false;
        }
    }
    return false;
}

/* Stops the server with SIGTERM; returns its exit status (-1 if it had died). */
static int server_stop(server *s) {
    if (!s->pid) return -1;
    int st = 0;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
        s->pid = 0;
        return -1;
    }
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 300; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        msleep(100);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return -2;
}

static bool server_alive(const server *s) {
    int st;
    return s->pid && waitpid(s->pid, &st, WNOHANG) == 0;
}

static char *run_capture(const char *cmd, int *rc) {
    FILE *fp = popen(cmd, "r");
    if (!fp) return NULL;
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += r;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    int st = pclose(fp);
    if (rc) *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

/* An HTTP request with curl. Returns the body (malloc'd); *status = HTTP code. */
static char *http(const server *s, const char *method, const char *path, const char *body, const char *extra,
                  int *status) {
    char bodyfile[300] = "", outfile[300], cmd[2048];
    static int seq = 0;
    snprintf(outfile, sizeof outfile, "%s/out-%d-%d", g_tmp, (int)getpid(), seq++);
    if (body) {
        snprintf(bodyfile, sizeof bodyfile, "%s/body-%d-%d", g_tmp, (int)getpid(), seq++);
        FILE *fp = fopen(bodyfile, "wb");
        fwrite(body, 1, strlen(body), fp);
        fclose(fp);
    }
    snprintf(cmd, sizeof cmd,
             "curl -s -N --max-time 120 -o %s -w '%%{http_code}' -X %s %s%s%s -H 'Content-Type: application/json' %s "
             "'http://127.0.0.1:%d%s'",
             outfile, method, body ? "--data-binary @" : "", bodyfile, "", extra ? extra : "", s->port, path);
    char *code = run_capture(cmd, NULL);
    *status = code ? atoi(code) : 0;
    free(code);
    size_t len;
    char *out = test_read_file(outfile, &len);
    unlink(outfile);
    if (body) unlink(bodyfile);
    return out ? out : calloc(1, 1);
}

static cJSON *http_json(const server *s, const char *method, const char *path, const char *body, int *status) {
    char *txt = http(s, method, path, body, NULL, status);
    cJSON *j = cJSON_Parse(txt);
    if (!j) print_error("not JSON (HTTP %d): %s\n", *status, txt);
    free(txt);
    return j;
}

static double metric(const server *s, const char *name) {
    int st;
    char *txt = http(s, "GET", "/metrics", NULL, NULL, &st);
    double v = -1;
    char key[200];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(txt, key);
    if (p) v = atof(p + strlen(key));
    free(txt);
    return v;
}

static const char *completion_text(cJSON *j) {
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
    cJSON *t = cJSON_GetObjectItem(c, "text");
    if (!t) t = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content");
    return cJSON_GetStringValue(t);
}
static const char *finish_reason(cJSON *j) {
    return cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0),
                                                    "finish_reason"));
}
static int usage_field(cJSON *j, const char *k) {
    return (int)cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), k));
}

#define NEED_SERVER()                                                                          \
    do {                                                                                       \
        if (!g_have_model) {                                                                   \
            print_message("[ SKIP     ] %s: ../shared not found (set ROTKV_SHARED)\n", TINY); \
            skip();                                                                            \
        }                                                                                      \
        assert_true(server_alive(&g_srv));                                                     \
    } while (0)

/* ------------------------------------------------------------------ tests */

static void test_health_models_metrics(void **state) {
    (void)state;
    NEED_SERVER();
    int st;
    cJSON *j = http_json(&g_srv, "GET", "/health", NULL, &st);
    assert_int_equal(st, 200);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "status")), "ok");
    cJSON_Delete(j);
    j = http_json(&g_srv, "GET", "/v1/models", NULL, &st);
    assert_int_equal(st, 200);
    cJSON *m = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(m, "id")), "tinystories-656k-f32.gguf");
    cJSON_Delete(j);
    assert_true(metric(&g_srv, "rotkv_kv_blocks_budget") == 8);
    assert_true(metric(&g_srv, "rotkv_slots_total") == 4);
}

/* Greedy completion through the server equals `rotkv run` (batched decode
 * with other sequences changes nothing), non-streaming and streaming. */
static void test_completion_matches_run(void **state) {
    (void)state;
    NEED_SERVER();
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'Once upon a time' -n 24 --temp 0 -t 2 2>/dev/null", rotkv_bin(),
             g_model);
    int rc;
    char *want = run_capture(cmd, &rc);
    assert_int_equal(rc, 0);
    size_t wl = strlen(want);
    if (wl && want[wl - 1] == '\n') want[--wl] = 0;
    int st;
    cJSON *j = http_json(&g_srv, "POST", "/v1/completions",
                         "{\"prompt\": \"Once upon a time\", \"max_tokens\": 24, \"temperature\": 0}", &st);
    assert_int_equal(st, 200);
    assert_string_equal(completion_text(j), want);
    assert_string_equal(finish_reason(j), "length");
    assert_int_equal(usage_field(j, "completion_tokens"), 24);
    assert_int_equal(usage_field(j, "total_tokens"),
                     usage_field(j, "prompt_tokens") + usage_field(j, "completion_tokens"));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "object")), "text_completion");
    cJSON_Delete(j);
    /* streaming: the concatenated deltas are the same text, then usage and [DONE] */
    char *sse = http(&g_srv, "POST", "/v1/completions",
                     "{\"prompt\": \"Once upon a time\", \"max_tokens\": 24, \"temperature\": 0, \"stream\": true}",
                     NULL, &st);
    assert_int_equal(st, 200);
    char text[8192] = "";
    int events = 0, usage_seen = 0;
    const char *fin = NULL;
    char finbuf[32] = "";
    for (char *line = strtok(sse, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "data: ", 6)) continue;
        if (!strcmp(line + 6, "[DONE]")) {
            events = -events; /* mark done */
            continue;
        }
        assert_true(events >= 0);
        cJSON *ev = cJSON_Parse(line + 6);
        assert_non_null(ev);
        events++;
        const char *t = completion_text(ev);
        if (t) strncat(text, t, sizeof text - strlen(text) - 1);
        if (finish_reason(ev)) {
            snprintf(finbuf, sizeof finbuf, "%s", finish_reason(ev));
            fin = finbuf;
        }
        if (cJSON_GetObjectItem(ev, "usage")) {
            usage_seen = 1;
            assert_int_equal(usage_field(ev, "completion_tokens"), 24);
        }
        cJSON_Delete(ev);
    }
    assert_true(events < 0); /* [DONE] came last */
    assert_string_equal(text, want);
    assert_non_null(fin);
    assert_string_equal(fin, "length");
    assert_true(usage_seen);
    free(sse);
    free(want);
}

static void test_stop_and_eog(void **state) {
    (void)state;
    NEED_SERVER();
    int st;
    cJSON *j = http_json(&g_srv, "POST", "/v1/completions",
                         "{\"prompt\": \"Once upon a time\", \"max_tokens\": 40, \"temperature\": 0, \"stop\": [\"Spot\", \"zzz\"]}",
                         &st);
    assert_int_equal(st, 200);
    assert_string_equal(finish_reason(j), "stop");
    const char *t = completion_text(j);
    assert_null(strstr(t, "Spot"));
    assert_non_null(strstr(t, "her dog, ")); /* the text right before the stop string is kept */
    cJSON_Delete(j);
    /* the same with streaming (a stop string split over tokens is never sent) */
    char *sse = http(&g_srv, "POST", "/v1/completions",
                     "{\"prompt\": \"Once upon a time\", \"max_tokens\": 40, \"temperature\": 0, \"stop\": \"Spot\", \"stream\": true}",
                     NULL, &st);
    assert_int_equal(st, 200);
    assert_null(strstr(sse, "Spot"));
    assert_non_null(strstr(sse, "\"finish_reason\":\"stop\""));
    free(sse);
    /* sampling until the model's end-of-generation token: finish_reason stop before max_tokens */
    j = http_json(&g_srv, "POST", "/v1/completions",
                  "{\"prompt\": \"Once upon a time\", \"max_tokens\": 400, \"temperature\": 1, \"seed\": 3}", &st);
    assert_int_equal(st, 200);
    assert_string_equal(finish_reason(j), "stop");
    assert_true(usage_field(j, "completion_tokens") < 400);
    cJSON_Delete(j);
    /* the same seed gives the same text */
    cJSON *a = http_json(&g_srv, "POST", "/v1/chat/completions",
                         "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell a story\"}], \"max_tokens\": 30, \"seed\": 7, \"temperature\": 0.9}", &st);
    cJSON *b = http_json(&g_srv, "POST", "/v1/chat/completions",
                         "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell a story\"}], \"max_tokens\": 30, \"seed\": 7, \"temperature\": 0.9}", &st);
    assert_string_equal(completion_text(a), completion_text(b));
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(a, "object")), "chat.completion");
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_errors(void **state) {
    (void)state;
    NEED_SERVER();
    static const struct {
        const char *method, *path, *body;
        int status;
        const char *param; /* expected error.param, or NULL */
    } cases[] = {
        {"POST", "/v1/completions", "{not json", 400, NULL},
        {"POST", "/v1/completions", "[1, 2]", 400, NULL},
        {"POST", "/v1/completions", "", 400, NULL},
        {"POST", "/v1/completions", "{\"prompt\": 42}", 400, "prompt"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": \"8\"}", 400, "max_tokens"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 0}", 400, "max_tokens"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 1.5}", 400, "max_tokens"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 100000}", 400, "max_tokens"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"temperature\": -1}", 400, "temperature"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"temperature\": \"hot\"}", 400, "temperature"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"top_p\": 1.5}", 400, "top_p"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"top_k\": -3}", 400, "top_k"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"min_p\": 2}", 400, "min_p"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"seed\": \"s\"}", 400, "seed"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"stream\": 1}", 400, "stream"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"stop\": 5}", 400, "stop"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"stop\": [\"\"]}", 400, "stop"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"n\": 2}", 400, "n"},
        {"POST", "/v1/completions", "{\"prompt\": [99999]}", 400, "prompt"},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"model\": \"gpt-4o\"}", 404, "model"},
        {"POST", "/v1/chat/completions", "{\"messages\": []}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": \"hi\"}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\"}]}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", 400, "messages"},
        {"POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{\"type\": \"function\"}]}", 400, "tools"},
        {"GET", "/v1/completions", NULL, 405, NULL},
        {"POST", "/v1/models", "{}", 405, NULL},
        {"GET", "/v2/whatever", NULL, 404, NULL},
        {"POST", "/slots/0?action=save", "{\"filename\": \"x.bin\"}", 501, NULL}, /* no --slot-save-path here */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st;
        cJSON *j = http_json(&g_srv, cases[i].method, cases[i].path, cases[i].body, &st);
        if (st != cases[i].status) {
            print_error("case %zu (%s %s %s): HTTP %d, expected %d\n", i, cases[i].method, cases[i].path,
                        cases[i].body ? cases[i].body : "", st, cases[i].status);
            fail();
        }
        cJSON *e = cJSON_GetObjectItem(j, "error");
        assert_non_null(e);
        assert_non_null(cJSON_GetStringValue(cJSON_GetObjectItem(e, "message")));
        assert_non_null(cJSON_GetStringValue(cJSON_GetObjectItem(e, "type")));
        if (cases[i].param) assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(e, "param")), cases[i].param);
        cJSON_Delete(j);
    }
    /* a prompt longer than the context (512 tokens) */
    size_t n = 20000;
    char *big = malloc(n + 64);
    strcpy(big, "{\"prompt\": \"");
    size_t k = strlen(big);
    for (size_t i = 0; i < 3000; i++) k += (size_t)sprintf(big + k, "cat ");
    strcpy(big + k, "\"}");
    int st;
    cJSON *j = http_json(&g_srv, "POST", "/v1/completions", big, &st);
    assert_int_equal(st, 400);
    assert_non_null(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message")),
                           "context"));
    cJSON_Delete(j);
    free(big);
    /* a body over --max-body (64 KiB in this server) */
    big = malloc(100000);
    memset(big, ' ', 99999);
    big[0] = '{';
    big[99998] = '}';
    big[99999] = 0;
    j = http_json(&g_srv, "POST", "/v1/completions", big, &st);
    assert_int_equal(st, 413);
    cJSON_Delete(j);
    free(big);
    assert_true(server_alive(&g_srv));
}

/* A shared system prompt is reused from the prefix cache. */
static void test_prefix_reuse(void **state) {
    (void)state;
    NEED_SERVER();
    const char *sys = "Once upon a time there was a little girl named Lily. She loved to play outside in the park with "
                      "her friends. One day she found a big red ball under a tree and she was very happy.";
    char body[2048];
    int st;
    double before = metric(&g_srv, "rotkv_prompt_tokens_cached_total");
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"system\", \"content\": \"%s\"}, {\"role\": \"user\", \"content\": \"What did Lily find?\"}], \"max_tokens\": 8}",
             sys);
    cJSON *a = http_json(&g_srv, "POST", "/v1/chat/completions", body, &st);
    assert_int_equal(st, 200);
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"system\", \"content\": \"%s\"}, {\"role\": \"user\", \"content\": \"Where did she play?\"}], \"max_tokens\": 8}",
             sys);
    cJSON *b = http_json(&g_srv, "POST", "/v1/chat/completions", body, &st);
    assert_int_equal(st, 200);
    int cached = (int)cJSON_GetNumberValue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "usage"), "prompt_tokens_details"), "cached_tokens"));
    print_message("[ INFO     ] second request: %d of %d prompt tokens from the prefix cache\n", cached,
                  usage_field(b, "prompt_tokens"));
    assert_true(cached >= 40);
    assert_true(metric(&g_srv, "rotkv_prompt_tokens_cached_total") >= before + cached);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

/* 16 concurrent streaming clients on 4 slots and 8 KV blocks: all complete;
 * afterwards every block is free or in the prefix cache. One client that
 * disconnects early is cancelled. */
static void test_concurrency_and_cancel(void **state) {
    (void)state;
    NEED_SERVER();
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "cd %s && for i in $(seq 1 16); do "
             "curl -s -N --max-time 120 -o conc-$i.txt -w '%%{http_code}\\n' http://127.0.0.1:%d/v1/chat/completions "
             "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"Story '$i'\"}], \"max_tokens\": 200, \"stream\": true, \"seed\": '$i'}' & "
             "done; "
             "curl -s -N --max-time 0.2 -o /dev/null http://127.0.0.1:%d/v1/completions "
             "-d '{\"prompt\": \"Once\", \"max_tokens\": 480, \"stream\": true}' & "
             "wait",
             g_tmp, g_srv.port, g_srv.port);
    int rc;
    char *codes = run_capture(cmd, &rc);
    int ok = 0;
    for (char *p = codes; (p = strstr(p, "200")); p += 3) ok++;
    free(codes);
    assert_int_equal(ok, 16);
    for (int i = 1; i <= 16; i++) {
        char path[400];
        snprintf(path, sizeof path, "%s/conc-%d.txt", g_tmp, i);
        size_t len;
        char *txt = test_read_file(path, &len);
        assert_non_null(txt);
        assert_non_null(strstr(txt, "\"finish_reason\":\""));
        assert_non_null(strstr(txt, "data: [DONE]"));
        assert_null(strstr(txt, "\"error\""));
        free(txt);
        unlink(path);
    }
    /* blocks: nothing reserved, everything used is prefix cache */
    for (int i = 0; i < 50 && metric(&g_srv, "rotkv_slots_active") != 0; i++) msleep(100);
    assert_true(metric(&g_srv, "rotkv_slots_active") == 0);
    assert_true(metric(&g_srv, "rotkv_queue_length") == 0);
    assert_true(metric(&g_srv, "rotkv_kv_blocks_reserved") == 0);
    assert_true(metric(&g_srv, "rotkv_kv_blocks_used") == metric(&g_srv, "rotkv_kv_blocks_prefix_cache"));
    assert_true(metric(&g_srv, "rotkv_kv_blocks_free") + metric(&g_srv, "rotkv_kv_blocks_prefix_cache") ==
                metric(&g_srv, "rotkv_kv_blocks_budget"));
    int st;
    char *m = http(&g_srv, "GET", "/metrics", NULL, NULL, &st);
    const char *cl = strstr(m, "rotkv_requests_total{outcome=\"cancelled\"}");
    assert_non_null(cl);
    print_message("[ INFO     ] %.*s\n", (int)strcspn(cl, "\n"), cl);
    free(m);
}

/* Admission on a 1-block budget (256 tokens): a request whose prompt +
 * max_tokens can never fit is refused at once (400); a burst waits in the
 * queue (never more than one running) and only what overflows --max-queue
 * gets 503. */
static void test_admission(void **state) {
    (void)state;
    NEED_SERVER();
    server s3 = {0};
    const char *extra[] = {"-np", "4", "--kv-budget", "131072", "--max-queue", "3", NULL};
    assert_true(server_start(&s3, extra));
    int st;
    assert_true(metric(&s3, "rotkv_kv_blocks_budget") == 1);
    cJSON *j = http_json(&s3, "POST", "/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 300}", &st);
    assert_int_equal(st, 400);
    assert_non_null(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message")),
                           "KV blocks"));
    cJSON_Delete(j);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "for i in $(seq 1 10); do curl -s -o /dev/null --max-time 120 -w '%%{http_code}\\n' "
             "http://127.0.0.1:%d/v1/completions -d '{\"prompt\": \"Once upon a time\", \"max_tokens\": 240, "
             "\"temperature\": 0.5, \"seed\": '$i'}' & done; "
             "for k in $(seq 1 40); do curl -s http://127.0.0.1:%d/metrics | grep '^rotkv_slots_active' >> %s/active.txt; "
             "sleep 0.02; done; wait",
             s3.port, s3.port, g_tmp);
    int rc;
    char *codes = run_capture(cmd, &rc);
    int n200 = 0, n503 = 0, other = 0;
    for (char *line = strtok(codes, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strcmp(line, "200")) n200++;
        else if (!strcmp(line, "503")) n503++;
        else other++;
    }
    free(codes);
    print_message("[ INFO     ] burst of 10 on a 1-block budget: %d completed, %d rejected (queue full)\n", n200, n503);
    assert_int_equal(other, 0);
    assert_int_equal(n200 + n503, 10);
    assert_true(n200 >= 4); /* one running + three queued at least */
    assert_true(metric(&s3, "rotkv_requests_total{outcome=\"rejected\"}") == n503);
    char path[400];
    snprintf(path, sizeof path, "%s/active.txt", g_tmp);
    size_t len;
    char *act = test_read_file(path, &len);
    assert_non_null(act);
    for (char *p = act; (p = strstr(p, "rotkv_slots_active ")); p++) assert_true(atoi(p + 19) <= 1);
    free(act);
    assert_true(metric(&s3, "rotkv_kv_blocks_reserved") == 0);
    assert_int_equal(server_stop(&s3), 0);
}

static bool write_file(const char *path, const void *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return false;
    bool ok = fwrite(p, 1, n, fp) == n;
    return fclose(fp) == 0 && ok;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void test_slots_and_api_key(void **state) {
    (void)state;
    NEED_SERVER();
    char dir[300];
    snprintf(dir, sizeof dir, "%s/slots", g_tmp);
    mkdir(dir, 0700);
    server s2 = {0};
    const char *extra[] = {"-np", "2", "--api-key", "k3y", "--slot-save-path", dir, NULL};
    assert_true(server_start(&s2, extra));
    int st;
    const char *auth = "-H 'Authorization: Bearer k3y'";
    char *r = http(&s2, "GET", "/v1/models", NULL, NULL, &st);
    assert_int_equal(st, 401);
    free(r);
    r = http(&s2, "GET", "/v1/models", NULL, "-H 'Authorization: Bearer k3x'", &st);
    assert_int_equal(st, 401);
    free(r);
    r = http(&s2, "GET", "/health", NULL, NULL, &st);
    assert_int_equal(st, 200);
    free(r);
    r = http(&s2, "POST", "/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 16, \"temperature\": 0}",
             auth, &st);
    assert_int_equal(st, 200);
    free(r);
    /* save the slot that ran it (slot 0: the first empty one) */
    r = http(&s2, "POST", "/slots/0?action=save", "{\"filename\": \"story.slot\"}", auth, &st);
    assert_int_equal(st, 200);
    cJSON *j = cJSON_Parse(r);
    int n_saved = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "n_saved"));
    assert_true(n_saved >= 16);
    cJSON_Delete(j);
    free(r);
    r = http(&s2, "POST", "/slots/1?action=restore", "{\"filename\": \"story.slot\"}", auth, &st);
    assert_int_equal(st, 200);
    j = cJSON_Parse(r);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "n_restored")), n_saved);
    cJSON_Delete(j);
    free(r);
    /* paths cannot escape the folder */
    static const char *const badnames[] = {"../x", "/etc/passwd", ".hidden", "a/b", "", "x\\\\y"};
    for (size_t i = 0; i < sizeof badnames / sizeof badnames[0]; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"filename\": \"%s\"}", badnames[i]);
        r = http(&s2, "POST", "/slots/0?action=save", body, auth, &st);
        assert_int_equal(st, 400);
        free(r);
    }
    r = http(&s2, "POST", "/slots/9?action=save", "{\"filename\": \"a\"}", auth, &st);
    assert_int_equal(st, 400);
    free(r);
    r = http(&s2, "POST", "/slots/0?action=fly", "{\"filename\": \"a\"}", auth, &st);
    assert_int_equal(st, 400);
    free(r);
    /* damaged: one token byte flipped */
    char path[400], bad[400];
    snprintf(path, sizeof path, "%s/story.slot", dir);
    size_t len;
    unsigned char *data = (unsigned char *)test_read_file(path, &len);
    assert_non_null(data);
    const size_t hdr = 8 + 4 + 4 + 8 + 64 + 128;
    assert_int_equal(len, hdr + (size_t)n_saved * 4 + 8);
    data[hdr + 1] ^= 0x40;
    snprintf(bad, sizeof bad, "%s/damaged.slot", dir);
    assert_true(write_file(bad, data, len));
    r = http(&s2, "POST", "/slots/0?action=restore", "{\"filename\": \"damaged.slot\"}", auth, &st);
    assert_int_equal(st, 400);
    assert_non_null(strstr(r, "damaged"));
    free(r);
    data[hdr + 1] ^= 0x40;
    /* another model: a different fingerprint with a valid checksum */
    data[16] ^= 0xff;
    uint64_t sum = fnv1a(fnv1a(0xcbf29ce484222325ull, data, hdr), data + hdr, (size_t)n_saved * 4);
    memcpy(data + hdr + (size_t)n_saved * 4, &sum, 8);
    snprintf(bad, sizeof bad, "%s/other.slot", dir);
    assert_true(write_file(bad, data, len));
    r = http(&s2, "POST", "/slots/0?action=restore", "{\"filename\": \"other.slot\"}", auth, &st);
    assert_int_equal(st, 400);
    assert_non_null(strstr(r, "another model"));
    free(r);
    free(data);
    /* truncated */
    assert_true(write_file(bad, "RKVSLOT1", 8));
    r = http(&s2, "POST", "/slots/0?action=restore", "{\"filename\": \"other.slot\"}", auth, &st);
    assert_int_equal(st, 400);
    free(r);
    assert_true(server_alive(&s2));
    assert_int_equal(server_stop(&s2), 0);
}

/* The official openai npm client (tests/server/openai_client.mjs). */
static void test_openai_client(void **state) {
    (void)state;
    NEED_SERVER();
    int rc;
    char *out = run_capture("node --version 2>/dev/null && npm --version 2>/dev/null", &rc);
    free(out);
    if (rc != 0) {
        print_message("[ SKIP     ] node/npm not installed (apt-get install nodejs npm)\n");
        skip();
    }
    out = run_capture("cd tests/server && (test -d node_modules/openai || npm ci --no-audit --no-fund --silent) >/dev/null 2>&1 && echo ok", &rc);
    bool ok = strstr(out, "ok") != NULL;
    free(out);
    if (!ok) {
        print_message("[ SKIP     ] npm ci in tests/server failed (no registry access?)\n");
        skip();
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "node tests/server/openai_client.mjs http://127.0.0.1:%d/v1 2>&1", g_srv.port);
    out = run_capture(cmd, &rc);
    print_message("%s", out);
    free(out);
    assert_int_equal(rc, 0);
}

/* Chat templates of the real GGUFs, rendered by the rotkv binary, equal jinja2's. */
static void test_cli_render_vs_jinja(void **state) {
    (void)state;
    char path[512];
    SKIP_WITHOUT_SHARED(path, "models/vocab-qwen3.gguf");
    if (system("python3 -c 'import jinja2' >/dev/null 2>&1") != 0) {
        print_message("[ SKIP     ] python3-jinja2 not installed\n");
        skip();
    }
    static const char *const models[] = {"models/vocab-qwen3.gguf", "models/vocab-llama3.gguf"};
    static const char *const bos[] = {"", "<|begin_of_text|>"};
    for (int i = 0; i < 2; i++) {
        test_shared_path(models[i], path, sizeof path);
        char cmd[2048];
        int rc;
        snprintf(cmd, sizeof cmd, "%s chat -m %s --render tests/server/conversations.json 2>/dev/null", rotkv_bin(),
                 path);
        char *got = run_capture(cmd, &rc);
        assert_int_equal(rc, 0);
        snprintf(cmd, sizeof cmd, "python3 tests/server/jinja_render.py --gguf %s tests/server/conversations.json --bos '%s'",
                 path, bos[i]);
        char *want = run_capture(cmd, &rc);
        assert_int_equal(rc, 0);
        cJSON *g = cJSON_Parse(got), *w = cJSON_Parse(want);
        assert_non_null(g);
        assert_non_null(w);
        if (!cJSON_Compare(g, w, true)) {
            print_error("%s: rotkv chat --render differs from jinja2\n--- rotkv\n%s\n--- jinja2\n%s\n", models[i], got, want);
            fail();
        }
        print_message("[ INFO     ] %s: %d conversations rendered equal to jinja2\n", models[i], cJSON_GetArraySize(g));
        cJSON_Delete(g);
        cJSON_Delete(w);
        free(got);
        free(want);
    }
}

/* `rotkv chat`: two turns, a reset; the second turn reuses the first from the KV cache. */
static void test_chat_cli(void **state) {
    (void)state;
    NEED_SERVER();
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "printf 'Hello there\\nTell me more\\n/reset\\nBye\\n/exit\\n' | %s chat -m %s -n 12 -t 2 "
             "--system 'You tell stories.' 2>&1",
             rotkv_bin(), g_model);
    int rc;
    char *out = run_capture(cmd, &rc);
    assert_int_equal(rc, 0);
    int turns = 0, cached2 = -1;
    for (const char *p = out; (p = strstr(p, " prompt tokens (")); p++) {
        turns++;
        if (turns == 2) cached2 = atoi(p + strlen(" prompt tokens ("));
    }
    if (turns != 3 || cached2 < 40) {
        print_error("unexpected chat transcript:\n%s\n", out);
        fail();
    }
    free(out);
}

static void test_shutdown_clean(void **state) {
    (void)state;
    NEED_SERVER();
    assert_int_equal(server_stop(&g_srv), 0);
    size_t len;
    char *log = test_read_file(g_srv.log, &len);
    if (log && strstr(log, "ERROR: AddressSanitizer")) {
        print_error("%s\n", log);
        fail();
    }
    free(log);
}

/* A gemma3 model (sliding window 16, rings of 32) on one slot: a request that shares a
 * long prefix with the cache reuses it (the rings still hold the window before the
 * cut), one that shares only an early part is decoded from the start (the rings have
 * moved on); every answer equals `rotkv run` of the same prompt. Local model, no
 * ../shared needed. */
static server g_gemma_srv; /* stopped in teardown too, should a check fail */

static void test_sliding_window_prefix_reuse(void **state) {
    (void)state;
    char saved[sizeof g_model];
    memcpy(saved, g_model, sizeof saved);
    snprintf(g_model, sizeof g_model, "tests/models/syn-gemma3-Q8_0.gguf");
    const char *extra[] = {"-np", "1", "-c", "256", NULL};
    const bool ok = server_start(&g_gemma_srv, extra);
    memcpy(g_model, saved, sizeof saved);
    if (!ok) fail_msg("could not start the gemma3 server (log %s)", g_gemma_srv.log);
    const char *base = "Once upon a time there was a little girl named Lily. She loved to play outside in the park with "
                       "her friends. One day she found a big red ball under a tree and she was very happy. She ran";
    const char *prompts[3][2] = {{base, " home"}, {base, " to her mom"}, {"Once upon a time there was a little girl named Lily. She loved", " the sun"}};
    /* 30 prompt tokens and 8 generated: the rings (32) hold 5..37; request 1 cuts at 27 (its window
     * 12..26 is held), request 2 at 13 (0..12 is not: decoded from 0) */
    const int want_cached_min[3] = {0, 20, 0}, want_cached_max[3] = {0, 1000, 0};
    for (int i = 0; i < 3; i++) {
        char prompt[1024], body[2048], cmd[2048];
        snprintf(prompt, sizeof prompt, "%s%s", prompts[i][0], prompts[i][1]);
        snprintf(cmd, sizeof cmd, "%s run -m tests/models/syn-gemma3-Q8_0.gguf -c 256 -p '%s' -n 8 --temp 0 -t 2 2>/dev/null",
                 rotkv_bin(), prompt);
        int rc;
        char *want = run_capture(cmd, &rc);
        assert_int_equal(rc, 0);
        size_t wl = strlen(want);
        if (wl && want[wl - 1] == '\n') want[--wl] = 0;
        snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": 8, \"temperature\": 0}", prompt);
        int st;
        cJSON *j = http_json(&g_gemma_srv, "POST", "/v1/completions", body, &st);
        assert_int_equal(st, 200);
        const int cached = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens_details"), "cached_tokens"));
        print_message("[ INFO     ] gemma3 request %d: %d of %d prompt tokens from the cache\n", i, cached,
                      usage_field(j, "prompt_tokens"));
        if (cached < want_cached_min[i] || cached > want_cached_max[i])
            fail_msg("request %d: %d cached tokens, expected %d..%d", i, cached, want_cached_min[i], want_cached_max[i]);
        assert_string_equal(completion_text(j), want);
        cJSON_Delete(j);
        free(want);
    }
    assert_int_equal(server_stop(&g_gemma_srv), 0);
}

static int setup(void **state) {
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/rotkv-test-server-XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    g_have_model = test_shared_path(TINY, g_model, sizeof g_model) != NULL && access(g_model, R_OK) == 0;
    if (!g_have_model) return 0;
    const char *extra[] = {"-np", "4", "--kv-budget", "1MiB", "--max-body", "64KiB", NULL};
    if (!server_start(&g_srv, extra)) {
        size_t len;
        char *log = test_read_file(g_srv.log, &len);
        fprintf(stderr, "could not start the server:\n%s\n", log ? log : "(no log)");
        free(log);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    server_stop(&g_srv);
    server_stop(&g_gemma_srv);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) return 0;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_models_metrics), cmocka_unit_test(test_completion_matches_run),
        cmocka_unit_test(test_stop_and_eog),          cmocka_unit_test(test_errors),
        cmocka_unit_test(test_prefix_reuse),          cmocka_unit_test(test_concurrency_and_cancel),
        cmocka_unit_test(test_admission),             cmocka_unit_test(test_slots_and_api_key),
        cmocka_unit_test(test_openai_client),         cmocka_unit_test(test_cli_render_vs_jinja),
        cmocka_unit_test(test_chat_cli),              cmocka_unit_test(test_sliding_window_prefix_reuse),
        cmocka_unit_test(test_shutdown_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
