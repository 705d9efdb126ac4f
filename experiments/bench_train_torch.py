#!/usr/bin/env python3
"""PyTorch eager counterpart of `safedec bench train`: the same model (the same GGUF, dequantised to
fp32 by transformers), the same synthetic right-padded batches (token ids from the same splitmix64
stream), the same loss (token-mean causal-LM NLL over every real token after the first), global-norm
gradient clipping and torch.optim.AdamW with the same hyper-parameters; prints the same JSON keys.

One timed step = build the batch tensors + forward (logits + loss) + backward + clip_grad_norm_ +
AdamW step + zero_grad(set_to_none=True). Warm-up steps are not timed.

LoRA is implemented here by hand (no PEFT dependency) with PEFT's forward and initialisation:
y = base(x) + (alpha / r) * B(A(dropout(x))), A ~ kaiming_uniform(a = sqrt(5)), B = 0, on the named
linears of every decoder layer (lm_head: the output layer); the base weights are frozen.

Memory: peak_rss_mb is the process's own ru_maxrss (loading included); train_peak_rss_mb is the peak
during the steps, after the loader's memory is freed (gc + malloc_trim) and the kernel's high-water
mark reset through /proc/self/clear_refs, as safedec does.

  .venv/bin/python experiments/bench_train_torch.py --model smollm2-135m-instruct --mode lora \
      --batch 4 --seq-len 128 --steps 5 --warmup 1 --threads 2
"""
import argparse
import ctypes
import gc
import json
import math
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK64 = (1 << 64) - 1
LINEARS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def row_length(T, B, b):
    return T - (b * T) // (4 * B)


def synthetic_batch(seed, step, B, T, vocab):
    """Rows of the batch of 0-based step `step`: the same ids as src/cli/bench_train.cpp."""
    ks = splitmix64(splitmix64(seed) ^ step)
    rows = []
    for b in range(B):
        kb = splitmix64(ks ^ b)
        rows.append([splitmix64(kb ^ t) % vocab for t in range(row_length(T, B, b))])
    return rows


def resolve_model(name):
    """A GGUF path, or a registered name (configs/models/NAME.yaml `file:` in $SAFEDEC_MODEL_DIR)."""
    if os.path.isfile(name):
        return os.path.abspath(name)
    cfg = os.path.join(ROOT, "configs", "models", name + ".yaml")
    if not os.path.isfile(cfg):
        known = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "models")) if f.endswith(".yaml"))
        sys.exit(f"error: unknown model '{name}'; registered: {', '.join(known)}")
    fname = None
    with open(cfg) as f:
        for line in f:
            if line.startswith("file:"):
                fname = line.split(":", 1)[1].split("#", 1)[0].strip()
    model_dir = os.environ.get("SAFEDEC_MODEL_DIR", os.path.join(ROOT, ".cache", "models"))
    path = os.path.join(model_dir, fname or "")
    if not fname or not os.path.isfile(path):
        sys.exit(f"error: the file of model '{name}' ({path}) is missing; fetch it with scripts/fetch_models.sh")
    return path


