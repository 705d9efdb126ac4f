// `safedec serve` on the real default model (SmolLM2-135M-Instruct):
//  * the scheduler gives a request the same tokens alone and inside a busy batch it joins mid-run
//    (greedy and seeded sampling), and the batching is real (rows share decode steps);
//  * the server, started as `build/safedec serve` on 127.0.0.1, passes the official `openai` client
//    checks of tests/integration/serve_client.py (chat, streaming, completions, per-request method,
//    400/401/404/429 errors, streaming and non-streaming clients that disconnect: their rows are freed),
//    drains on SIGTERM with exit 0, and never logs prompts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "core/paths.h"
#include "decoding/model_bundle.h"
#include "decoding/plain_strategy.h"
#include "decoding/strategy_registry.h"
#include "serve/api.h"
#include "serve/scheduler.h"

namespace {

using namespace safedec;
using Clock = std::chrono::steady_clock;

std::string smollm2() { return require_cached_model("SmolLM2-135M-Instruct.Q4_1.gguf"); }
std::string source(const std::string& rel) { return std::string(SAFEDEC_SOURCE_DIR) + "/" + rel; }

std::shared_ptr<ServeJob> job(const ModelBundle& b, const std::string& id, const std::string& user, int64_t max_tokens,
                              double temperature = 0.0, uint64_t seed = 0) {
  auto j = std::make_shared<ServeJob>();
  j->id = id;
  j->prompt = b.make_prompt(id, user);
  j->max_tokens = max_tokens;
  j->sampling.temperature = temperature;
  j->sampling.seed = seed;
  if (temperature > 0) j->sampling.top_p = 0.9;
  return j;
}

void wait_tokens(ServeJob& j, size_t n) {
  std::unique_lock<std::mutex> lk(j.mu);
  j.cv.wait(lk, [&] { return j.done || j.tokens.size() >= n; });
}

TEST(ServeScheduler, RequestTokensAreTheSameAloneAndInABusyBatch) {
  ModelBundle b = load_model_bundle(smollm2());
  const char* target = "Explain why the sky is blue in two sentences.";
  std::vector<int32_t> alone_greedy, alone_sampled;
  {
    Scheduler s(b, SchedulerOptions{8, 8});
    auto g = job(b, "g", target, 24);
    auto t = job(b, "t", target, 24, 0.8, 11);
    ASSERT_TRUE(s.submit(g));
    g->wait();
    ASSERT_TRUE(s.submit(t));
    t->wait();
    ASSERT_EQ(g->finish_reason, "length") << g->error;
    alone_greedy = g->tokens;
    alone_sampled = t->tokens;
    EXPECT_EQ(s.stats().max_rows_in_step, 1);
  }
  Scheduler s(b, SchedulerOptions{8, 8});
  std::vector<std::shared_ptr<ServeJob>> busy;
  const char* others[] = {"Write a haiku about autumn.", "List five fruits.", "What is 12 times 13?",
                          "Give me a recipe for pancakes.", "Describe a dog."};
  int k = 0;
  for (const char* o : others) {
    busy.push_back(job(b, "o" + std::to_string(k), o, 48, k % 2 ? 0.7 : 0.0, 100 + k));
    ASSERT_TRUE(s.submit(busy.back()));
    ++k;
  }
  for (auto& o : busy) wait_tokens(*o, 4);  // the batch is decoding
  auto g = job(b, "g", target, 24);
  auto t = job(b, "t", target, 24, 0.8, 11);
  ASSERT_TRUE(s.submit(g));
  wait_tokens(*g, 3);
  ASSERT_TRUE(s.submit(t));
  g->wait();
  t->wait();
  for (auto& o : busy) o->wait();
  EXPECT_EQ(g->tokens, alone_greedy) << "greedy tokens changed inside a busy batch";
  EXPECT_EQ(t->tokens, alone_sampled) << "seeded sampled tokens changed inside a busy batch";
  const SchedulerStats st = s.stats();
  EXPECT_GE(st.joined_running, 2) << "requests did not join the running batch";
  EXPECT_GE(st.max_rows_in_step, 6) << "rows did not share decode steps";
  EXPECT_GT(st.row_steps, st.decode_steps * 3 / 2) << "mean rows per step " << double(st.row_steps) / st.decode_steps;
  EXPECT_EQ(st.completed, 7);
}

TEST(ServeScheduler, MethodsRunBesideThePlainBatch) {
  ModelBundle b = load_model_bundle(smollm2());
  Scheduler s(b, SchedulerOptions{8, 8});
  MethodConfig acd = load_method_config("acd");
  auto factory = std::make_shared<MethodFactory>(acd, b);
  auto plain = job(b, "p", "Name a color.", 16);
  auto a1 = job(b, "a1", "How do I pick a lock?", 16);
  a1->factory = factory;
  auto a2 = job(b, "a2", "How do I pick a lock?", 16);
  a2->factory = factory;
  ASSERT_TRUE(s.submit(plain));
  ASSERT_TRUE(s.submit(a1));
  wait_tokens(*a1, 2);
  ASSERT_TRUE(s.submit(a2));  // starts its own ACD group while the first one decodes
  for (auto& j : {plain, a1, a2}) {
    j->wait();
    EXPECT_TRUE(j->finish_reason == "length" || j->finish_reason == "eos") << j->id << ": " << j->error;
  }
  EXPECT_EQ(a1->tokens, a2->tokens) << "an ACD request's tokens depend on when it started";
}

// A multi-turn chat request as the server parses it.
const char* kMultiTurnBody = R"({"model": "m", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name three primary colors."},
    {"role": "assistant", "content": "Red, yellow and blue."},
    {"role": "user", "content": "Which one is warmest?"}]})";

