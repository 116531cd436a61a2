"""One mul_mat node alone: M weight rows of K values (any weight type) times N activation
columns, as a model's projections run it (quantized weights meet F32 activations through the
same QUANTIZE node a model graph has, on this CPU's default path: GraphOptions.for_cpu, which
TINYGGML_INT_GEMM=0|1 overrides). GFLOP/s (2 M K N per run), best and median of repeated
runs of a one-node plan, one process per measurement. What it measured chose MM_KC in
backend/kernels/ops.c; decode shapes (N = 1) read as weight bandwidth. Weights are repacked as a
model's are (tinyggml/repack.py) unless --no-repack.

    python tools/bench_matmul.py 2048x4096x512xq4_0 3352x768x1xf16 [-t 2] [-r 9]
"""
import argparse
import sys
import time

import numpy as np

from tinyggml import ops
from tinyggml.backend import Plan
from tinyggml.graph import Graph
from tinyggml.options import GraphOptions
from tinyggml.repack import packable
from tinyggml.backend import pack_rows
from tinyggml.tools.quantize import QTYPES, quantize_tensor
from tinyggml.tensor import F32, INPUT, NP_DTYPE, leaf


def parse(spec):
    try:
        m, k, n, t = spec.lower().split("x")
        m, k, n = int(m), int(k), int(n)
    except ValueError:
        raise SystemExit(f"bench_matmul: {spec!r} is not MxKxNxTYPE (e.g. 2048x4096x512xq4_0)")
    if t not in QTYPES:
        raise SystemExit(f"bench_matmul: unknown type {t!r} (choose from {', '.join(QTYPES)})")
    if min(m, k, n) < 1:
        raise SystemExit(f"bench_matmul: sizes must be positive in {spec!r}")
    return m, k, n, t


def measure(m, k, n, t, threads, reps, rng, repack=True, opts=None):
    qtype = QTYPES[t][0]
    w = quantize_tensor(rng.standard_normal((m, k)).astype(np.float32) * 0.02, t)
    if int(qtype) in NP_DTYPE:                          # F32 / F16 leaves hold their own dtype
        w = w.view(NP_DTYPE[int(qtype)])
    a = leaf(int(qtype), (k, m), "w", INPUT, data=w)
    if repack and packable(a):
        a.packed = pack_rows(a.type, w, k, m, threads)
    x = leaf(F32, (k, n), "x", INPUT, data=rng.standard_normal((n, k)).astype(np.float32))
    g = Graph()
    g.output(ops.mul_mat(a, x, opts or GraphOptions.for_cpu()))   # the path a model takes here
    plan = Plan(g, max_threads=threads)
    plan.run(threads)                                   # first touch of the scratch
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        plan.run(threads)
        times.append(time.perf_counter() - t0)
    return 2.0 * m * k * n / min(times) / 1e9, 2.0 * m * k * n / float(np.median(times)) / 1e9, w.nbytes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shapes", nargs="+", metavar="MxKxNxTYPE",
                    help="weight rows x row length x activation columns x weight type")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--reps", type=int, default=9)
    ap.add_argument("--no-repack", action="store_true", help="weights in the file layout")
    tiles = ap.add_mutually_exclusive_group()
    tiles.add_argument("--narrow", action="store_true",
                       help="the narrower GEMM tiles (GraphOptions.wide_gemm=False), for A/B runs")
    tiles.add_argument("--wide", action="store_true",
                       help="the wider GEMM tiles (GraphOptions.wide_gemm=True), for A/B runs")
    args = ap.parse_args(argv)
    opts = GraphOptions.for_cpu(**({"wide_gemm": False} if args.narrow else
                                   {"wide_gemm": True} if args.wide else {}))
    if args.threads < 1 or args.reps < 1:
        ap.error("threads and reps must be at least 1")
    specs = [parse(s) for s in args.shapes]
    rng = np.random.default_rng(0)
    for m, k, n, t in specs:
        try:
            best, med, nbytes = measure(m, k, n, t, args.threads, args.reps, rng, not args.no_repack, opts)
        except Exception as e:                          # e.g. K not a multiple of the block
            print(f"{m}x{k}x{n}x{t}: {e}", file=sys.stderr)
            return 1
        extra = f"  weights {nbytes / 1e9 * best / (2.0 * m * k * n / 1e9):.1f} GB/s" if n == 1 else ""
        print(f"{m}x{k}x{n}x{t}: best {best:.1f} GFLOP/s, median {med:.1f}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
