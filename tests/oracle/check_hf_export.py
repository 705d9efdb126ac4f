#!/usr/bin/env python3
"""Oracle for `safedec export hf`: Hugging Face transformers loads the exported model directory.

Run by tests/integration/test_export.cpp on a directory the test exported:

  .venv/bin/python tests/oracle/check_hf_export.py --model-dir DIR --prompts IDS.json --last N \
      --logits-out LOGITS.bin --tokenizer-golden GOLDEN.json --tokenizer-out TOK.json

AutoModelForCausalLM.from_pretrained(DIR) (fp32, CPU; sharded checkpoints through the index) writes
the logits of the last N positions of every prompt (little-endian float32, [N, V] per prompt).
AutoTokenizer.from_pretrained(DIR) encodes every string of GOLDEN.json's "cases" (no special tokens)
and "with_special" (special tokens added) and renders its "chats" with the exported chat template;
TOK.json gets {"cases": [ids...], "with_special": [ids...], "chats": [{"text", "ids"}...]} for the
test to compare with the golden ids of the model's reference tokenizer.
"""
import argparse
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--last", type=int, default=8)
    ap.add_argument("--logits-out", required=True)
    ap.add_argument("--tokenizer-golden", required=True)
    ap.add_argument("--tokenizer-out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)  # a shared machine: the test runs beside builds
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    model.eval()
    with open(a.logits_out + ".tmp", "wb") as f, torch.no_grad():
        for ids in json.load(open(a.prompts)):
            lg = model(torch.tensor([ids])).logits[0, -a.last:].float().contiguous().numpy()
            f.write(np.ascontiguousarray(lg, dtype="<f4").tobytes())
    os.replace(a.logits_out + ".tmp", a.logits_out)

    tok = AutoTokenizer.from_pretrained(a.model_dir)
    golden = json.load(open(a.tokenizer_golden))
    out = {"cases": [list(tok(c["text"], add_special_tokens=False)["input_ids"]) for c in golden["cases"]],
           "with_special": [list(tok(c["text"], add_special_tokens=True)["input_ids"])
                            for c in golden["with_special"]],
           "chats": []}
    for c in golden.get("chats", []):
        msgs = ([] if c["system"] is None else [{"role": "system", "content": c["system"]}]) + c["messages"]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=c["add_generation_prompt"])
        out["chats"].append({"text": text, "ids": list(tok(text, add_special_tokens=False)["input_ids"])})
    json.dump(out, open(a.tokenizer_out, "w"))
    print(f"hf oracle: model and tokenizer of {a.model_dir} loaded; {len(out['cases'])} strings encoded")


if __name__ == "__main__":
    main()