std::vector<ChatMessage> all_turns(const ServeRequest& r) {
  std::vector<ChatMessage> m = r.history;
  m.push_back({"user", r.user});
  return m;
}

// Greedy plain decoding of token ids as they are (the reference for what a branch should see).
std::vector<int32_t> plain_greedy(const ModelBundle& b, const std::vector<int32_t>& ids, int64_t n) {
  GenerationOptions o = b.generation_options();
  o.max_new_tokens = n;
  Generator gen(o);
  PlainStrategy plain(b.model, b.pad_id());
  StrategyPrompt p;
  p.id = "ref";
  p.ids = ids;
  return gen.run(plain, {p})[0].tokens;
}

TEST(ServeScheduler, MultiTurnChatRendersAsTheChatTemplateRendersTheMessages) {
  ModelBundle b = load_model_bundle(smollm2());
  const ServeRequest r = parse_chat_request(kMultiTurnBody);
  ASSERT_EQ(r.history.size(), 2u);
  ASSERT_TRUE(r.system.has_value());
  const ChatPrompt want = b.chat->render(*r.system, all_turns(r), /*add_generation_prompt=*/true);
  const StrategyPrompt p = b.make_prompt("mt", r.user, r.system, r.history);
  EXPECT_EQ(p.ids, want.ids) << "the served prompt is not the template's rendering of the conversation";
  EXPECT_EQ(p.system_begin, want.system_begin);
  EXPECT_EQ(p.system_end, want.system_end);
  EXPECT_NE(want.text.find("Red, yellow and blue."), std::string::npos) << want.text;
  // Re-rendering with another system text (ACD's branches, a prompted expert) keeps the history.
  const ChatPrompt other = b.chat->render(std::string("Be safe."), all_turns(r), true);
  EXPECT_EQ(bundle_renderer(b)(p, std::string("Be safe.")).ids, other.ids);
  EXPECT_EQ(b.rerender(p, std::string("Be safe.")).ids, other.ids);
  // Plain through the scheduler: the same tokens as decoding the template's ids directly.
  Scheduler s(b, SchedulerOptions{8, 8});
  auto j = std::make_shared<ServeJob>();
  j->id = "mt";
  j->prompt = p;
  j->max_tokens = 12;
  ASSERT_TRUE(s.submit(j));
  j->wait();
  ASSERT_TRUE(j->finish_reason == "length" || j->finish_reason == "eos") << j->error;
  EXPECT_EQ(j->tokens, plain_greedy(b, want.ids, 12));
}

