/* hf_pull.h — GGUF models from the Hugging Face Hub: `rotkv pull` and -hf.
 *
 * A spec is OWNER/NAME[:QUANT|:FILE.gguf]. Files are cached under
 * $ROTKV_CACHE (else $XDG_CACHE_HOME/rotkv, else ~/.cache/rotkv) as
 * CACHE/OWNER/NAME/PATH, each with a sidecar PATH.json recording the verified
 * size and SHA-256, so a cached model is used without the network. The Hub is
 * $HF_ENDPOINT (default https://huggingface.co); $HF_TOKEN is sent as a bearer
 * token; $ROTKV_HTTP_TIMEOUT (seconds, default 30) bounds connecting and stalls. */
#ifndef ROTKV_HF_PULL_H
#define ROTKV_HF_PULL_H

/* The local path (malloc'd) of the model's verified GGUF in the cache —
 * downloading it, and every other part of a split model, if needed — or NULL
 * after printing "rotkv: error: ..." to stderr. For a split model it is the
 * first part. */
char *hf_resolve_model(const char *spec);

/* N when path names part k of a split model (NAME-0000k-of-0000N.gguf), else 0. */
int hf_split_count(const char *path);

/* rotkv pull OWNER/NAME[:QUANT|:FILE.gguf] | --list | --help */
int cmd_pull(int argc, char **argv);

#endif
