/* rotkv.h — the public API of rotkv, a local LLM inference engine with a
 * compressed KV cache.
 *
 * Conventions
 *  - Handles are opaque (rotkv_model, rotkv_context, rotkv_sampler).
 *  - Every call that can fail returns a rotkv_status and, when given a non-NULL
 *    rotkv_error, fills it with a message that names what was wrong and where.
 *  - Parameters come in structs made by *_default_params().
 *  - No global state: two models or contexts never share anything mutable.
 */
#ifndef ROTKV_H
#define ROTKV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ROTKV_VERSION_MAJOR 0
#define ROTKV_VERSION_MINOR 1
#define ROTKV_VERSION_PATCH 0
#define ROTKV_VERSION "0.1.0"

typedef enum {
    ROTKV_OK = 0,
    ROTKV_ERR_IO,           /* file cannot be opened/read/mapped */
    ROTKV_ERR_FORMAT,       /* malformed GGUF or metadata */
    ROTKV_ERR_UNSUPPORTED,  /* valid but unsupported architecture / type */
    ROTKV_ERR_OOM,          /* allocation failed */
    ROTKV_ERR_INVALID_ARG,  /* bad argument from the caller */
    ROTKV_ERR_CONTEXT_FULL, /* a sequence would exceed the context size */
    ROTKV_ERR_MISMATCH,     /* e.g. a saved file made for another model */
    ROTKV_ERR_KV_BUDGET     /* the KV cache budget (kv_budget_bytes) is used up */
} rotkv_status;

typedef struct {
    rotkv_status code;
    char msg[512];
} rotkv_error;

/* Short name of a status code ("ok", "format error", ...). */
const char *rotkv_status_str(rotkv_status s);

typedef int32_t rotkv_token;
typedef struct rotkv_model rotkv_model;
typedef struct rotkv_context rotkv_context;
typedef struct rotkv_sampler rotkv_sampler;

/* ------------------------------------------------------------------ model */

typedef struct {
    bool vocab_only; /* load only the tokenizer (vocab-only GGUFs work too) */
    /* Called during the load with the fraction done, 0 to 1 (the weights read
     * and repacked so far, by bytes), from the loading thread; NULL: none. */
    void (*progress)(double fraction, void *user);
    void *progress_user;
} rotkv_model_params;

rotkv_model_params rotkv_model_default_params(void);
rotkv_status rotkv_model_load(const char *path, const rotkv_model_params *params,
                              rotkv_model **out, rotkv_error *err);
void rotkv_model_free(rotkv_model *model);

typedef struct {
    char arch[32];
    uint32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv;
    uint32_t head_dim, n_ff;
    float rope_freq_base, norm_eps;
    uint64_t n_params;     /* number of weights */
    uint64_t weight_bytes; /* bytes of tensor data */
    uint64_t matmul_bytes; /* bytes of the matrices one token's forward pass reads (all but the embedding table) */
    uint64_t repacked_bytes; /* heap bytes of weights repacked at load for the kernels (0: none) */
    char isa[16];          /* kernel level in use: scalar, avx2, avxvnni, avx512 */
    char name[128];        /* general.name, may be empty */
    uint32_t n_expert;      /* mixture of experts: experts per layer (0: dense FFN) */
    uint32_t n_expert_used; /* experts each token is routed to */
    uint32_t n_ff_exp;      /* one expert's FFN width */
    uint32_t n_swa;         /* sliding window of the local layers (gemma2/3; 0: none) */
    uint32_t n_layer_swa;   /* how many layers attend over that window only */
} rotkv_model_info;

void rotkv_model_get_info(const rotkv_model *model, rotkv_model_info *info);
/* The CPU kernel level in use ("avx512", ...): the best this CPU has, capped
 * by the environment variable ROTKV_ISA=scalar|avx2|avxvnni|avx512. */
