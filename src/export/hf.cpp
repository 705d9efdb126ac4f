// `safedec export hf`: a loaded (optionally HDR-edited or expert) CausalLM as a Hugging Face model
// directory: config.json, generation_config.json, safetensors ({"format": "pt"}; sharded with
// model.safetensors.index.json above --max-shard-size) and the tokenizer files.
//
// Weights: safedec holds Q/K rows in HF's rotate-half order (the GGUF loader un-permutes llama.cpp's
// interleaved order), so the fused tensors only need splitting: wqkv rows q | k | v -> q_proj, k_proj,
// v_proj (and bqkv -> their biases), w_gate_up rows gate | up -> gate_proj, up_proj.
// Tokenizer (GGUF byte-level BPE, tokenizer.ggml.model = gpt2): tokenizer.json is built from the same
// vocabulary, merges, token types and pre-tokenizer regexes safedec's own tokenizer uses
// (src/tokenizer/load.cpp): BPE model, Split(regex, Isolated) steps then ByteLevel(use_regex false),
// NFC normaliser for the Qwen2 family, control/unknown tokens as special added tokens, user-defined
// tokens as plain added tokens. SentencePiece GGUF vocabularies are refused (no exact tokenizer.json
// writer for them yet) rather than written approximately.
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "artifacts/artifact.h"
#include "artifacts/harm_vector.h"
#include "artifacts/typed.h"
#include "core/error.h"
#include "core/files.h"
#include "core/model_registry.h"
#include "export/export.h"
#include "io/gguf.h"
#include "model/causal_lm.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace safedec {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;

