/* cmd_logits.c — `rotkv logits`: per-position top-k logits and a greedy
 * continuation, in exactly the format of the golden <model>.logits.txt files, so any
 * model can be compared with llama.cpp by a script. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Prints "<lse> id:logit ..." for the top k logits (ties: lower id first). */
static void print_top(const float *lg, int n_vocab, int k, int *idx) {
    double mx = -INFINITY, s = 0.0;
    for (int v = 0; v < n_vocab; v++) mx = lg[v] > mx ? lg[v] : mx;
    for (int v = 0; v < n_vocab; v++) s += exp(lg[v] - mx);
    if (k > n_vocab) k = n_vocab;
    for (int v = 0; v < n_vocab; v++) idx[v] = v;
    for (int a = 0; a < k; a++) {
        int b = a;
        for (int v = a + 1; v < n_vocab; v++)
            if (lg[idx[v]] > lg[idx[b]]) b = v;
        int t = idx[a];
        idx[a] = idx[b];
        idx[b] = t;
    }
    printf(" %.6f", mx + log(s));
    for (int a = 0; a < k; a++) printf(" %d:%.5f", idx[a], lg[idx[a]]);
    printf("\n");
}

int cmd_logits(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv logits -m MODEL (-f FILE | -p TEXT) [-k 20] [-n 32] [-c CTX] [-t N] [-ctk T] [-ctv T] [--no-bos]\n"
               "  all prompt positions are evaluated in one batch; then -n greedy steps one token at a time\n");
        return 0;
    }
    if (!cli_parse(argc, argv, &o)) return 2;
    if (o.n_predict < 0) o.n_predict = 32;
    if (o.top_n <= 0) o.top_n = 20;
    size_t len;
    char *text;
    rotkv_context_params cp;
    rotkv_model *m;
    const int open_rc = cli_open_text_model(&o, &text, &len, &cp, &m, NULL);
    if (open_rc) return open_rc;
    int rc = 1;
    int32_t n = 0;
    rotkv_context *ctx = NULL;
    int8_t *want = NULL;
    int *idx = NULL;
    rotkv_token *gen = NULL;
    rotkv_token *toks = cli_tokenize(m, text, len, !o.no_bos, false, &n);
    rotkv_error err = {0};
    if (!toks) goto done;
    if (n == 0) {
        fprintf(stderr, "rotkv: the text is empty (no tokens)\n");
        goto done;
    }
    cp.n_ctx = o.n_ctx > 0 ? (uint32_t)o.n_ctx : (uint32_t)(n + o.n_predict + 8);
    if (!cli_layer_overrides(&o, m, &cp)) goto done;
    if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        goto done;
    }
    if (!cli_calibrate(&o, m, ctx)) goto done;
    const int V = rotkv_n_vocab(m);
    want = malloc((size_t)n);
    idx = malloc(sizeof(int) * (size_t)V);
    gen = malloc(sizeof(rotkv_token) * (size_t)(o.n_predict + 1));
    if (!want || !idx || !gen) goto done;
    memset(want, 1, (size_t)n);
    rotkv_batch b = {.n_tokens = n, .token = toks, .logits = want};
    if (rotkv_decode(ctx, &b, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        goto done;
    }
    printf("# model=%s n_vocab=%d n_tokens=%d type_k=%s type_v=%s fa=1\n", cli_model_path(&o), V, n, o.type_k, o.type_v);
    printf("tokens:");
    for (int32_t i = 0; i < n; i++) printf(" %d", toks[i]);
    printf("\n");
    for (int32_t i = 0; i < n; i++) {
        printf("%d %d", i, toks[i]);
        print_top(rotkv_get_logits(ctx, i), V, o.top_n, idx);
    }
    int ng = 0;
    if (o.n_predict > 0) {
        const float *lg = rotkv_get_logits(ctx, n - 1);
        for (int g = 0; g < o.n_predict; g++) {
            rotkv_token cur = 0; /* greedy: first index of the maximum */
            for (int v = 1; v < V; v++)
                if (lg[v] > lg[cur]) cur = v;
            printf("g %d %d", g, cur);
            print_top(lg, V, o.top_n, idx);
            gen[ng++] = cur;
            if (rotkv_token_is_eog(m, cur)) break;
            if ((uint32_t)rotkv_seq_len(ctx, 0) >= rotkv_n_ctx(ctx)) {
                fprintf(stderr, "rotkv: context full (%u tokens): greedy continuation stopped\n", rotkv_n_ctx(ctx));
                break;
            }
            rotkv_batch one = {.n_tokens = 1, .token = &cur};
            if (rotkv_decode(ctx, &one, &err) != ROTKV_OK) {
                fprintf(stderr, "rotkv: error: %s\n", err.msg);
                goto done;
            }
            lg = rotkv_get_logits(ctx, -1);
        }
        printf("greedy:");
        for (int g = 0; g < ng; g++) printf(" %d", gen[g]);
        printf("\n");
    }
    rc = 0;
done:
    free(gen);
    free(idx);
    free(want);
    rotkv_context_free(ctx);
    free(toks);
    free(text);
    cli_kv_release(&o);
    rotkv_model_free(m);
    return rc;
}