const char *rotkv_kernel_isa(void);
/* NULL, or why ROTKV_ISA was not understood (programs print it and stop). */
const char *rotkv_kernel_isa_error(void);
/* Writes a human-readable description (hyperparameters, tensor types and
 * sizes) to a caller-provided FILE* (passed as void* to keep stdio out of
 * this header). */
void rotkv_model_describe(const rotkv_model *model, void *file);

/* -------------------------------------------------------------- tokenizer */

int32_t rotkv_n_vocab(const rotkv_model *model);
rotkv_token rotkv_token_bos(const rotkv_model *model); /* -1 if none */
rotkv_token rotkv_token_eos(const rotkv_model *model); /* -1 if none */
bool rotkv_add_bos(const rotkv_model *model);
/* True for every end-of-generation token (eos, eot, <|eot_id|>, <|im_end|>, ...). */
bool rotkv_token_is_eog(const rotkv_model *model, rotkv_token t);

/* Tokenizes text (len bytes). Writes at most n_max ids to out and returns the
 * number of tokens; if n_max is too small, returns -(number needed). add_special
 * adds BOS/EOS as the model asks; parse_special turns special-token text into
 * the special token. */
int32_t rotkv_tokenize(const rotkv_model *model, const char *text, size_t len,
                       rotkv_token *out, int32_t n_max, bool add_special, bool parse_special);

/* The bytes of one token as it appears in text (control tokens give ""). Returns
 * the byte count written (never more than buflen), or -(bytes needed). */
int32_t rotkv_token_to_piece(const rotkv_model *model, rotkv_token t, char *buf, int32_t buflen);

/* Streaming detokenizer: feeds tokens one by one and hands out only complete
 * UTF-8 characters, so text is never split inside a multi-byte character. */
typedef struct rotkv_detok rotkv_detok;
rotkv_detok *rotkv_detok_create(const rotkv_model *model);
/* Returns a NUL-terminated string valid until the next call (may be ""). */
const char *rotkv_detok_push(rotkv_detok *d, rotkv_token t);
/* Returns whatever is still buffered (incomplete bytes replaced by U+FFFD). */
const char *rotkv_detok_flush(rotkv_detok *d);
void rotkv_detok_free(rotkv_detok *d);

/* ---------------------------------------------------------------- context */

/* KV cache storage types. The llama.cpp-compatible ones use GGUF's block
 * layouts; tq* are TurboQuant-style codebook codecs (see docs/kv-cache.md). */
typedef enum {
    ROTKV_KV_F32 = 0,
    ROTKV_KV_F16,
    ROTKV_KV_BF16,
    ROTKV_KV_Q8_0,
    ROTKV_KV_Q5_1,
    ROTKV_KV_Q5_0,
    ROTKV_KV_Q4_1,
    ROTKV_KV_Q4_0,
    ROTKV_KV_IQ4_NL,
    ROTKV_KV_TQ4,
    ROTKV_KV_TQ3_5,
    ROTKV_KV_TQ3,
    ROTKV_KV_TQ2_5,
    ROTKV_KV_TQ2,
    ROTKV_KV_CODEC_COUNT, /* the types above are fixed codecs; the kt* types below are fitted per
                             context from a calibration batch (docs/kv-cache.md) */
    ROTKV_KV_KT6 = ROTKV_KV_CODEC_COUNT,
    ROTKV_KV_KT5,
    ROTKV_KV_KT4,
    ROTKV_KV_KT3_5,
    ROTKV_KV_KT3,
    ROTKV_KV_KT2_5,
    ROTKV_KV_KT2,
    /* trellis-coded kt types: the same transforms and bits, the coordinates
     * coded with a bitshift trellis (docs/kv-codecs.md) */
    ROTKV_KV_KTT4,
    ROTKV_KV_KTT3_5,
    ROTKV_KV_KTT3,
    ROTKV_KV_KTT2_5,
    ROTKV_KV_KTT2,
    /* row-coded ktt types: all KV heads of one token row coded as one ktt vector
     * (one transform and scale per row, bits water-filled over the heads) when the
     * row holds at most 128 values; else exactly the ktt type (docs/kv-codecs.md) */
    ROTKV_KV_KTTR4,
    ROTKV_KV_KTTR3_5,
    ROTKV_KV_KTTR3,
    ROTKV_KV_KTTR2_5,
    ROTKV_KV_KTTR2,
    ROTKV_KV_KTTR5, /* the finer steps between them, for the allocation (-ctk autoB) */
    ROTKV_KV_KTTR4_5,
    ROTKV_KV_KTTR3_75,
    ROTKV_KV_KTTR3_25,
    ROTKV_KV_KTTR2_75,
    ROTKV_KV_TYPE_COUNT
} rotkv_kv_type;