namespace {

constexpr int64_t kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenUserDefined = 4;

bool in_byte_alphabet(const std::string& s) {
  std::string tmp;
  return unicode::byte_level_to_bytes(s, &tmp);
}

int64_t gguf_token_id(const GgufFile& f, const std::string& key, size_t n) {
  const int64_t id = f.get_int(key, -1);
  return id >= 0 && id < static_cast<int64_t>(n) ? id : -1;
}

// tokenizer.json + tokenizer_config.json + special_tokens_map.json from a GGUF byte-level BPE vocabulary.
void write_tokenizer_from_gguf(const GgufFile& f, const std::string& dir) {
  const std::string path = f.path();
  SAFEDEC_CHECK(f.has("tokenizer.ggml.tokens"), "the GGUF file ", path,
                " carries no tokenizer (tokenizer.ggml.tokens), so no tokenizer.json can be written");
  const std::string model = f.get_string("tokenizer.ggml.model", "");
  SAFEDEC_CHECK(model == "gpt2", "the GGUF file ", path, " has a '", model,
                "' (SentencePiece) vocabulary; `safedec export hf` writes an exact tokenizer.json only for byte-level "
                "BPE (tokenizer.ggml.model = gpt2) and refuses rather than write an approximate one; export from the "
                "model's Hugging Face directory instead");
  const std::string pre = f.get_string("tokenizer.ggml.pre", "gpt2");
  std::vector<SplitStep> steps;
  SAFEDEC_CHECK(pretok::named_steps(pre, &steps), "the GGUF file ", path, ": pre-tokenizer '", pre,
                "' has no known Hugging Face form");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  SAFEDEC_CHECK(f.has("tokenizer.ggml.merges"), "the GGUF file ", path, " has a byte-level BPE vocabulary without ",
                "tokenizer.ggml.merges, so no tokenizer.json can be written for it");
  const std::vector<std::string> merges = f.get_string_array("tokenizer.ggml.merges");
  const size_t n = tokens.size();
  std::vector<int64_t> types(n, kTokenNormal);
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_int_array("tokenizer.ggml.token_type");
    SAFEDEC_CHECK(types.size() == n, "the GGUF file ", path, ": tokenizer.ggml.token_type has ", types.size(),
                  " entries for ", n, " tokens");
  }
  // Plain (sorted) JSON objects: ordered_json looks keys up linearly, too slow for a 50k-100k vocabulary.
  json vocab = json::object();
  json added = json::array();
  std::set<std::string> seen;
  for (size_t i = 0; i < n; ++i) {
    // Tokens outside the byte alphabet are respelled byte-wise (as safedec's loader and transformers do).
    const std::string spelled = in_byte_alphabet(tokens[i]) ? tokens[i] : unicode::bytes_to_byte_level(tokens[i]);
    SAFEDEC_CHECK(seen.insert(spelled).second, "the GGUF file ", path, ": token ", i, " ('", spelled,
                  "') is spelled like an earlier token; tokenizer.json cannot hold both");
    vocab[spelled] = i;
    const bool special = types[i] == kTokenControl || types[i] == kTokenUnknown;
    if ((special || types[i] == kTokenUserDefined) && in_byte_alphabet(tokens[i]))
      added.push_back({{"id", i},
                       {"content", tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", !special},
                       {"special", special}});
  }
  // The split steps as Hugging Face writes them: a lone \p{N} split is Digits(individual_digits) (the
  // SmolLM/StarCoder tokenizers), a final GPT-2 regex is ByteLevel's own (use_regex true), any other
  // regex a Split(Isolated) before ByteLevel(use_regex false).
  json pretok_seq = json::array();
  bool byte_level_regex = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const SplitStep& s = steps[i];
    SAFEDEC_CHECK(s.behavior == SplitBehavior::Isolated && !s.invert, "pre-tokenizer '", pre,
                  "' uses a split behaviour the exporter does not write");
    if (s.pattern == R"(\p{N})") {
      pretok_seq.push_back({{"type", "Digits"}, {"individual_digits", true}});
    } else if (s.pattern == pretok::kGpt2 && i + 1 == steps.size()) {
      byte_level_regex = true;
    } else {
      pretok_seq.push_back({{"type", "Split"}, {"pattern", {{"Regex", s.pattern}}}, {"behavior", "Isolated"},
                            {"invert", false}});
    }
  }
  pretok_seq.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                        {"use_regex", byte_level_regex}});
  const int64_t bos = gguf_token_id(f, "tokenizer.ggml.bos_token_id", n);
  const int64_t eos = gguf_token_id(f, "tokenizer.ggml.eos_token_id", n);
  const int64_t pad = gguf_token_id(f, "tokenizer.ggml.padding_token_id", n);
  const int64_t unk = gguf_token_id(f, "tokenizer.ggml.unknown_token_id", n);
  const bool add_bos = f.get_bool("tokenizer.ggml.add_bos_token", false) && bos >= 0;
  const bool add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false) && eos >= 0;
  json post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false},
                       {"use_regex", true}};
  if (add_bos || add_eos) {
    // TemplateProcessing: BOS/EOS around the sequence, as the GGUF's add_bos/add_eos flags say.
    json single = json::array(), pair = json::array(), specials = json::object();
    auto special = [&](int64_t id) {
      single.push_back({{"SpecialToken", {{"id", tokens[id]}, {"type_id", 0}}}});
      specials[tokens[id]] = {{"id", tokens[id]}, {"ids", {id}}, {"tokens", {tokens[id]}}};
    };
    if (add_bos) special(bos);
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) special(eos);
    pair = single;
    if (add_bos) pair.push_back({{"SpecialToken", {{"id", tokens[bos]}, {"type_id", 1}}}});
    pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
    if (add_eos) pair.push_back({{"SpecialToken", {{"id", tokens[eos]}, {"type_id", 1}}}});
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
  }
  json tok = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", pretok::named_uses_nfc(pre) ? json({{"type", "NFC"}}) : json(nullptr)},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", pretok_seq}}},
      {"post_processor", post},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", pretok::named_ignores_merges(pre)},
        {"vocab", vocab},
        {"merges", merges}}}};
  write_file_atomic(dir + "/tokenizer.json", tok.dump(2) + "\n");

  ordered_json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                      {"clean_up_tokenization_spaces", false},
                      {"add_bos_token", add_bos},
                      {"add_eos_token", add_eos}};
  ordered_json map = ordered_json::object();
  auto name = [&](const char* key, int64_t id) {
    if (id < 0) return;
    cfg[key] = tokens[id];
    map[key] = tokens[id];
  };
  name("bos_token", bos);
  name("eos_token", eos);
  name("pad_token", pad);
  name("unk_token", unk);
  const std::string chat = f.get_string("tokenizer.chat_template", "");
  if (!chat.empty()) cfg["chat_template"] = chat;
  write_file_atomic(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
  write_file_atomic(dir + "/special_tokens_map.json", map.dump(2) + "\n");
}

