#!/usr/bin/env python3
"""tokdiff.py — differential tokenizer fuzzing: rotkv against llama.cpp.

Generates seeded random strings in categories (mixed scripts, combining marks,
emoji with ZWJ sequences and skin tones, control bytes, invalid UTF-8, long
whitespace and digit runs, special-token look-alikes, contractions, ...) and
tokenizes each with both rotkv (`rotkv tokenize --lines`) and llama.cpp
(../shared/peer/llama-tok.c, built and run in the peer chroot), with
add_special=false and parse_special both off and on, and compares the ids.

    python3 tests/tokdiff.py [-n 10000] [--seed 1] [--vocab NAME ...] [--out DIR]

Writes DIR/<vocab>.mismatches.txt (each mismatch: category, input as written
in the line file, both id lists) and DIR/<vocab>.peer-crashes.txt (inputs on
which llama.cpp crashed; rotkv's ids), prints counts per vocab and category,
and exits 1 if any mismatch is found. Without the peer chroot (CI) it prints
a message and exits 0. Run by hand; see docs/correctness.md.

The line format is bytes: every byte of a string goes into the file as it is,
except '\\n', '\\t' and '\\\\', which are written as the escapes both sides
decode. llama-tok reads lines with fgets and measures them with strlen, so the
strings never contain NUL (it would end the line early) and are cut at 12000
bytes, under its 64 KiB line buffer (escapes at most double a line) and its
16384 tokens.
"""
import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
VOCABS = ["vocab-llama3", "vocab-qwen3", "tinystories-656k-f32"]


# ------------------------------------------------------------ generators

def rng_text(r, ranges, n):
    """n characters drawn from the code point ranges (inclusive pairs)."""
    out = []
    for _ in range(n):
        lo, hi = r.choice(ranges)
        out.append(chr(r.randint(lo, hi)))
    return "".join(out)


def words(r, ranges, n_words, max_len=8, sep=" "):
    return sep.join(rng_text(r, ranges, r.randint(1, max_len)) for _ in range(n_words))


ASCII_LOWER = [(0x61, 0x7A)]
ASCII_WORDS = ["the", "The", "cat", "sat", "on", "a", "mat", "Hello", "world", "I", "you", "DON'T",
               "http://example.com/a?b=c", "foo_bar", "CamelCase", "x", "ok", "naïve", "café", "über",
               "Straße", "œuvre", "ﬁne", "İstanbul", "ǅemal", "ΑΒΓ", "άλφα", "Ωmega"]
LATIN = [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xFF), (0x100, 0x17F), (0x180, 0x24F), (0x1E00, 0x1EFF)]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~") + ["\\", "…", "—", "–", "«", "»", "“", "”", "‘", "’",
                                                      "¿", "¡", "§", "©", "®", "°", "±", "€", "£", "¥"]
CJK = [(0x4E00, 0x9FFF), (0x3040, 0x309F), (0x30A0, 0x30FF), (0x3000, 0x303F), (0xFF01, 0xFF5E),
       (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0xAC00, 0xD7A3)]
CYRILLIC = [(0x400, 0x4FF), (0x500, 0x52F)]
ARABIC = [(0x600, 0x6FF), (0x750, 0x77F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF), (0x200E, 0x200F),
          (0x660, 0x669)]
DEVANAGARI = [(0x900, 0x97F), (0xA8E0, 0xA8FF)]
THAI = [(0xE00, 0xE7F)]
HANGUL = [(0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F)]
COMBINING = [(0x300, 0x36F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F)]
EMOJI_BASE = [(0x1F600, 0x1F64F), (0x1F300, 0x1F5FF), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
              (0x2600, 0x26FF), (0x2700, 0x27BF), (0x1FA70, 0x1FAFF)]
PEOPLE = ["\U0001F468", "\U0001F469", "\U0001F467", "\U0001F466", "\U0001F9D1", "\U0001F44B", "\U0001F44D",
          "\U0001F3C3", "\U0001F46E"]
