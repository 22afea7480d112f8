"""Generate the reference checkpoints, logits and greedy continuations that
`swift test` checks the engine against (Tests/SwitchyardModelTests/Fixtures/models).

Run once with `pip install torch transformers safetensors`; the outputs are
committed, so CI never needs Python. Dimensions are deliberately odd (GQA
ratio != 1, vocab not a power of two, per-case expert counts and top-k) so a
transposed or mis-strided tensor cannot go unnoticed.

Usage: `python3 make_model_references.py [OUT_DIR [CASE ...]]`; with no case
names every case is (re)generated, otherwise only the named ones, so adding a
case never rewrites the committed fixtures of the others. Each case's seeds
come from its index in CASES: append new cases at the end.
"""
import copy, json, os, shutil, struct, sys
import torch
import transformers
from transformers import (MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3MoeConfig, Qwen3MoeForCausalLM, OlmoeConfig, OlmoeForCausalLM,
                          DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM,
                          Glm4MoeConfig, Glm4MoeForCausalLM, GptOssConfig, GptOssForCausalLM)
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/SwitchyardModelTests/Fixtures/models"
ONLY = sys.argv[2:]
SEQ_LEN = 21
GREEDY = 16
# Cases whose prompt is longer than SEQ_LEN.
PROMPT_LEN = {"deepseek_v3_long_prompt": 150}

def perturb(model, seed):
    """HF initialises norms to 1 and biases to 0, which would hide a missing or
    misplaced norm weight or bias; give every parameter a random value. The
    DeepSeek-V3 router's `e_score_correction_bias` is a buffer (zeros, saved
    with the weights), so it is randomised too, after the parameters (the
    earlier cases have no such buffer, so their draws are unchanged)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))

# YaRN as DeepSeek-V2/V3 ship it (mscale == mscale_all_dim, so the cos/sin
# attention factor is 1 and the softmax scale carries mscale^2), with a short
# original context so the ramp mixes extrapolated and interpolated frequencies.
YARN = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=64,
            mscale=0.707, mscale_all_dim=0.707, beta_fast=32.0, beta_slow=1.0)

# gpt-oss: YaRN as openai/gpt-oss-20b ships it (theta 150000, beta 32/1, no
# truncation of the correction range, attention factor 0.1 ln(factor) + 1 on
# cos and sin), with a short original context so the ramp mixes frequencies.
GPT_OSS_YARN = dict(rope_type="yarn", rope_theta=150000.0, factor=4.0, original_max_position_embeddings=64,
                    beta_fast=32.0, beta_slow=1.0, truncate=False)

def gpt_oss_tweak(model, g, widen=4.0):
    """Sinks large enough to matter (some heads nearly silenced, some not at
    all), and expert gate_up weights `widen` times wider so the clamped
    SwiGLU's limit is reached on a few percent of the gate and up values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("self_attn.sinks"):
                p.copy_(2.0 * torch.randn(p.shape, generator=g))
            elif name.endswith("experts.gate_up_proj"):
                p.mul_(widen)

