/* cli_common.c — option parsing and helpers shared by the subcommands.
 * Flag names follow llama.cpp's where one exists. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "hf_pull.h"

double cli_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void cli_progress_begin(cli_progress *p, const char *what) {
    p->on = isatty(2);
    p->shown = false;
    const char *d = getenv("ROTKV_PROGRESS_DELAY_MS"); /* default 300; tests set 0 */
    p->delay_ms = d && *d ? atof(d) : 300;
    p->t0 = p->last = cli_now_ms();
    snprintf(p->what, sizeof p->what, "%s", what);
}

void cli_progress_update(cli_progress *p, double done, double total, const char *unit) {
    if (!p->on) return;
    const double now = cli_now_ms();
    if (now - p->t0 < p->delay_ms || (now - p->last < 100 && done < total && p->shown)) return;
    p->last = now;
    p->shown = true;
    const double el = (now - p->t0) / 1e3, frac = total > 0 ? done / total : 0;
    const int w = 24, f = (int)(frac * w + 0.5);
    char bar[32];
    for (int i = 0; i < w; i++) bar[i] = i < f ? '=' : i == f ? '>' : ' ';
    bar[w] = 0;
    if (!strcmp(unit, "%")) fprintf(stderr, "\rrotkv: %s [%s] %3.0f%%, %.1f s", p->what, bar, 100 * frac, el);
    else fprintf(stderr, "\rrotkv: %s [%s] %.0f/%.0f %s, %.1f s", p->what, bar, done, total, unit, el);
    if (frac > 0 && frac < 1) fprintf(stderr, ", ETA %.0f s", el * (1 - frac) / frac);
    fprintf(stderr, "\033[K");
    fflush(stderr);
}

void cli_progress_end(cli_progress *p) {
    if (p->shown) fprintf(stderr, "\r\033[K");
    p->shown = false;
    fflush(stderr);
}

static bool parse_int(const char *flag, const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < -2147483647L || v > 2147483647L) {
        fprintf(stderr, "rotkv: %s expects an integer, got '%s'\n", flag, s);
        return false;
    }
    *out = (int)v;
    return true;
}

static bool parse_float(const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || v != v) {
        fprintf(stderr, "rotkv: %s expects a number, got '%s'\n", flag, s);
        return false;
    }
    *out = v;
    return true;
}

static bool one_model_source(const cli_opts *o) {
    if (o->model && o->hf_repo) fprintf(stderr, "rotkv: error: give -m or -hf, not both\n");
    return !(o->model && o->hf_repo);
}

