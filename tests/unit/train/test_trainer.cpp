// The Trainer and its tasks on a tiny random model: gradients (finite differences) for LoRA factors,
// full weights, soft prompts and the probe; the training forward equals the cached inference forward;
// activation checkpointing gives the same gradients; a zero LoRA is a no-op; the loss falls; a killed
// and resumed run ends with the same parameters as an uninterrupted one; NaN losses stop with the step.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "model/causal_lm.h"
#include "support/error_of.h"
#include "train/lm_task.h"
#include "train/probe.h"
#include "train/trainer.h"
#include "support/tiny_llama.h"

using namespace safedec;
using safedec::testing_support::error_of;

namespace {

using test::tiny_llama;

// Prompt tokens then response tokens; targets on the response.
LmExample example(const std::string& id, std::vector<int32_t> prompt, std::vector<int32_t> response, int term = 0) {
  LmExample e;
  e.id = id;
  e.ids = prompt;
  e.ids.insert(e.ids.end(), response.begin(), response.end());
  e.target.assign(e.ids.size(), 0);
  for (size_t t = prompt.size(); t < e.ids.size(); ++t) e.target[t] = 1;
  e.term = term;
  return e;
}

std::vector<LmExample> toy_set() {
  return {example("a", {1, 2, 3}, {4, 5, 6, 7}), example("b", {8, 9}, {10, 11}),
          example("c", {3, 2, 1, 0, 12}, {13, 14, 15}), example("d", {20}, {21, 22, 23, 24, 25})};
}

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/trainer_" + name;
  std::filesystem::remove_all(d);
  return d;
}

// The objective the task optimises over the whole toy set (sum over terms of weight x token mean),
// without gradients.
double task_loss(LmTask& task) {
  std::vector<int64_t> all(task.size());
  for (int64_t i = 0; i < task.size(); ++i) all[i] = i;
  auto [sums, counts] = task.evaluate(all);
  const auto w = task.term_weights();
  double loss = 0;
  for (size_t k = 0; k < sums.size(); ++k)
    if (counts[k] > 0) loss += w[k] * sums[k] / counts[k];
  return loss;
}

// Analytic gradient of `param` (after one forward_backward over the whole set) against central
// differences of the loss at a few coordinates (fp64 model: the tiny model is cast to double).
void expect_gradient_matches(LmTask& task, torch::Tensor param, const std::string& what) {
  std::vector<int64_t> all(task.size());
  for (int64_t i = 0; i < task.size(); ++i) all[i] = i;
  param.requires_grad_(true);
  param.mutable_grad() = torch::Tensor();
  task.forward_backward(all, task.units(all));
  ASSERT_TRUE(param.grad().defined()) << what << ": no gradient reached the parameter";
  torch::Tensor g = param.grad().clone();
  param.mutable_grad() = torch::Tensor();
  param.requires_grad_(false);
  ASSERT_GT(g.abs().max().item<double>(), 0.0) << what << ": the gradient is all zero";
  auto flat = param.view({-1});
  const int64_t n = flat.size(0);
  for (int64_t i : {int64_t{0}, n / 3, n / 2, n - 1}) {
    const float keep = flat[i].item<float>();
    const float h = 1e-2f;
    {
      torch::NoGradGuard ng;
      flat[i] = keep + h;
    }
    const double up = task_loss(task);
    {
      torch::NoGradGuard ng;
      flat[i] = keep - h;
    }
    const double down = task_loss(task);
    {
      torch::NoGradGuard ng;
      flat[i] = keep;
    }
    const double numeric = (up - down) / (2.0 * h);
    const double analytic = g.view({-1})[i].item<double>();
    EXPECT_NEAR(analytic, numeric, 2e-3 + 0.02 * std::abs(numeric)) << what << " coordinate " << i;
  }
}

}  // namespace

TEST(TrainForward, ForwardHiddenEqualsTheCachedForward) {
  torch::NoGradGuard ng;
  auto model = tiny_llama();
  auto ids = torch::tensor({{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}}, torch::kInt64);
  ForwardInput in;
  in.ids = ids;
  auto hidden = model->forward_hidden(in);
  KvCache cache = model->new_cache(2, 8);
  auto out = model->forward_full(in, cache);
  EXPECT_TRUE(torch::allclose(model->head_logits(hidden), out.logits, 1e-5, 1e-5));
  // Right padding: a shorter row padded at the end has the same logits on its real positions.
  auto padded = torch::tensor({{1, 2, 3, 3, 3}}, torch::kInt64);
  ForwardInput pin;
  pin.ids = padded;
  auto ph = model->forward_hidden(pin);
  KvCache c2 = model->new_cache(1, 4);
  ForwardInput short_in;
  short_in.ids = torch::tensor({{1, 2, 3}}, torch::kInt64);
  auto ref = model->forward_full(short_in, c2).logits;
  EXPECT_TRUE(torch::allclose(model->head_logits(ph).narrow(1, 0, 3), ref, 1e-5, 1e-5));
}

