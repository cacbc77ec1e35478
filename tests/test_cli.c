/* test_cli.c — the rotkv program end to end (binary from $ROTKV_BIN):
 * greedy generation equals llama.cpp's, perplexity equals llama-perplexity's
 * to 1%, KL-divergence self-consistency and refusal of a mismatched base,
 * and clear errors (not crashes) for bad input; info on the phi3/MoE test
 * models, and rotkv quantize of an MoE model byte for byte llama-quantize's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "rotkv.h"
#include "testutil.h"

static const char *bin(void) {
    const char *b = getenv("ROTKV_BIN");
    return b && *b ? b : "build/rotkv";
}

/* `rotkv run --temp 0 -n 32` on the prompt prints the detokenization of
 * llama.cpp's 32 greedy tokens after the prompt. */
static void t_run_greedy_matches_llama(void **state) {
    (void)state;
    char model[512], prompt[512], golden[512];
    SKIP_WITHOUT_SHARED(model, "models/tinystories-656k-f32.gguf");
    test_shared_path("golden/prompt.txt", prompt, sizeof prompt);
    test_shared_path("golden/tinystories-656k-f32.logits.txt", golden, sizeof golden);
    char *g = test_read_file(golden, NULL);
    assert_non_null(g);
    char *line = strstr(g, "\ngreedy:");
    assert_non_null(line);
    rotkv_token ids[64];
    int n = 0;
    for (char *p = line + 8, *e; n < 64; p = e) {
        long v = strtol(p, &e, 10);
        if (e == p) break;
        ids[n++] = (rotkv_token)v;
    }
    assert_int_equal(n, 32);
    rotkv_model *m = NULL;
    rotkv_model_params mp = rotkv_model_default_params();
    mp.vocab_only = true;
    assert_int_equal(rotkv_model_load(model, &mp, &m, NULL), ROTKV_OK);
    rotkv_detok *d = rotkv_detok_create(m);
    char expect[4096] = "";
    for (int i = 0; i < n; i++) strcat(expect, rotkv_detok_push(d, ids[i]));
    strcat(expect, rotkv_detok_flush(d));
    rotkv_detok_free(d);
    rotkv_model_free(m);
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s run -m %s -f %s --temp 0 -n 32 -t 2 2>/dev/null", bin(), model, prompt);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    size_t el = strlen(expect);
    /* the program ends its output with a newline */
    if (strncmp(out, expect, el) != 0 || strcmp(out + el, "\n") != 0)
        fail_msg("generated text differs:\n got: [%s]\nwant: [%s]\n", out, expect);
    free(out);
    free(g);
}

static double ppl_of(const char *out) {
    const char *f = strstr(out, "Final estimate: PPL = ");
    return f ? atof(f + 22) : -1;
}

static void check_ppl(const char *name, int ctx, double ref) {
    char model[512], text[512], rel[256], cmd[2048], *out;
    snprintf(rel, sizeof rel, "models/%s.gguf", name);
    SKIP_WITHOUT_SHARED(model, rel);
    test_shared_path("golden/heldout.txt", text, sizeof text);
    snprintf(cmd, sizeof cmd, "%s perplexity -m %s -f %s -c %d -t 2 2>/dev/null", bin(), model, text, ctx);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    double ppl = ppl_of(out);
    print_message("[ PPL      ] %s -c %d: rotkv %.4f, llama.cpp %.4f (%.3f%%)\n", name, ctx, ppl, ref,
                  100 * (ppl / ref - 1));
    assert_true(fabs(ppl / ref - 1) < 0.01);
    free(out);
}

/* llama-perplexity's values from ../shared/golden/peer-numbers.md */
static void t_ppl_tinystories(void **state) { (void)state; check_ppl("tinystories-656k-f32", 128, 65.0896); }
static void t_ppl_student(void **state) { (void)state; check_ppl("student-h64-F32", 256, 80.2632); }

static double stat_of(const char *out, const char *label) {
    const char *f = strstr(out, label);
    if (!f) return NAN;
    f = strchr(f, ':');
    return f ? atof(f + 1) : NAN;
}