bool cli_parse(int argc, char **argv, cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    o->n_batch = 512;
    o->top_n = 20;
    o->type_k = o->type_v = "f16";
    o->rot_k = o->rot_v = ROTKV_ROT_AUTO;
    o->kv_center = ROTKV_ROT_AUTO;
    o->reps = 5;
    o->port = 8080;
    o->sp = rotkv_sampler_default_params();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                        \
    do {                                                                    \
        if (!v) {                                                           \
            fprintf(stderr, "rotkv: option %s needs a value\n", a);         \
            return false;                                                   \
        }                                                                   \
        i++;                                                                \
    } while (0)
#define IS(s) (!strcmp(a, s))
        int iv;
        if (IS("-m") || IS("--model")) { NEED_VALUE(); o->model = v; }
        else if (IS("-hf") || IS("--hf-repo")) { NEED_VALUE(); o->hf_repo = v; }
        else if (IS("-p") || IS("--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (IS("-f") || IS("--file")) { NEED_VALUE(); o->file = v; }
        else if (IS("-n") || IS("--n-predict")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_predict)) return false; }
        else if (IS("-c") || IS("--ctx-size")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_ctx)) return false; }
        else if (IS("-b") || IS("--batch-size")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_batch)) return false; }
        else if (IS("-t") || IS("--threads")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_threads)) return false; }
        else if (IS("-k") || IS("--top-n")) { NEED_VALUE(); if (!parse_int(a, v, &o->top_n)) return false; }
        else if (IS("--chunks")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_chunks)) return false; }
        else if (IS("-ctk") || IS("--cache-type-k")) { NEED_VALUE(); o->type_k = v; }
        else if (IS("-ctv") || IS("--cache-type-v")) { NEED_VALUE(); o->type_v = v; }
        else if (IS("--temp")) { NEED_VALUE(); if (!parse_float(a, v, &o->sp.temp)) return false; }
        else if (IS("--top-k")) { NEED_VALUE(); if (!parse_int(a, v, &o->sp.top_k)) return false; }
        else if (IS("--top-p")) { NEED_VALUE(); if (!parse_float(a, v, &o->sp.top_p)) return false; }
        else if (IS("--min-p")) { NEED_VALUE(); if (!parse_float(a, v, &o->sp.min_p)) return false; }
        else if (IS("--repeat-penalty")) { NEED_VALUE(); if (!parse_float(a, v, &o->sp.repeat_penalty)) return false; }
        else if (IS("--repeat-last-n")) { NEED_VALUE(); if (!parse_int(a, v, &o->sp.repeat_last_n)) return false; }
        else if (IS("--seed") || IS("-s")) {
            NEED_VALUE();
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || *end || end == v) {
                fprintf(stderr, "rotkv: --seed expects a non-negative integer, got '%s'\n", v);
                return false;
            }
            o->sp.seed = s;
        }
        else if (IS("--attn-rot") || IS("--attn-rot-k") || IS("--attn-rot-v") || IS("--kv-center")) {
            NEED_VALUE();
            int mode = !strcmp(v, "on") ? ROTKV_ROT_ON : !strcmp(v, "off") ? ROTKV_ROT_OFF
                     : !strcmp(v, "auto") ? ROTKV_ROT_AUTO : 99;
            if (mode == 99) {
                fprintf(stderr, "rotkv: %s expects on, off or auto, got '%s'\n", a, v);
                return false;
            }
            if (IS("--kv-center")) o->kv_center = mode;
            else {
                if (!IS("--attn-rot-v")) o->rot_k = mode;
                if (!IS("--attn-rot-k")) o->rot_v = mode;
            }
        }
        else if (IS("--kv-override")) { NEED_VALUE(); o->kv_override = v; }
        else if (IS("--kv-budget")) {
            NEED_VALUE();
            if (!cli_parse_bytes(v, &o->kv_budget)) {
                fprintf(stderr, "rotkv: --kv-budget expects a size like 2GiB or 512MiB, got '%s'\n", v);
                return false;
            }
        }
        else if (IS("--context-shift")) o->context_shift = true;
        else if (IS("--kv-calib")) { NEED_VALUE(); o->kv_calib = v; }
        else if (IS("--kv-calib-text")) { NEED_VALUE(); o->kv_calib_text = v; }
        else if (IS("--no-kv-calib")) o->no_kv_calib = true;
        else if (IS("--kv-bits")) {
            NEED_VALUE();
            char *end;
            o->kv_bits = strtod(v, &end);
            if (*end || end == v || !(o->kv_bits > 0 && o->kv_bits <= 32)) {
                fprintf(stderr, "rotkv: --kv-bits expects bits per value in (0, 32], got '%s'\n", v);
                return false;
            }
        }
        else if (IS("--host")) { NEED_VALUE(); o->host = v; }
        else if (IS("--port")) { NEED_VALUE(); if (!parse_int(a, v, &o->port)) return false; }
        else if (IS("-np") || IS("--parallel")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_parallel)) return false; }
        else if (IS("--api-key")) { NEED_VALUE(); o->api_key = v; }
        else if (IS("--slot-save-path")) { NEED_VALUE(); o->slot_save_path = v; }
        else if (IS("--timeout")) { NEED_VALUE(); if (!parse_float(a, v, &o->timeout_s)) return false; }
        else if (IS("--max-queue")) { NEED_VALUE(); if (!parse_int(a, v, &o->queue_max)) return false; }
        else if (IS("--max-tokens-limit")) { NEED_VALUE(); if (!parse_int(a, v, &o->max_tokens_limit)) return false; }
        else if (IS("--max-connections")) { NEED_VALUE(); if (!parse_int(a, v, &o->max_conn)) return false; }
        else if (IS("--max-body")) {
            NEED_VALUE();
            if (!cli_parse_bytes(v, &o->max_body)) {
                fprintf(stderr, "rotkv: --max-body expects a size like 1MiB, got '%s'\n", v);
                return false;
            }
        }
        else if (IS("--chat-template")) { NEED_VALUE(); o->chat_template = v; }
        else if (IS("--alias")) { NEED_VALUE(); o->alias = v; }
        else if (IS("--system")) { NEED_VALUE(); o->system_prompt = v; }
        else if (IS("--render")) { NEED_VALUE(); o->render = v; }
        else if (IS("--print-template")) o->print_template = true;
        else if (IS("--kv-sink")) { NEED_VALUE(); if (!parse_int(a, v, &o->kv_sink)) return false; }
        else if (IS("--kv-window")) { NEED_VALUE(); if (!parse_int(a, v, &o->kv_window)) return false; }
        else if (IS("--keep")) { NEED_VALUE(); if (!parse_int(a, v, &o->n_keep)) return false; }
        else if (IS("--no-bos")) o->no_bos = true;
        else if (IS("--parse-special")) o->parse_special = true;
        else if (IS("--pieces")) o->show_pieces = true;
        else if (IS("--lines")) o->tok_lines = true;
        else if (IS("--kl-divergence-base")) { NEED_VALUE(); o->kld_base = v; }
        else if (IS("--kl-divergence")) o->kld = true;
        else if (IS("-r") || IS("--repetitions")) { NEED_VALUE(); if (!parse_int(a, v, &o->reps)) return false; }
        else if (IS("-o") || IS("--output")) { NEED_VALUE(); o->bench_o = v; }
        else if (IS("-pg") || IS("--n-prompt")) { NEED_VALUE(); o->bench_p = v; }
        else if (IS("-ng") || IS("--n-gen")) { NEED_VALUE(); o->bench_n = v; }
        else if (IS("-d") || IS("--n-depth")) { NEED_VALUE(); o->bench_d = v; }
        else {
            fprintf(stderr, "rotkv: unknown option '%s'\n", a);
            return false;
        }
        (void)iv;
