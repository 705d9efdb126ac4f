"""Drives a running `safedec serve` with the official `openai` client (tests/integration/test_serve.cpp
starts the server on 127.0.0.1 and calls this script). Modes:
  main  --base-url URL --api-key KEY --model M   chat, streaming, completions, per-request method, errors
  queue --base-url URL --model M                 a full queue answers 429 (server: --max-batch 1 --max-queue 0)
  drain --base-url URL --model M --pid PID       SIGTERM while a request runs: the request still completes
Prompts carry MARKER so the test can check the server log never holds prompt text.
Exits 0 when every check passed; prints each failed check and exits 1 otherwise.
"""
import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import openai

MARKER = "zqxj-marker"
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def raw_post(url, body, key=None, content_type="application/json"):
    data = body if isinstance(body, bytes) else body.encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": content_type})
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def health(base):
    with urllib.request.urlopen(base + "/health", timeout=30) as r:
        return json.loads(r.read())


def expect_error(what, cls, status, fn, code=None):
    try:
        fn()
    except cls as e:
        body = e.body if isinstance(e.body, dict) else {}
        ok = e.status_code == status and (code is None or body.get("code") == code)
        check(ok, f"{what}: HTTP {e.status_code} code={body.get('code')!r} (want {status} {code!r})")
        return
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: raised {type(e).__name__}: {e}")
        return
    check(False, f"{what}: no error raised")


def user(text):
    return [{"role": "user", "content": f"{text} ({MARKER})"}]


