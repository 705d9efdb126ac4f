// `safedec generate`: chat generation with any registered method (--method, default plain), its YAML
// config (--method-config, default configs/methods/<method>.yaml), an optional HDR weight edit at
// load (--hdr), per-token traces (--trace FILE.jsonl), or a deployment bundle (--bundle DIR) that carries
// the method config, its artifacts and the HDR edit.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "core/jsonl.h"
#include "decoding/model_bundle.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategy_registry.h"
#include "export/bundle.h"
#include "artifacts/harm_vector.h"

namespace safedec::cli {

namespace {

struct GenerateArgs {
  std::string model = "smollm2-135m-instruct";
  std::string prompt, system, prompts_file, chat_template;
  bool has_system = false;
  bool has_prompt = false;
  int64_t max_new_tokens = 256;
  int64_t batch_size = 8;
  int threads = 0;
  bool json = false;
  std::vector<std::string> stop;
  SamplingParams sampling;
  std::string method = "plain", method_config, trace, hdr;
  double hdr_lambda = 3.0;
  std::string bundle;  // deployment bundle (src/export/bundle.h): method config + artifacts + HDR edit
  bool model_given = false;
};

struct PromptRow {
  std::string id, prompt;
  std::optional<std::string> system;
};

std::vector<PromptRow> read_prompts_file(const std::string& path) {
  std::vector<PromptRow> rows;
  for_each_jsonl_line(path, "prompts file", [&](const nlohmann::json& j, int64_t n) {
    SAFEDEC_CHECK(j.is_object() && j.contains("prompt") && j["prompt"].is_string(), "prompts file ", path,
                  " line ", n, " needs a string field \"prompt\"");
    PromptRow r;
    r.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump())
                            : std::to_string(rows.size());
    r.prompt = j["prompt"].get<std::string>();
    if (j.contains("system") && !j["system"].is_null()) {
      SAFEDEC_CHECK(j["system"].is_string(), "prompts file ", path, " line ", n, ": \"system\" must be a string");
      r.system = j["system"].get<std::string>();
    }
    rows.push_back(std::move(r));
  });
  SAFEDEC_CHECK(!rows.empty(), "the prompts file ", path, " holds no prompts");
  return rows;
}

int run_generate(const GenerateArgs& a) {
  SAFEDEC_CHECK(a.batch_size >= 1, "--batch-size must be at least 1 (got ", a.batch_size, ")");
  SAFEDEC_CHECK(a.has_prompt != !a.prompts_file.empty(), "give exactly one of --prompt and --prompts-file");
  a.sampling.validate();
  if (a.threads > 0) torch::set_num_threads(a.threads);
  std::vector<PromptRow> rows;
  if (!a.prompts_file.empty()) {
    rows = read_prompts_file(a.prompts_file);
  } else {
    rows.push_back({"0", a.prompt, a.has_system ? std::optional<std::string>(a.system) : std::nullopt});
  }
  for (const auto& r : rows) SAFEDEC_CHECK(!r.prompt.empty(), "prompt '", r.id, "' is empty");

  MethodConfig method;
  std::string model = a.model, hdr = a.hdr;
  double hdr_lambda = a.hdr_lambda;
  if (!a.bundle.empty()) {
    SAFEDEC_CHECK(a.method_config.empty() && a.hdr.empty(),
                  "--bundle carries the method config and the HDR edit; drop --method-config and --hdr");
    const Bundle deploy = open_bundle(a.bundle, a.model_given ? a.model : "");  // every hash checked
    SAFEDEC_CHECK(a.method == "plain" || a.method == deploy.method.method, "--method ", a.method,
                  " disagrees with the bundle's method ", deploy.method.method);
    method = deploy.method;
    model = deploy.model;
    hdr = deploy.hdr;
    hdr_lambda = deploy.hdr_lambda;
  } else {
    check_method_name(a.method);
    method = load_method_config(a.method, a.method_config);
  }
  ModelBundle bundle = load_model_bundle(model, LoadOptions{}, a.chat_template);
  if (!hdr.empty()) {
    const int64_t n = apply_harm_vector(*bundle.model, hdr, hdr_lambda);
    std::cerr << "[generate] HDR: subtracted " << hdr_lambda << " x harm vector " << hdr << " from " << n
              << " tensors\n";
  }
  std::shared_ptr<std::ofstream> trace_out;
  TraceSink trace;
  if (!a.trace.empty()) {
    trace_out = std::make_shared<std::ofstream>(a.trace);
    SAFEDEC_CHECK(trace_out->good(), "cannot open the trace file ", a.trace, " for writing");
    trace = [trace_out](const nlohmann::json& j) { *trace_out << j.dump() << "\n"; };
  }
  MethodFactory factory(method, bundle, trace);
  GenerationOptions opt = bundle.generation_options();
  opt.max_new_tokens = a.max_new_tokens;
  opt.sampling = a.sampling;
  opt.stop_strings = a.stop;
  const bool stream = !a.json && rows.size() == 1;
  std::string pending;
  if (stream) {
    auto tok = bundle.tokenizer;
    opt.on_token = [tok](size_t, int32_t id) {
      if (tok->is_special(id)) return;
      std::cout << tok->token_to_piece(id) << std::flush;
    };
  }
  std::cerr << "[generate] model " << bundle.entry.name << " (" << bundle.model->config().architecture << ", "
            << bundle.model->config().n_layers << " layers), chat template " << bundle.chat->family()
            << ", threads " << torch::get_num_threads() << "\n";
  std::cerr << "[generate] method: " << factory.describe()
            << (method.source.empty() ? std::string(" (defaults)") : " from " + method.source) << "\n";
  std::cerr << "[generate] sampling: "
            << (a.sampling.greedy() ? std::string("greedy") : describe_chain(make_processor_chain(a.sampling)))
            << "\n";
  Generator gen(opt);
  torch::InferenceMode guard;
  for (size_t first = 0; first < rows.size(); first += a.batch_size) {
    const size_t last = std::min(rows.size(), first + static_cast<size_t>(a.batch_size));
    std::vector<StrategyPrompt> prompts;
    for (size_t i = first; i < last; ++i) prompts.push_back(bundle.make_prompt(rows[i].id, rows[i].prompt, rows[i].system));
    auto strategy = factory.make();
    GenerationStats stats;
    auto results = gen.run(*strategy, prompts, &stats);
    if (rows.size() > 1)
      std::cerr << "[generate] " << last << "/" << rows.size() << " prompts, " << stats.new_tokens << " tokens, "
                << (stats.decode_seconds > 0 ? stats.new_tokens / (stats.prefill_seconds + stats.decode_seconds) : 0)
                << " tok/s\n";
    for (const auto& r : results) {
      if (a.json) {
        nlohmann::json j = {{"id", r.id}, {"text", r.text}, {"token_ids", r.tokens}, {"finish_reason", r.finish_reason}};
        std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n" << std::flush;
      } else if (stream) {
        std::cout << "\n";
        std::cerr << "[generate] finish: " << r.finish_reason << ", " << r.tokens.size() << " tokens\n";
      } else {
        std::cout << "### " << r.id << " (" << r.finish_reason << ")\n" << r.text << "\n\n";
      }
    }
  }
  return 0;
}

}  // namespace

