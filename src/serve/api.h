// The OpenAI-compatible request and response formats of `safedec serve`: strict parsing of
// /v1/chat/completions and /v1/completions bodies (unknown fields, bad types and out-of-range
// values are ApiErrors that become HTTP 400 with an OpenAI-style error object), and the JSON of
// responses, stream chunks and errors.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "decoding/processors.h"
#include "tokenizer/chat_template.h"

namespace safedec {

// An error answered to the client: HTTP status + OpenAI's {"error": {message, type, param, code}}.
struct ApiError : std::runtime_error {
  int status;
  std::string type, param, code;
  ApiError(int status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : std::runtime_error(std::move(message)),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
};

// {"error": {"message", "type", "param", "code"}} (param/code null when empty).
nlohmann::json error_json(const std::string& message, const std::string& type, const std::string& param = "",
                          const std::string& code = "");
nlohmann::json error_json(const ApiError& e);

// The per-request `safedec` object: the method and its strength (nullopt = the server's default).
struct MethodChoice {
  std::optional<std::string> method;
  std::optional<double> alpha;
};

// A parsed request of either endpoint.
struct ServeRequest {
  bool chat = true;
  std::string model;
  // chat: an optional first system (or developer) message, earlier turns alternating user/assistant
  // from user (`history`), and the final user message (`user`); rendered by the model's chat template
  std::optional<std::string> system;
  std::vector<ChatMessage> history;
  std::string user;
  // completions: the raw prompt text (no chat template)
  std::string prompt;
  int64_t max_tokens = -1;  // -1 = the server's default (capped by the context)
  SamplingParams sampling;  // temperature, top_p, seed (greedy by default, as `safedec generate`)
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  MethodChoice safedec;
};

// Largest accepted values.
constexpr int64_t kMaxStopStrings = 4;
constexpr double kMaxAlpha = 10.0;

// Parse and validate a body; throw ApiError (status 400) naming the offending field.
ServeRequest parse_chat_request(const std::string& body);
ServeRequest parse_completion_request(const std::string& body);

// OpenAI's finish_reason for a generator finish reason ("eos"/"stop" -> "stop", "length").
std::string openai_finish_reason(const std::string& finish);

// Length of the longest prefix of `text` (at most `limit` bytes) that does not end inside a
// UTF-8 multi-byte sequence (streams never split a character).
size_t utf8_safe_prefix(const std::string& text, size_t limit);

// JSON text with invalid UTF-8 replaced (model output may hold partial characters).
std::string dump_json(const nlohmann::json& j);

}  // namespace safedec
