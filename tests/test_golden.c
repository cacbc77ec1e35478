/* test_golden.c — every GGUF with weights in ../shared/models against
 * llama.cpp's reference logits in ../shared/golden/<model>.logits.txt, and
 * the small models of tests/models (phi3, qwen3moe, qwen2moe, Mixtral-style llama MoE, gemma2,
 * gemma3, gpt-oss;
 * made by scripts/make-test-models.sh, docs/models.md) against theirs beside
 * them, which needs no ../shared:
 *  - same prompt tokens;
 *  - at every prompt position, max |Δlogit| over llama.cpp's top-20 and
 *    |Δlogsumexp| within the tolerance of the weight type;
 *  - our top-1 within 2×tolerance of llama.cpp's best logit;
 *  - the greedy continuation (one token at a time through the cache) equal
 *    token for token, with the same tolerances, up to llama.cpp's first
 *    near-tie (top-2 margin below 2×tolerance).
 * Prints the measured max and mean |Δ| per file (docs/correctness.md). */
#include <dirent.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rotkv.h"
#include "testutil.h"

#define TOPK 20
#define MAX_ROWS 4096

typedef struct {
    int pos, token; /* token = chosen token for g lines */
    double lse;
    int ids[TOPK];
    double logits[TOPK];
    int k;
} golden_row;

typedef struct {
    int n_tokens;
    int *tokens;
    golden_row *rows; /* prompt rows */
    int n_rows;
    golden_row *g; /* greedy rows */
    int n_g;
} golden;

static int parse_row(char *line, golden_row *r, int has_pos) {
    char *save = NULL, *tok = strtok_r(line, " \n", &save);
    if (!tok) return 0;
    if (has_pos) {
        r->pos = atoi(tok);
        tok = strtok_r(NULL, " \n", &save);
    }
    if (!tok) return 0;
    r->token = atoi(tok);
    tok = strtok_r(NULL, " \n", &save);
    if (!tok) return 0;
    r->lse = atof(tok);
    r->k = 0;
    while ((tok = strtok_r(NULL, " \n", &save)) && r->k < TOPK) {
        char *c = strchr(tok, ':');
        if (!c) return 0;
        *c = 0;
        r->ids[r->k] = atoi(tok);
        r->logits[r->k] = atof(c + 1);
        r->k++;
    }
    return r->k > 0;
}

static bool load_golden(const char *path, golden *G) {
    memset(G, 0, sizeof *G);
    size_t len;
    char *buf = test_read_file(path, &len);
    if (!buf) return false;
    G->rows = calloc(MAX_ROWS, sizeof *G->rows);
    G->g = calloc(MAX_ROWS, sizeof *G->g);
    G->tokens = calloc(MAX_ROWS, sizeof *G->tokens);
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        if (!strncmp(line, "tokens:", 7)) {
            char *s2 = NULL;
            for (char *t = strtok_r(line + 7, " ", &s2); t && G->n_tokens < MAX_ROWS; t = strtok_r(NULL, " ", &s2))
                G->tokens[G->n_tokens++] = atoi(t);
        } else if (!strncmp(line, "greedy:", 7)) {
            continue;
        } else if (line[0] == 'g' && line[1] == ' ') {
            char *rest = line + 2;
            int step = atoi(rest);
            rest = strchr(rest, ' ');
            if (rest && G->n_g < MAX_ROWS && parse_row(rest + 1, &G->g[G->n_g], 0)) {
                G->g[G->n_g].pos = step;
                G->n_g++;
            }
        } else if (G->n_rows < MAX_ROWS && parse_row(line, &G->rows[G->n_rows], 1)) {
            G->n_rows++;
        }
    }
    free(buf);
    return G->n_tokens > 0 && G->n_rows == G->n_tokens;
}

static void free_golden(golden *G) {
    free(G->rows);
    free(G->g);
    free(G->tokens);
}

