/* fuzz_common.h — helpers shared by the libFuzzer targets in fuzz/ (each
 * target is one translation unit and includes this once). */
#ifndef ROTKV_FUZZ_COMMON_H
#define ROTKV_FUZZ_COMMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rotkv.h"

/* A failed check is a crash: libFuzzer saves the input. */
#define CHECK(cond)                                                                                  \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            fprintf(stderr, "%s: check failed: %s (line %d)\n", __FILE__, #cond, __LINE__);          \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)

/* An exactly sized heap copy of the input (so ASan flags any read past its
 * end), NUL-terminated only when nul is set. */
static inline char *fuzz_copy(const uint8_t *data, size_t size, bool nul) {
    const size_t n = size + (nul ? 1 : 0);
    char *p = malloc(n ? n : 1);
    if (!p) abort();
    if (size) memcpy(p, data, size);
    if (nul) p[size] = 0;
    return p;
}

/* The model a target needs: $env, else def (relative to the working
 * directory, normally the repository root). Exits with a message when it
 * cannot be loaded, so a run without ../shared fails loudly rather than
 * fuzzing nothing (fuzz/check.sh skips such targets before starting them). */
static inline rotkv_model *fuzz_load_model(const char *env, const char *def, bool vocab_only) {
    const char *path = getenv(env);
    if (!path || !*path) path = def;
    rotkv_model_params mp = rotkv_model_default_params();
    mp.vocab_only = vocab_only;
    rotkv_model *m = NULL;
    rotkv_error err = {0};
    if (rotkv_model_load(path, &mp, &m, &err) != ROTKV_OK) {
        fprintf(stderr, "fuzz: cannot load %s (set %s): %s\n", path, env, err.msg);
        exit(2);
    }
    return m;
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static inline bool fuzz_utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) { i++; continue; }
        if (b >= 0xc0 && b < 0xe0) { len = 2; cp = b & 0x1f; }
        else if (b >= 0xe0 && b < 0xf0) { len = 3; cp = b & 0x0f; }
        else if (b >= 0xf0 && b < 0xf8) { len = 4; cp = b & 0x07; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += len;
    }
    return true;
}

#endif
