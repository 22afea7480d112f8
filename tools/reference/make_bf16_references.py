"""Generate the bfloat16 references that `swift test` checks `--dtype bfloat16` against.

For each fixture checkpoint made by make_model_references.py, run transformers in
bfloat16 (weights and activations, as `torch_dtype=torch.bfloat16` serves it) on the
same tokens and write `reference_logits_bf16.f32` (every position) and
`reference_bf16.json` (the bf16 greedy continuation). Run once with
`pip install torch transformers safetensors`; the outputs are committed.
"""
import json, os, struct, sys
import torch
import transformers
from transformers import AutoModelForCausalLM

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/SwitchyardModelTests/Fixtures/models"
# Not the DeepSeek fixtures: their routing (routed_scaling_factor up to 2.5
# on random weights) flips under bf16 rounding, so transformers' own bf16
# logits differ from its fp32 ones by up to 0.39 relative, and a comparison
# of two bf16 runs measures which experts flipped, not precision.
CASES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "qwen3_moe_bf16_sharded"]
GREEDY = 16

def main():
    # `make_bf16_references.py OUT [case ...]` regenerates only the named cases.
    for name in sys.argv[2:] or CASES:
        d = os.path.join(OUT, name)
        ref = json.load(open(os.path.join(d, "reference.json")))
        # The eager expert loop: grouped_mm needs 16-byte strides, which these odd sizes lack.
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, experts_implementation="eager").eval()
        tokens = ref["tokens"]
        with torch.no_grad():
            logits = model(torch.tensor([tokens])).logits[0].float()
        ids, cont = list(tokens), []
        for _ in range(GREEDY):
            with torch.no_grad():
                nxt = int(torch.argmax(model(torch.tensor([ids])).logits[0, -1].float()))
            cont.append(nxt)
            ids.append(nxt)
        with open(os.path.join(d, "reference_logits_bf16.f32"), "wb") as f:
            f.write(struct.pack("<%df" % logits.numel(), *logits.flatten().tolist()))
        with open(os.path.join(d, "reference_bf16.json"), "w") as f:
            json.dump({"tokens": tokens, "greedy": cont, "rows": logits.shape[0], "vocab": logits.shape[1],
                       "transformers": transformers.__version__, "torch": torch.__version__}, f, indent=1)
        print(name, "greedy", cont)

if __name__ == "__main__":
    main()
