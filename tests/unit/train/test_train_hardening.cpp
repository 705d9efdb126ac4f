// Issue 15 for `safedec train --resume`: a run directory whose latest checkpoint is corrupt (a
// truncated params.safetensors, state.json that is not JSON or not a checkpoint state, a tensor
// retyped, NaN-filled or missing, a checkpoint written for another model) is refused with
// safedec::Error (exit 2) naming the file and what is wrong, never a JSON exception or a silent load;
// and the train config's `threads` follows the CLI's --threads cap, with FILE:LINE:COLUMN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/numbers.h"
#include "io/safetensors.h"
#include "model/causal_lm.h"
#include "support/tiny_llama.h"
#include "train/lm_task.h"
#include "train/pipeline.h"
#include "train/trainer.h"

using namespace safedec;
namespace fs = std::filesystem;

namespace {

LmExample example(const std::string& id, std::vector<int32_t> prompt, std::vector<int32_t> response) {
  LmExample e;
  e.id = id;
  e.ids = prompt;
  e.ids.insert(e.ids.end(), response.begin(), response.end());
  e.target.assign(e.ids.size(), 0);
  for (size_t t = prompt.size(); t < e.ids.size(); ++t) e.target[t] = 1;
  return e;
}

std::vector<LmExample> toy_set() {
  return {example("a", {1, 2, 3}, {4, 5, 6, 7}), example("b", {8, 9}, {10, 11}), example("c", {3, 2, 1}, {13, 14}),
          example("d", {20}, {21, 22, 23})};
}

TrainLoopConfig loop(int64_t stop_after) {
  TrainLoopConfig cfg;
  cfg.epochs = 2;
  cfg.batch_size = 2;
  cfg.checkpoint_every = 1;
  cfg.stop_after = stop_after;
  cfg.optim.lr = 1e-3;
  cfg.seed = 3;
  return cfg;
}

// A run directory stopped after step 2 (checkpoints step 1 and 2); returns the step-2 checkpoint dir.
std::string stopped_run(const std::string& name, std::string* run_dir) {
  *run_dir = ::testing::TempDir() + "/train_hard_" + name;
  fs::remove_all(*run_dir);
  auto model = test::tiny_llama();
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  Trainer(task, loop(2), *run_dir, "h").run(false);
  const std::string ckpt = *run_dir + "/checkpoints/step-00000002";
  EXPECT_TRUE(fs::is_regular_file(ckpt + "/state.json")) << ckpt;
  return ckpt;
}

// Resumes `run_dir` with a model of `hidden` size; returns the error ("" when it resumed).
std::string resume_error(const std::string& run_dir, int64_t hidden = 16) {
  std::shared_ptr<CausalLM> model = test::tiny_llama();
  if (hidden != 16) {
    ModelConfig c = model->config();
    c.hidden_size = hidden;
    model = CausalLM::random(c, 5, 0.2);
  }
  LmTaskOptions opt;
  opt.train_full = true;
  LmTask task(model, toy_set(), opt);
  Trainer t(task, loop(0), run_dir, "h");
  try {
    t.run(true);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_has(const std::string& e, const std::vector<std::string>& parts) {
  ASSERT_FALSE(e.empty()) << "resumed without an error";
  for (const auto& p : parts) EXPECT_NE(e.find(p), std::string::npos) << "'" << p << "' not in: " << e;
}

// Rewrites params.safetensors of `ckpt` with tensor `name` changed by `edit`.
void edit_params(const std::string& ckpt, const std::string& name,
                 const std::function<void(SafetensorsWriteTensor&, std::vector<uint8_t>&)>& edit) {
  const std::string path = ckpt + "/params.safetensors";
  std::vector<SafetensorsWriteTensor> w;
  std::vector<std::vector<uint8_t>> bytes;
  {
    auto f = SafetensorsFile::open(path);
    bytes.reserve(f->tensors().size());
    for (const auto& t : f->tensors()) {
      bytes.emplace_back(t.data, t.data + t.nbytes);
      w.push_back({t.name, t.dtype, t.shape, nullptr, t.nbytes});
      if (t.name == name) edit(w.back(), bytes.back());
      w.back().data = bytes.back().data();
      w.back().nbytes = bytes.back().size();
    }
  }
  write_safetensors(path, w);
}

std::string first_param(const std::string& ckpt) {
  auto f = SafetensorsFile::open(ckpt + "/params.safetensors");
  return f->tensors().front().name;
}

}  // namespace

TEST(TrainHardening, AnIntactCheckpointResumes) {
  std::string run;
  stopped_run("intact", &run);
  EXPECT_EQ(resume_error(run), "");
}

TEST(TrainHardening, TruncatedParamsAreRefusedNamingTheFile) {
  std::string run;
  const std::string ckpt = stopped_run("truncated", &run);
  const std::string p = ckpt + "/params.safetensors";
  fs::resize_file(p, fs::file_size(p) - 100);
  expect_has(resume_error(run), {p});
}

TEST(TrainHardening, StateJsonThatIsNotACheckpointStateIsRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"step\": 2, \"log\": [", "not valid JSON"},
      {"[1, 2, 3]", "is not a JSON object"},
      {"{\"step\": \"two\", \"log\": [], \"config_hash\": \"h\"}", "integer `step`"},
      {"{\"step\": 2, \"config_hash\": \"h\"}", "`log` list"},
      {"{\"step\": 2, \"log\": []}", "`config_hash`"},
      {"{\"step\": 2, \"log\": [{\"step\": \"x\"}], \"config_hash\": \"h\"}", "malformed `log` entry"},
      {"{\"step\": 99, \"log\": [], \"config_hash\": \"h\"}", "at step 99"},
  };
  int i = 0;
  for (const auto& [text, piece] : cases) {
    std::string run;
    const std::string ckpt = stopped_run("state" + std::to_string(i++), &run);
    std::ofstream(ckpt + "/state.json") << text;
    const std::string e = resume_error(run);
    expect_has(e, {piece});
    if (piece != "at step 99") EXPECT_NE(e.find(ckpt + "/state.json"), std::string::npos) << e;
  }
}

