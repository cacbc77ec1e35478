#!/bin/sh
# rotkv vs llama.cpp on the same GGUF, threads and depths, side by side.
#
#   sh bench/compare.sh MODEL.gguf
#
# Environment (defaults in brackets):
#   PEER_ROOT   chroot holding Debian sid's llama.cpp [/opt/peer]; made by
#               sh ../shared/peer/peer-setup.sh $PEER_ROOT when PEER_SETUP=1
#   THREADS [2]  DEPTHS [0,4096]  NP (prompt tokens) [512]  NG (generated) [32]  REPS [2]
#   ROTKV_TYPES  cache types for rotkv     ["f16 q8_0 q4_0 kt3.5"]
#   PEER_TYPES   cache types for llama.cpp ["f16 q8_0"]
#   OUT          Markdown file whose compare section is replaced [docs/performance.md]
#   PEER_CACHE   directory keeping llama.cpp's JSON per (model, threads, depths,
#                NP, NG, REPS, type): a later run with the same settings reuses
#                it instead of re-running llama-bench (its depth-4096 runs take
#                ~25 min on 2 cores); the table then says when it was measured
# Builds only what is missing (make decides for rotkv; bench/membw.c once).
# Writes the table with ratios and the achieved memory bandwidth of each
# generation row, as a fraction of the peak that bench/membw.c measures.
set -eu
cd "$(dirname "$0")/.."
MODEL=${1:?usage: sh bench/compare.sh MODEL.gguf}
PEER_ROOT=${PEER_ROOT:-/opt/peer}
THREADS=${THREADS:-2}
DEPTHS=${DEPTHS:-0,4096}
NP=${NP:-512}
NG=${NG:-32}
REPS=${REPS:-2}
ROTKV_TYPES=${ROTKV_TYPES:-"f16 q8_0 q4_0 kt3.5"}
PEER_TYPES=${PEER_TYPES:-"f16 q8_0"}
OUT=${OUT:-docs/performance.md}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make -s build/rotkv
[ -x build/membw ] || cc -O2 -mavx2 -pthread bench/membw.c -o build/membw
peak=$(build/membw "$THREADS" 1024)
echo "compare: peak read bandwidth ${peak} GB/s ($THREADS threads)" >&2

for t in $ROTKV_TYPES; do
    echo "compare: rotkv $t" >&2
    ROTKV_LAB_TYPES=1 build/rotkv bench -m "$MODEL" -t "$THREADS" -p "$NP" -n "$NG" -d "$DEPTHS" -r "$REPS" \
        -ctk "$t" -ctv "$t" -o json >"$tmp/rotkv-$t.json"
done

peer_ok=0
if [ ! -x "$PEER_ROOT/usr/bin/llama-bench" ] && [ "${PEER_SETUP:-0}" = 1 ]; then
    sh ../shared/peer/peer-setup.sh "$PEER_ROOT" >&2
fi
if [ -x "$PEER_ROOT/usr/bin/llama-bench" ]; then
    peer_ok=1
    mkdir -p "$PEER_ROOT/x"
    ln -f "$MODEL" "$PEER_ROOT/x/model.gguf" 2>/dev/null || cp "$MODEL" "$PEER_ROOT/x/model.gguf"
    mountpoint -q "$PEER_ROOT/proc" || mount -t proc proc "$PEER_ROOT/proc" 2>/dev/null || true
    mountpoint -q "$PEER_ROOT/sys" || mount --bind /sys "$PEER_ROOT/sys" 2>/dev/null || true
    for t in $PEER_TYPES; do
        ckey="$(basename "$MODEL")-$(stat -c %s "$MODEL")-t$THREADS-d$(echo "$DEPTHS" | tr , _)-p$NP-n$NG-r$REPS-$t"
        if [ -n "${PEER_CACHE:-}" ] && [ -s "$PEER_CACHE/$ckey.json" ]; then
            echo "compare: llama.cpp $t from $PEER_CACHE/$ckey.json" >&2
            cp "$PEER_CACHE/$ckey.json" "$tmp/peer-$t.json"
            cached="${cached:-}$t measured $(date -u -r "$PEER_CACHE/$ckey.json" '+%Y-%m-%d %H:%M') UTC; "
            continue
        fi
        echo "compare: llama.cpp $t" >&2
        chroot "$PEER_ROOT" llama-bench -m /x/model.gguf -t "$THREADS" -p "$NP" -n "$NG" -d "$DEPTHS" -r "$REPS" \
            -ctk "$t" -ctv "$t" -fa 1 -o json >"$tmp/peer-$t.json" 2>"$tmp/peer-$t.err" || {
            echo "compare: llama-bench failed for $t:" >&2; tail -3 "$tmp/peer-$t.err" >&2; }
        if [ -n "${PEER_CACHE:-}" ] && [ -s "$tmp/peer-$t.json" ]; then
            mkdir -p "$PEER_CACHE" && cp "$tmp/peer-$t.json" "$PEER_CACHE/$ckey.json"
        fi
    done
    rm -f "$PEER_ROOT/x/model.gguf"
