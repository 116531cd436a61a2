#!/usr/bin/env python3
"""tinyggml vs llama.cpp on the same GGUF, same thread count, runs alternated; ratios per workload.

Needs the optional peer: `pip install llama-cpp-python==0.3.36` (builds llama.cpp from source,
10-15 minutes on a 2-core machine). Both sides are driven from Python the same way: ppN = N
prompt tokens in one call, tgN = N single-token decode steps, both after `depth` tokens of
context (evaluated once, untimed, then restored from a copy of the state before each run; it
matters for models with attention layers, whose KV cache both sides size to the same n_ctx). Each repetition runs tinyggml then llama.cpp back to back, so machine noise
hits both; medians over the repetitions are compared. The memory-bandwidth roofline for tg is
measured in the same run (a multi-threaded streaming read of a buffer larger than the caches,
before each tg repetition too: the best of them, since a shared machine's bandwidth drifts):
roofline t/s = bandwidth / (weight bytes read per token). The best probe against median t/s
is the strict reading; each tg row also gives the median over repetitions of each one's t/s
against the probe taken just before it ("paired"), which follows the drift instead. With
--load R, also the time from opening the file to the first logits of a short prompt (tokenizer
included), fresh objects, alternated, median of R (the file already in the page cache for
both). With --fresh, each of them in a new interpreter (as a command-line user starts: the
process's first large allocations included; the imports are not timed).

With --seqs 1,4,8,16, also tgNxS: S sequences, sequence s after depth + 8 + 4 s tokens of its
own (fed untimed), then N steps of one token per sequence in one batched call: tinyggml's
eval_batch (the server's decode step, as `tinyggml-cli bench --seqs`), llama.cpp's llama_decode
on a context of its own with n_seq_max = S (a Mamba's recurrent memory holds one cell per
sequence). t/s is the aggregate over the sequences; per sequence and the gain over 1 sequence
(always run) are given for each side. The S alternate with each other and the two sides
repetition by repetition. Before timing, llama.cpp's batched logits are checked against each
sequence decoded alone (the argmax must agree), and tinyggml's argmax against llama.cpp's.

    python tools/bench_vs_llamacpp.py MODEL.gguf [MODEL2.gguf ...] [-t 2] [-p 512] [-n 128] [-r 5]
                                      [--load 3 [--fresh]] [--seqs 1,4,8,16]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def load_seconds(side: str, path, n_threads) -> float:
    """Open `path` and evaluate a short prompt to its logits, tokenizer included: seconds."""
    t0 = time.perf_counter()
    obj = (TinyGGML(path, n_threads) if side == "tinyggml"
           else LlamaCpp(path, n_threads, n_ctx=64))
    obj.first_logits("Hello world")
    return time.perf_counter() - t0


def weight_bytes_per_token(m) -> int:
    """Bytes of weights one decode step reads: every 2-D weight once (the LM head included),
    the embedding table only as the LM head when tied (get_rows reads one row)."""
    total, seen = 0, set()
    for key, t in m.weights.items():
        if t is None or id(t) in seen:             # an absent optional weight; a tied head is
            continue                               # one tensor under two keys
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

    def __init__(self, path, n_threads, n_seq_max=8, n_ctx=None):
        import tinyggml
        extra = {} if n_ctx is None else {"n_ctx": n_ctx}    # (builds before hybrids lack it)
        self.m = tinyggml.Model(path, n_threads=n_threads, n_seq_max=n_seq_max, **extra)

    def first_logits(self, text):
        self.m.eval(self.m.tokenize(text), logits="last")

    def _start(self, ctx):
        """Sequence 0 after ctx: evaluated once into a spare sequence, copied from it after."""
        self.m.reset(0)
        if len(ctx):
            if self._ctx is not ctx:
                self.m.reset(self.SPARE)
                self.m.eval(ctx, seq_id=self.SPARE, logits="last")
                self._ctx = ctx
            self.m.seq_copy(self.SPARE, 0)

    SPARE = 7
    _ctx = None

    def pp(self, toks, ctx=()):
        self._start(ctx)
        t0 = time.perf_counter()
        self.m.eval(toks, logits="last")
        return time.perf_counter() - t0

    def tg(self, toks, ctx):
        self._start(ctx)
        t0 = time.perf_counter()
        for t in toks:
            self.m.eval([int(t)], logits="last")
        return time.perf_counter() - t0

    def tg_batch(self, toks, ctxs):
        from tinyggml.tools.bench import _tg_batch
        return _tg_batch(self.m, toks, ctxs)

    def batch_logits(self, toks, ctxs):
        """{s: ctxs[s]} in one call, then one eval_batch per column of toks: the logits,
        (S, n, n_vocab)."""
        self.m.reset()
        self.m.eval_batch(dict(enumerate(ctxs)), logits="last")
        out = np.empty(toks.shape + (self.m.n_vocab,), np.float32)
        for j in range(toks.shape[1]):
            got = self.m.eval_batch({s: toks[s, j:j + 1] for s in range(len(ctxs))}, logits="last")
            for s, lg in got.items():
                out[s, j] = lg[0]
        return out


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path, n_threads, n_ctx):
        from llama_cpp import Llama
        self.llm = Llama(model_path=str(path), n_threads=n_threads, n_threads_batch=n_threads,
                         n_ctx=n_ctx, n_batch=512, n_ubatch=512, logits_all=False, verbose=False)

    def first_logits(self, text):
        self.llm.eval(self.llm.tokenize(text.encode()))

    _ctx = None

    def _start(self, ctx):
        """The context after ctx: evaluated once, its saved state loaded after."""
        self.llm.reset()
        if len(ctx):
            if self._ctx is not ctx:
                self.llm.eval([int(t) for t in ctx])
                self._ctx, self._state = ctx, self.llm.save_state()
            else:
                self.llm.load_state(self._state)

    def pp(self, toks, ctx=()):
        self._start(ctx)
        t0 = time.perf_counter()
        self.llm.eval([int(t) for t in toks])
        return time.perf_counter() - t0

    def tg(self, toks, ctx):
        self._start(ctx)
        t0 = time.perf_counter()
        for t in toks:
            self.llm.eval([int(t)])
        return time.perf_counter() - t0


class LlamaCppBatch:
    """S sequences decoded together through llama.cpp's low-level API: a llama_context of its
    own on the peer's model, n_seq_max = S (a recurrent model's memory has n_seq_max cells,
    one per sequence), one llama_batch with one sequence id per token."""

    def __init__(self, model, n_threads, n_seq, n_ctx):
        import llama_cpp as lc
        self.lc = lc
        p = lc.llama_context_default_params()
        p.n_ctx, p.n_seq_max = n_ctx, n_seq
        p.n_batch = p.n_ubatch = max(512, n_seq)       # a step's S tokens in one ubatch
        p.n_threads = p.n_threads_batch = n_threads
        self.ctx = lc.llama_init_from_model(model, p)
        if not self.ctx:
            raise RuntimeError(f"llama_init_from_model failed (n_seq_max {n_seq}, n_ctx {n_ctx})")
        self.mem = lc.llama_get_memory(self.ctx)
        self.n_batch = p.n_batch
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))

    def close(self):
        self.lc.llama_batch_free(self.batch)
        self.lc.llama_free(self.ctx)

    def decode(self, items):
        """items: (seq_id, pos, token, want_logits) per token, in one llama_decode."""
        b = self.batch
        for i, (s, pos, tok, out) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = int(tok), pos, 1, out
            b.seq_id[i][0] = s
        b.n_tokens = len(items)
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.lc.llama_synchronize(self.ctx)

    def tg(self, toks, ctxs, out=None):
        """Memory cleared, sequence s fed ctxs[s] (untimed), then toks[s, j] for every s in one
        llama_decode per step j, each at its own position; out (S, n, n_vocab) receives the
        logits. Seconds for the steps."""
        self.lc.llama_memory_clear(self.mem, True)
        for s, c in enumerate(ctxs):
            for i0 in range(0, len(c), self.n_batch):
                self.decode([(s, i, c[i], i == len(c) - 1)
                             for i in range(i0, min(len(c), i0 + self.n_batch))])
        t0 = time.perf_counter()
        for j in range(toks.shape[1]):
            self.decode([(s, len(c) + j, toks[s, j], True) for s, c in enumerate(ctxs)])
            if out is not None:
                for s in range(len(ctxs)):
                    out[s, j] = np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, s),
                                                      shape=(self.n_vocab,))
        return time.perf_counter() - t0


def check_batch(ours, theirs, toks, ctxs):
    """llama.cpp's batched logits of each sequence against it decoded alone (the argmax must
    agree, or the timed batch is not doing the work), and tinyggml's argmax against llama.cpp's
    (reported: the two round differently)."""
    k, n = toks.shape
    together = np.empty((k, n, theirs.n_vocab), np.float32)
    alone = np.empty_like(together)
    theirs.tg(toks, ctxs, out=together)
    for s in range(k):
        theirs.tg(toks[s:s + 1], ctxs[s:s + 1], out=alone[s:s + 1])
    mine = ours.batch_logits(toks, ctxs)
    top = together.argmax(-1)
    same = int((top == alone.argmax(-1)).sum())
    diff = np.abs(together - alone).max() / np.abs(alone).max()
    agree = int((top == mine.argmax(-1)).sum())
    peer_diff = np.abs(mine - together).max() / np.abs(together).max()
    print(f"check, {k} sequences x {n} steps: llama.cpp batched vs each alone: argmax "
          f"{same}/{k * n}, max |diff| {diff:.1e} of max |logit|; tinyggml vs llama.cpp: argmax "
          f"{agree}/{k * n}, max |diff| {peer_diff:.1e}", flush=True)
    if same != k * n:
        raise SystemExit("llama.cpp's batched decode disagrees with its one-sequence decode")


def batch_rows(path, ours, peer, a, seqs):
    """tgNxS rows: both sides decode S sequences (each at its own depth) one batched call per
    step; the S and the sides alternate within each repetition."""
    rng = np.random.default_rng(1)
    n_vocab = ours.m.n_vocab
    ctxs = {k: [rng.integers(0, n_vocab, size=a.depth + 8 + 4 * s) for s in range(k)] for k in seqs}
    toks = {k: rng.integers(0, n_vocab, size=(k, a.n_gen)) for k in seqs}
    # n_ctx: each sequence's share (n_ctx / n_seq_max) holds it, in llama.cpp's units of 256
    theirs = {k: LlamaCppBatch(peer.llm.model, a.threads, k,
                               n_ctx=k * 256 * -(-(len(ctxs[k][-1]) + a.n_gen + 1) // 256))
              for k in seqs}
    try:
        top = seqs[-1]
        check_batch(ours, theirs[top], toks[top][:, :4], ctxs[top])
        run = {(k, name): (lambda k=k, f=f: f(toks[k], ctxs[k])) for k in seqs
               for name, f in (("tinyggml", ours.tg_batch), ("llama.cpp", theirs[k].tg))}
        for f in run.values():
            f()                                       # warm-up
        ts = {key: [] for key in run}
        for _ in range(a.reps):
            for (k, name), f in run.items():          # alternate
                ts[k, name].append(k * a.n_gen / f())
    finally:
        for side in theirs.values():
            side.close()
    med = {key: statistics.median(v) for key, v in ts.items()}
    rows = []
    for k in seqs:
        ours_ts, their_ts = med[k, "tinyggml"], med[k, "llama.cpp"]
        row = dict(model=os.path.basename(path), seqs=k,
                   test=f"tg{a.n_gen}x{k}" + (f"@d{a.depth}" if a.depth else ""),
                   tinyggml=ours_ts, llamacpp=their_ts, ratio=ours_ts / their_ts,
                   spread={name: (min(ts[k, name]), max(ts[k, name]))
                           for name in ("tinyggml", "llama.cpp")},
                   per_seq_tinyggml=ours_ts / k, per_seq_llamacpp=their_ts / k,
                   scaling_tinyggml=ours_ts / med[1, "tinyggml"],
                   scaling_llamacpp=their_ts / med[1, "llama.cpp"])
        rows.append(row)
        print(f"{row['model']:<32s} {row['test']:<8s} tinyggml {ours_ts:8.2f} t/s  "
              f"llama.cpp {their_ts:8.2f} t/s  ratio {row['ratio']:.2f}x  per sequence "
              f"{row['per_seq_tinyggml']:.2f} / {row['per_seq_llamacpp']:.2f} t/s, x{k} vs 1 "
              f"sequence: tinyggml {row['scaling_tinyggml']:.2f}x, llama.cpp "
              f"{row['scaling_llamacpp']:.2f}x", flush=True)
    return rows


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
    ap.add_argument("--fresh", action="store_true",
                    help="with --load: each repetition in a new interpreter")
    ap.add_argument("--child-load", choices=("tinyggml", "llama.cpp"), help=argparse.SUPPRESS)
    ap.add_argument("--seqs", default="", metavar="S[,S...]",
                    help="also tgN with S sequences decoded together, for each S (1 always run)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.child_load:                        # --fresh: one load, timed in this new interpreter
        __import__("tinyggml" if a.child_load == "tinyggml" else "llama_cpp")   # not timed
        print(load_seconds(a.child_load, a.models[0], a.threads))
        return
    seqs = sorted({1} | {int(x) for x in a.seqs.split(",") if x}) if a.seqs else []
    if seqs and (seqs[0] < 1 or a.n_gen <= 0):
        ap.error("--seqs needs sequence counts >= 1 and -n > 0")

    bw = read_bandwidth(a.threads)
    print(f"read bandwidth ({a.threads} threads): {bw / 1e9:.1f} GB/s", flush=True)
    rows = []
    for path in a.models:
        if a.load > 0:
            secs = {"tinyggml": [], "llama.cpp": []}
            for _ in range(a.load):
                for name in secs:
                    if a.fresh:
                        r = subprocess.run([sys.executable, __file__, path, "-t", str(a.threads),
                                            "--child-load", name], capture_output=True, text=True)
                        if r.returncode != 0:
                            sys.exit(f"--fresh: the {name} load of {path} failed:\n{r.stderr}")
                        secs[name].append(float(r.stdout.split()[-1]))
                    else:
                        secs[name].append(load_seconds(name, path, a.threads))
            med = {k: statistics.median(v) for k, v in secs.items()}
            rows.append(dict(model=os.path.basename(path), unit="s",
                             test="load-fresh" if a.fresh else "load",
                             tinyggml=med["tinyggml"], llamacpp=med["llama.cpp"],
                             ratio=med["llama.cpp"] / med["tinyggml"],
                             spread={k: (min(v), max(v)) for k, v in secs.items()}))
            print(f"{rows[-1]['model']:<32s} {'load':<8s} tinyggml {med['tinyggml']:8.2f} s    "
                  f"llama.cpp {med['llama.cpp']:8.2f} s    ratio {rows[-1]['ratio']:.2f}x "
                  f"(open -> first logits{', fresh processes' if a.fresh else ''}; > 1: "
                  f"tinyggml faster)", flush=True)
        if a.n_prompt <= 0 and a.n_gen <= 0:
            continue
        # models with attention layers: both sides keep a KV cache of the same n_ctx
        n_ctx = a.depth + max(a.n_prompt, a.n_gen) + 16
        tg_side = TinyGGML(path, a.threads, n_seq_max=max([8] + seqs), n_ctx=n_ctx)
        n_vocab = tg_side.m.n_vocab
        peer = LlamaCpp(path, a.threads, n_ctx=n_ctx)
        rng = np.random.default_rng(0)
        toks = rng.integers(0, n_vocab, size=max(a.n_prompt, a.n_gen))
        ctx = rng.integers(0, n_vocab, size=a.depth)
        wbytes = weight_bytes_per_token(tg_side.m)
        for kind, n in (("pp", a.n_prompt), ("tg", a.n_gen)):
            if n <= 0:
                continue
            run = {s.name: ((lambda s=s: s.pp(toks[:n], ctx)) if kind == "pp"
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
            row = dict(model=os.path.basename(path), test=f"{kind}{n}" + (f"@d{a.depth}" if a.depth else ""),
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
        if seqs:
            rows += batch_rows(path, tg_side, peer, a, seqs)
        del peer
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(threads=a.threads, bandwidth=bw, rows=rows), f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
