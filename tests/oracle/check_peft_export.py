#!/usr/bin/env python3
"""Oracle for `safedec export peft`: Hugging Face transformers + PEFT load the exported adapter.

Run by tests/integration/test_export.cpp (not a golden generator: the adapter is made by the test):

  .venv/bin/python tests/oracle/check_peft_export.py --gguf MODEL.gguf --adapter DIR --prompts IDS.json \
      --last N --out LOGITS.bin

transformers loads the GGUF (dequantised with the `gguf` package, llama Q/K un-permuted, fp32, CPU);
for every prompt (a list of token ids in IDS.json) it writes the base model's logits of the last N
positions, then wraps the model with peft.PeftModel.from_pretrained(model, DIR) and writes the
adapted logits of the same positions: little-endian float32, prompt by prompt, base block then
adapter block, each [N, V]. It also checks that PEFT took every tensor of adapter_model.safetensors
(names and values), exiting 1 with the first mismatch otherwise.
"""
import argparse
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


@torch.no_grad()
def last_logits(model, ids, n):
    return model(torch.tensor([ids])).logits[0, -n:].float().contiguous().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--last", type=int, default=8)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)  # a shared machine: the test runs beside builds
    prompts = json.load(open(a.prompts))
    gguf = os.path.abspath(a.gguf)
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                                 dtype=torch.float32)
    model.eval()
    base = [last_logits(model, ids, a.last) for ids in prompts]
    peft_model = PeftModel.from_pretrained(model, a.adapter)
    peft_model.eval()
    # Every exported tensor must be what PEFT now holds (PEFT only warns about unexpected keys).
    file_sd = load_file(os.path.join(a.adapter, "adapter_model.safetensors"))
    model_sd = get_peft_model_state_dict(peft_model)
    for name, t in file_sd.items():
        if name not in model_sd:
            sys.exit(f"PEFT did not take the exported tensor {name} (PEFT holds e.g. {next(iter(model_sd))})")
        if not torch.equal(model_sd[name].float(), t.float()):
            sys.exit(f"PEFT holds a different value for {name}")
    missing = [k for k in model_sd if k not in file_sd]
    if missing:
        sys.exit(f"PEFT created LoRA tensors the export does not hold, e.g. {missing[0]} ({len(missing)} in all)")
    adapted = [last_logits(peft_model, ids, a.last) for ids in prompts]
    with open(a.out + ".tmp", "wb") as f:
        for b, l in zip(base, adapted):
            f.write(np.ascontiguousarray(b, dtype="<f4").tobytes())
            f.write(np.ascontiguousarray(l, dtype="<f4").tobytes())
    os.replace(a.out + ".tmp", a.out)
    print(f"peft oracle: {len(prompts)} prompts, {len(file_sd)} adapter tensors taken, "
          f"logits of the last {a.last} positions written to {a.out}")


if __name__ == "__main__":
    main()