SKIN = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
ZWJ, VS16 = "\u200d", "\ufe0f"
ZWJ_SEQS = ["\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F3F3\ufe0f\u200d\U0001F308",
            "\U0001F469\U0001F3FD\u200d\U0001F4BB", "\u2764\ufe0f\u200d\U0001F525", "\U0001F9D1\u200d\U0001F91D\u200d\U0001F9D1",
            "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5", "1\ufe0f\u20e3", "#\ufe0f\u20e3", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"]
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|reserved_special_token_0|>", "<|reserved_special_token_17|>", "<|python_tag|>", "<|finetune_right_pad_id|>",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
            "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|vision_start|>", "<|object_ref_start|>",
            "<|start_story|>", "<|end_story|>", "<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "<s>", "</s>", "<unk>", "<pad>"]
PARTIALS = ["<|im_", "<|im_start", "|im_start|>", "<|begin_of", "<|", "|>", "<", ">", "<|>", "<||>", "< |im_start|>",
            "<|im_start |>", "<|IM_START|>", "<|Begin_Of_Text|>", "<|end", "<|endoftext", "endoftext|>", "<think",
            "</thi", "<s", "</", "s>", "<|reserved_special_token_", "<|eot_id|", "<<|im_end|>>", "<|<|im_start|>|>"]
CONTR = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Re", "'rE",
         "'Ll", "'lL", "'Ve", "’s", "’re", "’ll", "''s", "'", "''", "'x", "'sss", "'dd", "'ss"]
CONTR_WORDS = ["I", "you", "we", "they", "it", "she", "don", "can", "won", "YOU", "We", "it", " ", "", "123",
               "日本", "Ünter", "x", "ça"]
CONTROL_CHARS = [chr(c) for c in range(1, 32)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)] + \
    ["\u00a0", "\u1680", "\u2000", "\u2002", "\u2009", "\u200a", "\u200b", "\u200c", "\u2028", "\u2029", "\u202f",
     "\u205f", "\u3000", "\ufeff", "\ufffd", "\ufffe", "\uffff", "\U0010ffff", "\ue000", "\u00ad", "\u061c"]
DIGITS_UNI = [(0x30, 0x39), (0x660, 0x669), (0x966, 0x96F), (0xFF10, 0xFF19), (0xE50, 0xE59), (0x2460, 0x2473),
              (0xB2, 0xB3), (0xBC, 0xBE), (0x2150, 0x215F), (0x1D7CE, 0x1D7FF)]


def g_ascii(r):
    parts = []
    for _ in range(r.randint(1, 20)):
        x = r.random()
        if x < 0.5: parts.append(r.choice(ASCII_WORDS))
        elif x < 0.8: parts.append(rng_text(r, ASCII_LOWER + [(0x41, 0x5A), (0x30, 0x39)], r.randint(1, 10)))
        else: parts.append(r.choice(PUNCT[:32]))
        parts.append(r.choice([" ", " ", " ", "", "  ", ", ", ". ", "\n", "\t", "-"]))
    return "".join(parts)


def g_latin(r):
    parts = []
    for _ in range(r.randint(1, 15)):
        parts.append(words(r, LATIN, 1, 10))
        parts.append(r.choice([" ", " ", "", ", ", r.choice(PUNCT), "  "]))
    return "".join(parts)


def script_gen(ranges, sep_choices=(" ", " ", "", "\u3002", ", ", "\n")):
    def g(r):
        parts = []
        for _ in range(r.randint(1, 12)):
            x = r.random()
            if x < 0.7: parts.append(rng_text(r, ranges, r.randint(1, 12)))
            elif x < 0.85: parts.append(r.choice(ASCII_WORDS))
            else: parts.append(rng_text(r, [(0x30, 0x39)], r.randint(1, 6)))
            parts.append(r.choice(sep_choices))
        return "".join(parts)
    return g


def g_combining(r):
    out = []
    for _ in range(r.randint(1, 25)):
        out.append(rng_text(r, LATIN + CYRILLIC + [(0x391, 0x3C9)] + DEVANAGARI + THAI + [(0x20, 0x20)], 1))
        for _ in range(r.choice([0, 1, 1, 2, 3, 8])):
            out.append(rng_text(r, COMBINING, 1))
    if r.random() < 0.2: out.insert(0, rng_text(r, COMBINING, r.randint(1, 3)))  # a leading mark
    return "".join(out)


