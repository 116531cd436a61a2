"""Benchmarks in the manner of llama-bench: prompt processing (ppN) and generation (tgN).

ppN: N random tokens evaluated from an empty state in one call (logits for the last token only,
as when reading a prompt). tgN: N tokens evaluated one at a time, each step a full decode
(graph run + logits), after `depth` tokens of context. Each test runs once to warm up, then
`reps` times; the median and the spread are reported. The depths of one tgN alternate
repetition by repetition (tg128, tg128@d4096, tg128, ...), so that their ratio is measured side
by side on a machine whose speed drifts. Speed is measured here, never in tests.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..backend import describe


@dataclass
class BenchResult:
    model: str
    test: str            # "pp512", "tg128", "tg128@d4096"
    n_tokens: int
    depth: int
    threads: int
    ts_median: float     # tokens per second
    ts_min: float
    ts_max: float
    ts_all: list


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _pp(m, toks, seq=0) -> float:
    m.reset(seq)
    t0 = time.perf_counter()
    m.eval(toks, seq_id=seq, logits="last")
    return time.perf_counter() - t0


def _tg(m, toks, depth_toks, seq=0) -> float:
    m.reset(seq)
    if len(depth_toks):
        m.eval(depth_toks, seq_id=seq, logits="last")
    t0 = time.perf_counter()
    for t in toks:
        m.eval([int(t)], seq_id=seq, logits="last")
    return time.perf_counter() - t0


def run_bench(m, pp=(512,), tg=(128,), depths=(0,), reps=5, progress=None) -> list[BenchResult]:
    rng = np.random.default_rng(0)
    # groups of tests whose repetitions alternate: each ppN alone, each tgN with all its depths
    groups = [[("pp", n, 0)] for n in pp if n > 0] + [[("tg", n, d) for d in depths] for n in tg if n > 0]
    out = []
    for group in groups:
        fns, names = [], []
        for kind, n, depth in group:
            toks = rng.integers(0, m.n_vocab, size=n)
            ctx = rng.integers(0, m.n_vocab, size=depth)
            fns.append((lambda t=toks: _pp(m, t)) if kind == "pp" else (lambda t=toks, c=ctx: _tg(m, t, c)))
            names.append(f"{kind}{n}" + (f"@d{depth}" if depth else ""))
        for fn in fns:
            fn()                                        # warm-up: graphs recorded, caches hot
        times = [[] for _ in group]
        for r in range(reps):
            for i, fn in enumerate(fns):
                times[i].append(fn())
                if progress:
                    progress(names[i], r + 1, reps)
        for (_, n, depth), name, tt in zip(group, names, times):
            ts = [n / t for t in tt]
            out.append(BenchResult(os.path.basename(m.path), name, n, depth, m.n_threads,
                                   statistics.median(ts), min(ts), max(ts), ts))
    m.reset(0)
    return out


def to_markdown(m, results: list[BenchResult]) -> str:
    size = os.path.getsize(m.path)
    lines = ["| model | size | threads | test | t/s (median) | min - max |",
             "|---|---:|---:|---|---:|---:|"]
    for r in results:
        lines.append(f"| {r.model} | {size / 2**20:.1f} MiB | {r.threads} | {r.test} | "
                     f"{r.ts_median:.2f} | {r.ts_min:.2f} - {r.ts_max:.2f} |")
    lines.append("")
    lines.append(f"backend: {describe(m.options)}")
    lines.append(f"scan: {m.scan[0]}; state bytes per sequence: {m.state_bytes_per_sequence}; "
                 f"peak RSS: {peak_rss_bytes() / 2**20:.1f} MiB")
    return "\n".join(lines)


def to_json(m, results: list[BenchResult]) -> str:
    return json.dumps({"model": m.path, "file_bytes": os.path.getsize(m.path),
                       "arch": m.arch, "scan": m.scan[0], "backend": describe(m.options),
                       "state_bytes_per_sequence": m.state_bytes_per_sequence,
                       "peak_rss_bytes": peak_rss_bytes(),
                       "results": [asdict(r) for r in results]}, indent=1)
