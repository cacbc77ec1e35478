/* test_kv_eval.c — `rotkv kv-eval` end to end (binary from $ROTKV_BIN, default
 * build/rotkv, run from the repo root): the Lloyd-Max check reproduces Max's
 * distortions to 2%; the Gaussian table has one row per KV type with the
 * codec's bits and sane errors; the CSV form agrees; the chart is drawn with
 * gnuplot (skipped with the reason when gnuplot is missing) and a missing
 * gnuplot is a clear error when --chart asks for one; the real-data mode runs
 * on student-h64 over prompt.txt; bad arguments are refused. Small --vectors
 * keep the whole program to a few seconds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_cache.h"
#include "rotkv.h"
#include "testutil.h"

static const char *bin(void) {
    const char *b = getenv("ROTKV_BIN");
    return b && *b ? b : "build/rotkv";
}


#define MAX_ROWS 64
#define MAX_CELLS 16

typedef struct {
    int n_rows, n_cells[MAX_ROWS];
    char cell[MAX_ROWS][MAX_CELLS][64];
} md_table;

/* The Markdown table that follows the heading starting with `heading`
 * (header and separator lines skipped). Returns false if there is none. */
static bool md_table_after(const char *out, const char *heading, md_table *t) {
    memset(t, 0, sizeof *t);
    const char *p = strstr(out, heading);
    if (!p) return false;
    p = strstr(p, "\n|"); /* header */
    if (!p) return false;
    p = strchr(p + 1, '\n'); /* separator */
    if (!p) return false;
    p = strchr(p + 1, '\n');
    while (p && p[1] == '|' && t->n_rows < MAX_ROWS) {
        const char *e = strchr(p + 1, '\n');
        const char *c = p + 2; /* after "|" */
        int k = 0;
        while (c < (e ? e : c + strlen(c)) && k < MAX_CELLS) {
            const char *bar = strchr(c, '|');
            if (!bar || (e && bar > e)) break;
            const char *a = c, *b = bar;
            while (a < b && *a == ' ') a++;
            while (b > a && b[-1] == ' ') b--;
            snprintf(t->cell[t->n_rows][k++], 64, "%.*s", (int)(b - a), a);
            c = bar + 1;
        }
        t->n_cells[t->n_rows++] = k;
        p = e;
    }
    return t->n_rows > 0;
}

/* Every KV type this build has, in table order. */
static int all_types(const char *names[ROTKV_KV_TYPE_COUNT]) {
    int n = 0;
    for (int t = 0; t < ROTKV_KV_TYPE_COUNT; t++)
        if (kv_codec_get((rotkv_kv_type)t)) names[n++] = rotkv_kv_type_name((rotkv_kv_type)t);
    return n;
}

static bool have_gnuplot(void) { return system("command -v gnuplot >/dev/null 2>&1") == 0; }

/* Shared run of all types (Markdown), made once. */
static char *all_md;
static int all_md_rc;

static int setup_all(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s kv-eval --vectors 300 --time-ms 2 2>/dev/null", bin());
    all_md_rc = test_run_cmd(cmd, &all_md);
    return 0;
}

static int teardown_all(void **state) {
    (void)state;
    free(all_md);
    return 0;
}

/* Monte-Carlo Lloyd-Max distortions within 2% of Max (1960), bits 1..4. */
static void t_lloyd_check(void **state) {
    (void)state;
    static const double textbook[5] = {0, 0.3634, 0.1175, 0.03454, 0.009497};
    assert_int_equal(all_md_rc, 0);
    md_table t;
    assert_true(md_table_after(all_md, "## Lloyd-Max", &t));
    assert_int_equal(t.n_rows, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(atoi(t.cell[i][0]), i + 1);
        const double measured = atof(t.cell[i][1]), exact = atof(t.cell[i][2]);
        const double dev = measured / textbook[i + 1] - 1;
        print_message("[   INFO   ] %d bit: measured %.6f textbook %g (%+.2f%%)\n", i + 1, measured, textbook[i + 1],
                      100 * dev);
        assert_true(fabs(dev) <= 0.02);
        assert_true(fabs(exact / textbook[i + 1] - 1) <= 0.001);
        assert_string_equal(t.cell[i][5], "yes");
    }
}

