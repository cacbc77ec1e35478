/* fuzz_kv_calib.c — libFuzzer target for the KV calibration loader
 * (kv_calib_load_buffer in src/kv_calib.c, behind rotkv_kv_calib_load).
 *
 * The model is $ROTKV_FUZZ_MODEL (default: the shipped
 * models/tinystories-656k-q8_0.gguf), loaded once. Input: a .kvcal file. It is
 * loaded as it is, so the magic, version, size and checksum checks see
 * arbitrary bytes; and once more with this model's id written at byte 12 and
 * the checksum recomputed over the (possibly mutated) rest, so the header
 * ranges, the type table, the per-layer counts and the moments are reached.
 *
 * Checks: a failure has a message and no calibration; a success matches the
 * model's shape, has only known KV types, finite covariances, and its
 * sensitivity table (if any) can be used by rotkv_kv_calib_allocate. */
#include <math.h>

#include "fuzz_common.h"
#include "hash.h"
#include "kv_calib.h"
#include "model.h"

static rotkv_model *g_model;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    g_model = fuzz_load_model("ROTKV_FUZZ_MODEL", "models/tinystories-656k-q8_0.gguf", false);
    return 0;
}

static void load(const uint8_t *buf, size_t size) {
    rotkv_kv_calib *c = (rotkv_kv_calib *)&c;
    rotkv_error err = {0};
    const rotkv_status st = kv_calib_load_buffer(g_model, buf, size, "fuzz.kvcal", &c, &err);
    if (st != ROTKV_OK) {
        CHECK(!c && err.msg[0] && err.code == st);
        return;
    }
    const model_hparams *hp = &g_model->hp;
    CHECK(c && c->finished && c->n_layer == hp->n_layer && c->n_head == hp->n_head && c->n_head_kv == hp->n_head_kv &&
          c->head_dim == hp->head_dim_k);
    CHECK(c->n_types >= 0 && c->n_types <= KV_CALIB_MAX_TYPES);
    for (int i = 0; i < c->n_types; i++) CHECK(rotkv_kv_type_from_name(rotkv_kv_type_name(c->types[i])) == (int)c->types[i]);
    const size_t hd = c->head_dim, n = (size_t)c->n_layer * c->n_head_kv * hd * hd;
    for (size_t i = 0; i < n; i++) CHECK(isfinite(c->k_cov[i]) && isfinite(c->q_m2[i]) && isfinite(c->v_cov[i]));
    CHECK(rotkv_kv_calib_n_tokens(c) == c->n_tokens);
    if (rotkv_kv_calib_has_sensitivity(c)) {
        rotkv_kv_type *tk = malloc(2 * sizeof *tk * c->n_layer);
        if (!tk) abort();
        double kld = 0;
        for (double bits = 2; bits <= 16; bits *= 2) {
            rotkv_error e2 = {0};
            if (rotkv_kv_calib_allocate(c, g_model, bits, tk, tk + c->n_layer, &kld, &e2) == ROTKV_OK)
                for (uint32_t l = 0; l < 2 * c->n_layer; l++) CHECK(rotkv_kv_type_name(tk[l]) != NULL);
            else
                CHECK(e2.msg[0]);
        }
        free(tk);
    }
    rotkv_kv_calib_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_copy(data, size, false);
    load(buf, size);
    if (size >= 20 + 8) {
        const uint64_t id = kv_calib_model_id(g_model);
        memcpy(buf + 12, &id, 8);
        const uint64_t sum = fnv1a(FNV1A_SEED, buf, size - 8);
        memcpy(buf + size - 8, &sum, 8);
        load(buf, size);
    }
    free(buf);
    return 0;
}
