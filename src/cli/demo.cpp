// `safedec demo`: the main job until the evaluation pipeline exists — loads the embedded default
// model and answers a few benign questions, showing throughput.
#include <torch/torch.h>

#include <iostream>

#include "cli/commands.h"
#include "cli/flags.h"
#include "decoding/model_bundle.h"
#include "decoding/plain_strategy.h"

namespace safedec::cli {

namespace {
struct DemoArgs {
  std::string model = "smollm2-135m-instruct";
  int64_t max_new_tokens = 96;
};

int run_demo(const DemoArgs& a) {
  const std::vector<std::string> questions = {
      "What is the capital of France?",
      "Give me three tips for staying focused while studying.",
      "Explain in two sentences why the sky is blue.",
      "Write a haiku about autumn leaves.",
  };
  ModelBundle bundle = load_model_bundle(a.model);
  std::cerr << "[demo] " << bundle.entry.name << " loaded from " << bundle.entry.path << "\n";
  GenerationOptions opt = bundle.generation_options();
  opt.max_new_tokens = a.max_new_tokens;
  std::vector<StrategyPrompt> prompts;
  for (size_t i = 0; i < questions.size(); ++i) prompts.push_back(bundle.make_prompt(std::to_string(i), questions[i]));
  torch::InferenceMode guard;
  Generator gen(opt);
  PlainStrategy strategy(bundle.model, bundle.pad_id());
  GenerationStats st;
  auto results = gen.run(strategy, prompts, &st);
  for (size_t i = 0; i < results.size(); ++i)
    std::cout << "### " << questions[i] << "\n" << results[i].text << "\n[" << results[i].finish_reason << ", "
              << results[i].tokens.size() << " tokens]\n\n";
  std::cout << "batch of " << prompts.size() << ": " << st.new_tokens << " new tokens, prefill "
            << st.prefill_seconds << " s, decode " << st.decode_seconds << " s ("
            << st.new_tokens / std::max(1e-9, st.decode_seconds + st.prefill_seconds) << " tok/s overall)\n";
  return 0;
}
}  // namespace

Runner add_demo(CLI::App& app) {
  auto a = std::make_shared<DemoArgs>();
  auto* cmd = app.add_subcommand("demo", "Answer a few benign questions with the default model (the main job)");
  cmd->add_option("--model", a->model, "Registered model name or GGUF path")->capture_default_str();
  add_int_flag(cmd, "--max-new-tokens", a->max_new_tokens, 1, kMaxNewTokensFlag, "Tokens per answer")->capture_default_str();
  return [a] { return run_demo(*a); };
}

}  // namespace safedec::cli
