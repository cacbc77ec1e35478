/* fuzz_server_request.c — libFuzzer target for `rotkv serve`'s request bodies
 * (tools/server_request.c): JSON body -> validated srv_request, without HTTP.
 *
 * The tokenizer is $ROTKV_FUZZ_MODEL's (default: the shipped
 * models/tinystories-656k-q8_0.gguf, vocabulary only), loaded once with one
 * chat template per family. Input: byte 0 b picks the endpoint, b % 3:
 *   0  POST /v1/chat/completions, rendered with family (b / 3) % 9 (8: the
 *      model's own template, here the ChatML fallback);
 *   1  POST /v1/completions;
 *   2  POST /slots/ID?action=ACTION: the rest up to the first '\n' is
 *      "ID?ACTION" (no '?': no action), the bytes after it the body.
 * Everything else is the body, passed with its exact length and no NUL.
 *
 * Checks: a rejection has status 400/404/500 and a message (and a parameter
 * name for the 400s that blame one field); an accepted generation has 1 to
 * n_ctx prompt tokens, all in the vocabulary, 1 <= max_tokens, max_tokens <=
 * the room left in the context (at least 1), sampling parameters in their
 * documented ranges and at most 16 stop strings of 1 to 512 bytes; an
 * accepted slot request has its kind, an id in [0, 1e6] and a filename for
 * save and restore. */
#include "chat_template.h"
#include "fuzz_common.h"
#include "server.h"

#define N_CTX 256

static rotkv_model *g_model;
static chat_template g_tmpl[CHAT_FAMILY_COUNT + 1];
static http_opts g_opts;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    g_model = fuzz_load_model("ROTKV_FUZZ_MODEL", "models/tinystories-656k-q8_0.gguf", true);
    char warn[300];
    for (int f = 0; f <= CHAT_FAMILY_COUNT; f++)
        chat_template_init_model(&g_tmpl[f], g_model, f < CHAT_FAMILY_COUNT ? f : -1, warn, sizeof warn);
    g_opts = (http_opts){.model_id = "tiny", .max_body = 1 << 20, .max_tokens_limit = N_CTX, .sp = rotkv_sampler_default_params()};
    return 0;
}

static void check_generate(const srv_request *r) {
    CHECK(r->kind == REQ_GENERATE);
    CHECK(r->n_prompt >= 1 && r->prompt);
    for (int32_t i = 0; i < r->n_prompt; i++) CHECK(r->prompt[i] >= 0 && r->prompt[i] < rotkv_n_vocab(g_model));
    const int room = N_CTX - r->n_prompt;
    CHECK(r->max_tokens >= 1 && r->max_tokens <= (room > 0 ? room : 1));
    CHECK(r->sp.temp >= 0 && r->sp.temp <= 2 && r->sp.top_p >= 0 && r->sp.top_p <= 1 && r->sp.min_p >= 0 &&
          r->sp.min_p <= 1 && r->sp.top_k >= 0);
    CHECK(r->n_stop >= 0 && r->n_stop <= 16);
    for (int i = 0; i < r->n_stop; i++) CHECK(strlen(r->stop[i]) >= 1 && strlen(r->stop[i]) <= 512);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const int endpoint = data[0] % 3, family = (data[0] / 3) % (CHAT_FAMILY_COUNT + 1);
    srv_parse_error e;
    memset(&e, 0, sizeof e);
    srv_request *r;
    if (endpoint < 2) {
        char *body = fuzz_copy(data + 1, size - 1, false);
        const srv_parse_ctx pc = {g_model, &g_tmpl[endpoint == 0 ? family : CHAT_FAMILY_COUNT], &g_opts, N_CTX, 7, NULL};
        bool stream = false, usage = false;
        r = srv_parse_generate(&pc, body, size - 1, endpoint == 0, &stream, &usage, &e);
        if (r) check_generate(r);
        free(body);
    } else {
        const uint8_t *nl = memchr(data + 1, '\n', size - 1);
        const size_t line = nl ? (size_t)(nl - data - 1) : size - 1;
        char *target = fuzz_copy(data + 1, line, true);
        char *q = strchr(target, '?');
        if (q) *q++ = 0;
        const size_t blen = nl ? size - 1 - line - 1 : 0;
        char *body = fuzz_copy(nl ? nl + 1 : data, blen, false);
        r = srv_parse_slot(target, q, body, blen, &e);
        if (r) {
            CHECK(r->kind == REQ_SLOT_SAVE || r->kind == REQ_SLOT_RESTORE || r->kind == REQ_SLOT_ERASE);
            CHECK(r->slot_id >= 0 && r->slot_id <= 1000000);
            CHECK(r->kind == REQ_SLOT_ERASE || r->filename);
        }
        free(body);
        free(target);
    }
    if (r) {
        srv_request_unref(r);
    } else {
        CHECK(e.status == 400 || e.status == 404 || e.status == 500);
        CHECK(e.msg[0]);
        if (e.status == 400 && e.code && !strcmp(e.code, "invalid_value")) CHECK(e.param);
    }
    return 0;
}