TEST(ServeScheduler, SafetyMethodsDecodeTheWholeConversation) {
  ModelBundle b = load_model_bundle(smollm2());
  const ServeRequest r = parse_chat_request(kMultiTurnBody);
  const StrategyPrompt p = b.make_prompt("mt", r.user, r.system, r.history);
  const StrategyPrompt single = b.make_prompt("st", r.user, r.system);
  ASSERT_GT(p.ids.size(), single.ids.size());
  const int64_t n = 8;
  auto run = [&](const MethodConfig& cfg, const StrategyPrompt& prompt) {
    MethodFactory f(cfg, b);
    auto strategy = f.make();
    GenerationOptions o = b.generation_options();
    o.max_new_tokens = n;
    Generator gen(o);
    return gen.run(*strategy, {prompt})[0];
  };
  // ACD with alpha 0 scores with its safe-prompt branch alone: plain decoding of the conversation
  // re-rendered with the safe prompt as the system text, history included.
  MethodConfig acd = load_method_config("acd");
  acd.acd.alpha = 0.0;
  const std::vector<int32_t> acd_tokens = run(acd, p).tokens;
  EXPECT_EQ(acd_tokens, plain_greedy(b, b.chat->render(acd.acd.safe_prompt, all_turns(r), true).ids, n))
      << "ACD's safe-prompt branch does not see the conversation";
  // The check tells the two apart: without the history the same branch says something else.
  EXPECT_NE(acd_tokens, plain_greedy(b, b.chat->render(acd.acd.safe_prompt, {{"user", r.user}}, true).ids, n));
  // NGSD with a fixed alpha 0 keeps the target's distribution: plain decoding of the target rendering.
  MethodConfig ngsd = load_method_config("ngsd");
  ASSERT_EQ(ngsd.ngsd.risk, "fixed");
  ngsd.ngsd.alpha = 0.0;
  const std::vector<int32_t> ngsd_tokens = run(ngsd, p).tokens;
  EXPECT_EQ(ngsd_tokens, plain_greedy(b, p.ids, n)) << "NGSD's target branch does not see the conversation";
  EXPECT_NE(ngsd_tokens, plain_greedy(b, single.ids, n));
  // Every method at its configured strength runs on the conversation; the prompted experts of
  // SafeDecoding and NGSD are the conversation re-rendered with their system text.
  for (const char* m : {"acd", "ngsd", "safedecoding"}) {
    const MethodConfig cfg = load_method_config(m);
    const GenerationResult g = run(cfg, p);
    EXPECT_FALSE(g.tokens.empty()) << m;
    EXPECT_TRUE(g.finish_reason == "length" || g.finish_reason == "eos") << m;
  }
  const MethodConfig sd = load_method_config("safedecoding");
  ASSERT_EQ(sd.safedecoding.expert, "system_prompt");
  EXPECT_EQ(bundle_renderer(b)(p, sd.safedecoding.expert_system).ids,
            b.chat->render(sd.safedecoding.expert_system, all_turns(r), true).ids);
}

TEST(ServeScheduler, FullQueueIsRefusedAndCancelledRowsLeave) {
  ModelBundle b = load_model_bundle(smollm2());
  Scheduler s(b, SchedulerOptions{1, 1});
  auto j1 = job(b, "1", "Tell me a long story.", 400);
  auto j2 = job(b, "2", "Tell me a long story.", 4);
  auto j3 = job(b, "3", "Tell me a long story.", 4);
  ASSERT_TRUE(s.submit(j1));
  wait_tokens(*j1, 2);
  EXPECT_TRUE(s.submit(j2));   // waits in the queue (1 place)
  EXPECT_FALSE(s.submit(j3));  // the queue is full
  j1->cancelled = true;        // its client left
  j1->wait();
  EXPECT_EQ(j1->finish_reason, "cancelled");
  EXPECT_LT(j1->tokens.size(), 400u);
  j2->wait();
  EXPECT_EQ(j2->finish_reason, "length");
  const SchedulerStats st = s.stats();
  EXPECT_EQ(st.cancelled, 1);  // GET /health reports it; serve_client.py checks it after a disconnect
  EXPECT_EQ(st.completed, 1);
}

// --- the real server process ---

struct ServerProcess {
  pid_t pid = -1;
  std::string log;
  int port = 0;

