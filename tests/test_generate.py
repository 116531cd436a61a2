"""Text in, text out, on models the tests write (no shared fixtures needed): generation through
the Python API and `tinyggml-cli run` / `perplexity` by subprocess."""
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinyggml
from tinyggml.tools.testing import rewrite_gguf, write_random_model

CFG = dict(arch="mamba2", n_embd=32, n_layer=2, d_state=8, head_dim=16, n_vocab=300)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    p = d / "m.gguf"
    write_random_model(p, seed=5, **CFG)
    # output_norm = 0 makes every logit 0, so greedy picks id 0 = EOS at once
    import gguf
    n = CFG["n_embd"]
    eos = d / "eos.gguf"
    rewrite_gguf(p, eos, replace={"output_norm.weight": np.zeros(n, np.float32)})
    txt = d / "text.txt"
    txt.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return {"model": p, "eos": eos, "text": txt}


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "tinyggml.tools.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, **kw)


def test_generate_greedy_matches_manual_loop(paths):
    m = tinyggml.Model(paths["model"], n_threads=2)
    text = m.generate("hello world", max_tokens=12, temperature=0)
    ids = m.tokenize("hello world")
    m.reset()
    logits = m.eval(ids)[-1]
    want = []
    for _ in range(12):
        t = int(np.argmax(logits))
        if m.tokenizer.is_eog(t):
            break
        want.append(t)
        logits = m.eval([t])[-1]
    assert m.last_generation.tokens == want
    assert text == m.detokenize(want)


def test_generate_stream_and_seed(paths):
    m = tinyggml.Model(paths["model"], n_threads=1)
    pieces = list(m.generate("abc", max_tokens=20, temperature=1.0, seed=3, stream=True))
    assert len(pieces) > 1
    again = m.generate("abc", max_tokens=20, temperature=1.0, seed=3)
    assert "".join(pieces) == again
    assert m.last_generation.timings.gen_tokens == len(m.last_generation.tokens)


def test_generate_stops_at_eos(paths):
    m = tinyggml.Model(paths["eos"], n_threads=1)
    assert m.generate("abc", max_tokens=50, temperature=0) == ""
    assert m.last_generation.timings.stop == "eos"


def test_cli_run_streams_text_and_timings(paths):
    r = cli("run", "-m", paths["model"], "-p", "hello", "-n", 16, "--temp", 0, "-t", 2)
    assert r.returncode == 0, r.stderr
    m = tinyggml.Model(paths["model"], n_threads=1)
    assert r.stdout == "hello" + m.generate("hello", max_tokens=16, temperature=0) + "\n"
    for what in ("load time", "prompt eval time", "eval time", "tokens per second"):
        assert what in r.stderr
    r2 = cli("run", "-m", paths["model"], "-f", paths["text"], "-n", 4, "--seed", 1)
    assert r2.returncode == 0 and r2.stdout.startswith("the quick brown fox")


def test_cli_run_eos_stops_early(paths):
    r = cli("run", "-m", paths["eos"], "-p", "hi", "-n", 50, "--temp", 0)
    assert r.returncode == 0 and r.stdout == "hi\n"
    assert "0 runs" in r.stderr