TEST(LmTask, GradientsReachFullWeights) {
  auto model = tiny_llama();
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  expect_gradient_matches(task, model->mutable_weights().layers[1]->w_down, "layers.1.w_down");
  expect_gradient_matches(task, model->mutable_weights().layers[0]->wqkv, "layers.0.wqkv");
  expect_gradient_matches(task, model->mutable_weights().embed, "embed (tied head)");
}

TEST(LmTask, GradientsReachLoraFactors) {
  auto model = tiny_llama();
  LoraAdapter::Options lo;
  lo.rank = 2;
  lo.alpha = 4;
  lo.targets = {"q_proj", "v_proj", "down_proj"};
  auto lora = std::make_shared<LoraAdapter>(model->config(), lo);
  // B = 0 gives no gradient to A; start B small and nonzero so both factors are checked.
  {
    torch::NoGradGuard ng;
    for (auto& t : lora->parameters())
      if (t.size(1) == 2) t.normal_(0.0, 0.1);
  }
  LmTaskOptions opt;
  opt.lora = lora;
  LmTask task(model, toy_set(), opt);
  const LoraFactors* f = lora->find(1, LinearKind::Down);
  ASSERT_NE(f, nullptr);
  expect_gradient_matches(task, f->a, "lora A (layer 1 down_proj)");
  expect_gradient_matches(task, f->b, "lora B (layer 1 down_proj)");
  expect_gradient_matches(task, lora->find(0, LinearKind::Q)->b, "lora B (layer 0 q_proj)");
}

TEST(LmTask, GradientsReachSoftPromptsAndUnlikelihoodTerms) {
  auto model = tiny_llama();
  torch::Tensor sp = model->embed(torch::tensor({{5, 6, 7}}, torch::kInt64))[0].clone();
  LmTaskOptions opt;
  opt.soft_prompts = {sp};
  opt.terms = {LossTerm{"nll", "nll", 1.0}, LossTerm{"ul", "ul", 1.0}};
  auto set = toy_set();
  for (auto& e : set) {
    e.soft_prompt = 0;
    e.embeds_at = 1;  // after the first token, like a system slot after BOS
  }
  set[1].term = 1;
  set[3].term = 1;
  LmTask task(model, set, opt);
  expect_gradient_matches(task, sp, "soft prompt");
}

TEST(LmTask, ActivationCheckpointingGivesTheSameGradients) {
  auto run = [](bool ckpt) {
    auto model = tiny_llama();
    LoraAdapter::Options lo;
    lo.rank = 2;
    lo.dropout = 0.3;  // the recomputation must draw the same dropout masks
    lo.targets = {"q_proj", "up_proj"};
    auto lora = std::make_shared<LoraAdapter>(model->config(), lo);
    {
      torch::NoGradGuard ng;
      torch::manual_seed(1);  // the same B factors in both runs
      for (auto& t : lora->parameters())
        if (t.size(1) == 2) t.normal_(0.0, 0.1);
    }
    LmTaskOptions opt;
    opt.lora = lora;
    opt.train_full = true;
    opt.activation_checkpointing = ckpt;
    LmTask task(model, toy_set(), opt);
    auto params = task.parameters();
    for (auto& p : params) p.tensor.requires_grad_(true);
    std::vector<int64_t> all{0, 1, 2, 3};
    torch::manual_seed(7);
    task.forward_backward(all, task.units(all));
    std::vector<torch::Tensor> grads;
    for (auto& p : params) grads.push_back(p.tensor.grad().clone());
    return grads;
  };
  auto a = run(false), b = run(true);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-4, 1e-6)) << "parameter " << i << " differs by "
                                                         << (a[i] - b[i]).abs().max().item<float>();
}

TEST(LmTask, ZeroLoraLeavesLogitsUnchanged) {
  torch::NoGradGuard ng;
  auto model = tiny_llama();
  LoraAdapter::Options lo;
  lo.rank = 4;
  lo.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"};
  auto lora = std::make_shared<LoraAdapter>(model->config(), lo);  // PEFT init: B = 0
  ForwardHooks hooks;
  hooks.loras = {LoraBinding{lora, {}}};
  ForwardInput in;
  in.ids = torch::tensor({{1, 2, 3, 4}}, torch::kInt64);
  auto with = model->head_logits(model->forward_hidden(in, &hooks), &hooks);
  auto without = model->head_logits(model->forward_hidden(in));
  EXPECT_TRUE(torch::equal(with, without));
}

