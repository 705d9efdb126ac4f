// `safedec icv extract`: the in-context safety vector of a model from (unsafe, safe) demonstration
// pairs (src/train/icv.h), written as an ICV artifact directory (icv.safetensors + manifest.json).
#include <torch/torch.h>

#include <chrono>
#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/paths.h"
#include "decoding/model_bundle.h"
#include "artifacts/harm_vector.h"
#include "train/icv.h"

namespace safedec::cli {

namespace {

struct IcvArgs {
  std::string model = "smollm2-135m-instruct";
  std::string pairs;
  std::string out;
  std::string hdr;
  double hdr_lambda = 3.0;
  int64_t last_tokens = 4;
  bool last_token = false;
  int64_t limit = 0;
  int threads = 0;
  bool force = false;
};

int run_icv_extract(const IcvArgs& a) {
  SAFEDEC_CHECK(!a.out.empty(), "--out is required (the ICV artifact directory to write)");
  if (a.threads > 0) torch::set_num_threads(a.threads);
  const std::string pairs_path = a.pairs.empty() ? source_dir() + "/data/icv_pairs.jsonl" : a.pairs;
  auto pairs = read_icv_pairs(pairs_path);
  if (a.limit > 0 && static_cast<int64_t>(pairs.size()) > a.limit) pairs.resize(a.limit);
  ModelBundle bundle = load_model_bundle(a.model);
  if (!a.hdr.empty()) apply_harm_vector(*bundle.model, a.hdr, a.hdr_lambda);
  IcvOptions opt;
  opt.last_tokens = a.last_tokens;
  opt.last_token_only = a.last_token;
  std::cerr << "[icv] " << pairs.size() << " pairs from " << pairs_path << ", model " << bundle.entry.name << ", "
            << (opt.last_token_only ? std::string("last token") : "mean of last " + std::to_string(opt.last_tokens) +
                                                                      " tokens")
            << "\n";
  auto t0 = std::chrono::steady_clock::now();
  torch::InferenceMode guard;
  torch::Tensor icv = extract_icv(*bundle.model, *bundle.tokenizer, pairs, opt);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  save_icv(a.out, icv, bundle.model->config(),
           {{"model", bundle.entry.name},
            {"pairs", pairs_path},
            {"n_pairs", pairs.size()},
            {"positions", opt.last_token_only ? "last_token" : "last_" + std::to_string(opt.last_tokens)},
            {"hdr", a.hdr},
            {"hdr_lambda", a.hdr.empty() ? 0.0 : a.hdr_lambda}},
           a.force);
  std::cerr << "[icv] wrote " << a.out << " [" << icv.size(0) << ", " << icv.size(1) << "], per-layer norm "
            << icv.norm(2, 1).mean().item<double>() << " (mean), " << secs << " s\n";
  return 0;
}

}  // namespace

Runner add_icv(CLI::App& app) {
  auto a = std::make_shared<IcvArgs>();
  auto* icv = app.add_subcommand("icv", "In-context safety vectors (Safe-Align)");
  icv->require_subcommand(1);
  auto* ex = icv->add_subcommand("extract", "Extract an ICV from (unsafe, safe) demonstration pairs");
  ex->add_option("--model", a->model, "Registered model name or GGUF path")->capture_default_str();
  ex->add_option("--pairs", a->pairs, "JSONL of {question, unsafe, safe} (default data/icv_pairs.jsonl)");
  ex->add_option("--out", a->out, "Output artifact directory (icv.safetensors + manifest.json)")->required();
  ex->add_flag("--force", a->force, "Replace an existing artifact directory");
  add_int_flag(ex, "--last-tokens", a->last_tokens, 1, 4096, "Average over this many final positions")->capture_default_str();
  ex->add_flag("--last-token", a->last_token, "Use the last position only (the paper's reading)");
  add_int_flag(ex, "--limit", a->limit, 0, kMaxCountFlag, "Use only the first N pairs (0 = all)")->capture_default_str();
  ex->add_option("--hdr", a->hdr, "Harm-vector artifact applied to the model first (HDR)");
  add_real_flag(ex, "--hdr-lambda", a->hdr_lambda, 0.0, kHdrLambdaMax, "HDR strength lambda")->capture_default_str();
  add_threads_flag(ex, a->threads);
  return [a, ex] {
    if (ex->parsed()) return run_icv_extract(*a);
    return 2;
  };
}

}  // namespace safedec::cli