static void t_kld_self_zero_and_mismatch_refused(void **state) {
    (void)state;
    char model[512], other[512], text[512], cmd[4096], *out;
    SKIP_WITHOUT_SHARED(model, "models/student-h64-F32.gguf");
    test_shared_path("models/tinystories-656k-f32.gguf", other, sizeof other);
    test_shared_path("golden/heldout.txt", text, sizeof text);
    char base[] = "/tmp/rotkv-kld-XXXXXX";
    int fd = mkstemp(base);
    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "%s perplexity -m %s -f %s -c 256 --chunks 6 -t 2 --kl-divergence-base %s 2>&1", bin(),
             model, text, base);
    assert_int_equal(test_run_cmd(cmd, NULL), 0);
    /* the same run against its own base: exactly 0, 100% same top */
    snprintf(cmd, sizeof cmd, "%s perplexity -m %s -f %s -c 256 --chunks 6 -t 2 --kl-divergence-base %s --kl-divergence 2>&1",
             bin(), model, text, base);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_true(stat_of(out, "Mean    KLD") == 0.0);
    assert_true(stat_of(out, "Maximum KLD") == 0.0);
    assert_true(stat_of(out, "Same top p") == 100.0);
    free(out);
    /* f32 cache vs the f16 base: tiny and positive */
    snprintf(cmd, sizeof cmd, "%s perplexity -m %s -f %s -c 256 --chunks 6 -t 2 -ctk f32 -ctv f32 --kl-divergence-base %s --kl-divergence 2>&1",
             bin(), model, text, base);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    double kld = stat_of(out, "Mean    KLD");
    print_message("[ KLD      ] student-h64-F32 f32 cache vs f16 base: mean KLD %.8f\n", kld);
    assert_true(kld > 0 && kld < 1e-4);
    free(out);
    /* a base from another model is refused */
    snprintf(cmd, sizeof cmd, "%s perplexity -m %s -f %s -c 256 --chunks 6 -t 2 --kl-divergence-base %s --kl-divergence 2>&1",
             bin(), other, text, base);
    assert_int_not_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "another model"));
    free(out);
    unlink(base);
}

/* Bad input gets a clear message and a non-zero exit, never a crash. */
static void t_bad_input_errors(void **state) {
    (void)state;
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s run -m /nonexistent/model.gguf -p hi 2>&1", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "cannot open"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s run -m x.gguf -p hi -n notanumber 2>&1", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 2);
    assert_non_null(strstr(out, "expects an integer"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s run -m x.gguf -p hi --bogus 2>&1", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 2);
    assert_non_null(strstr(out, "unknown option"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s frobnicate 2>&1", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 2);
    free(out);
    /* a file that is not GGUF */
    char path[] = "/tmp/rotkv-notgguf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "this is not a model, just some text.....", 40), 40);
    close(fd);
    snprintf(cmd, sizeof cmd, "%s info -m %s 2>&1", bin(), path);
    assert_int_equal(test_run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "bad magic"));
    free(out);
    unlink(path);
    char model[512];
    SKIP_WITHOUT_SHARED(model, "models/tinystories-656k-f32.gguf");
    snprintf(cmd, sizeof cmd, "%s run -m %s -p hi -ctk q9_9 2>&1", bin(), model);
    assert_int_equal(test_run_cmd(cmd, &out), 2);
    assert_non_null(strstr(out, "unknown KV cache type"));
    free(out);
    /* a context smaller than the prompt: clear error */
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'Once upon a time there was a dog' -c 4 2>&1", bin(), model);
    assert_int_equal(test_run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "context"));
    free(out);
    /* generation that fills the context stops with a message */
    snprintf(cmd, sizeof cmd, "%s run -m %s -p 'Once upon a time' -c 16 -n 100 --temp 0 2>&1", bin(), model);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "context full"));
    free(out);
}

static void t_tokenize_and_info(void **state) {
    (void)state;
    char model[512], cmd[2048], *out;
    SKIP_WITHOUT_SHARED(model, "models/vocab-llama3.gguf");
    snprintf(cmd, sizeof cmd, "%s tokenize -m %s -p 'Hello world' --no-bos", bin(), model);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_string_equal(out, "9906 1917\n"); /* from golden/tok-vocab-llama3.txt */
    free(out);
    test_shared_path("models/syn-qwen3-h128-Q4_K_M.gguf", model, sizeof model);
    snprintf(cmd, sizeof cmd, "%s info -m %s", bin(), model);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "qwen3"));
    assert_non_null(strstr(out, "q4_K"));
    assert_non_null(strstr(out, "bytes/token"));
    free(out);
}

