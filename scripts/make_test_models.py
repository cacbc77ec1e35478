#!/usr/bin/env python3
"""Tiny random-weight HF models of the phi3, qwen3moe, qwen2moe, Mixtral (llama MoE), gemma2,
gemma3 and gpt-oss architectures, converted to GGUF with llama.cpp's own converter.

Runs inside the peer chroot (../shared/peer: python3-torch, python3-transformers,
llama.cpp's convert_hf_to_gguf.py); scripts/make-test-models.sh drives it.

    python3 make_test_models.py VOCAB.gguf TEMPLATE_DIR OUT_DIR [NAME...]

Each model gets the TinyStories-656K tokenizer (2048 tokens, copied from
VOCAB.gguf instead of the converter's set_vocab, which would want each family's
own tokenizer files) and its family's real chat template from TEMPLATE_DIR, so
any text tokenizes and `rotkv chat` recognises the template. Writes
OUT_DIR/<name>-F32.gguf and <name>-F16.gguf; quantized files are made from the
F32 one with llama-quantize."""
import json
import os
import runpy
import sys

import torch
import transformers

CONVERT = "/usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py"
sys.path.insert(1, "/usr/share/llama.cpp/llama.cpp-tools")
import gguf  # noqa: E402
from conversion import gemma as conv_gemma, gpt_oss as conv_gpt_oss, llama as conv_llama, phi as conv_phi  # noqa: E402
from conversion import qwen as conv_qwen  # noqa: E402

VOCAB = 2048


def shapes():
    """name -> (config, template file). Small shapes; every matrix row a multiple of
    32 values so Q8_0/Q4_0 apply to all of them."""
    common = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    return {
        # Phi-3: fused qkv_proj and gate_up_proj; partial rotary (as Phi-4-mini), GQA
        "syn-phi3": (transformers.Phi3Config(intermediate_size=128, rope_theta=10000.0,
                                             partial_rotary_factor=0.75,
                                             original_max_position_embeddings=4096, **common),
                     "phi3-mini.jinja"),
        # Qwen3-MoE: head_dim 32 (q is 128 wide on hidden 64), 8 experts, top-2, normalized
        "syn-qwen3moe": (transformers.Qwen3MoeConfig(head_dim=32, intermediate_size=128,
                                                     moe_intermediate_size=64, num_experts=8,
                                                     num_experts_per_tok=2, norm_topk_prob=True,
                                                     decoder_sparse_step=1, mlp_only_layers=[],
                                                     rope_theta=1000000.0, **common),
                         "qwen3.jinja"),
        # Mixtral: llama arch with llama.expert_count/expert_used_count, 4 experts, top-2
        "syn-mixtral": (transformers.MixtralConfig(intermediate_size=64, num_local_experts=4,
                                                   num_experts_per_tok=2, rope_theta=1000000.0,
                                                   **common),
                        "mistral-v0.2.jinja"),
        # Phi-3 with LongRoPE (as Phi-3.5-mini / Phi-3-mini-128k): trained context 1024 from an
        # original 256, short and long frequency factors for the 6 rotated pairs; the converter
        # writes rope_factors_short/long and rope.scaling.attn_factor sqrt(1 + ln 4 / ln 256)
        "syn-phi3-longrope": (transformers.Phi3Config(
            intermediate_size=128, partial_rotary_factor=0.75, original_max_position_embeddings=256,
            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                             "original_max_position_embeddings": 256,
                             "long_factor": [1.0, 1.6, 2.5, 4.0, 6.0, 9.0],
                             "short_factor": [1.0, 1.05, 1.1, 1.25, 1.4, 1.6]},
            **{**common, "max_position_embeddings": 1024}), "phi3-mini.jinja"),
        # Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): q/k/v biases, 8 experts of 64, top-2 with the
        # weights as they are (norm_topk_prob off), a shared expert of 96 behind a sigmoid gate
        "syn-qwen2moe": (transformers.Qwen2MoeConfig(intermediate_size=128, moe_intermediate_size=64,
                                                     shared_expert_intermediate_size=96, num_experts=8,
                                                     num_experts_per_tok=2, norm_topk_prob=False,
                                                     decoder_sparse_step=1, mlp_only_layers=[],
                                                     rope_theta=1000000.0, **common),
                         "qwen2.5.jinja"),
        # Gemma 2: sliding window 16 on layers 0 and 2 (llama.cpp's pattern 2), global layers 1 and 3;
        # attention and final logit soft-capping at 4 and 10 (the real 50 and 30 would never bite
        # with random weights; q/k weights are scaled up below so the scores reach the cap);
        # GeGLU, post-attention/post-FFN norms, tied embeddings scaled by sqrt(hidden)
        "syn-gemma2": (transformers.Gemma2Config(
            head_dim=32, intermediate_size=128, sliding_window=16, attn_logit_softcapping=4.0,
            final_logit_softcapping=10.0, query_pre_attn_scalar=32, hidden_activation="gelu_pytorch_tanh",
            rope_theta=10000.0, **{**common, "num_hidden_layers": 4, "tie_word_embeddings": True}),
            "gemma-it.jinja"),
        # Gemma 3: 5 sliding-window layers (window 16, local RoPE base 20000) to 1 global layer
        # (base 1e6, linear RoPE scaling 8 as Gemma-3-4B and up), per-head q/k RMSNorm, no soft-capping
        "syn-gemma3": (transformers.Gemma3TextConfig(
            head_dim=32, intermediate_size=128, sliding_window=16, query_pre_attn_scalar=32,
            hidden_activation="gelu_pytorch_tanh",
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 20000.0},
                             "full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 8.0}},
            **{**common, "num_hidden_layers": 6, "tie_word_embeddings": True}),
            "gemma3-it.jinja"),
        # gpt-oss (GptOssForCausalLM, GGUF arch "gpt-oss"): 4 layers alternating sliding window 16 (layers
        # 0 and 2) and global; head_dim 64 (q 256 wide on hidden 64), learned attention sinks per head,
        # q/k/v/o biases; 4 experts of 64 with biases, top-2 with the softmax over the chosen logits;
        # the clamped SwiGLU (alpha 1.702, limit 7); gpt-oss's own RoPE: base 150000 with YaRN factor 32
        # on an original context of 4096, beta_fast 32, beta_slow 1 (HF's defaults for this config)
        "syn-gptoss": (transformers.GptOssConfig(
            head_dim=64, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
            rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                             "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
            attention_bias=True, **{**common, "num_hidden_layers": 4, "max_position_embeddings": 131072}),
            "gpt-oss.jinja"),
    }


