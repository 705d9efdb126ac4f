// ModelBundle: a loaded model with its tokenizer and chat template, resolved from a registered
// name or a path — what every command and strategy starts from.
#pragma once
#include <memory>
#include <optional>
#include <string>

#include "core/model_registry.h"
#include "decoding/generator.h"
#include "decoding/strategy.h"
#include "model/causal_lm.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace safedec {

struct ModelBundle {
  ModelEntry entry;
  std::shared_ptr<CausalLM> model;
  std::shared_ptr<Tokenizer> tokenizer;
  std::shared_ptr<ChatTemplate> chat;

  // Renders a chat for this model: an optional system text, earlier turns (`history`, alternating
  // user/assistant from user) and the final user turn, with the generation prompt.
  StrategyPrompt make_prompt(const std::string& id, const std::string& user,
                             const std::optional<std::string>& system = std::nullopt,
                             const std::vector<ChatMessage>& history = {}) const;
  // Renders `base`'s conversation (history + user) again with another system text.
  StrategyPrompt rerender(const StrategyPrompt& base, const std::optional<std::string>& system) const;
  // Generation options with this model's end-of-generation ids and detokenizer.
  GenerationOptions generation_options() const;
  int64_t pad_id() const;
};

// chat_template_override: "" keeps the registry's choice ("auto" = from the model file).
ModelBundle load_model_bundle(const std::string& name_or_path, const LoadOptions& options = {},
                              const std::string& chat_template_override = "");

}  // namespace safedec