/* One row per KV type, in order, with kv_codec_bits and sane errors. */
static void t_gaussian_table(void **state) {
    (void)state;
    assert_int_equal(all_md_rc, 0);
    const char *names[ROTKV_KV_TYPE_COUNT];
    const int n = all_types(names);
    md_table t;
    assert_true(md_table_after(all_md, "## Gaussian vectors", &t));
    assert_int_equal(t.n_rows, n);
    for (int i = 0; i < n; i++) {
        assert_string_equal(t.cell[i][0], names[i]);
        assert_int_equal(t.n_cells[i], 11);
        const kv_codec *c = kv_codec_get((rotkv_kv_type)rotkv_kv_type_from_name(names[i]));
        for (int d = 0; d < 2; d++) {
            const int dim = d ? 128 : 64;
            const double bits = atof(t.cell[i][1 + 4 * d]), mse = atof(t.cell[i][2 + 4 * d]);
            const double ip = atof(t.cell[i][3 + 4 * d]), ratio = atof(t.cell[i][4 + 4 * d]);
            assert_true(fabs(bits - kv_codec_bits(c, dim)) < 1e-9);
            if (!c->quantized && !strcmp(names[i], "f32")) {
                assert_true(mse == 0);
                continue;
            }
            /* nothing beats the Shannon bound; the lossy types are within 8x of it */
            assert_true(ratio > 1.0);
            if (c->quantized) assert_true(ratio < 8.0);
            /* E[(q.e)^2] / E[(q.x)^2] = MSE for N(0,1) x and q, up to Monte-Carlo
             * noise (large at 300 vectors: (q.e)^2 is heavy-tailed); a broken
             * fused dot would be off by far more */
            if (c->quantized && fabs(log(ip / mse)) > log(1.7))
                fail_msg("%s n=%d: IP err %g vs MSE %g", names[i], dim, ip, mse);
        }
        assert_true(atof(t.cell[i][9]) > 0);  /* encode Mvec/s */
        assert_true(atof(t.cell[i][10]) > 0); /* dot Mdot/s */
    }
}

/* -ctk selects types; -o csv gives one row per type with the same columns. */
static void t_csv_and_selection(void **state) {
    (void)state;
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s kv-eval -ctk tq3,q4_0,kt3 --vectors 200 --time-ms 2 -o csv 2>/dev/null", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    int lloyd = 0, rows = 0;
    bool header = false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "# lloyd-max", 11)) {
            lloyd++;
            assert_non_null(strstr(line, " ok"));
        } else if (!strncmp(line, "type,", 5)) {
            header = true;
        } else if (line[0] != '#') {
            static const char *want[] = {"q4_0", "tq3", "kt3"}; /* table order */
            assert_true(rows < 3);
            assert_int_equal(strncmp(line, want[rows], strlen(want[rows])), 0);
            assert_int_equal(line[strlen(want[rows])], ',');
            int commas = 0;
            for (char *c = line; *c; c++) commas += *c == ',';
            assert_int_equal(commas, 15);
            rows++;
        }
    }
    assert_int_equal(lloyd, 4);
    assert_true(header);
    assert_int_equal(rows, 3);
    free(out);
}

