#include "decoding/model_bundle.h"

#include "core/error.h"

namespace safedec {

ModelBundle load_model_bundle(const std::string& name_or_path, const LoadOptions& options,
                              const std::string& chat_template_override) {
  ModelBundle b;
  b.entry = resolve_model(name_or_path);
  b.tokenizer = std::shared_ptr<Tokenizer>(load_tokenizer(b.entry.path));
  LoadOptions opt = options;
  if (opt.weights == LoadOptions::Weights::Config)
    opt.weights = b.entry.weights == "quantized" ? LoadOptions::Weights::Quantized : LoadOptions::Weights::Fp32;
  b.model = CausalLM::load(b.entry.path, opt);
  SAFEDEC_CHECK(b.tokenizer->vocab_size() <= b.model->config().vocab_size, "the tokenizer of ", b.entry.path,
                " has ", b.tokenizer->vocab_size(), " tokens but the model's output has only ",
                b.model->config().vocab_size);
  const std::string family = chat_template_override.empty() ? b.entry.chat_template : chat_template_override;
  b.chat = std::make_shared<ChatTemplate>(*b.tokenizer, family);
  return b;
}

StrategyPrompt ModelBundle::make_prompt(const std::string& id, const std::string& user,
                                        const std::optional<std::string>& system,
                                        const std::vector<ChatMessage>& history) const {
  std::vector<ChatMessage> messages = history;
  messages.push_back({"user", user});
  ChatPrompt rendered = chat->render(system, messages, /*add_generation_prompt=*/true);
  StrategyPrompt p;
  p.id = id;
  p.history = history;
  p.user = user;
  p.has_system = system.has_value();
  p.system = system.value_or("");
  p.ids = std::move(rendered.ids);
  p.system_begin = rendered.system_begin;
  p.system_end = rendered.system_end;
  p.user_end = rendered.user_end;
  return p;
}

StrategyPrompt ModelBundle::rerender(const StrategyPrompt& base, const std::optional<std::string>& system) const {
  return make_prompt(base.id, base.user, system, base.history);
}

GenerationOptions ModelBundle::generation_options() const {
  GenerationOptions o;
  o.eos_ids = tokenizer->eog_ids();
  auto tok = tokenizer;
  o.detokenize = [tok](const std::vector<int32_t>& ids) { return tok->decode(ids, /*skip_special=*/true); };
  return o;
}

int64_t ModelBundle::pad_id() const {
  if (tokenizer->pad_id() >= 0) return tokenizer->pad_id();
  return tokenizer->eos_id() >= 0 ? tokenizer->eos_id() : 0;
}

}  // namespace safedec
