#include "serve/server.h"

#include <dirent.h>
#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <thread>

#include "core/error.h"
#include "decoding/methods.h"

namespace safedec {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(dump_json(error_json(e)), "application/json");
}

std::string alpha_text(double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", a);
  return buf;
}

// Streaming state of one request (owned by the content provider and its releaser).
struct StreamState {
  std::shared_ptr<ServeJob> job;
  bool chat = true;
  bool include_usage = false;
  bool role_sent = false;
  size_t seen_tokens = 0;
  size_t hold = 0;  // bytes held back so a stop string is never streamed
  std::string sent;
  json base;        // id, object, created, model
  int64_t prompt_tokens = 0;
  Clock::time_point t0;
};


// Numeric host and port of a socket's local (peer = false) or remote end, as httplib writes them into
// Request::local_addr/local_port and remote_addr/remote_port.
bool socket_end(int fd, bool peer, std::string* host, int* port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return false;
  char h[NI_MAXHOST], p[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV))
    return false;
  *host = h;
  *port = std::atoi(p);
  return true;
}

// The accepted socket that carries `req`. httplib 0.11 gives handlers no handle on the connection, so
// look for the descriptor whose local and peer addresses are the request's (a TCP connection is
// unique by that 4-tuple); httplib keeps it open until the handler returns. -1 if none matches.
int connection_socket(const httplib::Request& req) {
  if (req.remote_port <= 0 || req.local_port <= 0) return -1;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    struct stat st {};
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    std::string host;
    int port = 0;
    if (!socket_end(static_cast<int>(fd), true, &host, &port) || port != req.remote_port || host != req.remote_addr)
      continue;
    if (!socket_end(static_cast<int>(fd), false, &host, &port) || port != req.local_port || host != req.local_addr)
      continue;
    found = static_cast<int>(fd);
    break;
  }
  closedir(dir);
  return found;
}

// Whether the client closed (or reset) the connection: a non-blocking peek that reads end-of-stream.
// Bytes waiting (a pipelined next request) or nothing yet both mean the client is still there.
bool client_gone(int fd) {
  char c;
  const ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  if (n > 0) return false;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

// Waits for a non-streaming job. Every 100 ms it checks the request's connection; a client that went
// away cancels the job, so its row leaves the batch at the next decode step (streams notice it when a
// write fails; a non-streaming response writes nothing before the end).
void wait_watching_client(ServeJob& job, const httplib::Request& req) {
  int fd = -2;  // looked up once, after the first wait, so quick requests never scan
  std::unique_lock<std::mutex> lk(job.mu);
  while (!job.cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return job.done; })) {
    if (job.cancelled) continue;
    lk.unlock();
    if (fd == -2) fd = connection_socket(req);
    if (fd >= 0 && client_gone(fd)) job.cancelled = true;
    lk.lock();
  }
}

}  // namespace

Server::Server(const ModelBundle& bundle, MethodConfig default_method, ServeOptions options)
    : bundle_(bundle), default_method_(std::move(default_method)), options_(std::move(options)) {
  SAFEDEC_CHECK(options_.max_body_bytes >= 1024, "the body size limit must be at least 1024 bytes, got ",
                options_.max_body_bytes);
  SAFEDEC_CHECK(options_.default_max_tokens >= 1, "the default max_tokens must be at least 1, got ",
                options_.default_max_tokens);
  model_id_ = bundle_.entry.name;
  created_ = static_cast<int64_t>(std::time(nullptr));
  try {  // load the default method's artifacts now, so a bad config fails at start
    std::string label;
    method_for(MethodChoice{}, &label);
  } catch (const ApiError& e) {
    fail("the server's method cannot be loaded: ", e.what());
  }
  scheduler_ = std::make_unique<Scheduler>(bundle_, SchedulerOptions{options_.max_batch, options_.max_queue});
  http_ = std::make_unique<httplib::Server>();
  const size_t threads = static_cast<size_t>(options_.max_batch + options_.max_queue + 8);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // httplib's default socket options add SO_REUSEPORT, which lets a second server bind a port that is in
  // use and silently share its connections; keep SO_REUSEADDR only (restarts reuse TIME_WAIT ports).
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof(yes));
  });
  http_->set_payload_max_length(std::max<size_t>(4 * options_.max_body_bytes, 1 << 22));
  install_routes();
}

Server::~Server() {
  if (stopper_.joinable()) stopper_.join();
}

