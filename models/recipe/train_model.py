"""Step 3: train the default model, a small Qwen3-MoE, on the tokenized corpus.

Uses transformers' own Qwen3MoeForCausalLM (so the trained weights are, by
construction, what Hugging Face computes). The load-balancing loss is the
Switch-Transformer one, but applied per layer and averaged: transformers'
built-in version concatenates the router logits of all layers first, which
only balances each expert's load summed over layers and lets single layers
collapse onto a few experts. Saves in BF16 with `save_pretrained`, exactly
Hugging Face's checkpoint format.
"""
import argparse, json, math, os, time
import numpy as np
import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM, PreTrainedTokenizerFast

def config(vocab):
    return Qwen3MoeConfig(
        vocab_size=vocab, hidden_size=256, intermediate_size=512, moe_intermediate_size=64,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        num_experts=16, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
        mlp_only_layers=[], rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=1024,
        tie_word_embeddings=True, output_router_logits=True, router_aux_loss_coef=0.01,
        bos_token_id=0, eos_token_id=0, pad_token_id=0)

def per_layer_balance_loss(router_logits, top_k):
    """Mean over layers of E * sum_e f_e * P_e (f: share of top-k slots, P: mean router probability)."""
    losses = []
    for logits in router_logits:
        probs = torch.softmax(logits.float(), dim=-1)
        E = probs.shape[-1]
        top = torch.topk(probs, top_k, dim=-1).indices
        f = torch.zeros(E).scatter_add_(0, top.reshape(-1), torch.ones(top.numel())) / top.numel()
        losses.append(E * torch.sum(f * probs.mean(dim=0)))
    return torch.stack(losses).mean()

def batches(data, seq, bs, rng):
    while True:
        ix = rng.integers(0, len(data) - seq - 1, bs)
        x = np.stack([data[i:i + seq + 1] for i in ix]).astype(np.int64)
        yield torch.from_numpy(x)

@torch.no_grad()
def evaluate(model, val, seq, max_batches=40, bs=16):
    model.eval()
    n = (len(val) - 1) // seq
    losses = []
    for b in range(0, min(n, max_batches * bs), bs):
        rows = [val[i * seq:(i + 1) * seq + 1] for i in range(b, min(b + bs, n))]
        x = torch.from_numpy(np.stack(rows).astype(np.int64))
        out = model(input_ids=x[:, :-1], labels=x[:, :-1].clone(), output_router_logits=False)
        # HF shifts labels internally; feed the full row as labels instead.
        logits = out.logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                 x[:, 1:].reshape(-1))
        losses.append(loss.item() * x.shape[0])
    model.train()
    return sum(losses) / min(n, max_batches * bs)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--tokenizer", default="tokenizer")
    ap.add_argument("--out", default="../stdlib-moe")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default="training_log.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = np.fromfile(os.path.join(args.data, "train.bin"), dtype=np.uint16)
    val = np.fromfile(os.path.join(args.data, "val.bin"), dtype=np.uint16)
    tok = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    cfg = config(len(tok))
    model = Qwen3MoeForCausalLM(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    print("parameters", nparams, flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, args.steps // 30)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) *
                                              (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    it = batches(train, args.seq, args.batch, rng)
    log = []
    t0 = time.time()
    for step in range(args.steps):
        x = next(it)
        out = model(input_ids=x[:, :-1], output_router_logits=True)
        logits = out.logits
        lm = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1))
        aux_loss = per_layer_balance_loss(out.router_logits, cfg.num_experts_per_tok)
        loss = lm + cfg.router_aux_loss_coef * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            rec = {"step": step, "lm_loss": round(lm.item(), 4), "balance_loss": round(aux_loss.item(), 4),
                   "elapsed_s": round(time.time() - t0, 1), "lr": sched.get_last_lr()[0]}
            if step % 500 == 0 or step == args.steps - 1:
                rec["val_loss"] = round(evaluate(model, val, args.seq), 4)
            log.append(rec)
            print(json.dumps(rec), flush=True)
    model.config.output_router_logits = False
    model = model.to(torch.bfloat16)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    json.dump({"args": vars(args), "parameters": nparams, "log": log,
               "train_seconds": round(time.time() - t0, 1)},
              open(args.log, "w"), indent=1)

if __name__ == "__main__":
    main()