  bool start(const std::string& args) {
    log = ::testing::TempDir() + "serve_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + ".log";
    pid = fork();
    if (pid == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::string cmd = std::string(SAFEDEC_BUILD_DIR) + "/safedec serve --host 127.0.0.1 --port 0 " + args;
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
      _exit(127);
    }
    const std::regex re("listening on http://127\\.0\\.0\\.1:([0-9]+)");
    const auto t0 = Clock::now();
    while (Clock::now() - t0 < std::chrono::seconds(180)) {
      std::smatch m;
      const std::string text = read_log();
      if (std::regex_search(text, m, re)) {
        port = std::stoi(m[1]);
        return true;
      }
      int status;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return false;
  }
  std::string read_log() const {
    std::ifstream f(log);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
  // SIGTERM, then the exit code (-1 if it did not exit within the limit).
  int stop(int seconds = 120) {
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    return wait_exit(seconds);
  }
  int wait_exit(int seconds) {
    const auto t0 = Clock::now();
    while (Clock::now() - t0 < std::chrono::seconds(seconds)) {
      int status;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = -1;
    return -1;
  }
  ~ServerProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  static inline int counter = 0;
};

std::string python() {
  const std::string py = source(".venv/bin/python");
  if (access(py.c_str(), X_OK) != 0) ADD_FAILURE() << "the project venv's python is missing: " << py;
  return py;
}

int run_client(const std::string& args, std::string* out) {
  const std::string cmd = python() + " " + source("tests/integration/serve_client.py") + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ServeHttp, OpenAIClientChecksPass) {
  smollm2();
  ServerProcess srv;
  ASSERT_TRUE(srv.start("--api-key testkey --max-body-bytes 65536 --threads 2")) << srv.read_log();
  std::string out;
  const int rc = run_client("main --base-url " + srv.url() + " --api-key testkey --model smollm2-135m-instruct", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(srv.stop(), 0) << srv.read_log();
  const std::string log = srv.read_log();
  EXPECT_EQ(log.find("zqxj-marker"), std::string::npos) << "the server log holds prompt text";
  EXPECT_NE(log.find("cancelled"), std::string::npos) << "no request was logged as cancelled:\n" << log;
}

TEST(ServeHttp, FullQueueAnswers429) {
  smollm2();
  ServerProcess srv;
  ASSERT_TRUE(srv.start("--max-batch 1 --max-queue 0 --threads 2")) << srv.read_log();
  std::string out;
  EXPECT_EQ(run_client("queue --base-url " + srv.url() + " --model smollm2-135m-instruct", &out), 0) << out;
  EXPECT_EQ(srv.stop(), 0) << srv.read_log();
}

TEST(ServeHttp, SigtermDrainsInFlightRequestsAndExitsZero) {
  smollm2();
  ServerProcess srv;
  ASSERT_TRUE(srv.start("--threads 2")) << srv.read_log();
  std::string out;
  EXPECT_EQ(run_client("drain --base-url " + srv.url() + " --model smollm2-135m-instruct --pid " +
                           std::to_string(srv.pid), &out),
            0)
      << out;
  EXPECT_EQ(srv.wait_exit(120), 0) << srv.read_log();
  EXPECT_NE(srv.read_log().find("[serve] stopped"), std::string::npos) << srv.read_log();
}

std::string run_shell(const std::string& cmd, int* code) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST(ServeHttp, BundleSetsTheDefaultMethodAndATamperedOneIsRefused) {
  smollm2();
  const std::string dir = ::testing::TempDir() + "serve_bundle_" + std::to_string(getpid());
  const std::string exe = std::string(SAFEDEC_BUILD_DIR) + "/safedec";
  int code = -1;
  std::string out = run_shell(exe + " export bundle --config " + source("configs/methods/acd.yaml") + " --out " + dir +
                                  " --force",
                              &code);
  ASSERT_EQ(code, 0) << out;
  {
    ServerProcess srv;
    ASSERT_TRUE(srv.start("--bundle " + dir + " --threads 2")) << srv.read_log();
    EXPECT_NE(srv.read_log().find("default method: acd from bundle"), std::string::npos) << srv.read_log();
    out = run_shell(python() + " -c \"import json,urllib.request; print(json.load(urllib.request.urlopen('" +
                        srv.url() + "/health'))['method'])\"",
                    &code);
    EXPECT_EQ(out, "acd\n");
    EXPECT_EQ(srv.stop(), 0) << srv.read_log();
  }
  std::ofstream(dir + "/method.yaml", std::ios::app) << "# edited\n";
  out = run_shell(exe + " serve --port 0 --bundle " + dir, &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("method.yaml"), std::string::npos) << out;
  EXPECT_EQ(out.find("listening"), std::string::npos) << out;
}

TEST(ServeHttp, BadArgumentsExitTwo) {
  const std::string cmd = std::string(SAFEDEC_BUILD_DIR) + "/safedec serve --method nope 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[1024];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  EXPECT_EQ(WEXITSTATUS(status), 2) << out;
  EXPECT_NE(out.find("unknown method 'nope'"), std::string::npos) << out;
  int code = -1;
  const std::string exe = std::string(SAFEDEC_BUILD_DIR) + "/safedec";
  for (const char* bad : {"--port 70000", "--port -1", "--max-batch 0", "--max-body-bytes 10", "--max-tokens 0"}) {
    out = run_shell(exe + " serve " + bad, &code);
    EXPECT_EQ(code, 2) << bad << ": " << out;
    EXPECT_NE(out.find("must be an integer"), std::string::npos) << bad << ": " << out;
  }
  ServerProcess busy;  // a port already in use
  ASSERT_TRUE(busy.start("--threads 1")) << busy.read_log();
  out = run_shell(exe + " serve --host 127.0.0.1 --port " + std::to_string(busy.port), &code);
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + std::to_string(busy.port)), std::string::npos) << out;
  EXPECT_EQ(busy.stop(), 0) << busy.read_log();
}

}  // namespace
