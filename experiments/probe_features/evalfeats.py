# Probe-feature study (experiments/probe_features.md): features of evaluation prompts, diagnostic only
# (nothing is fitted on them; no prompt text is printed). Usage: evalfeats.py THREADS GGUF OUT.pt
# Features of the EVALUATION prompts (diagnostic only: nothing is fitted on them) at the positions of feats.py.
import json, random, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(sys.argv[1]))
D = "/work/shared/datasets/"
rng = random.Random(0)
def sample(rows, n): rows = rows[:]; rng.shuffle(rows); return rows[:n]
sets = {
 "advbench": [r["goal"] for r in sample(json.load(open(D + "advbench/harmful_behaviors.json")), 40)],
 "gcg": [r["prompt"] for r in sample(json.load(open(D + "attacks/gcg.json")), 40)],
 "autodan": [r["prompt"] for r in json.load(open(D + "attacks/autodan.json"))],
 "deepinception": [r["prompt"] for r in json.load(open(D + "attacks/deepinception.json"))],
 "xstest_safe": [r["prompt"] for r in json.load(open(D + "xstest/xstest.json")) if r["label"] == "safe"],
 "xstest_unsafe": [r["prompt"] for r in sample([r for r in json.load(open(D + "xstest/xstest.json")) if r["label"] != "safe"], 60)],
 "alpaca_eval_test": [r["instruction"] for i, r in enumerate(json.load(open(D + "alpaca_eval/alpaca_eval.json"))) if i % 4 != 0][:60],
}
gguf = sys.argv[2]; out_path = sys.argv[3]
path = "/work/main/.cache/models/"
tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, torch_dtype=torch.float32).eval()
res = {}
t0 = time.time()
with torch.inference_mode():
    for name, rows in sets.items():
        f = {"last": [], "user_last": [], "user_mean": []}
        for text in rows:
            ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt")
            if not torch.is_tensor(ids): ids = ids["input_ids"]
            hs = torch.stack(model(ids, output_hidden_states=True).hidden_states[1:], 0)[:, 0]
            T = ids.shape[1]
            f["last"].append(hs[:, -1].clone()); f["user_last"].append(hs[:, T - 7].clone())
            f["user_mean"].append(hs[:, max(0, T - 70):T - 6].mean(1).clone())
        res[name] = {k: torch.stack(v) for k, v in f.items()}
        print(name, len(rows), f"{time.time()-t0:.0f}s", file=sys.stderr, flush=True)
torch.save(res, out_path)