/* Name of a KV type ("f16", "q4_0", "tq3", ...) and back; -1 if unknown or
 * not available in this build. */
const char *rotkv_kv_type_name(rotkv_kv_type t);
int rotkv_kv_type_from_name(const char *name);

/* attn-rot: rotate q/k (after RoPE) and v by an orthonormal Hadamard-based
 * matrix before caching. AUTO = on for quantized cache types, off for f32/f16/bf16. */
typedef enum { ROTKV_ROT_AUTO = -1, ROTKV_ROT_OFF = 0, ROTKV_ROT_ON = 1 } rotkv_rot_mode;

typedef struct {
    uint32_t n_ctx;     /* max tokens per sequence (0 = model's training context) */
    uint32_t n_seq_max; /* number of independent sequences */
    uint32_t n_batch;   /* max tokens per rotkv_decode call */
    int n_threads;      /* 0 = number of physical cores */
    rotkv_kv_type type_k, type_v;
    rotkv_rot_mode rot_k, rot_v; /* attn-rot on K and on V, independently */
    uint64_t rot_seed;           /* seed of the random sign diagonal */
    uint64_t kv_budget_bytes;    /* cap on KV cache memory over all sequences (0 = none) */
    /* per-layer cache types (n_layer entries each, copied at creation), or NULL
     * for type_k/type_v everywhere — e.g. first and last layers at q8_0 */
    const rotkv_kv_type *layer_types_k, *layer_types_v;
    uint32_t kv_sink;   /* first kv_sink positions of each sequence kept at f16 (attention sinks) */
    uint32_t kv_window; /* the kv_window most recent positions kept at f16, encoded when they age out */
    /* encode K and V relative to their mean over the first batch of each
     * sequence (exact: the mean is added back); AUTO = on for quantized types */
    rotkv_rot_mode kv_center;
    /* a calibration of this model (rotkv_kv_calib_load): kt* layers are fitted
     * from its moments instead of from the first batch; NULL = first batch.
     * It must outlive the context. */
    const struct rotkv_kv_calib *kv_calib;
} rotkv_context_params;

rotkv_context_params rotkv_context_default_params(void);
rotkv_status rotkv_context_create(rotkv_model *model, const rotkv_context_params *params,
                                  rotkv_context **out, rotkv_error *err);
void rotkv_context_free(rotkv_context *ctx);
uint32_t rotkv_n_ctx(const rotkv_context *ctx);
const rotkv_model *rotkv_context_model(const rotkv_context *ctx);
int rotkv_n_threads(const rotkv_context *ctx);
/* Bytes of KV cache per token of one sequence with this context's configuration. */
double rotkv_kv_bytes_per_token(const rotkv_context *ctx);

/* A batch of tokens. Tokens of one sequence must have consecutive positions
 * continuing that sequence (pos == current length, +1, ...). */
typedef struct {
    int32_t n_tokens;
    const rotkv_token *token;
    const int32_t *pos;    /* NULL: continue each sequence */
    const int32_t *seq_id; /* NULL: all sequence 0 */
    const int8_t *logits;  /* NULL: logits for the last token only */
} rotkv_batch;

rotkv_status rotkv_decode(rotkv_context *ctx, const rotkv_batch *batch, rotkv_error *err);
/* Logits (n_vocab floats) of the i-th batch token that requested logits in the
 * last rotkv_decode (i counts batch positions; NULL if none were computed there).
 * i = -1 gives the last one computed. */
