#!/usr/bin/env python3
"""tinyggml vs llama.cpp on the same GGUF, same thread count, runs alternated; ratios per workload.

Needs the optional peer: `pip install llama-cpp-python==0.3.36` (builds llama.cpp from source,
10-15 minutes on a 2-core machine). Both sides are driven from Python the same way: ppN = N
prompt tokens in one call from an empty state, tgN = N single-token decode steps (after `depth`
tokens of context). Each repetition runs tinyggml then llama.cpp back to back, so machine noise
hits both; medians over the repetitions are compared. The memory-bandwidth roofline for tg is
measured in the same run (a multi-threaded streaming read of a buffer larger than the caches,
before each tg repetition too: the best of them, since a shared machine's bandwidth drifts):
roofline t/s = bandwidth / (weight bytes read per token). The best probe against median t/s
is the strict reading; each tg row also gives the median over repetitions of each one's t/s
against the probe taken just before it ("paired"), which follows the drift instead. With
--load R, also the time from opening the file to the first logits of a short prompt (tokenizer
included), fresh objects, alternated, median of R (the file already in the page cache for
both).

    python tools/bench_vs_llamacpp.py MODEL.gguf [MODEL2.gguf ...] [-t 2] [-p 512] [-n 128] [-r 5]
                                      [--load 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def weight_bytes_per_token(m) -> int:
    """Bytes of weights one decode step reads: every 2-D weight once (the LM head included),
    the embedding table only as the LM head when tied (get_rows reads one row)."""
    total, seen = 0, set()
    for key, t in m.weights.items():
        if id(t) in seen:                          # a tied head is one tensor under two keys
            continue
        seen.add(id(t))
        if key == "token_embd" and m.weights["output"] is not t:
            total += t.nbytes // t.ne[1]           # one row
        else:
            total += t.nbytes
    return total


def read_bandwidth(n_threads: int, mib: int = 512, reps: int = 5) -> float:
    """The machine's read bandwidth: the best of each thread reading 1 stream and 4 side by side
    (one stream per core falls short of what the memory delivers on some machines)."""
    from tinyggml.backend import measure_read_bandwidth
    return max(measure_read_bandwidth(mib * 2**20, n_threads, reps, streams=s) for s in (1, 4))


class TinyGGML:
    name = "tinyggml"

    def __init__(self, path, n_threads):
        import tinyggml
        self.m = tinyggml.Model(path, n_threads=n_threads)

    def first_logits(self, text):
        self.m.eval(self.m.tokenize(text), logits="last")

    def pp(self, toks):
        self.m.reset(0)
        t0 = time.perf_counter()
        self.m.eval(toks, logits="last")
        return time.perf_counter() - t0

    def tg(self, toks, ctx):
        self.m.reset(0)
        if len(ctx):
            self.m.eval(ctx, logits="last")
        t0 = time.perf_counter()
        for t in toks:
            self.m.eval([int(t)], logits="last")
        return time.perf_counter() - t0


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path, n_threads, n_ctx):
        from llama_cpp import Llama
        self.llm = Llama(model_path=str(path), n_threads=n_threads, n_threads_batch=n_threads,
                         n_ctx=n_ctx, n_batch=512, n_ubatch=512, logits_all=False, verbose=False)

    def first_logits(self, text):
        self.llm.eval(self.llm.tokenize(text.encode()))

    def pp(self, toks):
        self.llm.reset()
        t0 = time.perf_counter()
        self.llm.eval([int(t) for t in toks])
        return time.perf_counter() - t0

    def tg(self, toks, ctx):
        self.llm.reset()
        if len(ctx):
            self.llm.eval([int(t) for t in ctx])
        t0 = time.perf_counter()
        for t in toks:
            self.llm.eval([int(t)])
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-d", "--depth", type=int, default=0)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--load", type=int, default=0, metavar="R",
                    help="also time open -> first logits, R alternated repetitions")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    bw = read_bandwidth(a.threads)
    print(f"read bandwidth ({a.threads} threads): {bw / 1e9:.1f} GB/s", flush=True)
    rows = []
    for path in a.models:
        if a.load > 0:
            secs = {"tinyggml": [], "llama.cpp": []}
            for _ in range(a.load):
                for name, make in (("tinyggml", lambda: TinyGGML(path, a.threads)),
                                   ("llama.cpp", lambda: LlamaCpp(path, a.threads, n_ctx=64))):
                    t0 = time.perf_counter()
                    side = make()
                    side.first_logits("Hello world")
                    secs[name].append(time.perf_counter() - t0)
                    del side
            med = {k: statistics.median(v) for k, v in secs.items()}
            rows.append(dict(model=os.path.basename(path), test="load", unit="s",
                             tinyggml=med["tinyggml"], llamacpp=med["llama.cpp"],
                             ratio=med["llama.cpp"] / med["tinyggml"],
                             spread={k: (min(v), max(v)) for k, v in secs.items()}))
            print(f"{rows[-1]['model']:<32s} {'load':<8s} tinyggml {med['tinyggml']:8.2f} s    "
                  f"llama.cpp {med['llama.cpp']:8.2f} s    ratio {rows[-1]['ratio']:.2f}x "
                  f"(open -> first logits; > 1: tinyggml faster)", flush=True)
        tg_side = TinyGGML(path, a.threads)
        n_vocab = tg_side.m.n_vocab
        peer = LlamaCpp(path, a.threads, n_ctx=max(a.n_prompt, a.depth + a.n_gen) + 16)
        rng = np.random.default_rng(0)
        toks = rng.integers(0, n_vocab, size=max(a.n_prompt, a.n_gen))
        ctx = rng.integers(0, n_vocab, size=a.depth)
        wbytes = weight_bytes_per_token(tg_side.m)
        for kind, n in (("pp", a.n_prompt), ("tg", a.n_gen)):
            if n <= 0:
                continue
            run = {s.name: ((lambda s=s: s.pp(toks[:n])) if kind == "pp"
                            else (lambda s=s: s.tg(toks[:n], ctx))) for s in (tg_side, peer)}
            for f in run.values():
                f()                                       # warm-up
            ts = {k: [] for k in run}
            row_bw, rep_bw = bw, []
            for _ in range(a.reps):
                if kind == "tg":    # the machine's bandwidth drifts (shared): probe every repetition
                    rep_bw.append(read_bandwidth(a.threads, mib=256, reps=2))
                    row_bw = max(row_bw, rep_bw[-1])
                for k, f in run.items():                  # alternate
                    ts[k].append(n / f())
            med = {k: statistics.median(v) for k, v in ts.items()}
            row = dict(model=os.path.basename(path), test=f"{kind}{n}" + (f"@d{a.depth}" if a.depth and kind == "tg" else ""),
                       tinyggml=med["tinyggml"], llamacpp=med["llama.cpp"],
                       ratio=med["tinyggml"] / med["llama.cpp"],
                       spread={k: (min(v), max(v)) for k, v in ts.items()})
            if kind == "tg":
                roof = row_bw / wbytes
                row.update(bandwidth=row_bw, roofline_ts=roof, frac_tinyggml=med["tinyggml"] / roof,
                           frac_llamacpp=med["llama.cpp"] / roof)
                # each repetition against the probe just before it, median over repetitions
                for k, key in (("tinyggml", "paired_tinyggml"), ("llama.cpp", "paired_llamacpp")):
                    row[key] = statistics.median(t * wbytes / b for t, b in zip(ts[k], rep_bw))
            rows.append(row)
            extra = (f"  roofline {row['roofline_ts']:.1f} t/s ({row['bandwidth'] / 1e9:.1f} GB/s): "
                     f"tinyggml {row['frac_tinyggml']:.0%}, "
                     f"llama.cpp {row['frac_llamacpp']:.0%} (paired with each repetition's probe: "
                     f"{row['paired_tinyggml']:.0%}, {row['paired_llamacpp']:.0%})" if kind == "tg" else "")
            print(f"{row['model']:<32s} {row['test']:<8s} tinyggml {row['tinyggml']:8.2f} t/s  "
                  f"llama.cpp {row['llamacpp']:8.2f} t/s  ratio {row['ratio']:.2f}x{extra}", flush=True)
        del peer
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(threads=a.threads, bandwidth=bw, rows=rows), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
