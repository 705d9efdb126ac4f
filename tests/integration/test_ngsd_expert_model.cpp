// NGSD with a separate expert model (`expert: model`): Qwen2.5-Coder-0.5B-Instruct guarding the
// 1.5B target (both in the quantised weight format, for speed). Two models with their own KV
// caches follow one generated prefix, each prompt rendered with the expert's own chat template:
//  * a neuron that never fires (theta huge) gives exactly the target's plain greedy tokens;
//  * a neuron that fires at every step (theta 1e-9) with alpha = 1 takes the expert's distribution (over the
//    union of both top-64 sets), i.e. exactly the expert's own plain greedy tokens, which needs
//    the expert's cache to have seen every generated token;
//  * a default gate runs and produces text.
// And an expert whose vocabulary differs is refused naming the first differing token id (two tiny
// GGUFs written here that differ only in token 40) or the two vocabulary sizes.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "core/paths.h"
#include "decoding/model_bundle.h"
#include "decoding/strategy_registry.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"

using namespace safedec;

namespace {

LoadOptions quantized() {
  LoadOptions o;
  o.weights = LoadOptions::Weights::Quantized;
  return o;
}

MethodConfig config(const std::string& method, const std::string& yaml) {
  return parse_method_config(method, yaml.empty() ? YAML::Node() : YAML::Load(yaml), "test");
}

std::vector<GenerationResult> generate(const ModelBundle& b, const MethodConfig& cfg,
                                       const std::vector<StrategyPrompt>& prompts, int64_t n) {
  MethodFactory f(cfg, b);
  GenerationOptions opt = b.generation_options();
  opt.max_new_tokens = n;
  opt.sampling.temperature = 0.0;
  Generator gen(opt);
  auto s = f.make();
  torch::InferenceMode guard;
  return gen.run(*s, prompts);
}

std::vector<StrategyPrompt> prompts(const ModelBundle& b) {
  return {b.make_prompt("short", "What is the capital of France?"),
          b.make_prompt("code", "Write a Python function that returns the square of a number.")};
}

// A copy of the tiny qwen2 GGUF with a ChatML-capable vocabulary of 64 tokens; `odd` renames token 40.
std::string tiny_model(const std::string& name, bool odd) {
  const std::string src = source_dir() + "/tests/oracle/golden/model_tiny_qwen2.gguf";
  auto f = GgufFile::open(src);
  GgufWriter w;
  for (const auto& [k, v] : f->metadata())
    if (k.rfind("tokenizer.", 0) != 0) w.set(k, v);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int i = 0; i < 64; ++i) {
    tokens.push_back(i == 0 ? "<|im_start|>" : i == 1 ? "<|im_end|>" : std::string(1, static_cast<char>('A' + i)));
    types.push_back(i < 2 ? 3 : 1);
  }
  if (odd) tokens[40] = "Z9";
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "qwen2");
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_string_array("tokenizer.ggml.merges", {});
  w.set_u32("tokenizer.ggml.eos_token_id", 1);
  w.set_string("tokenizer.chat_template",
               "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}");
  for (const auto& t : f->tensors()) w.add_tensor(t.name, t.ne, t.type, t.data, t.nbytes);
  const std::string out = ::testing::TempDir() + "/" + name + ".gguf";
  w.write(out);
  return out;
}

}  // namespace

TEST(NgsdExpertModel, QwenHalfBillionExpertGuardsTheOneAndAHalfBillionTarget) {
  const ModelBundle target = load_model_bundle("qwen2.5-coder-1.5b-instruct", quantized());
  // fp32, as NGSD loads `expert_model` with its configs/models entry (weights: fp32 by default).
  const ModelBundle expert = load_model_bundle("qwen2.5-coder-0.5b-instruct");
  ASSERT_EQ(target.model->config().n_layers, 28);
  ASSERT_EQ(expert.model->config().n_layers, 24);
  const int64_t n = 12;
  const auto plain_target = generate(target, config("plain", ""), prompts(target), n);
  const auto plain_expert = generate(expert, config("plain", ""), prompts(expert), n);
  const std::string base = "expert: model\nexpert_model: qwen2.5-coder-0.5b-instruct\nrisk: fixed\n";
  // Never fires: the target's own tokens.
  const auto never = generate(target, config("ngsd", base + "alpha: 1.0\ntheta: 1.0e6\n"), prompts(target), n);
  // Fires at every step where the two distributions differ at all (theta 1e-9 <= v) with alpha 1:
  // the expert's own greedy tokens (where they do not differ, both argmaxes agree anyway).
  const auto always = generate(target, config("ngsd", base + "alpha: 1.0\ntheta: 1.0e-9\n"), prompts(target), n);
  ASSERT_EQ(never.size(), 2u);
  ASSERT_EQ(always.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(never[i].tokens, plain_target[i].tokens) << "prompt " << i;
    EXPECT_EQ(always[i].tokens, plain_expert[i].tokens) << "prompt " << i;
    std::printf("  prompt %zu: target '%s' | expert '%s'\n", i, plain_target[i].text.c_str(),
                plain_expert[i].text.c_str());
  }
  EXPECT_NE(plain_target[1].tokens, plain_expert[1].tokens) << "the two models should differ somewhere";
  const auto gated = generate(target, config("ngsd", base + "alpha: 0.5\n"), prompts(target), n);
  for (const auto& r : gated) EXPECT_FALSE(r.text.empty()) << r.id;
}

TEST(NgsdExpertModel, VocabularyMismatchNamesTheFirstDifferingToken) {
  const std::string t = tiny_model("ngsd_vocab_target", false), e = tiny_model("ngsd_vocab_expert", true);
  const ModelBundle target = load_model_bundle(t);
  try {
    MethodFactory f(config("ngsd", "expert: model\nexpert_model: " + e + "\n"), target);
    FAIL() << "an expert with another vocabulary was accepted";
  } catch (const Error& err) {
    const std::string msg = err.what();
    EXPECT_NE(msg.find("token 40"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Z9"), std::string::npos) << msg;
  }
  // Different sizes (SmolLM2's 49152 against Qwen's 151936) name both sizes.
  const ModelBundle smol = load_model_bundle("smollm2-135m-instruct", quantized());
  try {
    MethodFactory f(config("ngsd", "expert: model\nexpert_model: " + t + "\n"), smol);
    FAIL() << "an expert with another vocabulary size was accepted";
  } catch (const Error& err) {
    const std::string msg = err.what();
    EXPECT_NE(msg.find("64"), std::string::npos) << msg;
    EXPECT_NE(msg.find("49152"), std::string::npos) << msg;
  }
}
