/* cmd_serve.c — `rotkv serve`: the OpenAI-compatible HTTP server (docs/server.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "cli.h"
#include "server.h"

static void serve_usage(void) {
    printf("usage: rotkv serve -m MODEL [--host 127.0.0.1] [--port 8080] [-np N] [--kv-budget SIZE]\n"
           "       [-c CTX] [-b BATCH] [-t THREADS] [-ctk TYPE] [-ctv TYPE] [--attn-rot on|off|auto]\n"
           "       [--api-key KEY] [--slot-save-path DIR] [--timeout S] [--max-queue N] [--max-body SIZE]\n"
           "       [--max-tokens-limit N] [--max-connections N] [-n N] [--chat-template NAME] [--alias ID]\n"
           "       [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
           "  --host, --port      bind address (default 127.0.0.1:8080; --port 0 picks a free port)\n"
           "  -np, --parallel N   slots decoding together in one batch (default 4)\n"
           "  --kv-budget SIZE    KV cache pool shared by all slots, e.g. 512MiB, 2GiB\n"
           "                      (default: room for N full contexts)\n"
           "  --api-key KEY       require 'Authorization: Bearer KEY' (all endpoints but /health)\n"
           "  --slot-save-path D  enable POST /slots/ID?action=save|restore with files in D\n"
           "  --timeout S         limit per request, queue wait included (default 600)\n"
           "  --max-queue N       waiting requests before 503 (default 64)\n"
           "  --max-body SIZE     request body limit (default 1MiB)\n"
           "  --max-tokens-limit  largest max_tokens accepted (default: the context size)\n"
           "  -n N                max_tokens when a request gives none (default: to the end of the context)\n"
           "  --chat-template NAME  chatml, qwen3, llama3, llama2, mistral, gemma, phi3, zephyr, gpt-oss\n"
           "                      (default: recognised from the model's tokenizer.chat_template)\n"
           "  Sampling flags set the defaults; requests override them.\n");
}

int cmd_serve(int argc, char **argv) {
    if (argc > 0 && !strcmp(argv[0], "--help")) {
        serve_usage();
        return 0;
    }
    cli_opts o;
    if (!cli_parse(argc, argv, &o)) return 2;
    cli_default_model(&o);
    if (o.port < 0 || o.port > 65535) {
        fprintf(stderr, "rotkv: --port must be in [0, 65535]\n");
        return 2;
    }
    if (o.n_parallel < 0 || o.n_parallel > 256 || o.queue_max < 0 || o.max_tokens_limit < 0 || o.timeout_s < 0 ||
        o.max_conn < 0) {
        fprintf(stderr, "rotkv: -np (<= 256), --max-queue, --max-tokens-limit, --timeout and --max-connections must "
                        "not be negative\n");
        return 2;
    }
    int force = -1;
    if (o.chat_template && (force = chat_family_from_name(o.chat_template)) < 0) {
        fprintf(stderr, "rotkv: unknown --chat-template '%s' (chatml, qwen3, llama3, llama2, mistral, gemma, phi3, zephyr, gpt-oss)\n",
                o.chat_template);
        return 2;
    }
    rotkv_context_params cp;
    if (!cli_context_params(&o, &cp)) return 2;
    rotkv_model *m = cli_load_model(&o, false, NULL);
    if (!m) return 1;
    if (!cli_layer_overrides(&o, m, &cp)) {
        cli_kv_release(&o);
        rotkv_model_free(m);
        return 2;
    }
    chat_template tmpl;
    char warn[300];
    if (!chat_template_init_model(&tmpl, m, force, warn, sizeof warn))
        fprintf(stderr, "rotkv serve: warning: %s\n", warn);
    else if (warn[0])
        fprintf(stderr, "rotkv serve: warning: %s\n", warn);
    fprintf(stderr, "rotkv serve: chat template: %s%s\n", chat_family_name(tmpl.family),
            force >= 0 ? " (--chat-template)" : tmpl.recognised ? " (from the model)" : " (fallback)");
    srv_params sp = {.n_parallel = o.n_parallel ? o.n_parallel : 4,
                     .kv_budget_bytes = o.kv_budget,
                     .queue_max = o.queue_max ? o.queue_max : 64,
                     .timeout_s = o.timeout_s > 0 ? o.timeout_s : 600,
                     .model_path = cli_model_path(&o),
                     .slot_save_path = o.slot_save_path};
    char err[512];
    srv_engine *e = srv_engine_start(m, &cp, &sp, err, sizeof err);
    if (!e) {
        fprintf(stderr, "rotkv serve: error: %s\n", err);
        chat_template_free(&tmpl);
        cli_kv_release(&o);
        rotkv_model_free(m);
        return 1;
    }
    const char *model = cli_model_path(&o), *base = strrchr(model, '/');
    http_opts ho = {.host = o.host ? o.host : "127.0.0.1",
                    .port = o.port,
                    .api_key = o.api_key,
                    .model_id = o.alias ? o.alias : base ? base + 1 : model,
                    .max_body = o.max_body ? (size_t)o.max_body : (size_t)1 << 20,
                    .max_tokens_limit = o.max_tokens_limit ? o.max_tokens_limit : (int)srv_n_ctx(e),
                    .default_max_tokens = o.n_predict,
                    .max_conn = o.max_conn ? o.max_conn : 256,
                    .sp = o.sp};
    fprintf(stderr, "rotkv serve: %d slots, context %u tokens each, KV cache %s/%s\n", sp.n_parallel, srv_n_ctx(e),
            o.type_k, o.type_v);
    int rc = http_serve(e, m, &tmpl, &ho);
    srv_engine_stop(e);
    chat_template_free(&tmpl);
    cli_kv_release(&o);
    rotkv_model_free(m);
    return rc;
}
