/* cmd_info.c — `rotkv info`: architecture, hyperparameters, tensors, KV size. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_info(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv info -m MODEL [-c CTX] [-ctk T] [-ctv T] [--kv-override L=T] [--kv-sink N] [--kv-window N]\n"
               "                  [--kv-budget SIZE]\n"
               "  with cache flags, also the KV bytes/token of that configuration and the largest\n"
               "  context that fits in --kv-budget\n");
        return 0;
    }
    if (!cli_parse(argc, argv, &o)) return 2;
    rotkv_model *m = cli_load_model(&o, false, NULL);
    if (!m) return 1;
    printf("model:           %s\n", cli_model_path(&o));
    rotkv_model_describe(m, stdout);
    /* the chosen cache configuration (a context without any cached token costs no pages) */
    rotkv_context_params cp;
    rotkv_context *ctx = NULL;
    rotkv_error err = {0};
    int rc = 0;
    if (!cli_context_params(&o, &cp) || !cli_layer_overrides(&o, m, &cp)) rc = 2;
    else if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        rc = 1;
    } else {
        cli_report_kv(&o, ctx, stdout);
    }
    rotkv_context_free(ctx);
    cli_kv_release(&o);
    rotkv_model_free(m);
    return rc;
}