def tinystories_vocab(vocab_path, template):
    r = gguf.GGUFReader(vocab_path)

    def field(k):
        return r.fields[k].contents()

    def set_vocab(self):
        w = self.gguf_writer
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(field("tokenizer.ggml.tokens"))
        w.add_token_scores(field("tokenizer.ggml.scores"))
        w.add_token_types(field("tokenizer.ggml.token_type"))
        w.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
        w.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
        w.add_unk_token_id(field("tokenizer.ggml.unknown_token_id"))
        w.add_pad_token_id(field("tokenizer.ggml.padding_token_id"))
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_chat_template(template)
    return set_vocab


def main():
    vocab_path, template_dir, out_dir = sys.argv[1:4]
    only = sys.argv[4:]  # model names to make (default: all); the seeds do not depend on it
    os.makedirs(out_dir, exist_ok=True)
    for seed, (name, (cfg, tmpl)) in enumerate(shapes().items()):
        if only and name not in only:
            continue
        torch.manual_seed(1234 + seed)
        cfg.initializer_range = 0.05  # HF's 0.02 leaves random models with nearly flat logits
        model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if name == "syn-gptoss" and pname.endswith("sinks"):  # sink logits that weigh against
                    p.copy_(0.5 + 1.0 * torch.randn_like(p))               # the 16..142 positions' scores
                elif name == "syn-gptoss" and pname.endswith("experts.gate_up_proj_bias"):
                    p.normal_(0.0, 4.0)  # gate and up values beyond the clamp at 7 in a few percent of the units
                elif name == "syn-gptoss" and pname.endswith(("bias", "_bias")):  # q/k/v/o, router, experts' down
                    p.normal_(0.0, 0.1)
                elif name == "syn-gptoss" and pname.endswith("experts.down_proj"):
                    p.normal_(0.0, 0.01)  # (the gated values reach 7 * 8)
                elif name == "syn-gptoss" and pname.endswith("mlp.router.weight"):  # clear top-k choices
                    p.normal_(0.0, 0.25)
                elif p.dim() == 1:  # norms away from 1, so a misapplied norm weight shows
                    # (gemma's norms multiply by 1 + w: w itself is drawn around 0)
                    p.copy_((0.0 if name.startswith("syn-gemma") else 1.0) + 0.2 * torch.randn_like(p))
                elif pname == "lm_head.weight":  # logits with clear winners (std ~2), not near-ties
                    p.normal_(0.0, 0.3)
                elif pname.endswith("embed_tokens.weight") and cfg.tie_word_embeddings:  # (gemma: the lm_head)
                    p.normal_(0.0, 0.3)
                elif name == "syn-gemma2" and pname.endswith(("q_proj.weight", "k_proj.weight")):
                    p.normal_(0.0, 0.2)  # attention scores of a few units: the soft-cap of 4 bites
                elif pname.endswith("mlp.gate.weight"):  # routers with clear top-k choices
                    p.normal_(0.0, 0.25)
        hf_dir = os.path.join(out_dir, name + "-hf")
        model.save_pretrained(hf_dir, safe_serialization=True)
        # Gemma 3's converter cuts token_embd to the vocabulary of tokenizer.json
        with open(os.path.join(hf_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump({"model": {"vocab": {f"t{i}": i for i in range(VOCAB)}}, "added_tokens": []}, f)
        with open(os.path.join(template_dir, tmpl), encoding="utf-8") as f:
            template = f.read()
        sv = tinystories_vocab(vocab_path, template)
        for cls in (conv_phi.Phi3MiniModel, conv_qwen.Qwen3MoeModel, conv_qwen.Qwen2MoeModel, conv_llama.LlamaModel,
                    conv_gemma.Gemma2Model, conv_gemma.Gemma3Model, conv_gpt_oss.GptOssModel):
            cls.set_vocab = sv
        for outtype in ("f32", "f16"):
            out = os.path.join(out_dir, f"{name}-{outtype.upper()}.gguf")
            # general.name without "phi3": llama.cpp would then look up Phi-3's own special
            # tokens (<|end|>, ...) by name, which the TinyStories vocab does not have
            sys.argv = [CONVERT, hf_dir, "--outtype", outtype, "--outfile", out,
                        "--model-name", "rotkv test " + name.replace("syn-", "").replace("phi3", "p3")]
            try:
                runpy.run_path(CONVERT, run_name="__main__")
            except SystemExit as e:
                if e.code:
                    raise
        print("made", name)


if __name__ == "__main__":
    main()