TEST(Trainer, LossFallsOnAToySet) {
  auto model = tiny_llama();
  LoraAdapter::Options lo;
  lo.rank = 4;
  lo.alpha = 8;
  lo.targets = {"q_proj", "v_proj", "up_proj", "down_proj"};
  auto lora = std::make_shared<LoraAdapter>(model->config(), lo);
  LmTaskOptions opt;
  opt.lora = lora;
  LmTask task(model, toy_set(), opt);
  const double before = task_loss(task);
  TrainLoopConfig cfg;
  cfg.epochs = 30;
  cfg.batch_size = 2;
  cfg.optim.lr = 2e-2;
  Trainer trainer(task, cfg, temp_dir("falls"), "h");
  auto result = trainer.run(false);
  const double after = task_loss(task);
  EXPECT_EQ(result.steps, 60);
  EXPECT_LT(after, 0.5 * before) << "loss " << before << " -> " << after;
}

TEST(Trainer, WritesTheLogAndLossCurve) {
  auto model = tiny_llama();
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  TrainLoopConfig cfg;
  cfg.epochs = 2;
  cfg.batch_size = 2;
  cfg.micro_batch_size = 1;
  cfg.optim.lr = 1e-3;
  const std::string dir = temp_dir("log");
  Trainer trainer(task, cfg, dir, "h");
  trainer.run(false);
  std::ifstream log(dir + "/train_log.jsonl");
  int lines = 0;
  for (std::string line; std::getline(log, line);) ++lines;
  EXPECT_EQ(lines, 4);
  std::ifstream svg(dir + "/loss_curve.svg");
  std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("<svg"), std::string::npos);
  EXPECT_NE(text.find("polyline"), std::string::npos);
}

TEST(Trainer, AccumulationEqualsOneBigBatch) {
  auto run = [](int64_t micro) {
    auto model = tiny_llama();
    LmTaskOptions opt;
    opt.train_full = true;
    LmTask task(model, toy_set(), opt);
    TrainLoopConfig cfg;
    cfg.epochs = 2;
    cfg.batch_size = 4;
    cfg.micro_batch_size = micro;
    cfg.optim.lr = 1e-2;
    Trainer trainer(task, cfg, temp_dir("accum" + std::to_string(micro)), "h");
    trainer.run(false);
    return model->weights().layers[1]->w_gate_up.clone();
  };
  auto a = run(4), b = run(1);
  EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-6)) << (a - b).abs().max().item<float>();
}

TEST(Trainer, ResumedRunEqualsAnUninterruptedOne) {
  auto run = [](int64_t stop_after, const std::string& dir, bool resume_after) {
    auto model = tiny_llama();
    LoraAdapter::Options lo;
    lo.rank = 2;
    lo.dropout = 0.2;  // the per-step RNG reseed must make dropout reproducible across a resume
    lo.targets = {"q_proj", "v_proj"};
    auto lora = std::make_shared<LoraAdapter>(model->config(), lo);
    LmTaskOptions opt;
    opt.lora = lora;
    opt.train_full = true;
    LmTask task(model, toy_set(), opt);
    TrainLoopConfig cfg;
    cfg.epochs = 3;
    cfg.batch_size = 2;
    cfg.checkpoint_every = 2;
    cfg.stop_after = stop_after;
    cfg.optim.lr = 5e-3;
    cfg.optim.warmup_steps = 2;
    cfg.optim.schedule = "cosine";
    cfg.seed = 42;
    {
      Trainer t(task, cfg, dir, "h");
      auto r = t.run(false);
      EXPECT_EQ(r.stopped_early, stop_after > 0);
    }
    if (resume_after) {
      // A new process would rebuild the task from scratch: do the same.
      auto model2 = tiny_llama();
      auto lora2 = std::make_shared<LoraAdapter>(model2->config(), lo);
      LmTaskOptions opt2;
      opt2.lora = lora2;
      opt2.train_full = true;
      LmTask task2(model2, toy_set(), opt2);
      cfg.stop_after = 0;
      Trainer t(task2, cfg, dir, "h");
      auto r = t.run(true);
      EXPECT_EQ(r.resumed_from, stop_after);
      EXPECT_EQ(r.steps, 6);
      std::vector<torch::Tensor> out;
      for (auto& p : task2.parameters()) out.push_back(p.tensor.detach().clone());
      return out;
    }
    std::vector<torch::Tensor> out;
    for (auto& p : task.parameters()) out.push_back(p.tensor.detach().clone());
    return out;
  };
  auto whole = run(0, temp_dir("whole"), false);
  auto resumed = run(3, temp_dir("resumed"), true);
  ASSERT_EQ(whole.size(), resumed.size());
  for (size_t i = 0; i < whole.size(); ++i)
    EXPECT_TRUE(torch::allclose(whole[i], resumed[i], 1e-6, 1e-7))
        << "parameter " << i << " differs by " << (whole[i] - resumed[i]).abs().max().item<float>();
}