#undef IS
#undef NEED_VALUE
    }
    if (!one_model_source(o)) return false;
    if (o->n_ctx < 0 || o->n_batch <= 0 || o->n_threads < 0 || o->top_n < 0 || o->n_chunks < 0) {
        fprintf(stderr, "rotkv: -c, -b, -t, -k and --chunks must not be negative (and -b > 0)\n");
        return false;
    }
    return true;
}

char *cli_read_text(const cli_opts *o, size_t *len) {
    if (o->prompt && o->file) {
        fprintf(stderr, "rotkv: give either -p or -f, not both\n");
        return NULL;
    }
    if (o->prompt) {
        *len = strlen(o->prompt);
        char *s = malloc(*len + 1);
        if (s) memcpy(s, o->prompt, *len + 1);
        return s;
    }
    if (!o->file) {
        fprintf(stderr, "rotkv: no input text: give -p PROMPT or -f FILE\n");
        return NULL;
    }
    FILE *fp = fopen(o->file, "rb");
    if (!fp) {
        fprintf(stderr, "rotkv: cannot open '%s': %s\n", o->file, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) break;
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (n < cap) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(fp)) {
        fprintf(stderr, "rotkv: error reading '%s'\n", o->file);
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (!buf) return NULL;
    buf[n] = 0;
    *len = n;
    return buf;
}

/* The model that ships in the repository (models/, see models/README.md):
 * looked for beside the executable (build/rotkv -> models/, an installed
 * bin/rotkv -> share/rotkv/models/), then in ./models. */
#define SHIPPED_MODEL "tinystories-656k-q8_0.gguf"
static char g_shipped[PATH_MAX];

const char *cli_shipped_model(void) {
    char exe[2048], found[2200];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *dirs[] = {"../models", "../share/rotkv/models", "models"};
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            snprintf(found, sizeof found, "%s/%s/%s", exe, dirs[i], SHIPPED_MODEL);
            if (access(found, R_OK) == 0 && realpath(found, g_shipped)) return g_shipped;
        }
    }
    snprintf(g_shipped, sizeof g_shipped, "models/%s", SHIPPED_MODEL);
    return access(g_shipped, R_OK) == 0 ? g_shipped : NULL;
}

