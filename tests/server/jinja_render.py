#!/usr/bin/env python3
"""The chat-template oracle: renders conversations with python3-jinja2 exactly
as Hugging Face transformers does (sandboxed environment, trim_blocks,
lstrip_blocks, raise_exception, tojson).

usage: jinja_render.py (--gguf FILE | --template FILE) CONVERSATIONS.json [--bos S] [--eos S]
                       [--date YYYY-MM-DD] [--thinking-from-reasoning]

--date defines strftime_now (gpt-oss's template calls it) as that day; --thinking-from-reasoning
gives each message with a reasoning_content a "thinking" of the same text (gpt-oss's name for it).

CONVERSATIONS.json is a list of {"messages": [...], "add_generation_prompt": bool,
"enable_thinking": bool (optional)}. Prints a JSON list with, per conversation,
{"text": rendered} or {"error": message}."""
import json
import os
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_template  # noqa: E402


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main(argv):
    args = {"--bos": "", "--eos": ""}
    pos = []
    i = 0
    while i < len(argv):
        if argv[i] == "--thinking-from-reasoning":
            args[argv[i]] = True
            i += 1
        elif argv[i] in ("--gguf", "--template", "--bos", "--eos", "--date"):
            args[argv[i]] = argv[i + 1]
            i += 2
        else:
            pos.append(argv[i])
            i += 1
    if "--gguf" in args:
        src = gguf_template.read_meta(args["--gguf"], "tokenizer.chat_template")
    else:
        with open(args["--template"], encoding="utf-8") as f:
            src = f.read()
    with open(pos[0], encoding="utf-8") as f:
        convs = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    if "--date" in args:
        import datetime
        day = datetime.datetime.strptime(args["--date"], "%Y-%m-%d")
        env.globals["strftime_now"] = day.strftime
    tmpl = env.from_string(src)
    out = []
    for c in convs:
        msgs = c["messages"]
        if "--thinking-from-reasoning" in args:
            msgs = [dict(m, thinking=m["reasoning_content"]) if "reasoning_content" in m else m for m in msgs]
        kw = {"messages": msgs, "add_generation_prompt": c.get("add_generation_prompt", True),
              "bos_token": args["--bos"], "eos_token": args["--eos"]}
        if "enable_thinking" in c:
            kw["enable_thinking"] = c["enable_thinking"]
        try:
            out.append({"text": tmpl.render(**kw)})
        except Exception as e:  # the template's own raise_exception, or a Jinja error
            out.append({"error": str(e)})
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1:])
