"""Perplexity in the manner of llama-perplexity.

The text is tokenized once and cut into chunks of n_ctx tokens. Each chunk starts from a fresh
state (its first token replaced by BOS when the vocabulary adds one), and only the predictions
of its second half are scored, so every scored token has at least n_ctx/2 tokens of context.
Several chunks go through the model together, one sequence each.
PPL = exp(mean NLL); the +/- is PPL * std(NLL) / sqrt(n), as llama.cpp reports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import TinyGGMLError


@dataclass
class PerplexityResult:
    ppl: float
    err: float
    n_scored: int
    n_chunks: int
    running: list = field(default_factory=list)     # PPL after each chunk


def chunk_nll(logits: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """NLL of chunk[j+1] under logits[j] for j in [n_ctx/2, n_ctx-1)."""
    first = len(chunk) // 2
    x = logits[first:len(chunk) - 1].astype(np.float64)
    mx = x.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(x - mx).sum(axis=1))
    return lse - x[np.arange(len(x)), chunk[first + 1:]]


def perplexity(model, tokens, n_ctx: int, on_chunk=None, on_pass=None) -> PerplexityResult:
    """Perplexity of `tokens` (ids); on_chunk(i, n_chunks, running_ppl) reports progress, and
    on_pass(chunks_done, n_chunks, chunks_per_pass) follows each graph run, before its chunks
    are reported (several chunks are evaluated together, one per sequence)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if n_ctx < 4:
        raise TinyGGMLError(f"--ctx must be at least 4, got {n_ctx}")
    n_chunks = len(tokens) // n_ctx
    if n_chunks == 0:
        raise TinyGGMLError(f"the text has {len(tokens)} tokens; one chunk needs --ctx {n_ctx}")
    tok = model.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    # chunks per graph run: a ubatch's worth, in the model's free sequence slots
    free = model.n_seq_max - len(model.memory.slot_of)
    if free < 1:
        raise TinyGGMLError(f"perplexity needs a free sequence slot; all {model.n_seq_max} are in use")
    per_run = max(1, min(model.n_ubatch // n_ctx, free))
    nll_all: list[np.ndarray] = []
    running = []
    for c0 in range(0, n_chunks, per_run):
        chunks = {}
        for c in range(c0, min(c0 + per_run, n_chunks)):
            chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
            if bos is not None:
                chunk[0] = bos
            chunks[-1 - c] = chunk          # sequence ids of their own: user sequences untouched
            model.reset(-1 - c)
        out = model.eval_batch(chunks)
        if on_pass:
            on_pass(min(c0 + per_run, n_chunks), n_chunks, per_run)
        for sid, chunk in chunks.items():
            c = -1 - sid
            nll_all.append(chunk_nll(out[sid], chunk))
            model.reset(sid)
            nll = np.concatenate(nll_all)
            running.append(math.exp(nll.mean()))
            if on_chunk:
                on_chunk(c, n_chunks, running[-1])
    nll = np.concatenate(nll_all)
    ppl = math.exp(nll.mean())
    return PerplexityResult(ppl, ppl * nll.std() / math.sqrt(len(nll)), len(nll), n_chunks, running)


@dataclass
class KLResult:
    ppl: float
    base_ppl: float
    kl_mean: float
    kl_err: float
    top1: float
    n_scored: int


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def kl_divergence(model, base, tokens, n_ctx: int, on_chunk=None) -> KLResult:
    """llama-perplexity --kl-divergence: over the scored positions of every chunk, the mean
    KL(base || model) of the next-token distributions and how often their top-1 agree."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n_chunks = len(tokens) // n_ctx
    if n_chunks == 0:
        raise TinyGGMLError(f"the text has {len(tokens)} tokens; one chunk needs --ctx {n_ctx}")
    if base.n_vocab != model.n_vocab:
        raise TinyGGMLError(f"vocabularies differ: {base.n_vocab} vs {model.n_vocab} tokens")
    tok = model.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    kls, top1, nll_m, nll_b = [], [], [], []
    for c in range(n_chunks):
        chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
        if bos is not None:
            chunk[0] = bos
        first = n_ctx // 2
        outs = []
        for m in (model, base):
            m.reset(-1)
            outs.append(_log_softmax(m.eval(chunk, seq_id=-1)[first:n_ctx - 1]))
            m.reset(-1)
        lq, lp = outs
        kls.append((np.exp(lp) * (lp - lq)).sum(axis=1))
        top1.append(lp.argmax(axis=1) == lq.argmax(axis=1))
        tgt = chunk[first + 1:]
        nll_m.append(-lq[np.arange(len(tgt)), tgt])
        nll_b.append(-lp[np.arange(len(tgt)), tgt])
        if on_chunk:
            on_chunk(c, n_chunks, float(np.concatenate(kls).mean()))
    kl = np.concatenate(kls)
    return KLResult(math.exp(np.concatenate(nll_m).mean()), math.exp(np.concatenate(nll_b).mean()),
                    float(kl.mean()), float(kl.std() / math.sqrt(len(kl))),
                    float(np.concatenate(top1).mean()), len(kl))