def gpt_oss_mxfp4_tweak(model, g):
    """As gpt_oss_tweak, and every 32-value block of every expert weight row
    scaled by its own power of two, so the blocks' MXFP4 scales differ and
    a scale applied to the wrong block shows."""
    gpt_oss_tweak(model, g, widen=2.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                E, K, O = p.shape  # [experts, in, out]
                f = 2.0 ** torch.randint(-2, 2, (E, K // 32, O), generator=g).float()
                p.mul_(f.repeat_interleave(32, dim=1))

CASES = [
    ("mixtral", MixtralConfig, MixtralForCausalLM, dict(
        vocab_size=251, hidden_size=48, intermediate_size=40, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, num_local_experts=5, num_experts_per_tok=2,
        rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=512), "float32", None),
    ("qwen2_moe", Qwen2MoeConfig, Qwen2MoeForCausalLM, dict(
        vocab_size=317, hidden_size=64, intermediate_size=56, moe_intermediate_size=24,
        shared_expert_intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, num_experts=7, num_experts_per_tok=3, norm_topk_prob=False,
        decoder_sparse_step=1, mlp_only_layers=[1], rope_theta=50000.0, rms_norm_eps=1e-6,
        max_position_embeddings=512, tie_word_embeddings=False), "float32", None),
    ("qwen3_moe", Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        vocab_size=199, hidden_size=40, intermediate_size=44, moe_intermediate_size=20,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=12,
        num_experts=6, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=2,
        mlp_only_layers=[], rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=512,
        tie_word_embeddings=True), "float32", None),
    ("olmoe", OlmoeConfig, OlmoeForCausalLM, dict(
        vocab_size=263, hidden_size=48, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=3, num_experts=9, num_experts_per_tok=4,
        norm_topk_prob=False, rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=512,
        clip_qkv=2.5), "float32", None),
    # BF16 weights, saved in small shards so the index path is exercised. The
    # reference runs in fp32 on the same (bf16-representable) weights.
    ("qwen3_moe_bf16_sharded", Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        vocab_size=211, hidden_size=32, intermediate_size=24, moe_intermediate_size=16,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=8, num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=1,
        mlp_only_layers=[], rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=512,
        tie_word_embeddings=False), "bfloat16", "40KB"),
    # DeepSeek MLA (latent KV, decoupled RoPE head, v_head_dim != qk_head_dim),
    # dense first layer, shared experts. V2: softmax router, plain top-k.
    ("deepseek_v2", DeepseekV2Config, DeepseekV2ForCausalLM, dict(
        vocab_size=241, hidden_size=48, intermediate_size=40, moe_intermediate_size=12,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, first_k_dense_replace=1,
        n_routed_experts=7, num_experts_per_tok=3, n_shared_experts=2, topk_method="greedy",
        norm_topk_prob=False, routed_scaling_factor=1.0, q_lora_rank=None, kv_lora_rank=20,
        qk_nope_head_dim=10, qk_rope_head_dim=8, v_head_dim=14,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), rms_norm_eps=1e-6,
        max_position_embeddings=512, tie_word_embeddings=False), "float32", None),
    # V2 group-limited greedy (softmax, best expert per group picks the groups),
    # low-rank q with its norm, attention biases, YaRN.
    ("deepseek_v2_group", DeepseekV2Config, DeepseekV2ForCausalLM, dict(
        vocab_size=233, hidden_size=40, intermediate_size=36, moe_intermediate_size=10,
        num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=5, first_k_dense_replace=1,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, topk_method="group_limited_greedy",
        n_group=4, topk_group=2, norm_topk_prob=False, routed_scaling_factor=2.0, q_lora_rank=24,
        kv_lora_rank=18, qk_nope_head_dim=6, qk_rope_head_dim=12, v_head_dim=10, attention_bias=True,
        rope_parameters=dict(YARN), rms_norm_eps=1e-6, max_position_embeddings=256,
        tie_word_embeddings=False), "float32", None),
    # V3: sigmoid router, e_score_correction_bias for the choice only, groups
    # ranked by their top-2 sum, normalised top-k, interleaved RoPE, YaRN.
    ("deepseek_v3", DeepseekV3Config, DeepseekV3ForCausalLM, dict(
        vocab_size=229, hidden_size=40, intermediate_size=36, moe_intermediate_size=12,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, first_k_dense_replace=1,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, n_group=4, topk_group=2,
        norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=24, kv_lora_rank=20,
        qk_nope_head_dim=10, qk_rope_head_dim=8, v_head_dim=14, rope_interleave=True,
        rope_parameters=dict(YARN), rms_norm_eps=1e-6, max_position_embeddings=256,
        tie_word_embeddings=False), "float32", None),
    # V3 with half-split RoPE, full-rank q, unnormalised top-k and groups of 3
    # (top-2 sum != group sum); BF16 in shards. The router's correction bias
    # stays float32 in the checkpoint, as DeepSeek-V3 ships it.
    ("deepseek_v3_noninterleaved_bf16_sharded", DeepseekV3Config, DeepseekV3ForCausalLM, dict(
        vocab_size=223, hidden_size=32, intermediate_size=28, moe_intermediate_size=8,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, first_k_dense_replace=2,
        n_routed_experts=9, num_experts_per_tok=3, n_shared_experts=2, n_group=3, topk_group=2,
        norm_topk_prob=False, routed_scaling_factor=1.5, q_lora_rank=None, kv_lora_rank=16,
        qk_nope_head_dim=8, qk_rope_head_dim=6, v_head_dim=10, rope_interleave=False,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), rms_norm_eps=1e-6,
        max_position_embeddings=512, tie_word_embeddings=False), "bfloat16", "30KB"),
    # GLM-4.5: DeepSeek-V3's sigmoid + correction-bias router (groups by
    # top-2 sum) on plain GQA attention with q/k/v biases, per-head q/k
    # RMSNorm, partial rotate-half RoPE over the first half of each head
    # (head_dim != hidden / heads), a dense first layer and a shared expert.
    ("glm4_moe", Glm4MoeConfig, Glm4MoeForCausalLM, dict(
        vocab_size=239, hidden_size=48, intermediate_size=40, moe_intermediate_size=12,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        partial_rotary_factor=0.5, use_qk_norm=True, attention_bias=True, first_k_dense_replace=1,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, n_group=2, topk_group=1,
        norm_topk_prob=True, routed_scaling_factor=1.8,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0), rms_norm_eps=1e-5,
        max_position_embeddings=512, tie_word_embeddings=False), "float32", None),
    # GLM-4.5 as published: no qk-norm, one group, BF16 in shards (the
    # correction bias float32); rotary over 6 of 12 head dims, two shared
    # experts, unnormalised top-k.
    ("glm4_moe_bf16_sharded", Glm4MoeConfig, Glm4MoeForCausalLM, dict(
        vocab_size=227, hidden_size=32, intermediate_size=24, moe_intermediate_size=10,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
        partial_rotary_factor=0.5, use_qk_norm=False, attention_bias=True, first_k_dense_replace=1,
        n_routed_experts=6, num_experts_per_tok=2, n_shared_experts=2, n_group=1, topk_group=1,
        norm_topk_prob=False, routed_scaling_factor=2.5,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0), rms_norm_eps=1e-5,
        max_position_embeddings=512, tie_word_embeddings=False), "bfloat16", "30KB"),
    # gpt-oss: attention sinks, biases everywhere, alternating sliding-window
    # (6 < prompt) and full layers, YaRN, router top-k then softmax, clamped
    # SwiGLU with interleaved gate/up columns, experts as fused [E, in, out].
    ("gpt_oss", GptOssConfig, GptOssForCausalLM, dict(
        vocab_size=251, hidden_size=36, intermediate_size=24, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
        num_experts_per_tok=2, sliding_window=6,
        layer_types=["sliding_attention", "full_attention"] * 2, swiglu_limit=7.0,
        rope_parameters=dict(GPT_OSS_YARN), rms_norm_eps=1e-5, max_position_embeddings=256,
        tie_word_embeddings=False), "float32", None, gpt_oss_tweak),
    # The same architecture in the published openai/gpt-oss layout: experts as
    # MXFP4 `*_blocks` / `*_scales`, everything else BF16, the published-style
    # config.json (rope_scaling, quantization_config). Dims are multiples of 32.
    ("gpt_oss_mxfp4", GptOssConfig, GptOssForCausalLM, dict(
        vocab_size=251, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
        num_experts_per_tok=2, sliding_window=6,
        layer_types=["sliding_attention", "full_attention"] * 2, swiglu_limit=7.0,
        rope_parameters=dict(GPT_OSS_YARN), rms_norm_eps=1e-5, max_position_embeddings=256,
        eos_token_id=250, pad_token_id=249, tie_word_embeddings=False), "mxfp4", None, gpt_oss_mxfp4_tweak),
    # DeepSeek-V3 with a 150-token prompt: a prefill this long runs MLA in
    # the expanded form (keys and values up-projected per head) in two query
    # blocks, and the greedy decodes after it read the same cache in the
    # absorbed form.
    ("deepseek_v3_long_prompt", DeepseekV3Config, DeepseekV3ForCausalLM, dict(
        vocab_size=229, hidden_size=40, intermediate_size=36, moe_intermediate_size=12,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, first_k_dense_replace=1,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, n_group=4, topk_group=2,
        norm_topk_prob=True, routed_scaling_factor=2.5, q_lora_rank=24, kv_lora_rank=20,
        qk_nope_head_dim=10, qk_rope_head_dim=8, v_head_dim=14, rope_interleave=True,
        rope_parameters=dict(YARN), rms_norm_eps=1e-6, max_position_embeddings=256,
        tie_word_embeddings=False), "float32", None),
]

