// `safedec export gguf`: a loaded (optionally HDR-edited or expert) CausalLM written back as a GGUF file
// with llama.cpp's tensor names, the source GGUF's metadata (tokenizer included) and f32, f16 or q8_0
// weights.
//
// Layout: a [out, in] matrix is ggml ne = {in, out}. llama.cpp's converter permutes the Q/K rows of
// arch "llama" for its interleaved RoPE: per head, rows [2, hd/2] -> [hd/2, 2]; safedec's loader undoes
// that, so the export applies it again (the exact inverse of load_gguf.cpp's unpermute_rows).
// Q8_0 (ggml-quants.c quantize_row_q8_0_ref): blocks of 32 values, d = max|x| / 127 stored as fp16,
// q = round(x / d) as int8; d = 0 gives q = 0.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "export/export.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/half.h"
#include "model/causal_lm.h"

namespace safedec {

namespace fs = std::filesystem;

namespace {

// llama.cpp's general.file_type values (llama_ftype).
constexpr uint32_t kFtypeAllF32 = 0, kFtypeMostlyF16 = 1, kFtypeMostlyQ8_0 = 7;

// HF rotate-half rows -> llama.cpp interleaved rows, per head: view [heads, 2, hd/2, in] -> [heads, hd/2, 2, in].
torch::Tensor permute_rows(const torch::Tensor& w, int64_t heads, int64_t hd) {
  const bool vec = w.dim() == 1;
  torch::Tensor m = vec ? w.view({-1, 1}) : w;
  torch::Tensor out = m.reshape({heads, 2, hd / 2, m.size(1)}).transpose(1, 2).reshape({heads * hd, m.size(1)});
  return vec ? out.reshape({-1}).contiguous() : out.contiguous();
}

void quantize_q8_0(const float* x, int64_t n, uint8_t* out) {
  constexpr int64_t kBlock = 32;
  for (int64_t b = 0; b < n / kBlock; ++b) {
    const float* v = x + b * kBlock;
    float amax = 0.0f;
    for (int64_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* blk = out + b * 34;
    const uint16_t dh = float_to_half(d);
    std::memcpy(blk, &dh, 2);
    for (int64_t i = 0; i < kBlock; ++i) {
      const int q = static_cast<int>(std::lround(v[i] * id));
      blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::max(-127, std::min(127, q))));
    }
  }
}

// Adds one tensor in the requested type (matrices only; vectors stay f32).
void add(GgufWriter& w, const std::string& name, const torch::Tensor& t_in, const std::string& type) {
  const torch::Tensor t = t_in.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  SAFEDEC_CHECK(torch::isfinite(t).all().item<bool>(), "refusing to export tensor ", name, ": it holds NaN/Inf");
  std::vector<int64_t> ne(t.sizes().rbegin(), t.sizes().rend());
  const float* p = t.data_ptr<float>();
  const int64_t n = t.numel();
  const bool matrix = t.dim() == 2;
  if (!matrix || type == "f32") {
    w.add_f32_tensor(name, ne, p);
  } else if (type == "f16") {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) h[i] = float_to_half(p[i]);
    w.add_tensor(name, ne, GgmlType::F16, h.data(), h.size() * 2);
  } else {
    SAFEDEC_CHECK(ne[0] % 32 == 0, "tensor ", name, " has rows of ", ne[0],
                  " values, not a multiple of Q8_0's block of 32; export it as f16 or f32");
    std::vector<uint8_t> q(static_cast<size_t>(n / 32 * 34));
    quantize_q8_0(p, n, q.data());
    w.add_tensor(name, ne, GgmlType::Q8_0, q.data(), q.size());
  }
}

}  // namespace

