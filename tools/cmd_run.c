/* cmd_run.c — `rotkv run`: generate text from a prompt, streamed to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_run(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv run -m MODEL (-p PROMPT | -f FILE) [-n N] [-c CTX] [-b BATCH] [-t THREADS]\n"
               "       [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S] [--repeat-penalty R]\n"
               "       [--repeat-last-n N] [-ctk TYPE] [-ctv TYPE] [--attn-rot on|off|auto] [--kv-override LAYERS=TYPE]\n"
               "       [--kv-budget SIZE] [--context-shift [--keep N]] [--no-bos] [--parse-special]\n"
               "  -n N     tokens to generate (-1: until end of generation or a full context; default -1)\n"
               "  -c CTX   context size (default: the model's training context)\n"
               "  --temp 0 is greedy decoding\n");
        return 0;
    }
    if (!cli_parse(argc, argv, &o)) return 2;
    cli_default_model(&o);
    size_t len;
    char *text;
    rotkv_context_params cp;
    rotkv_model *m;
    double load_ms = 0;
    const int open_rc = cli_open_text_model(&o, &text, &len, &cp, &m, &load_ms);
    if (open_rc) return open_rc;
    int rc = 1;
    rotkv_context *ctx = NULL;
    rotkv_sampler *smp = NULL;
    rotkv_detok *dt = NULL;
    int32_t n_prompt = 0;
    rotkv_token *toks = cli_tokenize(m, text, len, !o.no_bos, o.parse_special, &n_prompt);
    rotkv_error err = {0};
    if (!toks) goto done;
    if (n_prompt == 0) {
        fprintf(stderr, "rotkv: the prompt is empty (no tokens)\n");
        goto done;
    }
    if (!cli_layer_overrides(&o, m, &cp)) goto done;
    if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        goto done;
    }
    if (!cli_calibrate(&o, m, ctx)) goto done;
    if ((uint32_t)n_prompt > rotkv_n_ctx(ctx)) {
        fprintf(stderr, "rotkv: error: the prompt has %d tokens but the context holds %u (use -c)\n", n_prompt,
                rotkv_n_ctx(ctx));
        goto done;
    }
    smp = rotkv_sampler_create(&o.sp, rotkv_n_vocab(m));
    dt = rotkv_detok_create(m);
    if (!smp || !dt) {
        fprintf(stderr, "rotkv: out of memory\n");
        goto done;
    }
    double t0 = cli_now_ms();
    rotkv_batch b = {.n_tokens = n_prompt, .token = toks};
    if (rotkv_decode(ctx, &b, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        goto done;
    }
    for (int32_t i = 0; i < n_prompt; i++) rotkv_sampler_accept(smp, toks[i]);
    double t1 = cli_now_ms();
    int n_gen = 0, n_shifts = 0;
    const char *stop_reason = "reached -n";
    for (;;) {
        if (o.n_predict >= 0 && n_gen >= o.n_predict) break;
        rotkv_token t = rotkv_sampler_sample(smp, rotkv_get_logits(ctx, -1));
        rotkv_sampler_accept(smp, t);
        n_gen++;
        if (rotkv_token_is_eog(m, t)) {
            stop_reason = "end of generation token";
            break;
        }
        fputs(rotkv_detok_push(dt, t), stdout);
        fflush(stdout);
        if (o.n_predict >= 0 && n_gen >= o.n_predict) break;
        if ((uint32_t)rotkv_seq_len(ctx, 0) >= rotkv_n_ctx(ctx) && o.context_shift) {
            /* like llama.cpp: keep the first n_keep tokens, drop half of the rest */
            const int32_t n_past = rotkv_seq_len(ctx, 0);
            const int32_t n_keep = (o.n_keep < n_past ? o.n_keep : 0) + (!o.no_bos && rotkv_add_bos(m) ? 1 : 0);
            const int32_t n_discard = (n_past - n_keep) / 2;
            if (n_discard < 1 || rotkv_seq_shift(ctx, 0, n_keep, n_discard, &err) != ROTKV_OK) {
                fprintf(stderr, "\nrotkv: context shift failed: %s\n", n_discard < 1 ? "nothing to discard" : err.msg);
                goto done;
            }
            n_shifts++;
        }
        if ((uint32_t)rotkv_seq_len(ctx, 0) >= rotkv_n_ctx(ctx)) {
            fputs(rotkv_detok_flush(dt), stdout);
            fprintf(stderr, "\nrotkv: context full (%u tokens): generation stopped (raise -c or use --context-shift)\n",
                    rotkv_n_ctx(ctx));
            stop_reason = "context full";
            break;
        }
        rotkv_batch one = {.n_tokens = 1, .token = &t};
        if (rotkv_decode(ctx, &one, &err) != ROTKV_OK) {
            fprintf(stderr, "\nrotkv: error: %s\n", err.msg);
            goto done;
        }
    }
    fputs(rotkv_detok_flush(dt), stdout);
    fputc('\n', stdout);
    double t2 = cli_now_ms();
    fprintf(stderr, "\nrotkv: load %.1f ms | prompt %d tokens, %.2f tok/s | generation %d tokens, %.2f tok/s | %s\n",
            load_ms, n_prompt, n_prompt / ((t1 - t0) / 1e3), n_gen, n_gen > 0 ? n_gen / ((t2 - t1) / 1e3) : 0.0,
            stop_reason);
    cli_report_kv(&o, ctx, stderr);
    if (n_shifts) fprintf(stderr, "rotkv: %d context shifts\n", n_shifts);
    rc = 0;
done:
    rotkv_detok_free(dt);
    rotkv_sampler_free(smp);
    rotkv_context_free(ctx);
    free(toks);
    free(text);
    cli_kv_release(&o);
    rotkv_model_free(m);
    return rc;
}
