"""`tinyggml-cli serve` through the real `openai` client: completions and chat, streamed and
not, n > 1, stop strings, cached prompt tokens over a chat, concurrency, bad input, a client
that goes away, SIGTERM. Each server runs in a subprocess on a free loopback port."""
import concurrent.futures as cf
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest

DEMO = Path(__file__).resolve().parent.parent / "models" / "shakespeare-mamba2.gguf"


def wait_until(cond, seconds: float, step: float = 0.005) -> bool:
    """Poll cond() until it holds or `seconds` pass; whether it holds."""
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(step)
    return cond()


class Server:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tinyggml.tools.cli", "serve", "--port", "0", "-t", "1", *map(str, args)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        line = self.proc.stderr.readline()
        m = re.search(r"http://([\d.]+):(\d+)", line)
        assert m, line + self.proc.stderr.read()
        self.url = f"http://{m.group(1)}:{m.group(2)}"
        for _ in range(200):                 # until uvicorn accepts
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)

    def client(self, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"),
                             max_retries=0, timeout=60, **kw)

    def post(self, path, body, headers=None, timeout=60):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + path, content=data, timeout=timeout,
                          headers={"Content-Type": "application/json", **(headers or {})})

    def metrics(self) -> dict:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def server():
    s = Server("-m", DEMO, "--parallel", 8, "--max-tokens", 64, "-c", 4096)
    yield s
    s.stop()


GREEDY = dict(temperature=0, max_tokens=24)
M = "shakespeare-mamba2"


def test_completion_and_stream_agree(server):
    c = server.client()
    r = c.completions.create(model=M, prompt="ROMEO:", **GREEDY)
    text = r.choices[0].text
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 24 and r.usage.prompt_tokens == len(
        server.post("/tokenize", {"content": "ROMEO:", "add_special": True}).json()["tokens"])
    chunks = list(c.completions.create(model=M, prompt="ROMEO:", stream=True, **GREEDY))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == text
    assert chunks[-1].choices[0].finish_reason == "length"
    # and the same as the CLI (one sequence, Generation) gives
    from tinyggml import Model
    m = Model(str(DEMO), n_threads=1)
    assert m.generate("ROMEO:", max_tokens=24, temperature=0) == text


def test_chat_stream_and_not(server):
    c = server.client()
    msgs = [{"role": "system", "content": "You speak verse."}, {"role": "user", "content": "Who are you?"}]
    r = c.chat.completions.create(model=M, messages=msgs, **GREEDY)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    s = list(c.chat.completions.create(model=M, messages=msgs, stream=True,
                                       stream_options={"include_usage": True}, **GREEDY))
    assert s[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices) == r.choices[0].message.content
    assert s[-1].usage.completion_tokens == r.usage.completion_tokens
    assert s[-1].usage.prompt_tokens_details.cached_tokens == r.usage.prompt_tokens  # all cached


