"""Model: GGUF file -> weights (mmapped) -> graphs per ubatch shape -> logits. The Python API.

    m = tinyggml.Model(path, n_threads=None, scan="auto")
    logits = m.eval(tokens, seq_id=0)          # [len(tokens), n_vocab] float32, continues seq_id
    out = m.eval_batch({0: toks_a, 1: toks_b})  # one graph run for all sequences (per ubatch)
    m.reset(seq_id=None)

A ubatch holds the tokens of one or more sequences back to back; `seq_info` {3, n_seqs} says
where each starts and which state slot it uses. A graph (and its compiled C plan) is built once
per (n_tokens, n_seqs) and reused: a step is fill inputs -> one nogil run -> read logits.
Mamba-2 scans sequences of >= ops.SSD_MIN_LEN tokens in the ubatch in chunks (state-space
duality) and shorter ones token by token; scan="recurrent" / "chunked" forces one algorithm.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import ops
from .backend import Plan
from .errors import TinyGGMLError
from .gguf_file import GGUFModel, HParams
from .graph import Graph
from .models import ARCH_MODULES
from .models.common import build_forward
from .state import RecurrentState
from .tensor import F32, I32, INPUT, STATE, Tensor, leaf


def physical_cores() -> int:
    """Physical cores available to this process (hyperthreads not counted)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        cpus = set(range(os.cpu_count() or 1))
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/physical_package_id") as f:
                pkg = f.read().strip()
            cores.add((pkg, core))
        except OSError:
            cores.add(("?", c))
    return max(1, len(cores))


@dataclass
class _Compiled:
    graph: Graph
    plan: Plan
    inputs: dict              # name -> numpy input buffer
    logits: Tensor            # {n_vocab, n_out}
    state_version: int


def build_graph(w: dict, hp: HParams, state: RecurrentState, n_tokens: int, n_seqs: int,
                n_out: int | None = None, keep: tuple = (), scan: tuple = ("auto", ops.SSD_CHUNK)
                ) -> Graph:
    """Record the forward graph of one ubatch of `n_tokens` tokens from `n_seqs` sequences,
    with logits for `n_out` rows (None or n_tokens: every row; 0: no LM head at all).
    Nodes named in `keep` (e.g. "blk.0.l_out") become outputs, readable after a run.
    `scan` = (algorithm, chunk) of Mamba-2's ssm_scan (ops.SCAN_ALGOS)."""
    n_out = n_tokens if n_out is None else n_out
    block = ARCH_MODULES[hp.arch].build_block
    (dc1, ch), (ds, hd, nh) = hp.state_shapes()
    g = Graph()
    tokens = leaf(I32, (n_tokens,), "inp_tokens", INPUT, np.zeros(n_tokens, np.int32))
    seq_info = leaf(I32, (3, n_seqs), "inp_seq_info", INPUT, np.zeros((n_seqs, 3), np.int32))
    g.inputs = {"tokens": tokens, "seq_info": seq_info}
    out_ids = None
    if 0 < n_out < n_tokens:
        out_ids = leaf(I32, (n_out,), "inp_out_ids", INPUT, np.zeros(n_out, np.int32))
        g.inputs["out_ids"] = out_ids
    conv = [leaf(F32, (dc1, ch, state.n_slots), f"cache_conv_l{il}", STATE, state.conv[il])
            for il in range(hp.n_layer)]
    ssm = [leaf(F32, (ds, hd, nh, state.n_slots), f"cache_ssm_l{il}", STATE, state.ssm[il])
           for il in range(hp.n_layer)]
    out = build_forward(w, hp, tokens,
                        lambda cur, il: block(w, hp, conv[il], ssm[il], seq_info, cur, il, scan),
                        out_ids, head=n_out > 0)
    g.output(out)
    for t in g.nodes:
        if t.name in keep:
            g.output(t)
            g.outputs[t.name] = t
    g.outputs["logits"] = out
    return g