bool cli_default_model(cli_opts *o) {
    if (o->model || o->hf_repo) return true;
    const char *p = cli_shipped_model();
    if (!p) return true; /* cli_load_model says what is missing */
    o->model = p;
    fprintf(stderr, "rotkv: no -m given: using the model that ships with rotkv, %s (TinyStories-656K, Q8_0)\n", p);
    return true;
}

static void load_progress(double fraction, void *user) {
    cli_progress_update(user, fraction, 1, "%");
}

/* The cached file -hf resolved to (one per process), freed at exit. */
static char *hf_model_file;

static void hf_model_file_free(void) { free(hf_model_file); }

const char *cli_model_path(const cli_opts *o) { return o->model ? o->model : o->hf_repo ? hf_model_file : NULL; }

/* Resolves -hf into hf_model_file; false with a message, also for a split model. */
static bool resolve_hf(const char *spec) {
    if (!hf_model_file) {
        hf_model_file = hf_resolve_model(spec);
        if (!hf_model_file) return false;
        atexit(hf_model_file_free);
    }
    const int parts = hf_split_count(hf_model_file);
    if (parts)
        fprintf(stderr, "rotkv: error: this model is split into %d parts; merge them with llama-gguf-split --merge %s "
                        "MERGED.gguf and load that with -m\n", parts, hf_model_file);
    return !parts;
}

rotkv_model *cli_load_model(const cli_opts *o, bool vocab_only, double *load_ms) {
    if (!one_model_source(o)) return NULL;
    if (!o->model && !o->hf_repo) {
        fprintf(stderr, "rotkv: no model: give -m MODEL.gguf or -hf OWNER/NAME[:QUANT]\n");
        return NULL;
    }
    if (o->hf_repo && !resolve_hf(o->hf_repo)) return NULL;
    double t0 = cli_now_ms();
    rotkv_model_params mp = rotkv_model_default_params();
    mp.vocab_only = vocab_only;
    cli_progress prog;
    cli_progress_begin(&prog, "loading the model");
    mp.progress = load_progress;
    mp.progress_user = &prog;
    rotkv_model *m = NULL;
    rotkv_error err = {0};
    const rotkv_status st = rotkv_model_load(cli_model_path(o), &mp, &m, &err);
    cli_progress_end(&prog);
    if (st != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        return NULL;
    }
    if (load_ms) *load_ms = cli_now_ms() - t0;
    return m;
}

/* Lab codecs: measured in docs/kv-quality.md, dominated there (another type has
 * fewer or equal bits and lower KLD on both quality models), so not offered as
 * cache types unless ROTKV_LAB_TYPES=1; kv-eval always accepts them. */
static bool is_lab_type(int t) {
    return t == ROTKV_KV_TQ4 || t == ROTKV_KV_TQ3_5 || t == ROTKV_KV_TQ3 || t == ROTKV_KV_TQ2_5 || t == ROTKV_KV_TQ2;
}

