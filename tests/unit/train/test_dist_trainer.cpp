// Data-parallel training on two real ranks (this binary started again as rank 0 and rank 1 on
// 127.0.0.1, c10d/Gloo): the parameters after N steps equal a single-process run with the same global
// batch (fp32 tolerance), on both ranks; rank 0 alone writes the checkpoints and the log; a run killed
// after step 2 and resumed with the same world size ends where an uninterrupted one does; a
// batch_size that WORLD_SIZE does not divide is refused on every rank.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "dist/dist.h"
#include "model/causal_lm.h"
#include "support/spawn_ranks.h"
#include "train/lm_task.h"
#include "train/trainer.h"
#include "support/tiny_llama.h"

using namespace safedec;
using safedec::testing_support::spawn_ranks;
namespace fs = std::filesystem;

namespace {

using test::tiny_llama;

LmExample example(const std::string& id, std::vector<int32_t> prompt, std::vector<int32_t> response) {
  LmExample e;
  e.id = id;
  e.ids = prompt;
  e.ids.insert(e.ids.end(), response.begin(), response.end());
  e.target.assign(e.ids.size(), 0);
  for (size_t t = prompt.size(); t < e.ids.size(); ++t) e.target[t] = 1;
  return e;
}

// 7 examples of different lengths: with batch_size 4 an epoch is a full batch and one of 3 (ranks
// take 2 and 1 examples of it).
std::vector<LmExample> toy_set() {
  return {example("a", {1, 2, 3}, {4, 5, 6, 7}), example("b", {8, 9}, {10, 11}),
          example("c", {3, 2, 1, 0, 12}, {13, 14, 15}), example("d", {20}, {21, 22, 23, 24, 25}),
          example("e", {30, 31}, {32}), example("f", {5, 6, 7, 8}, {9, 10, 11, 12, 13, 14}),
          example("g", {17}, {18, 19})};
}

struct Run {
  std::shared_ptr<CausalLM> model;
  std::unique_ptr<LmTask> task;
};

// Full fine-tune plus a LoRA (no dropout: a data-parallel run draws other dropout masks than one process).
Run make_task() {
  Run r;
  r.model = tiny_llama();
  LoraAdapter::Options lo;
  lo.rank = 2;
  lo.targets = {"q_proj", "v_proj", "down_proj"};
  auto lora = std::make_shared<LoraAdapter>(r.model->config(), lo);
  LmTaskOptions opt;
  opt.lora = lora;
  opt.train_full = true;
  r.task = std::make_unique<LmTask>(r.model, toy_set(), opt);
  return r;
}

TrainLoopConfig loop_config(int64_t batch_size = 4) {
  TrainLoopConfig cfg;
  cfg.epochs = 2;  // 4 steps
  cfg.batch_size = batch_size;
  cfg.micro_batch_size = 1;
  cfg.checkpoint_every = 1;
  cfg.optim.lr = 5e-3;
  cfg.optim.warmup_steps = 1;
  cfg.optim.schedule = "cosine";
  cfg.optim.clip_grad_norm = 0.5;  // clipping acts on the all-reduced gradient
  cfg.seed = 42;
  return cfg;
}

torch::Tensor flat_params(LmTask& task) {
  std::vector<torch::Tensor> v;
  for (auto& p : task.parameters()) v.push_back(p.tensor.detach().reshape({-1}).to(torch::kFloat32));
  return torch::cat(v);
}

void write_floats(const std::string& path, const torch::Tensor& t) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * sizeof(float));
}

torch::Tensor read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return torch::from_blob(b.data(), {static_cast<int64_t>(b.size() / sizeof(float))}, torch::kFloat32).clone();
}

