"""Step 4: evaluate the saved checkpoint with transformers (fp32 compute on
the BF16 weights) and write the numbers models/README.md reports:
validation loss and perplexity against a unigram baseline, per-layer expert
load, layer-to-layer routing affinity, sample generations, and the greedy
continuation the engine's test compares against.
"""
import argparse, json, math, os
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TEST_PROMPT = "def parse_args(argv):\n    "
TEST_NEW_TOKENS = 24

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="../stdlib-moe")
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default="evaluation.json")
    ap.add_argument("--fixture", default="../../Tests/SwitchyardModelTests/Fixtures/default_model_greedy.json")
    ap.add_argument("--seq", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    cfg = model.config
    E, L, K = cfg.num_experts, cfg.num_hidden_layers, cfg.num_experts_per_tok
    train = np.fromfile(os.path.join(args.data, "train.bin"), dtype=np.uint16)
    val = np.fromfile(os.path.join(args.data, "val.bin"), dtype=np.uint16)

    # Unigram baseline: train-split token frequencies (add-one), scored on val.
    counts = np.bincount(train, minlength=cfg.vocab_size).astype(np.float64) + 1
    logp = np.log(counts / counts.sum())
    unigram = float(-logp[val[1:]].mean())

    n = (len(val) - 1) // args.seq
    total, count = 0.0, 0
    load = np.zeros((L, E), dtype=np.int64)
    top1 = []
    with torch.no_grad():
        for b in range(0, n, 8):
            rows = [val[i * args.seq:(i + 1) * args.seq + 1] for i in range(b, min(b + 8, n))]
            x = torch.from_numpy(np.stack(rows).astype(np.int64))
            out = model(input_ids=x[:, :-1], output_router_logits=True)
            logits = out.logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
            total += loss.item()
            count += x[:, 1:].numel()
            layer_top1 = []
            for l, rl in enumerate(out.router_logits):
                probs = torch.softmax(rl.float(), dim=-1)
                top = torch.topk(probs, K, dim=-1).indices
                load[l] += np.bincount(top.reshape(-1).numpy(), minlength=E)
                layer_top1.append(top[:, 0].numpy())
            top1.append(np.stack(layer_top1))
    val_loss = total / count
    top1 = np.concatenate(top1, axis=1)  # [L, tokens]

    # Affinity: share of tokens whose top-1 expert at l+1 is the most frequent
    # successor of their top-1 expert at l.
    affinity = []
    for l in range(L - 1):
        pairs = np.zeros((E, E), dtype=np.int64)
        np.add.at(pairs, (top1[l], top1[l + 1]), 1)
        affinity.append(float(pairs.max(axis=1).sum() / pairs.sum()))

    gen = {}
    prompts = ["import os\nimport sys\n\n", "class Queue:\n    def __init__(self", "def parse_args(argv):\n    ", "    for i in range("]
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            g = model.generate(ids, max_new_tokens=60, do_sample=False, pad_token_id=tok.eos_token_id)
        gen[p] = tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True)

    # The engine's default-model test: greedy ids for a fixed prompt.
    ids = tok(TEST_PROMPT).input_ids
    seq = list(ids)
    with torch.no_grad():
        for _ in range(TEST_NEW_TOKENS):
            seq.append(int(torch.argmax(model(torch.tensor([seq])).logits[0, -1])))
    fixture = {"prompt": TEST_PROMPT, "prompt_ids": ids, "greedy": seq[len(ids):], "source": "transformers fp32 on the committed BF16 weights"}
    os.makedirs(os.path.dirname(args.fixture), exist_ok=True)
    json.dump(fixture, open(args.fixture, "w"), indent=1)

    result = {
        "val_tokens": count, "val_loss": val_loss, "val_perplexity": math.exp(val_loss),
        "unigram_loss": unigram, "unigram_perplexity": math.exp(unigram),
        "expert_load_max_over_mean": [float(r.max() / r.mean()) for r in load],
        "expert_load_min_over_mean": [float(r.min() / r.mean()) for r in load],
        "expert_load": load.tolist(),
        "affinity_top1_successor": affinity, "affinity_chance": 1.0 / E,
        "samples": gen,
    }
    json.dump(result, open(args.out, "w"), indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("expert_load", "samples")}, indent=1))
    for p, t in gen.items():
        print("----", repr(p)); print(p + t)

if __name__ == "__main__":
    main()
