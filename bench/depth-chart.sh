#!/bin/sh
# Generation (and prompt) speed against context depth, rotkv's cache types and
# llama.cpp's (as it installs), on one model: a CSV, a Markdown table and a
# chart (docs/performance.md, "Long context").
#
#   sh bench/depth-chart.sh MODEL.gguf [OUT_PREFIX]
#
# Environment (defaults in brackets):
#   THREADS [2]  NG (generated tokens per run) [32]  NP (prompt tokens) [512]  REPS [2]
#   TYPES       rotkv cache types, K = V [f16,q8_0,q4_0,kt3.5]
#   DEPTHS      rotkv depths [0,4096,16384,32768]
#   PEER_TYPES  llama.cpp cache types, "" to skip it [f16,q8_0]
#   PEER_DEPTHS llama.cpp depths [0,4096,16384]
#   PEER_ROOT   chroot holding llama.cpp (../shared/peer) [/opt/peer]
#   PEER_REPS   llama-bench repetitions [REPS] (it refills the cache for each one)
# rotkv fills each type's cache once to the deepest depth (rotkv bench extends
# one fill from depth to depth); llama-bench fills every depth from scratch.
# Each depth's timed tokens attend over a cache the model filled itself.
# OUT_PREFIX [build/depth-chart] gets .csv, .md and .svg (gnuplot, if present).
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: sh bench/depth-chart.sh MODEL.gguf [OUT_PREFIX]" >&2; exit 2; }
model=$1
out=${2:-build/depth-chart}
THREADS=${THREADS:-2}
NG=${NG:-32}
NP=${NP:-512}
REPS=${REPS:-2}
TYPES=${TYPES:-f16,q8_0,q4_0,kt3.5}
DEPTHS=${DEPTHS:-0,4096,16384,32768}
PEER_TYPES=${PEER_TYPES-f16,q8_0}
PEER_DEPTHS=${PEER_DEPTHS:-0,4096,16384}
PEER_ROOT=${PEER_ROOT:-/opt/peer}
PEER_REPS=${PEER_REPS:-$REPS}
tmp=$(mktemp -d)
linked=""
cleanup() {
    for f in $linked; do rm -f "$f"; done
    rm -rf "$tmp"
}
trap cleanup EXIT
make -s build/rotkv
mkdir -p "$(dirname "$out")"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx_vnni|avx512[a-z_0-9]*)$' | tr '\n' ' ')
for t in $(echo "$TYPES" | tr ',' ' '); do
    echo "depth-chart: rotkv $t at $DEPTHS" >&2
    build/rotkv bench -m "$model" -t "$THREADS" -p "$NP" -n "$NG" -d "$DEPTHS" -ctk "$t" -ctv "$t" -r "$REPS" \
        -o json >"$tmp/rotkv.$t.json"
done
backend=""
if [ -n "$PEER_TYPES" ]; then
    [ -x "$PEER_ROOT/usr/bin/llama-bench" ] || { echo "depth-chart: no llama-bench in $PEER_ROOT" >&2; exit 1; }
    name=$(basename "$model")
    if [ ! -f "$PEER_ROOT/x/$name" ]; then
        ln -f "$model" "$PEER_ROOT/x/$name" 2>/dev/null || cp "$model" "$PEER_ROOT/x/$name"
        linked="$PEER_ROOT/x/$name"
    fi
    mountpoint -q "$PEER_ROOT/proc" || mount -t proc proc "$PEER_ROOT/proc"
    mountpoint -q "$PEER_ROOT/sys" || mount --bind /sys "$PEER_ROOT/sys"
    for t in $(echo "$PEER_TYPES" | tr ',' ' '); do
        echo "depth-chart: llama.cpp $t at $PEER_DEPTHS" >&2
        chroot "$PEER_ROOT" llama-bench -m "/x/$name" -t "$THREADS" -p "$NP" -n "$NG" -d "$PEER_DEPTHS" \
            -ctk "$t" -ctv "$t" -fa on -r "$PEER_REPS" -o json >"$tmp/peer.$t.json" 2>"$tmp/peer.$t.err" || {
            echo "depth-chart: llama-bench failed:" >&2; tail -3 "$tmp/peer.$t.err" >&2; exit 1; }
    done
    backend=$(sed -n 's/.*loaded CPU backend from //p' "$tmp"/peer.*.err | head -1)
fi
python3 - "$tmp" "$out" "$cpu" "$flags" "$backend" "$THREADS" "$NG" "$NP" "$REPS" "$PEER_REPS" <<'EOF'
import glob, json, os, sys
tmp, out, cpu, flags, backend, threads, ng, np_, reps, peer_reps = sys.argv[1:11]
rows = []
for path in sorted(glob.glob(os.path.join(tmp, "*.json"))):
    engine, kind = os.path.basename(path).split(".", 1)
    kind = kind[:-5]
    with open(path) as f:
        for r in json.load(f):
            test = "pp" if r["n_prompt"] else "tg"
            rows.append((engine if engine == "rotkv" else "llama.cpp", kind, test, int(r["n_depth"]),
                         float(r["avg_ts"]), float(r.get("kv_bytes_per_token", 0) or 0)))
with open(out + ".csv", "w") as f:
    f.write("engine,cache,test,depth,tok_s,kv_bytes_per_token\n")
    for r in rows:
        f.write("%s,%s,%s,%d,%.3f,%.1f\n" % r)
depths = sorted({r[3] for r in rows})
series = sorted({(r[0], r[1]) for r in rows}, key=lambda s: (s[0] != "rotkv", s[1]))
with open(out + ".md", "w") as f:
    f.write("CPU: %s; flags: %s; %s threads; llama.cpp backend `%s`, flash attention on; "
            "tg%s and pp%s, mean of %s runs each (llama.cpp: %s).\n\n" % (cpu, flags.strip(), threads,
            os.path.basename(backend) or "not run", ng, np_, reps, peer_reps))
    for test in ("tg", "pp"):
        f.write("| %s tok/s | %s |\n|---|%s\n" % (test + (ng if test == "tg" else np_),
                " | ".join("d%d" % d for d in depths), "---|" * len(depths)))
        for s in series:
            vals = {r[3]: r[4] for r in rows if (r[0], r[1]) == s and r[2] == test}
            f.write("| %s %s | %s |\n" % (s[0], s[1], " | ".join("%.2f" % vals[d] if d in vals else "" for d in depths)))
        f.write("\n")
with open(os.path.join(tmp, "plot.dat"), "w") as f:
    for s in series:
        f.write("# %s %s\n" % s)
        for r in sorted((r for r in rows if (r[0], r[1]) == s and r[2] == "tg"), key=lambda r: r[3]):
            f.write("%d %.3f\n" % (r[3], r[4]))
        f.write("\n\n")
with open(os.path.join(tmp, "plot.gp"), "w") as f:
    f.write('set terminal svg size 760,440 font "sans,11"\nset output "%s.svg"\n' % out)
    f.write('set title "tg%s tok/s against context depth (%s threads)"\n' % (ng, threads))
    f.write('set xlabel "depth (tokens in the cache)"\nset ylabel "tokens/s"\nset key outside right\nset grid\n')
    f.write("plot " + ", ".join('"%s" index %d with linespoints title "%s %s"' % (os.path.join(tmp, "plot.dat"), i, s[0], s[1])
                                for i, s in enumerate(series)) + "\n")
print(open(out + ".md").read())
EOF
if command -v gnuplot >/dev/null; then gnuplot "$tmp/plot.gp" && echo "depth-chart: wrote $out.svg" >&2; fi
