// Speed of the fused per-step kernels (src/kernels/ops.h) against their ATen reference compositions
// (src/kernels/reference.h), on the CPU, with Google Benchmark:
//   contrastive_combine, ngsd_step (gate firing and quiet), safedecoding_mix (agreeing and disagreeing
//   expert) at batch 1 and 8 and vocabulary 49152 (SmolLM2) and 151936 (Qwen-size); steer_hidden at
//   batch 1 and 8, hidden 576.
// Times per call are wall clock (and the main thread's CPU time). Counters: rows/s, and in_bytes/s = the
// input bytes of one call (both logit rows, or the hidden rows and the steering vector, each byte counted
// once) per second. After the Google Benchmark output the program prints a Markdown table of reference time /
// fused time (wall and CPU) for every case, both measured in this run (the median over
// --benchmark_repetitions when there are several).
//
// Threads: torch::set_num_threads(1) by default; --threads N or SAFEDEC_BENCH_THREADS=N changes it.
// Before a case is timed the fused kernel and the reference are run once on its inputs and compared; a
// disagreement is a benchmark error and makes the exit code 1. Timings are never checked.
//
//   safedec_bench_kernels [--threads N] [--benchmark_filter=REGEX] [--benchmark_repetitions=5
//                          --benchmark_enable_random_interleaving=true] [--benchmark_min_time=SECONDS]
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "kernels/reference.h"

namespace safedec::bench {
namespace {

constexpr int64_t kBatches[] = {1, 8};
constexpr int64_t kVocabs[] = {49152, 151936};  // SmolLM2, Qwen2/2.5
constexpr int64_t kHidden = 576;                // SmolLM2-135M

// One timed case. Its name is "<kernel>/<impl>/<variant.../>batch:B/<vocab|hidden>:N"; the pair key (the name
// without "/<impl>") joins the reference and fused runs of the same case.
struct Case {
  std::string kernel;   // contrastive_combine | ngsd_step | safedecoding_mix | steer_hidden
  std::string variant;  // "" or e.g. "gate:fires", "expert:agrees"
  bool fused = false;
  int64_t rows = 1;
  int64_t cols = 1;

