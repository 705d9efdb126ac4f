#include "serve/api.h"

#include <cmath>
#include <limits>
#include <set>

namespace safedec {

namespace {

using nlohmann::json;

ApiError bad(const std::string& param, const std::string& message, const std::string& code = "invalid_value") {
  return ApiError(400, message, "invalid_request_error", param, code);
}

json parse_body(const std::string& body) {
  if (body.empty()) throw bad("", "the request body is empty; send a JSON object", "invalid_json");
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw bad("", std::string("the request body is not valid JSON: ") + e.what(), "invalid_json");
  }
  if (!j.is_object()) throw bad("", "the request body must be a JSON object", "invalid_json");
  return j;
}

void check_known(const json& j, const std::set<std::string>& known, const std::string& where) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!known.count(it.key())) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      throw bad(where.empty() ? it.key() : where + "." + it.key(),
                "unknown field '" + (where.empty() ? it.key() : where + "." + it.key()) +
                    "'; safedec serve accepts: " + list,
                "unknown_field");
    }
  }
}

double get_number(const json& j, const char* key, double lo, double hi, bool lo_open = false) {
  const json& v = j.at(key);
  if (!v.is_number()) throw bad(key, std::string("'") + key + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
    throw bad(key, std::string("'") + key + "' must be in " + (lo_open ? "(" : "[") + std::to_string(lo) + ", " +
                       std::to_string(hi) + "], got " + v.dump());
  return x;
}

std::string get_string(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_string()) throw bad(key, std::string("'") + key + "' must be a string");
  return v.get<std::string>();
}

// Fields shared by both endpoints.
void parse_common(const json& j, ServeRequest& r) {
  if (!j.contains("model")) throw bad("model", "'model' is required (GET /v1/models lists the served model)",
                                      "missing_field");
  r.model = get_string(j, "model");
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    const json& v = j[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 1)
      throw bad(key, std::string("'") + key + "' must be an integer >= 1, got " + v.dump());
    r.max_tokens = v.get<int64_t>();
  }
  if (j.contains("temperature") && !j["temperature"].is_null()) r.sampling.temperature = get_number(j, "temperature", 0, 2);
  if (j.contains("top_p") && !j["top_p"].is_null()) r.sampling.top_p = get_number(j, "top_p", 0, 1, /*lo_open=*/true);
  if (j.contains("seed") && !j["seed"].is_null()) {
    const json& v = j["seed"];
    if (!v.is_number_integer()) throw bad("seed", "'seed' must be an integer, got " + v.dump());
    r.sampling.seed = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
  }
  if (j.contains("n") && !j["n"].is_null()) {
    const json& v = j["n"];
    if (!v.is_number_integer() || v.get<int64_t>() != 1)
      throw bad("n", "'n' must be 1 (safedec serve returns one choice per request), got " + v.dump());
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& v = j["stop"];
    if (v.is_string()) {
      r.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      if (static_cast<int64_t>(v.size()) > kMaxStopStrings)
        throw bad("stop", "'stop' holds at most " + std::to_string(kMaxStopStrings) + " strings, got " +
                              std::to_string(v.size()));
      for (const auto& s : v) {
        if (!s.is_string()) throw bad("stop", "'stop' must be a string or an array of strings");
        r.stop.push_back(s.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or an array of strings");
    }
    for (const auto& s : r.stop)
      if (s.empty()) throw bad("stop", "'stop' strings must not be empty");
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) throw bad("stream", "'stream' must be true or false");
    r.stream = j["stream"].get<bool>();
  }
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const json& so = j["stream_options"];
    if (!so.is_object()) throw bad("stream_options", "'stream_options' must be an object");
    check_known(so, {"include_usage"}, "stream_options");
    if (so.contains("include_usage")) {
      if (!so["include_usage"].is_boolean())
        throw bad("stream_options.include_usage", "'stream_options.include_usage' must be true or false");
      r.include_usage = so["include_usage"].get<bool>();
    }
  }
  if (j.contains("user") && !j["user"].is_null() && !j["user"].is_string())
    throw bad("user", "'user' must be a string");
  if (j.contains("safedec") && !j["safedec"].is_null()) {
    const json& s = j["safedec"];
    if (!s.is_object())
      throw bad("safedec", "'safedec' must be an object such as {\"method\": \"ngsd\", \"alpha\": 0.5}");
    check_known(s, {"method", "alpha"}, "safedec");
    if (s.contains("method")) {
      if (!s["method"].is_string()) throw bad("safedec.method", "'safedec.method' must be a string");
      r.safedec.method = s["method"].get<std::string>();
    }
    if (s.contains("alpha")) {
      const json& a = s["alpha"];
      if (!a.is_number() || !std::isfinite(a.get<double>()) || a.get<double>() < 0 || a.get<double>() > kMaxAlpha)
        throw bad("safedec.alpha", "'safedec.alpha' must be a number in [0, " + std::to_string(kMaxAlpha) +
                                       "], got " + a.dump());
      r.safedec.alpha = a.get<double>();
    }
  }
}

