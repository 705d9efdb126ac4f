// Rendering of supervised examples (see sft_data.h).
#include "train/sft_data.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
#include "core/jsonl.h"
#include "eval/dataset.h"

namespace safedec {

int32_t end_of_turn_id(const Tokenizer& tok) {
  for (const char* piece : {"<|im_end|>", "<end_of_turn>", "<|eot_id|>"}) {
    const int32_t id = tok.piece_to_token(piece);
    if (id >= 0 && tok.is_special(id)) return id;
  }
  SAFEDEC_CHECK(tok.eos_id() >= 0, "the tokenizer has no end-of-turn or end-of-sequence token to end a response with");
  return tok.eos_id();
}

LmExample chat_example(const ModelBundle& bundle, const std::string& id, const std::string& user,
                       const std::string& response, const std::optional<std::string>& system,
                       const std::vector<int32_t>& prefix, int64_t max_tokens, int term) {
  SAFEDEC_CHECK(!response.empty(), "training example ", id, " has an empty response");
  StrategyPrompt p = bundle.make_prompt(id, user, system);
  std::vector<int32_t> resp = bundle.tokenizer->encode(response, /*add_special=*/false);
  resp.push_back(end_of_turn_id(*bundle.tokenizer));
  LmExample e;
  e.id = id;
  e.term = term;
  e.ids = p.ids;
  e.ids.insert(e.ids.end(), prefix.begin(), prefix.end());
  const size_t start = e.ids.size();
  // Keep at least one response token; long prompts are refused rather than silently truncated.
  SAFEDEC_CHECK(static_cast<int64_t>(start) + 1 <= max_tokens, "training example ", id, " has a prompt of ", start,
                " tokens, over the limit of ", max_tokens, " (train.max_seq_len)");
  const size_t room = static_cast<size_t>(max_tokens) - start;
  if (resp.size() > room) resp.resize(room);
  e.ids.insert(e.ids.end(), resp.begin(), resp.end());
  e.target.assign(e.ids.size(), 0);
  for (size_t t = start; t < e.ids.size(); ++t) e.target[t] = 1;
  return e;
}

std::pair<std::string, std::string> split_vicuna_text(const std::string& text, const std::string& where) {
  const std::string user_tag = "USER:", asst_tag = "ASSISTANT:";
  const size_t u = text.find(user_tag), a = text.find(asst_tag);
  SAFEDEC_CHECK(u != std::string::npos && a != std::string::npos && a > u, where,
                ": expected \"USER: ... ASSISTANT: ...\"");
  auto trim = [](std::string s) {
    const auto b = s.find_first_not_of(" \n\t"), e = s.find_last_not_of(" \n\t");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
  };
  std::string prompt = trim(text.substr(u + user_tag.size(), a - u - user_tag.size()));
  std::string answer = text.substr(a + asst_tag.size());
  const size_t eos = answer.rfind("</s>");
  if (eos != std::string::npos) answer = answer.substr(0, eos);
  answer = trim(answer);
  SAFEDEC_CHECK(!prompt.empty() && !answer.empty(), where, ": empty prompt or answer");
  return {prompt, answer};
}

std::vector<AlignmentRow> read_alignment_rows(const std::string& path) {
  std::vector<AlignmentRow> rows;
  for_each_jsonl_line(path, "deep-alignment data", [&](const nlohmann::json& j, int64_t line) {
    const std::string where = path + ":" + std::to_string(line);
    SAFEDEC_CHECK(j.is_object(), where, ": each line must be a JSON object");
    AlignmentRow r;
    auto str = [&](const char* key, bool required) {
      if (!j.contains(key) || j[key].is_null()) {
        SAFEDEC_CHECK(!required, where, ": the key `", key, "` is missing");
        return std::string();
      }
      SAFEDEC_CHECK(j[key].is_string(), where, ": `", key, "` must be a string");
      return j[key].get<std::string>();
    };
    r.id = str("id", true);
    r.kind = str("kind", true);
    r.instruction = str("instruction", true);
    if (r.kind == "safety") {
      r.refusal = str("refusal", true);
      r.harmful_answer = str("harmful_answer", false);
    } else if (r.kind == "anchor") {
      r.response = str("response", true);
    } else {
      fail(where, ": `kind` must be safety or anchor, got '", r.kind, "'");
    }
    rows.push_back(std::move(r));
  });
  SAFEDEC_CHECK(!rows.empty(), "the deep-alignment data ", path, " holds no rows");
  return rows;
}

std::vector<LmExample> deep_alignment_examples(const ModelBundle& bundle, const std::vector<AlignmentRow>& rows,
                                               const AugmentOptions& options, int64_t max_tokens,
                                               int64_t* augmented) {
  std::vector<LmExample> out;
  int64_t n_aug = 0;
  for (const auto& r : rows) {
    if (r.kind == "anchor") {
      out.push_back(chat_example(bundle, r.id, r.instruction, r.response, std::nullopt, {}, max_tokens));
      continue;
    }
    std::vector<int32_t> prefix;
    // One draw per row, seeded by (seed, id): the same augmentation on every run and on resume.
    std::mt19937_64 rng(sample_key(options.seed, r.id));
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    const bool with_prefix = !r.harmful_answer.empty() && coin(rng) < options.prefix_probability;
    if (with_prefix) {
      std::vector<int32_t> harm = bundle.tokenizer->encode(r.harmful_answer, /*add_special=*/false);
      const int64_t cap = std::min<int64_t>(options.max_prefix_tokens, static_cast<int64_t>(harm.size()));
      if (cap >= 1) {
        std::uniform_int_distribution<int64_t> k_dist(1, cap);
        const int64_t k = k_dist(rng);
        prefix.assign(harm.begin(), harm.begin() + k);
        ++n_aug;
      }
    }
    out.push_back(chat_example(bundle, r.id, r.instruction, r.refusal, std::nullopt, prefix, max_tokens));
  }
  if (augmented) *augmented = n_aug;
  return out;
}

}  // namespace safedec
