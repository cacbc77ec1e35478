#!/bin/sh
# Makes the test models of the phi3, qwen3moe, qwen2moe, Mixtral (llama MoE), gemma2,
# gemma3 and gpt-oss architectures in tests/models/ and their golden logits, with the reference
# peer (../shared/peer: llama.cpp, transformers and llama.cpp's converter in a
# chroot, see ../shared/peer/README.md). Run as root from the repository root:
#     sh scripts/make-test-models.sh [PEER_ROOT [NAME...]]  (default /opt/peer, all models)
# Steps: scripts/make_test_models.py builds each tiny random HF model with
# transformers and converts it with convert_hf_to_gguf.py to F32 and F16;
# llama-quantize makes Q8_0 and Q4_0 from the F32 file; llama-logits.c (built in
# the chroot, with -lm added to the command at its top) writes tests/models/<model>.logits.txt for tests/models/prompt.txt
# in the format of ../shared/golden (32 greedy steps, f16 cache, flash attention).
set -eu
PEER=${1:-/opt/peer}
[ $# -gt 0 ] && shift
ONLY="$*"   # e.g. "syn-gemma2 syn-gemma3": only these (their seeds do not change)
want() { [ -z "$ONLY" ] || case " $ONLY " in *" $1 "*) return 0;; *) return 1;; esac; }
SHARED=${ROTKV_SHARED:-../shared}
[ -x "$PEER/usr/bin/llama-quantize" ] || { echo "no peer chroot at $PEER (sh $SHARED/peer/peer-setup.sh $PEER)" >&2; exit 1; }
mountpoint -q "$PEER/proc" || mount -t proc proc "$PEER/proc"
WN=${ROTKV_PEER_WORK:-rotkv-test-models}   # the work directory under the chroot's /x
W=$PEER/x/$WN
rm -rf "$W" && mkdir -p "$W/tmpl" "$W/out"
cp scripts/make_test_models.py "$SHARED/peer/llama-logits.c" tests/models/prompt.txt "$W/"
cp "$SHARED/models/tinystories-656k-f32.gguf" "$W/vocab.gguf"
cp tests/server/templates/phi3-mini.jinja tests/server/templates/mistral-v0.2.jinja tests/server/templates/qwen2.5.jinja \
    tests/server/templates/gemma-it.jinja tests/server/templates/gemma3-it.jinja \
    tests/server/templates/gpt-oss.jinja "$W/tmpl/"
# Qwen3's real template, from the shared Qwen3 vocab
cp "$SHARED/models/vocab-qwen3.gguf" "$W/vocab-qwen3.gguf"
chroot "$PEER" python3 -c "
import gguf
r = gguf.GGUFReader('/x/$WN/vocab-qwen3.gguf')
open('/x/$WN/tmpl/qwen3.jinja', 'w').write(r.fields['tokenizer.chat_template'].contents())"
chroot "$PEER" sh -c 'cd /x/'"$WN"' && OMP_NUM_THREADS=2 python3 make_test_models.py vocab.gguf tmpl out '"$ONLY"' >make.log 2>&1' ||
    { tail -20 "$W/out/make.log" "$W/make.log" 2>/dev/null; exit 1; }
chroot "$PEER" sh -c 'cd /x/'"$WN"' && gcc -O2 -o llama-logits llama-logits.c -lllama -lggml -lggml-base -lm'
# golden logits: NAME TYPE [GOLDEN-SUFFIX LLAMA-LOGITS-OPTIONS]
golden() {
    chroot "$PEER" sh -c "cd /x/$WN && ./llama-logits -m out/$1-$2.gguf -f prompt.txt -t 2 ${4:--n 32}" \
        >"$W/out/$1-$2${3:-}.logits.txt" 2>"$W/logits-$1-$2${3:-}.log" || { tail "$W/logits-$1-$2${3:-}.log"; exit 1; }
    cp "$W/out/$1-$2.gguf" "$W/out/$1-$2${3:-}.logits.txt" tests/models/
}
quantize() {
    chroot "$PEER" llama-quantize /x/$WN/out/$1-F32.gguf /x/$WN/out/$1-$2.gguf $2 2 \
        >"$W/quantize-$1-$2.log" 2>&1 || { tail "$W/quantize-$1-$2.log"; exit 1; }
}
for m in syn-phi3 syn-qwen3moe syn-mixtral; do  # (syn-phi3-longrope below)
    want $m || continue
    quantize $m Q8_0
    quantize $m Q4_0
    for t in F32 F16 Q8_0 Q4_0; do golden $m $t; done