std::string message_text(const json& content, size_t index) {
  const std::string where = "messages[" + std::to_string(index) + "].content";
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {  // [{"type": "text", "text": ...}, ...]
    std::string text;
    for (const auto& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
        throw bad(where, "'" + where + "' parts must be {\"type\": \"text\", \"text\": \"...\"} (only text is supported)");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw bad(where, "'" + where + "' must be a string or an array of text parts");
}

}  // namespace

json error_json(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

json error_json(const ApiError& e) { return error_json(e.what(), e.type, e.param, e.code); }

ServeRequest parse_chat_request(const std::string& body) {
  const json j = parse_body(body);
  check_known(j, {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
                  "n", "stream", "stream_options", "user", "safedec"},
              "");
  ServeRequest r;
  r.chat = true;
  parse_common(j, r);
  if (!j.contains("messages")) throw bad("messages", "'messages' is required", "missing_field");
  const json& m = j["messages"];
  if (!m.is_array() || m.empty()) throw bad("messages", "'messages' must be a non-empty array");
  // The conversation: [system|developer] (user assistant)* user. Earlier turns go to `history`; every
  // safety method renders the whole conversation and answers the final user turn.
  std::vector<ChatMessage> turns;
  size_t i = 0;
  for (const auto& msg : m) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string() || !msg.contains("content"))
      throw bad(where, "'" + where + "' must be an object with a string 'role' and a 'content'");
    for (auto it = msg.begin(); it != msg.end(); ++it)
      if (it.key() != "role" && it.key() != "content" && it.key() != "name")
        throw bad(where + "." + it.key(), "unknown field '" + where + "." + it.key() + "'", "unknown_field");
    const std::string role = msg["role"].get<std::string>();
    const std::string at = " at position " + std::to_string(i);
    if (role == "tool" || role == "function")
      throw bad(where + ".role", "role '" + role + "'" + at +
                                     " is not supported: safedec serve takes no tools; send system, user and "
                                     "assistant messages only");
    if (role != "system" && role != "developer" && role != "user" && role != "assistant")
      throw bad(where + ".role", "unknown role '" + role + "'" + at +
                                     "; safedec serve accepts system, developer, user and assistant");
    const std::string text = message_text(msg["content"], i);
    if (role == "system" || role == "developer") {
      if (i != 0)
        throw bad(where + ".role", "a " + role + " message is only accepted as the first message, got one" + at);
      r.system = text;
    } else {
      // Turns after the optional system message alternate user, assistant, user, ...
      const std::string expected = turns.size() % 2 == 0 ? "user" : "assistant";
      if (role != expected)
        throw bad(where + ".role", "the conversation must alternate user and assistant turns starting with user; "
                                   "expected '" + expected + "' but got '" + role + "'" + at);
      if (text.empty()) throw bad(where + ".content", "the " + role + " message" + at + " is empty");
      turns.push_back({role, text});
    }
    ++i;
  }
  if (turns.empty() || turns.back().role != "user")
    throw bad("messages", turns.empty() ? std::string("'messages' holds no user message; end the conversation with one")
                                        : "the conversation must end with a user message, got an assistant message "
                                          "at position " + std::to_string(m.size() - 1));
  r.user = turns.back().content;
  turns.pop_back();
  r.history = std::move(turns);
  return r;
}

ServeRequest parse_completion_request(const std::string& body) {
  const json j = parse_body(body);
  check_known(j, {"model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "stream",
                  "stream_options", "user", "safedec"},
              "");
  ServeRequest r;
  r.chat = false;
  parse_common(j, r);
  if (!j.contains("prompt")) throw bad("prompt", "'prompt' is required", "missing_field");
  const json& p = j["prompt"];
  if (p.is_string()) {
    r.prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    r.prompt = p[0].get<std::string>();
  } else {
    throw bad("prompt", "'prompt' must be a string (or an array of exactly one string)");
  }
  if (r.prompt.empty()) throw bad("prompt", "'prompt' is empty");
  if (r.max_tokens < 0) r.max_tokens = 16;  // OpenAI's default for /v1/completions
  return r;
}

std::string openai_finish_reason(const std::string& finish) { return finish == "length" ? "length" : "stop"; }

size_t utf8_safe_prefix(const std::string& text, size_t limit) {
  size_t n = std::min(limit, text.size());
  // Step back over continuation bytes to the lead byte of the last character.
  size_t i = n;
  int back = 0;
  while (i > 0 && back < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++back;
  }
  if (i == 0) return n;
  const unsigned char lead = static_cast<unsigned char>(text[i - 1]);
  size_t need = 1;
  if ((lead & 0xE0) == 0xC0) need = 2;
  else if ((lead & 0xF0) == 0xE0) need = 3;
  else if ((lead & 0xF8) == 0xF0) need = 4;
  if (need == 1) return back == 0 ? n : n;  // ASCII or stray continuation bytes: nothing to wait for
  return static_cast<size_t>(back) + 1 >= need ? n : i - 1;
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace safedec
