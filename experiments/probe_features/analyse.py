# Probe-feature study (experiments/probe_features.md): for each position and layer, a logistic probe on
# the training-pool features of feats.py: held-out AUROC, plain-trained probe on wrapped copies, and
# leave-one-wrapper-out. Usage: analyse.py FEATS.pt [LAYERS, e.g. 0,15,29]
import sys, torch, random
from probe_fit import auroc, fit
d = torch.load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/probe/feats.pt")
y = d["label"].float(); wrap = d["wrap"]; src = d["src"]
keys = sorted(set(src)); rnd = random.Random(1); rnd.shuffle(keys)
held = set(keys[: len(keys) // 4])
is_hold = torch.tensor([s in held for s in src])
nW = int(wrap.max()) + 1
layers = [int(a) for a in sys.argv[2].split(",")] if len(sys.argv) > 2 else None
for pos, F in d["feats"].items():
    L = F.shape[1]
    for l in (layers or range(0, L, 3)) :
        X = F[:, l]
        tr = ~is_hold
        p = fit(X[tr], y[tr])(X)
        a_in = auroc(p[is_hold], y[is_hold])
        # plain-only training, tested on wrapped held-out copies (how the unwrapped probe transfers)
        tr0 = tr & (wrap == -1)
        p0 = fit(X[tr0], y[tr0])(X)
        hw = is_hold & (wrap >= 0)
        a_plain_to_wrap = auroc(p0[hw], y[hw])
        lowo = []; hi_h = []; lo_b = []
        for w in range(nW):
            trw = tr & (wrap != w); te = is_hold & (wrap == w)
            pw = fit(X[trw], y[trw])(X[te])
            lowo.append(auroc(pw, y[te]))
            hi_h.append((pw[y[te] == 1] > 0.6).float().mean().item())
            lo_b.append((pw[y[te] == 0] < 0.5).float().mean().item())
        print(f"{pos:9s} L{l:2d}  heldout {a_in:.3f}  plain->wrapped {a_plain_to_wrap:.3f}  leave-one-wrapper-out {sum(lowo)/nW:.3f} (min {min(lowo):.3f})  harm a0.9 {sum(hi_h)/nW:.2f} benign a0.1 {sum(lo_b)/nW:.2f}", flush=True)