typedef struct {
    double max_d, sum_d, max_lse;
    long n_d;
    int bad_top1;
} stats;

/* Compares one row; returns false (with a message) if beyond tolerance. */
static bool compare_row(const char *what, int idx, const golden_row *r, const float *lg, int V, double tol_max,
                        stats *st) {
    double mx = -INFINITY, s = 0.0;
    int best = 0;
    for (int v = 0; v < V; v++)
        if (lg[v] > mx) {
            mx = lg[v];
            best = v;
        }
    for (int v = 0; v < V; v++) s += exp(lg[v] - mx);
    const double lse = mx + log(s);
    double dl = fabs(lse - r->lse);
    if (dl > st->max_lse) st->max_lse = dl;
    bool ok = true;
    for (int i = 0; i < r->k; i++) {
        double d = fabs(lg[r->ids[i]] - r->logits[i]);
        st->sum_d += d;
        st->n_d++;
        if (d > st->max_d) st->max_d = d;
        if (d > tol_max && ok) {
            print_error("%s %d: logit of token %d is %.5f, llama.cpp %.5f (|Δ| %.4f > %.3f)\n", what, idx, r->ids[i],
                        lg[r->ids[i]], r->logits[i], d, tol_max);
            ok = false;
        }
    }
    if (dl > tol_max) {
        print_error("%s %d: logsumexp %.5f vs llama.cpp %.5f\n", what, idx, lse, r->lse);
        ok = false;
    }
    /* our top-1 must be within 2×tol of llama.cpp's best logit (judged by llama.cpp's logits) */
    double ref_of_ours = -INFINITY;
    for (int i = 0; i < r->k; i++)
        if (r->ids[i] == best) ref_of_ours = r->logits[i];
    if (ref_of_ours < r->logits[0] - 2 * tol_max) {
        print_error("%s %d: our top-1 token %d is not within 2x tolerance of llama.cpp's best %d\n", what, idx, best,
                    r->ids[0]);
        st->bad_top1++;
        ok = false;
    }
    return ok;
}

/* local: the model, its golden file and the prompt are in tests/models/;
 * variant: the golden file is <name><variant>.logits.txt, a run of llama-logits
 * with -c n_ctx (0: n_tokens + greedy steps + 8, llama-logits' default) */
