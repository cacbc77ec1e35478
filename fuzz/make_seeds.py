#!/usr/bin/env python3
"""fuzz/make_seeds.py — writes the seed corpora of the fuzz targets under
fuzz/corpus/<target>/ (see fuzz/README.md for the input formats).

    python3 fuzz/make_seeds.py SLOT_FILE KVCAL_FILE

SLOT_FILE is a slot saved by `rotkv serve` and KVCAL_FILE a calibration made by
`rotkv calibrate`, both for models/tinystories-656k-q8_0.gguf (README: how);
they are copied with a few damaged variants. Every seed is < 100 KB."""
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < 100_000, name
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ids(*v):
    return struct.pack("<%di" % len(v), *v)


# ---- tokenizer: flags byte (1 parse_special, 2 add_special), then the text / ids
texts = {
    "hello": "Hello world",
    "story": "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "unicode": "h\u00e9llo \u65e5\u672c\u8a9e \U0001f642 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 caf\u00e9",
    "spaces": "  a  \n\n\t b   \r\n   ",
    "digits": "1234567890 3.14159 1,000,000",
    "contractions": "I'm sure they'll say we'd've done it; DON'T",
    "code": "def f(x):\n    return x**2  # sq\n",
    "spm_space": "\u2581a \u2581\u2581b",
}
for k, v in texts.items():
    put("tokenizer", k, b"\x00" + v.encode())
put("tokenizer", "specials_parsed", b"\x03<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|im_start|>x<|im_end|><think></think><s></s>")
put("tokenizer", "specials_text", b"\x00<|eot_id|><|im_end|><s>")
put("tokenizer", "invalid_utf8", b"\x00a\xff\xc3(\xe2\x82\xed\xa0\x80\xf0\x9f\x98 \xc0\xaf")
put("tokenizer", "ids_edge", b"\x00" + ids(0, 1, 2, -1, 2147483647, -2147483648, 127999, 128000, 151643, 151668, 2047, 2048))
put("tokenizer", "ids_bytes", b"\x00" + ids(*range(3, 300, 7)))
put("tokenizer", "empty", b"\x02")

# ---- chat_template: flags byte, then NUL-separated template, bos, eos, (role, content, reasoning)*
templates = {
    "chatml": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
    "chatml_system": "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}<|im_start|><tool_response>",
    "qwen3": "<|im_start|><think>last_query_index reasoning_content",
    "llama3": "{{ bos_token }}<|start_header_id|>{{ role }}<|end_header_id|>\n\n<|eot_id|>add_generation_prompt",
    "llama31": "<|start_header_id|><|eot_id|>Cutting Knowledge Date",
    "llama2": "{{ bos_token }}[INST] <<SYS>>\n<</SYS>>\n\n [/INST]",
    "mistral": "{{ bos_token }}[INST] {{ m }} [/INST]",
    "gemma": "{{ bos_token }}<start_of_turn>user\n<end_of_turn>\n",
    "phi3": "<|user|>\n<|end|>\n<|assistant|>",
    "zephyr": "<|user|>\n</s>\n<|assistant|>",
    "unknown": "{% for m in messages %}{{ m.content }}{% endfor %}",
}
conv = ["\x00", "You are terse.", "", "\x01", "  Hi there!  ", "", "\x02", "Hello.", "I should greet.",
        "\x01", "And now?\n", "", "\x03", "{\"result\": 1}", ""]
for i, (k, v) in enumerate(templates.items()):
    flags = [0x01, 0x05, 0x03][i % 3]
    put("chat_template", k, bytes([flags]) + "\x00".join([v, "<s>", "</s>"] + conv).encode())
put("chat_template", "forced_gemma_system", bytes([0x01 | (6 << 3)]) + b"\x00<bos>\x00<eos>\x00\x00sys\x00\x00\x01\x00u\x00")
put("chat_template", "no_messages", bytes([0x01 | (2 << 3)]) + b"<|im_start|><think>last_query_index\x00\x00")
put("chat_template", "raw_roles", b"\x01\x00\x00\x00robot\x00beep\x00\x00user\x00<|im_end|>\x00x")

# ---- server_request: byte 0 = endpoint + 3 * family (see fuzz_server_request.c), then the body
def body(o):
    return json.dumps(o).encode()


chat = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Tell me a story."}],
        "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 42,
        "stop": ["\n\n", "The end"], "stream": True, "stream_options": {"include_usage": True}}
put("server_request", "chat_full", bytes([0]) + body(chat))
put("server_request", "chat_parts_qwen3", bytes([3 * 1]) + body({"messages": [
    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "content": "ok", "reasoning_content": "hmm"},
    {"role": "tool", "content": "42"}, {"role": "user", "content": "again"}],
    "chat_template_kwargs": {"enable_thinking": False}}))
put("server_request", "chat_gemma_system", bytes([3 * 5]) + body({"messages": [{"role": "system", "content": "s"}]}))
put("server_request", "chat_bad_role", bytes([0]) + body({"messages": [{"role": "wizard", "content": "x"}]}))
put("server_request", "chat_bad_types", bytes([0]) + body({"model": 3, "messages": "no", "max_tokens": 1.5,
                                                           "temperature": "hot", "stop": [1], "tools": [{}]}))
put("server_request", "completion", bytes([1]) + body({"prompt": "Once upon a time", "max_tokens": 8, "n": 1,
                                                       "max_completion_tokens": 4, "stop": "x"}))
put("server_request", "completion_ids", bytes([1]) + body({"prompt": [1, 2, 300, 2047], "seed": -1}))
put("server_request", "completion_bad_ids", bytes([1]) + body({"prompt": [1, -1, 2048, 1e30]}))
put("server_request", "completion_one_string", bytes([1]) + body({"prompt": ["hi"], "model": "other"}))
put("server_request", "not_json", bytes([1]) + b"{\"prompt\": \"unterminated")
put("server_request", "slot_save", bytes([2]) + b"0?save\n" + body({"filename": "story.slot"}))
put("server_request", "slot_restore", bytes([2]) + b"3?restore\n" + body({"filename": "../etc/passwd"}))
put("server_request", "slot_erase", bytes([2]) + b"1?erase\n")
put("server_request", "slot_bad", bytes([2]) + b"-1?fly\n[]")

# ---- slot_file and kv_calib: real files and damaged variants
if len(sys.argv) == 3:
    slot = open(sys.argv[1], "rb").read()
    put("slot_file", "story.slot", slot)
    put("slot_file", "truncated.slot", slot[:-5])
    put("slot_file", "header_only.slot", slot[:216])
    bad = bytearray(slot)
    bad[220] ^= 0xff  # a token: checksum mismatch (and out of range once fixed)
    put("slot_file", "damaged_token.slot", bytes(bad))
    big = bytearray(slot)
    big[12:16] = struct.pack("<I", 100000)  # more tokens than the context
    put("slot_file", "too_many.slot", bytes(big))
    cal = open(sys.argv[2], "rb").read()
    put("kv_calib", "tiny.kvcal", cal)
    put("kv_calib", "header.kvcal", cal[:60])
    put("kv_calib", "truncated.kvcal", cal[: len(cal) // 2])
    v2 = bytearray(cal)
    v2[8:12] = struct.pack("<I", 2)
    put("kv_calib", "version2.kvcal", bytes(v2))
elif len(sys.argv) != 1:
    sys.exit(__doc__)