# MXFP4 as openai/gpt-oss checkpoints store it (and transformers'
# integrations/mxfp4.py reads it): a weight [out, in] is cut along `in` into
# blocks of 32; each block has one E8M0 scale byte (2^(byte - 127)) and 16
# bytes of FP4 e2m1 codes, element 2k in the low nibble and 2k+1 in the high
# one; code bit 3 is the sign, bits 0-2 index FP4_MAGNITUDES.
FP4_MAGNITUDES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])

def mxfp4_quantize(w):
    """w [E, out, in] (in % 32 == 0) -> (blocks uint8 [E, out, in/32, 16],
    scales uint8 [E, out, in/32], dequantised float32 [E, out, in])."""
    E, O, K = w.shape
    b = w.float().reshape(E, O, K // 32, 32)
    amax = b.abs().amax(-1)
    # The smallest power of two that brings the block's largest magnitude to <= 6.
    e = torch.ceil(torch.log2(amax.clamp(min=2.0 ** -126) / 6.0)).clamp(-127, 127)
    scaled = b / torch.exp2(e)[..., None]
    idx = (scaled.abs()[..., None] - FP4_MAGNITUDES).abs().argmin(-1)
    neg = (scaled < 0) & (idx > 0)
    codes = (idx | (neg.long() << 3)).to(torch.uint8)
    deq = torch.where(neg, -FP4_MAGNITUDES[idx], FP4_MAGNITUDES[idx]) * torch.exp2(e)[..., None]
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = (e + 127).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous(), deq.reshape(E, O, K)

def save_mxfp4(model, cfg, d):
    """Quantise the experts, set the in-memory model to exactly what the
    checkpoint holds (dequantised experts, BF16-rounded rest) and write the
    published layout: one model.safetensors and a published-style config."""
    tensors = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                # The model keeps [E, in, out]; the checkpoint rows are the outputs.
                blocks, scales, deq = mxfp4_quantize(p.transpose(1, 2))
                p.copy_(deq.transpose(1, 2))
                tensors[name + "_blocks"] = blocks
                tensors[name + "_scales"] = scales
            else:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
                tensors[name] = p.to(torch.bfloat16).contiguous()
    os.makedirs(d)
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    rope = dict(cfg.rope_parameters)
    conf = {
        "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
        "eos_token_id": cfg.eos_token_id, "experts_per_token": cfg.num_experts_per_tok,
        "head_dim": cfg.head_dim, "hidden_act": "silu", "hidden_size": cfg.hidden_size,
        "initial_context_length": rope["original_max_position_embeddings"], "initializer_range": 0.02,
        "intermediate_size": cfg.intermediate_size, "layer_types": list(cfg.layer_types),
        "max_position_embeddings": cfg.max_position_embeddings, "model_type": "gpt_oss",
        "num_attention_heads": cfg.num_attention_heads, "num_experts_per_tok": cfg.num_experts_per_tok,
        "num_hidden_layers": cfg.num_hidden_layers, "num_key_value_heads": cfg.num_key_value_heads,
        "num_local_experts": cfg.num_local_experts, "output_router_logits": False,
        "pad_token_id": cfg.pad_token_id,
        "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                           "model.embed_tokens", "lm_head"],
                                "quant_method": "mxfp4"},
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_scaling": {k: rope[k] for k in ("beta_fast", "beta_slow", "factor", "original_max_position_embeddings",
                                              "rope_type", "truncate")},
        "rope_theta": rope["rope_theta"], "router_aux_loss_coef": 0.9, "sliding_window": cfg.sliding_window,
        "swiglu_limit": cfg.swiglu_limit, "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0",
        "use_cache": True, "vocab_size": cfg.vocab_size,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=2, sort_keys=True)
        f.write("\n")
    model.generation_config.save_pretrained(d)

