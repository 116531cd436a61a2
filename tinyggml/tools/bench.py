"""Benchmarks in the manner of llama-bench: prompt processing (ppN) and generation (tgN).

ppN: N random tokens evaluated from an empty state in one call (logits for the last token only,
as when reading a prompt). tgN: N tokens evaluated one at a time, each step a full decode
(graph run + logits), after `depth` tokens of context. Each test runs once to warm up, then
`reps` times; the median and the spread are reported. The depths of one tgN alternate
repetition by repetition (tg128, tg128@d4096, tg128, ...), so that their ratio is measured side
by side on a machine whose speed drifts. tgN with seqs S > 1 ("tg128x8") decodes S sequences
together, each at its own depth (depth + 8 i tokens of context for sequence i), one eval_batch
step per token as the server does: t/s counts the tokens of all of them (aggregate), and
per_seq the tokens of one. Speed is measured here, never in tests.
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
    seqs: int = 1        # sequences decoded together (tg); t/s is their aggregate
    auto_threads: bool = False   # threads is the most; each run took the fastest count (threads.py)

    @property
    def per_seq(self) -> float:
        return self.ts_median / self.seqs


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


def _tg_batch(m, toks, ctxs) -> float:
    """len(ctxs) sequences, sequence i after ctxs[i], decode toks[i] together: one eval_batch
    per step."""
    for s in range(len(ctxs)):
        m.reset(s)
    first = {s: c for s, c in enumerate(ctxs) if len(c)}
    if first:
        m.eval_batch(first, logits="last")
    t0 = time.perf_counter()
    for j in range(toks.shape[1]):
        m.eval_batch({s: toks[s, j:j + 1] for s in range(len(ctxs))}, logits="last")
    return time.perf_counter() - t0


def run_bench(m, pp=(512,), tg=(128,), depths=(0,), reps=5, progress=None,
              seqs=(1,)) -> list[BenchResult]:
    rng = np.random.default_rng(0)
    # groups of tests whose repetitions alternate: each ppN alone, each tgN with all its depths
    # and sequence counts
    groups = [[("pp", n, 0, 1)] for n in pp if n > 0] + \
        [[("tg", n, d, k) for d in depths for k in seqs] for n in tg if n > 0]
    out = []
    for group in groups:
        fns, names = [], []
        for kind, n, depth, k in group:
            if kind == "tg" and k > 1:
                toks = rng.integers(0, m.n_vocab, size=(k, n))
                ctxs = [rng.integers(0, m.n_vocab, size=depth + 8 * i) for i in range(k)]
                fns.append(lambda t=toks, c=ctxs: _tg_batch(m, t, c))
            else:
                toks = rng.integers(0, m.n_vocab, size=n)
                ctx = rng.integers(0, m.n_vocab, size=depth)
                fns.append((lambda t=toks: _pp(m, t)) if kind == "pp" else
                           (lambda t=toks, c=ctx: _tg(m, t, c)))
            names.append(f"{kind}{n}" + (f"x{k}" if k > 1 else "") + (f"@d{depth}" if depth else ""))
        for fn in fns:
            fn()                                        # warm-up: graphs recorded, caches hot
        times = [[] for _ in group]
        for r in range(reps):
            for i, fn in enumerate(fns):
                times[i].append(fn())
                if progress:
                    progress(names[i], r + 1, reps)
        for (_, n, depth, k), name, tt in zip(group, names, times):
            ts = [k * n / t for t in tt]
            out.append(BenchResult(os.path.basename(m.path), name, n, depth, m.n_threads,
                                   statistics.median(ts), min(ts), max(ts), ts, k,
                                   m.threads_auto))
    m.reset()
    return out


def to_markdown(m, results: list[BenchResult]) -> str:
    size = os.path.getsize(m.path)
    lines = ["| model | size | threads | test | t/s (median) | min - max | t/s per sequence |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for r in results:
        threads = f"1-{r.threads} auto" if r.auto_threads and r.threads > 1 else r.threads
        lines.append(f"| {r.model} | {size / 2**20:.1f} MiB | {threads} | {r.test} | "
                     f"{r.ts_median:.2f} | {r.ts_min:.2f} - {r.ts_max:.2f} | {r.per_seq:.2f} |")
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
                       "results": [dict(asdict(r), per_seq=r.per_seq) for r in results]}, indent=1)
