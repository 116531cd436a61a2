"""The Mamba-2 scan alone: the recurrence against the chunked (SSD) form, by sequence length
and chunk size, on one layer of a real shape (default mamba2-130m: 24 heads of 64, d_state 128,
1 group). Medians of repeated runs of a one-node graph; what it measured chose the
defaults of GraphOptions.ssd_chunk and GraphOptions.ssd_min_len (tinyggml/options.py).

    python tools/bench_scan.py [-t 2] [--heads 24] [--head-dim 64] [--d-state 128] [--groups 1]
"""
import argparse
import time

import numpy as np

from tinyggml import ops
from tinyggml.backend import Plan
from tinyggml.graph import Graph
from tinyggml.options import GraphOptions
from tinyggml.tensor import F32, I32, INPUT, STATE, leaf


def scan_graph(n_t, nh, hd, ds, ng, algo, chunk, rng):
    def mk(name, arr, type=F32, flags=INPUT):
        return leaf(type, tuple(reversed(arr.shape)), name, flags, data=arr)
    width = hd * nh + 2 * ng * ds
    xbc = mk("xbc", rng.standard_normal((n_t, width)).astype(np.float32))
    x = ops.view(xbc, (hd, nh, n_t), (4, hd * 4, width * 4), 0)
    B = ops.view(xbc, (ds, ng, n_t), (4, ds * 4, width * 4), hd * nh * 4)
    C = ops.view(xbc, (ds, ng, n_t), (4, ds * 4, width * 4), (hd * nh + ng * ds) * 4)
    # dt around softplus^-1 of 0.001..0.1, A = -(1..16): a trained model's range
    dt = mk("dt", np.log(np.expm1(np.exp(rng.uniform(np.log(1e-3), np.log(0.1), (n_t, nh))))).astype(np.float32))
    A = mk("A", -rng.uniform(1, 16, (nh, 1)).astype(np.float32))
    D = mk("D", np.ones(nh, np.float32))
    state = mk("state", np.zeros((1, nh, hd, ds), np.float32), flags=STATE)
    info = mk("info", np.array([[0, 0, n_t]], np.int32), type=I32)
    g = Graph()
    g.output(ops.ssm_scan(state, x, dt, A, B, C, D, info, GraphOptions(scan=algo, ssd_chunk=chunk)))
    return g


def time_graph(g, n_threads, reps):
    plan = Plan(g, max_threads=n_threads)
    plan.run(n_threads)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        plan.run(n_threads)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--d-state", type=int, default=128)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("-r", "--reps", type=int, default=15)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (a.heads, a.head_dim, a.d_state, a.groups)
    print(f"one layer: {a.heads} heads x {a.head_dim}, d_state {a.d_state}, {a.groups} group(s), "
          f"{a.threads} threads; median of {a.reps} runs")
    chunks = (16, 24, 32, 64, 128)
    print("| tokens | recurrent | " + " | ".join(f"chunked {c}" for c in chunks) + " | auto picks |")
    print("|---:|---:|" + "---:|" * len(chunks) + "---|")
    for n in (4, 8, 12, 16, 24, 32, 64, 128, 512):
        row = [time_graph(scan_graph(n, *shape, "recurrent", 32, rng), a.threads, a.reps)]
        for chunk in chunks:
            row.append(time_graph(scan_graph(n, *shape, "chunked", chunk, rng), a.threads, a.reps))
        pick = "chunked" if n >= GraphOptions().ssd_min_len else "recurrent"
        print(f"| {n} | " + " | ".join(f"{t * 1e6:.0f} us" for t in row) + f" | {pick} |", flush=True)


if __name__ == "__main__":
    main()