def verify_mxfp4(model, d, tokens, logits):
    """Independent check: transformers' own MXFP4 loader (dequantising on CPU)
    must rebuild the in-memory weights bit for bit and the same logits."""
    from transformers import Mxfp4Config
    loaded = GptOssForCausalLM.from_pretrained(d, quantization_config=Mxfp4Config(dequantize=True),
                                               dtype=torch.float32).eval()
    loaded.set_experts_implementation("eager")
    ref = dict(model.named_parameters())
    got = dict(loaded.named_parameters())
    assert ref.keys() == got.keys(), set(ref) ^ set(got)
    for n in ref:
        assert got[n].dtype == torch.float32 and torch.equal(ref[n], got[n]), n
    assert loaded.config.rope_parameters == model.config.rope_parameters, loaded.config.rope_parameters
    with torch.no_grad():
        again = loaded(torch.tensor([tokens])).logits[0].float()
    diff = float((again - logits).abs().max())
    assert diff <= 1e-5, diff
    return diff

def clamp_check(model, tokens):
    """Count gate and up values past the SwiGLU limit (gate only above, up on
    both sides), so an engine without the clamp, or clamping the wrong half, is
    caught."""
    seen = {"gate": 0, "up": 0, "of": 0}
    experts = [m for m in model.modules() if hasattr(m, "_apply_gate") and hasattr(m, "limit")]
    def wrap(mod):
        inner = mod._apply_gate
        def counting(gate_up):
            seen["gate"] += int((gate_up[..., ::2] > mod.limit).sum())
            seen["up"] += int((gate_up[..., 1::2].abs() > mod.limit).sum())
            seen["of"] += gate_up[..., ::2].numel()
            return inner(gate_up)
        mod._apply_gate = counting
    for m in experts:
        wrap(m)
    with torch.no_grad():
        model(torch.tensor([tokens]))
    for m in experts:
        del m._apply_gate
    return seen if experts else {}

