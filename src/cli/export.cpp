// `safedec export <target>`: safedec artifacts as files other tools load (src/export/export.h).
//   peft            LoRA artifact -> PEFT adapter directory
//   control-vector  ICV artifact  -> llama.cpp control-vector GGUF (additive form only)
//   hf              model (+ HDR edit or expert weights) -> Hugging Face model directory
//   gguf            model (+ HDR edit or expert weights) -> GGUF file (f32 / f16 / q8_0)
//   bundle          method config + its artifacts + hashes -> deployment bundle (export/bundle.h)
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/commands.h"
#include "export/bundle.h"
#include "export/export.h"

namespace safedec::cli {

namespace {

int report(const ExportReport& r, bool json) {
  if (json) {
    nlohmann::json j = {{"out", r.out}, {"files", r.files}, {"notes", r.notes}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "wrote " << r.out << "\n";
    for (const auto& f : r.files) std::cout << "  " << f << "\n";
    for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
  }
  return 0;
}

}  // namespace

Runner add_export(CLI::App& app) {
  auto* ex = app.add_subcommand("export", "Export artifacts for deployment (targets: peft, control-vector, hf, gguf, bundle)");
  ex->require_subcommand(1);
  auto json = std::make_shared<bool>(false);

  auto peft = std::make_shared<PeftExportOptions>();
  auto* p = ex->add_subcommand("peft", "LoRA artifact -> PEFT adapter directory (adapter_config.json + "
                                       "adapter_model.safetensors) for peft.PeftModel");
  p->add_option("--adapter", peft->adapter, "The safedec LoRA artifact directory")->required();
  p->add_option("--out", peft->out, "The PEFT adapter directory to write")->required();
  p->add_option("--model", peft->model,
                "Model the adapter is checked against (registered name or path; default: the artifact's base_model)");
  p->add_option("--base-model-name-or-path", peft->base_model_name_or_path,
                "Value of adapter_config.json's base_model_name_or_path (default: the model's local path)");
  p->add_flag("--force", peft->force, "Replace an existing output directory");
  p->add_flag("--json", *json, "Print one JSON object {out, files, notes}");

  auto cv = std::make_shared<ControlVectorExportOptions>();
  auto* c = ex->add_subcommand("control-vector",
                               "ICV artifact -> llama.cpp control-vector GGUF (direction.N = -scale * icv[N], "
                               "added to block N's output, toward the safe side; llama.cpp applies only this additive "
                               "form)");
  c->add_option("--icv", cv->icv, "The safedec ICV artifact (from `safedec icv extract`)")->required();
  c->add_option("--out", cv->out, "The .gguf file to write")->required();
  c->add_option("--model", cv->model,
                "Model the ICV is checked against (registered name or path; default: the artifact's model)");
  c->add_option("--scale", cv->scale,
                "direction = -scale * icv (the ICV is h(unsafe) - h(safe); the direction points away from it)")
      ->capture_default_str();
  c->add_flag("--force", cv->force, "Replace an existing output file");
  c->add_flag("--json", *json, "Print one JSON object {out, files, notes}");

  auto hf = std::make_shared<HfExportOptions>();
  auto shard_mb = std::make_shared<int64_t>(2048);
  auto* h = ex->add_subcommand("hf", "Model (optionally HDR-edited, or an expert) -> Hugging Face model directory "
                                     "(config.json, safetensors, tokenizer files)");
  h->add_option("--model", hf->model, "Registered model name or path (default with --expert: its base model)");
  h->add_option("--hdr", hf->hdr, "Harm-vector artifact applied first: theta - lambda * tau (Safety Arithmetic HDR)");
  h->add_option("--hdr-lambda", hf->hdr_lambda, "HDR strength lambda (default: the artifact's recorded lambda)");
  h->add_option("--expert", hf->expert, "Expert-weights artifact: export its fine-tuned model instead");
  h->add_option("--out", hf->out, "The model directory to write")->required();
  h->add_option("--max-shard-mb", *shard_mb, "Shard the safetensors above this many MiB (with an index)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  h->add_flag("--force", hf->force, "Replace an existing output directory");
  h->add_flag("--json", *json, "Print one JSON object {out, files, notes}");

  auto go = std::make_shared<GgufExportOptions>();
  auto* g = ex->add_subcommand("gguf", "Model (optionally HDR-edited, or an expert) -> GGUF file with llama.cpp's names "
                                       "and metadata (f32, f16 or q8_0 weights)");
  g->add_option("--model", go->model, "Registered model name or GGUF path (default with --expert: its base model)");
  g->add_option("--hdr", go->hdr, "Harm-vector artifact applied first: theta - lambda * tau (Safety Arithmetic HDR)");
  g->add_option("--hdr-lambda", go->hdr_lambda, "HDR strength lambda (default: the artifact's recorded lambda)");
  g->add_option("--expert", go->expert, "Expert-weights artifact: export its fine-tuned model instead");
  g->add_option("--type", go->type, "Weight type of the matrices: f32, f16, q8_0")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "q8_0"}));
  g->add_option("--out", go->out, "The .gguf file to write")->required();
  g->add_flag("--force", go->force, "Replace an existing output file");
  g->add_flag("--json", *json, "Print one JSON object {out, files, notes}");

  auto bo = std::make_shared<BundleExportOptions>();
  auto* b = ex->add_subcommand("bundle", "Method config + every artifact it reads + sha256 manifest -> one directory "
                                         "that `safedec serve --bundle` and `safedec generate --bundle` load");
  b->add_option("--config", bo->config, "The method config YAML (names `method:` and its artifacts)")->required();
  b->add_option("--model", bo->model, "Model the artifacts are checked against and whose sha256 is recorded")
      ->capture_default_str();
  b->add_option("--hdr", bo->hdr, "Harm-vector artifact to bundle as the model's HDR edit");
  b->add_option("--hdr-lambda", bo->hdr_lambda, "HDR strength lambda (default: the artifact's recorded lambda)");
  b->add_option("--out", bo->out, "The bundle directory to write")->required();
  b->add_flag("--force", bo->force, "Replace an existing output directory");
  b->add_flag("--json", *json, "Print one JSON object {out, files, notes}");

  return [=] {
    if (b->parsed()) return report(export_bundle(*bo), *json);
    if (g->parsed()) return report(export_gguf(*go), *json);
    if (h->parsed()) {
      hf->max_shard_bytes = *shard_mb << 20;
      return report(export_hf(*hf), *json);
    }
    if (p->parsed()) return report(export_peft(*peft), *json);
    if (c->parsed()) return report(export_control_vector(*cv), *json);
    return 2;
  };
}

}  // namespace safedec::cli
