/* cmd_bench.c — `rotkv bench`: prompt-processing and generation speed at
 * given context depths, in the manner of llama-bench.
 *
 * For every combination of the comma-separated values of -ctk, -ctv, -t and -d,
 * and every -p / -n: the cache is pre-filled to the depth (not timed; one
 * context per -ctk/-ctv/-t combination, each depth's fill extending the
 * previous one, or truncating it, over the same token stream), then
 *   pp: n_prompt tokens are evaluated in one batch on top of it,
 *   tg: n_gen tokens are generated one at a time on top of it,
 * each repeated -r times (the cache truncated back to the depth in between).
 * Output rows use llama-bench's field names where the quantity is the same. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"

#define MAX_VALUES 16

typedef struct {
    int n;
    const char *s[MAX_VALUES];
} str_list;

typedef struct {
    int n;
    int v[MAX_VALUES];
} int_list;

static bool split_str(char *arg, str_list *l) {
    l->n = 0;
    char *save = NULL;
    for (char *t = strtok_r(arg, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (l->n == MAX_VALUES) return false;
        l->s[l->n++] = t;
    }
    return l->n > 0;
}

static bool split_int(const char *flag, char *arg, int_list *l, int min) {
    str_list s;
    if (!split_str(arg, &s)) {
        fprintf(stderr, "rotkv bench: %s expects a comma list of at most %d values\n", flag, MAX_VALUES);
        return false;
    }
    l->n = s.n;
    for (int i = 0; i < s.n; i++) {
        char *end;
        long v = strtol(s.s[i], &end, 10);
        if (*end || end == s.s[i] || v < min || v > (1 << 24)) {
            fprintf(stderr, "rotkv bench: %s: '%s' is not an integer >= %d\n", flag, s.s[i], min);
            return false;
        }
        l->v[i] = (int)v;
    }
    return true;
}

typedef struct {
    const char *test;  /* "pp" or "tg" */
    int n_prompt, n_gen, n_depth, n_threads;
    const char *type_k, *type_v;
    double avg_ts, stddev_ts, avg_ns, stddev_ns;
    double samples_ts[64];
    int n_samples;
    double kv_bytes_per_token;
    uint64_t kv_bytes_at_depth;
    double kv_allocated_bytes, rss_kv_delta_bytes; /* at depth: pages allocated, RSS growth while filling */
    /* over the timed runs (rotkv_perf): shares of the decode time, and the
     * cache bytes attended per second of attention */
    double attn_share, matmul_share, kv_gbps;
} bench_row;

/* Current resident set size from /proc/self/statm (0 if unavailable). */
static double current_rss_bytes(void) {
    FILE *fp = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(fp);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024.0;
}

/* Fills the sequence from `from` to `depth` tokens with a deterministic token
 * stream (the same tokens at the same positions whatever `from` was). */
static bool prefill(rotkv_context *ctx, int from, int depth, int n_vocab, int n_batch, rotkv_token *buf,
                    rotkv_error *err) {
    uint64_t s = 12345;
    for (int i = 0; i < from; i++) s = s * 6364136223846793005ull + 1442695040888963407ull;
    char what[64];
    snprintf(what, sizeof what, "filling the cache to depth %d", depth);
    cli_progress prog;
    cli_progress_begin(&prog, what);
    for (int done = from; done < depth;) {
        int n = depth - done < n_batch ? depth - done : n_batch;
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (rotkv_token)((s >> 33) % (uint64_t)n_vocab);
        }
        rotkv_batch b = {.n_tokens = n, .token = buf};
        if (rotkv_decode(ctx, &b, err) != ROTKV_OK) {
            cli_progress_end(&prog);
            return false;
        }
        done += n;
        cli_progress_update(&prog, done, depth, "tokens");
    }
    cli_progress_end(&prog);
    return true;
}

