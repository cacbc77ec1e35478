/* cmd_calibrate.c — `rotkv calibrate`: a model's KV calibration (kv_calib.h).
 *
 *   1. Runs the calibration text (the shipped data/calibration.txt unless -f)
 *      through the model with an f16 cache in chunks of -c tokens, collecting
 *      the moments of K, Q and V per layer and KV head, and keeping the f16
 *      next-token distributions of the first --sens-chunks chunks (their
 *      second halves, as llama-perplexity scores).
 *   2. Sensitivity: for every candidate type, layer and side, runs those chunks
 *      again with only that layer's K (or V) in the type (kt* fitted from the
 *      moments, which come from the other chunks) and records the mean KL
 *      divergence from f16.
 *   3. Checks the additive model: for a few budgets, allocates, runs the
 *      allocation and prints predicted against measured KLD.
 *   4. Writes the calibration (beside the model by default).
 * Progress goes to stderr as one updating line when stderr is a terminal. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "hash.h"
#include "kv_cache.h"

extern const unsigned char rotkv_calibration_text[];
extern const size_t rotkv_calibration_text_len;

typedef struct {
    rotkv_model *m;
    const rotkv_token *toks;
    int n_ctx, n_chunks, n_threads;
    int32_t n_vocab;
    float *ref; /* (n_chunks * n_ctx, n_vocab) f16 log-probabilities */
} calib_run;

static void log_softmax(const float *logits, float *out, int32_t n) {
    float mx = logits[0];
    for (int32_t i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)logits[i] - mx);
    const float lse = mx + (float)log(s);
    for (int32_t i = 0; i < n; i++) out[i] = logits[i] - lse;
}

/* Runs the chunks with these cache types; with store, keeps their
 * log-probabilities in r->ref, else returns the mean KLD against them (NAN
 * on error; a KLD can be a rounding error below 0 when the type is nearly
 * exact). */
static double run_chunks(calib_run *r, const rotkv_kv_type *tk, const rotkv_kv_type *tv, const rotkv_kv_calib *cal,
                         rotkv_kv_calib *collect, int c0, int c1, bool store) {
    rotkv_context_params cp = rotkv_context_default_params();
    cp.n_ctx = (uint32_t)r->n_ctx;
    cp.n_batch = (uint32_t)r->n_ctx;
    cp.n_threads = r->n_threads;
    cp.layer_types_k = tk;
    cp.layer_types_v = tv;
    cp.kv_calib = cal;
    rotkv_context *ctx = NULL;
    rotkv_error err = {0};
    if (rotkv_context_create(r->m, &cp, &ctx, &err) != ROTKV_OK) {
        fprintf(stderr, "\nrotkv calibrate: %s\n", err.msg);
        return NAN;
    }
    if (collect && rotkv_kv_calib_attach(ctx, collect, &err) != ROTKV_OK) {
        fprintf(stderr, "\nrotkv calibrate: %s\n", err.msg);
        rotkv_context_free(ctx);
        return NAN;
    }
    int8_t *want = malloc((size_t)r->n_ctx);
    float *lp = malloc(sizeof(float) * (size_t)r->n_vocab);
    rotkv_token *chunk = malloc(sizeof(rotkv_token) * (size_t)r->n_ctx);
    const rotkv_token bos = rotkv_token_bos(r->m);
    const bool add_bos = rotkv_add_bos(r->m) && bos >= 0;
    double kld = 0;
    long count = 0;
    bool ok = want && lp && chunk;
    for (int ch = c0; ok && ch < c1; ch++) {
        const bool logits = !collect && ch < r->n_chunks;
        /* scored, as llama-perplexity scores: the second half of each chunk,
         * where every token attends over at least n_ctx/2 cached positions
         * (early positions hide K errors: a softmax over few rows barely moves) */
        for (int i = 0; i < r->n_ctx; i++) want[i] = logits && i >= r->n_ctx / 2;
        /* every chunk starts with BOS (when the model adds one), as perplexity's
         * chunks and every real sequence do: the moments then see the BOS row,
         * which attention sinks make the most read row of the cache */
        memcpy(chunk, r->toks + (size_t)ch * r->n_ctx, sizeof(rotkv_token) * (size_t)r->n_ctx);
        if (add_bos) chunk[0] = bos;
        rotkv_batch b = {.n_tokens = r->n_ctx, .token = chunk, .logits = want};
        if (rotkv_decode(ctx, &b, &err) != ROTKV_OK) {
            fprintf(stderr, "\nrotkv calibrate: %s\n", err.msg);
            ok = false;
            break;
        }
        for (int i = r->n_ctx / 2; logits && i < r->n_ctx; i++) {
            float *ref = r->ref + ((size_t)ch * r->n_ctx + i) * (size_t)r->n_vocab;
            const float *lg = rotkv_get_logits(ctx, i);
            if (store) {
                log_softmax(lg, ref, r->n_vocab);
                continue;
            }
            log_softmax(lg, lp, r->n_vocab);
            double k = 0;
            for (int32_t j = 0; j < r->n_vocab; j++) k += exp((double)ref[j]) * ((double)ref[j] - lp[j]);
            kld += k;
            count++;
        }
        rotkv_seq_clear(ctx, 0);
    }
    rotkv_kv_calib_attach(ctx, NULL, NULL);
    rotkv_context_free(ctx);
    free(want);
    free(lp);
    free(chunk);
    if (!ok) return NAN;
    return count ? kld / count : 0;
}

