"""Batched decoding alone: one eval_batch step of N one-token sequences (each already holding
some context), the way the server advances N streams; ms per step and aggregate tokens/s.

    python tools/bench_batch.py M.gguf [-t 2] [--seqs 1,4,8,16] [--steps 20]
"""
import argparse
import time

from tinyggml import Model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--seqs", default="1,4,8,16")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    seqs = [int(x) for x in args.seqs.split(",")]
    m = Model(args.model, n_threads=args.threads, n_seq_max=max(seqs))
    base = None
    print("| sequences | ms / step | aggregate t/s | x 1 sequence |\n|---:|---:|---:|---:|")
    for k in seqs:
        m.reset()
        m.eval_batch({s: [5, 6] for s in range(k)}, logits="last")       # some context
        m.eval_batch({s: [5] for s in range(k)}, logits="last")          # the plan compiled
        t0 = time.perf_counter()
        for _ in range(args.steps):
            m.eval_batch({s: [5] for s in range(k)}, logits="last")
        dt = (time.perf_counter() - t0) / args.steps
        base = base or k / dt
        print(f"| {k} | {dt * 1e3:.1f} | {k / dt:.1f} | {k / dt / base:.2f} |")


if __name__ == "__main__":
    main()
