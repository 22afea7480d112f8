"""Check that `switchyard model create` writes checkpoints transformers loads
and computes identically: creates the tiny preset for every architecture in
f32, then compares transformers' logits with `switchyard logits`.

Usage (from the repository root, after `swift build -c release`):
    pip install torch transformers && python tools/reference/check_created_models.py
"""
import json, subprocess, tempfile
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoTokenizer

BIN = ".build/release/switchyard"
with tempfile.TemporaryDirectory() as tmp:
    cases = [(a, []) for a in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss"]]
    cases.append(("gpt_oss", ["--mxfp4-experts"]))
    for arch, extra in cases:
        d = f"{tmp}/tiny-{arch}{'-mxfp4' if extra else ''}"
        subprocess.check_call([BIN, "model", "create", "--arch", arch, "--preset", "tiny", "--out", d,
                               "--seed", "3", "--dtype", "f32"] + extra, stdout=subprocess.DEVNULL)
        kwargs = {}
        if extra:
            # MXFP4 experts, dequantised by transformers on load (exact: FP4 values times powers of two).
            from transformers import Mxfp4Config
            kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kwargs).eval()
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation("eager")
        tok = AutoTokenizer.from_pretrained(d)
        ids = [5, 77, 300, 12, 256, 9, 140, 33, 2, 1]
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        out = json.loads(subprocess.check_output([BIN, "logits", "--model", d, "--tokens", ",".join(map(str, ids))]))
        err = float((np.abs(np.array(out["logits"]) - ref) / (1 + np.abs(ref))).max())
        assert err <= 1e-4, (arch, err)
        assert tok("héllo").input_ids == list("héllo".encode()), arch
        print(f"{arch}{' (MXFP4 experts)' if extra else ''}: transformers loads it; max relative logit error {err:.2e}")