/* tokenize --lines prints exactly what llama-tok printed for the golden files:
 * its two blocks (parse_special off, then on) are byte for byte
 * ../shared/golden/tok-<vocab>.txt for the BPE vocabs (tests/tokdiff.py relies
 * on the format). */
static void t_tokenize_lines_format(void **state) {
    (void)state;
    char lines[512], model[512], gold[512], rel[128], cmd[4096], *out;
    SKIP_WITHOUT_SHARED(lines, "golden/tokenizer-lines.txt");
    static const char *const vocabs[] = {"vocab-llama3", "vocab-qwen3"};
    for (int v = 0; v < 2; v++) {
        snprintf(rel, sizeof rel, "models/%s.gguf", vocabs[v]);
        test_shared_path(rel, model, sizeof model);
        snprintf(rel, sizeof rel, "golden/tok-%s.txt", vocabs[v]);
        test_shared_path(rel, gold, sizeof gold);
        snprintf(cmd, sizeof cmd, "%s tokenize -m %s -f %s --no-bos --lines && %s tokenize -m %s -f %s --no-bos --lines --parse-special",
                 bin(), model, lines, bin(), model, lines);
        assert_int_equal(test_run_cmd(cmd, &out), 0);
        size_t n;
        char *expect = test_read_file(gold, &n);
        assert_non_null(expect);
        if (strlen(out) != n || memcmp(out, expect, n) != 0) fail_msg("tokenize --lines differs from %s", gold);
        free(expect);
        free(out);
    }
}

/* Without -m, run uses the model in the repository's models/ and says so. */
static void t_shipped_model_default(void **state) {
    (void)state;
    char cmd[2048], *out;
    snprintf(cmd, sizeof cmd, "%s run -p 'Once upon a time' -n 24 --temp 0 -t 2 2>&1", bin());
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "ships with rotkv"));
    assert_non_null(strstr(out, "tinystories-656k-q8_0.gguf"));
    assert_non_null(strstr(out, "generation 24 tokens"));
    free(out);
}

static void file_eq(const char *a, const char *b) {
    size_t na, nb;
    char *pa = test_read_file(a, &na), *pb = test_read_file(b, &nb);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
}

/* rotkv quantize remakes the shipped model byte for byte from the F32 file;
 * the shipped model's perplexity is within 1% of the F32 file's (heldout
 * text, -c 128); bad arguments and inputs fail cleanly and leave the output
 * path as it was. */
