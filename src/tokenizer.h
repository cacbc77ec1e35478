/* tokenizer.h — tokenizers built from GGUF metadata (tokenizer.ggml.*):
 * "llama" (SentencePiece-style with scores and byte fallback) and "gpt2"
 * (byte-level BPE with merges and a pre-tokenizer regex chosen by
 * tokenizer.ggml.pre). Behaviour matches llama.cpp's tokenizer. */
#ifndef ROTKV_TOKENIZER_H
#define ROTKV_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct tokenizer tokenizer;

/* Builds the tokenizer from the file's metadata. The gguf_file must outlive it.
 * On error returns NULL with a message naming the key that was wrong. */
tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen);
/* The same with tokenizer.ggml.pre taken as pre_override (NULL: the file's): the tests run
 * one vocabulary through another pre-tokenizer, as a GGUF with that key would. */
tokenizer *tokenizer_load_pre(const gguf_file *f, const char *pre_override, char *err, size_t errlen);
void tokenizer_free(tokenizer *tok);

int32_t tokenizer_n_vocab(const tokenizer *tok);
int32_t tokenizer_bos(const tokenizer *tok); /* -1 if none */
int32_t tokenizer_eos(const tokenizer *tok); /* -1 if none */
int32_t tokenizer_unk(const tokenizer *tok); /* -1 if none */
bool tokenizer_add_bos(const tokenizer *tok);
bool tokenizer_add_eos(const tokenizer *tok);
bool tokenizer_is_eog(const tokenizer *tok, int32_t id);
bool tokenizer_is_control(const tokenizer *tok, int32_t id);
/* Raw vocabulary string of a token (as stored in the GGUF). */
gguf_str tokenizer_token_text(const tokenizer *tok, int32_t id);

/* Same contract as rotkv_tokenize (see rotkv.h). */
int32_t tokenizer_encode(const tokenizer *tok, const char *text, size_t len, int32_t *out,
                         int32_t n_max, bool add_special, bool parse_special);
/* Same contract as rotkv_token_to_piece. */
int32_t tokenizer_token_to_piece(const tokenizer *tok, int32_t id, char *buf, int32_t buflen);

/* Streaming detokenizer that only emits complete UTF-8 characters. */
typedef struct tokenizer_detok tokenizer_detok;
tokenizer_detok *tokenizer_detok_create(const tokenizer *tok);
const char *tokenizer_detok_push(tokenizer_detok *d, int32_t id);
const char *tokenizer_detok_flush(tokenizer_detok *d);
void tokenizer_detok_free(tokenizer_detok *d);

#endif