def test_raw_sse_ends_with_done(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": "A", "max_tokens": 3, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]" and len(lines) >= 2


def test_n_choices_share_the_prompt(server):
    c = server.client()
    r = c.completions.create(model=M, prompt="KING:", n=3, seed=7, temperature=1.0, max_tokens=16)
    assert sorted(ch.index for ch in r.choices) == [0, 1, 2]
    assert r.usage.completion_tokens == sum(16 if ch.finish_reason == "length" else 0
                                            for ch in r.choices) or r.usage.completion_tokens > 0
    g = c.completions.create(model=M, prompt="KING:", n=2, temperature=0, max_tokens=16)
    assert g.choices[0].text == g.choices[1].text       # greedy forks continue alike
    # a seeded request is reproducible
    r2 = c.completions.create(model=M, prompt="KING:", n=3, seed=7, temperature=1.0, max_tokens=16)
    assert [ch.text for ch in r.choices] == [ch.text for ch in r2.choices]


def test_stop_strings(server):
    c = server.client()
    free = c.completions.create(model=M, prompt="ROMEO:", **GREEDY).choices[0].text
    stop = free[6:9]
    r = c.completions.create(model=M, prompt="ROMEO:", stop=[stop, "never-there"], **GREEDY)
    assert r.choices[0].text == free[:free.find(stop)] and r.choices[0].finish_reason == "stop"
    s = list(c.completions.create(model=M, prompt="ROMEO:", stop=stop, stream=True, **GREEDY))
    assert "".join(ch.choices[0].text for ch in s if ch.choices) == free[:free.find(stop)]


def test_logprobs(server):
    c = server.client()
    r = c.chat.completions.create(model=M, messages=[{"role": "user", "content": "Hi"}], logprobs=True,
                                  top_logprobs=3, temperature=0, max_tokens=4)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens and all(len(x.top_logprobs) == 3 for x in lp)
    for x in lp:        # greedy: the chosen token is the most likely one
        assert x.logprob == pytest.approx(x.top_logprobs[0].logprob) and x.logprob <= 0
    r = c.completions.create(model=M, prompt="Hi", logprobs=2, temperature=0, max_tokens=3)
    assert len(r.choices[0].logprobs.token_logprobs) == 3


def test_five_turn_chat_reuses_the_history(server):
    c = server.client()
    msgs = [{"role": "system", "content": "A play in five acts."}]
    prev = None
    for turn in ["Who goes there?", "Speak, friend.", "What news from Verona?",
                 "And the prince?", "Farewell then."]:
        msgs.append({"role": "user", "content": turn})
        r = c.chat.completions.create(model=M, messages=msgs, temperature=0, max_tokens=20)
        reply = r.choices[0].message.content
        msgs.append({"role": "assistant", "content": reply})
        cached = r.usage.prompt_tokens_details.cached_tokens
        if prev is not None:       # everything before this turn's new text came from the cache
            assert cached >= prev.prompt_tokens + prev.completion_tokens - 1, (cached, prev)
            assert r.usage.prompt_tokens - cached <= 20
        prev = r.usage


def test_concurrent_clients_equal_alone(server):
    c = server.client()
    prompts = [f"{name}:" for name in ("ROMEO", "JULIET", "MERCUTIO", "TYBALT", "NURSE",
                                       "CAPULET", "BENVOLIO", "PRINCE")]
    alone = [c.completions.create(model=M, prompt=p, temperature=0, max_tokens=32).choices[0].text
             for p in prompts]
    with cf.ThreadPoolExecutor(8) as ex:
        together = list(ex.map(lambda p: c.completions.create(model=M, 
            prompt=p, temperature=0, max_tokens=32).choices[0].text, prompts))
    assert together == alone
    # the same through streaming chat, all at once
    with cf.ThreadPoolExecutor(8) as ex:
        streamed = list(ex.map(lambda p: "".join(
            ch.choices[0].text for ch in c.completions.create(model=M, 
                prompt=p, temperature=0, max_tokens=32, stream=True) if ch.choices), prompts))
    assert streamed == alone


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 1.5}, 400, "max_tokens"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "temperature": 9}, 400, "temperature"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "n": 0}, 400, "n"),
    ({"prompt": "x", "n": 9}, 400, "n"),
    ({"prompt": "x", "stop": [1]}, 400, "stop.list[str].0"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream"),
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": [10**9]}, 400, "prompt"),
    ({}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": 65}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "x " * 5000}, 400, "prompt"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ({"prompt": "x", "tools": [{"type": "function"}]}, 400, "tools"),
    ({"prompt": "x", "echo": True}, 400, "echo"),
])
def test_bad_completions_are_openai_errors(server, body, status, param):
    r = server.post("/v1/completions", body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param or (err["param"] or "").startswith(param.split(".")[0]), err


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 50}, "top_logprobs"),
])
def test_bad_chat_requests(server, body, param):
    r = server.post("/v1/chat/completions", body)
    assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text


def test_openai_client_sees_errors(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model=M, prompt="x", max_tokens=1000)
    with pytest.raises(openai.NotFoundError):
        c.completions.create(model="nope", prompt="x", max_tokens=1)


