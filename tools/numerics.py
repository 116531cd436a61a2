#!/usr/bin/env python3
"""How far tinyggml's logits are from float64, next to how far float32 itself has to be.

    python tools/numerics.py [-m mamba1-tiny,falcon-mamba-tiny,...|FILE.gguf] [-n 512,8192]
        [--seeds 2] [--window 512] [--decode 16] [--modes once,tbt] [--scans chunked,recurrent]
        [--kernels simd,scalar] [-t 1] [--json out.json]

Reference: tests/reference/mamba_np.py in float64, the model the file defines (F16 and
quantized weights dequantized), token by token. Yardstick: the same code in float32 throughout
(`RefModel(path, dtype=np.float32)`, its LM head too): a plain float32 evaluation of the same
recurrence. For each model, length T and seed: T random token ids as the prompt, then
`--decode` more, one call each; the error is the max abs logit difference over the prompt's
last `--window` positions and the decoded ones (the whole prompt when T <= window), the max
over seeds, for tinyggml and for the yardstick; ratio = tinyggml / yardstick.

Paths: the prompt in one call (`once`: ubatches of n_ubatch = 512 tokens, of which a prompt
longer than the window is fed first with logits="last") or one token per call (`tbt`); Mamba-2
scans `chunked` or `recurrent` (Model(scan=...); Mamba-1 has one scan, shown as `-`); `simd` or
`scalar` kernels (backend.set_simd). Models: the F32 fixtures by name (under
$TINYGGML_FIXTURES/models, default ../shared/fixtures), `codestral-shape` (a random Mamba-2 of
Mamba-Codestral's head shape written here: 3 layers, d_model 256, d_state 128, head_dim 64,
8 groups of 1 head, 4000-token vocabulary, untied; seed = prompt seed), or GGUF paths.
tests/test_numerics.py asserts the same quantity at T = 1024.
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
from tinyggml.tools.testing import write_random_model  # noqa: E402

FIXTURES = os.environ.get("TINYGGML_FIXTURES", os.path.join(os.path.dirname(os.path.abspath(
    __file__)), "..", "..", "shared", "fixtures"))
F32_FIXTURES = ("mamba1-tiny", "falcon-mamba-tiny", "mamba2-tiny", "mamba2-tiny-g2-spm")
CODESTRAL_SHAPE = dict(n_embd=256, n_layer=3, d_state=128, head_dim=64, n_group=8, n_vocab=4000,
                       tied=False)


def write_codestral_shape(path, seed):
    """A random Mamba-2 with Mamba-Codestral-7B's head shape (d_state 128, head_dim 64, one
    head per group), small: the parameters drawn as the fixtures' (tinyggml.tools.testing)."""
    return write_random_model(path, "mamba2", seed=seed, **CODESTRAL_SHAPE)


def max_abs_logit_error(hidden, lm_head, got, rows=256):
    """max |hidden @ lm_head.T - got|, by blocks of rows (T x n_vocab float64 is large)."""
    err = 0.0
    for i in range(0, len(hidden), rows):
        err = max(err, float(np.abs(hidden[i:i + rows] @ lm_head.T - got[i:i + rows]).max()))
    return err


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


def tinyggml_logits(path, toks, n_prompt, first, mode, scan, simd, n_threads):
    """Logits of positions first.. (first >= 0 within the prompt): the prompt up to `first`
    without logits, the rest of it with, then the decoded tokens one call each."""
    set_simd(simd)
    try:
        m = tinyggml.Model(path, n_threads=n_threads, scan=scan)
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
        else:
            yield name, os.path.join(FIXTURES, "models", f"{name}-f32.gguf")


def measure(names, lengths, seeds, window, n_decode, modes, scans, kernels, n_threads, log=print):
    """[{model, tokens, path, err, yardstick, worst_seed_ratio}] (errors: max over seeds)."""
    rows = {}
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
                    yard = max_abs_logit_error(h64, head64, plain_f32_logits(path, toks, first))
                    for mode in modes:
                        for scan in (scans if arch_m2 else ["-"]):
                            for simd in kernels:
                                lg = tinyggml_logits(path, toks, T, first, mode,
                                                     None if scan == "-" else scan,
                                                     simd == "simd", n_threads)
                                err = max_abs_logit_error(h64, head64, lg)
                                key = (name, T, f"{mode}/{scan}/{simd}")
                                r = rows.setdefault(key, dict(model=name, tokens=T, path=key[2],
                                                              err=0.0, yardstick=0.0,
                                                              worst_seed_ratio=0.0, seeds=0))
                                r["err"] = max(r["err"], err)
                                r["yardstick"] = max(r["yardstick"], yard)
                                r["worst_seed_ratio"] = max(r["worst_seed_ratio"], err / yard)
                                r["seeds"] += 1
                    log(f"  {name} T={T} seed {seed}: float32 numpy {yard:.3g} "
                        f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    for r in rows.values():
        r["ratio"] = r["err"] / r["yardstick"]
    return list(rows.values())


def print_table(rows, out=sys.stdout):
    print("| model | tokens | float32 numpy vs f64 | path (prompt/scan/kernels) | tinyggml vs f64 "
          "| ratio | worst seed |", file=out)
    print("|---|---:|---:|---|---:|---:|---:|", file=out)
    for r in rows:
        print(f"| {r['model']} | {r['tokens']} | {r['yardstick']:.2e} | {r['path']} | "
              f"{r['err']:.2e} | {r['ratio']:.2f}x | {r['worst_seed_ratio']:.2f}x |", file=out)


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
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = measure(a.models.split(","), [int(n) for n in a.tokens.split(",")], a.seeds, a.window,
                   a.decode, a.modes.split(","), a.scans.split(","), a.kernels.split(","),
                   a.threads)
    rows.sort(key=lambda r: (r["model"], r["tokens"], r["path"]))
    print_table(rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
