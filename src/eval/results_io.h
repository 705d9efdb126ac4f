// Results files of a run directory: results.jsonl (one row per model x method x dataset) and
// generations.jsonl (one row per generated response), appended atomically so concurrent writers and
// crashes never interleave or half-write a middle line; readers diagnose a torn last line.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "eval/metrics.h"

namespace safedec {

// One row of results.jsonl. JSON keys: model, method, dataset, judge, n, n_refused, refusal_rate,
// refusal_ci95 [lo, hi], asr, over_refusal, ref_nll, mean_new_tokens, decode_tok_s (null where
// not applicable).
struct ResultRow {
  std::string model;
  std::string method;
  std::string dataset;
  std::string judge;
  DatasetMetrics metrics;
  // The prompts of the cell that were skipped, as (id, reason) (JSON: "skipped": [{id, reason}], present
  // only when some were; metrics.n_skipped counts them). No prompt text.
  std::vector<std::pair<std::string, std::string>> skipped;
};

// One row of generations.jsonl. JSON keys: id, model, method, dataset, output, finish_reason, and
// when known new_tokens, decode_seconds, refused, judge_reason. A prompt that was not generated (it
// does not fit the model's context) is a row with "skipped": REASON, output "", finish_reason
// "skipped" and no verdict: it counts as done for --resume and is left out of every metric.
struct GenerationRow {
  std::string id;
  std::string model;
  std::string method;
  std::string dataset;
  std::string output;
  std::string finish_reason;  // e.g. "eos", "length", "stop"
  std::optional<size_t> new_tokens;
  std::optional<double> decode_seconds;
  std::optional<bool> refused;
  std::optional<std::string> judge_reason;
  std::optional<std::string> skipped{};  // why the prompt was not generated (no prompt text)
};

nlohmann::json to_json(const ResultRow& row);
nlohmann::json to_json(const GenerationRow& row);
// Throw safedec::Error naming `where` and the missing or mistyped key.
ResultRow result_row_from_json(const nlohmann::json& j, const std::string& where);
GenerationRow generation_row_from_json(const nlohmann::json& j, const std::string& where);

// Serialises `row` to one line (invalid UTF-8 in strings becomes U+FFFD, since model output can end
// inside a multi-byte character) and appends it with ONE write(2) on an O_APPEND descriptor,
// followed by fsync. Throws safedec::Error naming the path on any failure, including a short write.
void append_jsonl(const std::string& path, const nlohmann::json& row);

// What read_jsonl found.
struct JsonlReadResult {
  std::vector<nlohmann::json> rows;
  bool torn_tail = false;     // the last line had no '\n' (an interrupted write) and was ignored
  std::string diagnostic;     // a sentence describing the torn tail, empty otherwise
  size_t valid_bytes = 0;     // length of the well-formed prefix (every complete line)
};

// Reads a JSONL file. A last line without a trailing newline is a torn write: it is ignored and
// described in `diagnostic`. A malformed complete line is corruption and throws safedec::Error
// naming the path and the 1-based line. A missing file throws unless missing_ok (then: no rows).
JsonlReadResult read_jsonl(const std::string& path, bool missing_ok = false);

// Truncates a torn last line so later appends start on a fresh line (call before resuming).
// Returns true when something was cut; the diagnostic is written to `diagnostic` if non-null.
bool repair_torn_tail(const std::string& path, std::string* diagnostic = nullptr);

// Typed readers over read_jsonl (missing file: empty).
std::vector<ResultRow> read_results(const std::string& path, std::string* diagnostic = nullptr);
std::vector<GenerationRow> read_generations(const std::string& path,
                                            std::string* diagnostic = nullptr);

// Ids already generated for (model, method, dataset): a resumed runner skips them.
std::set<std::string> completed_ids(const std::vector<GenerationRow>& rows, const std::string& model,
                                    const std::string& method, const std::string& dataset);

// Rebuilds the metrics of (model, method, dataset) from generation rows (after a resume). Every
// matching row must carry `refused`; new_tokens / decode_seconds count as 0 when absent. Throws
// safedec::Error naming the id of a row without a verdict.
MetricsAccumulator accumulate_generations(const std::vector<GenerationRow>& rows,
                                          const std::string& model, const std::string& method,
                                          const std::string& dataset, bool harmful,
                                          bool over_refusal_probe);

}  // namespace safedec
