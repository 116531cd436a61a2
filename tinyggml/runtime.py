"""Model: GGUF file -> weights (mmapped) -> graphs per ubatch shape -> logits. The Python API.

    m = tinyggml.Model(path, n_threads=None, n_seq_max=8, scan="auto", int_gemm=None)
    logits = m.eval(tokens, seq_id=0)          # [len(tokens), n_vocab] float32, continues seq_id
    out = m.eval_batch({0: toks_a, 1: toks_b})  # one graph run for all sequences (per ubatch)
    m.reset(seq_id=None)

A ubatch holds the tokens of one or more sequences back to back; `seq_info` says where each
starts and which memory slot it uses. A graph (and its compiled C plan) is built once per
(n_tokens, n_out) and reused whatever the number of sequences: a step is fill inputs -> one
nogil run -> read logits. The memory has n_seq_max slots from the start, so plans never rebind.
What a graph records beyond the model is `m.options` (options.GraphOptions): Mamba-2's scan
algorithm (sequences of >= ssd_min_len tokens in chunks by default, shorter ones token by token)
and the quantized-batch path, whose default depends on the CPU (GraphOptions.for_cpu).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from .backend import Plan
from .errors import TinyGGMLError
from .gguf_file import GGUFModel
from .graph import Graph
from .memory import Memory
from .models.common import GraphContext, HParams
from .options import GraphOptions
from .tensor import Tensor


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


def build_graph(arch, hp: HParams, weights: dict, memory: Memory, opts: GraphOptions,
                n_tokens: int, n_out: int | None = None, keep: tuple = ()) -> Graph:
    """Record the forward graph of one ubatch of `n_tokens` tokens, with logits for `n_out`
    rows (None or n_tokens: every row; 0: no LM head at all), by the architecture module
    `arch` (tinyggml.models). Nodes named in `keep` (e.g. "blk.0.l_out") become outputs,
    readable after a run."""
    n_out = n_tokens if n_out is None else n_out
    ctx = GraphContext(hp, weights, memory, opts, n_tokens, n_out)
    g = ctx.graph
    out = arch.build_graph(ctx)
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
                 scan: str = "auto", ssd_chunk: int | None = None, int_gemm: bool | None = None,
                 n_seq_max: int = 8, options: GraphOptions | None = None):
        """n_seq_max: sequences that can hold state at once (slots are allocated up front,
        zeroed lazily by the OS: untouched slots cost no memory). scan / ssd_chunk / int_gemm
        override the graph options, whose default is the CPU's (GraphOptions.for_cpu), or
        `options` replaces them whole."""
        t0 = time.perf_counter()
        try:
            over = {k: v for k, v in (("scan", scan), ("ssd_chunk", ssd_chunk),
                                      ("int_gemm", int_gemm)) if v is not None}
            self.options = (replace(options, **over) if options is not None
                            else GraphOptions.for_cpu(**over))
        except (ValueError, TypeError) as e:
            raise TinyGGMLError(str(e)) from None
        self.path = str(path)
        self.file = GGUFModel(self.path)
        self.arch: str = self.file.arch
        self.arch_module = self.file.arch_module
        self.hparams: HParams = self.file.hparams
        self.n_threads = physical_cores() if n_threads is None else int(n_threads)
        if self.n_threads < 1:
            raise TinyGGMLError(f"n_threads must be >= 1, got {n_threads}")
        if n_ubatch < 1:
            raise TinyGGMLError(f"n_ubatch must be >= 1, got {n_ubatch}")
        self.n_ubatch = int(n_ubatch)
        self.weights = self.arch_module.load_tensors(self.file, self.hparams)
        if self.file.dequantized:
            kinds = sorted({f"{a}->{b}" for _, a, b, _ in self.file.dequantized})
            extra = sum(n for *_, n in self.file.dequantized)
            print(f"tinyggml: warning: {self.path}: {len(self.file.dequantized)} tensors "
                  f"dequantized at load ({', '.join(kinds)}): {extra / 2**20:.1f} MiB of extra "
                  f"memory", file=sys.stderr)
        self.memory: Memory = self.arch_module.make_memory(self.hparams, n_seq_max)
        self._compiled: dict[tuple, _Compiled] = {}
        self._tokenizer = None
        self.load_ms = (time.perf_counter() - t0) * 1000

    @property
    def state(self) -> Memory:
        """The model's memory (the recurrent state of each sequence); `memory` is its name."""
        return self.memory

    @property
    def scan(self) -> tuple:
        return self.options.scan, self.options.ssd_chunk

    @property
    def n_seq_max(self) -> int:
        return self.memory.n_seq_max

    @property
    def n_vocab(self) -> int:
        return self.hparams.n_vocab

    @property
    def state_bytes_per_sequence(self) -> int:
        return self.memory.bytes_per_sequence

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
    def build_graph(self, n_tokens: int, n_out: int | None = None, keep: tuple = ()) -> Graph:
        """Record (not run) the graph of a ubatch of n_tokens tokens; see runtime.build_graph."""
        return build_graph(self.arch_module, self.hparams, self.weights, self.memory, self.options,
                           n_tokens, n_out, keep)

    def compiled(self, n_tokens: int, n_out: int | None = None, keep: tuple = ()) -> _Compiled:
        """The graph and plan for this ubatch shape, recorded on first use and cached. The
        shape is the token count and the logit rows: the number of sequences is an input."""
        n_out = n_tokens if n_out is None else n_out
        key = (n_tokens, n_out, keep)
        c = self._compiled.get(key)
        if c is None:
            if len(self._compiled) >= 64:      # bound the cache (odd shapes): oldest out
                self._compiled.pop(next(iter(self._compiled)))
            g = self.build_graph(n_tokens, n_out, keep)
            c = _Compiled(g, Plan(g, max_threads=self.n_threads),
                          {k: t.data for k, t in g.inputs.items()}, g.outputs["logits"])
            self._compiled[key] = c
        return c

    def _run(self, c: _Compiled, parts):
        """Fill seq_info with `parts` [(slot, first token, n tokens)] and run the plan."""
        info = c.inputs["seq_info"]
        info[:len(parts)] = parts
        info[len(parts):] = 0
        c.plan.set_rows(c.graph.inputs["seq_info"], len(parts))
        c.plan.run(self.n_threads)

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
            self.memory.seq_slot(sid)                  # every sequence has a slot before a run
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
            c = self.compiled(n_tokens, len(rows))
            pos, info = 0, []
            for sid, start, n in parts:
                c.inputs["tokens"][pos:pos + n] = toks[sid][start:start + n]
                info.append((self.memory.slot_of[sid], pos, n))
                pos += n
            if "out_ids" in c.inputs:
                c.inputs["out_ids"][:] = [r for _, _, r in rows]
            self._run(c, info)
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
        slot = self.memory.seq_slot(seq_id)
        c = self.compiled(len(toks), len(toks), names)
        c.inputs["tokens"][:] = toks
        self._run(c, [(slot, 0, len(toks))])
        T, d = len(toks), self.hparams.n_embd
        hidden = np.stack([c.plan.numpy(c.graph.outputs[n]).reshape(T, d) for n in names])
        return c.plan.numpy(c.logits).reshape(T, self.n_vocab).copy(), hidden

    def reset(self, seq_id: int | None = None):
        """Clear the state of one sequence (its slot is freed), or of all."""
        self.memory.clear(seq_id)
