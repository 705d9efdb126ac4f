// Exporters: turn safedec artifacts into files other tools load as they are (`safedec export <target>`).
//   peft            a LoRA artifact -> a plain PEFT adapter directory (adapter_config.json +
//                   adapter_model.safetensors with PEFT's key names), loadable by peft.PeftModel
//   control-vector  an ICV artifact -> a llama.cpp control-vector GGUF (additive form only)
//   hf              a model (HDR-edited or an expert) -> a Hugging Face model directory (hf.cpp)
//   gguf            the same model -> a GGUF file, f32 / f16 / q8_0 (gguf.cpp)
// Every exporter checks the artifact against the model it names (refusing one made for another model,
// naming both), refuses an existing output unless `force`, and writes to a temporary name that is
// renamed into place only when complete, so a failed export leaves nothing half-written.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/model_config.h"

namespace safedec {

class CausalLM;

// A model named on the command line (registered name, GGUF file or Hugging Face directory), read
// for its configuration only (no weights).
struct ExportModel {
  std::string name;  // as given
  std::string path;  // resolved file or directory
  ModelConfig config;
};
ExportModel resolve_export_model(const std::string& name_or_path);

// An output directory written under a temporary name (`<out>.tmp-<pid>`) and renamed into place by
// commit(). An existing `out` is refused unless `force`; then it is replaced only after the new one is
// complete. Destroyed before commit(), it removes the temporary directory.
class StagedDir {
 public:
  StagedDir(std::string out, bool force);
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;
  const std::string& path() const { return tmp_; }  // write the files here
  std::string file(const std::string& name) const { return tmp_ + "/" + name; }
  std::string commit();  // returns the final path

 private:
  std::string out_, tmp_;
  bool force_ = false, committed_ = false;
};

// Refuses an existing output file unless `force` (the check before any work is done).
void check_output_path(const std::string& out, bool force);

// What an export wrote, for the CLI to print.
struct ExportReport {
  std::string out;                 // the file or directory written
  std::vector<std::string> files;  // file names inside `out` (directory exports)
  std::vector<std::string> notes;  // what the user must know (lossy conversions, what was dropped)
};

// ---- PEFT adapter directory from a LoRA artifact (or a PEFT directory safedec reads) ----
struct PeftExportOptions {
  std::string adapter;  // the safedec LoRA artifact directory
  std::string out;      // the PEFT adapter directory to write
  std::string model;    // registered name or path the adapter is checked against; "" = the artifact's base_model
  // Written as adapter_config.json's base_model_name_or_path (e.g. a Hub id such as
  // HuggingFaceTB/SmolLM2-135M-Instruct); "" = the model's resolved path.
  std::string base_model_name_or_path;
  bool force = false;
};
ExportReport export_peft(const PeftExportOptions& options);

// ---- llama.cpp control vector from an ICV artifact ----
// safedec steers layer l (0-based) by transforming that layer's MLP output before the residual add;
// adding a constant c to the MLP output equals adding c to the layer's output, which is where
// llama.cpp adds `direction.l` (after block l, 0-based; llama.cpp never steers block 0). The ICV is
// h(unsafe) - h(safe) and safedec's steering moves the state AGAINST it (the code form subtracts
// normalize(icv)), so the safe additive direction is its negative:
// direction.l = -scale * icv[l] for l >= 1; icv[0] cannot be expressed and is dropped (reported).
// llama.cpp applies only this additive form, never safedec's cosine-gated norm-preserving (code) form
// nor the paper form's rescale to ||h||.
struct ControlVectorExportOptions {
  std::string icv;    // the ICV artifact (directory or legacy .safetensors)
  std::string out;    // the .gguf file to write
  std::string model;  // registered name or path; "" = the artifact's recorded model
  double scale = 0.12;  // direction = -scale * icv: toward the safe side (the code's alpha is 0.12)
  bool force = false;
};
ExportReport export_control_vector(const ControlVectorExportOptions& options);

// The model an export writes: loaded in fp32, then either an expert artifact's weights (its recorded
// base model, truncated to its K layers; --model must name the same file if given) or an HDR edit
// theta - lambda * tau (hdr_lambda < 0: the artifact's lambda). An artifact for another model is refused
// naming both. `notes` says what was applied.
struct LoadedExportModel {
  ExportModel base;
  std::shared_ptr<CausalLM> lm;
  std::vector<std::string> notes;
};
LoadedExportModel load_export_model(const std::string& model, const std::string& hdr, double hdr_lambda,
                                    const std::string& expert);

// ---- Hugging Face model directory of a model, HDR-edited (--hdr) or an expert's weights (--expert) ----
// config.json (+ generation_config.json), fp32 safetensors with {"format": "pt"} metadata (sharded as
// model-0000i-of-0000n.safetensors + model.safetensors.index.json above max_shard_bytes) and the
// tokenizer: copied from a Hugging Face model directory, or built from a GGUF byte-level BPE vocabulary
// (tokenizer.json, tokenizer_config.json with the chat template, special_tokens_map.json); a GGUF
// SentencePiece vocabulary is refused rather than written approximately. llama and qwen2 only.
struct HfExportOptions {
  std::string model;   // registered name or path; "" with --expert = the expert's base model
  std::string hdr;     // harm-vector artifact: theta - lambda * tau before export
  double hdr_lambda = -1;  // < 0: the artifact's recorded lambda
  std::string expert;  // expert-weights artifact: its (possibly truncated) fine-tuned model is exported
  std::string out;
  int64_t max_shard_bytes = int64_t{2} << 30;  // 2 GiB (a shard may exceed it only by one tensor)
  bool force = false;
};
ExportReport export_hf(const HfExportOptions& options);

// ---- GGUF of the same model (llama.cpp names and metadata), f32, f16 or q8_0 ----
// The source must be a GGUF file (its metadata, tokenizer included, is copied; sizes, block count and
// file type are rewritten). llama Q/K rows are permuted back to llama.cpp's interleaved-RoPE order.
// f16 / q8_0 apply to 2-D weight matrices; norms and biases stay f32 (as llama.cpp's quantiser does).
struct GgufExportOptions {
  std::string model, hdr, expert, out;
  double hdr_lambda = -1;
  std::string type = "f32";  // f32 | f16 | q8_0
  bool force = false;
};
ExportReport export_gguf(const GgufExportOptions& options);

}  // namespace safedec