static void finish_row(bench_row *r, int n_tokens, const double *ns, int reps) {
    double sum = 0, sum2 = 0, tsum = 0, tsum2 = 0;
    for (int i = 0; i < reps; i++) {
        const double ts = n_tokens / (ns[i] / 1e9);
        r->samples_ts[i] = ts;
        sum += ns[i];
        sum2 += ns[i] * ns[i];
        tsum += ts;
        tsum2 += ts * ts;
    }
    r->n_samples = reps;
    r->avg_ns = sum / reps;
    r->avg_ts = tsum / reps;
    r->stddev_ns = reps > 1 ? sqrt(fmax(0, (sum2 - sum * sum / reps) / (reps - 1))) : 0;
    r->stddev_ts = reps > 1 ? sqrt(fmax(0, (tsum2 - tsum * tsum / reps) / (reps - 1))) : 0;
}

/* Bytes one generated token reads: every matrix once and the cache up to the
 * row's depth (the average over its n_gen tokens is within n_gen / depth). */
static double bytes_read(const rotkv_model_info *mi, const bench_row *r) {
    return (double)mi->matmul_bytes + (double)r->kv_bytes_at_depth + r->kv_bytes_per_token * (r->n_gen / 2.0);
}

/* Achieved read bandwidth of a generation row (0 for prompt rows). */
static double achieved_gbps(const rotkv_model_info *mi, const bench_row *r) {
    return r->n_gen ? bytes_read(mi, r) * r->avg_ts / 1e9 : 0.0;
}