done
# mxfp4 experts (gpt-oss's weight type): llama-quantize's MXFP4_MOE puts the 3-D expert
# tensors in mxfp4 and the rest in q8_0
if want syn-qwen3moe; then
    quantize syn-qwen3moe MXFP4_MOE
    golden syn-qwen3moe MXFP4_MOE
fi
if want syn-qwen2moe; then
quantize syn-qwen2moe Q8_0
golden syn-qwen2moe F32
golden syn-qwen2moe Q8_0
fi
# LongRoPE (original context 256): llama.cpp rounds its context up to a multiple of 256
# and takes the long factors above 256: the default context of 150 (110 prompt tokens +
# 32 steps + 8) uses the short ones, -c 300 the long ones
if want syn-phi3-longrope; then
quantize syn-phi3-longrope Q8_0
golden syn-phi3-longrope F32
golden syn-phi3-longrope Q8_0
golden syn-phi3-longrope F32 .ctx300 "-n 32 -c 300"
golden syn-phi3-longrope Q8_0 .ctx300 "-n 32 -c 300"
fi
# Gemma 2 / Gemma 3 (sliding window 16): the prompt's 110 tokens and 32 greedy steps run
# far past the window, so the window's mask and the ring cache are exercised
for m in syn-gemma2 syn-gemma3; do
    want $m || continue
    quantize $m Q8_0
    quantize $m Q4_0
    for t in F32 F16 Q8_0 Q4_0; do golden $m $t; done
done
# gpt-oss (sliding window 16 on every other layer, sinks, YaRN): the experts in mxfp4 as gpt-oss ships
# them (llama-quantize MXFP4_MOE: the rest q8_0), and Q8_0
if want syn-gptoss; then
    quantize syn-gptoss Q8_0
    quantize syn-gptoss MXFP4_MOE
    for t in F32 F16 Q8_0 MXFP4_MOE; do golden syn-gptoss $t; done
fi
# gpt-oss's pre-tokenizer ("gpt-4o") on the shared Qwen3 vocabulary: llama.cpp's ids for the shared
# tokenizer lines and tests/models/tok-lines-gpt4o.txt (test_tokenizer runs the same vocabulary with
# the pre-tokenizer overridden)
if want tok-gpt4o; then
    cp "$SHARED/peer/llama-tok.c" "$SHARED/golden/tokenizer-lines.txt" tests/models/tok-lines-gpt4o.txt "$W/"
    chroot "$PEER" sh -c 'cd /x/'"$WN"' && python3 -m gguf.scripts.gguf_new_metadata --pre-tokenizer gpt-4o --force \
        vocab-qwen3.gguf vocab-qwen3-gpt4o.gguf >tok-gpt4o.log 2>&1 &&
        gcc -O2 -o llama-tok llama-tok.c -lllama -lggml -lggml-base &&
        cat tokenizer-lines.txt tok-lines-gpt4o.txt >tok-lines-all.txt &&
        ./llama-tok vocab-qwen3-gpt4o.gguf tok-lines-all.txt >tok-vocab-qwen3-gpt4o.txt 2>>tok-gpt4o.log' ||
        { tail "$W/tok-gpt4o.log"; exit 1; }
    cp "$W/tok-vocab-qwen3-gpt4o.txt" tests/models/
fi
ls -l tests/models/