void add_sampling_options(CLI::App* cmd, SamplingParams& s) {
  add_real_flag(cmd, "--temperature", s.temperature, 0.0, 1e6, "Sampling temperature; 0 = greedy")->capture_default_str();
  add_int_flag(cmd, "--top-k", s.top_k, 0, std::numeric_limits<int32_t>::max(), "Keep the k most likely tokens; 0 = off")
      ->capture_default_str();
  add_real_flag(cmd, "--top-p", s.top_p, 0.0, 1.0, "Nucleus sampling mass in (0, 1]; 1 = off", /*lo_open=*/true)
      ->capture_default_str();
  add_real_flag(cmd, "--min-p", s.min_p, 0.0, 1.0, "Drop tokens below min-p x the top probability; 0 = off", false,
                /*hi_open=*/true)
      ->capture_default_str();
  add_real_flag(cmd, "--repetition-penalty", s.repetition_penalty, 0.0, 1e6, "Penalty for tokens already seen; 1 = off",
                /*lo_open=*/true)
      ->capture_default_str();
  add_seed_flag(cmd, s.seed, "Random seed for sampling")->capture_default_str();
  cmd->add_option("--sampling-order", s.order, "Processor order (repetition_penalty temperature top_k top_p min_p)");
}

Runner add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate chat completions with a model");
  cmd->add_option("--model", a->model, "Registered model name (configs/models) or a GGUF path")->capture_default_str();
  auto* prompt_opt = cmd->add_option("--prompt", a->prompt, "The user message");
  auto* sys = cmd->add_option("--system", a->system, "A system message (default: the template's own)");
  cmd->add_option("--prompts-file", a->prompts_file, "JSONL file of {\"id\", \"prompt\", \"system\"?} objects");
  add_int_flag(cmd, "--batch-size", a->batch_size, 1, kMaxBatchFlag, "Prompts per batch")->capture_default_str();
  add_int_flag(cmd, "--max-new-tokens", a->max_new_tokens, 1, kMaxNewTokensFlag, "Upper bound on generated tokens")
      ->capture_default_str();
  cmd->add_option("--stop", a->stop, "Stop string (repeatable)");
  cmd->add_option("--chat-template", a->chat_template, "Override the chat template family (chatml, llama2, llama3, gemma)");
  add_threads_flag(cmd, a->threads);
  cmd->add_flag("--json", a->json, "One JSON object per prompt: {id, text, token_ids, finish_reason}");
  add_sampling_options(cmd, a->sampling);
  cmd->add_option("--method", a->method, "Decoding method: plain, safedecoding, ngsd, acd, steer")->capture_default_str();
  cmd->add_option("--method-config", a->method_config,
                  "YAML config of the method (default: configs/methods/<method>.yaml if present)");
  cmd->add_option("--trace", a->trace, "Write per-token method traces (JSON lines) to this file");
  cmd->add_option("--hdr", a->hdr, "Harm-vector artifact (safetensors) subtracted from the weights at load (HDR)");
  add_real_flag(cmd, "--hdr-lambda", a->hdr_lambda, 0.0, kHdrLambdaMax, "HDR strength lambda")->capture_default_str();
  cmd->add_option("--bundle", a->bundle,
                  "Deployment bundle (safedec export bundle): its method config, artifacts and HDR edit, hash-checked");
  return [a, sys, prompt_opt, cmd] {
    a->model_given = cmd->get_option("--model")->count() > 0;
    a->has_system = sys->count() > 0;
    a->has_prompt = prompt_opt->count() > 0;
    return run_generate(*a);
  };
}

}  // namespace safedec::cli