// The tokenizer files of a Hugging Face model directory, copied as they are.
std::vector<std::string> copy_hf_tokenizer(const std::string& src, const std::string& dir) {
  std::vector<std::string> copied;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                           "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja"}) {
    const fs::path from = fs::path(src) / name;
    if (!fs::is_regular_file(from)) continue;
    fs::copy_file(from, fs::path(dir) / name, fs::copy_options::overwrite_existing);
    copied.push_back(name);
  }
  SAFEDEC_CHECK(!copied.empty(), "the model directory ", src, " holds no tokenizer files (tokenizer.json, ...)");
  return copied;
}

ordered_json hf_config(const ModelConfig& c, int64_t n_layers, bool tied, int64_t bos, int64_t eos) {
  SAFEDEC_CHECK(c.architecture == "llama" || c.architecture == "qwen2", "`safedec export hf` writes llama and qwen2 ",
                "models; '", c.architecture, "' (", c.name, ") is not supported yet");
  SAFEDEC_CHECK(c.norm_weight_offset == 0.0 && !c.embedding_scale, "the model ", c.name,
                " uses Gemma-style norms or embedding scaling, which a ", c.architecture, " config.json cannot express");
  SAFEDEC_CHECK(!c.rope_freqs_tensor, "the model ", c.name, " carries llama.cpp RoPE frequency factors ",
                "(rope_freqs.weight) that the exporter does not translate back to rope_scaling");
  SAFEDEC_CHECK(c.rope_scaling.type == "none" || c.rope_scaling.type == "linear" || c.rope_scaling.type == "llama3",
                "RoPE scaling '", c.rope_scaling.type, "' of ", c.name, " is not exported");
  const bool qwen = c.architecture == "qwen2";
  ordered_json j = {{"_name_or_path", c.name},
                    {"architectures", {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                    {"model_type", qwen ? "qwen2" : "llama"},
                    {"vocab_size", c.vocab_size},
                    {"hidden_size", c.hidden_size},
                    {"intermediate_size", c.intermediate_size},
                    {"num_hidden_layers", n_layers},
                    {"num_attention_heads", c.n_heads},
                    {"num_key_value_heads", c.n_kv_heads},
                    {"head_dim", c.head_dim},
                    {"hidden_act", c.hidden_act},
                    {"max_position_embeddings", c.context_length},
                    {"rms_norm_eps", c.rms_norm_eps},
                    {"rope_theta", c.rope_theta},
                    {"tie_word_embeddings", tied},
                    {"attention_dropout", 0.0},
                    {"initializer_range", 0.02},
                    {"use_cache", true},
                    {"torch_dtype", "float32"}};
  if (!qwen) {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  } else {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
    j["max_window_layers"] = n_layers;
  }
  if (c.rope_scaling.type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
  } else if (c.rope_scaling.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  }
  if (bos >= 0) j["bos_token_id"] = bos;
  if (eos >= 0) j["eos_token_id"] = eos;
  return j;
}

// The model's weights under Hugging Face names, in checkpoint order.
std::vector<std::pair<std::string, torch::Tensor>> hf_tensors(const CausalLM& lm) {
  const ModelConfig& c = lm.config();
  const ModelWeights& w = lm.weights();
  SAFEDEC_CHECK(!lm.quantized(), "the model is held quantised; export needs fp32 weights");
  const int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim, I = c.intermediate_size;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", w.embed);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = *w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    SAFEDEC_CHECK(L.wqkv.defined() && L.w_gate_up.defined() && L.w_down.defined() && L.wo.defined(),
                  "layer ", l, " has no fp32 weights to export");
    SAFEDEC_CHECK(L.wqkv.size(0) == q + 2 * kv && L.w_gate_up.size(0) == 2 * I, "layer ", l,
                  " has fused weights of unexpected shapes ", L.wqkv.sizes(), " / ", L.w_gate_up.sizes());
    out.emplace_back(p + "input_layernorm.weight", L.attn_norm);
    out.emplace_back(p + "self_attn.q_proj.weight", L.wqkv.narrow(0, 0, q));
    out.emplace_back(p + "self_attn.k_proj.weight", L.wqkv.narrow(0, q, kv));
    out.emplace_back(p + "self_attn.v_proj.weight", L.wqkv.narrow(0, q + kv, kv));
    if (L.bqkv.defined()) {
      out.emplace_back(p + "self_attn.q_proj.bias", L.bqkv.narrow(0, 0, q));
      out.emplace_back(p + "self_attn.k_proj.bias", L.bqkv.narrow(0, q, kv));
      out.emplace_back(p + "self_attn.v_proj.bias", L.bqkv.narrow(0, q + kv, kv));
    }
    out.emplace_back(p + "self_attn.o_proj.weight", L.wo);
    out.emplace_back(p + "post_attention_layernorm.weight", L.ffn_norm);
    out.emplace_back(p + "mlp.gate_proj.weight", L.w_gate_up.narrow(0, 0, I));
    out.emplace_back(p + "mlp.up_proj.weight", L.w_gate_up.narrow(0, I, I));
    out.emplace_back(p + "mlp.down_proj.weight", L.w_down);
  }
  out.emplace_back("model.norm.weight", w.final_norm);
  if (!w.lm_head.is_same(w.embed)) out.emplace_back("lm_head.weight", w.lm_head);
  return out;
}

