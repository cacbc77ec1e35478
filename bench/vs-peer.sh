#!/bin/sh
# rotkv against llama.cpp as it installs, at depth 0: the engines alternate
# within each round (rotkv, then llama.cpp, on the same file), ROUNDS rounds,
# and the table gives each engine's median over the rounds and the ratio of
# the medians.
#
#   sh bench/vs-peer.sh MODEL.gguf [MODEL.gguf ...]
#
# Environment (defaults in brackets):
#   PEER_ROOT  chroot holding llama.cpp (../shared/peer/peer-setup.sh) [/opt/peer]
#   THREADS [2]  NP (prompt tokens) [512]  NG (generated tokens) [64]  ROUNDS [3]
#   VARIANT    llama.cpp CPU backend: "default" (the one it picks for the CPU)
#              or a variant name such as "haswell" (only that libggml-cpu-*.so
#              is visible to it, through a bind mount over its backends0/
#              directory for the duration of the run; nothing is moved) [default]
#   ROTKV_ISA  passed through to rotkv (e.g. avx2 beside VARIANT=haswell)
# The model file must be inside PEER_ROOT/x (or is hard-linked there).
# Prints a Markdown table; the generation columns add the achieved bandwidth
# (bytes of weights read per token × tokens/s) as a share of the bandwidth
# limit, peak read bandwidth (bench/membw.c, same threads) / bytes per token.
# The host's bandwidth moves with its other tenants (52 to 60 GB/s within
# minutes here), so membw runs in every round, between the two engines, and
# each round's share uses that round's peak; the table gives the median share.
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: sh bench/vs-peer.sh MODEL.gguf [MODEL.gguf ...]" >&2; exit 2; }
PEER_ROOT=${PEER_ROOT:-/opt/peer}
THREADS=${THREADS:-2}
NP=${NP:-512}
NG=${NG:-64}
ROUNDS=${ROUNDS:-3}
VARIANT=${VARIANT:-default}
[ -x "$PEER_ROOT/usr/bin/llama-bench" ] || { echo "vs-peer: no llama-bench in $PEER_ROOT" >&2; exit 1; }
tmp=$(mktemp -d)
bdir=$(dirname "$(ls -d "$PEER_ROOT"/usr/lib/*/ggml/backends0 | head -1)")/backends0
linked=""
cleanup() {
    mountpoint -q "$bdir" && umount "$bdir"
    for f in $linked; do rm -f "$f"; done
    rm -rf "$tmp"
}
trap cleanup EXIT
make -s build/rotkv
[ -x build/membw ] || cc -O2 -mavx2 -pthread bench/membw.c -o build/membw
mountpoint -q "$PEER_ROOT/proc" || mount -t proc proc "$PEER_ROOT/proc"
mountpoint -q "$PEER_ROOT/sys" || mount --bind /sys "$PEER_ROOT/sys"
if [ "$VARIANT" != default ]; then
    lib="$bdir/libggml-cpu-$VARIANT.so"
    [ -f "$lib" ] || { echo "vs-peer: no $lib" >&2; exit 1; }
    mkdir "$tmp/only" && cp "$lib" "$tmp/only/" && mount --bind "$tmp/only" "$bdir"
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx_vnni|avx512[a-z_0-9]*)$' | tr '\n' ' ')

for model in "$@"; do
    name=$(basename "$model")
    inside="$PEER_ROOT/x/$name"
    if [ ! -f "$inside" ]; then
        ln -f "$model" "$inside" 2>/dev/null || cp "$model" "$inside"
        linked="$linked $inside"
    fi
    r=1
    while [ $r -le "$ROUNDS" ]; do
        echo "vs-peer: $name round $r/$ROUNDS" >&2
        build/rotkv bench -m "$model" -t "$THREADS" -p "$NP" -n "$NG" -d 0 -r 1 -o json >"$tmp/$name.rotkv.$r.json"
        build/membw "$THREADS" 1024 >"$tmp/$name.bw.$r"
        chroot "$PEER_ROOT" llama-bench -m "/x/$name" -t "$THREADS" -p "$NP" -n "$NG" -r 1 -o json \
            >"$tmp/$name.peer.$r.json" 2>"$tmp/$name.peer.$r.err" || {
            echo "vs-peer: llama-bench failed:" >&2; tail -3 "$tmp/$name.peer.$r.err" >&2; exit 1; }
        r=$((r + 1))
    done
