# Fit each probe configuration on the TRAINING-pool features (plain + wrapped copies, all sources), then
# apply it, unchanged, to the evaluation prompts: share of prompts per set that NGSD would mix with
# alpha 0.9 (r = 10 p > 6) and with alpha 0.1 (r < 5). Diagnostic only; nothing is fitted on eval data.
import sys, torch
from probe_fit import fit
tr_d = torch.load(sys.argv[1]); ev = torch.load(sys.argv[2])
configs = [tuple(c.split(":")) for c in sys.argv[3].split(",")]
y = tr_d["label"].float()
print("| probe (position, layer) | " + " | ".join(f"{s}" for s in ev) + " |")
print("|---|" + "---|" * len(ev))
for pos, l in configs:
    l = int(l)
    p = fit(tr_d["feats"][pos][:, l], y)
    cells = []
    for s, f in ev.items():
        q = p(f[pos][:, l])
        cells.append(f"{(q > 0.6).float().mean():.2f} / {(q < 0.5).float().mean():.2f}")
    print(f"| {pos}, L{l} | " + " | ".join(cells) + " |", flush=True)
