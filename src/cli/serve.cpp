// `safedec serve`: the OpenAI-compatible HTTP server (src/serve). One model is loaded once; each
// request may pick a safety method and strength in its `safedec` object (default: --method /
// --method-config, or the method of a deployment bundle, --bundle). SIGTERM or SIGINT drains the
// queued and running requests, then exits 0.
#include <signal.h>
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "cli/flags.h"
#include "core/error.h"
#include "artifacts/harm_vector.h"
#include "decoding/methods.h"
#include "export/bundle.h"
#include "serve/server.h"

namespace safedec::cli {

namespace {

struct ServeArgs {
  std::string model = "smollm2-135m-instruct";
  std::string method, method_config, chat_template;
  std::string bundle;  // deployment bundle (src/export/bundle.h): method config + artifacts + HDR edit
  bool model_given = false;
  ServeOptions server;
  int threads = 0;
};

std::atomic<Server*> g_server{nullptr};
std::atomic<bool> g_stop_requested{false};

int run_serve(ServeArgs a) {
  SAFEDEC_CHECK(a.server.port >= 0 && a.server.port <= 65535, "--port must be in [0, 65535] (0 = any free port), got ",
                a.server.port);
  // SIGTERM/SIGINT are taken by one thread (sigwait) that starts the graceful stop; every other
  // thread (httplib's pool, the scheduler, torch's) inherits the blocked mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that disconnects must not kill the server
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    std::cerr << "[serve] signal " << sig << ": draining in-flight requests, then exiting\n";
    g_stop_requested = true;
    if (Server* s = g_server.load()) s->shutdown();
  }).detach();

  if (a.threads > 0) torch::set_num_threads(a.threads);
  std::string method = a.method, model = a.model, hdr, source;
  double hdr_lambda = 0.0;
  MethodConfig config;
  if (!a.bundle.empty()) {
    SAFEDEC_CHECK(a.method_config.empty(), "--bundle carries the method config; drop --method-config");
    const Bundle deploy = open_bundle(a.bundle, a.model_given ? a.model : "");  // every hash checked
    SAFEDEC_CHECK(method.empty() || method == deploy.method.method, "--method ", method,
                  " disagrees with the bundle's method ", deploy.method.method);
    config = deploy.method;
    method = config.method;
    model = deploy.model;
    hdr = deploy.hdr;
    hdr_lambda = deploy.hdr_lambda;
    source = "bundle " + deploy.dir;
  } else if (method.empty() && !a.method_config.empty()) {
    YAML::Node node;
    try {
      node = YAML::LoadFile(a.method_config);
    } catch (const YAML::Exception& e) {
      fail("cannot read the method config ", a.method_config, ": ", e.what());
    }
    if (node.IsMap() && node["method"]) method = node["method"].as<std::string>();
    SAFEDEC_CHECK(!method.empty(), "the method config ", a.method_config,
                  " has no `method:` key; add one or pass --method");
  }
  if (a.bundle.empty()) {
    if (method.empty()) method = "plain";
    check_method_name(method);
    config = load_method_config(method, a.method_config);
    source = config.source.empty() ? std::string("defaults") : config.source;
  }
  ModelBundle bundle = load_model_bundle(model, LoadOptions{}, a.chat_template);
  if (!hdr.empty()) {
    const int64_t n = apply_harm_vector(*bundle.model, hdr, hdr_lambda);
    std::cerr << "[serve] HDR: subtracted " << hdr_lambda << " x the bundle's harm vector from " << n << " tensors\n";
  }
  std::cerr << "[serve] model " << bundle.entry.name << " (" << bundle.model->config().architecture << ", "
            << bundle.model->config().n_layers << " layers, context " << bundle.model->config().context_length
            << "), chat template " << bundle.chat->family() << ", threads " << torch::get_num_threads() << "\n";
  Server server(bundle, config, a.server);
  std::cerr << "[serve] default method: " << method << " from " << source << "; batch "
            << a.server.max_batch << " rows, queue " << a.server.max_queue
            << (a.server.api_key.empty() ? "" : ", API key required") << "\n";
  g_server = &server;
  if (g_stop_requested) server.shutdown();
  server.run([&](int port) {
    std::cerr << "[serve] listening on http://" << a.server.host << ":" << port << " (OpenAI API under /v1)"
              << std::endl;
  });
  g_server = nullptr;
  std::cerr << "[serve] stopped\n";
  return 0;
}

}  // namespace

Runner add_serve(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API with per-request safety");
  cmd->add_option("--model", a->model, "Registered model name (configs/models) or a model path")->capture_default_str();
  cmd->add_option("--host", a->server.host, "Address to listen on")->capture_default_str();
  add_int_flag(cmd, "--port", a->server.port, 0, 65535, "TCP port (0 = any free port, printed at start)")
      ->capture_default_str();
  cmd->add_option("--method", a->method,
                  "Default method of requests without a `safedec` object: plain, safedecoding, ngsd, acd, steer "
                  "(default: the `method:` of --method-config, else plain)");
  cmd->add_option("--method-config", a->method_config,
                  "YAML config of the default method (default: configs/methods/<method>.yaml); other methods a "
                  "request names use their configs/methods/<method>.yaml");
  cmd->add_option("--bundle", a->bundle,
                  "Deployment bundle (safedec export bundle): its method (the default), artifacts and HDR edit, "
                  "hash-checked; a bundle whose files do not match their hashes is refused");
  cmd->add_option("--api-key", a->server.api_key, "Require 'Authorization: Bearer KEY' on /v1/ (401 without it)");
  add_int_flag(cmd, "--max-batch", a->server.max_batch, 1, kMaxBatchFlag, "Requests decoding at once")
      ->capture_default_str();
  add_int_flag(cmd, "--max-queue", a->server.max_queue, 0, 1 << 20, "Requests waiting beyond the batch; more get HTTP 429")
      ->capture_default_str();
  add_int_flag(cmd, "--max-body-bytes", a->server.max_body_bytes, 1024, int64_t{1} << 30,
               "Largest request body; larger ones get HTTP 400")
      ->capture_default_str();
  add_int_flag(cmd, "--max-tokens", a->server.default_max_tokens, 1, kMaxNewTokensFlag,
                  "max_tokens of chat requests that give none (capped by the context)")
      ->capture_default_str();
  cmd->add_option("--chat-template", a->chat_template, "Override the chat template family (chatml, llama2, llama3, gemma)");
  add_threads_flag(cmd, a->threads);
  return [a, cmd] {
    a->model_given = cmd->get_option("--model")->count() > 0;
    return run_serve(*a);
  };
}

}  // namespace safedec::cli
