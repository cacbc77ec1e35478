/* rotkv — command-line front end: dispatches to one subcommand per file. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *fp) {
    fprintf(fp,
            "rotkv %s — local LLM inference with a compressed KV cache\n\n"
            "usage: rotkv <command> [options]\n\n"
            "commands:\n"
            "  run         generate text:        rotkv run -m MODEL (-p PROMPT | -f FILE) [-n N] [-c CTX] [-t N]\n"
            "                                    [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
            "                                    [--repeat-penalty R] [--repeat-last-n N] [-ctk T|autoB] [-ctv T]\n"
            "                                    [--kv-calib FILE] [--kv-bits B]\n"
            "  tokenize    print token ids:      rotkv tokenize -m MODEL (-p TEXT | -f FILE) [--no-bos] [--parse-special] [--pieces]\n"
            "  info        describe a model:     rotkv info -m MODEL\n"
            "  logits      golden-format dump:   rotkv logits -m MODEL -f TEXT [-k 20] [-n 32] [-ctk T] [-ctv T]\n"
            "  perplexity  PPL / KL divergence:  rotkv perplexity -m MODEL -f TEXT [-c CTX] [-b N] [--chunks N]\n"
            "                                    [--kl-divergence-base FILE [--kl-divergence]]\n"
            "  bench       speed (llama-bench):  rotkv bench -m MODEL [-p 512] [-n 128] [-d 0,4096] [-t N] [-ctk T,..] [-ctv T,..]\n"
            "                                    [-r 5] [-o md|json|csv]\n"
            "  serve       OpenAI-compatible HTTP server: rotkv serve -m MODEL [--host H] [--port P] [-np N]\n"
            "                                    [--kv-budget SIZE] [-ctk T] [-ctv T] [--api-key K] [--slot-save-path DIR]\n"
            "  chat        interactive chat:     rotkv chat -m MODEL [--system TEXT] [-n N] [--chat-template NAME]\n"
            "  synth       random-weight GGUF with a real model's shapes: rotkv synth --shape llama3.2-1b|qwen2.5-0.5b|llama3.1-8b\n"
            "                                    --type Q4_0|Q8_0|F16|... --vocab VOCAB.gguf -o OUT.gguf [--seed N]\n"
            "  calibrate   the model's KV calibration (moments, per-layer sensitivity) for -ctk autoB and kt*:\n"
            "                                    rotkv calibrate -m MODEL [-f TEXT] [-o MODEL.kvcal] [-c 256] [--types T,..]\n"
            "  quantize    convert weights:      rotkv quantize -m IN.gguf -o OUT.gguf --type Q8_0|Q4_0|F16|...\n"
            "  kv-eval     KV type distortion vs bits: rotkv kv-eval [-ctk T,..|all] [--vectors N] [-m MODEL -f TEXT [-c CTX]]\n"
            "                                    [--chart FILE.svg|.png] [-o md|csv]\n"
            "  pull        download a GGUF from the Hugging Face Hub: rotkv pull OWNER/NAME[:QUANT|:FILE.gguf] | --list\n"
            "\nevery -m MODEL above can be -hf OWNER/NAME[:QUANT] (downloaded into the cache; see rotkv pull --help).\n"
            "\nrun 'rotkv <command> --help' for details.\n",
            ROTKV_VERSION);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("rotkv %s\n", ROTKV_VERSION);
        return 0;
    }
    if (rotkv_kernel_isa_error()) {
        fprintf(stderr, "rotkv: error: %s\n", rotkv_kernel_isa_error());
        return 2;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"run", cmd_run}, {"tokenize", cmd_tokenize}, {"info", cmd_info}, {"logits", cmd_logits}, {"perplexity", cmd_perplexity}, {"bench", cmd_bench}, {"serve", cmd_serve}, {"chat", cmd_chat}, {"synth", cmd_synth}
                , {"kv-eval", cmd_kv_eval}, {"calibrate", cmd_calibrate}, {"quantize", cmd_quantize}, {"pull", cmd_pull}
                };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "rotkv: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
