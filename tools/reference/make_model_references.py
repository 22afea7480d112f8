"""Generate the reference checkpoints, logits and greedy continuations that
`swift test` checks the engine against (Tests/SwitchyardModelTests/Fixtures/models).

Run once with `pip install torch transformers safetensors`; the outputs are
committed, so CI never needs Python. Dimensions are deliberately odd (GQA
ratio != 1, vocab not a power of two, per-case expert counts and top-k) so a
transposed or mis-strided tensor cannot go unnoticed.
"""
import copy, json, os, shutil, struct, sys
import torch
import transformers
from transformers import (MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3MoeConfig, Qwen3MoeForCausalLM, OlmoeConfig, OlmoeForCausalLM)

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/SwitchyardModelTests/Fixtures/models"
SEQ_LEN = 21
GREEDY = 16

def perturb(model, seed):
    """HF initialises norms to 1 and biases to 0, which would hide a missing or
    misplaced norm weight or bias; give every parameter a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))

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
]

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
    for i, (name, cfg_cls, model_cls, kw, dtype, shard) in enumerate(CASES):
        torch.manual_seed(1234 + i)
        cfg = cfg_cls(**kw)
        model = model_cls(cfg).eval()
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
            copy.deepcopy(model).to(torch.bfloat16).save_pretrained(d, max_shard_size=shard)
        else:
            model.save_pretrained(d)
        g = torch.Generator().manual_seed(7 + i)
        tokens = torch.randint(0, cfg.vocab_size, (SEQ_LEN,), generator=g).tolist()
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0].float()
        cont = greedy(model, tokens, GREEDY)
        with open(os.path.join(d, "reference_logits.f32"), "wb") as f:
            f.write(struct.pack("<%df" % logits.numel(), *logits.flatten().tolist()))
        with open(os.path.join(d, "reference.json"), "w") as f:
            json.dump({"tokens": tokens, "greedy": cont, "rows": logits.shape[0],
                       "vocab": logits.shape[1], "transformers": transformers.__version__,
                       "torch": torch.__version__}, f, indent=1)
        print(name, sorted(os.listdir(d)))

if __name__ == "__main__":
    main()