std::string shard_name(size_t i, size_t n) {
  std::ostringstream s;
  s << "model-" << std::setw(5) << std::setfill('0') << i << "-of-" << std::setw(5) << std::setfill('0') << n
    << ".safetensors";
  return s.str();
}

}  // namespace

LoadedExportModel load_export_model(const std::string& model, const std::string& hdr, double hdr_lambda,
                                    const std::string& expert) {
  SAFEDEC_CHECK(hdr.empty() || expert.empty(), "--hdr and --expert are exclusive: export one model at a time");
  LoadOptions load;
  load.weights = LoadOptions::Weights::Fp32;
  std::string model_name = model;
  if (!expert.empty() && model_name.empty()) model_name = expert_base_model(expert);
  SAFEDEC_CHECK(!model_name.empty(), "no model given: pass --model (a registered name, GGUF file or Hugging Face ",
                "directory) or --expert");
  LoadedExportModel out;
  out.base = resolve_export_model(model_name);
  // An HDR artifact made for another model is refused before the weights are loaded (naming both).
  if (!hdr.empty() && is_artifact_dir(resolve_artifact_path(hdr)))
    check_artifact_model(open_artifact(resolve_artifact_path(hdr), ArtifactKind::HarmVector), out.base.config);
  if (!expert.empty()) {
    const std::string recorded = expert_base_model(expert);
    const ExportModel rec = resolve_export_model(recorded);
    SAFEDEC_CHECK(rec.path == out.base.path, "the expert ", expert, " was made from ", recorded, " (", rec.path,
                  ") but --model names ", out.base.path, "; drop --model or name that model");
    load.max_layers = expert_layers(expert);
    out.lm = CausalLM::load(out.base.path, load);
    load_expert_weights_into(*out.lm, expert);
    out.notes.push_back("expert weights from " + expert + " (" + std::to_string(out.lm->config().n_layers) +
                        " layers)");
  } else {
    out.lm = CausalLM::load(out.base.path, load);
  }
  if (!hdr.empty()) {
    const HarmVector h = load_harm_vector(hdr, out.lm->config());  // checks the artifact's model, naming both
    const double lambda = hdr_lambda >= 0 ? hdr_lambda : h.lambda;
    check_hdr_lambda(lambda, "--hdr-lambda");
    const int64_t edited = apply_harm_vector(*out.lm, h, lambda);
    out.notes.push_back("HDR: theta - " + std::to_string(lambda) + " * tau from " + hdr + " (" +
                        std::to_string(edited) + " tensors edited)");
  }
  return out;
}

