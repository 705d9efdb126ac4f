# Shared by analyse.py and transfer.py: AUROC and an L2 logistic probe on standardised features.
import torch
def auroc(s, l):
    pos, neg = s[l == 1], s[l == 0]
    return ((pos[:, None] > neg[None, :]).float().mean() + 0.5 * (pos[:, None] == neg[None, :]).float().mean()).item()
def fit(X, y, l2=1e-2):
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    w = torch.zeros(Z.shape[1], requires_grad=True); b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    def clo():
        opt.zero_grad(); loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y) + l2 * (w * w).sum(); loss.backward(); return loss
    opt.step(clo)
    return lambda X2: torch.sigmoid(((X2 - mu) / sd) @ w.detach() + b.detach())
