#!/usr/bin/env python3
"""Hash model logits over every execution path, to show that a refactor changed no bit.

    python tools/logit_hash.py [-o hashes.json] [--compare before.json]

For each model (the reference fixtures when found, the demo model, and small random models of
each architecture in F32, F16 and the quantized types) and each path (prompt at once: chunked
and recurrent scans; token by token; two sequences in one batch; a quantized batch on each side
of the integer / float panel threshold; the integer GEMM on and off; SIMD and scalar kernels),
the SHA-256 of the float32 logits. `--compare` prints every entry that differs from a previous
run and exits 1 if any does.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import sys
import tempfile

import numpy as np

import tinyggml
from tinyggml import backend

FIXTURES = os.environ.get("TINYGGML_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "..",
                                                            "shared", "fixtures"))


def _h(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, np.float32).tobytes()).hexdigest()[:16]


def _model(path, scan, int_gemm):
    """A Model with the integer GEMM for wide quantized batches on or off, whichever API this
    checkout has for it (an option of the model, or the older module switch)."""
    params = inspect.signature(tinyggml.Model.__init__).parameters
    if "int_gemm" in params:
        return tinyggml.Model(path, n_threads=2, scan=scan, int_gemm=int_gemm)
    from tinyggml import ops
    ops.QUANT_INT_GEMM = int_gemm
    return tinyggml.Model(path, n_threads=2, scan=scan)


def paths(path: str, quantized: bool) -> dict:
    out = {}
    rng = np.random.default_rng(7)
    for simd in (True, False):
        if not simd and not backend.simd_compiled():
            continue
        backend.set_simd(simd)
        for int_gemm in ((False, True) if quantized else (False,)):
            for scan in ("chunked", "recurrent"):
                tag = f"{'simd' if simd else 'scalar'}/{'igemm' if int_gemm else 'fgemm'}/{scan}"
                m = _model(path, scan, int_gemm)
                V = m.n_vocab
                p = rng.integers(0, V, 61).tolist()
                out[f"{tag}/prompt61"] = _h(m.eval(p, 0))
                out[f"{tag}/step"] = _h(np.concatenate([m.eval([t], 0) for t in p[:5]]))
                m.reset()
                out[f"{tag}/prompt20"] = _h(m.eval(p[:20], 0))
                m.reset()
                out[f"{tag}/prompt3"] = _h(m.eval(p[:3], 0))
                m.reset()
                b = m.eval_batch({0: p[:13], 5: p[13:40], 2: p[40:41]})
                out[f"{tag}/batch"] = _h(np.concatenate([b[k] for k in sorted(b)]))
                b = m.eval_batch({0: [1], 5: [2], 2: [3]}, logits="last")
                out[f"{tag}/batch_step"] = _h(np.concatenate([b[k] for k in sorted(b)]))
    backend.set_simd(True)
    return out


def models(tmp: str) -> list:
    from tinyggml.tools.make_model import PRESETS  # noqa: F401  (presence check only)
    from tinyggml.tools.testing import write_random_model
    found = []
    if os.path.isdir(os.path.join(FIXTURES, "models")):
        for f in sorted(os.listdir(os.path.join(FIXTURES, "models"))):
            found.append((f, os.path.join(FIXTURES, "models", f), "q" in f.split("-")[-1]))
    demo = os.path.join(os.path.dirname(tinyggml.__file__), "..", "models", "shakespeare-mamba2.gguf")
    if os.path.exists(demo):
        found.append(("demo", demo, False))
    for arch, kw in (("mamba", {}), ("falcon", {"dt_b_c_rms": True}),
                     ("mamba2", {"head_dim": 16, "n_group": 2})):
        for wtype in ("f32", "f16"):
            p = os.path.join(tmp, f"{arch}-{wtype}.gguf")
            write_random_model(p, "mamba2" if arch == "mamba2" else "mamba", n_embd=256,
                               n_layer=2, d_state=32, n_vocab=600, wtype=wtype, seed=3, **kw)
            found.append((f"random-{arch}-{wtype}", p, False))
    # quantized random models through the project's own quantizer
    try:
        from tinyggml.tools.quantize import quantize_file as qfile
    except ImportError:
        from tinyggml.tools.quantize import quantize_file as qfile
    for arch in ("mamba", "mamba2"):
        src = os.path.join(tmp, f"{arch}-f32.gguf")
        for qt in ("q4_0", "q8_0", "q4_k", "q6_k", "q5_1", "q3_k"):
            dst = os.path.join(tmp, f"{arch}-{qt}.gguf")
            qfile(src, dst, qt, progress=False)
            found.append((f"random-{arch}-{qt}", dst, True))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", help="write the hashes here (JSON)")
    ap.add_argument("--compare", help="a previous run's JSON: report every difference")
    a = ap.parse_args()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, q in models(tmp):
            for k, v in paths(path, q).items():
                res[f"{name}/{k}"] = v
            print(f"{name}: done", file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=0, sort_keys=True)
    print(f"{len(res)} hashes")
    if a.compare:
        with open(a.compare) as f:
            old = json.load(f)
        diff = sorted(k for k in set(old) | set(res) if old.get(k) != res.get(k))
        for k in diff:
            print(f"DIFF {k}: {old.get(k)} -> {res.get(k)}")
        print(f"{len(diff)} of {len(set(old) | set(res))} differ")
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
