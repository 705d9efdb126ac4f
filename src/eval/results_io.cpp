// JSONL results I/O. Atomic append: the whole line (JSON + '\n') goes out in a single write(2) on
// a descriptor opened with O_APPEND, so the kernel places it at the current end of file in one
// piece even with several writer processes (regular files on local file systems), then fsync makes
// it durable before the caller records progress. A crash can therefore leave at most one torn line,
// the last one, which has no '\n'; the reader ignores it and repair_torn_tail() cuts it off.
#include "eval/results_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/paths.h"

namespace safedec {

using nlohmann::json;

namespace {

json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

// Numbers that are NaN or infinite cannot be written as JSON; they become null.
json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

template <typename T>
T get_required(const json& j, const char* key, const std::string& where) {
  SAFEDEC_CHECK(j.is_object(), where, ": expected a JSON object.");
  auto it = j.find(key);
  SAFEDEC_CHECK(it != j.end(), where, ": missing key '", key, "'.");
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    fail(where, ": key '", key, "' has the wrong type (", e.what(), ").");
  }
}

std::optional<double> get_optional_number(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  SAFEDEC_CHECK(it->is_number(), where, ": key '", key, "' must be a number or null.");
  return it->get<double>();
}

}  // namespace

json to_json(const ResultRow& row) {
  const DatasetMetrics& m = row.metrics;
  json j;
  j["model"] = row.model;
  j["method"] = row.method;
  j["dataset"] = row.dataset;
  j["judge"] = row.judge;
  j["n"] = m.n;
  j["n_refused"] = m.n_refused;
  j["n_skipped"] = m.n_skipped;
  j["refusal_rate"] = m.n > 0 ? json(m.refusal_rate) : json(nullptr);  // every prompt skipped: no rate
  j["refusal_ci95"] = json::array({m.refusal_ci95.lo, m.refusal_ci95.hi});
  j["asr"] = opt(m.asr);
  j["over_refusal"] = opt(m.over_refusal);
  j["ref_nll"] = m.ref_nll ? finite_or_null(*m.ref_nll) : json(nullptr);
  j["mean_new_tokens"] = m.mean_new_tokens;
  j["decode_tok_s"] = m.decode_tok_s ? finite_or_null(*m.decode_tok_s) : json(nullptr);
  if (!row.skipped.empty()) {
    json s = json::array();
    for (const auto& [id, reason] : row.skipped) s.push_back({{"id", id}, {"reason", reason}});
    j["skipped"] = s;
  }
  return j;
}

json to_json(const GenerationRow& row) {
  json j;
  j["id"] = row.id;
  j["model"] = row.model;
  j["method"] = row.method;
  j["dataset"] = row.dataset;
  j["output"] = row.output;
  j["finish_reason"] = row.finish_reason;
  if (row.new_tokens) j["new_tokens"] = *row.new_tokens;
  if (row.decode_seconds) j["decode_seconds"] = finite_or_null(*row.decode_seconds);
  if (row.refused) j["refused"] = *row.refused;
  if (row.judge_reason) j["judge_reason"] = *row.judge_reason;
  if (row.skipped) j["skipped"] = *row.skipped;
  return j;
}

ResultRow result_row_from_json(const json& j, const std::string& where) {
  ResultRow r;
  r.model = get_required<std::string>(j, "model", where);
  r.method = get_required<std::string>(j, "method", where);
  r.dataset = get_required<std::string>(j, "dataset", where);
  r.judge = get_required<std::string>(j, "judge", where);
  DatasetMetrics& m = r.metrics;
  m.n = get_required<size_t>(j, "n", where);
  m.n_refused = j.contains("n_refused") ? get_required<size_t>(j, "n_refused", where)
                                        : static_cast<size_t>(0);
  m.n_skipped = j.contains("n_skipped") ? get_required<size_t>(j, "n_skipped", where) : static_cast<size_t>(0);
  // A cell whose every prompt was skipped has no rate (null).
  m.refusal_rate = m.n == 0 && j.contains("refusal_rate") && j["refusal_rate"].is_null()
                       ? 0.0
                       : get_required<double>(j, "refusal_rate", where);
  const auto ci = get_required<std::vector<double>>(j, "refusal_ci95", where);
  SAFEDEC_CHECK(ci.size() == 2, where, ": refusal_ci95 must be [lo, hi].");
  m.refusal_ci95 = {ci[0], ci[1]};
  m.asr = get_optional_number(j, "asr", where);
  m.over_refusal = get_optional_number(j, "over_refusal", where);
  m.ref_nll = get_optional_number(j, "ref_nll", where);
  m.mean_new_tokens = get_required<double>(j, "mean_new_tokens", where);
  m.decode_tok_s = get_optional_number(j, "decode_tok_s", where);
  if (j.contains("skipped")) {
    SAFEDEC_CHECK(j["skipped"].is_array(), where, ": key 'skipped' must be a list of {id, reason}.");
    for (const auto& s : j["skipped"])
      r.skipped.emplace_back(get_required<std::string>(s, "id", where + " 'skipped'"),
                             get_required<std::string>(s, "reason", where + " 'skipped'"));
  }
  return r;
}

