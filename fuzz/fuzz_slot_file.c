/* fuzz_slot_file.c — libFuzzer target for the server's saved-slot files: the
 * restore path's check of the file's bytes (srv_slot_parse in
 * tools/server_engine.c).
 *
 * Input: the file. It is checked three times: against a fixed engine (model
 * fingerprint FUZZ_FP, KV format "k=f16 v=f16", 512 positions, 2048 tokens in
 * the vocabulary), so the header checks see arbitrary values; against an
 * engine that matches whatever the header says, with the checksum recomputed,
 * so the token checks are reached too; and as a file that could not be read to
 * its end, which must fail.
 *
 * Checks: success only for a file of exactly header + 4 * n + 8 bytes with
 * 1 <= n <= n_ctx tokens, each in [0, n_vocab), returned intact; a failure
 * always has a message and returns no tokens. */
#include "fuzz_common.h"
#include "hash.h"
#include "server.h"

#define FUZZ_FP 0x0123456789abcdefull
#define HEADER 216 /* magic 8, version 4, n_tokens 4, model_fp 8, kv_format 64, model_name 128 */
#define N_CTX 512
#define N_VOCAB 2048

static void check(const uint8_t *buf, size_t avail, size_t size, const srv_slot_expect *x) {
    rotkv_token *toks = (rotkv_token *)&toks;
    int32_t n = -1;
    char err[384] = "";
    const bool ok = srv_slot_parse(buf, avail, size, x, "fuzz.slot", &toks, &n, err, sizeof err);
    if (!ok) {
        CHECK(err[0] && !toks && n == 0);
        return;
    }
    CHECK(avail == size && n >= 1 && (uint32_t)n <= x->n_ctx && size == HEADER + 4 * (size_t)n + 8);
    CHECK(!memcmp(toks, buf + HEADER, 4 * (size_t)n));
    for (int32_t i = 0; i < n; i++) CHECK(toks[i] >= 0 && toks[i] < x->n_vocab);
    free(toks);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_copy(data, size, false);
    const srv_slot_expect fixed = {FUZZ_FP, "k=f16 v=f16", N_CTX, N_VOCAB};
    check(buf, size, size, &fixed);
    if (size >= HEADER) {
        srv_slot_expect same = fixed;
        char kv_format[65];
        memcpy(&same.model_fp, buf + 16, 8);
        memcpy(kv_format, buf + 24, 64);
        kv_format[64] = 0;
        same.kv_format = kv_format;
        uint32_t n;
        memcpy(&n, buf + 12, 4);
        if (size >= HEADER + 8 && (size - HEADER - 8) / 4 == n && (size - HEADER - 8) % 4 == 0) {
            const uint64_t sum = fnv1a(fnv1a(FNV1A_SEED, buf, HEADER), buf + HEADER, 4 * (size_t)n);
            memcpy(buf + size - 8, &sum, 8);
        }
        check(buf, size, size, &same);
        rotkv_token *toks;
        int32_t k;
        char err[384];
        CHECK(!srv_slot_parse(buf, size - 1, size, &same, "fuzz.slot", &toks, &k, err, sizeof err));
    }
    free(buf);
    return 0;
}