int cli_kv_type_lab(const char *name) {
    int t = rotkv_kv_type_from_name(name);
    if (t >= 0) return t;
    fprintf(stderr, "rotkv: unknown KV type '%s' (available:", name);
    for (int i = 0; i < ROTKV_KV_TYPE_COUNT; i++)
        if (strcmp(rotkv_kv_type_name((rotkv_kv_type)i), "unknown")) fprintf(stderr, " %s", rotkv_kv_type_name((rotkv_kv_type)i));
    fprintf(stderr, ")\n");
    return -1;
}

int cli_kv_type(const char *name) {
    int t = rotkv_kv_type_from_name(name);
    const char *lab = getenv("ROTKV_LAB_TYPES");
    if (t >= 0 && is_lab_type(t) && !(lab && !strcmp(lab, "1"))) {
        fprintf(stderr,
                "rotkv: KV type '%s' is a lab codec: kt%s has fewer or equal bits and lower KLD on both quality models "
                "(docs/kv-quality.md); set ROTKV_LAB_TYPES=1 to use it anyway\n",
                name, name + 2);
        return -1;
    }
    if (t >= 0) return t;
    fprintf(stderr, "rotkv: unknown KV cache type '%s' (available:", name);
    for (int i = 0; i < ROTKV_KV_TYPE_COUNT; i++)
        if (strcmp(rotkv_kv_type_name((rotkv_kv_type)i), "unknown") && !is_lab_type(i))
            fprintf(stderr, " %s", rotkv_kv_type_name((rotkv_kv_type)i));
    fprintf(stderr, ")\n");
    return -1;
}

bool cli_calibrate(const cli_opts *o, const rotkv_model *m, rotkv_context *ctx) {
    if (!o->kv_calib_text) return true;
    cli_opts t = *o;
    t.prompt = NULL;
    t.file = o->kv_calib_text;
    size_t len;
    char *text = cli_read_text(&t, &len);
    if (!text) return false;
    int32_t n = 0;
    rotkv_token *toks = cli_tokenize(m, text, len, true, false, &n);
    free(text);
    if (!toks) return false;
    if ((uint32_t)n > rotkv_n_ctx(ctx)) n = (int32_t)rotkv_n_ctx(ctx);
    if ((uint32_t)n > (uint32_t)o->n_batch) n = o->n_batch; /* the first batch is what calibrates */
    rotkv_error err = {0};
    rotkv_batch b = {.n_tokens = n, .token = toks};
    bool ok = n > 0 && rotkv_decode(ctx, &b, &err) == ROTKV_OK;
    if (!ok) fprintf(stderr, "rotkv: --kv-calib-text: %s\n", n > 0 ? err.msg : "no tokens in the calibration text");
    else fprintf(stderr, "rotkv: kt* transforms fitted on %d tokens of '%s'\n", n, o->kv_calib_text);
    rotkv_seq_clear(ctx, 0);
    free(toks);
    return ok;
}