done
backend=$(sed -n 's/.*loaded CPU backend from //p' "$tmp"/*.peer.1.err | head -1)

python3 - "$tmp" "$THREADS" "$NP" "$NG" "$ROUNDS" "$backend" "$cpu" "$flags" "${ROTKV_ISA:-}" "$@" <<'EOF'
import json, os, statistics, sys
tmp, threads, np_, ng, rounds, backend, cpu, flags, isa = sys.argv[1:10]
models = sys.argv[10:]
rounds = int(rounds)
def rows(path):
    with open(path) as f:
        d = json.load(f)
    out = {}
    for r in d:
        test = "pp" if r["n_prompt"] else "tg"
        out[test] = r
    return out
print("CPU: %s; flags: %s" % (cpu, flags.strip()))
print("llama.cpp backend: `%s`; rotkv kernels: %s; %s threads; peak read bandwidth from bench/membw.c in every round."
      % (os.path.basename(backend) or "?", isa or "default (best for the CPU)", threads))
print()
print("| model | rotkv pp%s | llama.cpp pp%s | ratio | rotkv tg%s | llama.cpp tg%s | ratio | peak GB/s | rotkv tg GB/s (of limit) | llama.cpp tg GB/s (of limit) |" % (np_, np_, ng, ng))
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    name = os.path.basename(m)
    rk = [rows(os.path.join(tmp, "%s.rotkv.%d.json" % (name, i))) for i in range(1, rounds + 1)]
    pk = [rows(os.path.join(tmp, "%s.peer.%d.json" % (name, i))) for i in range(1, rounds + 1)]
    med = lambda rs, t: statistics.median(r[t]["avg_ts"] for r in rs)
    lst = lambda rs, t: "/".join("%.1f" % r[t]["avg_ts"] for r in rs)
    rp, pp, rt, pt = med(rk, "pp"), med(pk, "pp"), med(rk, "tg"), med(pk, "tg")
    # bytes read per generated token: rotkv's own count (weights it streams, as
    # repacked); the file's tensor bytes for llama.cpp
    bpt = rk[0]["tg"].get("bytes_per_token_read") or rk[0]["tg"]["model_size"]
    pbpt = pk[0]["tg"]["model_size"]
    bw = [float(open(os.path.join(tmp, "%s.bw.%d" % (name, i))).read()) for i in range(1, rounds + 1)]
    # each round's share of its own peak, then the median over the rounds
    rsh = statistics.median(bpt * r["tg"]["avg_ts"] / 1e9 / b for r, b in zip(rk, bw))
    psh = statistics.median(pbpt * r["tg"]["avg_ts"] / 1e9 / b for r, b in zip(pk, bw))
    print("| %s | %.1f (%s) | %.1f (%s) | %.2f× | %.1f (%s) | %.1f (%s) | %.2f× | %s | %.1f (%.0f%%) | %.1f (%.0f%%) |" % (
        name, rp, lst(rk, "pp"), pp, lst(pk, "pp"), rp / pp, rt, lst(rk, "tg"), pt, lst(pk, "tg"), rt / pt,
        "/".join("%.1f" % b for b in bw), bpt * rt / 1e9, 100 * rsh, pbpt * pt / 1e9, 100 * psh))
print()
print("Medians of %d rounds (each round: rotkv, membw, then llama.cpp, -r 1 each; the rounds' values in brackets;"
      " the share of the limit is the median of each round's tg x bytes per token / that round's peak)." % rounds)
EOF