static void t_quantize_and_shipped_ppl(void **state) {
    (void)state;
    char f32[512], text[512], cmd[4096], *out;
    const char *shipped = "models/tinystories-656k-q8_0.gguf";
    SKIP_WITHOUT_SHARED(f32, "models/tinystories-656k-f32.gguf");
    test_shared_path("golden/heldout.txt", text, sizeof text);
    char dir[] = "/tmp/rotkv-quant-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char q8[600];
    snprintf(q8, sizeof q8, "%s/q8.gguf", dir);
    snprintf(cmd, sizeof cmd, "%s quantize -m %s -o %s --type q8_0 2>&1", bin(), f32, q8);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "15 of 20 tensors as Q8_0"));
    free(out);
    file_eq(q8, shipped);
    double ppl[2];
    const char *models[2] = {f32, shipped};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s perplexity -m %s -f %s -c 128 -t 2 2>/dev/null", bin(), models[i], text);
        assert_int_equal(test_run_cmd(cmd, &out), 0);
        ppl[i] = ppl_of(out);
        free(out);
    }
    print_message("[ PPL      ] shipped Q8_0 %.4f vs F32 %.4f (%+.3f%%)\n", ppl[1], ppl[0], 100 * (ppl[1] / ppl[0] - 1));
    assert_true(ppl[0] > 0 && fabs(ppl[1] / ppl[0] - 1) < 0.01);
    /* failures leave what was at the output path */
    snprintf(cmd, sizeof cmd, "%s quantize -m %s -o %s --type q3_zz 2>&1", bin(), f32, q8);
    assert_int_equal(test_run_cmd(cmd, &out), 2);
    assert_non_null(strstr(out, "unknown type"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s quantize -m %s -o %s --type q4_0 2>&1", bin(), text, q8);
    assert_int_equal(test_run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "bad magic"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s quantize -m %s -o %s/no/such/dir/x.gguf --type q4_0 2>&1", bin(), f32, dir);
    assert_int_equal(test_run_cmd(cmd, &out), 1);
    assert_non_null(strstr(out, "cannot write"));
    free(out);
    file_eq(q8, shipped);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(test_run_cmd(cmd, NULL), 0);
}

/* Long jobs draw a progress line on a terminal (a pty from script(1)) and
 * print nothing of it when stderr is not one. */
static void t_progress_only_on_a_terminal(void **state) {
    (void)state;
    char cmd[4096], *out;
    if (test_run_cmd("command -v script >/dev/null 2>&1", NULL) != 0) {
        print_message("[ SKIP     ] script(1) not found (util-linux)\n");
        skip();
    }
    const char *bench = "bench -m models/tinystories-656k-q8_0.gguf -p 8 -n 2 -d 1024 -r 1 -t 2";
    snprintf(cmd, sizeof cmd, "ROTKV_PROGRESS_DELAY_MS=0 script -qec '%s %s' /dev/null 2>&1", bin(), bench);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "rotkv: loading the model ["));
    assert_non_null(strstr(out, "rotkv: filling the cache to depth 1024 ["));
    assert_non_null(strstr(out, "1024/1024 tokens"));
    free(out);
    snprintf(cmd, sizeof cmd, "ROTKV_PROGRESS_DELAY_MS=0 %s %s 2>&1 >/dev/null", bin(), bench);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_null(strchr(out, '\r'));
    assert_null(strstr(out, "filling the cache to depth 1024 ["));
    free(out);
    char text[512];
    SKIP_WITHOUT_SHARED(text, "golden/heldout.txt");
    snprintf(cmd, sizeof cmd,
             "ROTKV_PROGRESS_DELAY_MS=0 script -qec '%s perplexity -m models/tinystories-656k-q8_0.gguf -f %s -c 128 "
             "--chunks 8 -t 2 >/dev/null' /dev/null 2>&1", bin(), text);
    assert_int_equal(test_run_cmd(cmd, &out), 0);
    assert_non_null(strstr(out, "rotkv: perplexity ["));
    assert_non_null(strstr(out, "8/8 chunks"));
    free(out);
}