class Model:
    """A Mamba-1 / Mamba-2 GGUF model ready to evaluate. See the module docstring."""

    def __init__(self, path: str, n_threads: int | None = None, n_ubatch: int = 512,
                 scan: str = "auto", ssd_chunk: int = ops.SSD_CHUNK):
        t0 = time.perf_counter()
        if scan not in ops.SCAN_ALGOS:
            raise TinyGGMLError(f"scan must be one of {', '.join(ops.SCAN_ALGOS)}, got {scan!r}")
        if not 1 <= ssd_chunk <= ops.SSD_CHUNK_MAX:
            raise TinyGGMLError(f"ssd_chunk must be in 1..{ops.SSD_CHUNK_MAX}, got {ssd_chunk}")
        self.scan = (scan, int(ssd_chunk))
        self.path = str(path)
        self.file = GGUFModel(self.path)
        self.arch: str = self.file.arch
        self.hparams: HParams = self.file.hparams
        self.n_threads = physical_cores() if n_threads is None else int(n_threads)
        if self.n_threads < 1:
            raise TinyGGMLError(f"n_threads must be >= 1, got {n_threads}")
        if n_ubatch < 1:
            raise TinyGGMLError(f"n_ubatch must be >= 1, got {n_ubatch}")
        self.n_ubatch = int(n_ubatch)
        self.weights = ARCH_MODULES[self.arch].load_tensors(self.file, self.hparams)
        if self.file.dequantized:
            kinds = sorted({f"{a}->{b}" for _, a, b, _ in self.file.dequantized})
            extra = sum(n for *_, n in self.file.dequantized)
            print(f"tinyggml: warning: {self.path}: {len(self.file.dequantized)} tensors "
                  f"dequantized at load ({', '.join(kinds)}): {extra / 2**20:.1f} MiB of extra "
                  f"memory", file=sys.stderr)
        self.state = RecurrentState(self.hparams)
        self._compiled: dict[tuple, _Compiled] = {}
        self._tokenizer = None
        self.load_ms = (time.perf_counter() - t0) * 1000

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    @property
    def state_bytes_per_sequence(self) -> int:
        return self.state.bytes_per_sequence

    # ---- text -------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The GGUF's tokenizer (built on first use from the already-open file)."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer
            self._tokenizer = Tokenizer.from_gguf(self.file.reader)
        return self._tokenizer

    def tokenize(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list:
        return self.tokenizer.tokenize(text, add_bos=add_bos, parse_special=parse_special)

    def detokenize(self, ids) -> str:
        return self.tokenizer.detokenize(ids)

    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, seed: int | None = None, stream: bool = False,
                 seq_id: int = 0):
        """Generate up to max_tokens after `prompt` (sequence `seq_id` starts fresh). Returns the
        text, or with stream=True an iterator of text pieces. temperature 0 is greedy."""
        from .generate import start
        from .sampling import SamplerParams
        g = start(self, prompt, max_tokens, SamplerParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repeat_penalty=repeat_penalty, seed=seed), seq_id=seq_id)
        self.last_generation = g
        return iter(g) if stream else "".join(g)

    # ---- graphs -------------------------------------------------------------------------------
    def compiled(self, n_tokens: int, n_seqs: int, n_out: int | None = None,
                 keep: tuple = ()) -> _Compiled:
        """The graph and plan for this ubatch shape, recorded on first use and cached."""
        n_out = n_tokens if n_out is None else n_out
        key = (n_tokens, n_seqs, n_out, keep)
        c = self._compiled.get(key)
        if c is None or c.state_version != self.state.version:
            if c is None and len(self._compiled) >= 64:      # bound the cache (odd shapes)
                self._compiled.pop(next(iter(self._compiled)))
            g = build_graph(self.weights, self.hparams, self.state, n_tokens, n_seqs, n_out, keep,
                            self.scan)
            c = _Compiled(g, Plan(g, max_threads=self.n_threads),
                          {k: t.data for k, t in g.inputs.items()}, g.outputs["logits"],
                          self.state.version)
            self._compiled[key] = c
        return c

    # ---- evaluation ---------------------------------------------------------------------------
    def _check_tokens(self, tokens) -> np.ndarray:
        try:
            arr = np.asarray(tokens)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise ValueError
        except (ValueError, TypeError):
            raise TinyGGMLError("tokens must be a 1-D sequence of integer token ids") from None
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_vocab):
            bad = int(arr[(arr < 0) | (arr >= self.n_vocab)][0])
            raise TinyGGMLError(f"token id {bad} out of range: vocabulary has {self.n_vocab} tokens")
        return arr.astype(np.int32)

    def eval(self, tokens, seq_id: int = 0, logits: str = "all") -> np.ndarray:
        """Logits [len(tokens), n_vocab] (float32), or with logits="last" [1, n_vocab] for the
        last token only (cheaper: no LM head on the others). Continues the state of `seq_id`."""
        return self.eval_batch({seq_id: tokens}, logits=logits)[seq_id]

    def eval_batch(self, batch: dict, logits: str = "all") -> dict:
        """{seq_id: tokens} -> {seq_id: logits}. Sequences of any lengths are evaluated
        together: one graph run per ubatch of up to n_ubatch tokens. logits="last" returns
        [1, n_vocab] per sequence (the last token's) and skips the LM head elsewhere."""
        if not isinstance(batch, dict):
            raise TinyGGMLError("eval_batch takes a dict {seq_id: tokens}")
        if logits not in ("all", "last"):
            raise TinyGGMLError(f"logits must be 'all' or 'last', got {logits!r}")
        toks = {sid: self._check_tokens(t) for sid, t in batch.items()}
        for sid in toks:
            self.state.slot(sid)                      # allocate slots up front (may grow)
        last = logits == "last"
        out = {sid: np.empty((min(len(t), 1) if last else len(t), self.n_vocab), np.float32)
               for sid, t in toks.items()}
        done = {sid: 0 for sid in toks}
        while True:
            # fill one ubatch: each pending sequence contributes its next piece
            parts, budget = [], self.n_ubatch
            for sid, t in toks.items():
                n = min(len(t) - done[sid], budget)
                if n > 0:
                    parts.append((sid, done[sid], n))
                    budget -= n
            if not parts:
                return out
            n_tokens = sum(n for _, _, n in parts)
            # rows that need logits: every row, or each sequence's final token
            rows, pos = [], 0
            for sid, start, n in parts:
                if not last:
                    rows.extend((sid, start + i, pos + i) for i in range(n))
                elif start + n == len(toks[sid]):
                    rows.append((sid, 0, pos + n - 1))
                pos += n
            c = self.compiled(n_tokens, len(parts), len(rows))
            pos = 0
            for i, (sid, start, n) in enumerate(parts):
                c.inputs["tokens"][pos:pos + n] = toks[sid][start:start + n]
                c.inputs["seq_info"][i] = (self.state.slot_of[sid], pos, n)
                pos += n
            if "out_ids" in c.inputs:
                c.inputs["out_ids"][:] = [r for _, _, r in rows]
            c.plan.run(self.n_threads)
            if rows:
                lg = c.plan.numpy(c.logits).reshape(len(rows), self.n_vocab)   # arena view
                if not last:          # rows are all tokens in order: copy per part
                    pos = 0
                    for sid, start, n in parts:
                        out[sid][start:start + n] = lg[pos:pos + n]
                        pos += n
                else:
                    for j, (sid, dst, _) in enumerate(rows):
                        out[sid][dst] = lg[j]
            for sid, start, n in parts:
                done[sid] += n

    def eval_hidden(self, tokens, seq_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Like eval, in one ubatch, also returning the residual stream [n_layer+1, T, n_embd]:
        the embeddings, then each block's output (for finding where a model diverges)."""
        toks = self._check_tokens(tokens)
        names = ("inp_embd",) + tuple(f"blk.{il}.l_out" for il in range(self.hparams.n_layer))
        slot = self.state.slot(seq_id)            # before compiling: a new slot may grow the state
        c = self.compiled(len(toks), 1, len(toks), names)
        c.inputs["tokens"][:] = toks
        c.inputs["seq_info"][0] = (slot, 0, len(toks))
        c.plan.run(self.n_threads)
        T, d = len(toks), self.hparams.n_embd
        hidden = np.stack([c.plan.numpy(c.graph.outputs[n]).reshape(T, d) for n in names])
        return c.plan.numpy(c.logits).reshape(T, self.n_vocab).copy(), hidden

    def reset(self, seq_id: int | None = None):
        """Clear the recurrent state of one sequence, or of all."""
        self.state.clear(seq_id)
