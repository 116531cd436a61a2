"""Qwen3.5's gated delta rule alone: token by token against the chunked (WY) form, by sequence
length and chunk size, on one layer of a real shape (default Qwen3.5-0.8B: 16 value heads over
16 key heads, d_k = d_v = 128). Medians of repeated runs of a one-node graph; what it measured
chose the defaults of GraphOptions.delta_chunk and GraphOptions.delta_min_len.

    python tools/bench_delta.py [-t 2] [--heads 16] [--key-heads 16] [--d-k 128] [--d-v 128]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_scan import time_graph  # noqa: E402
from tinyggml import ops  # noqa: E402
from tinyggml.graph import Graph  # noqa: E402
from tinyggml.options import GraphOptions  # noqa: E402
from tinyggml.tensor import F32, I32, INPUT, STATE, leaf  # noqa: E402


def delta_graph(n_t, nh, nk, dk, dv, algo, chunk, rng):
    def mk(name, arr, type=F32, flags=INPUT):
        return leaf(type, tuple(reversed(arr.shape)), name, flags, data=arr)
    width = 2 * nk * dk + nh * dv                       # the conv output's row, as in the model
    qkv = mk("qkv", rng.standard_normal((n_t, width)).astype(np.float32))
    q = ops.view(qkv, (dk, nk, n_t), (4, dk * 4, width * 4), 0)
    k = ops.view(qkv, (dk, nk, n_t), (4, dk * 4, width * 4), nk * dk * 4)
    v = ops.view(qkv, (dv, nh, n_t), (4, dv * 4, width * 4), 2 * nk * dk * 4)
    alpha = mk("alpha", rng.normal(0, 1, (n_t, nh)).astype(np.float32))
    b = mk("b", rng.normal(0, 1, (n_t, nh)).astype(np.float32))
    A = mk("A", -np.exp(rng.uniform(-1, 2, nh)).astype(np.float32))
    dtb = mk("dt_bias", rng.normal(0, 1, nh).astype(np.float32))
    state = mk("state", np.zeros((1, nh, dv, dk), np.float32), flags=STATE)
    info = mk("info", np.array([[0, 0, n_t]], np.int32), type=I32)
    g = Graph()
    g.output(ops.gated_delta(state, q, k, v, alpha, b, A, dtb, info,
                             opts=GraphOptions(scan=algo, delta_chunk=chunk)))
    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--key-heads", type=int, default=16)
    ap.add_argument("--d-k", type=int, default=128)
    ap.add_argument("--d-v", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=15)
    ap.add_argument("--chunks", default="16,32,48,64,96")
    ap.add_argument("--lens", default="4,8,16,32,64,128,512")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (a.heads, a.key_heads, a.d_k, a.d_v)
    chunks = [int(c) for c in a.chunks.split(",")]
    print(f"one layer: {a.heads} value heads over {a.key_heads} key heads, d_k {a.d_k}, d_v {a.d_v}, "
          f"{a.threads} threads; median of {a.reps} runs")
    print("| tokens | recurrent | " + " | ".join(f"chunked {c}" for c in chunks) + " | auto picks |")
    print("|---:|---:|" + "---:|" * len(chunks) + "---|")
    for n in (int(x) for x in a.lens.split(",")):
        row = [time_graph(delta_graph(n, *shape, "recurrent", 64, rng), a.threads, a.reps)]
        for chunk in chunks:
            row.append(time_graph(delta_graph(n, *shape, "chunked", chunk, rng), a.threads, a.reps))
        pick = "chunked" if n >= GraphOptions().delta_min_len else "recurrent"
        print(f"| {n} | " + " | ".join(f"{t * 1e6:.0f} us" for t in row) + f" | {pick} |", flush=True)


if __name__ == "__main__":
    main()