  std::string size_part() const {
    return "batch:" + std::to_string(rows) + (kernel == "steer_hidden" ? "/hidden:" : "/vocab:") +
           std::to_string(cols);
  }
  std::string key() const { return kernel + "/" + (variant.empty() ? "" : variant + "/") + size_part(); }
  std::string name() const {
    return kernel + (fused ? "/fused/" : "/reference/") + (variant.empty() ? "" : variant + "/") + size_part();
  }
};

// Logits shaped like a language model's: a normal background and a few tokens well above it.
torch::Tensor lm_logits(int64_t rows, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  auto l = torch::randn({rows, vocab}) * 3.0;
  const int64_t heads = std::min<int64_t>(vocab, 8);
  l.scatter_add_(1, torch::randint(vocab, {rows, heads}, torch::kInt64), torch::rand({rows, heads}) * 8.0);
  return l;
}

// A second model that mostly agrees with the first: the same logits plus noise.
torch::Tensor agreeing_logits(const torch::Tensor& base, uint64_t seed) {
  torch::manual_seed(seed);
  return base + torch::randn(base.sizes()) * 2.0;
}

// Empty when equal within the tolerance, else a sentence naming the field.
std::string compare(const char* what, const torch::Tensor& fused, const torch::Tensor& ref, double rtol = 0,
                    double atol = 0) {
  const auto a = fused.to(torch::kCPU).contiguous();
  const auto b = ref.to(torch::kCPU, a.scalar_type()).contiguous();
  const bool ok = a.is_floating_point() ? torch::allclose(a, b, rtol, atol) : torch::equal(a, b);
  if (ok) return "";
  std::ostringstream msg;
  msg << "fused and reference disagree on " << what;
  if (a.is_floating_point()) msg << " (max |diff| " << (a - b).abs().max().item<double>() << ")";
  return msg.str();
}

// What one case runs: a reference call, a fused call, and a check that they agree on these inputs.
struct Prepared {
  std::function<void()> reference;
  std::function<void()> fused;
  std::function<std::string()> verify;  // "" when the outputs agree
  std::string label;                    // e.g. the gate's spikes or SafeDecoding's k
  double in_bytes = 0;                  // input bytes of one call, each counted once
};

Prepared prepare_contrastive(const Case& c) {
  auto l_sp = lm_logits(c.rows, c.cols, 1);
  auto l_ap = agreeing_logits(l_sp, 2);
  auto alpha = torch::full({c.rows}, 0.5f);
  const double temperature = 0.7;
  Prepared p;
  p.reference = [=] { benchmark::DoNotOptimize(contrastive_reference(l_sp, l_ap, alpha, temperature).data_ptr()); };
  p.fused = [=] { benchmark::DoNotOptimize(contrastive_combine(l_sp, l_ap, alpha, temperature).data_ptr()); };
  p.verify = [=] {
    return compare("the logits", contrastive_combine(l_sp, l_ap, alpha, temperature),
                   contrastive_reference(l_sp, l_ap, alpha, temperature), 1e-5, 1e-5);
  };
  p.in_bytes = 2.0 * c.rows * c.cols * sizeof(float);
  return p;
}

Prepared prepare_ngsd(const Case& c) {
  auto l_b = lm_logits(c.rows, c.cols, 3);
  auto l_e = agreeing_logits(l_b, 4);
  auto alpha = torch::full({c.rows}, 0.5f);
  // The potential before the step: 2 makes (1 - 1/8) * 2 + I >= theta = 1, so every row fires and the
  // top-64 union path runs; 0 leaves v = I < 1 (I is a TV distance), so no row fires.
  const bool fires = c.variant == "gate:fires";
  const float v0 = fires ? 2.0f : 0.0f;
  const NgsdGateParams gate{};
  auto v_ref = torch::full({c.rows}, v0);
  auto v_fused = torch::full({c.rows}, v0);
  Prepared p;
  // Both fill their potential every call (the fused op updates it in place) and both produce probs.
  p.reference = [=] {
    v_ref.fill_(v0);
    benchmark::DoNotOptimize(ngsd_step_reference(l_b, l_e, alpha, v_ref, gate).probs.data_ptr());
  };
  p.fused = [=] {
    v_fused.fill_(v0);
    benchmark::DoNotOptimize(ngsd_step(l_b, l_e, alpha, v_fused, gate, /*want_probs=*/true).probs.data_ptr());
  };
  p.verify = [=] {
    auto v = torch::full({c.rows}, v0);
    const auto got = ngsd_step(l_b, l_e, alpha, v, gate, true);
    const auto ref = ngsd_step_reference(l_b, l_e, alpha, torch::full({c.rows}, v0), gate);
    if (got.spike.all().item<bool>() != fires || got.spike.any().item<bool>() != fires) {
      return std::string("the gate did not ") + (fires ? "fire" : "stay quiet") + " on every row as this case needs";
    }
    for (const auto& why : {compare("the choice", got.choice, ref.choice), compare("the spike", got.spike, ref.spike),
                            compare("the TV distance", got.tv, ref.tv, 1e-4, 1e-6),
                            compare("the potential", v, ref.v, 1e-4, 1e-6),
                            compare("the probabilities", got.probs, ref.probs, 1e-3, 1e-7)}) {
      if (!why.empty()) return why;
    }
    return std::string();
  };
  p.in_bytes = 2.0 * c.rows * c.cols * sizeof(float);
  return p;
}

Prepared prepare_safedecoding(const Case& c) {
  auto l_b = lm_logits(c.rows, c.cols, 5);
  // An agreeing expert keeps the candidate depth k near c = 5; an unrelated one makes k grow to hundreds.
  auto l_e = c.variant == "expert:agrees" ? agreeing_logits(l_b, 6) : lm_logits(c.rows, c.cols, 7);
  const int64_t cand = 5;
  const double alpha = 3.0;
  Prepared p;
  p.reference = [=] { benchmark::DoNotOptimize(safedecoding_reference(l_b, l_e, cand, alpha).probs.data_ptr()); };
  p.fused = [=] { benchmark::DoNotOptimize(safedecoding_mix(l_b, l_e, cand, alpha, true).probs.data_ptr()); };
  p.verify = [=] {
    const auto got = safedecoding_mix(l_b, l_e, cand, alpha, true);
    const auto ref = safedecoding_reference(l_b, l_e, cand, alpha);
    for (const auto& why : {compare("the choice", got.choice, ref.choice), compare("k", got.k, ref.k),
                            // q = (1 + alpha) p_e - alpha p_b cancels: the softmax normalisers' fp32
                            // error (~ 2 sqrt(V) eps relative, V terms each) scaled by 1 + 2 alpha.
                            compare("the probabilities", got.probs, ref.probs, 1e-4,
                                    1e-6 + (1.0 + 2.0 * alpha) * 2.0 * std::sqrt(double(c.cols)) * 1.1920929e-7)}) {
      if (!why.empty()) return why;
    }
    return std::string();
  };
  const auto k = safedecoding_mix(l_b, l_e, cand, alpha, false).k;
  std::ostringstream label;
  label << "k " << k.min().item<int64_t>() << ".." << k.max().item<int64_t>();
  p.label = label.str();
  p.in_bytes = 2.0 * c.rows * c.cols * sizeof(float);
  return p;
}

Prepared prepare_steer(const Case& c) {
  torch::manual_seed(8);
  auto x = torch::randn({c.rows, c.cols});
  auto v = torch::randn({c.cols});
  const double alpha = 0.12;
  Prepared p;
  p.reference = [=] { benchmark::DoNotOptimize(steer_reference(x, v, alpha, SteerForm::kCode).data_ptr()); };
  p.fused = [=] { benchmark::DoNotOptimize(steer_hidden(x, v, alpha, SteerForm::kCode).data_ptr()); };
  p.verify = [=] {
    return compare("the steered rows", steer_hidden(x, v, alpha), steer_reference(x, v, alpha, SteerForm::kCode),
                   1e-4, 1e-5);
  };
  p.in_bytes = (c.rows + 1.0) * c.cols * sizeof(float);
  return p;
}

Prepared prepare(const Case& c) {
  if (c.kernel == "contrastive_combine") return prepare_contrastive(c);
  if (c.kernel == "ngsd_step") return prepare_ngsd(c);
  if (c.kernel == "safedecoding_mix") return prepare_safedecoding(c);
  return prepare_steer(c);
}

void run_case(benchmark::State& state, const Case& c) {
  Prepared p = prepare(c);
  // Google Benchmark calls this function several times per case (to size the iteration count, then once per
  // repetition); the reference-vs-fused check runs on the first call of each pair only.
  static std::set<std::string> verified;
  if (verified.count(c.key()) == 0) {
    const std::string why = p.verify();
    if (!why.empty()) {
      state.SkipWithError(why.c_str());
      return;
    }
    verified.insert(c.key());
  }
  const auto& call = c.fused ? p.fused : p.reference;
  call();  // warm-up: the fused kernels grow their per-thread scratch buffers on the first call
  for (auto _ : state) call();
  using benchmark::Counter;
  state.counters["rows"] = Counter(static_cast<double>(c.rows), Counter::kIsIterationInvariantRate);
  state.counters["in_bytes"] = Counter(p.in_bytes, Counter::kIsIterationInvariantRate, Counter::kIs1000);
  state.SetLabel(p.label);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const auto add_pair = [&](Case c) {  // reference then fused, next to each other in the run order
    c.fused = false;
    cases.push_back(c);
    c.fused = true;
    cases.push_back(c);
  };
  for (const int64_t vocab : kVocabs) {
    for (const int64_t batch : kBatches) {
      add_pair({"contrastive_combine", "", false, batch, vocab});
      add_pair({"ngsd_step", "gate:fires", false, batch, vocab});
      add_pair({"ngsd_step", "gate:quiet", false, batch, vocab});
      add_pair({"safedecoding_mix", "expert:agrees", false, batch, vocab});
      add_pair({"safedecoding_mix", "expert:disagrees", false, batch, vocab});
    }
  }
  for (const int64_t batch : kBatches) add_pair({"steer_hidden", "", false, batch, kHidden});
  return cases;
}

// Per-call times of one case, one entry per repetition.
struct Times {
  std::vector<double> wall;  // seconds
  std::vector<double> cpu;   // seconds of the main thread's CPU time
};

// Forwards every report to the chosen display reporter and keeps, per case, the times per call of each
// repetition and any error, for the summary printed after the run.
class CollectingReporter : public benchmark::BenchmarkReporter {
 public:
  explicit CollectingReporter(std::unique_ptr<benchmark::BenchmarkReporter> inner) : inner_(std::move(inner)) {}

  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      const std::string& name = run.run_name.function_name;
      if (run.error_occurred) {
        errors_.push_back(name + ": " + run.error_message);
      } else if (run.iterations > 0) {
        auto& t = times_[name];
        t.wall.push_back(run.real_accumulated_time / static_cast<double>(run.iterations));
        t.cpu.push_back(run.cpu_accumulated_time / static_cast<double>(run.iterations));
      }
    }
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }

  const std::map<std::string, Times>& times() const { return times_; }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::unique_ptr<benchmark::BenchmarkReporter> inner_;
  std::map<std::string, Times> times_;
  std::vector<std::string> errors_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string format_time(double seconds) {
  char buf[32];
  if (seconds >= 1e-1) {
    std::snprintf(buf, sizeof buf, "%.1f ms", seconds * 1e3);
  } else if (seconds >= 1e-3) {
    std::snprintf(buf, sizeof buf, "%.3f ms", seconds * 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f us", seconds * 1e6);
  }
  return buf;
}

// The Markdown table of reference / fused per case, in run order.
void print_summary(std::ostream& out, const std::vector<Case>& cases, const CollectingReporter& rep, int threads) {
  const auto& t = rep.times();
  size_t reps = 0;
  for (const auto& [name, v] : t) reps = std::max(reps, v.wall.size());
  if (reps == 0) {
    out << "\nNo case finished; nothing to compare.\n";
    return;
  }
  // Wall time is what a decoding step waits for. The main thread's CPU time leaves out the time the thread was
  // preempted by other processes, so on a busy machine it is the steadier figure; with more than one torch
  // thread it leaves out the pool's work and understates the time.
  out << "\nFused vs reference, time per call (" << threads << " torch thread" << (threads == 1 ? "" : "s")
      << "; median of " << reps << " repetition" << (reps == 1 ? "" : "s") << ", both measured in this run):\n\n"
      << "| case | reference wall | fused wall | speed-up wall | reference CPU | fused CPU | speed-up CPU |\n"
      << "|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& c : cases) {
    if (c.fused) continue;
    Case f = c;
    f.fused = true;
    const auto r = t.find(c.name());
    const auto u = t.find(f.name());
    if (r == t.end() || u == t.end()) continue;  // filtered out or failed
    const double wr = median(r->second.wall), wf = median(u->second.wall);
    const double cr = median(r->second.cpu), cf = median(u->second.cpu);
    char ratio_wall[32], ratio_cpu[32];
    std::snprintf(ratio_wall, sizeof ratio_wall, "%.2fx", wr / wf);
    std::snprintf(ratio_cpu, sizeof ratio_cpu, "%.2fx", cr / cf);
    out << "| " << c.key() << " | " << format_time(wr) << " | " << format_time(wf) << " | " << ratio_wall << " | "
        << format_time(cr) << " | " << format_time(cf) << " | " << ratio_cpu << " |\n";
  }
  out.flush();
}

// Removes "--threads N" / "--threads=N" from argv (Google Benchmark rejects flags it does not know).
int take_threads_flag(int* argc, char** argv) {
  int threads = 1;
  if (const char* env = std::getenv("SAFEDEC_BENCH_THREADS"); env != nullptr && *env != '\0') threads = std::atoi(env);
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--threads" && i + 1 < *argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg.rfind("--threads=", 0) == 0) {
      threads = std::atoi(arg.c_str() + 10);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  return threads;
}

std::string flag_value(int argc, char** argv, const std::string& flag) {
  std::string value;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind(flag + "=", 0) == 0) value = arg.substr(flag.size() + 1);
  }
  return value;
}

