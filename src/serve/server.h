// `safedec serve`: an OpenAI-compatible HTTP server (cpp-httplib) over one loaded model, with the
// safety method chosen per request (the `safedec` object of a request, default: the server's
// configured method). Endpoints: POST /v1/chat/completions (stream: true = server-sent events),
// POST /v1/completions, GET /v1/models, GET /health. Requests decode in the continuous-batching
// Scheduler. Prompts and completions are never logged.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "decoding/model_bundle.h"
#include "decoding/strategies/method_config.h"
#include "serve/api.h"
#include "serve/scheduler.h"

namespace httplib {
class Server;
}

namespace safedec {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                 // 0 = any free port (printed when listening)
  std::string api_key;             // "" = no authentication
  int64_t max_batch = 16;          // rows decoding at once
  int64_t max_queue = 64;          // requests waiting beyond the batch (more -> 429)
  size_t max_body_bytes = 1 << 20;  // larger bodies -> 400
  int64_t default_max_tokens = 256;  // chat requests without max_tokens (capped by the context)
};

class Server {
 public:
  // `bundle` and `default_method` must outlive the server.
  Server(const ModelBundle& bundle, MethodConfig default_method, ServeOptions options);
  ~Server();

  // Binds, calls on_listening(port), serves until shutdown() finished draining. Throws if it cannot bind.
  void run(const std::function<void(int)>& on_listening = {});
  // Starts a graceful stop (thread-safe): new requests get 503, queued and running ones finish,
  // then run() returns.
  void shutdown();

  // Resolves a request's method choice to a factory (null for plain); throws ApiError (400).
  std::shared_ptr<const MethodFactory> method_for(const MethodChoice& choice, std::string* label);

 private:
  void install_routes();
  std::shared_ptr<ServeJob> make_job(const ServeRequest& r, std::string* method_label);

  const ModelBundle& bundle_;
  MethodConfig default_method_;
  ServeOptions options_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<httplib::Server> http_;
  std::mutex factories_mu_;
  std::map<std::string, std::shared_ptr<const MethodFactory>> factories_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> in_flight_{0};  // HTTP requests between submit and their last byte
  std::atomic<int64_t> next_id_{0};
  std::thread stopper_;  // shutdown(): drains, then stops the HTTP server
  std::string model_id_;
  int64_t created_ = 0;
};

}  // namespace safedec
