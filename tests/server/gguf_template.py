#!/usr/bin/env python3
"""Prints one string metadata value of a GGUF file (default: tokenizer.chat_template).

A tiny GGUF v2/v3 metadata reader: walks the key/value section and stops at the
requested key. Used by the chat-template tests as the jinja2 oracle's input."""
import struct
import sys

SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_meta(path, want):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version, = struct.unpack_from("<I", data, 4)
    if version not in (2, 3):
        raise ValueError(f"{path}: unsupported GGUF version {version}")
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    off = 24

    def read_str(o):
        n, = struct.unpack_from("<Q", data, o)
        return data[o + 8:o + 8 + n].decode("utf-8"), o + 8 + n

    def skip_value(t, o):
        if t in SCALARS:
            return o + struct.calcsize("<" + SCALARS[t])
        if t == 8:
            n, = struct.unpack_from("<Q", data, o)
            return o + 8 + n
        if t == 9:
            at, n = struct.unpack_from("<IQ", data, o)
            o += 12
            if at in SCALARS:
                return o + n * struct.calcsize("<" + SCALARS[at])
            for _ in range(n):
                o = skip_value(at, o)
            return o
        raise ValueError(f"bad value type {t}")

    for _ in range(n_kv):
        key, off = read_str(off)
        t, = struct.unpack_from("<I", data, off)
        off += 4
        if key == want and t == 8:
            return read_str(off)[0]
        off = skip_value(t, off)
    return None


if __name__ == "__main__":
    key = sys.argv[2] if len(sys.argv) > 2 else "tokenizer.chat_template"
    v = read_meta(sys.argv[1], key)
    if v is None:
        sys.exit(f"{sys.argv[1]}: no string key {key}")
    sys.stdout.write(v)
