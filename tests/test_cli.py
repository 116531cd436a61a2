"""tinyggml-cli end to end, by subprocess: graph and info on a model the test writes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import tinyggml

from tinyggml.tools.testing import write_random_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "m2.gguf"
    write_random_model(p, arch="mamba2", n_embd=32, n_layer=2, d_state=8, head_dim=16,
                       n_group=2, n_vocab=100)
    return p


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tinyggml.tools.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_graph_text_lists_every_node(model):
    r = cli("graph", "-m", model, "--tokens", 5, "--seqs", 2)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "blk.1.ssm_scan" in out and "ssm_conv" in out and "result_output" in out
    assert "[100, 5]" in out                                # logits {n_vocab, n_tokens}
    assert "arena:" in out and "inp_seq_info" in out


def test_graph_json_and_dot(model, tmp_path):
    r = cli("graph", "-m", model, "--tokens", 3, "--format", "json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    names = [n["name"] for n in g["nodes"]]
    assert "blk.0.ssm_scan" in names and g["arena_bytes"] > 0
    scan = g["nodes"][names.index("blk.0.ssm_scan")]
    assert scan["op"] == "ssm_scan" and scan["shape"] == [16, 4, 3] and "cache_ssm_l0" in scan["src"]
    out = tmp_path / "g.dot"
    r = cli("graph", "-m", model, "-o", out)
    assert r.returncode == 0 and out.read_text().startswith("digraph")


def test_graph_render(model, tmp_path):
    out = tmp_path / "g.svg"
    if shutil.which("dot"):
        r = cli("graph", "-m", model, "-o", out)
        assert r.returncode == 0, r.stderr
        assert "<svg" in out.read_text()
    # without Graphviz on PATH: a clear message, exit 1, no traceback
    env = dict(os.environ, PATH=str(tmp_path))
    r = cli("graph", "-m", model, "-o", tmp_path / "h.png", env=env)
    assert r.returncode == 1
    assert "Graphviz" in r.stderr and "Traceback" not in r.stderr


def test_info(model):
    r = cli("info", "-m", model)
    assert r.returncode == 0, r.stderr
    assert "arch: mamba2" in r.stdout and "blk.1.ssm_norm.weight" in r.stdout
    assert "state bytes per sequence: " in r.stdout
    from tinyggml.backend import int_gemm_compiled, simd_compiled
    line = next(l for l in r.stdout.splitlines() if l.startswith("backend: "))
    assert ("AVX2/FMA/F16C kernels" in line) == simd_compiled()
    assert ("integer panels" in line) == bool(int_gemm_compiled()) and int_gemm_compiled() in line
    opts = tinyggml.GraphOptions.for_cpu()          # the graph options in use, said in full
    assert ("integer GEMM for every quantized batch" in line) == opts.int_gemm
    r = cli("info", "-m", model, env={**os.environ, "TINYGGML_FORCE_SCALAR": "1"})
    assert "backend: portable scalar kernels" in r.stdout


@pytest.mark.parametrize("args", [["graph"], ["graph", "-m"], ["frobnicate"], ["graph", "-m", "x", "--tokens", "abc"], []])
def test_bad_flags_exit_2(args):
    r = cli(*args)
    assert r.returncode == 2 and "error:" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_model_one_line_exit_1(tmp_path):
    r = cli("graph", "-m", tmp_path / "missing.gguf")
    assert r.returncode == 1 and "no such file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\0\0\0" + b"\xff" * 20)
    r = cli("info", "-m", bad)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_graph_bad_sizes(model):
    r = cli("graph", "-m", model, "--tokens", 2, "--seqs", 3)
    assert r.returncode == 2 and "--seqs" in r.stderr


def test_convert_cli(tmp_path):
    from conftest import FIXTURES, HAVE_FIXTURES
    r = cli("convert", tmp_path / "nothing", "-o", tmp_path / "x.gguf")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.gguf").exists()
    if not HAVE_FIXTURES:
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    out = tmp_path / "c.gguf"
    r = cli("convert", FIXTURES / "hf" / "mamba2-tiny-g2-spm", "-o", out, "--outtype", "f16", "-q")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr
    r = cli("run", "-m", out, "-p", "The license", "-n", 5, "--temp", 0)
    assert r.returncode == 0 and r.stdout.startswith("The license"), r.stderr


def test_bench_json(model):
    r = cli("bench", "-m", model, "-p", "16", "-n", "4", "-d", "0,8", "-r", 2, "-t", 1, "-o", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    tests = [x["test"] for x in out["results"]]
    assert tests == ["pp16", "tg4", "tg4@d8"]
    assert all(x["ts_median"] > 0 and len(x["ts_all"]) == 2 for x in out["results"])
    assert out["state_bytes_per_sequence"] > 0 and out["peak_rss_bytes"] > 0
    assert out["scan"] == "auto"
    r = cli("bench", "-m", model, "-p", "32", "-n", "0", "-r", 1, "-t", 1, "--scan", "recurrent", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["scan"] == "recurrent", r.stderr
    r = cli("bench", "-m", model, "-p", "0", "-n", "4", "--seqs", "1,3", "-d", "0,8", "-r", 1,
            "-t", 1, "-o", "json")
    res = json.loads(r.stdout)["results"]
    assert [(x["test"], x["seqs"]) for x in res] == [("tg4", 1), ("tg4x3", 3), ("tg4@d8", 1),
                                                     ("tg4x3@d8", 3)], r.stderr
    assert all(x["per_seq"] == pytest.approx(x["ts_median"] / x["seqs"]) for x in res)
    r = cli("bench", "-m", model, "-p", "x")
    assert r.returncode == 2
    r = cli("bench", "-m", model, "--scan", "ssd")
    assert r.returncode == 2 and "--scan" in r.stderr


def test_bench_alternates_depths():
    """A tgN's depths alternate repetition by repetition (their ratio measured side by side on a
    drifting machine); the results keep their order."""
    from tinyggml.tools.bench import run_bench

    class Stub:                       # records what each repetition evaluates
        n_vocab, path, n_threads, threads_auto = 100, "stub.gguf", 1, False

        def __init__(self):
            self.log = []

        def reset(self, seq=None):
            self.log.append([])

        def eval(self, toks, seq_id=0, logits="all"):
            self.log[-1].append(len(toks))

    m = Stub()
    res = run_bench(m, pp=(3,), tg=(2,), depths=(0, 5), reps=2)
    assert [r.test for r in res] == ["pp3", "tg2", "tg2@d5"]
    assert all(len(r.ts_all) == 2 and r.ts_median > 0 for r in res)
    # pp: warm-up + 2; tg: both warm-ups, then depth 0 and depth 5 in turn; a last reset
    assert m.log == [[3]] * 3 + [[1, 1], [5, 1, 1]] * 3 + [[]]


def test_quantize_cli(model, tmp_path):
    out = tmp_path / "q.gguf"
    r = cli("quantize", model, out, "q8_0", "-q")
    assert r.returncode == 0, r.stderr
    r = cli("run", "-m", out, "-p", "x", "-n", 3, "--temp", 0)
    assert r.returncode == 0, r.stderr
    r = cli("quantize", model, tmp_path / "z.gguf", "q9_k")
    assert r.returncode == 2 and "TYPE" in r.stderr and "Q4_K_M" in r.stderr
    r = cli("quantize", tmp_path / "none.gguf", tmp_path / "z.gguf", "q4_0")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "z.gguf").exists()