def routing_check(model, tokens):
    """Count (MoE layer, token) pairs whose group limit or correction bias
    changes the chosen experts, so a router that ignores either is caught."""
    seen = []
    def hook(mod, args, out):
        x = args[0].reshape(-1, mod.hidden_dim).float()
        logits = x @ mod.weight.float().t()
        chosen = out[2].sort(-1).values
        if hasattr(mod, "e_score_correction_bias"):
            s = logits.sigmoid()
            free = (s + mod.e_score_correction_bias).topk(mod.top_k, -1).indices.sort(-1).values
            unbiased = s.topk(mod.top_k, -1).indices.sort(-1).values
            seen.append(("group", int((free != chosen).any(-1).sum())))
            seen.append(("bias", int((unbiased != free).any(-1).sum())))
        elif getattr(mod, "topk_method", None) == "group_limited_greedy":
            free = logits.softmax(-1).topk(mod.top_k, -1).indices.sort(-1).values
            seen.append(("group", int((free != chosen).any(-1).sum())))
    hs = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__.endswith("TopkRouter")]
    with torch.no_grad():
        model(torch.tensor([tokens]))
    for h in hs:
        h.remove()
    return {k: sum(n for kk, n in seen if kk == k) for k, _ in seen}

def greedy(model, ids, n):
    ids = list(ids)
    out = []
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        ids.append(nxt)
    return out

def main():
    unknown = set(ONLY) - {c[0] for c in CASES}
    if unknown:
        sys.exit("unknown case(s): %s" % ", ".join(sorted(unknown)))
    for i, (name, cfg_cls, model_cls, kw, dtype, shard, *tweak) in enumerate(CASES):
        if ONLY and name not in ONLY:
            continue
        torch.manual_seed(1234 + i)
        cfg = cfg_cls(**kw)
        model = model_cls(cfg).eval()
        # The eager expert loop: grouped_mm needs 16-byte strides, which odd sizes lack.
        model.set_experts_implementation("eager")
        perturb(model, 99 + i)
        for t in tweak:  # from its own generator, so perturb's draws stay as they were
            t(model, torch.Generator().manual_seed(500 + i))
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        if dtype == "mxfp4":
            save_mxfp4(model, cfg, d)
        elif dtype == "bfloat16":
            # Round the parameters to bf16 in place and save a bf16 copy; the
            # fp32 model keeps its fp32 RoPE inv_freq buffer (a round trip of
            # the whole model through .to(bfloat16) would round that too).
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
                # Kept float32 on disk, but bf16-representable all the same.
                biases = {n: b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")}
                for b in biases.values():
                    b.copy_(b.to(torch.bfloat16).to(torch.float32))
            half = copy.deepcopy(model).to(torch.bfloat16)
            for n, b in half.named_buffers():
                if n in biases:
                    b.data = biases[n].clone()
            half.save_pretrained(d, max_shard_size=shard)
        else:
            model.save_pretrained(d)
        g = torch.Generator().manual_seed(7 + i)
        tokens = torch.randint(0, cfg.vocab_size, (PROMPT_LEN.get(name, SEQ_LEN),), generator=g).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0].float()
        cont = greedy(model, tokens, GREEDY)
        assert torch.isfinite(logits).all(), name
        routed = routing_check(model, tokens)
        if routed:
            print(name, "tokens x MoE layers whose experts the group limit / bias changed:", routed)
        clamped = clamp_check(model, tokens)
        if clamped:
            print(name, "SwiGLU values past the limit:", clamped)
        if dtype == "mxfp4":
            print(name, "transformers' MXFP4 loader: same weights, max |logit diff|", verify_mxfp4(model, d, tokens, logits))
        with open(os.path.join(d, "reference_logits.f32"), "wb") as f:
            f.write(struct.pack("<%df" % logits.numel(), *logits.flatten().tolist()))
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump({"tokens": tokens, "greedy": cont, "rows": logits.shape[0],
                       "vocab": logits.shape[1], "transformers": transformers.__version__,
                       "torch": torch.__version__}, f, indent=1)
        print(name, sorted(os.listdir(d)))

if __name__ == "__main__":
    main()