GenerationRow generation_row_from_json(const json& j, const std::string& where) {
  GenerationRow g;
  g.id = get_required<std::string>(j, "id", where);
  g.model = get_required<std::string>(j, "model", where);
  g.method = get_required<std::string>(j, "method", where);
  g.dataset = get_required<std::string>(j, "dataset", where);
  g.output = get_required<std::string>(j, "output", where);
  g.finish_reason = get_required<std::string>(j, "finish_reason", where);
  if (j.contains("new_tokens") && !j["new_tokens"].is_null())
    g.new_tokens = get_required<size_t>(j, "new_tokens", where);
  g.decode_seconds = get_optional_number(j, "decode_seconds", where);
  if (j.contains("refused") && !j["refused"].is_null())
    g.refused = get_required<bool>(j, "refused", where);
  if (j.contains("judge_reason") && !j["judge_reason"].is_null())
    g.judge_reason = get_required<std::string>(j, "judge_reason", where);
  if (j.contains("skipped") && !j["skipped"].is_null()) g.skipped = get_required<std::string>(j, "skipped", where);
  return g;
}

void append_jsonl(const std::string& path, const json& row) {
  // error_handler_t::replace: invalid UTF-8 (a response cut inside a character) becomes U+FFFD
  // instead of throwing, so a generation is never lost over one byte.
  std::string line = row.dump(-1, ' ', false, json::error_handler_t::replace);
  SAFEDEC_ASSERT(line.find('\n') == std::string::npos, "compact JSON cannot hold a raw newline");
  line.push_back('\n');
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  SAFEDEC_CHECK(fd >= 0, "cannot open ", path, " for appending: ", std::strerror(errno), ".");
  ssize_t written;
  do {
    written = ::write(fd, line.data(), line.size());
  } while (written < 0 && errno == EINTR);  // EINTR before any byte: nothing written, retry
  const int write_errno = errno;
  if (written != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    if (written < 0)
      fail("cannot append to ", path, ": ", std::strerror(write_errno), ".");
    fail("short write to ", path, ": ", written, " of ", line.size(),
         " bytes (disk full?); the last line is torn and will be ignored by readers.");
  }
  const int sync_rc = ::fsync(fd);
  const int sync_errno = errno;
  ::close(fd);
  SAFEDEC_CHECK(sync_rc == 0, "fsync of ", path, " failed: ", std::strerror(sync_errno), ".");
}

JsonlReadResult read_jsonl(const std::string& path, bool missing_ok) {
  JsonlReadResult out;
  if (!file_exists(path)) {
    SAFEDEC_CHECK(missing_ok, "JSONL file not found: ", path, ".");
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  SAFEDEC_CHECK(in.good(), "cannot open ", path, ".");
  std::ostringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  size_t start = 0;
  size_t line_no = 0;
  while (start < text.size()) {
    ++line_no;
    const size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      out.torn_tail = true;
      out.diagnostic = path + ": ignored a torn last line " + std::to_string(line_no) + " (" +
                       std::to_string(text.size() - start) +
                       " bytes without a newline, from an interrupted write).";
      break;
    }
    std::string line = text.substr(start, nl - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) {
      try {
        out.rows.push_back(json::parse(line));
      } catch (const json::parse_error& e) {
        fail(path, ": line ", line_no, " is not valid JSON although it is complete (", e.what(),
             "); the file is corrupted.");
      }
    }
    start = nl + 1;
    out.valid_bytes = start;
  }
  return out;
}

bool repair_torn_tail(const std::string& path, std::string* diagnostic) {
  const JsonlReadResult r = read_jsonl(path, /*missing_ok=*/true);
  if (!r.torn_tail) return false;
  SAFEDEC_CHECK(::truncate(path.c_str(), static_cast<off_t>(r.valid_bytes)) == 0, "cannot truncate ",
                path, " to drop its torn last line: ", std::strerror(errno), ".");
  if (diagnostic) *diagnostic = r.diagnostic;
  return true;
}

std::vector<ResultRow> read_results(const std::string& path, std::string* diagnostic) {
  const JsonlReadResult r = read_jsonl(path, true);
  if (diagnostic) *diagnostic = r.diagnostic;
  std::vector<ResultRow> rows;
  for (size_t i = 0; i < r.rows.size(); ++i)
    rows.push_back(result_row_from_json(r.rows[i], path + " row " + std::to_string(i + 1)));
  return rows;
}

std::vector<GenerationRow> read_generations(const std::string& path, std::string* diagnostic) {
  const JsonlReadResult r = read_jsonl(path, true);
  if (diagnostic) *diagnostic = r.diagnostic;
  std::vector<GenerationRow> rows;
  for (size_t i = 0; i < r.rows.size(); ++i)
    rows.push_back(generation_row_from_json(r.rows[i], path + " row " + std::to_string(i + 1)));
  return rows;
}

std::set<std::string> completed_ids(const std::vector<GenerationRow>& rows, const std::string& model,
                                    const std::string& method, const std::string& dataset) {
  std::set<std::string> ids;
  for (const auto& g : rows)
    if (g.model == model && g.method == method && g.dataset == dataset) ids.insert(g.id);
  return ids;
}

MetricsAccumulator accumulate_generations(const std::vector<GenerationRow>& rows,
                                          const std::string& model, const std::string& method,
                                          const std::string& dataset, bool harmful,
                                          bool over_refusal_probe) {
  MetricsAccumulator acc(harmful, over_refusal_probe);
  std::set<std::string> seen;
  for (const auto& g : rows) {
    if (g.model != model || g.method != method || g.dataset != dataset) continue;
    if (!seen.insert(g.id).second) continue;  // a duplicate from a retried write counts once
    if (g.skipped) {  // not generated (over the context): counted, left out of every rate
      acc.add_skipped();
      continue;
    }
    SAFEDEC_CHECK(g.refused.has_value(), "generation '", g.id, "' of ", model, " / ", method, " / ",
                  dataset, " has no judge verdict ('refused'), so its metrics cannot be rebuilt.");
    acc.add(*g.refused, g.new_tokens.value_or(0), g.decode_seconds.value_or(0.0));
  }
  return acc;
}

}  // namespace safedec
