/* chat_template.h — chat prompt formatting from a GGUF's tokenizer.chat_template.
 *
 * rotkv has no Jinja interpreter. Instead it recognises the template's family
 * from signature strings (ChatML, Qwen3 with <think>, Llama-3, Llama-2 [INST]
 * with <<SYS>>, Mistral [INST], Gemma, Phi-3, Zephyr, gpt-oss's harmony) and renders the
 * conversation in C exactly as that family's template renders it with the
 * Hugging Face settings (jinja2, trim_blocks and lstrip_blocks), including the
 * template's own errors (e.g. Gemma's "System role not supported"). The tests
 * compare every family against python3-jinja2 on the template text itself.
 *
 * An unrecognised template is reported (chat_template_init returns a warning)
 * and falls back to ChatML; it is never rendered half-right silently. */
#ifndef ROTKV_CHAT_TEMPLATE_H
#define ROTKV_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "rotkv.h"

typedef enum {
    CHAT_CHATML = 0, /* <|im_start|>role\n...<|im_end|>\n (OpenHermes, Qwen2/2.5 with default system) */
    CHAT_QWEN3,      /* ChatML + <think> handling of the last turns */
    CHAT_LLAMA3,     /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_LLAMA2,     /* <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s> */
    CHAT_MISTRAL,    /* [INST] ... [/INST]...</s>, no system role */
    CHAT_GEMMA,      /* <start_of_turn>user\n...<end_of_turn>\n, assistant = model */
    CHAT_PHI3,       /* <|user|>\n...<|end|>\n */
    CHAT_ZEPHYR,     /* <|user|>\n...</s>\n */
    CHAT_HARMONY,    /* gpt-oss: <|start|>role<|message|>...<|end|>, the assistant's reply in <|channel|>final */
    CHAT_FAMILY_COUNT
} chat_family;

typedef struct chat_template {
    chat_family family;
    bool recognised;        /* false: fallback (no template, or an unknown one) */
    bool leading_bos;       /* the template starts with {{ bos_token }} */
    bool gen_prompt_always; /* Llama-3 variant that ignores add_generation_prompt */
    bool qwen_tools;        /* ChatML variant rendering role "tool" as <tool_response> */
    bool gemma_sys_prefix;  /* Gemma 3: a system message goes, with "\n\n", before the first user turn's text */
    char *bos, *eos;        /* token texts ("" if the model has none) */
    char *default_system;   /* ChatML templates with a built-in system prompt, else NULL */
    char *date;             /* harmony's "Current date: " (strftime_now("%Y-%m-%d")): NULL = today, local time;
                               set (malloc'd, freed with t) for reproducible renderings */
} chat_template;

typedef struct {
    const char *role;      /* system, user, assistant, tool */
    const char *content;
    const char *reasoning; /* reasoning_content (Qwen3; harmony's "thinking"), NULL if undefined */
} chat_msg;

const char *chat_family_name(chat_family f);
/* Family from a name ("chatml", "qwen3", "llama3", ...); -1 if unknown. */
int chat_family_from_name(const char *name);

/* Recognises a template text (NULL = none). bos/eos are token texts. Returns
 * false (and fills warn) when the template is missing or not recognised; t is
 * then set up as the ChatML fallback. */
bool chat_template_init(chat_template *t, const char *src, const char *bos, const char *eos, char *warn,
                        size_t warnlen);
/* Same, reading tokenizer.chat_template and the BOS/EOS texts from the model.
 * force_family >= 0 overrides the detection. */
bool chat_template_init_model(chat_template *t, const rotkv_model *m, int force_family, char *warn, size_t warnlen);
void chat_template_free(chat_template *t);
/* The model's tokenizer.chat_template, or NULL (malloc'd copy). */
char *chat_template_source(const rotkv_model *m);

/* Renders the conversation. enable_thinking: -1 undefined, 0 false, 1 true
 * (Qwen3 only). Returns a malloc'd string, or NULL with the reason in err
 * (the template's own raise_exception message where it has one). */
char *chat_template_render(const chat_template *t, const chat_msg *msgs, int n, bool add_generation_prompt,
                           int enable_thinking, char *err, size_t errlen);

#endif