/* The chart: an SVG (and a PNG, or its SVG fallback) written by gnuplot. */
static void t_chart(void **state) {
    (void)state;
    if (!have_gnuplot()) {
        print_message("[ SKIP     ] gnuplot not installed (apt-get install gnuplot-nox; .ci/run installs it)\n");
        skip();
    }
    char dir[] = "/tmp/rotkv-test-kv-eval-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *ext[2] = {"svg", "png"};
    for (int k = 0; k < 2; k++) {
        char path[512], cmd[1024];
        snprintf(path, sizeof path, "%s/chart.%s", dir, ext[k]);
        snprintf(cmd, sizeof cmd, "%s kv-eval --vectors 200 --time-ms 2 --chart %s >/dev/null 2>&1", bin(), path);
        assert_int_equal(test_run_cmd(cmd, NULL), 0);
        struct stat sb;
        if (k == 1 && stat(path, &sb) != 0) snprintf(path, sizeof path, "%s/chart.svg", dir); /* no pngcairo */
        size_t len = 0;
        char *img = test_read_file(path, &len);
        assert_non_null(img);
        assert_true(len > 1000);
        if (k == 0 || strstr(path, ".svg")) assert_non_null(strstr(img, "<svg"));
        else assert_memory_equal(img, "\x89PNG", 4);
        if (k == 0) { /* every type is labelled */
            const char *names[ROTKV_KV_TYPE_COUNT];
            const int n = all_types(names);
            for (int i = 0; i < n; i++) {
                if (!strcmp(names[i], "f32")) continue; /* MSE 0: off a log scale */
                char needle[64];
                snprintf(needle, sizeof needle, ">%s<", names[i]);
                if (!strstr(img, needle)) fail_msg("chart has no label %s", names[i]);
            }
        }
        free(img);
        unlink(path);
    }
    rmdir(dir);
}

/* --chart-script prints bench/kv-eval-chart.gp exactly. */
static void t_chart_script_matches_bench(void **state) {
    (void)state;
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s kv-eval --chart-script", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    char *file = test_read_file("bench/kv-eval-chart.gp", NULL);
    assert_non_null(file);
    assert_string_equal(out, file);
    free(out);
    free(file);
}

/* No gnuplot with --chart: the tables still print, a clear message, exit 1. */
static void t_chart_without_gnuplot(void **state) {
    (void)state;
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd,
             "ROTKV_GNUPLOT=/nonexistent/gnuplot %s kv-eval -ctk q8_0 --vectors 100 --time-ms 2 --chart /tmp/rotkv-none.svg 2>&1",
             bin());
    assert_int_equal(test_run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "| q8_0 |"));
    assert_non_null(strstr(out, "not found: no chart drawn"));
    free(out);
}

/* Real K and V of student-h64 over prompt.txt. */
static void t_real_data(void **state) {
    (void)state;
    char model[512], text[512];
    SKIP_WITHOUT_SHARED(model, "models/student-h64-F32.gguf");
    test_shared_path("golden/prompt.txt", text, sizeof text);
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s kv-eval -ctk f16,q4_0,tq3,kt3 --vectors 100 --time-ms 2 -m %s -f %s -t 2 2>/dev/null", bin(),
             model, text);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "fitted on the first"));
    md_table t;
    assert_true(md_table_after(out, "## Real K and V vectors", &t));
    assert_int_equal(t.n_rows, 4);
    static const char *want[4] = {"f16", "q4_0", "tq3", "kt3"};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(t.cell[i][0], want[i]);
        assert_int_equal(t.n_cells[i], 6);
        for (int j = 2; j < 6; j++) {
            const double v = atof(t.cell[i][j]);
            print_message("[   INFO   ] %s col %d nMSE %g\n", want[i], j, v);
            if (i == 0) assert_true(v > 0 && v < 1e-6);                /* f16 rounding */
            else if (i == 1) assert_true(v > 1e-3 && v < 3e-2);        /* q4_0 */
            else assert_true(v > 5e-3 && v < 0.2);                      /* tq3, kt3 at ~3 bits */
        }
    }
    free(out);
}

static void t_bad_arguments(void **state) {
    (void)state;
    static const char *args[] = {"-ctk nosuchtype", "-m model.gguf", "--chart chart.txt", "-o json", "--vectors 0",
                                 "--time-ms 0", "--bogus 1"};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s kv-eval %s >/dev/null 2>&1", bin(), args[i]);
        const int rc = test_run_cmd(cmd, NULL);
        if (rc != 2) fail_msg("'kv-eval %s' exited with %d, not 2", args[i], rc);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_lloyd_check),
        cmocka_unit_test(t_gaussian_table),
        cmocka_unit_test(t_csv_and_selection),
        cmocka_unit_test(t_chart),
        cmocka_unit_test(t_chart_script_matches_bench),
        cmocka_unit_test(t_chart_without_gnuplot),
        cmocka_unit_test(t_real_data),
        cmocka_unit_test(t_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
