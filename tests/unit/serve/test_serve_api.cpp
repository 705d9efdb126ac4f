// Parsing and validation of `safedec serve` request bodies (OpenAI's formats): good bodies give the
// expected fields, bad ones an ApiError (HTTP 400) naming the field.
#include <gtest/gtest.h>

#include "serve/api.h"

namespace {

using namespace safedec;

// The ApiError a body raises (status 0 and empty strings when none).
ApiError error_of_chat(const std::string& body) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    return e;
  }
  return ApiError(0, "", "", "", "");
}

TEST(ServeApi, ParsesAFullChatRequest) {
  const ServeRequest r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
      "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ["\n", "END"], "n": 1,
      "stream": true, "stream_options": {"include_usage": true}, "user": "u",
      "safedec": {"method": "ngsd", "alpha": 0.75}})");
  EXPECT_TRUE(r.chat);
  EXPECT_EQ(r.model, "m");
  ASSERT_TRUE(r.system.has_value());
  EXPECT_EQ(*r.system, "Be brief.");
  EXPECT_EQ(r.user, "Hi there");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_DOUBLE_EQ(r.sampling.temperature, 0.5);
  EXPECT_DOUBLE_EQ(r.sampling.top_p, 0.9);
  EXPECT_EQ(r.sampling.seed, 3u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.safedec.method.value_or(""), "ngsd");
  EXPECT_DOUBLE_EQ(r.safedec.alpha.value_or(-1), 0.75);
}

TEST(ServeApi, DefaultsAreGreedyWithoutMethodChoice) {
  const ServeRequest r = parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": "x"}]})");
  EXPECT_FALSE(r.system.has_value());
  EXPECT_EQ(r.max_tokens, -1);
  EXPECT_TRUE(r.sampling.greedy());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.safedec.method.has_value());
  EXPECT_FALSE(r.safedec.alpha.has_value());
}

TEST(ServeApi, BadBodiesNameTheField) {
  struct Case {
    std::string body, param, code;
  };
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  const std::vector<Case> cases = {
      {"{bad", "", "invalid_json"},
      {"[1, 2]", "", "invalid_json"},
      {"", "", "invalid_json"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", "model", "missing_field"},
      {R"({"model": "m"})", "messages", "missing_field"},
      {R"({"model": "m", "messages": []})", "messages", "invalid_value"},
      {R"({"model": "m", "frobnicate": 1, )" + msgs + "}", "frobnicate", "unknown_field"},
      {R"({"model": "m", "n": 2, )" + msgs + "}", "n", "invalid_value"},
      {R"({"model": "m", "temperature": 2.5, )" + msgs + "}", "temperature", "invalid_value"},
      {R"({"model": "m", "temperature": "hot", )" + msgs + "}", "temperature", "invalid_value"},
      {R"({"model": "m", "top_p": 0, )" + msgs + "}", "top_p", "invalid_value"},
      {R"({"model": "m", "max_tokens": 0, )" + msgs + "}", "max_tokens", "invalid_value"},
      {R"({"model": "m", "max_tokens": 1.5, )" + msgs + "}", "max_tokens", "invalid_value"},
      {R"({"model": "m", "seed": "x", )" + msgs + "}", "seed", "invalid_value"},
      {R"({"model": "m", "stop": ["a", "b", "c", "d", "e"], )" + msgs + "}", "stop", "invalid_value"},
      {R"({"model": "m", "stop": [""], )" + msgs + "}", "stop", "invalid_value"},
      {R"({"model": "m", "stream": "yes", )" + msgs + "}", "stream", "invalid_value"},
      {R"({"model": "m", "safedec": {"method": "acd", "beta": 1}, )" + msgs + "}", "safedec.beta", "unknown_field"},
      {R"({"model": "m", "safedec": {"alpha": -1}, )" + msgs + "}", "safedec.alpha", "invalid_value"},
      {R"({"model": "m", "safedec": {"alpha": 11}, )" + msgs + "}", "safedec.alpha", "invalid_value"},
      {R"({"model": "m", "safedec": {"method": 3}, )" + msgs + "}", "safedec.method", "invalid_value"},
      {R"({"model": "m", "safedec": "ngsd", )" + msgs + "}", "safedec", "invalid_value"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})",
       "messages", "invalid_value"},
      {R"({"model": "m", "messages": [{"role": "user", "content": 5}]})", "messages[0].content", "invalid_value"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}]})", "messages[0].extra",
       "unknown_field"},
      {R"({"model": "m", "messages": [{"role": "user", "content": ""}]})", "messages[0].content", "invalid_value"},
      {R"({"model": "m", "messages": [{"role": "system", "content": "s"}]})", "messages", "invalid_value"},
  };
  for (const auto& c : cases) {
    const ApiError e = error_of_chat(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << " -> " << e.what();
    EXPECT_EQ(e.code, c.code) << c.body << " -> " << e.what();
    EXPECT_FALSE(std::string(e.what()).empty()) << c.body;
  }
}