const float *rotkv_get_logits(rotkv_context *ctx, int32_t i);

/* Where rotkv_decode's time goes, summed since the context was created or
 * last reset (docs/performance.md, rotkv bench). */
typedef struct {
    double t_decode_ms;     /* whole rotkv_decode calls */
    double t_attention_ms;  /* attention over the cache: scores, softmax, weighted sums of values */
    double t_matmul_ms;     /* products with the weight matrices, the output layer included */
    uint64_t kv_bytes_attended; /* cache bytes of the K and V rows each query token attended over (all
                                   layers); for one token at a time this is what attention read */
    uint64_t n_tokens;      /* tokens decoded */
} rotkv_perf;
void rotkv_perf_get(const rotkv_context *ctx, rotkv_perf *perf);
void rotkv_perf_reset(rotkv_context *ctx);

/* KV memory is allocated in blocks of tokens_per_block tokens (all layers)
 * as sequences grow, and returned when they shrink. */
typedef struct {
    uint32_t tokens_per_block;
    uint64_t bytes_per_block;
    uint64_t blocks_used;
    uint64_t blocks_budget; /* 0 = unlimited */
    double bytes_per_token;  /* codec part, per token of one sequence */
    uint64_t f16_side_bytes; /* fixed f16 sink + window rows per sequence */
    /* sliding-window layers (gemma2/3) keep a ring of their last swa_ring_tokens
     * positions: their bytes per token stop growing there */
    double bytes_per_token_global, bytes_per_token_swa; /* the global layers', the sliding-window layers' */
    uint32_t n_layer_swa, swa_window, swa_ring_tokens;
} rotkv_kv_stats;
/* Bytes one sequence of n_tokens tokens holds in the cache: every global
 * layer's rows, each sliding-window layer's ring (at most), the f16 rows. */
uint64_t rotkv_kv_bytes_at(const rotkv_context *ctx, uint32_t n_tokens);
/* Average bits per cached K or V value of one sequence holding n_tokens tokens,
 * every scale, norm and f16 sink/window row counted. */
double rotkv_kv_bits_per_value(const rotkv_context *ctx, uint32_t n_tokens);
void rotkv_kv_get_stats(const rotkv_context *ctx, rotkv_kv_stats *st);
/* Blocks a sequence of n_tokens tokens occupies. */
uint64_t rotkv_kv_blocks_for_tokens(const rotkv_context *ctx, uint32_t n_tokens);

int32_t rotkv_seq_len(const rotkv_context *ctx, int32_t seq);
/* Makes sequence dst a copy of the first n_tokens tokens of sequence src
 * (prefix reuse). dst's previous contents are dropped. */
rotkv_status rotkv_seq_copy(rotkv_context *ctx, int32_t src, int32_t dst, int32_t n_tokens, rotkv_error *err);
/* Drops every cached token of the sequence from position n_keep on. With
 * sliding-window layers whose ring no longer holds the window before n_keep
 * the whole sequence is dropped instead (check rotkv_seq_len). */
void rotkv_seq_truncate(rotkv_context *ctx, int32_t seq, int32_t n_keep);
/* False when rotkv_seq_truncate(seq, n_keep) would have to drop the whole
 * sequence (or copying its first n_keep tokens would fail) for that reason. */
bool rotkv_seq_can_truncate(const rotkv_context *ctx, int32_t seq, int32_t n_keep);
void rotkv_seq_clear(rotkv_context *ctx, int32_t seq);
/* Context shift: drops tokens [n_keep, n_keep + n_discard) of a sequence and
 * moves the later ones down by n_discard positions (their cached keys are
 * decoded, re-rotated by RoPE to the new positions and re-encoded). */
rotkv_status rotkv_seq_shift(rotkv_context *ctx, int32_t seq, int32_t n_keep, int32_t n_discard, rotkv_error *err);

