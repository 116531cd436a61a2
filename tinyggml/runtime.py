"""Model: GGUF file -> weights (mmapped) -> graphs per ubatch shape -> logits. The Python API.

    m = tinyggml.Model(path, n_threads=None, n_seq_max=8, scan="auto", int_gemm=None)
    logits = m.eval(tokens, seq_id=0)          # [len(tokens), n_vocab] float32, continues seq_id
    out = m.eval_batch({0: toks_a, 1: toks_b})  # one graph run for all sequences (per ubatch)
    m.reset(seq_id=None)

A ubatch holds the tokens of one or more sequences back to back; `seq_info` says where each
starts and which memory slot it uses. A graph (and its compiled C plan) is built once per
(n_tokens, n_out) and reused whatever the number of sequences: a step is fill inputs -> one
nogil run -> read logits. The memory has n_seq_max slots from the start, so plans never rebind.
What a graph records beyond the model is `m.options` (options.GraphOptions): the algorithm of
Mamba-2's scan and Qwen3.5's delta rule (sequences of >= ssd_min_len / delta_min_len tokens in
chunks by default, shorter ones token by token) and the quantized-batch path, whose default depends on the CPU (GraphOptions.for_cpu).
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace

import numpy as np

from .backend import Plan
from .errors import ModelLoadError, TinyGGMLError
from .gguf_file import GGUFModel
from .graph import Graph
from .memory import Memory
from .models.common import GraphContext, HParams
from .ops import OPS, Op
from .options import GraphOptions
from .repack import pack_weights
from .state_file import Entry, decode, encode, model_fingerprint
from .tensor import F16, F32, Tensor
from .threads import PlanTimes, ThreadChooser


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
    times: PlanTimes = field(default_factory=PlanTimes)   # for the thread count (threads.py)


KV_TYPES = {"f16": F16, "f32": F32}     # the KV cache's cells (hybrid models)
PLANS_MAX = 64                 # compiled plans a Model keeps (one per ubatch shape)
PLAN_BYTES_MAX = 1 << 30       # and the arena bytes they may hold together


def _locked(method):
    """Serialize calls that run graphs or change sequences: a Model may be shared by threads
    (one graph run at a time; each sequence stays consistent)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


@dataclass
class _Seq:
    """What the model keeps of a sequence beside its memory slot."""
    tokens: array = field(default_factory=lambda: array("i"))   # its history (int32: 4 B a token)
    logits: np.ndarray | None = None                  # after the last token, when computed
    snapshots: list = field(default_factory=list)     # state_file.Entry, ascending length


@dataclass
class MemoryEstimate:
    """What a model needs, in bytes (Model.memory_estimate; `tinyggml-cli info` prints it)."""
    weights: int                 # the file's tensors, mapped: read from disk as they are used
    dequantized: int             # copies made at load of types the kernels do not read
    state_per_sequence: int      # each live sequence's memory slot (snapshots: one each)
    n_seq_max: int
    arena: int = 0               # activations and scratch of the largest ubatch (0: not computed)

    def total(self, sequences: int = 1) -> int:
        return self.weights + self.dequantized + self.state_per_sequence * sequences + self.arena


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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
    every = keep == ("*",)               # every computed F32 node (the finite-values check)
    for t in list(g.nodes):
        if t.name in keep or (every and t.op != Op.VIEW and t.type == F32):
            g.output(t)
            g.outputs[t.name] = t
    g.outputs["logits"] = out
    return g


