/* cli.h — shared option parsing and helpers for the rotkv subcommands. */
#ifndef ROTKV_CLI_H
#define ROTKV_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rotkv.h"

typedef struct {
    const char *model;
    const char *hf_repo;     /* -hf OWNER/NAME[:QUANT] (tools/hf_pull.h) */
    const char *prompt;      /* -p */
    const char *file;        /* -f */
    int n_predict;           /* -n */
    int n_ctx;               /* -c */
    int n_batch;             /* -b */
    int n_threads;           /* -t */
    int top_n;               /* -k (logits) */
    int n_chunks;            /* --chunks */
    const char *type_k, *type_v;
    int rot_k, rot_v;        /* rotkv_rot_mode */
    const char *kv_override; /* --kv-override "0,-1=q8_0" */
    uint64_t kv_budget;      /* --kv-budget bytes (0 = none) */
    bool context_shift;      /* --context-shift */
    int n_keep;              /* --keep */
    int kv_sink, kv_window;  /* --kv-sink, --kv-window */
    int kv_center;           /* --kv-center on|off|auto */
    const char *kv_calib;      /* --kv-calib FILE: the model's KV calibration (rotkv calibrate) */
    const char *kv_calib_text; /* --kv-calib-text FILE: fit kt* cache types on this text's first batch */
    bool no_kv_calib;          /* --no-kv-calib: ignore a calibration beside the model */
    double kv_bits;            /* --kv-bits B or -ctk autoB: allocate B bits/value over the layers */
    rotkv_kv_calib *calib;     /* loaded by cli_layer_overrides; cli_kv_release frees it */
    double kv_predicted_kld;   /* the allocation's summed sensitivity */
    rotkv_kv_type layer_k[1024], layer_v[1024];
    bool no_bos, parse_special, show_pieces;
    bool tok_lines;          /* tokenize --lines: each line on its own (llama-tok's format) */
    const char *kld_base;    /* --kl-divergence-base */
    bool kld;                /* --kl-divergence */
    rotkv_sampler_params sp;
    /* bench */
    const char *bench_p, *bench_n, *bench_d, *bench_o;
    int reps;
    /* serve / chat (docs/server.md) */
    const char *host;           /* --host (default 127.0.0.1) */
    int port;                   /* --port (default 8080; 0 = any free port) */
    int n_parallel;             /* -np, --parallel */
    const char *api_key;        /* --api-key */
    const char *slot_save_path; /* --slot-save-path */
    float timeout_s;            /* --timeout, per request */
    int queue_max;              /* --max-queue */
    int max_tokens_limit;       /* --max-tokens-limit */
    uint64_t max_body;          /* --max-body */
    int max_conn;               /* --max-connections */
    const char *chat_template;  /* --chat-template NAME */
    const char *alias;          /* --alias (model id) */
    const char *system_prompt;  /* --system (chat) */
    const char *render;         /* --render CONVERSATIONS.json (chat) */
    bool print_template;        /* --print-template (chat) */
} cli_opts;

/* Parses argv (after the subcommand). Returns false and prints a message on
 * an unknown flag or a missing/invalid value. */
bool cli_parse(int argc, char **argv, cli_opts *o);
/* Reads -p or -f into a malloc'd buffer; NULL with a message on error. */
char *cli_read_text(const cli_opts *o, size_t *len);
/* The model shipped in the repository's models/ (found beside the executable
 * or in ./models), or NULL. */
const char *cli_shipped_model(void);
/* run, chat and serve without -m: use the shipped model (and say so on stderr). */
bool cli_default_model(cli_opts *o);
/* Loads the model (-m, or -hf: downloaded into the cache if needed), printing
 * the error and returning NULL on failure. */
rotkv_model *cli_load_model(const cli_opts *o, bool vocab_only, double *load_ms);
/* The model file: -m, or after cli_load_model the cached file of -hf (NULL before). */
const char *cli_model_path(const cli_opts *o);
/* Parses a KV cache type name; -1 and a message if unknown. */
int cli_kv_type(const char *name);
/* Same, accepting the lab codecs too (kv-eval). */
int cli_kv_type_lab(const char *name);
/* The common start of a command that runs a model on a text: reads -p/-f,
 * checks the cache flags into cp and loads the model. Returns the exit code
 * to use on failure (2: bad arguments, 1: model error) or 0, with *text
 * (caller frees) and *m set. */
int cli_open_text_model(const cli_opts *o, char **text, size_t *len, rotkv_context_params *cp, rotkv_model **m,
                        double *load_ms);
/* Context parameters from the common flags (-c, -b, -t, -ctk/-ctv, --attn-rot);
 * false with a message if a cache type is unknown. */
bool cli_context_params(const cli_opts *o, rotkv_context_params *cp);
/* For a loaded model: loads its KV calibration (--kv-calib, else the file
 * beside the model unless --no-kv-calib), turns a bit budget (-ctk autoB,
 * --kv-bits B) into per-layer types, then applies --kv-override. */
bool cli_layer_overrides(cli_opts *o, const rotkv_model *m, rotkv_context_params *cp);
/* Frees what cli_layer_overrides loaded. */
void cli_kv_release(cli_opts *o);
/* The calibration file beside a model: MODEL without .gguf, plus .kvcal (malloc'd). */
char *cli_kv_calib_path(const char *model);
/* "autoB" -> B (true), else false. */
bool cli_kv_auto_bits(const char *type, double *bits);
/* Loads a calibration: the explicit path, else the one beside the model if it
 * exists (and none is false). *out = NULL when there is none; false with a
 * message when a file exists but cannot be used. */
bool cli_kv_calib_load(const char *explicit_path, bool none, const char *model_path, const rotkv_model *m,
                       rotkv_kv_calib **out);
/* With --kv-calib-text, runs the file's first tokens through sequence 0 (which
 * fits kt* cache types) and clears it again. */
bool cli_calibrate(const cli_opts *o, const rotkv_model *m, rotkv_context *ctx);
/* Prints the KV-cache configuration of ctx: bytes/token, bits/value at n_ctx,
 * and with --kv-budget the largest context that fits in it. */
void cli_report_kv(const cli_opts *o, rotkv_context *ctx, void *file);
/* Parses sizes like 2GiB, 512MiB, 1.5G, 1000000. */
bool cli_parse_bytes(const char *s, uint64_t *out);
/* Tokenizes the whole text (add_special per model unless --no-bos). */
rotkv_token *cli_tokenize(const rotkv_model *m, const char *text, size_t len, bool add_special, bool parse_special,
                          int32_t *n_out);
double cli_now_ms(void);

/* A progress line for long jobs: on a terminal, one line redrawn in place
 * ("rotkv: WHAT [=====>    ] 12/40 UNIT, 3.1 s, ETA 7 s"), at most every
 * 100 ms and only once the job has run 300 ms ($ROTKV_PROGRESS_DELAY_MS);
 * erased by cli_progress_end. Nothing at all when stderr is not a terminal. */
typedef struct {
    bool on, shown;
    double t0, last, delay_ms;
    char what[80];
} cli_progress;
void cli_progress_begin(cli_progress *p, const char *what);
void cli_progress_update(cli_progress *p, double done, double total, const char *unit);
void cli_progress_end(cli_progress *p);

int cmd_run(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_kv_eval(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_pull(int argc, char **argv); /* hf_pull.c */

#endif