/* ---------------------------------------------------------------- KV calibration
 *
 * A model's KV calibration (docs/kv-quality.md) holds, per layer and KV head,
 * the moments the kt* transforms are fitted from, and per layer, side (K or V)
 * and candidate type the KL divergence that layer alone adds in that type. It
 * is made once per model (`rotkv calibrate`), saved to a versioned, checksummed
 * file tied to the model, and turns a bit budget into per-layer cache types. */
typedef struct rotkv_kv_calib rotkv_kv_calib;

/* An empty calibration for the model; n_ctx is the context its RoPE
 * augmentation spans (0 = the model's training context). */
rotkv_status rotkv_kv_calib_create(const rotkv_model *model, uint32_t n_ctx, rotkv_kv_calib **out, rotkv_error *err);
/* While attached, every rotkv_decode on ctx adds its keys, queries and values
 * to the calibration's moments. ctx's cache must be f32/f16/bf16 with attn-rot
 * off in every layer, and its model the calibration's. NULL detaches. */
rotkv_status rotkv_kv_calib_attach(rotkv_context *ctx, rotkv_kv_calib *cal, rotkv_error *err);
/* Turns the collected sums into moments; text_hash identifies the text (stored). */
rotkv_status rotkv_kv_calib_finish(rotkv_kv_calib *cal, uint64_t text_hash, rotkv_error *err);
/* Records the mean KLD added by storing layer's K (side 0) or V (side 1) alone in type t. */
rotkv_status rotkv_kv_calib_set_sensitivity(rotkv_kv_calib *cal, rotkv_kv_type t, uint32_t layer, int side, double kld,
                                            rotkv_error *err);
/* Writes to a temporary file beside path, flushes it and renames it into place. */
rotkv_status rotkv_kv_calib_save(const rotkv_kv_calib *cal, const char *path, rotkv_error *err);
/* Reads a calibration file; ROTKV_ERR_FORMAT if it is not one, truncated or
 * corrupt, ROTKV_ERR_MISMATCH if it was made for another model. */
rotkv_status rotkv_kv_calib_load(const rotkv_model *model, const char *path, rotkv_kv_calib **out, rotkv_error *err);
void rotkv_kv_calib_free(rotkv_kv_calib *cal);
/* Tokens the calibration saw, and whether it has a sensitivity table. */
uint32_t rotkv_kv_calib_n_tokens(const rotkv_kv_calib *cal);
bool rotkv_kv_calib_has_sensitivity(const rotkv_kv_calib *cal);
/* Bits per cached value of type t in this model's cache (every scale and norm
 * counted); < 0 if the type cannot hold this model's rows. */
double rotkv_kv_type_bits(const rotkv_model *model, rotkv_kv_type t);
/* The per-layer types (n_layer each) among the measured ones (and f16) whose
 * average bits/value is at most bits and whose summed sensitivity is smallest;
 * *predicted_kld gets that sum. ROTKV_ERR_INVALID_ARG if the budget is below
 * the cheapest measured type. */
rotkv_status rotkv_kv_calib_allocate(const rotkv_kv_calib *cal, const rotkv_model *model, double bits,
                                     rotkv_kv_type *types_k, rotkv_kv_type *types_v, double *predicted_kld,
                                     rotkv_error *err);

/* ---------------------------------------------------------------- sampler */

typedef struct {
    float temp;           /* <= 0: greedy */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int32_t repeat_last_n;
    uint64_t seed;
} rotkv_sampler_params;

rotkv_sampler_params rotkv_sampler_default_params(void);
rotkv_sampler *rotkv_sampler_create(const rotkv_sampler_params *params, int32_t n_vocab);
rotkv_token rotkv_sampler_sample(rotkv_sampler *s, const float *logits);
/* Records a token in the penalty history (prompt tokens and sampled tokens). */
void rotkv_sampler_accept(rotkv_sampler *s, rotkv_token t);
void rotkv_sampler_free(rotkv_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