TEST(Trainer, ResumeWithAnotherConfigIsRefused) {
  auto model = tiny_llama();
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  TrainLoopConfig cfg;
  cfg.batch_size = 2;
  cfg.checkpoint_every = 1;
  cfg.stop_after = 1;
  const std::string dir = temp_dir("other_config");
  Trainer(task, cfg, dir, "config-A").run(false);
  cfg.stop_after = 0;
  Trainer t(task, cfg, dir, "config-B");
  EXPECT_NE(error_of([&] { t.run(true); }).find("another resolved config"), std::string::npos);
}

TEST(Trainer, NanLossStopsNamingTheStep) {
  auto model = tiny_llama();
  {
    torch::NoGradGuard ng;
    model->mutable_weights().layers[1]->w_down[0][0] = std::numeric_limits<float>::quiet_NaN();
  }
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  TrainLoopConfig cfg;
  cfg.batch_size = 2;
  Trainer t(task, cfg, temp_dir("nan"), "h");
  const std::string msg = error_of([&] { t.run(false); });
  EXPECT_NE(msg.find("diverged"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step 1"), std::string::npos) << msg;
}

TEST(Trainer, ScheduleWarmsUpAndDecays) {
  auto model = tiny_llama();
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  TrainLoopConfig cfg;
  cfg.batch_size = 1;
  cfg.epochs = 3;  // 12 steps
  cfg.optim.lr = 1.0e-2;
  cfg.optim.warmup_steps = 2;
  cfg.optim.schedule = "linear";
  Trainer t(task, cfg, temp_dir("sched"), "h");
  EXPECT_EQ(t.total_steps(), 12);
  EXPECT_DOUBLE_EQ(t.lr_at(1), 0.0);
  EXPECT_DOUBLE_EQ(t.lr_at(2), 0.5e-2);
  EXPECT_DOUBLE_EQ(t.lr_at(3), 1.0e-2);
  EXPECT_NEAR(t.lr_at(12), 1.0e-2 * 1.0 / 10.0, 1e-12);
  // Every epoch visits every example once, in a seeded order.
  std::vector<int64_t> seen;
  for (int64_t s = 1; s <= 4; ++s)
    for (int64_t i : t.batch_at(s)) seen.push_back(i);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST(ProbeTask, GradientMatchesAndSeparatesClasses) {
  torch::manual_seed(3);
  auto x = torch::randn({40, 6});
  auto y = (x.select(1, 2) + 0.5 * x.select(1, 4) > 0).to(torch::kFloat32);
  ProbeTask task(x * 5.0 + 2.0, y);  // raw features with scale and offset
  TrainLoopConfig cfg;
  cfg.epochs = 200;
  cfg.batch_size = 40;
  cfg.optim.lr = 0.05;
  cfg.optim.schedule = "constant";
  Trainer t(task, cfg, temp_dir("probe"), "h");
  t.run(false);
  auto p = task.predict(x * 5.0 + 2.0);
  std::vector<double> s(p.data_ptr<float>(), p.data_ptr<float>() + 40);
  std::vector<int> l;
  for (int64_t i = 0; i < 40; ++i) l.push_back(y[i].item<float>() > 0.5f);
  EXPECT_GT(auroc(s, l), 0.97);
}

TEST(ProbeTask, AurocAndLifCalibration) {
  EXPECT_DOUBLE_EQ(auroc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(auroc({0.5, 0.5}, {0, 1}), 0.5);
  // Constant input 0.2 fires whenever v >= theta; theta above the fixed point tau * I never fires.
  std::vector<std::vector<float>> seq{std::vector<float>(100, 0.2f)};
  EXPECT_EQ(lif_spikes(seq[0], 8.0, 8.0 * 0.2 + 0.01, 0.6), 0);
  EXPECT_GT(lif_spikes(seq[0], 8.0, 1.0, 0.6), 10);
  const double theta = calibrate_lif_theta(seq, 8.0, 0.6, 0.05);
  EXPECT_LE(lif_fire_rate(seq, 8.0, theta, 0.6), 0.05);
  EXPECT_GT(lif_fire_rate(seq, 8.0, theta * 0.9, 0.6), 0.05);
}

TEST(ProbeTask, LifCalibrationOnTokenChangingSpikes) {
  // Two sequences with the same inputs; only every fourth token of the second would change the greedy
  // choice. The marked rate counts spikes at marked tokens only, so it is at most the fire rate and the
  // flip-rate objective allows a lower threshold than the fire-rate one.
  std::vector<std::vector<float>> seq{std::vector<float>(64, 0.3f), std::vector<float>(64, 0.3f)};
  std::vector<std::vector<uint8_t>> marks{std::vector<uint8_t>(64, 0), std::vector<uint8_t>(64, 0)};
  for (size_t t = 0; t < 64; t += 4) marks[1][t] = 1;
  for (double theta : {0.2, 1.0, 2.0}) {
    EXPECT_LE(lif_marked_rate(seq, marks, 8.0, theta, 0.6), lif_fire_rate(seq, 8.0, theta, 0.6));
    // All marked: equal to the fire rate.
    std::vector<std::vector<uint8_t>> all{std::vector<uint8_t>(64, 1), std::vector<uint8_t>(64, 1)};
    EXPECT_DOUBLE_EQ(lif_marked_rate(seq, all, 8.0, theta, 0.6), lif_fire_rate(seq, 8.0, theta, 0.6));
  }
  // theta 0.2 < 0.3: every token fires; 16 of the 128 tokens are marked.
  EXPECT_DOUBLE_EQ(lif_marked_rate(seq, marks, 8.0, 0.2, 0.6), 16.0 / 128.0);
  const double by_fire = calibrate_lif_theta(seq, 8.0, 0.6, 0.1);
  const double by_flip = calibrate_lif_theta(seq, 8.0, 0.6, 0.1, &marks);
  EXPECT_LE(lif_marked_rate(seq, marks, 8.0, by_flip, 0.6), 0.1);
  EXPECT_LT(by_flip, by_fire);
  // Marks must match the inputs one for one.
  std::vector<std::vector<uint8_t>> short_marks{std::vector<uint8_t>(64, 0), std::vector<uint8_t>(3, 0)};
  EXPECT_THROW(lif_marked_rate(seq, short_marks, 8.0, 1.0, 0.6), Error);
}

TEST(ProbeTask, SparsestLifThetaKeepsTheRequestedShareOfTokenChanges) {
  // Constant input 0.3, every token marked: at theta 0.2 every token fires (rate 1); higher thresholds
  // fire less. Keeping half the changes gives a sparser gate that still changes at least half.
  std::vector<std::vector<float>> seq{std::vector<float>(64, 0.3f)};
  std::vector<std::vector<uint8_t>> all{std::vector<uint8_t>(64, 1)};
  ASSERT_DOUBLE_EQ(lif_marked_rate(seq, all, 8.0, 0.2, 0.6), 1.0);
  const double theta = sparsest_lif_theta(seq, all, 8.0, 0.6, 0.2, 0.5);
  EXPECT_GT(theta, 0.2);
  const double rate = lif_marked_rate(seq, all, 8.0, theta, 0.6);
  EXPECT_GE(rate, 0.5);
  EXPECT_LT(rate, 1.0);
  // keep 1 can only stay where every token fires; a threshold above the potential's bound (0.3 * tau
  // = 2.4) fires never, so the result stays below it.
  EXPECT_DOUBLE_EQ(lif_marked_rate(seq, all, 8.0, sparsest_lif_theta(seq, all, 8.0, 0.6, 0.2, 1.0), 0.6), 1.0);
  EXPECT_LT(sparsest_lif_theta(seq, all, 8.0, 0.6, 0.2, 0.01), 2.4 + 1e-9);
  // No marked spike at theta_lo: nothing to keep, theta_lo returned.
  std::vector<std::vector<uint8_t>> none{std::vector<uint8_t>(64, 0)};
  EXPECT_DOUBLE_EQ(sparsest_lif_theta(seq, none, 8.0, 0.6, 0.2, 0.9), 0.2);
  EXPECT_THROW(sparsest_lif_theta(seq, all, 8.0, 0.6, 0.2, 0.0), Error);
  EXPECT_THROW(sparsest_lif_theta(seq, all, 8.0, 0.6, 0.2, 1.5), Error);
}