/* rotkv info names the architecture and the experts of tests/models' models */
static void t_info_moe_and_phi3(void **state) {
    (void)state;
    const struct {
        const char *model, *want[2];
    } cases[] = {
        {"syn-qwen3moe-Q4_0", {"architecture:    qwen3moe\n", "experts:         8 per layer, 2 used per token (expert n_ff 64"}},
        {"syn-mixtral-F16", {"architecture:    llama\n", "experts:         4 per layer, 2 used per token (expert n_ff 64"}},
        {"syn-phi3-F32", {"architecture:    phi3\n", "head_dim:        16 (rope dims 12, neox)"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024], *out;
        snprintf(cmd, sizeof cmd, "%s info -m tests/models/%s.gguf", bin(), cases[i].model);
        assert_int_equal(test_run_cmd(cmd, &out), 0);
        for (int k = 0; k < 2; k++)
            if (!strstr(out, cases[i].want[k])) fail_msg("%s: no '%s' in:\n%s", cases[i].model, cases[i].want[k], out);
        if (strstr(cases[i].model, "phi3")) assert_null(strstr(out, "experts:"));
        free(out);
    }
}

/* gemma2 / gemma3 / gpt-oss: rotkv info names the sliding window and the KV per layer kind;
 * rotkv run generates past 3x a context of 48 (the rings of 32 turn within it) with
 * --context-shift (make test-asan runs this under ASan) */
static void t_gemma_info_and_context_shift(void **state) {
    (void)state;
    const struct {
        const char *model, *want[3];
    } cases[] = {
        {"syn-gemma2-F16", {"architecture:    gemma2\n", "sliding window:  16 positions on 2 of 4 layers (SGSG)",
                            "2 sliding-window layers (window 16, ring of 32 tokens) 512.0 bytes/token"}},
        {"syn-gemma3-Q4_0", {"architecture:    gemma3\n", "sliding window:  16 positions on 5 of 6 layers (SSSSSG); their RoPE base 20000",
                             "5 sliding-window layers (window 16, ring of 32 tokens) 680.0 bytes/token"}},
        {"syn-gptoss-MXFP4_MOE", {"architecture:    gpt-oss\n", "sliding window:  16 positions on 2 of 4 layers (SGSG)",
                                  "2 sliding-window layers (window 16, ring of 32 tokens) 544.0 bytes/token"}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024], *out;
        snprintf(cmd, sizeof cmd, "%s info -m tests/models/%s.gguf -c 4096 -ctk %s -ctv %s", bin(), cases[i].model,
                 i ? "q8_0" : "f16", i ? "q8_0" : "f16");
        assert_int_equal(test_run_cmd(cmd, &out), 0);
        for (int k = 0; k < 3; k++)
            if (!strstr(out, cases[i].want[k])) fail_msg("%s: no '%s' in:\n%s", cases[i].model, cases[i].want[k], out);
        free(out);
        snprintf(cmd, sizeof cmd, "%s run -m tests/models/%s.gguf -c 48 -n 160 --context-shift -ctk q4_0 -ctv q8_0 -p 'Once upon a time' 2>&1",
                 bin(), cases[i].model);
        assert_int_equal(test_run_cmd(cmd, &out), 0);
        if (!strstr(out, "generation 160 tokens") || !strstr(out, " context shifts"))
            fail_msg("%s: no 160 tokens with context shifts in:\n%s", cases[i].model, out);
        free(out);
    }
}

/* rotkv quantize to Q8_0 converts the 3-D expert tensors and keeps the router in
 * f32: every tensor equals llama-quantize's Q8_0 of the same F32 file byte for byte */
static void t_quantize_moe_like_llama_quantize(void **state) {
    (void)state;
    /* qwen3moe; gpt-oss (sinks, 1-D and 2-D biases, which stay f32 like the router) */
    const struct {
        const char *model;
        int experts;
    } cases[] = {{"syn-qwen3moe", 6 /* 2 layers x gate/up/down */}, {"syn-gptoss", 12 /* 4 layers */}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        char out_path[] = "/tmp/rotkv_test_moe_q8_XXXXXX", cmd[1024], err[256], ref[256];
        const int fd = mkstemp(out_path);
        assert_true(fd >= 0);
        close(fd);
        snprintf(cmd, sizeof cmd, "%s quantize -m tests/models/%s-F32.gguf -o %s --type Q8_0 2>&1", bin(), cases[ci].model,
                 out_path);
        assert_int_equal(test_run_cmd(cmd, NULL), 0);
        snprintf(ref, sizeof ref, "tests/models/%s-Q8_0.gguf", cases[ci].model);
        gguf_file *a = gguf_open(out_path, err, sizeof err), *b = gguf_open(ref, err, sizeof err);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(a->n_tensors, b->n_tensors);
        int experts = 0;
        for (uint64_t i = 0; i < a->n_tensors; i++) {
            const gguf_tensor *t = &a->tensors[i];
            char name[96];
            gguf_str_cpy(t->name, name, sizeof name);
            const gguf_tensor *u = gguf_find_tensor(b, name);
            assert_non_null(u);
            if (t->type != u->type || t->nbytes != u->nbytes || memcmp(t->data, u->data, t->nbytes))
                fail_msg("%s: tensor %s differs from llama-quantize's (types %u / %u)", cases[ci].model, name, t->type,
                         u->type);
            experts += t->n_dims == 3;
        }
        assert_int_equal(experts, cases[ci].experts);
        gguf_close(a);
        gguf_close(b);
        unlink(out_path);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_run_greedy_matches_llama),
        cmocka_unit_test(t_ppl_tinystories),
        cmocka_unit_test(t_ppl_student),
        cmocka_unit_test(t_kld_self_zero_and_mismatch_refused),
        cmocka_unit_test(t_bad_input_errors),
        cmocka_unit_test(t_tokenize_and_info),
        cmocka_unit_test(t_tokenize_lines_format),
        cmocka_unit_test(t_shipped_model_default),
        cmocka_unit_test(t_quantize_and_shipped_ppl),
        cmocka_unit_test(t_progress_only_on_a_terminal),
        cmocka_unit_test(t_info_moe_and_phi3),
        cmocka_unit_test(t_quantize_moe_like_llama_quantize),
        cmocka_unit_test(t_gemma_info_and_context_shift),
    };
    return cmocka_run_group_tests_name("rotkv CLI", tests, NULL, NULL);
}
