/* hash.h — 64-bit FNV-1a, the one non-cryptographic hash of the code base:
 * the tokenizer's lookup tables, the identity of a perplexity base file's
 * model and text, and the server's slot-file checksum and model fingerprint.
 * The values are stored in files, so the function must not change. */
#ifndef ROTKV_HASH_H
#define ROTKV_HASH_H

#include <stddef.h>
#include <stdint.h>

#define FNV1A_SEED 0xcbf29ce484222325ull

/* Continues hash h over n bytes at p (start with FNV1A_SEED). */
static inline uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *s = (const uint8_t *)p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif
