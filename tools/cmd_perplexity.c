/* cmd_perplexity.c — `rotkv perplexity`: perplexity by llama-perplexity's
 * method, and KL divergence against saved reference distributions.
 *
 * Method (same as llama-perplexity, so numbers are comparable): the text is
 * tokenized once (BOS added when the model adds one) and cut into chunks of
 * n_ctx tokens; each chunk is evaluated from an empty cache with its first
 * token replaced by BOS (when the model adds one); the tokens of the second
 * half of each chunk are scored: for j in [n_ctx/2, n_ctx-2], the negative
 * log-likelihood of token j+1 given tokens 0..j.
 *
 * KL-divergence base file (--kl-divergence-base FILE without --kl-divergence
 * writes it; with --kl-divergence it is read and compared against):
 *   header (64 bytes, little-endian):
 *     char magic[8] = "RKVKLD1\0"; u32 n_vocab; u32 n_ctx; u32 n_chunks;
 *     u32 n_scored_per_chunk; u64 model_id; u64 text_id; u8 reserved[24]
 *   then for every scored token, in order: f32 lo; u16 q[n_vocab]
 *   where the log-probability of token i is lo * (1 - q[i] / 65535):
 *   log-softmax values are clamped at lo = max(min log p, -LP_FLOOR) and
 *   quantized uniformly on [lo, 0], step |lo|/65535 (<= 7.6e-4 nats).
 *   Size: 64 + n_scored * (4 + 2 * n_vocab) bytes (e.g. 2048-token vocab:
 *   4 KiB per scored token).
 * model_id hashes the architecture, hyperparameters and vocabulary (so every
 * quantization of one model shares it, another model does not); text_id
 * hashes the token ids and n_ctx. A mismatch is refused.
 * Both the base and the new distributions pass through the same u16 codec
 * before comparison, so a run compared with its own base gives exactly 0. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_file.h"
#include "cli.h"
#include "hash.h"

#define LP_FLOOR 50.0f
#define KLD_MAGIC "RKVKLD1"

typedef struct {
    char magic[8];
    uint32_t n_vocab, n_ctx, n_chunks, n_scored;
    uint64_t model_id, text_id;
    uint8_t reserved[24];
} kld_header;
_Static_assert(sizeof(kld_header) == 64, "kld header is 64 bytes");

static uint64_t model_identity(const rotkv_model *m) {
    rotkv_model_info mi;
    rotkv_model_get_info(m, &mi);
    uint64_t h = FNV1A_SEED;
    h = fnv1a(h, mi.arch, strlen(mi.arch));
    const uint32_t dims[] = {mi.n_vocab, mi.n_embd, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, mi.n_ff};
    h = fnv1a(h, dims, sizeof dims);
    char piece[512];
    for (int32_t t = 0; t < (int32_t)mi.n_vocab; t++) {
        int32_t k = rotkv_token_to_piece(m, t, piece, sizeof piece);
        if (k > 0) h = fnv1a(h, piece, (size_t)k);
        h = fnv1a(h, &t, sizeof t);
    }
    return h;
}

static double logsumexp_f(const float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return mx + log(s);
}

/* log-softmax of logits quantized to (lo, q[]) and back into lp[] */
static void lp_encode(const float *logits, int V, float *lo_out, uint16_t *q) {
    const double lse = logsumexp_f(logits, V);
    double mn = 0.0;
    for (int i = 0; i < V; i++) mn = logits[i] - lse < mn ? logits[i] - lse : mn;
    float lo = (float)(mn < -LP_FLOOR ? -LP_FLOOR : mn);
    if (lo > -1e-6f) lo = -1e-6f;
    for (int i = 0; i < V; i++) {
        double lp = logits[i] - lse;
        if (lp < lo) lp = lo;
        double v = (1.0 - lp / lo) * 65535.0;
        q[i] = (uint16_t)(v < 0 ? 0 : v > 65535 ? 65535 : lrint(v));
    }
    *lo_out = lo;
}

/* Decodes and renormalizes (so the quantization error enters the KLD only at
 * second order, not as a first-order bias). */
static void lp_decode(float lo, const uint16_t *q, int V, double *lp) {
    double mx = -INFINITY, s = 0.0;
    for (int i = 0; i < V; i++) {
        lp[i] = lo * (1.0 - q[i] / 65535.0);
        mx = lp[i] > mx ? lp[i] : mx;
    }
    for (int i = 0; i < V; i++) s += exp(lp[i] - mx);
    const double lse = mx + log(s);
    for (int i = 0; i < V; i++) lp[i] -= lse;
}

