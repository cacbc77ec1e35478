/* cmd_tokenize.c — `rotkv tokenize`: print the token ids of a text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cmd_tokenize(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv tokenize -m MODEL (-p TEXT | -f FILE) [--no-bos] [--parse-special] [--pieces]\n"
               "  prints the ids separated by spaces; --pieces prints one 'id<TAB>piece' per line\n"
               "  --no-bos: do not add BOS/EOS; --parse-special: special-token text becomes the special token\n");
        return 0;
    }
    if (!cli_parse(argc, argv, &o)) return 2;
    size_t len;
    char *text = cli_read_text(&o, &len);
    if (!text) return 2;
    rotkv_model *m = cli_load_model(&o, true, NULL);
    if (!m) {
        free(text);
        return 1;
    }
    int32_t n = 0;
    rotkv_token *t = cli_tokenize(m, text, len, !o.no_bos, o.parse_special, &n);
    int rc = t ? 0 : 1;
    for (int32_t i = 0; t && i < n; i++) {
        if (o.show_pieces) {
            char piece[256];
            int32_t k = rotkv_token_to_piece(m, t[i], piece, sizeof piece - 1);
            if (k < 0) k = 0;
            piece[k] = 0;
            printf("%d\t'%s'\n", t[i], piece);
        } else {
            printf("%s%d", i ? " " : "", t[i]);
        }
    }
    if (t && !o.show_pieces) printf("\n");
    free(t);
    free(text);
    rotkv_model_free(m);
    return rc;
}