def test_cli_ctrl_c_stops_cleanly_with_timings(paths):
    # a shell that starts jobs in the background ignores SIGINT in them, and Python keeps an
    # ignored SIGINT ignored: give the child the default disposition, as a terminal would
    # --ignore-eos: a random model samples its end-of-text now and then (~1 in 300 tokens),
    # which ended the run with 0 before the signal came in one full-suite run
    p = subprocess.Popen([sys.executable, "-m", "tinyggml.tools.cli", "run", "-m", str(paths["model"]),
                          "-p", "x", "-n", "-1", "-t", "1", "--ignore-eos"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.set_blocking(p.stdout.fileno(), False)
    got, t0 = b"", time.time()
    while len(got) < 20 and time.time() - t0 < 60:        # wait until text is streaming
        chunk = p.stdout.read()
        got += chunk or b""
        time.sleep(0.05)
    assert len(got) >= 20, "no streamed output"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130
    err = err.decode()
    assert "eval time" in err and "Traceback" not in err


def test_cli_run_bad_flags_and_missing_model(paths, tmp_path):
    for args in (["run", "-m", paths["model"]], ["run", "-p", "x", "-n", "abc"],
                 ["run", "-p", "x", "-t", "0"], ["run", "-p", "x", "-f", "y"], ["run", "--bogus"]):
        r = cli(*args)
        assert r.returncode == 2 and "error:" in r.stderr, args
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("run", "-m", tmp_path / "none.gguf", "-p", "x")
    assert r.returncode == 1 and "no such file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("run", "-m", paths["model"], "-p", "x", "--top-p", "2")     # a usage error naming
    assert r.returncode == 2 and "--top-p" in r.stderr and "(0, 1]" in r.stderr   # the flag
    r = cli("perplexity", "-m", paths["model"], "-f", tmp_path / "none.txt")
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_perplexity_equals_numpy_from_eval(paths):
    from tinyggml.tools.perplexity import perplexity
    m = tinyggml.Model(paths["model"], n_threads=2, n_ubatch=64)
    toks = m.tokenize(paths["text"].read_text())
    ctx = 32
    r = perplexity(m, toks, ctx)
    nll = []
    for c in range(len(toks) // ctx):
        chunk = list(toks[c * ctx:(c + 1) * ctx])
        if m.tokenizer.add_bos:
            chunk[0] = m.tokenizer.bos_id
        m.reset(0)
        lg = m.eval(chunk).astype(np.float64)
        for j in range(ctx // 2, ctx - 1):
            p = np.exp(lg[j] - lg[j].max())
            nll.append(-math.log(p[chunk[j + 1]] / p.sum()))
    assert r.n_scored == len(nll) and r.n_chunks == len(toks) // ctx
    assert r.ppl == pytest.approx(math.exp(np.mean(nll)), rel=1e-9)
    r2 = cli("perplexity", "-m", paths["model"], "-f", paths["text"], "--ctx", ctx)
    assert r2.returncode == 0, r2.stderr
    assert f"Final estimate: PPL = {r.ppl:.4f}" in r2.stdout and "[1]" in r2.stdout


# ---- the bundled demo model (models/, shipped with the package) ------------------------------
from tinyggml.tools.cli import default_model  # noqa: E402


def test_demo_model_runs_by_default():
    assert os.path.exists(default_model())
    r = cli("run", "-p", "ROMEO:", "-n", 40, "--temp", 0, "-t", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout) > 60
    words = r.stdout.split()
    assert len(words) > 10 and sum(w.isalpha() for w in words) > len(words) / 2


def test_demo_stream_continues_prompt_text():
    """Streamed pieces, joined, are exactly the text the prompt + generated ids decode to,
    minus the prompt's own text (SPM: no lost space between prompt and reply)."""
    m = tinyggml.Model(default_model(), n_threads=1)
    prompt = "JULIET: O Romeo,"
    text = "".join(m.generate(prompt, max_tokens=25, temperature=0.7, seed=1, stream=True))
    ids = m.tokenize(prompt) + m.last_generation.tokens
    head = m.detokenize(m.tokenize(prompt))    # " JULIET: O Romeo," (llama.cpp keeps the space after BOS)
    assert head.strip() == prompt
    assert m.detokenize(ids) == head + text


def test_demo_perplexity_equals_transformers():
    """The model card's held-out perplexity was computed by transformers at training time;
    tinyggml must reproduce it on the same tokens (to ~1e-8 relative; measured 5e-9)."""
    import json
    from tinyggml.tools.perplexity import perplexity
    here = os.path.dirname(default_model())
    stats = json.load(open(os.path.join(here, "shakespeare-mamba2.json")))
    m = tinyggml.Model(default_model(), n_threads=2)
    text = open(os.path.join(here, "shakespeare-heldout-tempest.txt"), encoding="utf-8").read()
    toks = m.tokenize(text)
    assert len(toks) == stats["heldout_tokens"]
    r = perplexity(m, toks, stats["ppl_ctx"])
    assert r.ppl == pytest.approx(stats["ppl_heldout_transformers"], rel=1e-6)
    assert r.err == pytest.approx(stats["ppl_heldout_err"], rel=1e-4)


def test_cli_interactive_continues_the_sequence(paths):
    """--interactive: each input line continues the same sequence; end of input ends cleanly."""
    p = subprocess.run([sys.executable, "-m", "tinyggml.tools.cli", "run", "-m", str(paths["model"]),
                        "-p", "hello", "-n", "4", "--temp", "0", "--interactive"],
                       input="abc\nxyz\n", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("hello") and p.stdout.count("\n") >= 3
    assert p.stderr.count("> ") == 3 and "eval time" in p.stderr
    # the same turns through the API, continuing one sequence, give the same replies
    m = tinyggml.Model(paths["model"], n_threads=1)
    from tinyggml.generate import Generation, start
    from tinyggml.sampling import SamplerParams
    params = SamplerParams(temperature=0)
    replies = ["".join(start(m, "hello", 4, params))]
    for line in ("abc\n", "xyz\n"):
        replies.append("".join(Generation(m, m.tokenize(line, add_bos=False), params, 4, reset=False)))
    # piped input is echoed (stdout reads as the whole session)
    assert p.stdout == "hello" + replies[0] + "\n> abc\n" + replies[1] + "\n> xyz\n" + replies[2] + "\n"


def test_cli_ignore_eos(paths):
    """The end-of-text token is never sampled (as llama-cli --ignore-eos): 5 tokens of text."""
    r = cli("run", "-m", paths["eos"], "-p", "hi", "-n", 5, "--temp", 0, "--ignore-eos")
    assert r.returncode == 0 and "5 runs" in r.stderr and len(r.stdout) > len("hi\n")


def test_cli_ctrl_c_while_writing_leaves_no_file(tmp_path):
    """Ctrl-C during make-model (a file being written): exit 130, one line, no file and no
    temporary left behind."""
    out = tmp_path / "big.gguf"
    p = subprocess.Popen([sys.executable, "-m", "tinyggml", "make-model", "mamba2-130m", "-o",
                          str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while not any(tmp_path.iterdir()) and time.time() - t0 < 60:     # writing has begun
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err.decode().strip() == "tinyggml-cli: interrupted"
    assert list(tmp_path.iterdir()) == []


def test_cli_interactive_stops_at_the_context(paths):
    """-c bounds the whole session: prompt, each typed line and every reply together."""
    p = subprocess.run([sys.executable, "-m", "tinyggml.tools.cli", "run", "-m", str(paths["model"]),
                        "-p", "hello", "-n", "8", "--temp", "0", "-i", "-c", "30", "--ignore-eos"],
                       input="abc\nxyz\nmore\nand more\n", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "the context (-c 30) is full" in p.stderr
    prompt = int(re.search(r"prompt eval time =.*/\s+(\d+) tokens", p.stderr).group(1))
    runs = int(re.search(r"eval time\s+=.*/\s+(\d+) runs", p.stderr.split("prompt eval")[1]).group(1))
    assert prompt + runs <= 30
