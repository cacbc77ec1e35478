/* attention.h — causal multi-head attention (with GQA) straight from the
 * encoded KV cache, by online softmax: memory does not grow with context. */
#ifndef ROTKV_ATTENTION_H
#define ROTKV_ATTENTION_H

#include <stdint.h>

#include "kv_cache.h"
#include "threadpool.h"

typedef struct {
    const kv_cache *kv;
    uint32_t layer;
    int n_tok;           /* queries in the batch */
    const int32_t *seq;  /* (n_tok,) sequence of each query */
    const int32_t *pos;  /* (n_tok,) position of each query; it attends to [0, pos] (with a window:
                            [max(pos - window + 1, the oldest position the layer's ring holds), pos]) */
    int n_head, n_head_kv, head_dim;
    float scale;         /* 1/sqrt(head_dim) */
    const float *Q;      /* (n_tok, n_head * head_dim) */
    float *O;            /* (n_tok, n_head * head_dim) */
    float *scratch;      /* nth * attention_scratch_floats(...) */
    int n_split;         /* splits of each query's positions (flash-decoding): 0 = chosen from the
                            work and the threads (one when there are enough (token, KV head) items
                            to keep every thread busy), else exactly this many (tests) */
    int32_t window;      /* sliding window (gemma2/3 local layers): keys pos - window + 1 .. pos; 0 = none */
    float softcap;       /* > 0: scores s become softcap * tanh(s / softcap) (gemma2), before the mask */
    const float *sinks;  /* (n_head,) learned attention-sink logits (gpt-oss), or NULL: each query head's
                            softmax also counts exp(sink) in its denominator, a position with no value */
} attention_args;

/* Scratch floats one thread needs. When a long cache has fewer (token, KV
 * head) items than the pool has threads, each item's positions are split in
 * runs of whole blocks over the threads; every split keeps its own running
 * max, sum and weighted values, merged exactly once all are done. */
size_t attention_scratch_floats(int n_head, int n_head_kv, int head_dim);

void attention_batch(threadpool *tp, attention_args *a);

/* Obviously-correct reference for tests: decodes each row, two-pass softmax. */
void attention_reference(const attention_args *a);

#endif