def g_emoji(r):
    out = []
    for _ in range(r.randint(1, 12)):
        x = r.random()
        if x < 0.25: out.append(rng_text(r, EMOJI_BASE, 1))
        elif x < 0.45: out.append(r.choice(PEOPLE) + r.choice(SKIN))
        elif x < 0.65: out.append(r.choice(ZWJ_SEQS))
        elif x < 0.75: out.append(r.choice(PEOPLE) + ZWJ + r.choice(PEOPLE) + (r.choice(SKIN) if r.random() < .5 else ""))
        elif x < 0.82: out.append(rng_text(r, [(0x1F1E6, 0x1F1FF)], r.randint(1, 5)))  # regional indicators
        elif x < 0.88: out.append(rng_text(r, EMOJI_BASE, 1) + VS16)
        elif x < 0.92: out.append(r.choice([ZWJ, VS16, r.choice(SKIN)]))  # stray modifiers
        else: out.append(r.choice(ASCII_WORDS))
        out.append(r.choice(["", "", " ", "  ", "\n"]))
    return "".join(out)


def g_control(r):
    out = []
    for _ in range(r.randint(1, 20)):
        if r.random() < 0.5: out.append(r.choice(CONTROL_CHARS) * r.choice([1, 1, 1, 2, 5]))
        else: out.append(r.choice(ASCII_WORDS + [" ", "  ", "x"]))
    return "".join(out)