def test_body_limit_and_unknown_routes(server):
    r = server.post("/v1/completions", b'{"prompt": "' + b"x" * (5 << 20) + b'"}')
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    r = httpx.get(server.url + "/v1/nothing", timeout=10)
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(server.url + "/v1/completions", timeout=10)
    assert r.status_code == 405 and "error" in r.json()


def test_models_health_metrics_tokenize(server):
    c = server.client()
    assert [m.id for m in c.models.list().data] == ["shakespeare-mamba2"]
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    ids = server.post("/tokenize", {"content": "Hello there"}).json()["tokens"]
    assert server.post("/detokenize", {"tokens": ids}).json()["content"] == "Hello there"
    pieces = server.post("/tokenize", {"content": "Hi", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces).strip() == "Hi"
    assert server.post("/detokenize", {"tokens": [-1]}).status_code == 400
    before = server.metrics()
    c.completions.create(model=M, prompt="ROMEO:", max_tokens=5, temperature=0)
    after = server.metrics()
    key = 'tinyggml_requests_total{endpoint="completions",status="200"}'
    assert after[key] == before.get(key, 0) + 1
    assert after["tinyggml_generated_tokens_total"] - before["tinyggml_generated_tokens_total"] == 5
    assert after["tinyggml_prompt_tokens_cached_total"] > before["tinyggml_prompt_tokens_cached_total"]
    assert after["tinyggml_active_sequences"] == 0 and after["tinyggml_queue_depth"] == 0


def test_disconnect_mid_stream_frees_the_sequence(server):
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"prompt": "ROMEO:", "max_tokens": 64, "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 4:
                break                             # the client goes away mid-stream
    assert wait_until(lambda: server.metrics()["tinyggml_active_sequences"] == 0, 5, 0.05)
    c = server.client()                           # and the server goes on
    assert c.completions.create(model=M, prompt="x", max_tokens=2).usage.completion_tokens <= 2


def test_api_key_queue_full_and_sigterm(tmp_path):
    s = Server("-m", DEMO, "--parallel", 1, "--queue", 0, "--api-key", "sesame", "--max-tokens", 4096)
    try:
        r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1},
                   headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").completions.create(model=M, prompt="x", max_tokens=1)
        c = s.client(api_key="sesame")
        assert c.completions.create(model=M, prompt="x", max_tokens=1).choices[0].finish_reason
        # a non-streaming client that goes away frees its sequence (checked every 0.25 s)
        with pytest.raises(httpx.TimeoutException):
            s.post("/v1/completions", {"prompt": "ROMEO:", "max_tokens": 4000},
                   headers={"Authorization": "Bearer sesame"}, timeout=0.3)
        # within 1.5 s; the whole reply would take 2.5 s or more
        assert wait_until(lambda: s.metrics()["tinyggml_active_sequences"] == 0, 1.5, 0.05)
        # one long stream holds the only sequence; the next request finds the queue full
        stream = c.completions.create(model=M, prompt="ROMEO:", max_tokens=4000, stream=True, temperature=0.8)
        first = next(iter(stream))
        assert first.choices
        r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 1},
                   headers={"Authorization": "Bearer sesame"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        # SIGTERM with the stream running: the server finishes it or cancels it, and exits 0
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        for _ in stream:              # runs to its end, or is cut when the grace time is over
            pass
        assert s.proc.wait(60) == 0 and time.time() - t0 < 60
        assert "stopped (SIGTERM)" in s.proc.stderr.read()
    finally:
        if s.proc.poll() is None:
            s.proc.kill()


# ---- the engine alone -------------------------------------------------------------------------
def test_long_prefill_runs_in_pieces_beside_running_streams():
    """A 1000-token prompt is prefilled 64 tokens a step while a running stream keeps getting a
    token every step; n = 2 forks the prompt's state; a cancelled job frees its sequences."""
    import threading
    from tinyggml import Model
    from tinyggml.prefix_cache import PrefixCache
    from tinyggml.sampling import SamplerParams
    from tinyggml.server.engine import Engine, Job
    m = Model(str(DEMO), n_threads=1, n_seq_max=4)
    m.prefix_cache = PrefixCache(1 << 28)
    e = Engine(m, 4, prefill_chunk=64)
    log, lock, done = [], threading.Lock(), {}

    def emitter(name):
        def emit(ev):
            with lock:
                log.append((name, ev[0]))
            if ev[0] == "done":
                done.setdefault(name, threading.Event())
                done[name].set()
        return emit
    for name in ("a", "b"):
        done[name] = threading.Event()
    # tokenized before "a" starts: "a" (60 tokens) must still be running when "b" is submitted
    long_prompt = m.tokenize(open(DEMO.parent / "shakespeare-heldout-tempest.txt").read())[:1000]
    e.start()
    try:
        a = Job(prompt=m.tokenize("ROMEO:"), params=SamplerParams(temperature=0), max_tokens=60,
                emit=emitter("a"))
        e.submit(a)
        while not any(x == ("a", "token") for x in log):
            time.sleep(0.001)
        b = Job(prompt=long_prompt, params=SamplerParams(temperature=0), max_tokens=3, n=2,
                emit=emitter("b"))
        e.submit(b)
        assert done["b"].wait(60) and done["a"].wait(60)
        with lock:
            seq = list(log)
        start = seq.index(("b", "started"))
        first_b = seq.index(("b", "token"))
        a_between = sum(1 for x in seq[start:first_b] if x == ("a", "token"))
        assert a_between >= 1000 // 64 - 2, a_between     # a token per prefill step
        assert sum(1 for x in seq if x == ("b", "done")) == 2
        # cancelling a running job frees its sequence at the next step
        c = Job(prompt=m.tokenize("KING:"), params=SamplerParams(temperature=0), max_tokens=500,
                emit=lambda ev: None)
        e.submit(c)
        wait_until(lambda: e.active, 1)
        c.cancel()
        e.wake()
        assert wait_until(lambda: e.active == 0, 1)
    finally:
        e.shutdown()


def test_n_choices_keep_their_slots_while_prefilling():
    """A job of n = 2 takes both its slots when it starts, so a job arriving during its
    prefill waits instead of taking one (the engine once died here)."""
    import threading
    from tinyggml import Model
    from tinyggml.sampling import SamplerParams
    from tinyggml.server.engine import Engine, Job
    m = Model(str(DEMO), n_threads=1, n_seq_max=2)
    e = Engine(m, 2, prefill_chunk=16)
    done = {k: threading.Event() for k in "ab"}
    n_done = {"a": 0, "b": 0}

    errors = []

    def emitter(k, n):
        def emit(ev):
            if ev[0] == "done":
                n_done[k] += 1
                if n_done[k] == n:
                    done[k].set()
            if ev[0] == "error":
                errors.append(ev)
                done[k].set()
        return emit
    e.start()
    try:
        prompt = m.tokenize(open(DEMO.parent / "shakespeare-heldout-tempest.txt").read())[:200]
        e.submit(Job(prompt=prompt, params=SamplerParams(temperature=0), max_tokens=4, n=2,
                     emit=emitter("a", 2)))
        e.submit(Job(prompt=m.tokenize("KING:"), params=SamplerParams(temperature=0),
                     max_tokens=4, emit=emitter("b", 1)))
        assert done["a"].wait(60) and done["b"].wait(60)
        assert not errors and e.error is None, (errors, e.error)
        # the slots are freed just after "done" is sent
        assert wait_until(lambda: e.active == 0, 1)
    finally:
        e.shutdown()


@pytest.mark.parametrize("body", [b'{"prompt": "ab\\ud800cd", "max_tokens": 2}',
                                  b'{"prompt": ' + b'[' * 100000 + b']' * 100000 + b'}'])
def test_text_that_is_not_unicode_and_deep_json_are_400(server, body):
    r = server.post("/v1/completions", body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
