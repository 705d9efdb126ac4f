// Chat templates against HF apply_chat_template goldens (text and ids), system spans, family
// detection and errors.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

using namespace safedec;
using json = nlohmann::json;

namespace {

json load_golden(const std::string& name) {
  std::string path = std::string(SAFEDEC_SOURCE_DIR) + "/tests/oracle/golden/" + name;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing golden file " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::vector<int32_t> slice(const std::vector<int32_t>& v, int64_t b, int64_t e) {
  return std::vector<int32_t>(v.begin() + b, v.begin() + e);
}

// Renders every golden chat and compares text, ids and the system span.
void check_chats(const Tokenizer& tok, const ChatTemplate& tpl, const json& g) {
  int n = 0;
  for (const auto& c : g["chats"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    std::optional<std::string> system;
    if (!c["system"].is_null()) system = c["system"].get<std::string>();
    std::vector<ChatMessage> msgs;
    for (const auto& m : c["messages"]) msgs.push_back({m["role"], m["content"]});
    ChatPrompt p = tpl.render(system, msgs, c["add_generation_prompt"].get<bool>());
    EXPECT_EQ(p.text, c["text"].get<std::string>());
    EXPECT_EQ(p.ids, c["ids"].get<std::vector<int32_t>>());
    const std::string expect_sys = system ? *system : tpl.default_system();
    if (!system && tpl.default_system().empty()) {
      EXPECT_EQ(p.system_begin, -1);
      EXPECT_EQ(p.system_end, -1);
    } else if (expect_sys.empty()) {
      EXPECT_EQ(p.system_begin, p.system_end);
      EXPECT_GT(p.system_begin, 0);
    } else {
      ASSERT_GE(p.system_begin, 0);
      ASSERT_LT(p.system_begin, p.system_end);
      std::string span = tok.decode(slice(p.ids, p.system_begin, p.system_end));
      EXPECT_NE(span.find(expect_sys), std::string::npos) << "span '" << span << "' lacks the system text";
      // The span is tight: dropping its first or last token loses part of the system text.
      EXPECT_EQ(tok.decode(slice(p.ids, p.system_begin + 1, p.system_end)).find(expect_sys), std::string::npos);
      EXPECT_EQ(tok.decode(slice(p.ids, p.system_begin, p.system_end - 1)).find(expect_sys), std::string::npos);
    }
    // user_end: the tokens before it end with the final user text, one token fewer does not.
    int64_t last_user = -1;
    for (size_t i = 0; i < msgs.size(); ++i)
      if (msgs[i].role == "user") last_user = static_cast<int64_t>(i);
    if (last_user < 0) {
      EXPECT_EQ(p.user_end, -1);
    } else {
      // The text as the template renders it: kept whole (chatml) or trimmed (gemma, llama).
      std::string content = msgs[last_user].content;
      const std::string upto_all = tok.decode(slice(p.ids, 0, std::max<int64_t>(p.user_end, 0)));
      if (upto_all.size() < content.size() ||
          upto_all.compare(upto_all.size() - content.size(), content.size(), content) != 0) {
        content.erase(content.find_last_not_of(" \n\t") + 1);
        content.erase(0, content.find_first_not_of(" \n\t"));
      }
      ASSERT_GT(p.user_end, 0);
      ASSERT_LE(p.user_end, static_cast<int64_t>(p.ids.size()));
      auto ends_with = [](const std::string& a, const std::string& b) {
        return a.size() >= b.size() && a.compare(a.size() - b.size(), b.size(), b) == 0;
      };
      const std::string upto = tok.decode(slice(p.ids, 0, p.user_end));
      EXPECT_TRUE(ends_with(upto, content)) << "tokens before user_end: '" << upto << "'";
      if (!content.empty())
        EXPECT_FALSE(ends_with(tok.decode(slice(p.ids, 0, p.user_end - 1)), content));
    }
    ++n;
  }
  EXPECT_GE(n, 6);
}

}  // namespace

TEST(ChatTemplate, SmolLM2MatchesHf) {
  json g = load_golden("tokenizer_smollm2.json");
  auto tok = load_tokenizer(require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
  ChatTemplate tpl(*tok);  // auto-detected from tokenizer.chat_template
  EXPECT_EQ(tpl.family(), "chatml");
  EXPECT_EQ(tpl.default_system(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  check_chats(*tok, tpl, g);
}

TEST(ChatTemplate, SmolLM2EmptySystemSlot) {
  auto tok = load_tokenizer(require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
  ChatTemplate tpl(*tok, "chatml");
  ChatPrompt p = tpl.render_empty_system({{"user", "Hi"}}, true);
  EXPECT_EQ(p.text, "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  ASSERT_EQ(p.system_begin, p.system_end);
  // The slot is right before the <|im_end|> closing the system turn.
  EXPECT_EQ(p.ids[p.system_begin], tok->piece_to_token("<|im_end|>"));
  EXPECT_EQ(tok->decode(slice(p.ids, 0, p.system_begin)), "<|im_start|>system\n");
}

TEST(ChatTemplate, Gemma3MatchesHf) {
  json g = load_golden("tokenizer_gemma3.json");
  auto tok = load_tokenizer(require_cached_model("gemma-3-270m-q4_k_m.gguf"));
  EXPECT_EQ(ChatTemplate::detect_family(g["chat_template"].get<std::string>()), "gemma");
  // The base GGUF has no chat template: "auto" must say so and name the families.
  try {
    ChatTemplate bad(*tok);
    ADD_FAILURE() << "expected an error for a GGUF without tokenizer.chat_template";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gemma"), std::string::npos) << e.what();
  }
  ChatTemplate tpl(*tok, "gemma");
  check_chats(*tok, tpl, g);
}

TEST(ChatTemplate, UnknownFamilyListsKnownOnes) {
  auto tok = load_tokenizer(require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"));
  try {
    ChatTemplate tpl(*tok, "vicuna");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const char* f : {"vicuna", "chatml", "llama2", "llama3", "gemma"})
      EXPECT_NE(msg.find(f), std::string::npos) << msg;
  }
}

TEST(ChatTemplate, DetectsFamiliesByMarkers) {
  EXPECT_EQ(ChatTemplate::detect_family("{{'<|im_start|>' + m}}"), "chatml");
  EXPECT_EQ(ChatTemplate::detect_family("{{'<|start_header_id|>'}}"), "llama3");
  EXPECT_EQ(ChatTemplate::detect_family("{{ bos_token + '[INST] ' }}"), "llama2");
  EXPECT_EQ(ChatTemplate::detect_family("<start_of_turn>"), "gemma");
  EXPECT_EQ(ChatTemplate::detect_family("{{ messages }}"), "");
}

TEST(ChatTemplate, GemmaRejectsNonAlternatingRoles) {
  auto tok = load_tokenizer(require_cached_model("gemma-3-270m-q4_k_m.gguf"));
  ChatTemplate tpl(*tok, "gemma");
  EXPECT_THROW(tpl.render(std::nullopt, {{"user", "a"}, {"user", "b"}}, true), Error);
  EXPECT_THROW(tpl.render(std::string("s"), {{"system", "again"}, {"user", "b"}}, true), Error);
}

TEST(ChatTemplate, Qwen25CoderMatchesHfForBothModels) {
  json g = load_golden("tokenizer_qwen25.json");
  for (const char* file : {"qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}) {
    SCOPED_TRACE(file);
    auto tok = load_tokenizer(require_cached_model(file));
    ChatTemplate tpl(*tok);  // auto: the GGUF's ChatML template
    EXPECT_EQ(tpl.family(), "chatml");
    EXPECT_EQ(tpl.default_system(), "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    check_chats(*tok, tpl, g);
  }
}