typedef struct {
    long n;
    double nll_new, nll2_new, nll_base, nll2_base, cross; /* sums */
    double kld, kld2, dp, dp2, dp4;
    long same_top;
    double *klds; /* per token, for percentiles */
    long klds_cap;
} kld_stats;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const double *sorted, long n, double p) {
    if (n == 0) return 0;
    double idx = p * (n - 1);
    long i = (long)idx;
    double f = idx - i;
    return i + 1 < n ? sorted[i] * (1 - f) + sorted[i + 1] * f : sorted[i];
}

static void print_kld_stats(kld_stats *S) {
    const double n = (double)S->n;
    if (S->n < 2) {
        printf("too few scored tokens for statistics\n");
        return;
    }
    const double mn = S->nll_new / n, mb = S->nll_base / n;
    const double vn = S->nll2_new / n - mn * mn, vb = S->nll2_base / n - mb * mb;
    const double cov = S->cross / n - mn * mb;
    const double ppl_n = exp(mn), ppl_b = exp(mb);
    const double dlog = mn - mb, vd = vn + vb - 2 * cov;
    const double e_dlog = sqrt(vd > 0 ? vd / (n - 1) : 0);
    printf("\n====== Perplexity statistics ======\n");
    printf("Mean PPL(Q)                   : %10.6f ± %10.6f\n", ppl_n, ppl_n * sqrt(vn / (n - 1)));
    printf("Mean PPL(base)                : %10.6f ± %10.6f\n", ppl_b, ppl_b * sqrt(vb / (n - 1)));
    printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", vn > 0 && vb > 0 ? 100.0 * cov / sqrt(vn * vb) : 100.0);
    printf("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", dlog, e_dlog);
    printf("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", exp(dlog), exp(dlog) * e_dlog);
    const double vdiff = ppl_n * ppl_n * vn + ppl_b * ppl_b * vb - 2 * ppl_n * ppl_b * cov;
    printf("Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", ppl_n - ppl_b, sqrt(vdiff > 0 ? vdiff / (n - 1) : 0));
    const double mk = S->kld / n, vk = S->kld2 / n - mk * mk;
    qsort(S->klds, (size_t)S->n, sizeof(double), cmp_double);
    printf("\n====== KL divergence statistics ======\n");
    printf("Mean    KLD: %13.10f ± %13.10f\n", mk, sqrt(vk > 0 ? vk / (n - 1) : 0));
    printf("Maximum KLD: %13.10f\n", S->klds[S->n - 1]);
    const double ps[] = {0.999, 0.99, 0.95, 0.90, 0.50, 0.10, 0.05, 0.01};
    const char *names[] = {"99.9%", "99.0%", "95.0%", "90.0%", "Median", "10.0%", " 5.0%", " 1.0%"};
    for (int i = 0; i < 8; i++) printf("%-7s KLD: %13.10f\n", names[i], percentile(S->klds, S->n, ps[i]));
    printf("Minimum KLD: %13.10f\n", S->klds[0]);
    const double mdp = S->dp / n, vdp = S->dp2 / n - mdp * mdp;
    const double same = S->same_top / n;
    printf("\n====== Token probability statistics ======\n");
    printf("Mean    Δp: %8.4f ± %.4f %%\n", 100 * mdp, 100 * sqrt(vdp > 0 ? vdp / (n - 1) : 0));
    /* RMS = sqrt(mean dp²); its error from the spread of dp² (delta method) */
    const double ms = S->dp2 / n, vms = S->dp4 / n - ms * ms, rms = sqrt(ms);
    printf("RMS Δp    : %8.4f ± %.4f %%\n", 100 * rms, rms > 0 ? 100 * sqrt(vms > 0 ? vms / (n - 1) : 0) / (2 * rms) : 0.0);
    printf("Same top p: %8.4f ± %.4f %%\n", 100 * same, 100 * sqrt(same * (1 - same) / (n - 1)));
}