class LoraLinear(nn.Module):
    """PEFT's LoRA Linear forward: base(x) + scale * B(A(dropout(x)))."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.drop(x))) * self.scale


def add_lora(model, targets, r, alpha, dropout):
    for p in model.parameters():
        p.requires_grad_(False)
    lora_params = []
    for layer in model.model.layers:
        for t in targets:
            if t == "lm_head":
                continue
            if t not in LINEARS:
                sys.exit(f"error: unknown LoRA target '{t}'; known: {', '.join(list(LINEARS) + ['lm_head'])}")
            parent = getattr(layer, LINEARS[t])
            wrapped = LoraLinear(getattr(parent, t), r, alpha, dropout)
            setattr(parent, t, wrapped)
            lora_params += [wrapped.lora_A.weight, wrapped.lora_B.weight]
    if "lm_head" in targets:
        model.lm_head = LoraLinear(model.lm_head, r, alpha, dropout)
        lora_params += [model.lm_head.lora_A.weight, model.lm_head.lora_B.weight]
    return lora_params


def status_bytes(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def quantile(v, q):
    v = sorted(v)
    pos = q * (len(v) - 1)
    lo = int(math.floor(pos))
    hi = min(len(v) - 1, lo + 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--mode", choices=["full", "lora"], required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="0 = torch's default")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=64.0)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--lora-targets", default="q_proj,v_proj")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--clip-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for name, lo, hi in [("batch", 1, 1024), ("seq_len", 2, 32768), ("steps", 1, 100000), ("warmup", 0, 1000),
                         ("threads", 0, 1024), ("lora_r", 1, 4096)]:
        if not lo <= getattr(a, name) <= hi:
            ap.error(f"--{name.replace('_', '-')} must be in [{lo}, {hi}], got {getattr(a, name)}")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    from transformers import AutoModelForCausalLM
    import transformers
    path = resolve_model(a.model)
    t_load = time.perf_counter()
    d, f = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    load_s = time.perf_counter() - t_load
    vocab = model.get_input_embeddings().weight.shape[0]
    weight_params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if a.mode == "lora":
        targets = [t for t in a.lora_targets.split(",") if t]
        params = add_lora(model, targets, a.lora_r, a.lora_alpha, a.lora_dropout)
    else:
        params = [p for p in model.parameters()]
        for p in params:
            p.requires_grad_(True)
    # The trainer's groups: no weight decay on norms and biases.
    decay = [p for n, p in model.named_parameters() if p.requires_grad and "norm" not in n and not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and ("norm" in n or n.endswith("bias"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    if a.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trained_params = sum(p.numel() for p in params)

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    rss_after_load = status_bytes("VmRSS")
    peak_reset = reset_peak_rss()

    step_s, fwd_bwd_s, optim_s, losses = [], [], [], []
    tokens_per_step = 0
    for s in range(a.warmup + a.steps):
        rows = synthetic_batch(a.seed, s, a.batch, a.seq_len, vocab)
        t0 = time.perf_counter()
        T = max(len(r) for r in rows)
        ids = torch.tensor([r + [r[-1]] * (T - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], dtype=torch.long)
        labels = ids.masked_fill(mask == 0, -100)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        out.loss.backward()
        t1 = time.perf_counter()
        gnorm = torch.nn.utils.clip_grad_norm_(params, a.clip_grad_norm) if a.clip_grad_norm > 0 else None
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        loss = out.loss.item()
        if not math.isfinite(loss) or (gnorm is not None and not math.isfinite(gnorm.item())):
            sys.exit(f"error: non-finite loss or gradient at step {s + 1}")
        tokens_per_step = sum(len(r) for r in rows)
        losses.append(loss)
        del out
        if s < a.warmup:
            continue
        step_s.append(t2 - t0)
        fwd_bwd_s.append(t1 - t0)
        optim_s.append(t2 - t1)
        print(f"bench_train_torch [{a.mode}] step {s - a.warmup + 1}/{a.steps}: {tokens_per_step / (t2 - t0):.1f} "
              f"tok/s, loss {loss:.5g}", file=sys.stderr)

    tok_s = [tokens_per_step / t for t in step_s]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    train_peak = status_bytes("VmHWM") if peak_reset else peak
    mib = 1024.0 * 1024.0
    j = {"bench": "train", "framework": "pytorch",
         "impl": f"torch {torch.__version__} / transformers {transformers.__version__} eager, "
                 f"attn {model.config._attn_implementation}",
         "model": a.model, "mode": a.mode, "batch": a.batch, "seq_len": a.seq_len, "steps": a.steps,
         "warmup": a.warmup, "threads": torch.get_num_threads(), "activation_checkpointing": a.activation_checkpointing,
         "tokens_per_step": tokens_per_step, "tokens_per_s": statistics.median(tok_s),
         "tokens_per_s_min": min(tok_s), "tokens_per_s_max": max(tok_s),
         "tokens_per_s_q25": quantile(tok_s, 0.25), "tokens_per_s_q75": quantile(tok_s, 0.75),
         "step_s": statistics.median(step_s), "fwd_bwd_s": statistics.median(fwd_bwd_s),
         "optim_s": statistics.median(optim_s), "load_s": load_s,
         "loss_first": losses[0], "loss_last": losses[-1],
         "weight_params": weight_params, "trained_params": trained_params, "weight_bytes_fp32": weight_bytes,
         "rss_after_load_mb": rss_after_load / mib, "peak_rss_mb": peak / mib, "train_peak_rss_mb": train_peak / mib,
         "peak_rss_over_weights": peak / weight_bytes, "train_peak_rss_over_weights": train_peak / weight_bytes,
         "peak_reset": peak_reset}
    if a.mode == "lora":
        j["lora"] = {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": a.lora_dropout,
                     "targets": [t for t in a.lora_targets.split(",") if t]}
    print(json.dumps(j))


if __name__ == "__main__":
    main()