std::shared_ptr<const MethodFactory> Server::method_for(const MethodChoice& choice, std::string* label) {
  const std::string method = choice.method.value_or(default_method_.method);
  try {
    check_method_name(method);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "invalid_request_error", "safedec.method", "unknown_method");
  }
  MethodConfig cfg;
  if (method == default_method_.method) {
    cfg = default_method_;
  } else {
    try {
      cfg = load_method_config(method);
    } catch (const Error& e) {
      throw ApiError(400, "method '" + method + "' is not available on this server: " + e.what(),
                     "invalid_request_error", "safedec.method", "method_unavailable");
    }
  }
  std::string key = method;
  if (choice.alpha) {
    const double a = *choice.alpha;
    try {
      if (method == "plain") {
        fail("'safedec.alpha' does not apply to method plain (it has no strength)");
      } else if (method == "ngsd") {
        SAFEDEC_CHECK(cfg.ngsd.risk == "fixed", "'safedec.alpha' sets NGSD's fixed risk, but this server's ngsd uses "
                                                "risk: ", cfg.ngsd.risk);
        cfg.ngsd.alpha = a;
        cfg.ngsd.validate();
      } else if (method == "acd") {
        cfg.acd.alpha = a;
        cfg.acd.validate();
      } else if (method == "safedecoding") {
        cfg.safedecoding.alpha = a;
        cfg.safedecoding.validate();
      } else if (method == "steer") {
        cfg.steer.alpha = a;
        cfg.steer.validate("safedec.alpha");
      } else {
        fail("'safedec.alpha' is not supported for method ", method);
      }
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "invalid_request_error", "safedec.alpha", "invalid_value");
    }
    key += " alpha=" + alpha_text(a);
  }
  if (label) *label = key;
  if (method == "plain") return nullptr;  // the shared plain batch needs no factory
  std::lock_guard<std::mutex> lk(factories_mu_);
  auto it = factories_.find(key);
  if (it != factories_.end()) return it->second;
  std::shared_ptr<const MethodFactory> f;
  try {
    f = std::make_shared<MethodFactory>(cfg, bundle_);
  } catch (const std::exception& e) {
    throw ApiError(400, "method '" + method + "' cannot run on this server: " + e.what(), "invalid_request_error",
                   "safedec.method", "method_unavailable");
  }
  std::cerr << "[serve] loaded method " << f->describe() << "\n";
  factories_[key] = f;
  return f;
}