int cmd_perplexity(int argc, char **argv) {
    cli_opts o;
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        printf("usage: rotkv perplexity -m MODEL -f TEXT [-c CTX] [-b BATCH] [--chunks N] [-t N] [-ctk T] [-ctv T]\n"
               "       [--kl-divergence-base FILE [--kl-divergence]]\n"
               "  -c CTX                    tokens per chunk (default 512); the second half of each chunk is scored\n"
               "  --kl-divergence-base FILE without --kl-divergence: save this run's distributions to FILE\n"
               "  --kl-divergence           compare this run against FILE (KLD, PPL ratio, top-1 agreement)\n");
        return 0;
    }
    if (!cli_parse(argc, argv, &o)) return 2;
    if (o.kld && !o.kld_base) {
        fprintf(stderr, "rotkv: --kl-divergence needs --kl-divergence-base FILE\n");
        return 2;
    }
    const int n_ctx = o.n_ctx > 0 ? o.n_ctx : 512;
    if (n_ctx < 8) {
        fprintf(stderr, "rotkv: -c must be at least 8\n");
        return 2;
    }
    size_t len;
    char *text;
    rotkv_context_params cp;
    rotkv_model *m;
    const int open_rc = cli_open_text_model(&o, &text, &len, &cp, &m, NULL);
    if (open_rc) return open_rc;
    int rc = 1;
    FILE *kf = NULL;
    atomic_file kw = {0}; /* the base file being written: replaced only when complete */
    rotkv_context *ctx = NULL;
    int8_t *want = NULL;
    uint16_t *q = NULL, *bq = NULL;
    double *lp_b = NULL, *lp_n = NULL;
    kld_stats S = {0};
    int32_t n_tok = 0;
    rotkv_token *toks = cli_tokenize(m, text, len, true, false, &n_tok);
    if (!toks) goto done;
    const int V = rotkv_n_vocab(m);
    int n_chunks = n_tok / n_ctx;
    if (o.n_chunks > 0 && o.n_chunks < n_chunks) n_chunks = o.n_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "rotkv: the text has %d tokens, fewer than one chunk of -c %d (need at least %d)\n", n_tok,
                n_ctx, n_ctx);
        goto done;
    }
    const int first = n_ctx / 2, n_scored = n_ctx - 1 - first;
    kld_header H = {KLD_MAGIC, (uint32_t)V, (uint32_t)n_ctx, (uint32_t)n_chunks, (uint32_t)n_scored, 0, 0, {0}};
    H.model_id = model_identity(m);
    H.text_id = fnv1a(fnv1a(FNV1A_SEED, toks, sizeof(rotkv_token) * (size_t)n_chunks * n_ctx), &n_ctx,
                      sizeof n_ctx);
    if (o.kld_base) {
        if (o.kld) kf = fopen(o.kld_base, "rb");
        else if (atomic_file_open(&kw, o.kld_base)) kf = kw.fp;
        if (!kf) {
            fprintf(stderr, "rotkv: cannot open '%s' for %s\n", o.kld_base, o.kld ? "reading" : "writing");
            goto done;
        }
        if (o.kld) {
            kld_header B;
            if (fread(&B, sizeof B, 1, kf) != 1 || memcmp(B.magic, KLD_MAGIC, 8) != 0) {
                fprintf(stderr, "rotkv: '%s' is not a rotkv KL-divergence base file\n", o.kld_base);
                goto done;
            }
            if (B.model_id != H.model_id || B.n_vocab != H.n_vocab) {
                fprintf(stderr, "rotkv: '%s' was made with another model (vocab %u, model id %016llx; this model: vocab %u, id %016llx)\n",
                        o.kld_base, B.n_vocab, (unsigned long long)B.model_id, H.n_vocab,
                        (unsigned long long)H.model_id);
                goto done;
            }
            if (B.text_id != H.text_id || B.n_ctx != H.n_ctx || B.n_scored != H.n_scored) {
                fprintf(stderr, "rotkv: '%s' was made from another text or context size (its -c %u, %u chunks)\n",
                        o.kld_base, B.n_ctx, B.n_chunks);
                goto done;
            }
            if (B.n_chunks < (uint32_t)n_chunks) n_chunks = (int)B.n_chunks;
        } else if (fwrite(&H, sizeof H, 1, kf) != 1) {
            fprintf(stderr, "rotkv: cannot write '%s'\n", o.kld_base);
            goto done;
        }
    }
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)(o.n_batch < n_ctx ? o.n_batch : n_ctx);
    rotkv_error err = {0};
    if (!cli_layer_overrides(&o, m, &cp)) goto done;
    if (rotkv_context_create(m, &cp, &ctx, &err) != ROTKV_OK) {
        fprintf(stderr, "rotkv: error: %s\n", err.msg);
        goto done;
    }
    if (!cli_calibrate(&o, m, ctx)) goto done;
    want = malloc((size_t)n_ctx);
    q = malloc(sizeof(uint16_t) * (size_t)V);
    bq = malloc(sizeof(uint16_t) * (size_t)V);
    lp_b = malloc(sizeof(double) * (size_t)V);
    lp_n = malloc(sizeof(double) * (size_t)V);
    S.klds = malloc(sizeof(double) * (size_t)n_chunks * n_scored);
    if (!want || !q || !bq || !lp_b || !lp_n || !S.klds) {
        fprintf(stderr, "rotkv: out of memory\n");
        goto done;
    }
    const rotkv_token bos = rotkv_token_bos(m);
    const bool add_bos = rotkv_add_bos(m) && bos >= 0;
    fprintf(stderr, "rotkv: perplexity over %d chunks of %d tokens (%d tokens in the text), KV %s/%s\n", n_chunks,
            n_ctx, n_tok, o.type_k, o.type_v);
    double nll = 0, nll2 = 0;
    long count = 0;
    /* progress on stderr; when stdout is the same terminal the running
     * [chunk]PPL values there are the progress */
    cli_progress prog;
    cli_progress_begin(&prog, "perplexity");
    prog.on = prog.on && !isatty(1);
    for (int c = 0; c < n_chunks; c++) {
        rotkv_token *chunk = toks + (size_t)c * n_ctx;
        const rotkv_token saved = chunk[0];
        if (add_bos) chunk[0] = bos;
        for (int j = 0; j < n_ctx; j++) want[j] = j >= first && j < n_ctx - 1;
        rotkv_seq_clear(ctx, 0);
        rotkv_batch b = {.n_tokens = n_ctx, .token = chunk, .logits = want};
        rotkv_status st = rotkv_decode(ctx, &b, &err);
        chunk[0] = saved;
        if (st != ROTKV_OK) {
            fprintf(stderr, "\nrotkv: error: %s\n", err.msg);
            goto done;
        }
        for (int j = first; j < n_ctx - 1; j++) {
            const float *lg = rotkv_get_logits(ctx, j);
            const rotkv_token target = chunk[j + 1];
            const double l = logsumexp_f(lg, V) - lg[target];
            nll += l;
            nll2 += l * l;
            count++;
            if (!kf) continue;
            float lo;
            lp_encode(lg, V, &lo, q);
            if (!o.kld) {
                if (fwrite(&lo, sizeof lo, 1, kf) != 1 || fwrite(q, sizeof(uint16_t), (size_t)V, kf) != (size_t)V) {
                    fprintf(stderr, "\nrotkv: error writing '%s'\n", o.kld_base);
                    goto done;
                }
                continue;
            }
            float blo;
            if (fread(&blo, sizeof blo, 1, kf) != 1 || fread(bq, sizeof(uint16_t), (size_t)V, kf) != (size_t)V) {
                fprintf(stderr, "\nrotkv: '%s' is truncated\n", o.kld_base);
                goto done;
            }
            lp_decode(lo, q, V, lp_n);
            lp_decode(blo, bq, V, lp_b);
            double kl = 0.0;
            int top_b = 0, top_n = 0;
            for (int i = 0; i < V; i++) {
                const double pb = exp(lp_b[i]);
                kl += pb * (lp_b[i] - lp_n[i]);
                if (lp_b[i] > lp_b[top_b]) top_b = i;
                if (lp_n[i] > lp_n[top_n]) top_n = i;
            }
            if (kl < 0) kl = 0; /* rounding: KL is non-negative */
            const double nb = -lp_b[target], nn = -lp_n[target];
            S.nll_new += nn;
            S.nll2_new += nn * nn;
            S.nll_base += nb;
            S.nll2_base += nb * nb;
            S.cross += nn * nb;
            S.kld += kl;
            S.kld2 += kl * kl;
            const double dp = exp(-nn) - exp(-nb);
            S.dp += dp;
            S.dp2 += dp * dp;
            S.dp4 += dp * dp * dp * dp;
            S.same_top += top_b == top_n;
            S.klds[S.n++] = kl;
        }
        printf("[%d]%.4f%s", c + 1, exp(nll / count), c + 1 < n_chunks ? "," : "\n");
        fflush(stdout);
        cli_progress_update(&prog, c + 1, n_chunks, "chunks");
    }
    cli_progress_end(&prog);
    printf("KV bits/value : %.4f (K and V averaged at %d tokens; every scale, norm and f16 row counted)\n",
           rotkv_kv_bits_per_value(ctx, (uint32_t)n_ctx), n_ctx);
    const double mean = nll / count, var = nll2 / count - mean * mean;
    const double ppl = exp(mean);
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, var > 0 && count > 1 ? ppl * sqrt(var / (count - 1)) : 0.0);
    if (kf && !o.kld)
        fprintf(stderr, "rotkv: saved %ld distributions to '%s' (%.1f MiB)\n", count, o.kld_base,
                (sizeof(kld_header) + (double)count * (4 + 2.0 * V)) / 1048576.0);
    if (o.kld) print_kld_stats(&S);
    rc = 0;
done:
    if (kf && !o.kld) {
        if (rc == 0 && !atomic_file_commit(&kw, true)) {
            fprintf(stderr, "rotkv: cannot write '%s': %s\n", o.kld_base, strerror(errno));
            rc = 1;
        } else if (rc != 0) {
            atomic_file_abort(&kw);
        }
    } else if (kf && fclose(kf) != 0 && rc == 0) {
        fprintf(stderr, "rotkv: error closing '%s'\n", o.kld_base);
        rc = 1;
    }
    free(S.klds);
    free(lp_b);
    free(lp_n);
    free(q);
    free(bq);
    free(want);
    rotkv_context_free(ctx);
    free(toks);
    free(text);
    cli_kv_release(&o);
    rotkv_model_free(m);
    return rc;
}