TEST(TrainHardening, RetypedNanOrMissingTensorsAreRefusedNamingFileAndTensor) {
  {
    std::string run;
    const std::string ckpt = stopped_run("retyped", &run);
    const std::string name = first_param(ckpt);
    edit_params(ckpt, name, [](SafetensorsWriteTensor& t, std::vector<uint8_t>&) { t.dtype = SafetensorsDtype::I32; });
    expect_has(resume_error(run), {ckpt + "/params.safetensors", "'" + name + "'", "stored as I32"});
  }
  {
    std::string run;
    const std::string ckpt = stopped_run("nan", &run);
    const std::string name = first_param(ckpt);
    edit_params(ckpt, name, [](SafetensorsWriteTensor&, std::vector<uint8_t>& b) {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(b.data(), &nan, 4);
    });
    expect_has(resume_error(run), {ckpt + "/params.safetensors", "'" + name + "'", "NaN/Inf"});
  }
  {
    std::string run;
    const std::string ckpt = stopped_run("missing", &run);
    fs::remove(ckpt + "/adam_v.safetensors");
    expect_has(resume_error(run), {ckpt + "/adam_v.safetensors"});
  }
}

TEST(TrainHardening, ACheckpointOfAnotherModelIsRefused) {
  std::string run;
  const std::string ckpt = stopped_run("other_model", &run);
  expect_has(resume_error(run, /*hidden=*/24), {ckpt + "/params.safetensors", "written for another model"});
}

TEST(TrainHardening, ConfigThreadsFollowTheCliCap) {
  const std::string path = ::testing::TempDir() + "/train_hard_threads.yaml";
  for (const std::string& value : {std::string("1024"), std::to_string(max_threads() + 1), std::string("-1")}) {
    std::ofstream(path) << "pipeline: risk_probe\nmodel: nowhere\nseed: 1\nthreads: " << value << "\n";
    TrainRunOptions o;
    o.out = ::testing::TempDir() + "/train_hard_threads_run";
    try {
      run_train_config(path, o);
      ADD_FAILURE() << "threads " << value << " accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(path + ":4:10"), std::string::npos) << m;
      EXPECT_NE(m.find("`threads` must be in [0, " + std::to_string(max_threads()) + "]"), std::string::npos) << m;
    }
    EXPECT_FALSE(fs::exists(o.out)) << "a refused config wrote its run directory";
  }
}
