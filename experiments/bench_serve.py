"""Load test of `safedec serve`: the same requests sent sequentially (one client) and by N concurrent
clients, on 127.0.0.1 only. Prints throughput (requests/s, completion tokens/s), p50/p99 latency, failed
requests and the server's batching counters (/health), and the speed-up of the concurrent run.

  .venv/bin/python experiments/bench_serve.py [--clients 8] [--requests 16] [--max-tokens 32]
      [--method plain] [--server-args "--threads 2"] [--url http://127.0.0.1:PORT] [--time-limit 600]

Without --url it starts build/safedec serve --port 0 itself and stops it with SIGTERM at the end.
Greedy decoding with fixed prompts: both runs generate the same tokens, so the work is the same.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [
    "Name three primary colors.", "Write a haiku about the sea.", "What is the capital of Italy?",
    "Give two tips for better sleep.", "Explain what a noun is.", "List four kinds of trees.",
    "Describe a sunny day in one sentence.", "What does a baker do?", "Suggest a name for a cat.",
    "How many legs does a spider have?", "Write a short greeting for a birthday card.", "What is rain?",
    "Name a famous painting.", "Give an example of a verb.", "What sound does a cow make?", "Describe a apple.",
]


def pct(values, q):
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def run_phase(client, model, method, requests, clients, max_tokens, deadline):
    jobs = list(range(requests))
    lock = threading.Lock()
    latencies, tokens, failures = [], [], []

    def worker():
        while True:
            with lock:
                if not jobs or time.time() > deadline:
                    return
                i = jobs.pop(0)
            t0 = time.time()
            try:
                r = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    max_tokens=max_tokens, extra_body={"safedec": {"method": method}})
                with lock:
                    latencies.append(time.time() - t0)
                    tokens.append(r.usage.completion_tokens)
            except Exception as e:  # noqa: BLE001
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    done = len(latencies)
    return {"clients": clients, "requests": requests, "completed": done, "failed": len(failures) + (requests - done - len(failures)),
            "failures": failures[:3], "wall_s": wall, "req_per_s": done / wall, "tok_per_s": sum(tokens) / wall,
            "completion_tokens": sum(tokens), "p50_s": pct(latencies, 50), "p99_s": pct(latencies, 99)}


def health(url):
    with urllib.request.urlopen(url + "/health", timeout=30) as r:
        return json.loads(r.read())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--method", default="plain")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--server-args", default="--threads 2")
    p.add_argument("--url", default="")
    p.add_argument("--time-limit", type=float, default=600.0)
    a = p.parse_args()
    if not (1 <= a.clients <= 64 and 1 <= a.requests <= 512):
        sys.exit("--clients must be in [1, 64] and --requests in [1, 512]")
    proc, log = None, None
    url = a.url
    try:
        if not url:
            exe = os.path.join(ROOT, "build", "safedec")
            if not os.access(exe, os.X_OK):
                sys.exit(f"{exe} is missing; build it first (cmake --build build --target safedec)")
            log = tempfile.NamedTemporaryFile(prefix="bench_serve_", suffix=".log", delete=False)
            cmd = [exe, "serve", "--host", "127.0.0.1", "--port", "0",
                   "--model", a.model, "--max-batch", str(max(16, a.clients))] + a.server_args.split()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            t0 = time.time()
            while not url:
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", open(log.name).read())
                if m:
                    url = m.group(1)
                elif proc.poll() is not None or time.time() - t0 > 180:
                    sys.exit("the server did not start:\n" + open(log.name).read())
                else:
                    time.sleep(0.2)
        if not re.match(r"^http://(127\.0\.0\.1|localhost)(:\d+)?$", url):
            sys.exit("--url must be a loopback address (http://127.0.0.1:PORT)")
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        deadline = time.time() + a.time_limit
        # Warm-up: loads the method and touches every code path once.
        run_phase(client, a.model, a.method, 2, 1, 4, deadline)
        seq = run_phase(client, a.model, a.method, a.requests, 1, a.max_tokens, deadline)
        h0 = health(url)
        con = run_phase(client, a.model, a.method, a.requests, a.clients, a.max_tokens, deadline)
        h1 = health(url)
        steps = h1["decode_steps"] - h0["decode_steps"]
        rows = h1["row_steps"] - h0["row_steps"]
        batching = {"decode_steps": steps, "mean_rows_per_step": rows / steps if steps else 0.0,
                    "max_rows_in_step": h1["max_rows_in_step"], "joined_running": h1["joined_running"] - h0["joined_running"]}
        speedup = con["tok_per_s"] / seq["tok_per_s"] if seq["tok_per_s"] > 0 else float("nan")
        print(f"method {a.method}, {a.requests} requests x max_tokens {a.max_tokens}, greedy, server {a.server_args!r}")
        for name, r in (("sequential", seq), (f"{a.clients} concurrent", con)):
            print(f"{name:>14}: {r['completed']}/{r['requests']} ok, {r['failed']} failed, wall {r['wall_s']:.2f} s, "
                  f"{r['req_per_s']:.2f} req/s, {r['tok_per_s']:.1f} tok/s, latency p50 {r['p50_s']:.2f} s "
                  f"p99 {r['p99_s']:.2f} s")
        print(f"batching (concurrent run): {batching}")
        print(f"speed-up (tokens/s, concurrent / sequential): {speedup:.2f}x")
        print(json.dumps({"sequential": seq, "concurrent": con, "batching": batching, "speedup": speedup}))
        ok = seq["failed"] == 0 and con["failed"] == 0 and seq["completion_tokens"] == con["completion_tokens"]
        if seq["completion_tokens"] != con["completion_tokens"]:
            print("the two runs generated different token counts (greedy should make them equal)")
        return 0 if ok else 1
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            if log is not None:
                os.unlink(log.name)


if __name__ == "__main__":
    sys.exit(main())
