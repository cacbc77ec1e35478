/* cmd_info.c — `rotkv info`: architecture, hyperparameters, tensors, KV size. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_info(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv info -m MODEL\n");
        return 0;
    }
    if (!cli_parse(argc, argv, &o)) return 2;
    rotkv_model *m = cli_load_model(&o, false, NULL);
    if (!m) return 1;
    printf("model:           %s\n", o.model);
    rotkv_model_describe(m, stdout);
    rotkv_model_free(m);
    return 0;
}