int cmd_bench(int argc, char **argv) {
    char def_p[] = "512", def_n[] = "128", def_d[] = "0", def_t[16], def_k[] = "f16", def_v[] = "f16";
    char *ap = def_p, *an = def_n, *ad = def_d, *at = NULL, *ak = def_k, *av = def_v;
    const char *model = NULL, *hf = NULL, *fmt = "md", *kv_calib = NULL;
    bool no_kv_calib = false;
    int reps = 5, n_batch = 512;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: rotkv bench (-m MODEL | -hf OWNER/NAME[:QUANT]) [-p 512] [-n 128] [-d 0,4096] [-t N] [-ctk T[,T..]] [-ctv T[,T..]]\n"
                   "                   [-r 5] [-b 512] [-o md|json|csv] [--kv-calib FILE | --no-kv-calib]\n"
                   "  every flag but -m takes a comma list; one row per combination and test\n"
                   "  -ctk autoB allocates B bits/value over the layers from the model's KV calibration (K and V)\n");
            return 0;
        }
        if (!strcmp(a, "--no-kv-calib")) {
            no_kv_calib = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "rotkv bench: option %s needs a value (or is unknown)\n", a);
            return 2;
        }
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-hf") || !strcmp(a, "--hf-repo")) hf = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) ap = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) an = v;
        else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth")) ad = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) at = v;
        else if (!strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k")) ak = v;
        else if (!strcmp(a, "-ctv") || !strcmp(a, "--cache-type-v")) av = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) fmt = v;
        else if (!strcmp(a, "--kv-calib")) kv_calib = v;
        else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) reps = atoi(v);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) n_batch = atoi(v);
        else {
            fprintf(stderr, "rotkv bench: unknown option '%s'\n", a);
            return 2;
        }
        i++;
    }
    if (reps < 1 || reps > 64 || n_batch < 1) {
        fprintf(stderr, "rotkv bench: -r must be in 1..64 and -b positive\n");
        return 2;
    }
    if (strcmp(fmt, "md") && strcmp(fmt, "json") && strcmp(fmt, "csv")) {
        fprintf(stderr, "rotkv bench: -o expects md, json or csv\n");
        return 2;
    }
    if (!at) {
        snprintf(def_t, sizeof def_t, "%d", 0);
        at = def_t;
    }
    int_list lp, ln, ld, lt;
    str_list lk, lv;
    if (!split_int("-p", ap, &lp, 0) || !split_int("-n", an, &ln, 0) || !split_int("-d", ad, &ld, 0) ||
        !split_int("-t", at, &lt, 0) || !split_str(ak, &lk) || !split_str(av, &lv)) {
        fprintf(stderr, "rotkv bench: bad value list\n");
        return 2;
    }
    bool any_auto = false;
    for (int i = 0; i < lk.n; i++) {
        double b;
        if (cli_kv_auto_bits(lk.s[i], &b)) {
            if (!(b > 0 && b <= 32)) {
                fprintf(stderr, "rotkv bench: '%s' is not a bit budget (autoB, B in (0, 32])\n", lk.s[i]);
                return 2;
            }
            any_auto = true;
        } else if (cli_kv_type(lk.s[i]) < 0)
            return 2;
    }
    for (int i = 0; i < lv.n; i++)
        if (cli_kv_type(lv.s[i]) < 0) return 2;
    cli_opts o;
    memset(&o, 0, sizeof o);
    o.model = model;
    o.hf_repo = hf;
    rotkv_model *m = cli_load_model(&o, false, NULL);
    if (!m) return 1;
    model = cli_model_path(&o);
    rotkv_model_info mi;
    rotkv_model_get_info(m, &mi);
    rotkv_kv_calib *cal = NULL;
    if (!cli_kv_calib_load(kv_calib, no_kv_calib, model, m, &cal)) {
        rotkv_model_free(m);
        return 1;
    }
    if (any_auto && (!cal || !rotkv_kv_calib_has_sensitivity(cal))) {
        fprintf(stderr, "rotkv bench: -ctk autoB needs a KV calibration of this model: run rotkv calibrate -m %s\n", model);
        rotkv_kv_calib_free(cal);
        rotkv_model_free(m);
        return 1;
    }
    rotkv_kv_type *lay_k = calloc(mi.n_layer, sizeof *lay_k), *lay_v = calloc(mi.n_layer, sizeof *lay_v);
    const int V = rotkv_n_vocab(m);
    int max_p = 0, max_n = 0, max_d = 0;
    for (int i = 0; i < lp.n; i++) max_p = lp.v[i] > max_p ? lp.v[i] : max_p;
    for (int i = 0; i < ln.n; i++) max_n = ln.v[i] > max_n ? ln.v[i] : max_n;
    for (int i = 0; i < ld.n; i++) max_d = ld.v[i] > max_d ? ld.v[i] : max_d;
    const int buf_n = (max_p > n_batch ? max_p : n_batch) + 1;
    rotkv_token *buf = malloc(sizeof(rotkv_token) * (size_t)buf_n);
    bench_row *rows = calloc((size_t)(lk.n * lv.n * lt.n * ld.n * (lp.n + ln.n)), sizeof *rows);
    double ns[64];
    int n_rows = 0, rc = 1;
    if (!buf || !rows) goto done;
    for (int ik = 0; ik < lk.n; ik++)
        for (int iv = 0; iv < lv.n; iv++)
            for (int it = 0; it < lt.n; it++) {
                /* one context for all the depths: each fill extends the previous one
                 * (or truncates it: the same token stream, so the cache holds what a
                 * fill from scratch would) */
                rotkv_context *ctx = NULL;
                rotkv_context_params cp = rotkv_context_default_params();
                int filled = 0;
                double rss0 = 0;
                for (int id = 0; id < ld.n; id++) {
                    const int depth = ld.v[id];
                    rotkv_error err = {0};
                    if (ctx) goto fill;
                    cp.n_ctx = (uint32_t)(max_d + (max_p > max_n ? max_p : max_n) + 1);
                    cp.n_batch = (uint32_t)n_batch;
                    cp.n_threads = lt.v[it];
                    double budget;
                    cp.kv_calib = cal;
                    if (cli_kv_auto_bits(lk.s[ik], &budget)) {
                        if (!lay_k || !lay_v ||
                            rotkv_kv_calib_allocate(cal, m, budget, lay_k, lay_v, NULL, &err) != ROTKV_OK) {
                            fprintf(stderr, "rotkv bench: %s\n", lay_k && lay_v ? err.msg : "out of memory");
                            goto done;
                        }
                        cp.layer_types_k = lay_k;
                        cp.layer_types_v = lay_v;
                    } else {
                        cp.type_k = (rotkv_kv_type)cli_kv_type(lk.s[ik]);
                        cp.type_v = (rotkv_kv_type)cli_kv_type(lv.s[iv]);
                    }
                    if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) {
                        fprintf(stderr, "rotkv bench: %s\n", err.msg);
                        goto done;
                    }
                    /* touch every weight and activation buffer once (one full batch, then
                     * rolled back) so that the RSS growth while filling is the cache's */
                    const int n_warm = (int)rotkv_n_ctx(ctx) < n_batch ? (int)rotkv_n_ctx(ctx) : n_batch;
                    for (int i = 0; i < n_warm; i++) buf[i] = (rotkv_token)((i * 31 + 1) % V);
                    rotkv_batch warm = {.n_tokens = n_warm, .token = buf};
                    if (rotkv_decode(ctx, &warm, &err) != ROTKV_OK) {
                        fprintf(stderr, "rotkv bench: %s\n", err.msg);
                        rotkv_context_free(ctx);
                        goto done;
                    }
                    rotkv_seq_clear(ctx, 0);
                    rss0 = current_rss_bytes();
                fill:
                    if (depth > filled)
                        fprintf(stderr, "rotkv bench: K %s V %s, %d threads: filling depth %d (from %d)...\n", lk.s[ik],
                                lv.s[iv], lt.v[it], depth, filled);
                    rotkv_seq_truncate(ctx, 0, depth < filled ? depth : filled);
                    if (depth > filled && !prefill(ctx, filled, depth, V, n_batch, buf, &err)) {
                        fprintf(stderr, "rotkv bench: %s\n", err.msg);
                        rotkv_context_free(ctx);
                        goto done;
                    }
                    filled = depth;
                    const double rss_delta = current_rss_bytes() - rss0;
                    rotkv_kv_stats ks;
                    rotkv_kv_get_stats(ctx, &ks);
                    if (depth > 0)
                        fprintf(stderr, "rotkv bench: KV at depth %d: %.2f MiB reported (%.1f bytes/token x %d), %.2f MiB allocated, RSS grew %.2f MiB (%.1f%% of reported)\n",
                                depth, rotkv_kv_bytes_at(ctx, (uint32_t)depth) / 1048576.0, ks.bytes_per_token, depth,
                                ks.blocks_used * (double)ks.bytes_per_block / 1048576.0, rss_delta / 1048576.0,
                                100.0 * rss_delta / (double)rotkv_kv_bytes_at(ctx, (uint32_t)depth));
                    for (int kind = 0; kind < 2; kind++) {
                        const int_list *lst = kind == 0 ? &lp : &ln;
                        for (int ix = 0; ix < lst->n; ix++) {
                            const int nt = lst->v[ix];
                            if (nt == 0) continue;
                            /* one untimed warm-up, then reps timed runs */
                            rotkv_perf pf;
                            for (int r = -1; r < reps; r++) {
                                if (r == 0) rotkv_perf_reset(ctx);
                                rotkv_seq_truncate(ctx, 0, depth);
                                const double t0 = cli_now_ms();
                                if (kind == 0) {
                                    for (int i = 0; i < nt; i++) buf[i] = (rotkv_token)((i * 7919 + 13) % V);
                                    /* the prompt goes through in batches of n_batch */
                                    for (int done_t = 0; done_t < nt;) {
                                        int nb = nt - done_t < n_batch ? nt - done_t : n_batch;
                                        rotkv_batch b = {.n_tokens = nb, .token = buf + done_t};
                                        if (rotkv_decode(ctx, &b, &err) != ROTKV_OK) goto decode_failed;
                                        done_t += nb;
                                    }
                                } else {
                                    rotkv_token t = 1 % V;
                                    for (int i = 0; i < nt; i++) {
                                        rotkv_batch b = {.n_tokens = 1, .token = &t};
                                        if (rotkv_decode(ctx, &b, &err) != ROTKV_OK) goto decode_failed;
                                        t = (rotkv_token)((t * 31 + 7) % V);
                                    }
                                }
                                if (r >= 0) ns[r] = (cli_now_ms() - t0) * 1e6;
                            }
                            rotkv_perf_get(ctx, &pf);
                            bench_row *row = &rows[n_rows++];
                            row->attn_share = pf.t_decode_ms > 0 ? pf.t_attention_ms / pf.t_decode_ms : 0;
                            row->matmul_share = pf.t_decode_ms > 0 ? pf.t_matmul_ms / pf.t_decode_ms : 0;
                            row->kv_gbps = pf.t_attention_ms > 0 ? pf.kv_bytes_attended / (pf.t_attention_ms * 1e6) : 0;
                            row->test = kind == 0 ? "pp" : "tg";
                            row->n_prompt = kind == 0 ? nt : 0;
                            row->n_gen = kind == 1 ? nt : 0;
                            row->n_depth = depth;
                            row->n_threads = rotkv_n_threads(ctx);
                            row->type_k = lk.s[ik];
                            row->type_v = cp.layer_types_v ? lk.s[ik] : lv.s[iv];
                            row->kv_bytes_per_token = ks.bytes_per_token;
                            row->kv_bytes_at_depth = rotkv_kv_bytes_at(ctx, (uint32_t)depth); /* rings stop at theirs */
                            row->kv_allocated_bytes = ks.blocks_used * (double)ks.bytes_per_block;
                            row->rss_kv_delta_bytes = rss_delta;
                            finish_row(row, nt, ns, reps);
                            if (row->n_gen)
                                fprintf(stderr,
                                        "rotkv bench:   %s%d @ d%d: %.2f ± %.2f tok/s, %.1f GB/s read; attention %.0f%%, "
                                        "matmuls %.0f%% of the time, cache read at %.1f GB/s in attention (%s)\n",
                                        row->test, nt, depth, row->avg_ts, row->stddev_ts, achieved_gbps(&mi, row),
                                        100 * row->attn_share, 100 * row->matmul_share, row->kv_gbps, mi.isa);
                            else
                                fprintf(stderr, "rotkv bench:   %s%d @ d%d: %.2f ± %.2f tok/s (%s)\n", row->test, nt,
                                        depth, row->avg_ts, row->stddev_ts, mi.isa);
                        }
                    }
                    rotkv_seq_truncate(ctx, 0, depth);
                    continue;
                decode_failed:
                    fprintf(stderr, "rotkv bench: %s\n", err.msg);
                    rotkv_context_free(ctx);
                    goto done;
                }
                rotkv_context_free(ctx);
            }
    const double rss = peak_rss_bytes();
    if (!strcmp(fmt, "json")) {
        printf("[\n");
        for (int i = 0; i < n_rows; i++) {
            const bench_row *r = &rows[i];
            printf("  {\"build_commit\": \"%s\", \"model_filename\": \"%s\", \"model_type\": \"%s\", "
                   "\"model_size\": %llu, \"model_n_params\": %llu, \"n_batch\": %d, \"n_threads\": %d, "
                   "\"type_k\": \"%s\", \"type_v\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, "
                   "\"avg_ns\": %.0f, \"stddev_ns\": %.0f, \"avg_ts\": %.6f, \"stddev_ts\": %.6f, \"samples_ts\": [",
                   ROTKV_VERSION, model, mi.arch, (unsigned long long)mi.weight_bytes,
                   (unsigned long long)mi.n_params, n_batch, r->n_threads, r->type_k, r->type_v, r->n_prompt,
                   r->n_gen, r->n_depth, r->avg_ns, r->stddev_ns, r->avg_ts, r->stddev_ts);
            for (int s = 0; s < r->n_samples; s++) printf("%s%.6f", s ? ", " : "", r->samples_ts[s]);
            printf("], \"kv_bytes_per_token\": %.2f, \"kv_bytes_at_depth\": %llu, \"kv_allocated_bytes\": %.0f, "
                   "\"rss_kv_delta_bytes\": %.0f, \"peak_rss_bytes\": %.0f, \"cpu_isa\": \"%s\", "
                   "\"repacked_bytes\": %llu, \"bytes_per_token_read\": %.0f, \"achieved_gbps\": %.3f, "
                   "\"attention_share\": %.4f, \"matmul_share\": %.4f, \"kv_attention_gbps\": %.3f}%s\n",
                   r->kv_bytes_per_token, (unsigned long long)r->kv_bytes_at_depth, r->kv_allocated_bytes,
                   r->rss_kv_delta_bytes, rss, mi.isa, (unsigned long long)mi.repacked_bytes, bytes_read(&mi, r),
                   achieved_gbps(&mi, r), r->attn_share, r->matmul_share, r->kv_gbps, i + 1 < n_rows ? "," : "");
        }
        printf("]\n");
    } else if (!strcmp(fmt, "csv")) {
        printf("model_filename,model_size,n_threads,type_k,type_v,n_prompt,n_gen,n_depth,avg_ts,stddev_ts,kv_bytes_per_token,peak_rss_bytes\n");
        for (int i = 0; i < n_rows; i++) {
            const bench_row *r = &rows[i];
            printf("%s,%llu,%d,%s,%s,%d,%d,%d,%.6f,%.6f,%.2f,%.0f\n", model, (unsigned long long)mi.weight_bytes,
                   r->n_threads, r->type_k, r->type_v, r->n_prompt, r->n_gen, r->n_depth, r->avg_ts, r->stddev_ts,
                   r->kv_bytes_per_token, rss);
        }
    } else {
        printf("kernels: %s; GB/s = (weights + KV at depth) bytes read per generated token x t/s; attn / mm = share of\n"
               "the time in attention / weight matmuls; KV GB/s = cache bytes attended per second of attention\n\n", mi.isa);
        printf("| model | size | params | threads | type_k | type_v | KV B/token | test | t/s | GB/s | attn | mm | KV GB/s |\n");
        printf("| --- | ---: | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < n_rows; i++) {
            const bench_row *r = &rows[i];
            char test[64];
            snprintf(test, sizeof test, "%s%d%s", r->test, r->n_prompt + r->n_gen, "");
            if (r->n_depth) snprintf(test + strlen(test), sizeof test - strlen(test), " @ d%d", r->n_depth);
            char gbps[32] = "", kvg[32] = "";
            if (r->n_gen) snprintf(gbps, sizeof gbps, "%.1f", achieved_gbps(&mi, r));
            if (r->n_gen && r->n_depth) snprintf(kvg, sizeof kvg, "%.1f", r->kv_gbps);
            printf("| %s | %.2f MiB | %.2f M | %d | %s | %s | %.0f | %s | %.2f ± %.2f | %s | %.0f%% | %.0f%% | %s |\n",
                   mi.arch, mi.weight_bytes / 1048576.0, mi.n_params / 1e6, r->n_threads, r->type_k, r->type_v,
                   r->kv_bytes_per_token, test, r->avg_ts, r->stddev_ts, gbps, 100 * r->attn_share,
                   100 * r->matmul_share, kvg);
        }
        printf("\npeak RSS: %.1f MiB\n", rss / 1048576.0);
    }
    rc = 0;
done:
    free(rows);
    free(buf);
    free(lay_k);
    free(lay_v);
    rotkv_kv_calib_free(cal);
    rotkv_model_free(m);
    return rc;
}