def g_invalid(r):
    """Returns bytes: text with ill-formed UTF-8 spliced in."""
    out = []
    for _ in range(r.randint(1, 12)):
        x = r.random()
        if x < 0.35: out.append(r.choice(ASCII_WORDS + ["日本語", "привет", "😀", " ", "é"]).encode())
        elif x < 0.5: out.append(bytes(r.randint(0x80, 0xFF) for _ in range(r.randint(1, 4))))  # stray bytes
        elif x < 0.6: out.append(r.choice(["日", "😀", "é", "ก", "한"]).encode()[:-1])            # truncated
        elif x < 0.7: out.append(r.choice([b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf"]))  # overlong
        elif x < 0.78: out.append(bytes([0xED, r.randint(0xA0, 0xBF), r.randint(0x80, 0xBF)]))  # surrogate
        elif x < 0.84: out.append(bytes([0xF4, r.randint(0x90, 0xBF), 0x80, 0x80]))  # > U+10FFFF
        elif x < 0.9: out.append(bytes([r.choice([0xF5, 0xF8, 0xFC, 0xFE, 0xFF])]) + b"\x80\x80")
        else: out.append(bytes(r.randint(1, 0xFF) for _ in range(r.randint(1, 8))))  # any non-NUL bytes
        if r.random() < 0.3: out.append(b" ")
    return b"".join(out)


def g_whitespace(r):
    out = []
    for _ in range(r.randint(1, 10)):
        out.append("".join(r.choice([" ", "\t", "\n", " ", "\r", "\n\n", "\u3000", "\u00a0"])
                           for _ in range(r.choice([1, 2, 3, 5, 16, 64, 200]))))
        if r.random() < 0.7: out.append(r.choice(ASCII_WORDS + ["日本", "😀", "'s", "1234"]))
    return "".join(out)


def g_digits(r):
    out = []
    for _ in range(r.randint(1, 10)):
        x = r.random()
        if x < 0.5: out.append(rng_text(r, [(0x30, 0x39)], r.choice([1, 2, 3, 4, 5, 7, 10, 33, 100])))
        elif x < 0.7: out.append(rng_text(r, DIGITS_UNI, r.randint(1, 8)))
        elif x < 0.85: out.append(r.choice(["1,234,567", "3.14159", "-42", "1e10", "0x1F", "12:30", "2024-01-01",
                                            "$1,000.00", "10%", "v1.2.3", "½", "१२३", "٣٤٥"]))
        else: out.append(r.choice(ASCII_WORDS))
        out.append(r.choice(["", " ", "  ", ",", "\n", "a"]))
    return "".join(out)


def g_special(r):
    out = []
    for _ in range(r.randint(1, 10)):
        x = r.random()
        if x < 0.4: out.append(r.choice(SPECIALS))
        elif x < 0.7: out.append(r.choice(PARTIALS))
        else: out.append(r.choice(ASCII_WORDS + ["日本", "😀"]))
        out.append(r.choice(["", "", " ", "  ", "\n", " \n", "\t"]))
    return "".join(out)


def g_contractions(r):
    out = []
    for _ in range(r.randint(1, 12)):
        out.append(r.choice(CONTR_WORDS) + r.choice(CONTR))
        if r.random() < 0.3: out.append(r.choice(CONTR))
        out.append(r.choice([" ", " ", "", "  ", ".", "\n"]))
    return "".join(out)


def g_codepoints(r):
    """Any code points (assigned or not, every plane, no surrogates) around
    letters, digits and spaces: the Unicode category tables of both sides."""
    out = []
    for _ in range(r.randint(1, 16)):
        x = r.random()
        if x < 0.4: c = r.randint(0x80, 0x2FFFF)
        elif x < 0.5: c = r.randint(0x30000, 0x10FFFF)
        elif x < 0.7: c = r.choice([0x20, 0x20, 0x41, 0x61, 0x31, 0x27, 0x2C])
        else: c = r.randint(0x80, 0x1FFF)
        if 0xD800 <= c <= 0xDFFF: c = 0x20
        out.append(chr(c))
    return "".join(out)


def g_mixed(r):
    gens = [g for name, g in CATEGORIES if name != "mixed"]
    parts = [r.choice(gens)(r) for _ in range(r.randint(2, 4))]
    return b"".join(p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass") for p in parts)


def g_long(r):
    gens = [g for name, g in CATEGORIES if name not in ("mixed", "long")]
    parts = [r.choice(gens)(r) for _ in range(r.randint(10, 40))]
    return b"".join(p if isinstance(p, bytes) else p.encode("utf-8", "surrogatepass") for p in parts)


CATEGORIES = [
    ("ascii", g_ascii), ("latin", g_latin), ("cjk", script_gen(CJK)), ("cyrillic", script_gen(CYRILLIC)),
    ("arabic", script_gen(ARABIC, (" ", "", "\u060c ", "\n"))), ("devanagari", script_gen(DEVANAGARI, (" ", "", "\u0964 "))),
    ("thai", script_gen(THAI, ("", "", " "))), ("hangul", script_gen(HANGUL)), ("combining", g_combining),
    ("emoji", g_emoji), ("control", g_control), ("invalid-utf8", g_invalid), ("whitespace", g_whitespace),
    ("digits", g_digits), ("special", g_special), ("contractions", g_contractions), ("codepoints", g_codepoints),
    ("mixed", g_mixed),
    ("long", g_long),
]


def escape(b):
    """A string's bytes as one line of the line format."""
    return b.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\t", b"\\t")


def generate(n, seed):
    """n (category, bytes) pairs, the categories in turn; the same for a given seed."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        name, g = CATEGORIES[i % len(CATEGORIES)]
        s = g(r)
        b = s if isinstance(s, bytes) else s.encode("utf-8")
        out.append((name, b.replace(b"\0", b"\x01")[:12000]))
    return out


def gguf_meta(path):
    """The metadata of a GGUF file (strings as bytes, string arrays as lists, other arrays skipped)."""
    with open(path, "rb") as f:
        d = f.read()
    if d[:4] != b"GGUF":
        raise ValueError("%s: not a GGUF file" % path)
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def rstr(pos):
        n = struct.unpack_from("<Q", d, pos)[0]
        return d[pos + 8:pos + 8 + n], pos + 8 + n

    def value(t, pos):
        if t in sizes: return None, pos + sizes[t]
        if t == 8: return rstr(pos)
        et, n = struct.unpack_from("<IQ", d, pos)
        pos += 12
        if et != 8: return None, pos + sizes[et] * n
        out = []
        for _ in range(n):
            x, pos = rstr(pos)
            out.append(x)
        return out, pos

    meta, pos = {}, 24
    for _ in range(struct.unpack_from("<Q", d, 16)[0]):
        k, pos = rstr(pos)
        t = struct.unpack_from("<I", d, pos)[0]
        meta[k.decode()], pos = value(t, pos + 4)
    return meta


def vocab_chars(path):
    """For a SentencePiece vocab without <0xNN> byte tokens — on which
    llama.cpp aborts whenever byte fallback is needed — the characters it has
    single tokens for; None for other vocabs."""
    m = gguf_meta(path)
    toks = m.get("tokenizer.ggml.tokens") or []
    if m.get("tokenizer.ggml.model") != b"llama" or b"<0x41>" in toks:
        return None
    chars = sorted(set(t.decode("utf-8", "replace").replace("\u2581", " ") for t in toks
                       if len(t.decode("utf-8", "replace")) == 1))
    return chars


def restrict(cases, chars, seed):
    """The same strings with every character the vocab has no token for
    replaced by a random one it has (ill-formed bytes become U+FFFD first)."""
    r = random.Random(seed)
    keep = set(chars)
    return [(cat, "".join(c if c in keep else r.choice(chars) for c in b.decode("utf-8", "replace")).encode())
            for cat, b in cases]


# ------------------------------------------------------------ running

def parse_blocks(out):
    """llama-tok / rotkv --lines output -> {special: [ids-or-error string per line]}."""
    blocks, cur = {}, None
    for line in out.split(b"\n"):
        if line.startswith(b"## parse_special="):
            cur = blocks.setdefault(int(line[17:]), [])
        elif cur is not None and b"\t" in line:
            cur.append(line.rsplit(b"\t", 1)[1].decode())
    return blocks


def run_peer(peer, vocab_in_chroot, lines, workdir_host, workdir_chroot, chunk=256):
    """llama-tok on every line, chunk lines per run; crashes are caught and the
    run resumes after the line that crashed. Returns ({0: [...], 1: [...]} with
    "CRASH" entries, the distinct crash messages)."""
    res = {0: [], 1: []}
    msgs = []
    for k in range(0, len(lines), chunk):
        r, m = run_peer_chunk(peer, vocab_in_chroot, lines[k:k + chunk], workdir_host, workdir_chroot)
        res[0] += r[0]
        res[1] += r[1]
        msgs += [x for x in m if x not in msgs]
    return res, msgs


def run_peer_chunk(peer, vocab_in_chroot, lines, workdir_host, workdir_chroot):
    res = {0: [None] * len(lines), 1: [None] * len(lines)}
    todo0, todo1 = list(range(len(lines))), []   # lines needing both blocks / only block 1
    stderr_seen = {}
    while todo0 or todo1:
        idx = todo0 if todo0 else todo1
        with open(os.path.join(workdir_host, "in.txt"), "wb") as f:
            f.write(b"".join(lines[i] + b"\n" for i in idx))
        p = subprocess.run(["chroot", peer, workdir_chroot + "/llama-tok", vocab_in_chroot, workdir_chroot + "/in.txt"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        blocks = parse_blocks(p.stdout)
        b0, b1 = blocks.get(0, []), blocks.get(1, [])
        for k, v in enumerate(b0): res[0][idx[k]] = v
        for k, v in enumerate(b1): res[1][idx[k]] = v
        crashed = p.returncode != 0
        if crashed:
            msg = p.stderr.decode(errors="replace").strip().splitlines()
            stderr_seen[msg[-1] if msg else "rc=%d" % p.returncode] = True
        if idx is todo0:
            if crashed and len(b0) < len(idx):         # crashed in block 0 at line len(b0)
                j = len(b0)
                res[0][idx[j]] = res[1][idx[j]] = "CRASH"
                todo1 += idx[:j]
                todo0 = idx[j + 1:]
                continue
            todo0 = []
        else:
            todo1 = []
        if crashed and len(b1) < len(idx):             # block 0 complete, crashed in block 1
            j = len(b1)
            res[1][idx[j]] = "CRASH"
            todo1 += idx[j + 1:]
        elif crashed:
            raise RuntimeError("llama-tok failed after all lines: %s" % p.stderr.decode(errors="replace")[-500:])
    return res, list(stderr_seen)


def run_rotkv(rotkv, vocab, path):
    res = {}
    for special in (0, 1):
        cmd = [rotkv, "tokenize", "-m", vocab, "-f", path, "--no-bos", "--lines"] + (["--parse-special"] if special else [])
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError("rotkv failed (rc %d): %s" % (p.returncode, p.stderr.decode(errors="replace")[-500:]))
        blocks = parse_blocks(p.stdout)
        if special not in blocks or len(blocks[special]) != sum(1 for _ in open(path, "rb")):
            raise RuntimeError("rotkv tokenize --lines: no parse_special=%d block for every line" % special)
        res[special] = blocks[special]
    return res


def compare(a, name, cases, vpath, work_host, work_chroot):
    """Tokenizes the cases with both; prints the counts, writes the mismatch and
    crash files, returns the number of mismatches."""
    lines = [escape(c[1]) for c in cases]
    infile = os.path.join(a.out, name + ".input.txt")
    with open(infile, "wb") as f:
        f.write(b"".join(l + b"\n" for l in lines))
    peer, crash_msgs = run_peer(a.peer, work_chroot + "/vocab.gguf", lines, work_host, work_chroot)
    mine = run_rotkv(a.rotkv, vpath, infile)
    stats, bad, crashes = {}, [], []
    for i, cat in enumerate(c[0] for c in cases):
        st = stats.setdefault(cat, [0, 0, 0, 0])  # strings, equal (both modes), mismatching, peer crashed
        st[0] += 1
        if peer[0][i] == "CRASH" or peer[1][i] == "CRASH":
            st[3] += 1
            crashes.append((cat, lines[i], mine[0][i], mine[1][i], peer[0][i], peer[1][i]))
            continue
        diff = [s for s in (0, 1) if peer[s][i] != mine[s][i]]
        if diff:
            st[2] += 1
            for s in diff: bad.append((cat, s, lines[i], peer[s][i], mine[s][i]))
        else:
            st[1] += 1
    with open(os.path.join(a.out, name + ".mismatches.txt"), "wb") as f:
        for cat, s, line, pe, me in bad:
            f.write(b"%s parse_special=%d\n  input:     %s\n  llama.cpp: %s\n  rotkv:     %s\n"
                    % (cat.encode(), s, line, pe.encode(), me.encode()))
    with open(os.path.join(a.out, name + ".peer-crashes.txt"), "wb") as f:
        for cat, line, m0, m1, p0, p1 in crashes:
            f.write(b"%s\n  input: %s\n  llama.cpp: parse_special=0 %s, parse_special=1 %s\n"
                    b"  rotkv: parse_special=0 %s\n         parse_special=1 %s\n"
                    % (cat.encode(), line, p0.encode(), p1.encode(), m0.encode(), m1.encode()))
    tot = [sum(st[k] for st in stats.values()) for k in range(4)]
    print("%s: %d strings (seed %d), %d equal in both parse_special modes, %d mismatching, %d crashed llama.cpp"
          % (name, tot[0], a.seed, tot[1], tot[2], tot[3]))
    print("  %-14s %7s %7s %9s %10s" % ("category", "strings", "equal", "mismatch", "peer-crash"))
    for cat, _ in CATEGORIES:
        if cat in stats:
            st = stats[cat]
            print("  %-14s %7d %7d %9d %10d" % (cat, st[0], st[1], st[2], st[3]))
    for m in crash_msgs: print("  llama.cpp crash: %s" % m)
    if bad: print("  mismatches: %s" % os.path.join(a.out, name + ".mismatches.txt"))
    if crashes: print("  peer crashes (rotkv did not crash on any): %s" % os.path.join(a.out, name + ".peer-crashes.txt"))
    sys.stdout.flush()
    return len(bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10000, help="strings per vocab (default 10000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocab", action="append", help="vocab name in ../shared/models (default: %s)" % ", ".join(VOCABS))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "tokdiff"))
    ap.add_argument("--peer", default="/opt/peer")
    ap.add_argument("--rotkv", default=os.path.join(ROOT, "build", "rotkv"))
    ap.add_argument("--models", default=os.path.join(SHARED, "models"))
    a = ap.parse_args()

    src = os.path.join(SHARED, "peer", "llama-tok.c")
    if not os.path.isdir(os.path.join(a.peer, "usr")) or not shutil.which("chroot") or not os.path.exists(src):
        print("tokdiff: skipped: no llama.cpp peer chroot at %s (see ../shared/peer/README.md)" % a.peer)
        return 0
    if not os.path.exists(a.rotkv):
        print("tokdiff: %s not built (make)" % a.rotkv, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the work directory
    work_chroot = "/x/tokdiff-%d" % os.getpid()
    work_host = a.peer + work_chroot
    os.makedirs(a.out, exist_ok=True)
    try:
        os.makedirs(work_host)
        shutil.copy(src, work_host)
        p = subprocess.run(["chroot", a.peer, "sh", "-c", "cd %s && gcc -O2 -o llama-tok llama-tok.c -lllama -lggml -lggml-base"
                            % work_chroot], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            print("tokdiff: skipped: cannot build llama-tok in the peer chroot:\n" + p.stdout.decode(errors="replace"))
            return 0
        cases = generate(a.n, a.seed)
        total_bad = 0
        for v in a.vocab or VOCABS:
            vpath = os.path.join(a.models, v + ".gguf")
            shutil.copy(vpath, work_host + "/vocab.gguf")
            sets = [("", cases)]
            chars = vocab_chars(vpath)
            if chars:  # most strings abort llama.cpp: also compare them with only the vocab's characters
                sets.append(("in-vocab", restrict(cases, chars, a.seed)))
            for tag, cs in sets:
                name = v + ("." + tag if tag else "")
                total_bad += compare(a, name, cs, vpath, work_host, work_chroot)
        return 1 if total_bad else 0
    finally:
        shutil.rmtree(work_host, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
