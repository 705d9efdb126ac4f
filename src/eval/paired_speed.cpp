#include "eval/paired_speed.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "core/error.h"
#include "eval/results_io.h"

namespace safedec {

using nlohmann::json;

bool plain_first_in_pair(int64_t pair) { return pair % 2 == 0; }

double sample_quantile(std::vector<double> v, double q) {
  SAFEDEC_CHECK(!v.empty(), "sample_quantile: empty sample");
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

PairedSpeed summarize_speed_pairs(const std::vector<SpeedPair>& pairs, double noisy_spread) {
  SAFEDEC_CHECK(!pairs.empty(), "paired speed: no finished pairs");
  std::vector<double> ratios, plain_rate, method_rate;
  for (const auto& p : pairs) {
    SAFEDEC_CHECK(std::isfinite(p.plain_s_per_token) && p.plain_s_per_token > 0 && std::isfinite(p.method_s_per_token) &&
                      p.method_s_per_token > 0,
                  "paired speed: pair ", p.pair, " has a time per token that is not a positive number (plain ",
                  p.plain_s_per_token, ", method ", p.method_s_per_token, ")");
    ratios.push_back(p.method_s_per_token / p.plain_s_per_token);
    plain_rate.push_back(1.0 / p.plain_s_per_token);
    method_rate.push_back(1.0 / p.method_s_per_token);
  }
  PairedSpeed s;
  s.pairs = pairs.size();
  s.atgr = sample_quantile(ratios, 0.5);
  s.q1 = sample_quantile(ratios, 0.25);
  s.q3 = sample_quantile(ratios, 0.75);
  s.min = *std::min_element(ratios.begin(), ratios.end());
  s.max = *std::max_element(ratios.begin(), ratios.end());
  s.spread = (s.q3 - s.q1) / s.atgr;
  s.noisy = s.spread > noisy_spread;
  s.plain_tok_s = sample_quantile(plain_rate, 0.5);
  s.method_tok_s = sample_quantile(method_rate, 0.5);
  return s;
}

json speed_row_json(const std::string& model, const std::string& method, const std::string& dataset, int64_t prompts,
                    int64_t new_tokens, const SpeedPair& p, double plain_decode_step_s, double method_decode_step_s,
                    double load, int64_t cores) {
  json j{{"model", model},
              {"method", method},
              {"pair", p.pair},
              {"order", plain_first_in_pair(p.pair) ? "plain_first" : "method_first"},
              {"dataset", dataset},
              {"prompts", prompts},
              {"new_tokens", new_tokens},
              {"plain_s_per_token", p.plain_s_per_token},
              {"method_s_per_token", p.method_s_per_token},
              {"ratio", p.method_s_per_token / p.plain_s_per_token},
              {"plain_decode_step_s", plain_decode_step_s},
              {"method_decode_step_s", method_decode_step_s}};
  if (load >= 0) j["load_avg_1m"] = load;
  if (cores > 0) j["cores"] = cores;
  return j;
}

namespace {

// (model, method) -> pair index -> pair, keys in order of first appearance.
struct SpeedRows {
  std::vector<std::pair<std::string, std::string>> order;
  std::map<std::pair<std::string, std::string>, std::map<int64_t, SpeedPair>> pairs;
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> batch;  // (prompts, new_tokens)
  std::map<std::pair<std::string, std::string>, std::pair<double, int64_t>> load;    // (max load, cores)
};

SpeedRows read_rows(const std::string& path) {
  SpeedRows out;
  size_t line = 0;
  for (const auto& j : read_jsonl(path, /*missing_ok=*/true).rows) {
    ++line;
    try {
      const std::pair<std::string, std::string> key{j.at("model").get<std::string>(), j.at("method").get<std::string>()};
      SpeedPair p;
      p.pair = j.at("pair").get<int64_t>();
      p.plain_s_per_token = j.at("plain_s_per_token").get<double>();
      p.method_s_per_token = j.at("method_s_per_token").get<double>();
      if (!out.pairs.count(key)) out.order.push_back(key);
      out.pairs[key][p.pair] = p;
      out.batch[key] = {j.value("prompts", int64_t{0}), j.value("new_tokens", int64_t{0})};
      auto& l = out.load.try_emplace(key, -1.0, int64_t{0}).first->second;
      if (j.contains("load_avg_1m")) l.first = std::max(l.first, j["load_avg_1m"].get<double>());
      if (j.contains("cores")) l.second = j["cores"].get<int64_t>();
    } catch (const json::exception& e) {
      fail(path, ": row ", line, " is not a speed row (", e.what(), ")");
    }
  }
  return out;
}

}  // namespace

std::vector<PairedSpeed> read_paired_speed(const std::string& path, double noisy_spread) {
  const SpeedRows rows = read_rows(path);
  std::vector<PairedSpeed> out;
  for (const auto& key : rows.order) {
    std::vector<SpeedPair> pairs;
    for (const auto& [i, p] : rows.pairs.at(key)) pairs.push_back(p);
    PairedSpeed s = summarize_speed_pairs(pairs, noisy_spread);
    s.model = key.first;
    s.method = key.second;
    std::tie(s.prompts, s.new_tokens) = rows.batch.at(key);
    std::tie(s.load, s.cores) = rows.load.at(key);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<int64_t> finished_speed_pairs(const std::string& path, const std::string& model, const std::string& method) {
  const SpeedRows rows = read_rows(path);
  std::vector<int64_t> out;
  auto it = rows.pairs.find({model, method});
  if (it != rows.pairs.end())
    for (const auto& [i, p] : it->second) out.push_back(i);
  return out;
}

}  // namespace safedec