void print_help() {
  std::printf(
      "safedec_bench_kernels: fused CPU kernels vs their ATen references (Google Benchmark).\n"
      "  --threads N   torch intra-op threads (default 1; env SAFEDEC_BENCH_THREADS)\n"
      "Google Benchmark flags (e.g. --benchmark_filter=ngsd --benchmark_repetitions=5\n"
      "--benchmark_enable_random_interleaving=true --benchmark_min_time=0.5) follow:\n\n");
  benchmark::PrintDefaultHelp();
}

int run(int argc, char** argv) {
  const int threads = take_threads_flag(&argc, argv);
  if (threads < 1) {
    std::fprintf(stderr, "safedec_bench_kernels: --threads / SAFEDEC_BENCH_THREADS must be a positive integer\n");
    return 2;
  }
  torch::set_num_threads(threads);
  benchmark::Initialize(&argc, argv, print_help);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()));
  benchmark::AddCustomContext("torch", TORCH_VERSION);

  const auto cases = all_cases();
  for (const auto& c : cases) {
    benchmark::RegisterBenchmark(c.name().c_str(), [c](benchmark::State& s) { run_case(s, c); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }

  // The display reporter the flags ask for, wrapped so that the runs are also collected for the summary.
  const std::string format = flag_value(argc, argv, "--benchmark_format");
  std::unique_ptr<benchmark::BenchmarkReporter> inner;
  if (format == "json") {
    inner = std::make_unique<benchmark::JSONReporter>();
  } else if (!format.empty() && format != "console") {
    std::fprintf(stderr, "safedec_bench_kernels: --benchmark_format must be console or json, got '%s'\n",
                 format.c_str());
    return 2;
  } else {
    inner = std::make_unique<benchmark::ConsoleReporter>(isatty(STDOUT_FILENO) != 0
                                                             ? benchmark::ConsoleReporter::OO_ColorTabular
                                                             : benchmark::ConsoleReporter::OO_Tabular);
  }
  CollectingReporter reporter(std::move(inner));
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  // The summary goes to stdout after a console table, to stderr after JSON (keeping it parseable).
  std::ostream& out = (format.empty() || format == "console") ? std::cout : std::cerr;
  print_summary(out, cases, reporter, threads);
  for (const auto& e : reporter.errors()) std::cerr << "error: " << e << "\n";
  return reporter.errors().empty() ? 0 : 1;
}

}  // namespace
}  // namespace safedec::bench

int main(int argc, char** argv) {
  try {
    return safedec::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "safedec_bench_kernels: %s\n", e.what());
    return 1;
  }
}