ExportReport export_gguf(const GgufExportOptions& o) {
  SAFEDEC_CHECK(o.type == "f32" || o.type == "f16" || o.type == "q8_0", "--type must be one of f32, f16, q8_0; got '",
                o.type, "'");
  check_output_path(o.out, o.force);
  LoadedExportModel loaded = load_export_model(o.model, o.hdr, o.hdr_lambda, o.expert);
  SAFEDEC_CHECK(!fs::is_directory(loaded.base.path), "`safedec export gguf` copies the metadata and tokenizer of a ",
                "GGUF source; ", loaded.base.path, " is a Hugging Face directory (convert it with llama.cpp's ",
                "convert_hf_to_gguf.py, or export from the model's GGUF)");
  const CausalLM& lm = *loaded.lm;
  const ModelConfig& c = lm.config();
  const ModelWeights& W = lm.weights();
  SAFEDEC_CHECK(!lm.quantized(), "the model is held quantised; export needs fp32 weights");
  auto src = GgufFile::open(loaded.base.path);
  const std::string arch = src->architecture();

  GgufWriter w;
  // Metadata as the source has it, except what this file changes.
  for (const auto& [key, value] : src->metadata()) {
    if (key == "general.file_type" || key == "general.quantization_version" || key == "general.alignment") continue;
    w.set(key, value);
  }
  w.set_u32(arch + ".block_count", static_cast<uint32_t>(c.n_layers));
  w.set_u32("general.file_type", o.type == "f32" ? kFtypeAllF32 : o.type == "f16" ? kFtypeMostlyF16 : kFtypeMostlyQ8_0);
  w.set_u32("general.quantization_version", 2);

  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, hd = c.head_dim, q = H * hd, kv = Hkv * hd;
  const int64_t I = c.intermediate_size;
  const bool permuted = arch == "llama";
  add(w, "token_embd.weight", W.embed, o.type);
  for (size_t l = 0; l < W.layers.size(); ++l) {
    const LayerWeights& L = *W.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    add(w, p + "attn_norm.weight", L.attn_norm, o.type);
    torch::Tensor wq = L.wqkv.narrow(0, 0, q), wk = L.wqkv.narrow(0, q, kv), wv = L.wqkv.narrow(0, q + kv, kv);
    if (permuted) {
      wq = permute_rows(wq, H, hd);
      wk = permute_rows(wk, Hkv, hd);
    }
    add(w, p + "attn_q.weight", wq, o.type);
    add(w, p + "attn_k.weight", wk, o.type);
    add(w, p + "attn_v.weight", wv, o.type);
    if (L.bqkv.defined()) {
      torch::Tensor bq = L.bqkv.narrow(0, 0, q), bk = L.bqkv.narrow(0, q, kv);
      if (permuted) {
        bq = permute_rows(bq, H, hd);
        bk = permute_rows(bk, Hkv, hd);
      }
      add(w, p + "attn_q.bias", bq, o.type);
      add(w, p + "attn_k.bias", bk, o.type);
      add(w, p + "attn_v.bias", L.bqkv.narrow(0, q + kv, kv), o.type);
    }
    add(w, p + "attn_output.weight", L.wo, o.type);
    add(w, p + "ffn_norm.weight", L.ffn_norm, o.type);
    add(w, p + "ffn_gate.weight", L.w_gate_up.narrow(0, 0, I), o.type);
    add(w, p + "ffn_up.weight", L.w_gate_up.narrow(0, I, I), o.type);
    add(w, p + "ffn_down.weight", L.w_down, o.type);
    if (L.q_norm.defined()) add(w, p + "attn_q_norm.weight", L.q_norm, o.type);
    if (L.k_norm.defined()) add(w, p + "attn_k_norm.weight", L.k_norm, o.type);
    if (L.post_attn_norm.defined()) add(w, p + "post_attention_norm.weight", L.post_attn_norm, o.type);
    if (L.post_ffn_norm.defined()) add(w, p + "post_ffw_norm.weight", L.post_ffn_norm, o.type);
  }
  add(w, "output_norm.weight", W.final_norm, o.type);
  if (W.rope_freqs.defined()) add(w, "rope_freqs.weight", W.rope_freqs, "f32");
  if (!W.lm_head.is_same(W.embed)) add(w, "output.weight", W.lm_head, o.type);
  w.write(o.out);  // to <out>.tmp, then renamed

  ExportReport r;
  r.out = o.out;
  r.notes = loaded.notes;
  r.notes.insert(r.notes.begin(), "GGUF " + arch + " (" + c.name + ", " + std::to_string(c.n_layers) +
                                      " layers), weights " + o.type + ", metadata and tokenizer from " +
                                      loaded.base.path);
  return r;
}

}  // namespace safedec