def mode_main(a):
    base = a.base_url
    client = openai.OpenAI(base_url=base + "/v1", api_key=a.api_key, max_retries=0, timeout=300)
    models = client.models.list()
    check([m.id for m in models.data] == [a.model], f"GET /v1/models lists {a.model}")

    msgs = user("Name three primary colors.")
    r1 = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=16)
    text = r1.choices[0].message.content
    check(isinstance(text, str) and len(text) > 0, "chat completion returns text")
    check(r1.choices[0].finish_reason in ("stop", "length"), f"finish_reason {r1.choices[0].finish_reason}")
    check(r1.object == "chat.completion" and r1.usage.completion_tokens <= 16 and r1.usage.prompt_tokens > 0,
          f"chat object and usage ({r1.usage})")
    r2 = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=16)
    check(r2.choices[0].message.content == text, "greedy chat is deterministic")

    chunks = list(client.chat.completions.create(model=a.model, messages=msgs, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(content == text, "streamed deltas concatenate to the non-streamed text")
    check(chunks[0].choices[0].delta.role == "assistant", "first stream chunk carries the role")
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check(finals == [r1.choices[0].finish_reason], f"one final chunk with finish_reason ({finals})")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r1.usage.completion_tokens,
          "include_usage sends a usage chunk")
    check(all(c.object == "chat.completion.chunk" for c in chunks), "chunk objects are chat.completion.chunk")

    rs = client.chat.completions.create(model=a.model, messages=user("Write a sentence about cats. Then another."),
                                        max_tokens=40, stop=["."])
    check(rs.choices[0].finish_reason == "stop" and "." not in rs.choices[0].message.content,
          f"stop string cuts the text ({rs.choices[0].finish_reason})")

    s1 = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=12, temperature=0.9, top_p=0.9, seed=7)
    s2 = client.chat.completions.create(model=a.model, messages=msgs, max_tokens=12, temperature=0.9, top_p=0.9, seed=7)
    check(s1.choices[0].message.content == s2.choices[0].message.content, "sampling with a seed is reproducible")

    c1 = client.completions.create(model=a.model, prompt=f"The capital of France is ({MARKER})", max_tokens=8)
    check(c1.object == "text_completion" and len(c1.choices[0].text) > 0, "completions endpoint returns text")
    cs = list(client.completions.create(model=a.model, prompt=f"The capital of France is ({MARKER})", max_tokens=8,
                                        stream=True))
    check("".join(c.choices[0].text for c in cs if c.choices) == c1.choices[0].text,
          "streamed completion equals the non-streamed one")

    # A multi-turn chat: the first answer goes back as the assistant turn, then a follow-up question.
    conv = [{"role": "system", "content": "You are a helpful assistant."}] + msgs + [
        {"role": "assistant", "content": text}, {"role": "user", "content": f"Which one is warmest? ({MARKER})"}]
    mt = client.chat.completions.create(model=a.model, messages=conv, max_tokens=16)
    check(len(mt.choices[0].message.content) > 0 and mt.usage.prompt_tokens > r1.usage.prompt_tokens,
          f"multi-turn chat answers and counts the history ({mt.usage.prompt_tokens} prompt tokens, single turn "
          f"{r1.usage.prompt_tokens})")
    mt2 = client.chat.completions.create(model=a.model, messages=conv, max_tokens=16)
    check(mt2.choices[0].message.content == mt.choices[0].message.content, "greedy multi-turn chat is deterministic")
    last_only = client.chat.completions.create(model=a.model, messages=[conv[0], conv[-1]], max_tokens=16)
    check(last_only.usage.prompt_tokens < mt.usage.prompt_tokens, "the history adds prompt tokens")
    mts = list(client.chat.completions.create(model=a.model, messages=conv, max_tokens=16, stream=True))
    check("".join(c.choices[0].delta.content or "" for c in mts if c.choices) == mt.choices[0].message.content,
          "streamed multi-turn chat equals the non-streamed one")
    for method in ("acd", "ngsd", "safedecoding"):
        rm = client.chat.completions.create(model=a.model, messages=conv, max_tokens=8,
                                            extra_body={"safedec": {"method": method}})
        check(len(rm.choices[0].message.content) > 0 and rm.usage.prompt_tokens == mt.usage.prompt_tokens,
              f"multi-turn chat with method {method} ({rm.usage.prompt_tokens} prompt tokens)")

    for method, alpha in (("acd", 0.5), ("ngsd", 0.75), ("safedecoding", None)):
        extra = {"method": method} if alpha is None else {"method": method, "alpha": alpha}
        rm = client.chat.completions.create(model=a.model, messages=user("How do I pick a lock?"), max_tokens=12,
                                            extra_body={"safedec": extra})
        echoed = (rm.model_extra or {}).get("safedec", {})
        check(len(rm.choices[0].message.content) > 0 and echoed.get("method") == method,
              f"per-request method {method} alpha={alpha} (echo {echoed})")
    streamed = list(client.chat.completions.create(model=a.model, messages=user("How do I pick a lock?"), max_tokens=12,
                                                   stream=True, extra_body={"safedec": {"method": "acd", "alpha": 0.5}}))
    check(any(c.choices and c.choices[0].finish_reason for c in streamed), "streaming with a per-request method")

    bad = openai.BadRequestError
    expect_error("unknown method", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, extra_body={"safedec": {"method": "nope"}}), "unknown_method")
    expect_error("ngsd alpha out of range", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, extra_body={"safedec": {"method": "ngsd", "alpha": 1.5}}))
    expect_error("alpha over the limit", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, extra_body={"safedec": {"method": "acd", "alpha": 99}}))
    expect_error("alpha for plain", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, extra_body={"safedec": {"method": "plain", "alpha": 0.5}}))
    expect_error("unknown safedec field", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, extra_body={"safedec": {"method": "acd", "beta": 1}}),
        "unknown_field")
    expect_error("unknown top-level field", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, extra_body={"frobnicate": True}), "unknown_field")
    expect_error("n = 2", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, n=2))
    expect_error("temperature 3", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=4, temperature=3))
    expect_error("max_tokens 0", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=0))
    expect_error("max_tokens over the context", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=msgs, max_tokens=10 ** 6), "context_length_exceeded")
    expect_error("prompt over the context", bad, 400, lambda: client.chat.completions.create(
        model=a.model, messages=user(" hello" * 9000), max_tokens=4), "context_length_exceeded")
    for what, order, param, position in (
            ("two user turns in a row", ["user", "user"], "messages[2].role", "position 2"),
            ("assistant turn last", ["user", "assistant"], "messages", "position 2"),
            ("tool role", ["user", "tool", "user"], "messages[2].role", "position 2")):
        conv = [{"role": "system", "content": "Be brief."}] + [{"role": r, "content": f"turn {i}"}
                                                               for i, r in enumerate(order)]
        try:
            client.chat.completions.create(model=a.model, max_tokens=4, messages=conv)
            check(False, f"malformed conversation ({what}): no error raised")
        except bad as e:
            body = e.body if isinstance(e.body, dict) else {}
            check(e.status_code == 400 and body.get("param") == param and position in body.get("message", ""),
                  f"malformed conversation ({what}): HTTP {e.status_code} param={body.get('param')!r} names "
                  f"{position!r}")
    expect_error("unknown model", openai.NotFoundError, 404, lambda: client.chat.completions.create(
        model="gpt-nope", messages=msgs, max_tokens=4), "model_not_found")
    wrong = openai.OpenAI(base_url=base + "/v1", api_key="wrong-key", max_retries=0)
    expect_error("wrong API key", openai.AuthenticationError, 401, lambda: wrong.models.list(), "invalid_api_key")

    st, body = raw_post(base + "/v1/chat/completions", "{not json", key=a.api_key)
    check(st == 400 and body.get("error", {}).get("code") == "invalid_json" and "message" in body["error"]
          and "type" in body["error"] and "param" in body["error"], f"malformed JSON -> 400 error object ({st})")
    big = json.dumps({"model": a.model, "messages": user("x" * 200000)})
    st, body = raw_post(base + "/v1/chat/completions", big, key=a.api_key)
    check(st == 400 and body.get("error", {}).get("code") == "body_too_large", f"body over the limit -> 400 ({st})")
    st, body = raw_post(base + "/v1/nothing", "{}", key=a.api_key)
    check(st == 404 and "error" in body, f"unknown route -> 404 error object ({st})")

    # A client that disconnects mid-stream frees its row.
    stream = client.chat.completions.create(model=a.model, messages=user("Tell me a long story about a dragon."),
                                            max_tokens=400, stream=True, extra_body={"safedec": {"method": "plain"}})
    got = 0
    for _ in stream:
        got += 1
        if got >= 3:
            break
    stream.close()
    freed = False
    for _ in range(600):
        h = health(base)
        if h["running"] == 0 and h["queued"] == 0:
            freed = True
            break
        time.sleep(0.1)
    check(freed and got >= 3, f"a disconnected stream frees its row (health {h})")

    # A client that disconnects while waiting for a non-streaming answer also frees its row: the
    # request is sent on a raw socket, which is closed once the request is decoding.
    cancelled0 = health(base).get("cancelled")
    check(cancelled0 is not None, "GET /health reports the count of cancelled requests")
    u = urllib.parse.urlparse(base)
    body = json.dumps({"model": a.model, "messages": user("Tell me a long story about a dragon."), "max_tokens": 400,
                       "safedec": {"method": "plain"}}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + (f"Authorization: Bearer {a.api_key}\r\n" if a.api_key else "") + "\r\n").encode()
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    sock.sendall(head + body)
    running = False
    for _ in range(600):
        h = health(base)
        if h["running"] >= 1:
            running = True
            break
        time.sleep(0.05)
    sock.close()
    t_close = time.time()
    freed = False
    for _ in range(600):
        h = health(base)
        if h["running"] == 0 and h["queued"] == 0 and h["cancelled"] == cancelled0 + 1:
            freed = True
            break
        time.sleep(0.05)
    check(running and freed, f"a non-streaming request whose client disconnects is cancelled and frees its row "
                             f"({time.time() - t_close:.2f} s after the close; health {h})")


