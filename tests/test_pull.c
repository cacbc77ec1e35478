/* test_pull.c — `rotkv pull` and -hf (binary from $ROTKV_BIN) against
 * tests/hf_mock.py, a loopback mock of the Hugging Face Hub: selection by
 * quantization tag, resume of a cut transfer, a server that ignores Range, a
 * SHA-256 mismatch, 404, a gated repository, a stalled server, a redirect to
 * another host, a split model, a non-LFS file, --list, offline reuse of the
 * cache, and run -hf end to end with a real model. Every test gets an empty
 * cache; the mock is stopped in the group teardown (and exits by itself when
 * this process dies: it watches its stdin). Skipped when python3 is missing. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define MOCK "tests/hf_mock.py"

static struct {
    pid_t pid;
    int port;
    int stdin_fd; /* the mock exits when this closes */
    bool have_tiny;
    char log[64], cache[64], tiny[512];
    const char *skip; /* why the tests are skipped, or NULL */
} M = {.stdin_fd = -1};

static const char *bin(void) {
    const char *b = getenv("ROTKV_BIN");
    return b && *b ? b : "build/rotkv";
}

static void stop_mock(void) {
    if (M.pid <= 0) return;
    close(M.stdin_fd);
    kill(M.pid, SIGTERM);
    waitpid(M.pid, NULL, 0);
    M.pid = 0;
}

/* Reads the mock's first stdout line (its port), waiting at most 20 s. */
static int read_port(int fd) {
    char line[32];
    size_t n = 0;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    while (n < sizeof line - 1 && poll(&pf, 1, 20000) > 0 && read(fd, line + n, 1) == 1 && line[n] != '\n') n++;
    line[n] = 0;
    return atoi(line);
}

static int group_setup(void **state) {
    (void)state;
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        M.skip = "python3 not found";
        return 0;
    }
    if (access(MOCK, R_OK) != 0) {
        M.skip = MOCK " not found (run from the repository root)";
        return 0;
    }
    const char *t = test_shared_path("models/tinystories-656k-f32.gguf", M.tiny, sizeof M.tiny);
    M.have_tiny = t && access(t, R_OK) == 0;
    snprintf(M.log, sizeof M.log, "/tmp/rotkv-hfmock-XXXXXX");
    const int lfd = mkstemp(M.log);
    int in[2], out[2];
    if (lfd < 0 || pipe(in) || pipe(out)) return -1;
    close(lfd);
    fcntl(in[1], F_SETFD, FD_CLOEXEC); /* not inherited by the rotkv runs */
    fcntl(out[0], F_SETFD, FD_CLOEXEC);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(out[1]);
        execlp("python3", "python3", MOCK, "--port", "0", "--log", M.log, "--watch-stdin", "--lifetime", "1200",
               M.have_tiny ? "--tiny" : (char *)NULL, M.tiny, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    M.pid = pid;
    M.stdin_fd = in[1];
    M.port = read_port(out[0]);
    close(out[0]);
    if (M.port <= 0) stop_mock(); /* the tests then fail: python3 is there, the mock should run */
    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", M.port);
    setenv("HF_ENDPOINT", ep, 1);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    stop_mock();
    if (M.log[0]) unlink(M.log);
    return 0;
}

