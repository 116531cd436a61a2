"""Benchmark OpenAI-compatible servers as their users meet them: N concurrent streaming
clients, and a multi-turn chat over a long history.

    python tools/bench_serve.py -m mamba2-130m-q8_0.gguf [-t 2] [--clients 1,4,8,16]
           [--peer] [-r 3] [-o results.json]

Servers: tinyggml (`tinyggml-cli serve`, --parallel = the most clients) and, with --peer,
llama-cpp-python's (`python -m llama_cpp.server`, the optional peer: pip install
'llama-cpp-python[server]==0.3.36'), each started here on a free loopback port with the same
GGUF and thread count, one at a time (never both at once: the machine has few cores), in
alternating order over -r rounds; figures are medians over the rounds. The peer runs with
--interrupt_requests False: by default a new request interrupts the running one, so concurrent
clients would cut each other's replies short instead of waiting.

Per client count: every client sends streaming completions (its own prompt, max_tokens
--gen, temperature 0) one after the other until --requests of them are done or --seconds
pass. Reported: aggregate generated tokens/s (completion tokens / wall time), time to first
token p50 / p99, inter-token latency p50 / p99 (gaps between streamed chunks), errors.
Chat: a system message of about --history tokens, then 5 user turns, each sent with the
whole conversation so far (as chat clients do); time to first token per turn.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "models", "shakespeare-heldout-tempest.txt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, kind: str, model: str, threads: int, parallel: int):
        self.kind = kind
        port = free_port()
        if kind == "tinyggml":
            cmd = [sys.executable, "-m", "tinyggml.tools.cli", "serve", "-m", model, "--port",
                   str(port), "-t", str(threads), "--parallel", str(parallel), "-c", "16384",
                   "--max-tokens", "4096"]
        else:
            cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host",
                   "127.0.0.1", "--port", str(port), "--n_threads", str(threads),
                   "--n_threads_batch", str(threads), "--n_ctx", "16384", "--n_batch", "512",
                   "--verbose", "False", "--interrupt_requests", "False"]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while time.time() - t0 < 300:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                models = json.loads(urllib.request.urlopen(self.url + "/v1/models", timeout=1).read())
                self.model_id = models["data"][0]["id"]
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{kind} server did not start")

    def client(self):
        import httpx
        return Client(self.url, self.model_id, httpx.Client(timeout=600))

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Client:
    url: str
    model_id: str
    http: object


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def stream_once(client, prompt, max_tokens: int, chat: bool = False):
    """One streaming request: (time to first token, gaps between chunks, completion tokens).
    Raw SSE lines through httpx (the clients share the machine with the server: they parse as
    little as they can); the usage chunk gives the token count."""
    import httpx
    body = {"model": client.model_id, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    body.update({"messages": prompt} if chat else {"prompt": prompt})
    path = "/v1/chat/completions" if chat else "/v1/completions"
    t0 = time.perf_counter()
    stamps, n = [], 0
    with client.http.stream("POST", client.url + path, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if '"usage"' in line and '"choices": []' in line.replace('"choices":[]', '"choices": []'):
                n = json.loads(line[6:])["usage"]["completion_tokens"]
            elif ('"content"' in line or '"text"' in line) and not re.search(
                    r'"(content|text)": ?""', line):
                stamps.append(time.perf_counter())
    if not n:
        n = len(stamps)
    ttft = stamps[0] - t0 if stamps else float("nan")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return ttft, gaps, n


def load_run(server: Server, clients: int, requests: int, seconds: float, gen: int, prompts):
    c = server.client()
    deadline = time.perf_counter() + seconds
    per_client = max(1, requests // clients)

    def worker(k):
        out = []
        for r in range(per_client):
            if time.perf_counter() > deadline:
                break
            try:
                out.append(stream_once(c, prompts[(k * 7 + r) % len(prompts)], gen))
            except Exception as e:       # counted, not fatal: the figure says how many
                out.append(e)
        return out
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        results = [x for xs in ex.map(worker, range(clients)) for x in xs]
    wall = time.perf_counter() - t0
    ok = [r for r in results if not isinstance(r, Exception)]
    tokens = sum(n for _, _, n in ok)
    ttft = [t for t, _, _ in ok]
    itl = [g for _, gs, _ in ok for g in gs]
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok),
            "tokens": tokens, "seconds": wall, "tok_s": tokens / wall,
            "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
            "itl_p50": pct(itl, 50), "itl_p99": pct(itl, 99)}


def chat_run(server: Server, history_tokens: int, gen: int):
    c = server.client()
    text = open(TEXT, encoding="utf-8").read()
    # about history_tokens tokens of history: ~3.5 characters a token for English BPE / SPM
    system = text[:int(history_tokens * 3.5)]
    msgs = [{"role": "system", "content": system}]
    out = []
    for turn in ["Who is speaking?", "What happened next?", "Why?", "And then?", "Farewell."]:
        msgs.append({"role": "user", "content": turn})
        body = {"model": c.model_id, "messages": msgs, "max_tokens": gen, "temperature": 0}
        t0 = time.perf_counter()
        first, reply = None, []
        with c.http.stream("POST", c.url + "/v1/chat/completions", json={**body, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    d = json.loads(line[6:])
                    piece = (d.get("choices") or [{}])[0].get("delta", {}).get("content")
                    if piece:
                        first = first or time.perf_counter() - t0
                        reply.append(piece)
        msgs.append({"role": "assistant", "content": "".join(reply)})
        out.append(first if first is not None else time.perf_counter() - t0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=32, help="requests per client count (default 32)")
    ap.add_argument("--seconds", type=float, default=60, help="time bound per client count")
    ap.add_argument("--gen", type=int, default=64, help="max_tokens per request (default 64)")
    ap.add_argument("--history", type=int, default=2000, help="chat history tokens (default 2000)")
    ap.add_argument("--peer", action="store_true", help="also llama-cpp-python's server")
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("-o", "--output", help="write the raw results as JSON")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",")]
    text = open(TEXT, encoding="utf-8").read()
    words = text.split()
    prompts = [" ".join(words[i * 40:i * 40 + 30]) for i in range(64)]    # ~40-token prompts
    kinds = ["tinyggml"] + (["llama-cpp-python"] if args.peer else [])
    raw = {k: {"load": {n: [] for n in levels}, "chat": []} for k in kinds}
    for rnd in range(args.rounds):
        order = kinds if rnd % 2 == 0 else kinds[::-1]
        for kind in order:
            s = Server(kind, args.model, args.threads, max(levels))
            try:
                stream_once(s.client(), "warm up", 4)
                for n in levels:
                    r = load_run(s, n, args.requests, args.seconds, args.gen, prompts)
                    raw[kind]["load"][n].append(r)
                    print(f"round {rnd + 1} {kind:>16s} {n:2d} clients: {r['tok_s']:8.1f} tok/s, "
                          f"ttft p50 {r['ttft_p50'] * 1e3:7.1f} ms, itl p50 {r['itl_p50'] * 1e3:6.1f} ms, "
                          f"{r['errors']} errors", file=sys.stderr, flush=True)
                ch = chat_run(s, args.history, 32)
                raw[kind]["chat"].append(ch)
                print(f"round {rnd + 1} {kind:>16s} chat ttft per turn: "
                      + ", ".join(f"{x * 1e3:.0f} ms" for x in ch), file=sys.stderr, flush=True)
            finally:
                s.close()
    med = statistics.median
    print(f"\n{os.path.basename(args.model)}, {args.threads} threads, medians of {args.rounds} rounds\n")
    print("| server | clients | tokens/s | x 1 client | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        base = med(r["tok_s"] for r in raw[k]["load"][levels[0]])
        for n in levels:
            rs = raw[k]["load"][n]
            print(f"| {k} | {n} | {med(r['tok_s'] for r in rs):.1f} | "
                  f"{med(r['tok_s'] for r in rs) / base:.2f} | {med(r['ttft_p50'] for r in rs) * 1e3:.1f} | "
                  f"{med(r['ttft_p99'] for r in rs) * 1e3:.1f} | {med(r['itl_p50'] for r in rs) * 1e3:.1f} | "
                  f"{med(r['itl_p99'] for r in rs) * 1e3:.1f} | {sum(r['errors'] for r in rs)} |")
    print(f"\nChat, ~{args.history}-token history, time to first token per turn (ms):\n")
    print("| server | turn 1 | turn 2 | turn 3 | turn 4 | turn 5 | turn 5 / turn 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        turns = [med(c[i] for c in raw[k]["chat"]) * 1e3 for i in range(5)]
        print(f"| {k} | " + " | ".join(f"{x:.0f}" for x in turns) + f" | {turns[4] / turns[0]:.2f} |")
    if len(kinds) == 2:
        print()
        for n in levels:
            a = med(r["tok_s"] for r in raw["tinyggml"]["load"][n])
            b = med(r["tok_s"] for r in raw["llama-cpp-python"]["load"][n])
            print(f"{n} clients: tinyggml / llama-cpp-python aggregate = {a / b:.2f}x")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"model": args.model, "threads": args.threads, "raw": raw}, f, indent=1,
                      default=str)


if __name__ == "__main__":
    main()