class Model:
    """A Mamba-1 / Mamba-2 GGUF model ready to evaluate. See the module docstring."""

    def __init__(self, path: str, n_threads: int | None = None, n_ubatch: int = 512,
                 scan: str | None = None, ssd_chunk: int | None = None, int_gemm: bool | None = None,
                 n_seq_max: int = 8, options: GraphOptions | None = None,
                 snapshot_every: int = 512, max_snapshots: int | None = None, prefix_cache=None,
                 check_memory: bool = True, check_finite: bool = False, repack: bool = True,
                 n_ctx: int | None = None, kv_type: str = "f16"):
        """n_threads: None (default) runs each graph on up to the physical cores, on whichever
        count is fastest at the moment (threads.py: a shared machine's busy core makes one
        thread beat two); a number fixes it. n_seq_max: sequences that can hold state at once
        (slots are allocated up front,
        zeroed lazily by the OS: untouched slots cost no memory). scan / ssd_chunk / int_gemm
        override the graph options, whose default is the CPU's (GraphOptions.for_cpu), or
        `options` replaces them whole. snapshot_every (0: none) and max_snapshots: the states
        kept per sequence for rollback() (default: as many as fit in 256 MiB, at most 8, at
        least 1). prefix_cache: a PrefixCache to resume prompts from. check_memory: refuse
        (ModelLoadError) before loading when the estimate does not fit the available memory.
        check_finite: keep every node's output and stop at the first NaN / Inf, naming the node
        that made it (slower: for finding where a model breaks). repack: interleave the rows of
        Q4_0 / Q8_0 / Q4_K / Q6_K weights for the decode dots where the build has them (repack.py).
        n_ctx, kv_type: models with attention layers (hybrids) keep a KV cache of up to n_ctx
        positions per sequence (default the model's context length; pages are committed as
        they fill), of "f16" or "f32" cells; models without one ignore them."""
        t0 = time.perf_counter()
        self._lock = threading.RLock()
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
        # n_threads None: up to the physical cores, each run on the count that is fastest now
        self._threads = ThreadChooser(self.n_threads) if n_threads is None else None
        if n_ubatch < 1:
            raise TinyGGMLError(f"n_ubatch must be >= 1, got {n_ubatch}")
        self.n_ubatch = int(n_ubatch)
        if int(n_seq_max) < 1:
            raise TinyGGMLError(f"n_seq_max must be >= 1, got {n_seq_max}")
        self._n_seq_max = int(n_seq_max)
        if kv_type not in KV_TYPES:
            raise TinyGGMLError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
        self.kv_type = kv_type
        self.n_ctx = self.hparams.context_limit(n_ctx)
        # the memory check comes twice: before the tensors (weights and the copies dequantizing
        # makes), and once they have confirmed the hparams, with a sequence's state
        self._check_memory(check_memory, with_state=False)
        self.weights = self.arch_module.load_tensors(self.file, self.hparams)
        self.packed_bytes = pack_weights(self.weights, self.n_threads) if repack else 0
        self._check_memory(check_memory, with_state=True)
        self.memory: Memory = self.arch_module.make_memory(self.hparams, n_seq_max, self.n_ctx,
                                                           KV_TYPES[kv_type])
        if self.file.dequantized:
            kinds = sorted({f"{a}->{b}" for _, a, b, _ in self.file.dequantized})
            extra = sum(n for *_, n in self.file.dequantized)
            print(f"tinyggml: warning: {self.path}: {len(self.file.dequantized)} tensors "
                  f"dequantized at load ({', '.join(kinds)}): {extra / 2**20:.1f} MiB of extra "
                  f"memory", file=sys.stderr)
        if max_snapshots is None:
            max_snapshots = min(8, max(1, (256 << 20) // max(1, self.memory.bytes_per_sequence)))
        if snapshot_every < 0 or max_snapshots < 0:
            raise TinyGGMLError("snapshot_every and max_snapshots must be >= 0")
        self.snapshot_every, self.max_snapshots = int(snapshot_every), int(max_snapshots)
        self.check_finite = bool(check_finite)
        self._compiled: OrderedDict[tuple, _Compiled] = OrderedDict()
        self._tokenizer = None
        self._seqs: dict[int, _Seq] = {}
        self._fingerprint: bytes | None = None
        self._prefix_cache = None
        self.tokens_evaluated = 0          # tokens run through the graphs, all sequences
        self.rollback_reevaluated = deque(maxlen=1024)   # tokens recent rollbacks evaluated again
        self.prefix_cache = prefix_cache
        self.load_ms = (time.perf_counter() - t0) * 1000

    def _estimate_before_load(self, with_state: bool = True) -> MemoryEstimate:
        from .tensor import WEIGHT_TYPES
        weights = dequant = 0
        for t in self.file.tensors.values():
            weights += int(t.n_bytes)
            if int(t.tensor_type) not in WEIGHT_TYPES:      # dequantized at load, F16 at best
                dequant += int(t.n_elements) * (2 if len(t.shape) > 1 else 4)
        # a sequence's state from the hparams, before any array is made
        state = 0
        if with_state:       # the recurrent state, and a KV cache filled to n_ctx (hybrids)
            state = (self.hparams.state_bytes_per_sequence
                     + self.hparams.kv_bytes_per_token(KV_TYPES[self.kv_type]) * (self.n_ctx or 0))
        return MemoryEstimate(weights, dequant, state, self._n_seq_max)

    def _check_memory(self, check: bool, with_state: bool):
        if not check:
            return
        est = self._estimate_before_load(with_state)
        if with_state:                     # after loading: the copies exist, MemAvailable saw them
            est.dequantized = 0
        avail = available_memory()
        if avail is not None and est.total() + (64 << 20) > avail:
            gib = lambda n: f"{n / 2**30:.2f} GiB"     # noqa: E731
            raise ModelLoadError(
                f"{self.path}: needs about {gib(est.total())} (weights {gib(est.weights)}, "
                f"dequantized copies {gib(est.dequantized)}, one sequence's state "
                f"{gib(est.state_per_sequence)}), {gib(avail)} available; pass "
                f"check_memory=False (tinyggml-cli: --no-memory-check) to load anyway")

    def memory_estimate(self, n_tokens: int | None = None) -> MemoryEstimate:
        """The memory this model needs: weights, dequantized copies, state per sequence, and
        the arena and scratch of a ubatch of n_tokens (default n_ubatch) tokens."""
        from .alloc import plan_memory
        from .ops import EMPTY_OPS, OPS
        est = self._estimate_before_load()
        est.dequantized = sum(n for *_, n in self.file.dequantized)
        g = self.build_graph(n_tokens or self.n_ubatch)
        _, arena = plan_memory(g.nodes)
        scratch = max((OPS[t.op].wsize(t) for t in g.nodes if t.op not in EMPTY_OPS), default=0)
        est.arena = arena + scratch * self.n_threads
        return est

    @property
    def state(self) -> Memory:
        """The model's memory (the recurrent state of each sequence); `memory` is its name."""
        return self.memory

    @property
    def scan(self) -> tuple:
        return self.options.scan, self.options.ssd_chunk

    @property
    def n_seq_max(self) -> int:
        return self._n_seq_max

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
            tok = Tokenizer.from_gguf(self.file.reader)
            if tok.n_vocab > self.n_vocab:       # its ids would index past the embeddings
                raise ModelLoadError(f"{self.path}: the tokenizer has {tok.n_vocab} tokens, the "
                                     f"model's embeddings {self.n_vocab}")
            self._tokenizer = tok
        return self._tokenizer

    def tokenize(self, text: str, add_bos: bool | None = None, parse_special: bool = False) -> list:
        return self.tokenizer.tokenize(text, add_bos=add_bos, parse_special=parse_special)

    def detokenize(self, ids) -> str:
        return self.tokenizer.detokenize(ids)

    def generate(self, prompt, max_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, seed: int | None = None, stream: bool = False,
                 seq_id: int = 0):
        """Generate up to max_tokens after `prompt` (text, or a list of token ids; sequence
        `seq_id` starts fresh, or from the longest prefix in the prefix cache). Returns the
        text, or with stream=True an iterator of text pieces. temperature 0 is greedy."""
        from .generate import start
        from .sampling import SamplerParams
        g = start(self, prompt, max_tokens, SamplerParams(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            repeat_penalty=repeat_penalty, seed=seed), seq_id=seq_id)
        self.last_generation = g
        return iter(g) if stream else "".join(g)

    @property
    def threads_auto(self) -> bool:
        """True when each graph run takes 1..n_threads threads, whichever is fastest now."""
        return self._threads is not None

    # ---- graphs -------------------------------------------------------------------------------
    def build_graph(self, n_tokens: int, n_out: int | None = None, keep: tuple = ()) -> Graph:
        """Record (not run) the graph of a ubatch of n_tokens tokens; see runtime.build_graph."""
        return build_graph(self.arch_module, self.hparams, self.weights, self.memory, self.options,
                           n_tokens, n_out, keep)

    @_locked
    def compiled(self, n_tokens: int, n_out: int | None = None, keep: tuple = ()) -> _Compiled:
        """The graph and plan for this ubatch shape, recorded on first use and cached. The
        shape is the token count and the logit rows: the number of sequences is an input."""
        n_out = n_tokens if n_out is None else n_out
        key = (n_tokens, n_out, keep)
        c = self._compiled.get(key)
        if c is not None:
            self._compiled.move_to_end(key)        # least recently used go first
        else:
            g = self.build_graph(n_tokens, n_out, keep)
            c = _Compiled(g, Plan(g, max_threads=self.n_threads),
                          {k: t.data for k, t in g.inputs.items()}, g.outputs["logits"])
            self._compiled[key] = c
            # bounded: at most PLANS_MAX plans and PLAN_BYTES_MAX of arenas (but always the
            # newest), the oldest out first; a server's ever-changing shapes cannot pile up
            while len(self._compiled) > 1 and (len(self._compiled) > PLANS_MAX or sum(
                    p.plan.arena_bytes for p in self._compiled.values()) > PLAN_BYTES_MAX):
                self._compiled.pop(next(iter(self._compiled)))
        return c

    def _first_non_finite(self, c: _Compiled):
        """Raise naming the first node (in execution order) whose output has a NaN or Inf."""
        for t in c.graph.nodes:
            if t.name in c.graph.outputs and t.type == F32:
                v = c.plan.numpy(t)
                if not np.isfinite(v).all():
                    bad = "nan" if np.isnan(v).any() else "inf"
                    raise TinyGGMLError(f"{bad} first appears in node '{t.name}' "
                                        f"({OPS[t.op].name}, shape {list(t.ne[:t.ndim])})")

    def _run(self, c: _Compiled, parts):
        """Fill seq_info with `parts` [(slot, first token, n tokens)] and run the plan."""
        info = c.inputs["seq_info"]
        info[:len(parts)] = parts
        info[len(parts):] = 0
        c.plan.set_rows(c.graph.inputs["seq_info"], len(parts))
        if self._threads is None:
            c.plan.run(self.n_threads)
        else:
            self._threads.run(c.plan, c.times)

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

    @_locked
    def eval_batch(self, batch: dict, logits: str = "all") -> dict:
        """{seq_id: tokens} -> {seq_id: logits}. Sequences of any lengths are evaluated
        together: one graph run per ubatch of up to n_ubatch tokens. logits="last" returns
        [1, n_vocab] per sequence (the last token's) and skips the LM head elsewhere; then a
        sequence with no state resumes from the longest prefix of its tokens in the prefix
        cache, if one is attached (a whole prompt found there costs no evaluation).

        Snapshots of a sequence's state are taken when it reaches a multiple of
        snapshot_every tokens and at the end of a call that gave it 2 tokens or more (a
        piece of a ubatch ends at each such point): rollback() restores them."""
        if not isinstance(batch, dict):
            raise TinyGGMLError("eval_batch takes a dict {seq_id: tokens}")
        if logits not in ("all", "last"):
            raise TinyGGMLError(f"logits must be 'all' or 'last', got {logits!r}")
        toks = {sid: self._check_tokens(t) for sid, t in batch.items()}
        new = [sid for sid in toks if not self.memory.has(sid)]
        free = self.n_seq_max - len(self.memory.slot_of)
        if len(new) > free:              # refused before any slot is taken
            raise TinyGGMLError(f"{len(new)} new sequences, {free} of {self.n_seq_max} slots free: "
                                f"reset finished sequences, or build the model with a larger "
                                f"n_seq_max")
        last = logits == "last"
        out = {sid: np.empty((min(len(t), 1) if last else len(t), self.n_vocab), np.float32)
               for sid, t in toks.items()}
        for sid in toks:
            self.memory.seq_slot(sid)                  # every sequence has a slot before a run
            self._seqs.setdefault(int(sid), _Seq())
        try:
            self._eval_parts(toks, out, last)
        except BaseException:
            for sid in new:            # a sequence this call created and never ran: slot freed
                if not self._seqs[int(sid)].tokens:
                    self.memory.clear(sid)
                    self._seqs.pop(int(sid), None)
            raise
        return out

    def _eval_parts(self, toks: dict, out: dict, last: bool):
        done = {sid: 0 for sid in toks}
        if last and self._prefix_cache is not None:
            for sid, t in toks.items():
                if len(t) and not self._seqs[int(sid)].tokens:
                    done[sid] = self._resume(int(sid), t)
                    if done[sid] == len(t):                # the whole prompt was cached
                        out[sid][0] = self._seqs[int(sid)].logits
        every = self.snapshot_every
        while True:
            # fill one ubatch: each pending sequence contributes its next piece, which ends at
            # the sequence's next snapshot point
            parts, budget = [], self.n_ubatch
            for sid, t in toks.items():
                n = min(len(t) - done[sid], budget)
                if n > 0 and every:
                    n = min(n, every - len(self._seqs[int(sid)].tokens) % every)
                if n > 0:
                    parts.append((sid, done[sid], n))
                    budget -= n
            if not parts:
                return
            n_tokens = sum(n for _, _, n in parts)
            # rows that need logits: every row, or each sequence's final token and the ends of
            # pieces that will be snapshotted (a snapshot keeps the logits after its last token).
            # A snapshot at an interval point serves rollback; one at the end of a call of 2+
            # tokens (a prompt, a turn) also goes to the prefix cache.
            rows, pos, snap = [], 0, []
            for sid, start, n in parts:
                end = start + n == len(toks[sid])
                at = len(self._seqs[int(sid)].tokens) + n
                turn = end and len(toks[sid]) > 1
                snap.append((bool(every and at % every == 0) or turn, turn))
                if not last:
                    rows.extend((sid, start + i, pos + i) for i in range(n))
                elif end or snap[-1][0]:
                    rows.append((sid, 0 if end else -1, pos + n - 1))
                pos += n
            self._check_context(parts)
            c = self.compiled(n_tokens, len(rows), ("*",) if self.check_finite else ())
            pos, info = 0, []
            for sid, start, n in parts:
                c.inputs["tokens"][pos:pos + n] = toks[sid][start:start + n]
                if "pos" in c.inputs:                  # each token's position in its sequence
                    past = len(self._seqs[int(sid)].tokens)
                    c.inputs["pos"][pos:pos + n] = np.arange(past, past + n, dtype=np.int32)
                info.append((self.memory.slot_of[sid], pos, n))
                pos += n
            if "out_ids" in c.inputs:
                c.inputs["out_ids"][:] = [r for _, _, r in rows]
            # the history first: once the run starts it completes (an interrupt is raised after
            # it), so history and state never disagree
            for sid, start, n in parts:
                seq = self._seqs[int(sid)]
                seq.tokens.frombytes(toks[sid][start:start + n].tobytes())
                seq.logits = None
                done[sid] += n
            self._run(c, info)
            self.tokens_evaluated += n_tokens
            if self.check_finite:
                self._first_non_finite(c)
            lg = c.plan.numpy(c.logits).reshape(len(rows), self.n_vocab) if rows else None  # arena view
            if rows and not last:          # rows are all tokens in order: copy per part
                pos = 0
                for sid, start, n in parts:
                    out[sid][start:start + n] = lg[pos:pos + n]
                    pos += n
            row_of_part_end = {}
            for j, (sid, dst, r) in enumerate(rows):
                if last and dst >= 0:
                    out[sid][dst] = lg[j]
                row_of_part_end[r] = j
            pos = 0
            for sid, start, n in parts:
                if pos + n - 1 in row_of_part_end:
                    self._seqs[int(sid)].logits = lg[row_of_part_end[pos + n - 1]].copy()
                pos += n
            for (sid, _, _), (take, turn) in zip(parts, snap):
                if take:
                    self._snapshot(int(sid), to_cache=turn)

    def _check_context(self, parts):
        """Refuse a ubatch that would take a sequence past the KV cache's n_ctx positions."""
        limit = self.memory.n_ctx
        if limit is None:
            return
        for sid, _, n in parts:
            past = self.n_past(sid)
            if past + n > limit:
                raise TinyGGMLError(f"sequence {sid}: {past} + {n} tokens exceed the context limit "
                                    f"of {limit} (n_ctx; tinyggml-cli: -c)")

    @_locked
    def eval_hidden(self, tokens, seq_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Like eval, in one ubatch, also returning the residual stream [n_layer+1, T, n_embd]:
        the embeddings, then each block's output (for finding where a model diverges)."""
        toks = self._check_tokens(tokens)
        names = ("inp_embd",) + tuple(f"blk.{il}.l_out" for il in range(self.hparams.n_layer))
        slot = self.memory.seq_slot(seq_id)
        self._check_context([(seq_id, 0, len(toks))])
        c = self.compiled(len(toks), len(toks), names)
        c.inputs["tokens"][:] = toks
        if "pos" in c.inputs:
            past = self.n_past(seq_id)
            c.inputs["pos"][:] = np.arange(past, past + len(toks), dtype=np.int32)
        self._run(c, [(slot, 0, len(toks))])
        self.tokens_evaluated += len(toks)
        T, d = len(toks), self.hparams.n_embd
        hidden = np.stack([c.plan.numpy(c.graph.outputs[n]).reshape(T, d) for n in names])
        lg = c.plan.numpy(c.logits).reshape(T, self.n_vocab).copy()
        seq = self._seqs.setdefault(int(seq_id), _Seq())
        seq.tokens.frombytes(toks.tobytes())
        seq.logits = lg[-1].copy() if T else seq.logits
        return lg, hidden

    @_locked
    def reset(self, seq_id: int | None = None):
        """Clear the state of one sequence (its slot is freed), or of all."""
        self.memory.clear(seq_id)
        if seq_id is None:
            self._seqs.clear()
        else:
            self._seqs.pop(int(seq_id), None)

    # ---- sequences: history, snapshots, saving, copying, rollback -----------------------------
    def n_past(self, seq_id: int) -> int:
        """Tokens sequence `seq_id` has consumed (0 for one never run or reset)."""
        s = self._seqs.get(int(seq_id))
        return len(s.tokens) if s else 0

    def tokens(self, seq_id: int) -> list:
        """The token history of `seq_id`."""
        s = self._seqs.get(int(seq_id))
        return list(s.tokens) if s else []

    def last_logits(self, seq_id: int) -> np.ndarray | None:
        """The logits after the sequence's last token, when they were computed."""
        s = self._seqs.get(int(seq_id))
        return None if s is None or s.logits is None else s.logits.copy()

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 identifying this model for saved states (state_file.model_fingerprint)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self)
        return self._fingerprint

    @property
    def prefix_cache(self):
        return self._prefix_cache

    @prefix_cache.setter
    @_locked
    def prefix_cache(self, cache):
        if cache is not None:
            if cache.fingerprint is None:
                cache.fingerprint = self.fingerprint
            elif cache.fingerprint != self.fingerprint:
                raise TinyGGMLError("this prefix cache holds states of another model")
        self._prefix_cache = cache

    def _entry(self, seq_id: int, with_tokens: bool = True) -> Entry:
        """The sequence now: with its tokens, a whole state (KV cache included: it can start
        any sequence); without, a snapshot for its own rollback (the recurrent part only)."""
        s = self._seqs[seq_id]
        toks = np.frombuffer(s.tokens, np.int32).copy() if with_tokens else None
        return Entry(toks, self.memory.seq_state(seq_id, len(s.tokens), kv=with_tokens),
                     None if s.logits is None else s.logits.copy(), len(s.tokens))

    def _snapshot(self, seq_id: int, to_cache: bool = True) -> Entry | None:
        """Keep the sequence's state now (for rollback, and with to_cache in the prefix cache)."""
        if self.max_snapshots == 0 and (self._prefix_cache is None or not to_cache):
            return None                            # nothing would keep it: no copy
        s = self._seqs[seq_id]
        # a snapshot kept for rollback only needs no copy of the history (its sequence's history
        # starts with it): histories are not copied once per snapshot
        cache = to_cache and self._prefix_cache is not None
        if s.snapshots and s.snapshots[-1].size == len(s.tokens):
            e = s.snapshots[-1]
            if e.logits is None and s.logits is not None:
                e.logits = s.logits.copy()
        else:
            e = self._entry(seq_id, with_tokens=cache)
            s.snapshots.append(e)
            while len(s.snapshots) > self.max_snapshots:
                del s.snapshots[0]                 # the oldest goes: rollbacks are usually recent
        if cache and e.tokens is None:
            e.tokens = np.frombuffer(s.tokens, np.int32)[:e.size].copy()
            if len(e.state) != self.memory.state_bytes(e.size):     # the KV cache too
                e.state = self.memory.seq_state(seq_id, e.size)
        if cache and e.logits is not None and e.size:
            self._prefix_cache.put(e)
        return e

    @_locked
    def checkpoint(self, seq_id: int) -> Entry:
        """Snapshot the sequence where it is now (generate() does it after a reply, so that the
        next turn of a chat resumes there) and return it."""
        if int(seq_id) not in self._seqs:
            raise TinyGGMLError(f"sequence {seq_id} has no state")
        e = self._snapshot(int(seq_id))
        if e is None:
            return self._entry(int(seq_id))
        if e.tokens is None:
            e.tokens = np.frombuffer(self._seqs[int(seq_id)].tokens, np.int32)[:e.size].copy()
            if len(e.state) != self.memory.state_bytes(e.size):
                e.state = self.memory.seq_state(int(seq_id), e.size)
        return e

    def _resume(self, seq_id: int, toks: np.ndarray) -> int:
        """Load the longest cached prefix of `toks` into the (empty) sequence; its length."""
        e = self._prefix_cache.longest(toks)
        if e is None or e.logits is None or not len(e.tokens):
            return 0
        self.memory.seq_load(seq_id, e.state, e.size)
        self._seqs[seq_id] = _Seq(array("i", e.tokens.tobytes()), e.logits.copy(), [e])
        return len(e.tokens)

    @_locked
    def resume(self, seq_id: int, tokens) -> int:
        """Start the empty sequence `seq_id` from the longest prefix of `tokens` held in the
        prefix cache (its state, history and the logits after it); returns how many tokens
        that covers (0: none, or no cache attached). eval_batch does this by itself for a
        sequence's first call with logits="last"; a caller that evaluates a prompt in pieces
        asks here first, with the whole prompt."""
        seq_id = int(seq_id)
        if self.n_past(seq_id):
            raise TinyGGMLError(f"resume: sequence {seq_id} has state; reset it first")
        if self._prefix_cache is None:
            return 0
        return self._resume(seq_id, self._check_tokens(tokens))

    @_locked
    def state_save(self, seq_id: int) -> bytes:
        """The sequence's state and token history (and last logits) as bytes (state_file.py):
        state_load on a Model of the same file continues exactly as this one would."""
        seq_id = int(seq_id)
        if seq_id not in self._seqs:
            raise TinyGGMLError(f"sequence {seq_id} has no state to save")
        return encode(self.fingerprint, [self._entry(seq_id)])

    @_locked
    def state_load(self, seq_id: int, blob: bytes):
        """Set sequence `seq_id` from state_save bytes. A blob of another model or format
        version, truncated or corrupted is refused (TinyGGMLError naming what does not match)
        and the sequence is left as it was."""
        entries = decode(blob, self.fingerprint, self.memory.state_bytes, self.n_vocab)
        if len(entries) != 1:
            raise TinyGGMLError(f"state: {len(entries)} entries, a sequence's state has 1")
        e = entries[0]
        if len(e.tokens) > (self.memory.n_ctx or len(e.tokens)):
            raise TinyGGMLError(f"state: {len(e.tokens)} tokens, beyond this model's context "
                                f"limit of {self.memory.n_ctx}")
        self.memory.seq_load(seq_id, e.state, len(e.tokens))   # refuses (no free slot) first
        self._seqs[int(seq_id)] = _Seq(array("i", e.tokens.tobytes()), e.logits, [])

    @_locked
    def seq_copy(self, src: int, dst: int):
        """Sequence `dst` becomes a copy of `src`: both continue exactly alike (forks,
        n-best sampling, beam search)."""
        src, dst = int(src), int(dst)
        if src not in self._seqs:
            raise TinyGGMLError(f"seq_copy: sequence {src} has no state")
        if src == dst:
            return
        self.memory.seq_copy(src, dst, self.n_past(src))
        s = self._seqs[src]
        self._seqs[dst] = _Seq(array("i", s.tokens), None if s.logits is None else s.logits.copy(),
                               list(s.snapshots))

    @_locked
    def rollback(self, seq_id: int, n_past: int) -> int:
        """Make the sequence exactly as if only its first n_past tokens had been evaluated:
        restore the nearest snapshot at or before n_past (the sequence's own, or a deeper one in
        the prefix cache) and evaluate the tokens after it again. Returns how many."""
        seq_id = int(seq_id)
        s = self._seqs.get(seq_id)
        have = len(s.tokens) if s else 0
        if not 0 <= n_past <= have:
            raise TinyGGMLError(f"rollback to {n_past}: sequence {seq_id} has {have} tokens")
        if n_past == have:
            return 0
        target = s.tokens[:n_past]
        snaps = [e for e in s.snapshots if e.size <= n_past]
        base = snaps[-1] if snaps else None
        if self._prefix_cache is not None:
            e = self._prefix_cache.longest(target)
            if e is not None and (base is None or e.size > base.size):
                base = e
        if base is None:
            self.memory.clear(seq_id)
            self._seqs[seq_id] = _Seq(array("i"), None, [])
        else:
            # a whole state (the prefix cache's) or the sequence's own snapshot of its recurrent
            # part: its KV cache's first base.size positions are those of the snapshot
            self.memory.seq_load(seq_id, base.state, base.size)
            self._seqs[seq_id] = _Seq(array("i", target[:base.size]),
                                      None if base.logits is None else base.logits.copy(), snaps)
        rest = target[len(self._seqs[seq_id].tokens):]
        if rest:
            self.eval(rest, seq_id, logits="last")
        else:
            self.memory.seq_slot(seq_id)
        self.rollback_reevaluated.append(len(rest))
        return len(rest)