ExportReport export_hf(const HfExportOptions& o) {
  SAFEDEC_CHECK(o.hdr.empty() || o.expert.empty(), "--hdr and --expert are exclusive: export one model at a time");
  SAFEDEC_CHECK(o.max_shard_bytes >= 1, "--max-shard-size must be positive");
  StagedDir staged(o.out, o.force);  // refuses an existing --out before any work
  LoadedExportModel loaded = load_export_model(o.model, o.hdr, o.hdr_lambda, o.expert);
  const ExportModel& base = loaded.base;
  std::shared_ptr<CausalLM> lm = loaded.lm;
  std::vector<std::string> notes = loaded.notes;
  const ModelConfig& c = lm->config();
  const bool tied = lm->weights().lm_head.is_same(lm->weights().embed);

  // Tokenizer first: a vocabulary that cannot be written exactly refuses the export before the weights.
  std::vector<std::string> files;
  int64_t bos = -1, eos = -1;
  if (fs::is_directory(base.path)) {
    for (auto& f : copy_hf_tokenizer(base.path, staged.path())) files.push_back(f);
    std::ifstream in(base.path + "/config.json");
    json src;
    in >> src;
    if (src.contains("bos_token_id") && src["bos_token_id"].is_number_integer()) bos = src["bos_token_id"];
    if (src.contains("eos_token_id") && src["eos_token_id"].is_number_integer()) eos = src["eos_token_id"];
  } else {
    auto g = GgufFile::open(base.path);
    write_tokenizer_from_gguf(*g, staged.path());
    for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) files.push_back(f);
    const size_t n = static_cast<size_t>(c.vocab_size);
    bos = gguf_token_id(*g, "tokenizer.ggml.bos_token_id", n);
    eos = gguf_token_id(*g, "tokenizer.ggml.eos_token_id", n);
  }
  write_file_atomic(staged.file("config.json"), hf_config(c, c.n_layers, tied, bos, eos).dump(2) + "\n");
  files.push_back("config.json");
  ordered_json gen = {{"_from_model_config", true}};
  if (bos >= 0) gen["bos_token_id"] = bos;
  if (eos >= 0) gen["eos_token_id"] = eos;
  write_file_atomic(staged.file("generation_config.json"), gen.dump(2) + "\n");
  files.push_back("generation_config.json");

  // Weights: greedy shards in checkpoint order; a tensor larger than the limit gets a shard of its own.
  const auto tensors = hf_tensors(*lm);
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t bytes = t.numel() * 4;
    if (!shards.back().empty() && in_shard + bytes > o.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().emplace_back(name, t);
    in_shard += bytes;
    total += bytes;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (shards.size() == 1) {
    write_tensors_f32(staged.file("model.safetensors"), shards[0], meta);
    files.push_back("model.safetensors");
  } else {
    ordered_json weight_map = ordered_json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = shard_name(i + 1, shards.size());
      write_tensors_f32(staged.file(name), shards[i], meta);
      files.push_back(name);
      for (const auto& kv : shards[i]) weight_map[kv.first] = name;
    }
    ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic(staged.file("model.safetensors.index.json"), index.dump(2) + "\n");
    files.push_back("model.safetensors.index.json");
  }
  ExportReport r;
  r.out = staged.commit();
  r.files = files;
  notes.insert(notes.begin(), "Hugging Face " + std::string(c.architecture == "qwen2" ? "Qwen2" : "Llama") +
                                  "ForCausalLM (" + c.name + ", " + std::to_string(c.n_layers) + " layers), fp32, " +
                                  std::to_string(tensors.size()) + " tensors in " + std::to_string(shards.size()) +
                                  " safetensors file(s)");
  r.notes = notes;
  return r;
}

}  // namespace safedec
