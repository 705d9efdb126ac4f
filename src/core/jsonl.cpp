#include "core/jsonl.h"

#include <fstream>

#include "core/error.h"

namespace safedec {

std::string json_error_without_content(const std::exception& e) {
  std::string s = e.what();
  // "[json.exception.parse_error.101] parse error at ...": drop the bracketed id.
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  for (const char* marker : {"; last read:", "last read:"}) {
    const size_t cut = s.find(marker);
    if (cut != std::string::npos) s.resize(cut);
  }
  // Messages of other kinds (type errors, invalid UTF-8) may quote bytes too; quotes are cut.
  const size_t quote = s.find('\'');
  if (quote != std::string::npos) s.resize(quote);
  while (!s.empty() && (s.back() == ' ' || s.back() == ';' || s.back() == ':' || s.back() == '-')) s.pop_back();
  return s;
}

void for_each_jsonl_line(const std::string& path, const std::string& what,
                         const std::function<void(const nlohmann::json&, int64_t)>& fn) {
  std::ifstream in(path);
  SAFEDEC_CHECK(in.good(), "cannot open the ", what, " ", path);
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(what, " ", path, " line ", n, " is not valid JSON: ", json_error_without_content(e));
    }
    fn(j, n);
  }
}

}  // namespace safedec
