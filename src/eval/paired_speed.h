// Paired speed measurement for `safedec eval` (config key `speed`): a method's time per token
// against plain decoding, measured so that background load hits both alike. For each method, K
// pairs of timed batches run back to back on the same prompts with the same forced length (EOS
// ignored, so both generate the same number of tokens); the order inside a pair alternates
// (plain first in pair 0, the method first in pair 1, ...) so that drift within a pair cancels.
// Each pair gives one ratio r = method seconds per token / plain seconds per token (ATGR as in the
// SafeDecoding paper: > 1 means slower than plain). The figure reported is the median of the
// ratios, with their interquartile range; when that range divided by the median exceeds the
// configured threshold the figure is flagged "noisy" and the report prints it as unreliable.
//
// Results go to speed.jsonl in the run directory, one row per finished pair, so --resume runs only
// the pairs not yet written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace safedec {

// Pair `pair` (0-based) times plain first when true, the method first when false.
bool plain_first_in_pair(int64_t pair);

// One finished pair: seconds per generated token of each side (prefill included).
struct SpeedPair {
  int64_t pair = 0;
  double plain_s_per_token = 0;
  double method_s_per_token = 0;
};

// Linear-interpolation quantile (q in [0, 1]) of a non-empty sample.
double sample_quantile(std::vector<double> v, double q);

// The summary of one (model, method): ratios method/plain per pair and their statistics.
struct PairedSpeed {
  std::string model, method;
  size_t pairs = 0;
  double atgr = 0;        // median over pairs of method s/token / plain s/token
  double q1 = 0, q3 = 0;  // quartiles of the ratios
  double min = 0, max = 0;
  double spread = 0;      // (q3 - q1) / atgr
  bool noisy = false;     // spread > the threshold
  double plain_tok_s = 0, method_tok_s = 0;  // medians of rows*tokens / seconds (for reading, not the ratio)
  int64_t prompts = 0, new_tokens = 0;  // the timed batch (from the rows; 0 when not known)
  double load = -1;   // the largest 1-minute load average seen after a pair (-1: not recorded)
  int64_t cores = 0;  // the machine's logical cores when measured (0: not recorded)
};

// Pure: the ratio statistics of `pairs` (non-empty; every time finite and > 0, else an Error).
PairedSpeed summarize_speed_pairs(const std::vector<SpeedPair>& pairs, double noisy_spread);

// speed.jsonl rows.
nlohmann::json speed_row_json(const std::string& model, const std::string& method, const std::string& dataset,
                              int64_t prompts, int64_t new_tokens, const SpeedPair& p, double plain_decode_step_s,
                              double method_decode_step_s, double load = -1, int64_t cores = 0);
// Every (model, method) of a speed.jsonl (missing file: none), in order of first appearance; a pair
// written twice (a resumed run) counts once (the last row). Malformed rows are an Error naming the file.
std::vector<PairedSpeed> read_paired_speed(const std::string& path, double noisy_spread);
// The pair indices already written for (model, method).
std::vector<int64_t> finished_speed_pairs(const std::string& path, const std::string& model, const std::string& method);

}  // namespace safedec