else
    echo "compare: no llama.cpp in $PEER_ROOT (PEER_SETUP=1 installs it, ~5 min): rotkv columns only" >&2
fi

python3 - "$tmp" "$MODEL" "$peak" "$THREADS" "$ROTKV_TYPES" "$PEER_TYPES" "$peer_ok" >"$tmp/table.md" <<'EOF'
import json, os, sys
tmp, model, peak, threads, rtypes, ptypes, peer_ok = sys.argv[1:8]
peak = float(peak)
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except Exception:
        return []
def key(r):
    test = ("pp%d" % r["n_prompt"]) if r["n_prompt"] else ("tg%d" % r["n_gen"])
    return (test, r["n_depth"])
rot = {t: {key(r): r for r in load(os.path.join(tmp, "rotkv-%s.json" % t))} for t in rtypes.split()}
peer = {t: {key(r): r for r in load(os.path.join(tmp, "peer-%s.json" % t))} for t in ptypes.split()} if peer_ok == "1" else {}
tests = sorted({k for d in rot.values() for k in d}, key=lambda k: (k[1], k[0]))
size = next((r["model_size"] for d in rot.values() for r in d.values()), 0)
print("Model `%s` (%.1f MiB of weights), %s threads; peak read bandwidth %.2f GB/s (bench/membw.c)." %
      (os.path.basename(model), size / 1048576, threads, peak))
print()
hdr = "| test | " + " | ".join("rotkv %s" % t for t in rot) + " | " + " | ".join("llama.cpp %s" % t for t in peer) + " |"
print(hdr)
print("|" + "---|" * (1 + len(rot) + len(peer)))
for k in tests:
    cells = []
    for t, d in rot.items():
        r = d.get(k)
        cells.append("%.2f ± %.2f" % (r["avg_ts"], r["stddev_ts"]) if r else "—")
    for t, d in peer.items():
        r = d.get(k)
        cells.append("%.2f ± %.2f" % (r["avg_ts"], r["stddev_ts"]) if r else "—")
    print("| %s @ d%d | %s |" % (k[0], k[1], " | ".join(cells)))
print()
if peer:
    print("Ratios rotkv / llama.cpp (same test):")
    print()
    print("| test | " + " | ".join("rotkv %s / llama %s" % (a, b) for a in rot for b in peer) + " |")
    print("|" + "---|" * (1 + len(rot) * len(peer)))
    for k in tests:
        cells = []
        for a in rot:
            for b in peer:
                ra, rb = rot[a].get(k), peer[b].get(k)
                cells.append("%.2f×" % (ra["avg_ts"] / rb["avg_ts"]) if ra and rb and rb["avg_ts"] > 0 else "—")
        print("| %s @ d%d | %s |" % (k[0], k[1], " | ".join(cells)))
    print()
print("Generation bandwidth: (weights + KV bytes/token × depth) × tokens/s, against the peak:")
print()
print("| test | " + " | ".join(rot) + " |")
print("|" + "---|" * (1 + len(rot)))
for k in tests:
    if not k[0].startswith("tg"):
        continue
    cells = []
    for t, d in rot.items():
        r = d.get(k)
        if not r:
            cells.append("—")
            continue
        gbs = (r["model_size"] + r["kv_bytes_per_token"] * r["n_depth"]) * r["avg_ts"] / 1e9
        cells.append("%.2f GB/s (%.0f%%)" % (gbs, 100 * gbs / peak))
    print("| %s @ d%d | %s |" % (k[0], k[1], " | ".join(cells)))
EOF

{
    echo "<!-- compare.sh begin -->"
    echo "Produced by \`THREADS=$THREADS DEPTHS=$DEPTHS NP=$NP NG=$NG REPS=$REPS sh bench/compare.sh $(basename "$MODEL")\` on $(date -u +%Y-%m-%d)."
    [ -n "${cached:-}" ] && echo "llama.cpp columns reused from PEER_CACHE (not re-run beside rotkv): ${cached}"
    echo
    cat "$tmp/table.md"
    echo "<!-- compare.sh end -->"
} >"$tmp/section.md"
if [ -f "$OUT" ] && grep -q '<!-- compare.sh begin -->' "$OUT"; then
    python3 - "$OUT" "$tmp/section.md" <<'EOF'
import sys
out, sec = sys.argv[1], open(sys.argv[2]).read()
s = open(out).read()
a = s.index("<!-- compare.sh begin -->"); b = s.index("<!-- compare.sh end -->") + len("<!-- compare.sh end -->")
open(out, "w").write(s[:a] + sec.rstrip("\n") + s[b:])
EOF
else
    { [ -f "$OUT" ] && cat "$OUT"; echo; echo "## rotkv vs llama.cpp (bench/compare.sh)"; echo; cat "$tmp/section.md"; } >"$tmp/out.md"
    cp "$tmp/out.md" "$OUT"
fi
cat "$tmp/table.md"