TEST(ServeApi, ParsesAMultiTurnChat) {
  const ServeRequest r = parse_chat_request(R"({"model": "m", "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
      {"role": "user", "content": [{"type": "text", "text": "Name a color."}]},
      {"role": "assistant", "content": "Blue.", "name": "bot"},
      {"role": "user", "content": "Another one?"}]})");
  ASSERT_TRUE(r.system.has_value());
  EXPECT_EQ(*r.system, "Be brief.");
  ASSERT_EQ(r.history.size(), 4u);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Name a color."}, {"assistant", "Blue."}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(r.history[i].role, want[i].first) << i;
    EXPECT_EQ(r.history[i].content, want[i].second) << i;
  }
  EXPECT_EQ(r.user, "Another one?");
  // Without a system message the history starts at the first message.
  const ServeRequest n = parse_chat_request(R"({"model": "m", "messages": [{"role": "user", "content": "a"},
      {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})");
  EXPECT_FALSE(n.system.has_value());
  ASSERT_EQ(n.history.size(), 2u);
  EXPECT_EQ(n.user, "c");
}

TEST(ServeApi, MalformedConversationsNameThePosition) {
  struct Case {
    std::string messages, param, position;
  };
  const std::vector<Case> cases = {
      // two user turns in a row
      {R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])", "messages[1].role", "position 1"},
      // starts with the assistant
      {R"([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}])", "messages[0].role",
       "position 0"},
      // ends with the assistant
      {R"([{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])",
       "messages", "position 2"},
      // a system message after the first position
      {R"([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "user", "content": "b"}])",
       "messages[1].role", "position 1"},
      // tool and function roles
      {R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "tool", "content": "r"}])",
       "messages[2].role", "position 2"},
      {R"([{"role": "function", "content": "r"}, {"role": "user", "content": "b"}])", "messages[0].role", "position 0"},
      {R"([{"role": "critic", "content": "r"}, {"role": "user", "content": "b"}])", "messages[0].role", "position 0"},
      // an empty assistant turn inside the history
      {R"([{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}])",
       "messages[1].content", "position 1"},
  };
  for (const auto& c : cases) {
    const std::string body = R"({"model": "m", "messages": )" + c.messages + "}";
    const ApiError e = error_of_chat(body);
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, c.param) << body << " -> " << e.what();
    EXPECT_NE(std::string(e.what()).find(c.position), std::string::npos) << body << " -> " << e.what();
  }
}

TEST(ServeApi, CompletionRequests) {
  const ServeRequest r = parse_completion_request(R"({"model": "m", "prompt": ["Once upon"]})");
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.prompt, "Once upon");
  EXPECT_EQ(r.max_tokens, 16);  // OpenAI's default for completions
  EXPECT_THROW(parse_completion_request(R"({"model": "m", "prompt": ["a", "b"]})"), ApiError);
  EXPECT_THROW(parse_completion_request(R"({"model": "m", "prompt": "a", "messages": []})"), ApiError);
  EXPECT_THROW(parse_completion_request(R"({"model": "m", "prompt": ""})"), ApiError);
}

TEST(ServeApi, ErrorObjectHasOpenAIFields) {
  const nlohmann::json j = error_json(ApiError(400, "bad thing", "invalid_request_error", "top_p", "invalid_value"));
  EXPECT_EQ(j["error"]["message"], "bad thing");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "top_p");
  EXPECT_EQ(j["error"]["code"], "invalid_value");
  const nlohmann::json k = error_json("x", "server_error");
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

TEST(ServeApi, StreamsNeverSplitACharacter) {
  const std::string e_acute = "caf\xC3\xA9";          // 5 bytes
  EXPECT_EQ(utf8_safe_prefix(e_acute, 5), 5u);
  EXPECT_EQ(utf8_safe_prefix(e_acute, 4), 3u);          // cuts before the lead byte
  EXPECT_EQ(utf8_safe_prefix("ab\xE2\x82", 4), 2u);     // an incomplete 3-byte sequence at the end
  EXPECT_EQ(utf8_safe_prefix("ab\xE2\x82\xAC", 5), 5u);  // the euro sign complete
  EXPECT_EQ(utf8_safe_prefix("abc", 10), 3u);
  EXPECT_EQ(utf8_safe_prefix("abc", 0), 0u);
  EXPECT_EQ(openai_finish_reason("eos"), "stop");
  EXPECT_EQ(openai_finish_reason("stop"), "stop");
  EXPECT_EQ(openai_finish_reason("length"), "length");
  EXPECT_EQ(dump_json(nlohmann::json("a\xC3")), "\"a\xEF\xBF\xBD\"");  // invalid UTF-8 replaced
}

}  // namespace