void cli_report_kv(const cli_opts *o, rotkv_context *ctx, void *file) {
    FILE *fp = file;
    rotkv_kv_stats ks;
    rotkv_kv_get_stats(ctx, &ks);
    const uint32_t n = rotkv_n_ctx(ctx);
    fprintf(fp, "KV cache:        K %s / V %s%s%s%s, %.1f bytes/token (%.3f bits/value at %u tokens",
            o->kv_bits > 0 ? "auto" : o->type_k, o->kv_bits > 0 ? "auto" : o->type_v, o->kv_override ? ", override " : "", o->kv_override ? o->kv_override : "",
            ks.f16_side_bytes ? ", f16 sink/window rows" : "", ks.bytes_per_token, rotkv_kv_bits_per_value(ctx, n), n);
    if (ks.f16_side_bytes) fprintf(fp, ", %llu bytes of f16 rows", (unsigned long long)ks.f16_side_bytes);
    fprintf(fp, "), %.2f MiB at %u tokens\n", rotkv_kv_bytes_at(ctx, n) / 1048576.0, n);
    if (ks.n_layer_swa) {
        const rotkv_model *m = rotkv_context_model(ctx);
        rotkv_model_info mi;
        rotkv_model_get_info(m, &mi);
        const uint32_t ring = ks.swa_ring_tokens < n ? ks.swa_ring_tokens : n;
        fprintf(fp, "KV per layer kind: %u global layers %.1f bytes/token (%.2f MiB at %u tokens); %u sliding-window layers "
                    "(window %u, ring of %u tokens) %.1f bytes/token up to the ring (%.2f MiB at %u tokens, the same at any "
                    "longer context)\n",
                mi.n_layer - ks.n_layer_swa, ks.bytes_per_token_global, ks.bytes_per_token_global * n / 1048576.0, n,
                ks.n_layer_swa, ks.swa_window, ks.swa_ring_tokens, ks.bytes_per_token_swa,
                ks.bytes_per_token_swa * ring / 1048576.0, n);
    }
    if (o->kv_bits > 0 && o->calib) {
        const rotkv_model *m = rotkv_context_model(ctx);
        rotkv_model_info mi;
        rotkv_model_get_info(m, &mi);
        fprintf(fp, "KV allocation:   %g bits/value from the calibration, predicted KLD %.6f; K/V per layer:", o->kv_bits,
                o->kv_predicted_kld);
        for (uint32_t l = 0; l < mi.n_layer && l < 1024; l++)
            fprintf(fp, " %s/%s", rotkv_kv_type_name(o->layer_k[l]), rotkv_kv_type_name(o->layer_v[l]));
        fprintf(fp, "\n");
    }
    if (o->kv_budget) {
        /* memory is taken in blocks of tokens_per_block tokens (all layers) */
        const uint64_t blocks = ks.bytes_per_block ? o->kv_budget / ks.bytes_per_block : 0;
        /* the longest sequence whose blocks fit (sliding-window layers stop growing at their ring) */
        uint64_t lo = 0, hi = 1u << 24;
        while (lo < hi) {
            const uint64_t mid = (lo + hi + 1) / 2;
            if (rotkv_kv_blocks_for_tokens(ctx, (uint32_t)mid) <= blocks) lo = mid;
            else hi = mid - 1;
        }
        fprintf(fp, "KV budget:       %.2f MiB holds %llu blocks = %llu tokens of context (one sequence)\n",
                o->kv_budget / 1048576.0, (unsigned long long)blocks, (unsigned long long)lo);
    }
}

