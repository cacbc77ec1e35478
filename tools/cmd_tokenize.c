/* cmd_tokenize.c — `rotkv tokenize`: print the token ids of a text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Decodes the line escapes \n, \t and \\ in place (any other byte, a lone
 * backslash included, stays as it is); returns the new length. */
static size_t unescape_line(char *s, size_t len) {
    size_t w = 0;
    for (size_t r = 0; r < len; r++) {
        char e = r + 1 < len && s[r] == '\\' ? s[r + 1] : 0;
        if (e == 'n' || e == 't' || e == '\\') {
            s[w++] = e == 'n' ? '\n' : e == 't' ? '\t' : '\\';
            r++;
        } else {
            s[w++] = s[r];
        }
    }
    return w;
}

/* --lines: each line of the text on its own, printed as "<line as written>\t<ids>"
 * under a "## parse_special=N" header — the format of ../shared/peer/llama-tok.c,
 * so the two outputs can be compared byte for byte. A final line without a
 * newline counts; the bytes of a line pass through unchanged apart from the
 * escapes (the format cannot carry '\n' itself, and llama-tok stops at a NUL). */
static int tokenize_lines(const rotkv_model *m, const cli_opts *o, const char *text, size_t len) {
    printf("## parse_special=%d\n", o->parse_special ? 1 : 0);
    char *buf = malloc(len + 1);
    if (!buf) return 1;
    int rc = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
        memcpy(buf, text + pos, ll);
        size_t n_bytes = unescape_line(buf, ll);
        int32_t n = 0;
        rotkv_token *t = cli_tokenize(m, buf, n_bytes, !o->no_bos, o->parse_special, &n);
        fwrite(text + pos, 1, ll, stdout);
        putchar('\t');
        if (!t) {
            printf("ERROR\n");
            rc = 1;
        } else {
            for (int32_t i = 0; i < n; i++) printf(i ? " %d" : "%d", t[i]);
            putchar('\n');
        }
        free(t);
        pos += ll + (nl ? 1 : 0);
    }
    free(buf);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv tokenize -m MODEL (-p TEXT | -f FILE) [--no-bos] [--parse-special] [--pieces | --lines]\n"
               "  prints the ids separated by spaces; --pieces prints one 'id<TAB>piece' per line\n"
               "  --lines: tokenize each line on its own (escapes \\n \\t \\\\ decoded) and print\n"
               "           '## parse_special=N', then '<line as written><TAB><ids>' per line\n"
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
    if (o.tok_lines) {
        int lrc = tokenize_lines(m, &o, text, len);
        free(text);
        rotkv_model_free(m);
        return lrc;
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
