#!/usr/bin/env python3
"""A long generation and its memory: N tokens decoded one by one on one sequence (greedy, the
end-of-text token fed back like any other), resident set size every N/10 tokens.

    python tools/long_run.py [-m MODEL] [-n 100000] [-t 1]
"""
import argparse
import os
import time

import numpy as np

import tinyggml
from tinyggml.tools.cli import default_model


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("-t", "--threads", type=int, default=1)
    a = ap.parse_args()
    m = tinyggml.Model(a.model or default_model(), n_threads=a.threads)
    tok = m.tokenize("ROMEO:")
    logits = m.eval(tok, 0, logits="last")[0]
    t0 = time.perf_counter()
    print(f"tokens {0:>7}  RSS {rss_mib():8.1f} MiB")
    for i in range(1, a.n + 1):
        logits = m.eval([int(np.argmax(logits))], 0, logits="last")[0]
        if not np.isfinite(logits).all():
            raise SystemExit(f"non-finite logits after {i} tokens")
        if i % (a.n // 10 or 1) == 0:
            print(f"tokens {i:>7}  RSS {rss_mib():8.1f} MiB  ({i / (time.perf_counter() - t0):.0f} t/s)",
                  flush=True)
    print(f"n_past {m.n_past(0)}, snapshots kept {len(m._seqs[0].snapshots)}, "
          f"plans cached {len(m._compiled)}")


if __name__ == "__main__":
    main()
