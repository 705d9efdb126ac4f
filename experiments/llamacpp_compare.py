"""Helpers of experiments/llamacpp_exports.sh: compare safedec's and llama.cpp's greedy outputs, read a
control-vector GGUF, tabulate control-vector runs. Benign prompts only; prints no prompt text."""
import json
import re
import sys

import gguf

END = " [end of text]"
REFUSAL = re.compile(r"I do not answer|I cannot|I can't|I'm sorry|I am sorry|not able to help", re.I)
SAFETY = re.compile(r"harm|danger|illegal|unsafe|risk|consequence|ethic|refus|inappropriate", re.I)


def byte_decoder():
    # GPT-2 byte-level BPE: the printable stand-ins for the 256 bytes.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def vocab(path):
    r = gguf.GGUFReader(path)
    f = r.fields["tokenizer.ggml.tokens"]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def llama_text(path):
    t = open(path, encoding="utf-8", errors="replace").read()
    t = t.rstrip("\n")
    eos = t.endswith(END)
    if eos:
        t = t[: -len(END)]
    return t, eos


def tokens(model, safedec_jsonl, llama_prefix, tag, n):
    toks = vocab(model)
    dec = byte_decoder()
    agree = 0
    rows = []
    for line in open(safedec_jsonl):
        j = json.loads(line)
        ids = j["token_ids"]
        pieces = [bytes(dec[c] for c in toks[i]).decode("utf-8", errors="replace") for i in ids]
        sd = "".join(pieces)
        lt, leos = llama_text(f"{llama_prefix}{j['id']}.txt")
        sd_eos = j["finish_reason"] == "eos"
        if sd == lt and sd_eos == leos:
            agree += 1
            rows.append((j["id"], len(ids), "identical" + (" (both stop at EOS)" if sd_eos else f" ({len(ids)} tokens)")))
            continue
        # First differing token of safedec's sequence.
        pos = 0
        k = 0
        while k < len(pieces) and lt.startswith(sd[: pos + len(pieces[k])]):
            pos += len(pieces[k])
            k += 1
        gap = logit_gap(model, j["id"], ids[:k], pieces[k] if k < len(pieces) else None, lt[pos:])
        rows.append((j["id"], k, f"diverge at token {k} (safedec {len(ids)} tokens, eos={sd_eos}; llama eos={leos})"
                     + gap))
    for r in rows:
        print(f"  {tag:5s} {r[0]}: {r[2]}")
    print(f"  {tag}: {agree}/{len(rows)} prompts identical over the first {n} tokens")


_HF = {}


def logit_gap(model, pid, prefix_ids, sd_piece, llama_rest):
    """fp32 logits (transformers on the same GGUF, dequantized) at the diverging step: the gap between
    safedec's token and the token llama.cpp chose. Needs prompts.jsonl next to the safedec output."""
    try:
        import os

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model not in _HF:
            d, f = os.path.split(model)
            tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
            lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
            _HF[model] = (tok, lm)
        tok, lm = _HF[model]
        work = os.path.dirname(model)
        j = [json.loads(l) for l in open(f"{work}/prompts.jsonl") if json.loads(l)["id"] == pid][0]
        text = (f"<|im_start|>system\n{j['system']}<|im_end|>\n<|im_start|>user\n{j['prompt']}<|im_end|>\n"
                "<|im_start|>assistant\n")
        ids = tok(text, add_special_tokens=False)["input_ids"] + list(prefix_ids)
        with torch.no_grad():
            logits = lm(torch.tensor([ids])).logits[0, -1].double()
        top = torch.topk(logits, 2)
        # llama.cpp's token: the candidate whose text starts llama's remaining output, longest first.
        cands = [int(t) for t in torch.topk(logits, 20).indices]
        ll = max((t for t in cands if llama_rest.startswith(tok.decode([t])) and tok.decode([t])),
                 key=lambda t: len(tok.decode([t])), default=None)
        hf_top = int(top.indices[0])
        s = f"; fp32 oracle: top-1 {'= safedec' if tok.decode([hf_top]) == sd_piece else '!= safedec'}"
        if ll is not None:
            s += f", logit(top-1) - logit(llama.cpp's token) = {float(logits[hf_top] - logits[ll]):.4f}"
        s += f", top-1/top-2 gap {float(top.values[0] - top.values[1]):.4f}"
        return s
    except Exception as e:  # the gap is a diagnostic; say why it is missing
        return f"; (logit gap not measured: {type(e).__name__}: {e})"


def cvfile(path):
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    hint = r.fields["controlvector.model_hint"].contents()
    layers = int(r.fields["controlvector.layer_count"].contents())
    names = sorted((t.name for t in r.tensors), key=lambda s: int(s.split(".")[1]))
    types = {t.tensor_type.name for t in r.tensors}
    norms = [float((t.data.astype("float64") ** 2).sum() ** 0.5) for t in r.tensors]
    print(f"  file: architecture={arch} model_hint={hint} layer_count={layers} tensors={len(names)} "
          f"({names[0]}..{names[-1]}) types={sorted(types)} |direction| min {min(norms):.3f} max {max(norms):.3f}")


def cvtable(work, *tags):
    ids = [json.loads(l)["id"] for l in open(f"{work}/prompts.jsonl")]
    base = {i: llama_text(f"{work}/cv-{tags[0]}-{i}.txt")[0] for i in ids}
    print(f"  {'setting':8s} changed-vs-none  refusal-like  safety-words  first-diff-char(median)  p1 (first 60 chars)")
    for tag in tags:
        texts = {i: llama_text(f"{work}/cv-{tag}-{i}.txt")[0] for i in ids}
        changed = sum(texts[i] != base[i] for i in ids)
        refusal = sum(bool(REFUSAL.search(texts[i])) for i in ids)
        safety = sum(bool(SAFETY.search(texts[i])) for i in ids)
        firsts = []
        for i in ids:
            a, b = texts[i], base[i]
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]:
                k += 1
            if a != b:
                firsts.append(k)
        med = sorted(firsts)[len(firsts) // 2] if firsts else "-"
        p1 = texts[ids[0]][:60].replace("\n", " ")
        print(f"  {tag:8s} {changed}/{len(ids):<14} {refusal}/{len(ids):<11} {safety}/{len(ids):<11} {str(med):23s} {p1!r}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "tokens":
        tokens(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])
    elif mode == "cvfile":
        cvfile(sys.argv[2])
    elif mode == "cvtable":
        cvtable(sys.argv[2], *sys.argv[3:])
    else:
        sys.exit(f"unknown mode {mode}")
