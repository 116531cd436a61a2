"""The attention op alone: decode (one new token per sequence) and prompt blocks at a depth,
on the shape of a real model's attention layers (default Falcon-H1-0.5B: 8 query heads over
2 KV heads of 64, F16 cache). One graph of `--layers` attention nodes, each over its own cache
(so the caches together outgrow the caches of the CPU as a model's do); medians of repeated
runs, and the KV bytes read per second.

    python tools/bench_attn.py [-t 2] [--heads 8] [--kv-heads 2] [--head-dim 64] [-d 4096]
                               [--layers 36] [--tokens 1] [--kv-type f16]
"""
import argparse

import numpy as np

from bench_scan import time_graph        # median seconds of a plan's runs (tools/ on sys.path)
from tinyggml import ops
from tinyggml.graph import Graph
from tinyggml.tensor import F16, F32, I32, INPUT, STATE, leaf


def attn_graph(n_layer, nh, nkv, hd, depth, n_t, kv_type, rng):
    def mk(name, arr, type=F32, flags=INPUT):
        return leaf(type, tuple(reversed(arr.shape)), name, flags, data=arr)
    dt = np.float16 if kv_type == F16 else np.float32
    n_ctx = depth + n_t
    info = mk("info", np.array([[0, 0, n_t]], np.int32), I32)
    pos = mk("pos", (depth + np.arange(n_t)).astype(np.int32), I32)
    g = Graph()
    for il in range(n_layer):
        kc = mk(f"k{il}", rng.standard_normal((1, n_ctx, nkv, hd)).astype(dt), kv_type, STATE)
        vc = mk(f"v{il}", rng.standard_normal((1, n_ctx, nkv, hd)).astype(dt), kv_type, STATE)
        q = mk(f"q{il}", rng.standard_normal((n_t, nh, hd)).astype(np.float32))
        g.output(ops.attn(q, kc, vc, info, pos, hd ** -0.5))
    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("-d", "--depth", type=int, nargs="+", default=[4096])
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1])
    ap.add_argument("--kv-type", choices=["f16", "f32"], default="f16")
    ap.add_argument("-r", "--reps", type=int, default=15)
    a = ap.parse_args()
    kv_type = F16 if a.kv_type == "f16" else F32
    rng = np.random.default_rng(0)
    print(f"{a.layers} layers of {a.heads} heads over {a.kv_heads} KV heads of {a.head_dim}, "
          f"{a.kv_type} cache, {a.threads} threads; median of {a.reps} runs")
    print("| depth | tokens | ms per graph | us per layer | KV GB/s |")
    print("|---:|---:|---:|---:|---:|")
    for d in a.depth:
        for n_t in a.tokens:
            t = time_graph(attn_graph(a.layers, a.heads, a.kv_heads, a.head_dim, d, n_t, kv_type, rng),
                           a.threads, a.reps)
            kv = 2 * a.layers * (d + n_t) * a.kv_heads * a.head_dim * (2 if kv_type == F16 else 4)
            print(f"| {d} | {n_t} | {t * 1e3:.2f} | {t / a.layers * 1e6:.0f} | {kv / t / 1e9:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
