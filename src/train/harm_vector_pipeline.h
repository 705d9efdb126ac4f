// `safedec train` pipeline `harm_vector`: Safety Arithmetic's harm vector (methods.md 3a, Hazra et al.
// 2024). The base model theta_b is fine-tuned on (question, harmful answer) pairs from the training
// pools (the deep-alignment build's safety rows: the base model's own complying answers and
// hh_harmless rejected replies) — in full, or with LoRA whose tau is scale * B A — and
// tau_H = theta_H - theta_b over every parameter is pruned to its global top-k |tau| (k = 10%) by a
// streaming radix select (select_global_topk: tau never exists twice in memory). The artifact (kind
// harm_vector) holds the pruned tau'_H as masked dense tensors named like CausalLM::named_parameters()
// and the default strength lambda; evaluation subtracts lambda * tau'_H at model load (`hdr:`).
//
// The edited-model variant (`harm.layers: edited`) restricts tau to the decoder layers that differ
// most, plus neighbours: the layers whose relative change ||tau_l|| / ||theta_b,l|| is in the top
// `harm.edited_share` (or an explicit `harm.edited_layers` list, e.g. the layers a knowledge edit
// touched), widened by `harm.neighbours` on each side; the top-k is then taken inside that area only.
//
// pipeline.cpp owns the run directory, the config parsing and the shared helpers; it hands them over
// in a HarmVectorRunEnv.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "artifacts/artifact.h"
#include "core/config_schema.h"
#include "decoding/model_bundle.h"
#include "model/lora.h"
#include "train/lm_task.h"
#include "train/trainer.h"

namespace safedec {

// What the pipeline needs from the generic `safedec train` runner.
struct HarmVectorRunEnv {
  std::shared_ptr<ModelBundle> target;  // theta_b, fp32 (trained in place by the full fine-tune)
  std::string run_dir, artifact_dir;
  uint64_t seed = 0;
  int64_t max_seq_len = 384;
  bool activation_checkpointing = false;
  std::vector<std::string>* dataset_files = nullptr;  // files read (run manifest)
  nlohmann::json* counts = nullptr;                   // row counts (run manifest)
  std::vector<std::string>* data_ids = nullptr;       // training example ids (artifact manifest hash)
  // The `lora` section as an adapter for this model.
  std::function<std::shared_ptr<LoraAdapter>(const ModelConfig&)> make_lora;
  // Runs the shared Trainer over the task (checkpoints, resume, NLL before/after) into metrics.
  std::function<TrainResult(LmTask&, nlohmann::json&)> train;
  // A manifest for an artifact of this run (config, data-id hash, seed).
  std::function<ArtifactManifest(ArtifactKind, const ModelConfig&, const std::string& model_file)> new_manifest;
};

class HarmVectorPipeline {
 public:
  void declare(ConfigSchema& top);
  // Trains, prunes and writes the artifact; false when the trainer stopped early (stop_after).
  bool run(HarmVectorRunEnv& env, nlohmann::json& metrics);

 private:
  ConfigSchema data_{"`data`"}, harm_{"`harm`"};
  std::string triplets_ = ".cache/data/deep_alignment";
  std::vector<std::string> datasets_;  // source pools kept (empty = every safety row's pool)
  int64_t limit_ = 0;
  std::string mode_ = "full";  // full | lora
  double fraction_ = 0.1;
  double lambda_ = 3.0;
  std::string layers_ = "all";  // all | edited
  double edited_share_ = 0.2;
  std::vector<int64_t> edited_layers_;
  int64_t neighbours_ = 1;
};

// ---- the parts, for tests ----
// Decoder layer of a parameter name ("layers.7.wqkv" -> 7), -1 for embed / final_norm / lm_head.
int64_t parameter_layer(const std::string& name);
// The edited-model area: `explicit_layers` when given, else the ceil(share * L) layers with the largest
// relative change (ties by index), each widened by `neighbours` on both sides; sorted, unique.
std::vector<int64_t> edited_area(const std::vector<double>& relative_change, double share,
                                 const std::vector<int64_t>& explicit_layers, int64_t neighbours);

// Peak resident set (VmHWM) and current RSS (VmRSS) of this process in bytes (0 without /proc), and a
// reset of the peak mark to the current RSS (Linux >= 4.0; false when refused).
int64_t process_peak_rss();
int64_t process_rss();
bool reset_process_peak_rss();

}  // namespace safedec
