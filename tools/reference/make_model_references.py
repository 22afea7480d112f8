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
                          DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/SwitchyardModelTests/Fixtures/models"
ONLY = sys.argv[2:]
SEQ_LEN = 21
GREEDY = 16

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
]

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
    for i, (name, cfg_cls, model_cls, kw, dtype, shard) in enumerate(CASES):
        if ONLY and name not in ONLY:
            continue
        torch.manual_seed(1234 + i)
        cfg = cfg_cls(**kw)
        model = model_cls(cfg).eval()
        # The eager expert loop: grouped_mm needs 16-byte strides, which odd sizes lack.
        model.set_experts_implementation("eager")
        perturb(model, 99 + i)
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        if dtype == "bfloat16":
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
        tokens = torch.randint(0, cfg.vocab_size, (SEQ_LEN,), generator=g).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0].float()
        cont = greedy(model, tokens, GREEDY)
        assert torch.isfinite(logits).all(), name
        routed = routing_check(model, tokens)
        if routed:
            print(name, "tokens x MoE layers whose experts the group limit / bias changed:", routed)
        with open(os.path.join(d, "reference_logits.f32"), "wb") as f:
            f.write(struct.pack("<%df" % logits.numel(), *logits.flatten().tolist()))
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump({"tokens": tokens, "greedy": cont, "rows": logits.shape[0],
                       "vocab": logits.shape[1], "transformers": transformers.__version__,
                       "torch": torch.__version__}, f, indent=1)
        print(name, sorted(os.listdir(d)))

if __name__ == "__main__":
    main()
