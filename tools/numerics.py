#!/usr/bin/env python3
"""How far tinyggml's logits are from float64, next to how far float32 itself has to be.

    python tools/numerics.py [-m mamba1-tiny,falcon-mamba-tiny,...|FILE.gguf] [-n 512,8192]
        [--seeds 2] [--window 512] [--decode 16] [--modes once,tbt] [--scans chunked,recurrent]
        [--kernels simd,scalar] [--int-gemm cpu|0|1] [-t 1] [--json out.json] [--nodes]

Reference: tests/reference/mamba_np.py in float64, the model the file defines (F16 and
quantized weights dequantized), token by token. Yardstick: the same code in float32 throughout
(`RefModel(path, dtype=np.float32)`, its LM head too): a plain float32 evaluation of the same
recurrence. For each model, length T and seed: T random token ids as the prompt, then
`--decode` more, one call each; the logits of the prompt's last `--window` positions (the
whole prompt when T <= window) and of the decoded ones are compared with float64's, pooled
over seeds: `max` abs difference (the issue's measure), `p99` (the 99th percentile over
positions of each position's max: a few positions where the model itself amplifies float32's
rounding do not decide it) and `rms`. Ratio = tinyggml / the yardstick, per statistic.

Paths: the prompt in one call (`once`: ubatches of n_ubatch = 512 tokens, of which a prompt
longer than the window is fed first with logits="last") or one token per call (`tbt`); Mamba-2
scans `chunked` or `recurrent` (Model(scan=...); Mamba-1 has one scan, shown as `-`); `simd` or
`scalar` kernels (backend.set_simd). Models: the fixtures by name (under
$TINYGGML_FIXTURES/models, default ../shared/fixtures; a bare name is its F32 file,
mamba2-tiny-q8_0 names that file), `codestral-shape` (a random Mamba-2 of
Mamba-Codestral's head shape written here: 3 layers, d_model 256, d_state 128, head_dim 64,
8 groups of 1 head, 4000-token vocabulary, untied; seed = prompt seed), or GGUF paths.
tests/test_numerics.py asserts the same quantities at T = 1024.

`--nodes`: where extra error enters. A prompt of the first length in one ubatch, every node
the reference traces (RefModel.trace: attn_norm, ssm_in, ssm_conv, ..., result_output), the
max and rms error against float64 of tinyggml's output (Model(check_finite=True) keeps every
node's) beside float32 numpy's: the first node whose ratio jumps is where it enters.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from reference.mamba_np import RefModel  # noqa: E402

import tinyggml  # noqa: E402
from tinyggml.backend import set_simd, simd_compiled  # noqa: E402
from reference.numerics import logit_errors, summarize, write_codestral_shape  # noqa: E402

FIXTURES = os.environ.get("TINYGGML_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(
    __file__)), "..", "..", "shared", "fixtures"))
F32_FIXTURES = ("mamba1-tiny", "falcon-mamba-tiny", "mamba2-tiny", "mamba2-tiny-g2-spm")
def reference_rows(path, dtype, toks, first):
    """final-norm hidden states of positions first.. of `toks` run token by token from a zero
    state, and the LM head, both in dtype."""
    ref = RefModel(path, dtype)
    return ref.forward(toks, logits=False)[2][first:], ref.lm_head


def plain_f32_logits(path, toks, first):
    hidden, head = reference_rows(path, np.float32, toks, first)
    out = np.concatenate([hidden[i:i + 256] @ head.T for i in range(0, len(hidden), 256)])
    assert out.dtype == np.float32
    return out


def tinyggml_logits(path, toks, n_prompt, first, mode, scan, simd, n_threads, int_gemm=None):
    """Logits of positions first.. (first >= 0 within the prompt): the prompt up to `first`
    without logits, the rest of it with, then the decoded tokens one call each."""
    set_simd(simd)
    try:
        m = tinyggml.Model(path, n_threads=n_threads, scan=scan, int_gemm=int_gemm)
        one = mode == "tbt"
        if first:
            if one:
                for t in toks[:first]:
                    m.eval([t], logits="last")
            else:
                m.eval(toks[:first], logits="last")
        out = [m.eval([t]) for t in toks[first:n_prompt]] if one else [m.eval(toks[first:n_prompt])]
        out += [m.eval([t]) for t in toks[n_prompt:]]
        return np.concatenate(out)
    finally:
        set_simd(True)


def model_paths(names, tmp, seed):
    for name in names:
        if name == "codestral-shape":
            path = os.path.join(tmp, f"codestral-shape-s{seed}.gguf")
            if not os.path.exists(path):
                write_codestral_shape(path, seed)
            yield name, path
        elif name.endswith(".gguf"):
            yield os.path.basename(name)[:-5], name
        else:                # a fixture: mamba2-tiny (its F32 file) or mamba2-tiny-q8_0
            path = os.path.join(FIXTURES, "models", f"{name}.gguf")
            yield name, path if os.path.exists(path) else os.path.join(
                FIXTURES, "models", f"{name}-f32.gguf")


def measure(names, lengths, seeds, window, n_decode, modes, scans, kernels, n_threads,
            int_gemm=None, log=print):
    """[{model, tokens, path, tinyggml: {max, rms, p99}, float32: {...}, ratio: {...},
    worst_seed_ratio}]: errors against float64 pooled over seeds (summarize), ratio = tinyggml /
    float32 numpy per statistic, worst_seed_ratio the largest per-seed ratio of the max."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for T in lengths:
            for seed in range(seeds):
                for name, path in model_paths(names, tmp, seed):
                    t0 = time.perf_counter()
                    rng = np.random.default_rng(1000 * seed + T)
                    m = tinyggml.Model(path, n_threads=1)
                    n_vocab, arch_m2 = m.n_vocab, m.arch == "mamba2"
                    del m
                    toks = rng.integers(0, n_vocab, T + n_decode)
                    first = max(0, T - window)
                    h64, head64 = reference_rows(path, np.float64, toks, first)
                    yard = logit_errors(h64, head64, plain_f32_logits(path, toks, first))
                    for mode in modes:
                        for scan in (scans if arch_m2 else ["-"]):
                            for simd in kernels:
                                lg = tinyggml_logits(path, toks, T, first, mode,
                                                     None if scan == "-" else scan,
                                                     simd == "simd", n_threads, int_gemm)
                                r = runs.setdefault((name, T, f"{mode}/{scan}/{simd}"),
                                                    dict(n_vocab=n_vocab, tg=[], f32=[]))
                                r["tg"].append(logit_errors(h64, head64, lg))
                                r["f32"].append(yard)
                    log(f"  {name} T={T} seed {seed}: float32 numpy max {yard[0].max():.3g} "
                        f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    rows = []
    for (name, T, path), r in runs.items():
        tg, f32 = summarize(r["tg"], r["n_vocab"]), summarize(r["f32"], r["n_vocab"])
        worst = max(a[0].max() / b[0].max() for a, b in zip(r["tg"], r["f32"]))
        rows.append(dict(model=name, tokens=T, path=path, tinyggml=tg, float32=f32,
                         ratio={k: tg[k] / f32[k] for k in tg}, worst_seed_ratio=float(worst),
                         seeds=len(r["tg"])))
    return rows


def node_errors(path, n_tokens, seed, scan, simd, n_threads):
    """Node by node, a prompt of n_tokens in one ubatch: [(node, max |float64|, tinyggml's max
    abs error, float32 numpy's, tinyggml's rms error, float32 numpy's)] in graph order, for
    the nodes the reference traces (RefModel.trace: the same names)."""
    ref = {}
    for dtype in (np.float64, np.float32):
        r = RefModel(path, dtype)
        toks = np.random.default_rng(1000 * seed + n_tokens).integers(
            0, r.hparams["n_vocab"], n_tokens)
        r.trace = {}
        r.forward(toks)
        ref[dtype] = {k: np.stack(v) for k, v in r.trace.items()}
    set_simd(simd)
    try:
        m = tinyggml.Model(path, n_threads=n_threads, scan=scan, n_ubatch=n_tokens,
                           snapshot_every=0, check_finite=True)
        m.eval(toks)
        c = m.compiled(n_tokens, n_tokens, ("*",))
        out = []
        for t in c.graph.nodes:
            want = ref[np.float64].get(t.name)
            if want is None or t.name not in c.graph.outputs:
                continue
            got = c.plan.numpy(t).reshape(want.shape)
            plain = ref[np.float32][t.name]
            out.append((t.name, float(np.abs(want).max()), float(np.abs(got - want).max()),
                        float(np.abs(plain - want).max()), float(np.sqrt(((got - want) ** 2).mean())),
                        float(np.sqrt(((plain - want) ** 2).mean()))))
        return out
    finally:
        set_simd(True)


def print_nodes(name, T, path_label, rows, out=sys.stdout):
    print(f"\n{name}, {T} tokens in one ubatch, {path_label}: errors against float64 node by "
          f"node\n", file=out)
    print("| node | max abs (f64) | tinyggml max err | float32 numpy max err | ratio | "
          "rms ratio |", file=out)
    print("|---|---:|---:|---:|---:|---:|", file=out)
    for node, ref, tg, f32, tg_rms, f32_rms in rows:
        print(f"| {node} | {ref:.3g} | {tg:.2e} | {f32:.2e} | {tg / f32:.2f}x | "
              f"{tg_rms / f32_rms:.2f}x |", file=out)


def print_table(rows, out=sys.stdout):
    print("| model | tokens | path (prompt/scan/kernels) | float32 numpy max | tinyggml max | "
          "ratio max (worst seed) | ratio p99 | ratio rms |", file=out)
    print("|---|---:|---|---:|---:|---:|---:|---:|", file=out)
    for r in rows:
        q = r["ratio"]
        print(f"| {r['model']} | {r['tokens']} | {r['path']} | {r['float32']['max']:.2e} | "
              f"{r['tinyggml']['max']:.2e} | {q['max']:.2f}x ({r['worst_seed_ratio']:.2f}x) | "
              f"{q['p99']:.2f}x | {q['rms']:.2f}x |", file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--models", default=",".join(F32_FIXTURES + ("codestral-shape",)))
    ap.add_argument("-n", "--tokens", default="512,8192", help="prompt lengths")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--window", type=int, default=512, help="prompt positions whose logits count")
    ap.add_argument("--decode", type=int, default=16, help="tokens decoded one by one after")
    ap.add_argument("--modes", default="once,tbt")
    ap.add_argument("--scans", default="chunked,recurrent")
    ap.add_argument("--kernels", default="simd,scalar" if simd_compiled() else "scalar")
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--int-gemm", choices=["cpu", "0", "1"], default="cpu",
                    help="quantized batches on the integer panels: the CPU's default, off, on")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--nodes", action="store_true",
                    help="instead: node by node errors of a prompt of the first length (seed 0) "
                         "in one ubatch, per scan and kernels (where extra error enters)")
    a = ap.parse_args()
    if a.nodes:
        T = int(a.tokens.split(",")[0])
        with tempfile.TemporaryDirectory() as tmp:
            for name, path in model_paths(a.models.split(","), tmp, 0):
                m2 = tinyggml.Model(path, n_threads=1).arch == "mamba2"
                for scan in (a.scans.split(",") if m2 else ["-"]):
                    for k in a.kernels.split(","):
                        rows = node_errors(path, T, 0, None if scan == "-" else scan,
                                           k == "simd", a.threads)
                        print_nodes(name, T, f"{scan}/{k}", rows)
        return
    rows = measure(a.models.split(","), [int(n) for n in a.tokens.split(",")], a.seeds, a.window,
                   a.decode, a.modes.split(","), a.scans.split(","), a.kernels.split(","),
                   a.threads, None if a.int_gemm == "cpu" else a.int_gemm == "1")
    rows.sort(key=lambda r: (r["model"], r["tokens"], r["path"]))
    print_table(rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
