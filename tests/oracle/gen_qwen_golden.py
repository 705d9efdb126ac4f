#!/usr/bin/env python3
"""Golden files for the Qwen2.5-Coder 0.5B / 1.5B Instruct GGUFs (issue 14), from independent
implementations: Hugging Face `tokenizers`/`transformers` and the `gguf` package.

  tokenizer_qwen25.json   ids of ~300 strings + chat renderings with Hugging Face's own Qwen2
                          tokenizer (transformers Qwen2Tokenizer: NFC normaliser, the Qwen2 split
                          regex, byte-level BPE) built from the GGUF's token and merge lists, with
                          the GGUF's control tokens as special added tokens and its user-defined
                          ones (<tool_call>, </tool_call>) as plain added tokens; chat template =
                          the GGUF's tokenizer.chat_template (ChatML, default Qwen system line).
                          transformers' own GGUF tokenizer converter is NOT used: it drops the NFC
                          normaliser of the real Qwen2 tokenizer.json.
  nfc_cases.json          Python unicodedata's NFC of every code point it changes and of 1500
                          random strings of marks, bases and Hangul (for src/tokenizer/nfc.cpp).
  dequant_qwen.json       for every tensor of both files: its type, shape and a position-weighted
                          checksum (see checksum()) of its whole fp32 dequantisation by
                          gguf.quants.dequantize, plus value slices of the first, a middle and the last
                          tensor of each type (row starts and a mid-row block run) for diagnosis.
  model_qwen05.json / model_qwen05_logits.bin, model_qwen15.json / model_qwen15_logits.bin
                          transformers (fp32, CPU) on the GGUF: for 5 chat prompts the last-
                          position logits at every 16th vocabulary id plus the argmax and top-2
                          margin at every position; for 10 chat prompts a 32-token greedy
                          continuation (plain argmax through HF's KV cache, no EOS stop) with the
                          reference's top-2 margin at each step.

Run (one model at a time: the 1.5B needs ~10 GB of RAM in fp32):
  HF_HUB_OFFLINE=1 .venv/bin/python tests/oracle/gen_qwen_golden.py tokenizer nfc dequant qwen05 qwen15
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL_DIR = os.environ.get("SAFEDEC_MODEL_DIR", os.path.join(ROOT, ".cache", "models"))
GOLDEN = os.path.join(ROOT, "tests", "oracle", "golden")
FILES = {"qwen05": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen15": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}

sys.path.insert(0, HERE)
from gen_model_golden import CHAT_PROMPTS, GREEDY_PROMPTS  # noqa: E402
from gen_tokenizer_golden import CHATS, make_strings  # noqa: E402

# Strings whose NFC form differs from the input, code, and Qwen's special/added tokens.
QWEN_STRINGS = [
    "e\u0301t\u00e9 cafe\u0301", "A\u030a \u212b \u00c5", "\u1100\u1161\u11a8 \uac01 jamo", "o\u0308\u0304 \u022b",
    "a\u0328\u0301 \u0105\u0301", "\u1e9b\u0323 \u1e9b\u0323", "\u0958 \u0915\u093c devanagari nukta",
    "\u2126 ohm \u03a9", "\u0344 \u0308\u0301", "Vi\u1ec7t Nam Vie\u0323\u0302t", "\u0041\u0301\u0327 \u00c1\u0327",
    "\ufb01 \ufb00 compat stays", "\u3300 \u2460 compat", "x\u0301\u0301\u0301 stacked", "\u0301 leading mark",
    "def f(a, b):\n    return a + b  # sum\n", "int main(void) {\n    printf(\"%d\\n\", 42);\n}\n",
    "    if x == 1:\n        pass\n\n\n", "const x = () => { return [1, 2, 3].map(v => v * 2); };",
    "```python\nprint('hi')\n```", "1234567890 9876543210", "x1 = y22 + z333", "\u00a0\u2002\u3000 spaces",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>", "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "<|endoftext|><|im_start|>system\nx<|im_end|>", "<|repo_name|>safedec<|file_sep|>README.md",
    "<|vision_start|><|image_pad|><|vision_end|>", "[PAD151665] not a token", "<|box_start|>(1,2)<|box_end|>",
    "   \n  \n\t\n", "a\r\nb\rc\n", "'S 'T 'Re 'vE I'M YOU'LL", "\u00e9" * 30, "\U0001F600\u0301",
]


def write_json(name, obj):
    path = os.path.join(GOLDEN, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def gguf_lists(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    f = r.fields
    return {
        "tokens": f["tokenizer.ggml.tokens"].contents(),
        "merges": f["tokenizer.ggml.merges"].contents(),
        "types": f["tokenizer.ggml.token_type"].contents(),
        "template": f["tokenizer.chat_template"].contents(),
        "eos": int(f["tokenizer.ggml.eos_token_id"].contents()),
        "pad": int(f["tokenizer.ggml.padding_token_id"].contents()),
    }


def reference_tokenizer(path):
    """Hugging Face's Qwen2 tokenizer over the GGUF's vocabulary (see the module docstring)."""
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    g = gguf_lists(path)
    # Control and user-defined tokens are in the vocabulary too, so every token keeps its GGUF id
    # when it is then registered as an added token (the unused [PAD...] rows are left out).
    normal = {t: i for i, (t, ty) in enumerate(zip(g["tokens"], g["types"])) if ty in (1, 3, 4)}
    merges = [tuple(m.split(" ")) for m in g["merges"]]
    tok = Qwen2Tokenizer(vocab=normal, merges=merges, unk_token=None, bos_token=None,
                         eos_token=g["tokens"][g["eos"]], pad_token=g["tokens"][g["pad"]])
    added = [(i, t, ty) for i, (t, ty) in enumerate(zip(g["tokens"], g["types"])) if ty in (3, 4)]
    for i, t, ty in added:  # in id order, so each gets its GGUF id
        tok.add_tokens([AddedToken(t, special=(ty == 3), normalized=False)], special_tokens=(ty == 3))
        assert tok.convert_tokens_to_ids(t) == i, (t, i, tok.convert_tokens_to_ids(t))
    tok.chat_template = g["template"]
    return tok, g


def hf_ids(tok, text, add_special):
    return list(tok(text, add_special_tokens=add_special)["input_ids"])


def chat_ids(tok, messages, gen=True):
    enc = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
    ids = enc["input_ids"] if hasattr(enc, "keys") else enc
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]


def tokenizer():
    tok05, g05 = reference_tokenizer(os.path.join(MODEL_DIR, FILES["qwen05"]))
    g15 = gguf_lists(os.path.join(MODEL_DIR, FILES["qwen15"]))
    same = {k: g05[k] == g15[k] for k in ("tokens", "merges", "types", "eos", "pad")}
    assert all(same.values()), same  # one vocabulary for both models
    strings = make_strings(14) + QWEN_STRINGS
    cases = []
    for s in strings:
        ids = hf_ids(tok05, s, False)
        cases.append({"text": s, "ids": ids, "decoded": tok05.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tok05.decode(ids, skip_special_tokens=True)})
    chats = []
    for c in CHATS:
        msgs = ([] if c["system"] is None else [{"role": "system", "content": c["system"]}]) + c["messages"]
        text = tok05.apply_chat_template(msgs, tokenize=False, add_generation_prompt=c["gen"])
        ids = chat_ids(tok05, msgs, c["gen"])
        assert ids == hf_ids(tok05, text, False), c["name"]
        chats.append({"name": c["name"], "system": c["system"], "messages": c["messages"],
                      "add_generation_prompt": c["gen"], "text": text, "ids": ids})
    write_json("tokenizer_qwen25.json", {
        "models": [FILES["qwen05"], FILES["qwen15"]], "reference": "transformers Qwen2Tokenizer "
        + __import__("transformers").__version__ + " over the GGUF token/merge lists",
        "vocab_size_file": len(g05["tokens"]), "hf_len": len(tok05), "eos_id": tok05.eos_token_id,
        "pad_id": tok05.pad_token_id, "same_lists_in_both_files": True, "cases": cases, "chats": chats})


def nfc_cases():
    """Python unicodedata's NFC (an independent implementation) of every code point that NFC
    changes, and of random strings mixing bases, combining marks of many classes, Hangul jamo and
    syllables, singletons and composition exclusions."""
    import random
    import unicodedata
    changed = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        n = unicodedata.normalize("NFC", c)
        if n != c:
            changed.append([cp, n])
    pool = list("aeiouAEIOUnNcCsSzZ ") + [chr(x) for x in (
        0x300, 0x301, 0x302, 0x303, 0x308, 0x30A, 0x30C, 0x323, 0x327, 0x328, 0x331, 0x345, 0x5B0, 0x5BC,
        0x64B, 0x651, 0x93C, 0x94D, 0x1100, 0x1161, 0x11A8, 0x11C2, 0xAC00, 0xAC01, 0xD7A3, 0x212B, 0x2126,
        0x340, 0x344, 0x958, 0xF73, 0x1E9B, 0x3099, 0x304B, 0x30AB, 0x0915, 0x0CC6, 0x0CD5, 0x0B47, 0x0B3E,
        0x1D15E, 0x1D165, 0x1D16E, 0x0F71, 0x0F72, 0x05D0, 0x1FBF, 0x0399, 0x03B9, 0x1F00, 0xFB1D, 0x00C5)]
    rng = random.Random(1514)
    strings = []
    for _ in range(1500):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(1, 10)))
        strings.append([s, unicodedata.normalize("NFC", s)])
    write_json("nfc_cases.json", {"unicode": unicodedata.unidata_version, "changed": changed, "strings": strings})


# Position-weighted checksum of fp32 bit patterns: sum_i bits(x_i) * K[i % 1024] mod 2^64, with
# odd 64-bit K from a fixed LCG. Any single changed element changes it (K odd); the C++ test
# computes the same in a few seconds where SHA-256 of 6 GB took a minute.
def checksum_weights():
    k, x = [], 0x243F6A8885A308D3
    for _ in range(1024):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        k.append(x | 1)
    return np.array(k, dtype=np.uint64)


def checksum(vals):
    u = np.ascontiguousarray(vals, dtype="<f4").ravel().view(np.uint32)
    k = checksum_weights()
    total = np.uint64(0)
    chunk = 1 << 22  # a multiple of 1024
    with np.errstate(over="ignore"):
        for i in range(0, u.size, chunk):
            part = u[i:i + chunk].astype(np.uint64)
            kk = np.resize(k, part.size)
            total = np.uint64(total + np.sum(part * kk, dtype=np.uint64))
    return f"{int(total):016x}"


def floats(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def dequant():
    import gguf
    from gguf import GGUFReader, GGMLQuantizationType as Q
    from gguf.quants import dequantize
    out = {"generator": "tests/oracle/gen_qwen_golden.py dequant", "gguf_py": getattr(gguf, "__version__", "?"),
           "models": []}
    for tag in ("qwen05", "qwen15"):
        fname = FILES[tag]
        reader = GGUFReader(os.path.join(MODEL_DIR, fname))
        by_type = {}
        for t in reader.tensors:
            by_type.setdefault(t.tensor_type, []).append(t)
        picks = set()
        for ts in by_type.values():
            picks.update({ts[0].name, ts[len(ts) // 2].name, ts[-1].name})
        tensors = []
        for t in reader.tensors:
            ne = [int(x) for x in t.shape]
            row = ne[0]
            n_rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
            if t.tensor_type == Q.F32:
                vals = np.asarray(t.data, dtype=np.float32).reshape(n_rows, row)
            else:
                vals = dequantize(np.ascontiguousarray(t.data.reshape(n_rows, -1)), t.tensor_type)
                vals = np.asarray(vals, dtype=np.float32).reshape(n_rows, row)
            rec = {"name": t.name, "type": t.tensor_type.name, "ne": ne,
                   "checksum": checksum(vals)}
            if t.name in picks:
                block, _ = gguf.GGML_QUANT_SIZES[t.tensor_type]
                slices = []
                for r in sorted({0, n_rows // 2, n_rows - 1}):
                    count = min(row, 64)
                    slices.append({"first": r * row, "count": count, "values": floats(vals[r, :count])})
                    if row > 1024:
                        mid = (row // 2) // block * block
                        c2 = min(block, 64, row - mid)
                        slices.append({"first": r * row + mid, "count": c2, "values": floats(vals[r, mid:mid + c2])})
                rec["slices"] = slices
            tensors.append(rec)
            del vals
        out["models"].append({"file": fname, "tensors": tensors})
        print(f"{fname}: {len(tensors)} tensors hashed")
    write_json("dequant_qwen.json", out)


def model(tag):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    fname = FILES[tag]
    tok, _ = reference_tokenizer(os.path.join(MODEL_DIR, fname))
    lm = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=fname, dtype=torch.float32)
    lm.eval()
    stride = 16
    index = {"model": fname, "generator": "transformers " + __import__("transformers").__version__ + " fp32",
             "config": {"layers": lm.config.num_hidden_layers, "hidden": lm.config.hidden_size,
                        "tie_word_embeddings": bool(lm.config.tie_word_embeddings)},
             "logits": [], "greedy": []}
    blobs, offset = [], 0
    with torch.no_grad():
        for p in CHAT_PROMPTS:
            ids = chat_ids(tok, [{"role": "user", "content": p}])
            lg = lm(torch.tensor([ids])).logits[0].float()
            top2 = lg.topk(2, dim=-1).values
            sub = lg[-1, ::stride].numpy().astype("<f4")
            index["logits"].append({"input_ids": ids, "offset": offset, "count": int(sub.size), "stride": stride,
                                    "argmax_all": lg.argmax(-1).tolist(),
                                    "margin_all": (top2[:, 0] - top2[:, 1]).tolist(),
                                    "last_max": float(lg[-1].max()), "last_norm": float(lg[-1].norm())})
            blobs.append(sub)
            offset += sub.size
        for p in GREEDY_PROMPTS:
            ids = chat_ids(tok, [{"role": "user", "content": p}])
            out = lm(torch.tensor([ids]), use_cache=True)
            past, toks, margins = out.past_key_values, [], []
            for step in range(32):
                last = out.logits[0, -1].float()
                t2 = last.topk(2)
                nxt = int(t2.indices[0])
                toks.append(nxt)
                margins.append(float(t2.values[0] - t2.values[1]))
                if step == 31:
                    break
                out = lm(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
            index["greedy"].append({"prompt": p, "input_ids": ids, "output_ids": toks, "margins": margins,
                                    "text": tok.decode(toks)})
            print(f"  {p[:40]!r}: {tok.decode(toks)[:60]!r}")
    data = np.concatenate(blobs)
    with open(os.path.join(GOLDEN, f"model_{tag}_logits.bin"), "wb") as f:
        f.write(data.tobytes())
    write_json(f"model_{tag}.json", index)


if __name__ == "__main__":
    which = sys.argv[1:] or ["tokenizer", "nfc", "dequant", "qwen05", "qwen15"]
    for w in which:
        if w == "tokenizer":
            tokenizer()
        elif w == "nfc":
            nfc_cases()
        elif w == "dequant":
            dequant()
        elif w in FILES:
            model(w)
        else:
            sys.exit(f"unknown part {w!r}: tokenizer, nfc, dequant, qwen05, qwen15")