bool cli_parse_bytes(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return false;
    static const struct {
        const char *suffix;
        double mul;
    } units[] = {{"", 1}, {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"KiB", 1024.0}, {"M", 1e6}, {"MB", 1e6},
                 {"MiB", 1048576.0}, {"G", 1e9}, {"GB", 1e9}, {"GiB", 1073741824.0}, {"T", 1e12}, {"TiB", 1099511627776.0}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (!strcmp(end, units[i].suffix)) {
            if (v * units[i].mul > 1.8e19) return false;
            *out = (uint64_t)(v * units[i].mul);
            return true;
        }
    return false;
}

char *cli_kv_calib_path(const char *model) {
    const size_t n = strlen(model);
    char *p = malloc(n + 8);
    if (!p) return NULL;
    memcpy(p, model, n + 1);
    if (n > 5 && !strcmp(p + n - 5, ".gguf")) p[n - 5] = 0;
    strcat(p, ".kvcal");
    return p;
}

bool cli_kv_auto_bits(const char *type, double *bits) {
    if (!type || strncmp(type, "auto", 4)) return false;
    char *end;
    *bits = strtod(type + 4, &end);
    if (*end || end == type + 4) *bits = -1; /* "auto" alone or "autoX": invalid, reported by the caller */
    return true;
}

bool cli_kv_calib_load(const char *explicit_path, bool none, const char *model_path, const rotkv_model *m,
                       rotkv_kv_calib **out) {
    *out = NULL;
    char *beside = NULL;
    const char *path = explicit_path;
    if (!path && !none && model_path) {
        beside = cli_kv_calib_path(model_path);
        if (beside && access(beside, F_OK) == 0) path = beside;
    }
    if (!path) {
        free(beside);
        return true;
    }
    rotkv_error err = {0};
    bool ok = rotkv_kv_calib_load(m, path, out, &err) == ROTKV_OK;
    if (!ok)
        fprintf(stderr, "rotkv: %s%s\n", err.msg,
                explicit_path ? "" : " (found beside the model; --no-kv-calib ignores it)");
    else
        fprintf(stderr, "rotkv: KV calibration %s (%u tokens%s)\n", path, rotkv_kv_calib_n_tokens(*out),
                rotkv_kv_calib_has_sensitivity(*out) ? ", with sensitivity table" : "");
    free(beside);
    return ok;
}

void cli_kv_release(cli_opts *o) {
    rotkv_kv_calib_free(o->calib);
    o->calib = NULL;
}

/* The bit budget of -ctk/-ctv autoB or --kv-bits (checked by cli_context_params), 0 if none. */
static double kv_budget(const cli_opts *o) {
    double b = 0;
    if (cli_kv_auto_bits(o->type_k, &b) || cli_kv_auto_bits(o->type_v, &b)) return b;
    return o->kv_bits;
}

bool cli_layer_overrides(cli_opts *o, const rotkv_model *m, rotkv_context_params *cp) {
    o->kv_bits = kv_budget(o);
    rotkv_model_info mi;
    rotkv_model_get_info(m, &mi);
    const int n_layer = (int)mi.n_layer;
    if (!o->calib && !cli_kv_calib_load(o->kv_calib, o->no_kv_calib, cli_model_path(o), m, &o->calib)) return false;
    cp->kv_calib = o->calib;
    if (!o->kv_override && !(o->kv_bits > 0)) return true;
    if (n_layer > 1024) {
        fprintf(stderr, "rotkv: per-layer cache types support at most 1024 layers\n");
        return false;
    }
    if (o->kv_bits > 0) {
        if (!o->calib || !rotkv_kv_calib_has_sensitivity(o->calib)) {
            const char *model = cli_model_path(o) ? cli_model_path(o) : "MODEL";
            char *p = cli_kv_calib_path(model);
            fprintf(stderr,
                    "rotkv: a KV bit budget (%g bits/value) needs a calibration of this model with a sensitivity table: "
                    "run rotkv calibrate -m %s (writes %s), or pass --kv-calib FILE\n",
                    o->kv_bits, model, p ? p : "MODEL.kvcal");
            free(p);
            return false;
        }
        rotkv_error err = {0};
        if (rotkv_kv_calib_allocate(o->calib, m, o->kv_bits, o->layer_k, o->layer_v, &o->kv_predicted_kld, &err) !=
            ROTKV_OK) {
            fprintf(stderr, "rotkv: %s\n", err.msg);
            return false;
        }
    } else
        for (int l = 0; l < n_layer; l++) {
            o->layer_k[l] = cp->type_k;
            o->layer_v[l] = cp->type_v;
        }
    cp->layer_types_k = o->layer_k;
    cp->layer_types_v = o->layer_v;
    if (!o->kv_override) return true;
    /* syntax: LAYERS=TYPE[;LAYERS=TYPE...], LAYERS a comma list of indices (negative from the end) */
    char buf[512];
    snprintf(buf, sizeof buf, "%s", o->kv_override);
    char *save = NULL;
    for (char *item = strtok_r(buf, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) {
            fprintf(stderr, "rotkv: --kv-override: '%s' is not LAYERS=TYPE\n", item);
            return false;
        }
        *eq = 0;
        int t = cli_kv_type(eq + 1);
        if (t < 0) return false;
        char *s2 = NULL;
        for (char *li = strtok_r(item, ",", &s2); li; li = strtok_r(NULL, ",", &s2)) {
            char *end;
            long l = strtol(li, &end, 10);
            if (*end || end == li || l >= n_layer || l < -n_layer) {
                fprintf(stderr, "rotkv: --kv-override: layer '%s' is not in [-%d, %d)\n", li, n_layer, n_layer);
                return false;
            }
            if (l < 0) l += n_layer;
            o->layer_k[l] = o->layer_v[l] = (rotkv_kv_type)t;
        }
    }
    cp->layer_types_k = o->layer_k;
    cp->layer_types_v = o->layer_v;
    return true;
}

int cli_open_text_model(const cli_opts *o, char **text, size_t *len, rotkv_context_params *cp, rotkv_model **m,
                        double *load_ms) {
    *m = NULL;
    *text = cli_read_text(o, len);
    if (!*text) return 2;
    if (!cli_context_params(o, cp)) {
        free(*text);
        *text = NULL;
        return 2;
    }
    *m = cli_load_model(o, false, load_ms);
    if (!*m) {
        free(*text);
        *text = NULL;
        return 1;
    }
    return 0;
}

bool cli_context_params(const cli_opts *o, rotkv_context_params *cp) {
    *cp = rotkv_context_default_params();
    double bk = 0, bv = 0;
    const bool ak = cli_kv_auto_bits(o->type_k, &bk), av = cli_kv_auto_bits(o->type_v, &bv);
    if (ak || av) {
        const double b = ak ? bk : bv;
        if (!(b > 0 && b <= 32) || (ak && av && bk != bv)) {
            fprintf(stderr, "rotkv: '%s' is not a bit budget: use autoB with B in (0, 32], e.g. -ctk auto3.5 "
                            "(it sets K and V together)\n", ak ? o->type_k : o->type_v);
            return false;
        }
        if (o->kv_bits > 0 && o->kv_bits != b) {
            fprintf(stderr, "rotkv: -ctk/-ctv auto%g and --kv-bits %g disagree\n", b, o->kv_bits);
            return false;
        }
    }
    int tk = ak || o->kv_bits > 0 ? ROTKV_KV_F16 : cli_kv_type(o->type_k);
    int tv = av || o->kv_bits > 0 ? ROTKV_KV_F16 : cli_kv_type(o->type_v);
    if (tk < 0 || tv < 0) return false;
    cp->n_ctx = (uint32_t)o->n_ctx;
    cp->n_batch = (uint32_t)o->n_batch;
    cp->n_threads = o->n_threads;
    cp->type_k = (rotkv_kv_type)tk;
    cp->type_v = (rotkv_kv_type)tv;
    cp->rot_k = (rotkv_rot_mode)o->rot_k;
    cp->rot_v = (rotkv_rot_mode)o->rot_v;
    cp->kv_budget_bytes = o->kv_budget;
    if (o->kv_sink < 0 || o->kv_window < 0) {
        fprintf(stderr, "rotkv: --kv-sink and --kv-window must not be negative\n");
        return false;
    }
    cp->kv_sink = (uint32_t)o->kv_sink;
    cp->kv_window = (uint32_t)o->kv_window;
    cp->kv_center = (rotkv_rot_mode)o->kv_center;
    return true;
}

rotkv_token *cli_tokenize(const rotkv_model *m, const char *text, size_t len, bool add_special, bool parse_special,
                          int32_t *n_out) {
    int32_t cap = (int32_t)(len + 16 < 1u << 30 ? len + 16 : 1u << 30);
    rotkv_token *t = malloc(sizeof(rotkv_token) * (size_t)cap);
    if (!t) return NULL;
    int32_t n = rotkv_tokenize(m, text, len, t, cap, add_special, parse_special);
    if (n < 0) {
        cap = -n;
        rotkv_token *nt = realloc(t, sizeof(rotkv_token) * (size_t)cap);
        if (!nt) {
            free(t);
            return NULL;
        }
        t = nt;
        n = rotkv_tokenize(m, text, len, t, cap, add_special, parse_special);
    }
    if (n < 0) {
        free(t);
        fprintf(stderr, "rotkv: tokenization failed\n");
        return NULL;
    }
    *n_out = n;
    return t;
}