static int cache_setup(void **state) {
    (void)state;
    snprintf(M.cache, sizeof M.cache, "/tmp/rotkv-hfcache-XXXXXX");
    if (!mkdtemp(M.cache)) return -1;
    setenv("ROTKV_CACHE", M.cache, 1);
    unsetenv("HF_TOKEN");
    setenv("ROTKV_HTTP_TIMEOUT", "10", 1);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int cache_teardown(void **state) {
    (void)state;
    return nftw(M.cache, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define NEED_MOCK()                                                   \
    do {                                                              \
        if (M.skip) {                                                 \
            print_message("[ SKIP     ] %s\n", M.skip);               \
            skip();                                                   \
        }                                                             \
        if (M.port <= 0) fail_msg("the mock Hub (" MOCK ") did not start"); \
    } while (0)

#define EXPECT(out, s)                                                       \
    do {                                                                     \
        if (!strstr((out), (s))) fail_msg("no '%s' in the output:\n%s", (s), (out)); \
    } while (0)

/* Runs `rotkv ARGS 2>&1` (bounded by timeout(1)); exit status, output in *out. */
static int rotkv(char **out, const char *fmt, ...) {
    char args[1024], cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "timeout 120 %s %s 2>&1", bin(), args);
    return test_run_cmd(cmd, out);
}

/* Runs it and checks the exit status and that the output has want (if not NULL). */
static void expect_run(int status, const char *want, const char *args) {
    char *out;
    const int st = rotkv(&out, "%s", args);
    if (st != status) fail_msg("rotkv %s: exit %d, expected %d:\n%s", args, st, status, out);
    if (want) EXPECT(out, want);
    free(out);
}

static bool in_cache(const char *rel) {
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", M.cache, rel);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Lines of the mock's log that contain all of a, b (b may be NULL). */
static int log_count(const char *a, const char *b) {
    char *log = test_read_file(M.log, NULL);
    assert_non_null(log);
    int n = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) n += strstr(line, a) && (!b || strstr(line, b));
    free(log);
    return n;
}

/* The cached file's SHA-256 (sha256sum) equals the one the mock published. */
static void expect_published_sha(const char *repo_path) {
    char *log = test_read_file(M.log, NULL), key[256], cmd[512], *out;
    assert_non_null(log);
    snprintf(key, sizeof key, "MANIFEST %s ", repo_path);
    const char *m = strstr(log, key);
    assert_non_null(m);
    snprintf(cmd, sizeof cmd, "sha256sum '%s/%s'", M.cache, repo_path);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_memory_equal(out, m + strlen(key), 64);
    free(out);
    free(log);
}

static void t_select_by_tag(void **state) {
    (void)state;
    NEED_MOCK();
    char *out;
    /* case-insensitive tag; stdout is the local path */
    assert_int_equal(rotkv(&out, "pull test/multi:q8_0"), 0);
    EXPECT(out, "/test/multi/Model-Q8_0.gguf\n");
    free(out);
    assert_true(in_cache("test/multi/Model-Q8_0.gguf"));
    expect_published_sha("test/multi/Model-Q8_0.gguf");
    /* Q4_K is not Q4_K_M (nor Q4_K_S): an error listing the files */
    expect_run(1, "has no Q4_K file", "pull test/multi:Q4_K");
    expect_run(1, "Model-Q4_K_S.gguf", "pull test/multi:Q4_K");
    /* no tag: Q4_K_M */
    expect_run(0, "/test/multi/Model-Q4_K_M.gguf\n", "pull test/multi");
    /* F16 matches sub/Model-F16.gguf; mmproj-Model-F16.gguf is ignored */
    expect_run(0, "/test/multi/sub/Model-F16.gguf\n", "pull test/multi:F16");
    assert_false(in_cache("test/multi/mmproj-Model-F16.gguf"));
    /* an exact path, already cached: no download */
    const int before = log_count("resolve/main/sub/Model-F16.gguf", NULL);
    expect_run(0, "up to date", "pull test/multi:sub/Model-F16.gguf");
    assert_int_equal(log_count("resolve/main/sub/Model-F16.gguf", NULL), before);
    /* no Q4_K_M: the only model; several: an error listing them */
    expect_run(0, "/test/single/only.gguf\n", "pull test/single");
    expect_run(1, "names 2 models", "pull test/ambig");
    expect_run(1, "B-F16.gguf", "pull test/ambig");
    expect_run(0, "/test/ambig/B-F16.gguf\n", "pull test/ambig:B-F16.gguf");
    /* a file list in pages: F16 is on the last */
    expect_run(0, "/test/paged/Paged-F16.gguf\n", "pull test/paged:F16");
    assert_int_equal(log_count("/api/models/test/paged/tree/main", NULL), 3);
}

static void t_resume_cut_transfer(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(0, "retrying", "pull test/cut");
    assert_true(log_count("/test/cut/resolve/main/Cut-Q4_K_M.gguf", "range=bytes=524288-") >= 1);
    expect_published_sha("test/cut/Cut-Q4_K_M.gguf");
    assert_false(in_cache("test/cut/Cut-Q4_K_M.gguf.part"));
    /* a leftover .part of another version: resumed, mismatched, downloaded again */
    char part[256];
    snprintf(part, sizeof part, "%s/test/multi/Model-Q8_0.gguf.part", M.cache);
    assert_int_equal(system("mkdir -p \"$ROTKV_CACHE/test/multi\""), 0);
    FILE *fp = fopen(part, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 100000; i++) fputc(i * 7, fp);
    fclose(fp);
    expect_run(0, "downloading it again from the start", "pull test/multi:Q8_0");
    expect_published_sha("test/multi/Model-Q8_0.gguf");
    assert_false(in_cache("test/multi/Model-Q8_0.gguf.part"));
    /* a server that ignores Range: restarted from byte 0 */
    expect_run(0, "did not resume", "pull test/norange");
    expect_published_sha("test/norange/Norange-Q4_K_M.gguf");
}

static void t_sha_mismatch(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(1, "SHA-256 mismatch for test/corrupt/Corrupt-Q4_K_M.gguf: expected ", "pull test/corrupt");
    assert_false(in_cache("test/corrupt/Corrupt-Q4_K_M.gguf"));
    assert_false(in_cache("test/corrupt/Corrupt-Q4_K_M.gguf.part"));
    assert_false(in_cache("test/corrupt/Corrupt-Q4_K_M.gguf.json"));
}

static void t_not_found_and_bad_spec(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(1, "repository or file not found: test/nope", "pull test/nope");
    expect_run(1, "has no file Missing.gguf", "pull test/multi:Missing.gguf");
    expect_run(1, "its file list is not a JSON array", "pull test/badjson");
    expect_run(2, "OWNER/NAME", "pull not-a-repo");
    expect_run(2, "usage", "pull");
    expect_run(0, "HF_TOKEN", "pull --help");
}

static void t_gated(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(1, "set HF_TOKEN", "pull test/gated");
    setenv("HF_TOKEN", "wrong", 1);
    expect_run(1, "with the token in HF_TOKEN", "pull test/gated");
    setenv("HF_TOKEN", "hf_test_token", 1);
    expect_run(0, "/test/gated/Gated-Q4_K_M.gguf\n", "pull test/gated");
    expect_published_sha("test/gated/Gated-Q4_K_M.gguf");
}

static void t_stall_times_out(void **state) {
    (void)state;
    NEED_MOCK();
    setenv("ROTKV_HTTP_TIMEOUT", "2", 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_run(1, "timed out", "pull test/slow");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("[ TIME     ] 3 attempts against a stalled server, 2 s timeout: %.1f s\n", s);
    assert_true(s < 30);
    assert_false(in_cache("test/slow/Slow-Q4_K_M.gguf"));
    expect_run(0, "incomplete download", "pull --list"); /* the .part stays, to be resumed */
}

static void t_redirect_other_host(void **state) {
    (void)state;
    NEED_MOCK();
    setenv("HF_TOKEN", "hf_test_token", 1);
    expect_run(0, "/test/redirect/Redirect-Q4_K_M.gguf\n", "pull test/redirect");
    expect_published_sha("test/redirect/Redirect-Q4_K_M.gguf");
    /* the CDN host got the request, without the token */
    assert_true(log_count("REQ 127.0.0.2:", "/_cdn/test/redirect/Redirect-Q4_K_M.gguf") >= 1);
    assert_int_equal(log_count("REQ 127.0.0.2:", "auth=Bearer"), 0);
}

static void t_split_model(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(0, "/test/split/Big-Q4_K_M-00001-of-00003.gguf\n", "pull test/split");
    for (int k = 1; k <= 3; k++) {
        char rel[128];
        snprintf(rel, sizeof rel, "test/split/Big-Q4_K_M-%05d-of-00003.gguf", k);
        assert_true(in_cache(rel));
        expect_published_sha(rel);
    }
    expect_run(1, "split into 3 parts; merge them with llama-gguf-split --merge", "run -hf test/split -p hi");
}

static void t_non_lfs_file(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(0, "publishes no SHA-256", "pull test/nolfs");
    assert_true(in_cache("test/nolfs/small.gguf"));
}

static void t_list(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(0, "0 files", "pull --list");
    expect_run(0, NULL, "pull test/multi:Q8_0");
    expect_run(0, NULL, "pull test/single");
    char *out;
    assert_int_equal(rotkv(&out, "pull --list"), 0);
    EXPECT(out, "test/multi:Model-Q8_0.gguf  244.1 KiB\n");
    EXPECT(out, "test/single:only.gguf  62.5 KiB\n");
    EXPECT(out, "2 files, 306.6 KiB in ");
    free(out);
}

static void t_run_hf(void **state) {
    (void)state;
    NEED_MOCK();
    if (!M.have_tiny) {
        print_message("[ SKIP     ] models/tinystories-656k-f32.gguf: ../shared not found (set ROTKV_SHARED)\n");
        skip();
    }
    char cmd[2048], *via_hf, *direct;
    snprintf(cmd, sizeof cmd, "timeout 120 %s run -hf test/tiny -p 'Once upon a time' -n 16 --temp 0 -t 1 2>/dev/null", bin());
    assert_int_equal(test_run_cmd(cmd, &via_hf), 0);
    snprintf(cmd, sizeof cmd, "timeout 120 %s run -m %s -p 'Once upon a time' -n 16 --temp 0 -t 1 2>/dev/null", bin(), M.tiny);
    assert_int_equal(test_run_cmd(cmd, &direct), 0);
    assert_true(strlen(direct) > 8);
    assert_string_equal(via_hf, direct);
    free(via_hf);
    free(direct);
    expect_run(0, "/test/tiny/tinystories-656k-f32.gguf\n", "info -hf test/tiny");
    expect_run(2, "give -m or -hf, not both", "run -m x.gguf -hf test/tiny -p hi");
}

/* Last: stops the mock. */
static void t_offline_reuse(void **state) {
    (void)state;
    NEED_MOCK();
    expect_run(0, NULL, "pull test/multi:Q8_0");
    stop_mock();
    expect_run(0, "(offline)", "pull test/multi:Q8_0");
    expect_run(0, "/test/multi/Model-Q8_0.gguf\n", "pull test/multi:q8_0");
    expect_run(1, "has no Q4_K_M file", "pull test/multi:Q4_K_M");
    expect_run(1, "holds nothing of it", "pull test/other");
}

int main(void) {
#define T(f) cmocka_unit_test_setup_teardown(f, cache_setup, cache_teardown)
    const struct CMUnitTest tests[] = {
        T(t_select_by_tag), T(t_resume_cut_transfer), T(t_sha_mismatch), T(t_not_found_and_bad_spec),
        T(t_gated),         T(t_stall_times_out),     T(t_redirect_other_host), T(t_split_model),
        T(t_non_lfs_file),  T(t_list),                T(t_run_hf),        T(t_offline_reuse),
    };
    return cmocka_run_group_tests_name("rotkv pull (mock Hub)", tests, group_setup, group_teardown);
}