// Rank 0 trains in SAFEDEC_TEST_DIR/run; the other ranks get SAFEDEC_TEST_DIR/rank<r>, which must stay
// unwritten. Each rank writes its final parameters to SAFEDEC_TEST_DIR/params_rank<r>.bin.
int rank_main(const std::string& role) {
  auto g = init_dist_from_environment();
  if (!g) return 3;
  const std::string dir = std::getenv("SAFEDEC_TEST_DIR");
  const std::string run_dir = g->is_main() ? dir + "/run" : dir + "/rank" + std::to_string(g->rank());
  Run r = make_task();
  if (role == "bad_batch") {
    Trainer t(*r.task, loop_config(3), run_dir, "h");
    return 0;
  }
  TrainLoopConfig cfg = loop_config();
  if (role == "stop") cfg.stop_after = 2;
  Trainer t(*r.task, cfg, run_dir, "h");
  const TrainResult res = t.run(role == "resume");
  if (role == "stop" && !res.stopped_early) return 20;
  if (role == "resume" && res.resumed_from != 2) return 21;
  if (res.steps != (role == "stop" ? 2 : 4)) return 22;
  write_floats(dir + "/params_rank" + std::to_string(g->rank()) + ".bin", flat_params(*r.task));
  g->barrier("end of test");
  return 0;
}

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/dist_trainer_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

torch::Tensor single_process_params() {
  Run r = make_task();
  Trainer t(*r.task, loop_config(), temp_dir("single"), "h");
  t.run(false);
  return flat_params(*r.task);
}

void expect_equal_to_single(const torch::Tensor& single, const std::string& dir) {
  const torch::Tensor p0 = read_floats(dir + "/params_rank0.bin"), p1 = read_floats(dir + "/params_rank1.bin");
  ASSERT_EQ(p0.numel(), single.numel());
  ASSERT_EQ(p1.numel(), single.numel());
  // Every rank applies the same all-reduced gradient: the ranks agree bit for bit.
  EXPECT_TRUE(torch::equal(p0, p1)) << "ranks differ by " << (p0 - p1).abs().max().item<float>();
  // Against one process: the same sums in another order, so fp32 rounding only.
  EXPECT_TRUE(torch::allclose(p0, single, 1e-5, 1e-6)) << "max difference " << (p0 - single).abs().max().item<float>();
  // ...and training did move them.
  Run fresh = make_task();
  EXPECT_GT((flat_params(*fresh.task) - single).abs().max().item<float>(), 1e-3);
}

}  // namespace

TEST(DataParallel, TwoRanksEqualOneProcessWithTheSameGlobalBatch) {
  const std::string dir = temp_dir("equal");
  const auto run = spawn_ranks("train", 2, dir, [&](int) { return std::map<std::string, std::string>{{"SAFEDEC_TEST_DIR", dir}}; });
  ASSERT_TRUE(run.ok()) << run.all_logs();
  expect_equal_to_single(single_process_params(), dir);
  // Rank 0 wrote the log and the checkpoints; rank 1 wrote nothing.
  EXPECT_TRUE(fs::exists(dir + "/run/train_log.jsonl"));
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoints"));
  EXPECT_FALSE(fs::exists(dir + "/rank1"));
  std::ifstream log(dir + "/run/train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line);) ++lines;
  EXPECT_EQ(lines, 4);
}

TEST(DataParallel, KilledAndResumedRunEqualsOneProcess) {
  const std::string dir = temp_dir("resume");
  auto env = [&](int) { return std::map<std::string, std::string>{{"SAFEDEC_TEST_DIR", dir}}; };
  const auto first = spawn_ranks("stop", 2, dir, env);
  ASSERT_TRUE(first.ok()) << first.all_logs();
  const auto second = spawn_ranks("resume", 2, dir, env);
  ASSERT_TRUE(second.ok()) << second.all_logs();
  expect_equal_to_single(single_process_params(), dir);
  EXPECT_FALSE(fs::exists(dir + "/rank1"));
}

TEST(DataParallel, BatchSizeNotDivisibleByWorldSizeIsRefused) {
  const std::string dir = temp_dir("bad_batch");
  const auto run = spawn_ranks("bad_batch", 2, dir, [&](int) { return std::map<std::string, std::string>{{"SAFEDEC_TEST_DIR", dir}}; });
  ASSERT_EQ(run.codes.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(run.codes[r], 2) << run.all_logs();
    EXPECT_NE(run.logs[r].find("`batch_size` 3 is not a multiple of WORLD_SIZE 2"), std::string::npos) << run.all_logs();
  }
  EXPECT_FALSE(fs::exists(dir + "/run"));
}

SAFEDEC_RANK_ROLES(rank_main)