std::shared_ptr<ServeJob> Server::make_job(const ServeRequest& r, std::string* label) {
  auto job = std::make_shared<ServeJob>();
  job->id = (r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(created_) + "-" + std::to_string(next_id_++);
  try {
    if (r.chat) {
      job->prompt = bundle_.make_prompt(job->id, r.user, r.system, r.history);
    } else {
      job->prompt.id = job->id;
      job->prompt.user = r.prompt;
      job->prompt.ids = bundle_.tokenizer->encode(r.prompt, /*add_special=*/true);
    }
  } catch (const Error& e) {
    throw ApiError(400, std::string("the prompt cannot be tokenized: ") + e.what(), "invalid_request_error",
                   r.chat ? "messages" : "prompt");
  }
  const int64_t n_prompt = static_cast<int64_t>(job->prompt.ids.size());
  const int64_t ctx = bundle_.model->config().context_length > 0 ? bundle_.model->config().context_length
                                                                  : int64_t(1) << 40;
  int64_t max_tokens = r.max_tokens;
  if (max_tokens < 0) max_tokens = std::min(options_.default_max_tokens, ctx - n_prompt);
  if (n_prompt >= ctx || n_prompt + max_tokens > ctx)
    throw ApiError(400,
                   "this model's maximum context length is " + std::to_string(ctx) + " tokens; the prompt has " +
                       std::to_string(n_prompt) + " tokens and max_tokens asks for " + std::to_string(max_tokens) +
                       " more. Shorten the prompt or lower max_tokens.",
                   "invalid_request_error", r.chat ? "messages" : "prompt", "context_length_exceeded");
  job->max_tokens = max_tokens;
  job->sampling = r.sampling;
  job->stop = r.stop;
  job->factory = method_for(r.safedec, label);
  return job;
}

void Server::install_routes() {
  httplib::Server& s = *http_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool api = req.path.rfind("/v1/", 0) == 0;
    if (api && !options_.api_key.empty() && req.get_header_value("Authorization") != "Bearer " + options_.api_key) {
      send_error(res, ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>' with "
                                    "the key the server was started with (--api-key)",
                               "invalid_request_error", "", "invalid_api_key"));
      return httplib::Server::HandlerResponse::Handled;
    }
    if (api && req.method == "POST" && draining_) {
      send_error(res, ApiError(503, "the server is shutting down and takes no new requests", "server_error", "",
                               "shutting_down"));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Errors httplib answers itself (unknown route, body over its hard limit) get OpenAI's error object.
  s.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413) {
      send_error(res, ApiError(400, "the request body is too large", "invalid_request_error", "", "body_too_large"));
    } else if (res.status == 404) {
      send_error(res, ApiError(404, "no route " + req.method + " " + req.path +
                                        "; safedec serve answers POST /v1/chat/completions, POST /v1/completions, "
                                        "GET /v1/models and GET /health",
                               "invalid_request_error", "", "not_found"));
    } else {
      send_error(res, ApiError(res.status, "HTTP error " + std::to_string(res.status), "invalid_request_error"));
    }
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const SchedulerStats st = scheduler_->stats();
    json j = {{"status", draining_ ? "draining" : "ok"},
              {"model", model_id_},
              {"method", default_method_.method},
              {"running", st.running},
              {"queued", st.queued},
              {"completed", st.completed},
              {"cancelled", st.cancelled},
              {"decode_steps", st.decode_steps},
              {"row_steps", st.row_steps},
              {"mean_rows_per_step", st.decode_steps > 0 ? double(st.row_steps) / double(st.decode_steps) : 0.0},
              {"max_rows_in_step", st.max_rows_in_step},
              {"joined_running", st.joined_running}};
    res.status = draining_ ? 503 : 200;
    res.set_content(dump_json(j), "application/json");
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json j = {{"object", "list"},
              {"data", json::array({{{"id", model_id_}, {"object", "model"}, {"created", created_},
                                     {"owned_by", "safedec"}}})}};
    res.set_content(dump_json(j), "application/json");
  });
  auto generate = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res) {
      const auto t0 = Clock::now();
      try {
        if (req.body.size() > options_.max_body_bytes)
          throw ApiError(400, "the request body has " + std::to_string(req.body.size()) + " bytes; the limit is " +
                                  std::to_string(options_.max_body_bytes) + " (--max-body-bytes)",
                         "invalid_request_error", "", "body_too_large");
        const ServeRequest r = chat ? parse_chat_request(req.body) : parse_completion_request(req.body);
        if (r.model != model_id_)
          throw ApiError(404, "model '" + r.model + "' is not served here; this server serves '" + model_id_ + "'",
                         "invalid_request_error", "model", "model_not_found");
        std::string label;
        auto job = make_job(r, &label);
        ++in_flight_;
        if (!scheduler_->submit(job)) {
          --in_flight_;
          throw ApiError(429, "the server is busy: its request queue is full (--max-queue " +
                                  std::to_string(options_.max_queue) + "); retry later",
                         "rate_limit_error", "", "queue_full");
        }
        json method_json = {{"method", r.safedec.method.value_or(default_method_.method)}};
        if (r.safedec.alpha) method_json["alpha"] = *r.safedec.alpha;
        const int64_t n_prompt = static_cast<int64_t>(job->prompt.ids.size());
        const json base = {{"id", job->id},
                           {"object", chat ? "chat.completion.chunk" : "text_completion"},
                           {"created", static_cast<int64_t>(std::time(nullptr))},
                           {"model", model_id_}};
        if (!r.stream) {
          wait_watching_client(*job, req);
          if (job->finish_reason == "error") {
            --in_flight_;
            send_error(res, ApiError(500, "decoding failed: " + job->error, "server_error", "", "decoding_failed"));
            return;
          }
          const int64_t n_out = static_cast<int64_t>(job->tokens.size());
          json out = base;
          out["object"] = chat ? "chat.completion" : "text_completion";
          json choice = {{"index", 0}, {"finish_reason", openai_finish_reason(job->finish_reason)}, {"logprobs", nullptr}};
          if (chat) choice["message"] = {{"role", "assistant"}, {"content", job->text}};
          else choice["text"] = job->text;
          out["choices"] = json::array({choice});
          out["usage"] = {{"prompt_tokens", n_prompt}, {"completion_tokens", n_out}, {"total_tokens", n_prompt + n_out}};
          out["safedec"] = method_json;
          res.set_content(dump_json(out), "application/json");
          std::cerr << "[serve] " << job->id << " " << label << ": " << n_prompt << " prompt + " << n_out
                    << " completion tokens, " << job->finish_reason << ", "
                    << std::chrono::duration<double>(Clock::now() - t0).count() << " s\n";
          --in_flight_;
          return;
        }
        auto st = std::make_shared<StreamState>();
        st->job = job;
        st->chat = chat;
        st->include_usage = r.include_usage;
        for (const auto& stop : r.stop) st->hold = std::max(st->hold, stop.size() - 1);
        st->base = base;
        st->prompt_tokens = n_prompt;
        st->t0 = t0;
        const Tokenizer* tok = bundle_.tokenizer.get();
        auto chunk = [st, chat, method_json](const std::string& text, const json& finish) {
          json c = st->base;
          json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", nullptr}};
          if (chat) {
            json delta = json::object();
            if (!st->role_sent) {
              delta["role"] = "assistant";
              st->role_sent = true;
            }
            if (!text.empty() || finish.is_null()) delta["content"] = text;
            choice["delta"] = delta;
          } else {
            choice["text"] = text;
          }
          c["choices"] = json::array({choice});
          if (!finish.is_null()) c["safedec"] = method_json;
          return "data: " + dump_json(c) + "\n\n";
        };
        res.set_header("Cache-Control", "no-cache");
        res.set_chunked_content_provider(
            "text/event-stream",
            [st, tok, chunk](size_t, httplib::DataSink& sink) {
              ServeJob& job = *st->job;
              auto send = [&](const std::string& s) {
                if (sink.is_writable() && sink.write(s.data(), s.size())) return true;
                job.cancelled = true;  // the client went away: free its row
                return false;
              };
              if (!sink.is_writable()) {
                job.cancelled = true;
                return false;
              }
              std::vector<int32_t> tokens;
              bool done;
              std::string finish, text, error;
              {
                std::unique_lock<std::mutex> lk(job.mu);
                job.cv.wait_for(lk, std::chrono::milliseconds(200),
                                [&] { return job.done || job.tokens.size() > st->seen_tokens; });
                tokens = job.tokens;
                done = job.done;
                finish = job.finish_reason;
                text = job.text;
                error = job.error;
              }
              st->seen_tokens = tokens.size();
              if (!done) {
                if (tokens.empty()) return true;
                const std::string now = tok->decode(tokens, /*skip_special=*/true);
                const size_t limit = now.size() > st->hold ? now.size() - st->hold : 0;
                const size_t n = utf8_safe_prefix(now, limit);
                if (n > st->sent.size() && now.compare(0, st->sent.size(), st->sent) == 0) {
                  const std::string delta = now.substr(st->sent.size(), n - st->sent.size());
                  st->sent = now.substr(0, n);
                  return send(chunk(delta, nullptr));
                }
                return true;
              }
              if (finish == "error") {
                send("data: " + dump_json(error_json("decoding failed: " + error, "server_error", "", "decoding_failed")) +
                     "\n\ndata: [DONE]\n\n");
                sink.done();
                return true;
              }
              std::string rest;
              if (text.size() > st->sent.size() && text.compare(0, st->sent.size(), st->sent) == 0)
                rest = text.substr(st->sent.size());
              if (!rest.empty() && !send(chunk(rest, nullptr))) return false;
              if (!send(chunk("", openai_finish_reason(finish)))) return false;
              if (st->include_usage) {
                json u = st->base;
                const int64_t n_out = static_cast<int64_t>(tokens.size());
                u["choices"] = json::array();
                u["usage"] = {{"prompt_tokens", st->prompt_tokens}, {"completion_tokens", n_out},
                              {"total_tokens", st->prompt_tokens + n_out}};
                if (!send("data: " + dump_json(u) + "\n\n")) return false;
              }
              if (!send("data: [DONE]\n\n")) return false;
              sink.done();
              return true;
            },
            [this, st, label](bool success) {
              if (!success) st->job->cancelled = true;
              st->job->wait();
              std::cerr << "[serve] " << st->job->id << " " << label << " (stream): " << st->prompt_tokens
                        << " prompt + " << st->job->tokens.size() << " completion tokens, "
                        << st->job->finish_reason << ", "
                        << std::chrono::duration<double>(Clock::now() - st->t0).count() << " s\n";
              --in_flight_;
            });
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, std::string("internal error: ") + e.what(), "server_error"));
      }
    };
  };
  s.Post("/v1/chat/completions", generate(true));
  s.Post("/v1/completions", generate(false));
}

void Server::run(const std::function<void(int)>& on_listening) {
  int port = options_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(options_.host);
  } else if (!http_->bind_to_port(options_.host, port)) {
    port = -1;
  }
  SAFEDEC_CHECK(port > 0, "cannot listen on ", options_.host, ":", options_.port,
                "; is the port in use or the host not local? pick another --port (0 = any free port)");
  if (on_listening) on_listening(port);
  http_->listen_after_bind();
  if (stopper_.joinable()) stopper_.join();
  scheduler_->drain();
}

void Server::shutdown() {
  if (draining_.exchange(true)) return;
  stopper_ = std::thread([this] {
    scheduler_->drain();
    while (in_flight_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    http_->stop();
  });
}

}  // namespace safedec