static void check_model_in(const char *name, bool local, const char *variant, uint32_t n_ctx) {
    char mpath[512], gpath[512], ppath[512], rel[300];
    if (local) {
        snprintf(mpath, sizeof mpath, "tests/models/%s.gguf", name);
        snprintf(gpath, sizeof gpath, "tests/models/%s%s.logits.txt", name, variant ? variant : "");
        snprintf(ppath, sizeof ppath, "tests/models/prompt.txt");
    } else {
        snprintf(rel, sizeof rel, "models/%s.gguf", name);
        SKIP_WITHOUT_SHARED(mpath, rel);
        snprintf(rel, sizeof rel, "golden/%s.logits.txt", name);
        test_shared_path(rel, gpath, sizeof gpath);
        test_shared_path("golden/prompt.txt", ppath, sizeof ppath);
    }

    double tol_max = 0.25, tol_mean = 0.05; /* quantized weights */
    if (strstr(name, "F32") || strstr(name, "f32") || strstr(name, "F16")) tol_max = tol_mean = 0.02;
    if (strstr(name, "BF16")) tol_max = tol_mean = 0.05;

    golden G;
    assert_true(load_golden(gpath, &G));
    size_t plen;
    char *prompt = test_read_file(ppath, &plen);
    assert_non_null(prompt);

    rotkv_model *m = NULL;
    rotkv_error err = {0};
    if (rotkv_model_load(mpath, NULL, &m, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    rotkv_token toks[MAX_ROWS];
    int n = rotkv_tokenize(m, prompt, plen, toks, MAX_ROWS, true, false);
    assert_int_equal(n, G.n_tokens);
    for (int i = 0; i < n; i++) assert_int_equal(toks[i], G.tokens[i]);

    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = n_ctx ? n_ctx : (uint32_t)(n + G.n_g + 8);
    cp.n_threads = 2;
    rotkv_context *ctx = NULL;
    if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    int8_t *want = malloc((size_t)n);
    memset(want, 1, (size_t)n);
    rotkv_batch b = {.n_tokens = n, .token = toks, .logits = want};
    if (rotkv_decode(ctx, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
    const int V = rotkv_n_vocab(m);
    stats st = {0};
    bool ok = true;
    for (int i = 0; i < n; i++) ok &= compare_row("position", i, &G.rows[i], rotkv_get_logits(ctx, i), V, tol_max, &st);

    /* greedy continuation */
    int matched = 0, stop_at = G.n_g;
    const char *why = "all steps";
    const float *lg = rotkv_get_logits(ctx, n - 1);
    for (int g = 0; g < G.n_g; g++) {
        const golden_row *r = &G.g[g];
        ok &= compare_row("greedy step", g, r, lg, V, tol_max, &st);
        int cur = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[cur]) cur = v;
        const double margin = r->k > 1 ? r->logits[0] - r->logits[1] : INFINITY;
        if (cur != r->token) {
            if (margin < 2 * tol_max) {
                stop_at = g;
                why = "near-tie in llama.cpp";
                break;
            }
            print_error("greedy step %d: chose %d, llama.cpp %d (margin %.4f)\n", g, cur, r->token, margin);
            ok = false;
            break;
        }
        matched++;
        if (margin < 2 * tol_max) {
            stop_at = g + 1;
            why = "near-tie in llama.cpp";
            break;
        }
        if (rotkv_token_is_eog(m, cur)) break;
        rotkv_batch one = {.n_tokens = 1, .token = &cur};
        if (rotkv_decode(ctx, &one, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        lg = rotkv_get_logits(ctx, -1);
    }
    /* the same prompt with 1 and 4 threads: rows and work items are split, sums are
     * not reordered, so the logits must agree to 1e-6 relative (bit-identical in practice) */
    double max_rel = 0;
    for (int nt = 1; nt <= 4; nt += 3) {
        rotkv_context_params cq = cp;
        cq.n_threads = nt;
        rotkv_context *c2 = NULL;
        if (rotkv_context_create(m, &cq, &c2, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        if (rotkv_decode(c2, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        rotkv_context *c1 = NULL;
        if (rotkv_context_create(m, &cp, &c1, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        if (rotkv_decode(c1, &b, &err) != ROTKV_OK) fail_msg("%s", err.msg);
        for (int i = 0; i < n; i++) {
            const float *x = rotkv_get_logits(c1, i), *y = rotkv_get_logits(c2, i);
            for (int v = 0; v < V; v++) {
                const double rdiff = fabs((double)x[v] - y[v]) / (fabs((double)x[v]) + 1e-6);
                if (rdiff > max_rel) max_rel = rdiff;
            }
        }
        rotkv_context_free(c1);
        rotkv_context_free(c2);
    }
    if (max_rel > 1e-6) {
        print_error("logits with 1/4 threads differ from 2 threads by %.3g relative\n", max_rel);
        ok = false;
    }
    const double mean = st.n_d ? st.sum_d / st.n_d : 0;
    char shown[128];
    snprintf(shown, sizeof shown, "%s%s", name, variant ? variant : "");
    print_message("[ GOLDEN   ] %-24s max|Δ| %.5f mean|Δ| %.5f max|Δlse| %.5f greedy %d/%d matched (compared up to step %d: %s) threads 1/4 vs 2: %.1g\n",
                  shown, st.max_d, mean, st.max_lse, matched, G.n_g, stop_at, why, max_rel);
    if (mean > tol_mean) {
        print_error("mean |Δ| %.5f exceeds %.3f\n", mean, tol_mean);
        ok = false;
    }
    free(want);
    rotkv_context_free(ctx);
    rotkv_model_free(m);
    free(prompt);
    free_golden(&G);
    assert_true(ok);
}

static void check_model(const char *name) { check_model_in(name, false, NULL, 0); }

#define MODEL_TEST(fn, name) \
    static void fn(void **state) { (void)state; check_model(name); }
#define LOCAL_MODEL_TEST(fn, name) \
    static void fn(void **state) { (void)state; check_model_in(name, true, NULL, 0); }
#define LOCAL_VARIANT_TEST(fn, name, variant, n_ctx) \
    static void fn(void **state) { (void)state; check_model_in(name, true, variant, n_ctx); }

MODEL_TEST(t_tinystories, "tinystories-656k-f32")
MODEL_TEST(t_student_f32, "student-h64-F32")
MODEL_TEST(t_student_f16, "student-h64-F16")
MODEL_TEST(t_student_q8_0, "student-h64-Q8_0")
MODEL_TEST(t_student_q4_0, "student-h64-Q4_0")
MODEL_TEST(t_llama_f32, "syn-llama-gqa-F32")
MODEL_TEST(t_llama_f16, "syn-llama-gqa-F16")
MODEL_TEST(t_llama_bf16, "syn-llama-gqa-BF16")
MODEL_TEST(t_llama_q8_0, "syn-llama-gqa-Q8_0")
MODEL_TEST(t_llama_q6_k, "syn-llama-gqa-Q6_K")
MODEL_TEST(t_llama_q5_k_m, "syn-llama-gqa-Q5_K_M")
MODEL_TEST(t_llama_q5_1, "syn-llama-gqa-Q5_1")
MODEL_TEST(t_llama_q5_0, "syn-llama-gqa-Q5_0")
MODEL_TEST(t_llama_q4_k_m, "syn-llama-gqa-Q4_K_M")
MODEL_TEST(t_llama_q4_1, "syn-llama-gqa-Q4_1")
MODEL_TEST(t_llama_q4_0, "syn-llama-gqa-Q4_0")
MODEL_TEST(t_llama_q3_k_m, "syn-llama-gqa-Q3_K_M")
MODEL_TEST(t_llama_q2_k, "syn-llama-gqa-Q2_K")
MODEL_TEST(t_qwen2_f32, "syn-qwen2-kout-F32")
MODEL_TEST(t_qwen2_f16, "syn-qwen2-kout-F16")
MODEL_TEST(t_qwen2_q8_0, "syn-qwen2-kout-Q8_0")
MODEL_TEST(t_qwen2_q6_k, "syn-qwen2-kout-Q6_K")
MODEL_TEST(t_qwen2_q4_k_m, "syn-qwen2-kout-Q4_K_M")
MODEL_TEST(t_qwen2_q4_0, "syn-qwen2-kout-Q4_0")
MODEL_TEST(t_qwen3_f16, "syn-qwen3-h128-F16")
MODEL_TEST(t_qwen3_q8_0, "syn-qwen3-h128-Q8_0")
MODEL_TEST(t_qwen3_q6_k, "syn-qwen3-h128-Q6_K")
MODEL_TEST(t_qwen3_q4_k_m, "syn-qwen3-h128-Q4_K_M")
MODEL_TEST(t_qwen3_q4_0, "syn-qwen3-h128-Q4_0")
LOCAL_MODEL_TEST(t_phi3_f32, "syn-phi3-F32")
LOCAL_MODEL_TEST(t_phi3_f16, "syn-phi3-F16")
LOCAL_MODEL_TEST(t_phi3_q8_0, "syn-phi3-Q8_0")
LOCAL_MODEL_TEST(t_phi3_q4_0, "syn-phi3-Q4_0")
LOCAL_MODEL_TEST(t_qwen3moe_f32, "syn-qwen3moe-F32")
LOCAL_MODEL_TEST(t_qwen3moe_f16, "syn-qwen3moe-F16")
LOCAL_MODEL_TEST(t_qwen3moe_q8_0, "syn-qwen3moe-Q8_0")
LOCAL_MODEL_TEST(t_qwen3moe_q4_0, "syn-qwen3moe-Q4_0")
LOCAL_MODEL_TEST(t_mixtral_f32, "syn-mixtral-F32")
LOCAL_MODEL_TEST(t_mixtral_f16, "syn-mixtral-F16")
LOCAL_MODEL_TEST(t_mixtral_q8_0, "syn-mixtral-Q8_0")
LOCAL_MODEL_TEST(t_mixtral_q4_0, "syn-mixtral-Q4_0")
LOCAL_MODEL_TEST(t_qwen2moe_f32, "syn-qwen2moe-F32")
LOCAL_MODEL_TEST(t_qwen2moe_q8_0, "syn-qwen2moe-Q8_0")
/* LongRoPE (original context 256): a context of 150 takes the short factors, 300 the long ones */
LOCAL_MODEL_TEST(t_phi3_longrope_f32, "syn-phi3-longrope-F32")
LOCAL_MODEL_TEST(t_phi3_longrope_q8_0, "syn-phi3-longrope-Q8_0")
LOCAL_VARIANT_TEST(t_phi3_longrope_f32_ctx300, "syn-phi3-longrope-F32", ".ctx300", 300)
LOCAL_VARIANT_TEST(t_phi3_longrope_q8_0_ctx300, "syn-phi3-longrope-Q8_0", ".ctx300", 300)
/* gemma2 / gemma3 with a sliding window of 16: 110 prompt tokens and 32 greedy steps */
/* mxfp4 experts (llama-quantize MXFP4_MOE: the experts in mxfp4, the rest q8_0) */
LOCAL_MODEL_TEST(t_qwen3moe_mxfp4, "syn-qwen3moe-MXFP4_MOE")
LOCAL_MODEL_TEST(t_gemma2_f32, "syn-gemma2-F32")
LOCAL_MODEL_TEST(t_gemma2_f16, "syn-gemma2-F16")
LOCAL_MODEL_TEST(t_gemma2_q8_0, "syn-gemma2-Q8_0")
LOCAL_MODEL_TEST(t_gemma2_q4_0, "syn-gemma2-Q4_0")
LOCAL_MODEL_TEST(t_gemma3_f32, "syn-gemma3-F32")
LOCAL_MODEL_TEST(t_gemma3_f16, "syn-gemma3-F16")
LOCAL_MODEL_TEST(t_gemma3_q8_0, "syn-gemma3-Q8_0")
LOCAL_MODEL_TEST(t_gemma3_q4_0, "syn-gemma3-Q4_0")
/* gpt-oss: window 16 on layers 0 and 2, attention sinks, YaRN, biased experts with the clamped
 * SwiGLU; MXFP4_MOE has the experts in mxfp4 as gpt-oss ships them */
LOCAL_MODEL_TEST(t_gptoss_f32, "syn-gptoss-F32")
LOCAL_MODEL_TEST(t_gptoss_f16, "syn-gptoss-F16")
LOCAL_MODEL_TEST(t_gptoss_q8_0, "syn-gptoss-Q8_0")
LOCAL_MODEL_TEST(t_gptoss_mxfp4, "syn-gptoss-MXFP4_MOE")

/* Fails on a golden file (NAME.logits.txt) in dir whose NAME is not in
 * known; returns how many golden files dir holds. */
static int golden_files_known(const char *dir, const char *const *known, size_t n_known) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        const char *suffix = strstr(e->d_name, ".logits.txt");
        if (!suffix || suffix[11]) continue;
        bool found = false;
        for (size_t i = 0; i < n_known; i++)
            if (strlen(known[i]) == (size_t)(suffix - e->d_name) && !strncmp(known[i], e->d_name, strlen(known[i])))
                found = true;
        if (!found) fail_msg("golden file %s/%s has no test", dir, e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* Every golden file in the shared folder has a test above. */
static void t_all_golden_files_covered(void **state) {
    (void)state;
    char dir[512];
    SKIP_WITHOUT_SHARED(dir, "golden");
    static const char *known[] = {
        "tinystories-656k-f32", "student-h64-F32", "student-h64-F16", "student-h64-Q8_0", "student-h64-Q4_0",
        "syn-llama-gqa-F32", "syn-llama-gqa-F16", "syn-llama-gqa-BF16", "syn-llama-gqa-Q8_0", "syn-llama-gqa-Q6_K",
        "syn-llama-gqa-Q5_K_M", "syn-llama-gqa-Q5_1", "syn-llama-gqa-Q5_0", "syn-llama-gqa-Q4_K_M",
        "syn-llama-gqa-Q4_1", "syn-llama-gqa-Q4_0", "syn-llama-gqa-Q3_K_M", "syn-llama-gqa-Q2_K",
        "syn-qwen2-kout-F32", "syn-qwen2-kout-F16", "syn-qwen2-kout-Q8_0", "syn-qwen2-kout-Q6_K",
        "syn-qwen2-kout-Q4_K_M", "syn-qwen2-kout-Q4_0", "syn-qwen3-h128-F16", "syn-qwen3-h128-Q8_0",
        "syn-qwen3-h128-Q6_K", "syn-qwen3-h128-Q4_K_M", "syn-qwen3-h128-Q4_0"};
    golden_files_known(dir, known, sizeof known / sizeof known[0]);
}

/* Every golden file in tests/models has a test above. */
static void t_all_local_golden_files_covered(void **state) {
    (void)state;
    static const char *known[] = {
        "syn-phi3-F32", "syn-phi3-F16", "syn-phi3-Q8_0", "syn-phi3-Q4_0", "syn-qwen3moe-F32", "syn-qwen3moe-F16",
        "syn-qwen3moe-Q8_0", "syn-qwen3moe-Q4_0", "syn-mixtral-F32", "syn-mixtral-F16", "syn-mixtral-Q8_0",
        "syn-mixtral-Q4_0", "syn-phi3-longrope-F32", "syn-phi3-longrope-Q8_0", "syn-phi3-longrope-F32.ctx300",
        "syn-phi3-longrope-Q8_0.ctx300", "syn-qwen2moe-F32", "syn-qwen2moe-Q8_0", "syn-gemma2-F32", "syn-gemma2-F16",
        "syn-gemma2-Q8_0", "syn-gemma2-Q4_0", "syn-gemma3-F32", "syn-gemma3-F16", "syn-gemma3-Q8_0", "syn-gemma3-Q4_0",
        "syn-qwen3moe-MXFP4_MOE", "syn-gptoss-F32", "syn-gptoss-F16", "syn-gptoss-Q8_0", "syn-gptoss-MXFP4_MOE"};
    const int n = golden_files_known("tests/models", known, sizeof known / sizeof known[0]);
    assert_int_equal(n, (int)(sizeof known / sizeof known[0]));
}

int main(void) {
    struct CMUnitTest tests[] = {
        cmocka_unit_test(t_all_golden_files_covered), cmocka_unit_test(t_all_local_golden_files_covered),
        cmocka_unit_test(t_tinystories), cmocka_unit_test(t_student_f32), cmocka_unit_test(t_student_f16),
        cmocka_unit_test(t_student_q8_0), cmocka_unit_test(t_student_q4_0), cmocka_unit_test(t_llama_f32),
        cmocka_unit_test(t_llama_f16), cmocka_unit_test(t_llama_bf16), cmocka_unit_test(t_llama_q8_0),
        cmocka_unit_test(t_llama_q6_k), cmocka_unit_test(t_llama_q5_k_m), cmocka_unit_test(t_llama_q5_1),
        cmocka_unit_test(t_llama_q5_0), cmocka_unit_test(t_llama_q4_k_m), cmocka_unit_test(t_llama_q4_1),
        cmocka_unit_test(t_llama_q4_0), cmocka_unit_test(t_llama_q3_k_m), cmocka_unit_test(t_llama_q2_k),
        cmocka_unit_test(t_qwen2_f32), cmocka_unit_test(t_qwen2_f16), cmocka_unit_test(t_qwen2_q8_0),
        cmocka_unit_test(t_qwen2_q6_k), cmocka_unit_test(t_qwen2_q4_k_m), cmocka_unit_test(t_qwen2_q4_0),
        cmocka_unit_test(t_qwen3_f16), cmocka_unit_test(t_qwen3_q8_0), cmocka_unit_test(t_qwen3_q6_k),
        cmocka_unit_test(t_qwen3_q4_k_m), cmocka_unit_test(t_qwen3_q4_0),
        cmocka_unit_test(t_phi3_f32), cmocka_unit_test(t_phi3_f16), cmocka_unit_test(t_phi3_q8_0),
        cmocka_unit_test(t_phi3_q4_0), cmocka_unit_test(t_qwen3moe_f32), cmocka_unit_test(t_qwen3moe_f16),
        cmocka_unit_test(t_qwen3moe_q8_0), cmocka_unit_test(t_qwen3moe_q4_0), cmocka_unit_test(t_mixtral_f32),
        cmocka_unit_test(t_mixtral_f16), cmocka_unit_test(t_mixtral_q8_0), cmocka_unit_test(t_mixtral_q4_0),
        cmocka_unit_test(t_qwen2moe_f32), cmocka_unit_test(t_qwen2moe_q8_0),
        cmocka_unit_test(t_phi3_longrope_f32), cmocka_unit_test(t_phi3_longrope_q8_0),
        cmocka_unit_test(t_phi3_longrope_f32_ctx300), cmocka_unit_test(t_phi3_longrope_q8_0_ctx300),
        cmocka_unit_test(t_gemma2_f32), cmocka_unit_test(t_gemma2_f16), cmocka_unit_test(t_gemma2_q8_0),
        cmocka_unit_test(t_gemma2_q4_0), cmocka_unit_test(t_gemma3_f32), cmocka_unit_test(t_gemma3_f16),
        cmocka_unit_test(t_gemma3_q8_0), cmocka_unit_test(t_gemma3_q4_0), cmocka_unit_test(t_qwen3moe_mxfp4),
        cmocka_unit_test(t_gptoss_f32), cmocka_unit_test(t_gptoss_f16), cmocka_unit_test(t_gptoss_q8_0),
        cmocka_unit_test(t_gptoss_mxfp4),
    };
    /* ROTKV_GOLDEN_FILTER: only the tests whose names match one of these
     * comma-separated glob patterns (make check-arm64 runs a few small models
     * under emulation); the others are named as left out */
    const char *filter = getenv("ROTKV_GOLDEN_FILTER");
    size_t n = sizeof tests / sizeof tests[0];
    if (filter && *filter) {
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            bool match = false;
            char pats[1024];
            snprintf(pats, sizeof pats, "%s", filter);
            for (char *save = NULL, *p = strtok_r(pats, ",", &save); p && !match; p = strtok_r(NULL, ",", &save))
                match = fnmatch(p, tests[i].name, 0) == 0;
            if (match) tests[kept++] = tests[i];
            else print_message("[ LEFT OUT ] %s (ROTKV_GOLDEN_FILTER=%s)\n", tests[i].name, filter);
        }
        n = kept;
    }
    return _cmocka_run_group_tests("golden logits vs llama.cpp", tests, n, NULL, NULL);
}