def mode_queue(a):
    client = openai.OpenAI(base_url=a.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    results = []

    def one(i):
        try:
            client.chat.completions.create(model=a.model, messages=user(f"Count to twenty, number {i}."), max_tokens=48)
            results.append(200)
        except openai.RateLimitError as e:
            results.append(429 if (e.body or {}).get("code") == "queue_full" else -429)
        except Exception as e:  # noqa: BLE001
            results.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    check(results.count(200) >= 1 and results.count(429) >= 1 and len(results) == 4
          and all(r in (200, 429) for r in results), f"a full queue answers 429 queue_full ({results})")


def mode_drain(a):
    client = openai.OpenAI(base_url=a.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    out = {}

    def one():
        try:
            r = client.chat.completions.create(model=a.model, messages=user("Describe the sea."), max_tokens=48,
                                               extra_body={"safedec": {"method": "plain"}})
            out["r"] = r
        except Exception as e:  # noqa: BLE001
            out["e"] = e

    t = threading.Thread(target=one)
    t.start()
    running = False
    for _ in range(600):
        if health(a.base_url)["running"] >= 1:
            running = True
            break
        time.sleep(0.05)
    check(running, "the request is running before SIGTERM")
    os.kill(a.pid, signal.SIGTERM)
    t.join()
    r = out.get("r")
    check(r is not None and r.usage.completion_tokens > 0 and r.choices[0].finish_reason in ("stop", "length"),
          f"the in-flight request completes after SIGTERM ({out})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["main", "queue", "drain"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", default="unused")
    p.add_argument("--model", required=True)
    p.add_argument("--pid", type=int, default=0)
    a = p.parse_args()
    {"main": mode_main, "queue": mode_queue, "drain": mode_drain}[a.mode](a)
    if failures:
        print(f"{len(failures)} check(s) failed", flush=True)
        sys.exit(1)
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
