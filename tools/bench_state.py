#!/usr/bin/env python3
"""What keeping states costs and saves: pp512 with snapshots every N tokens against none
(alternated in one process, medians), a snapshot's bytes and copy time, rollback
re-evaluation (most and mean over every offset of a prompt plus decode), and a prefix-cache
resume against a fresh prompt.

    python tools/bench_state.py MODEL.gguf [-t 2] [-r 5] [--every 512] [--prompt 512]
"""
import argparse
import statistics as st
import time

import numpy as np

import tinyggml


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--every", type=int, default=512, help="snapshot interval (default 512, the Model's)")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens (default 512)")
    a = ap.parse_args()
    on = tinyggml.Model(a.model, n_threads=a.threads, snapshot_every=a.every)
    off = tinyggml.Model(a.model, n_threads=a.threads, snapshot_every=0, max_snapshots=0)
    rng = np.random.default_rng(0)
    p = rng.integers(0, on.n_vocab, a.prompt).tolist()
    times = {"on": [], "off": []}
    for m in (on, off):                        # warm-up: graphs recorded, pages touched
        m.eval(p, 0, logits="last")
        m.reset()
    for _ in range(a.reps):
        for name, m in (("off", off), ("on", on)):
            times[name].append(timed(lambda: m.eval(p, 0, logits="last")))
            m.reset()
    pp_on, pp_off = a.prompt / st.median(times["on"]), a.prompt / st.median(times["off"])
    nbytes = on.memory.bytes_per_sequence
    on.eval(p[:8], 1)
    copy_ms = st.median(timed(lambda: on.checkpoint(1) and on._seqs[1].snapshots.pop()) * 1000
                        for _ in range(5))
    print(f"model {a.model}: state {nbytes / 2**20:.2f} MiB per sequence (= per snapshot)")
    print(f"pp{a.prompt}: {pp_off:.1f} t/s without snapshots, {pp_on:.1f} with one every {a.every} "
          f"(ratio {pp_on / pp_off:.3f}; medians of {a.reps}, alternated); a snapshot copy "
          f"{copy_ms:.2f} ms")
    # rollback: a prompt of `prompt` tokens, 64 decoded, then every offset
    m = tinyggml.Model(a.model, n_threads=a.threads, snapshot_every=a.every, max_snapshots=64)
    n_dec = 64
    redo = []
    for n in range(0, a.prompt + n_dec + 1, max(1, (a.prompt + n_dec) // 48)):
        m.reset(0)
        m.eval(p, 0, logits="last")
        for x in rng.integers(0, m.n_vocab, n_dec):
            m.eval([int(x)], 0, logits="last")
        redo.append(m.rollback(0, n))
    print(f"rollback over {len(redo)} offsets of {a.prompt} + {n_dec} tokens: re-evaluated at most "
          f"{max(redo)}, mean {np.mean(redo):.1f} tokens")
    # the prefix cache: the same prompt again, and the prompt plus 16 tokens
    c = tinyggml.Model(a.model, n_threads=a.threads, prefix_cache=tinyggml.PrefixCache())
    fresh = timed(lambda: c.eval(p, 0, logits="last"))
    again = timed(lambda: c.eval(p, 1, logits="last"))
    more = timed(lambda: c.eval(p + p[:16], 2, logits="last"))
    print(f"prefix cache: the prompt fresh {fresh * 1000:.1f} ms, again {again * 1000:.2f} ms, "
          f"plus 16 tokens {more * 1000:.1f} ms; stats {c.prefix_cache.stats}")


if __name__ == "__main__":
    main()