static void progress(int done, int total, const char *what, double t0) {
    if (!isatty(2)) return;
    const double el = (cli_now_ms() - t0) / 1000.0;
    const double eta = done ? el * (total - done) / done : 0;
    fprintf(stderr, "\rrotkv calibrate: sensitivity %d/%d (%s), %.0f s, ETA %.0f s   ", done, total, what, el, eta);
}

static void usage(void) {
    printf("usage: rotkv calibrate -m MODEL [-f TEXT] [-o FILE] [-c 256] [--chunks 16] [--sens-chunks 1]\n"
           "                       [--types T,T,..] [--check 2.5,3,3.5,4] [-t N]\n"
           "  writes the model's KV calibration (default: MODEL without .gguf + .kvcal), which run, perplexity,\n"
           "  bench and serve load with --kv-calib FILE or find beside the model; -ctk auto3.5 then allocates\n"
           "  3.5 bits/value over the layers. TEXT defaults to the calibration text shipped with rotkv.\n");
}

int cmd_calibrate(int argc, char **argv) {
    const char *model = NULL, *hf = NULL, *file = NULL, *out = NULL;
    const char *types_arg = "q8_0,q5_0,iq4_nl,kt6,kt5,kt4,kt3.5,kt3,kt2.5,kt2,ktt4,ktt3.5,ktt3,ktt2.5,ktt2,"
                                                 "kttr5,kttr4.5,kttr4,kttr3.75,kttr3.5,kttr3.25,kttr3,kttr2.75,kttr2.5,kttr2", *check_arg = "2.5,3,3.5,4";
    int n_ctx = 256, n_chunks = 16, n_sens = 1, n_threads = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "rotkv calibrate: %s needs a value (or is unknown); see rotkv calibrate -h\n", a);
            return 2;
        }
        int *iv = !strcmp(a, "-c") ? &n_ctx : !strcmp(a, "--chunks") ? &n_chunks : !strcmp(a, "--sens-chunks") ? &n_sens
                : !strcmp(a, "-t") ? &n_threads : NULL;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-hf") || !strcmp(a, "--hf-repo")) hf = v;
        else if (!strcmp(a, "-f")) file = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--types")) types_arg = v;
        else if (!strcmp(a, "--check")) check_arg = v;
        else if (iv) {
            char *end;
            long x = strtol(v, &end, 10);
            if (*end || end == v || x < 0 || x > 1000000) {
                fprintf(stderr, "rotkv calibrate: %s expects a non-negative integer, got '%s'\n", a, v);
                return 2;
            }
            *iv = (int)x;
        } else {
            fprintf(stderr, "rotkv calibrate: unknown option '%s'; see rotkv calibrate -h\n", a);
            return 2;
        }
        i++;
    }
    if (!model && !hf) {
        fprintf(stderr, "rotkv calibrate: -m MODEL (or -hf OWNER/NAME[:QUANT]) is required\n");
        return 2;
    }
    if (n_ctx < 16 || n_chunks < 1 || n_sens < 1) {
        fprintf(stderr, "rotkv calibrate: -c must be >= 16, --chunks and --sens-chunks >= 1\n");
        return 2;
    }
    /* candidate types */
    rotkv_kv_type types[32];
    int n_types = 0;
    {
        char buf[512];
        snprintf(buf, sizeof buf, "%s", types_arg);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            const int ty = cli_kv_type(t);
            if (ty < 0) return 2;
            if (n_types == 32) {
                fprintf(stderr, "rotkv calibrate: --types takes at most 32 types\n");
                return 2;
            }
            types[n_types++] = (rotkv_kv_type)ty;
        }
    }
    double checks[16];
    int n_checks = 0;
    {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", check_arg);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t && n_checks < 16; t = strtok_r(NULL, ",", &save)) {
            char *end;
            const double b = strtod(t, &end);
            if (*end || !(b > 0 && b <= 32)) {
                fprintf(stderr, "rotkv calibrate: --check expects bit budgets in (0, 32], got '%s'\n", t);
                return 2;
            }
            checks[n_checks++] = b;
        }
    }
    char *text = NULL;
    size_t len = 0;
    if (file) {
        cli_opts t;
        memset(&t, 0, sizeof t);
        t.file = file;
        text = cli_read_text(&t, &len);
        if (!text) return 2;
    } else {
        len = rotkv_calibration_text_len;
        text = malloc(len + 1);
        if (!text) return 1;
        memcpy(text, rotkv_calibration_text, len);
        text[len] = 0;
    }
    cli_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.model = model;
    lo.hf_repo = hf;
    rotkv_model *m = cli_load_model(&lo, false, NULL);
    if (!m) {
        free(text);
        return 1;
    }
    model = cli_model_path(&lo);
    rotkv_model_info mi;
    rotkv_model_get_info(m, &mi);
    int rc = 1;
    char *def_out = NULL;
    rotkv_kv_calib *cal = NULL;
    rotkv_kv_type *tk = calloc(mi.n_layer, sizeof *tk), *tv = calloc(mi.n_layer, sizeof *tv);
    int32_t n_tok = 0;
    rotkv_token *toks = cli_tokenize(m, text, len, true, false, &n_tok);
    calib_run r = {.m = m, .toks = toks, .n_threads = n_threads, .n_vocab = rotkv_n_vocab(m)};
    rotkv_error err = {0};
    if (!toks || !tk || !tv) goto done;
    if ((uint32_t)n_ctx > mi.n_ctx_train) n_ctx = (int)mi.n_ctx_train;
    if (n_tok < n_ctx) n_ctx = n_tok;
    if (n_ctx < 16) {
        fprintf(stderr, "rotkv calibrate: the calibration text has %d tokens; at least 16 are needed\n", n_tok);
        rc = 2;
        goto done;
    }
    if (n_chunks > n_tok / n_ctx) n_chunks = n_tok / n_ctx;
    if (n_sens > n_chunks) n_sens = n_chunks;
    r.n_ctx = n_ctx;
    r.n_chunks = n_sens;
    r.ref = malloc(sizeof(float) * (size_t)n_sens * n_ctx * (size_t)r.n_vocab);
    if (!r.ref) {
        fprintf(stderr, "rotkv calibrate: out of memory for %d x %d reference distributions\n", n_sens * n_ctx, r.n_vocab);
        goto done;
    }
    if (rotkv_kv_calib_create(m, 0, &cal, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv calibrate: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "rotkv calibrate: %s, %u layers, head_dim %u; %d chunks of %d tokens of %s (%d tokens)\n", model,
            mi.n_layer, mi.head_dim, n_chunks, n_ctx, file ? file : "the shipped calibration text", n_tok);
    const double t0 = cli_now_ms();
    for (uint32_t l = 0; l < mi.n_layer; l++) tk[l] = tv[l] = ROTKV_KV_F16;
    /* the moments come from the chunks the sensitivity is not measured on, so
     * that the sensitivity includes how well the fitted transforms carry over
     * to text they were not fitted on (with a one-chunk text: the same chunk) */
    const int m0 = n_chunks > n_sens ? n_sens : 0;
    if (isnan(run_chunks(&r, tk, tv, NULL, cal, m0, n_chunks, false))) goto done;
    if (isnan(run_chunks(&r, tk, tv, NULL, NULL, 0, n_sens, true))) goto done;
    const uint64_t th = fnv1a(FNV1A_SEED, toks, sizeof(rotkv_token) * (size_t)n_chunks * n_ctx);
    if (rotkv_kv_calib_finish(cal, th, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv calibrate: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "rotkv calibrate: moments from %u tokens in %.1f s\n", rotkv_kv_calib_n_tokens(cal),
            (cli_now_ms() - t0) / 1000.0);
    /* sensitivity */
    /* a kttr* type whose rows this model does not code whole (one KV head, or a
     * row over KV_KT_ROW_MAX values) is its ktt type: not measured twice */
    for (int i = 0; i < n_types; i++) {
        const kv_codec *kc = kv_codec_get(types[i]);
        if (kc->kt_row && kv_codec_kt_seg(kc, (int)mi.head_dim, (int)mi.n_head_kv) == (int)mi.head_dim) {
            fprintf(stderr, "rotkv calibrate: %s codes this model's heads one by one (a row of %u x %u values): "
                            "it is ktt%s here; skipped\n",
                    rotkv_kv_type_name(types[i]), mi.n_head_kv, mi.head_dim, rotkv_kv_type_name(types[i]) + 4);
            memmove(types + i, types + i + 1, sizeof *types * (size_t)(n_types - i - 1));
            n_types--;
            i--;
        }
    }
    int usable = 0;
    for (int i = 0; i < n_types; i++) usable += rotkv_kv_type_bits(m, types[i]) > 0;
    const int total = usable * 2 * (int)mi.n_layer;
    int done_n = 0;
    const double t1 = cli_now_ms();
    printf("# sensitivity: mean KLD added by one layer's K or V in a type (all else f16), %d tokens (the second half of each chunk)\n",
           n_sens * (n_ctx - n_ctx / 2));
    printf("%-8s %6s", "type", "bits");
    for (uint32_t l = 0; l < mi.n_layer && l < 16; l++) printf("   K%-2u      V%-2u    ", l, l);
    printf("%s\n", mi.n_layer > 16 ? " ..." : "");
    for (int i = 0; i < n_types; i++) {
        const double bits = rotkv_kv_type_bits(m, types[i]);
        if (bits <= 0) {
            fprintf(stderr, "rotkv calibrate: %s cannot hold this model's rows; skipped\n", rotkv_kv_type_name(types[i]));
            continue;
        }
        printf("%-8s %6.3f", rotkv_kv_type_name(types[i]), bits);
        for (uint32_t l = 0; l < mi.n_layer; l++)
            for (int side = 0; side < 2; side++) {
                char what[64];
                snprintf(what, sizeof what, "%s, layer %u %s", rotkv_kv_type_name(types[i]), l, side ? "V" : "K");
                progress(done_n, total, what, t1);
                (side ? tv : tk)[l] = types[i];
                const double d = run_chunks(&r, tk, tv, cal, NULL, 0, n_sens, false);
                (side ? tv : tk)[l] = ROTKV_KV_F16;
                if (isnan(d)) goto done;
                if (rotkv_kv_calib_set_sensitivity(cal, types[i], l, side, d, &err) != ROTKV_OK) {
                    fprintf(stderr, "\nrotkv calibrate: %s\n", err.msg);
                    goto done;
                }
                if (l < 16) printf(" %9.6f", d);
                done_n++;
            }
        printf("\n");
        fflush(stdout);
    }
    if (isatty(2)) fprintf(stderr, "\n");
    fprintf(stderr, "rotkv calibrate: sensitivity of %d types in %.1f s\n", usable, (cli_now_ms() - t1) / 1000.0);
    /* the additive model against measurement */
    printf("# allocation check: predicted (sum of sensitivities) vs measured KLD on the calibration text\n");
    for (int i = 0; i < n_checks; i++) {
        double pred = 0;
        if (rotkv_kv_calib_allocate(cal, m, checks[i], tk, tv, &pred, &err) != ROTKV_OK) {
            printf("auto%g: %s\n", checks[i], err.msg);
            continue;
        }
        const double meas = run_chunks(&r, tk, tv, cal, NULL, 0, n_sens, false);
        double bsum = 0;
        for (uint32_t l = 0; l < mi.n_layer; l++) bsum += rotkv_kv_type_bits(m, tk[l]) + rotkv_kv_type_bits(m, tv[l]);
        printf("auto%-4g %.3f bits/value  predicted %.6f  measured %.6f  K/V:", checks[i], bsum / (2.0 * mi.n_layer),
               pred, meas);
        for (uint32_t l = 0; l < mi.n_layer; l++)
            printf(" %s/%s", rotkv_kv_type_name(tk[l]), rotkv_kv_type_name(tv[l]));
        printf("\n");
    }
    if (!out) {
        def_out = cli_kv_calib_path(model);
        if (!def_out) goto done;
        out = def_out;
    }
    if (rotkv_kv_calib_save(cal, out, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv calibrate: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "rotkv calibrate: wrote %s\n", out);
    rc = 0;
done:
    rotkv_kv_calib_free(cal);
    free(r.ref);
    free(toks);
    free(tk);
    free(tv);
    free(text);
    free(def_out);
    rotkv_model_free(m);
    return rc;
}
