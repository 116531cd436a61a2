"""The server's engine: one thread owns the Model and advances every active sequence in the
same graph run, step after step (continuous batching).

A step: cancelled jobs free their sequences; waiting jobs join while sequence slots are free
(each resumes from the longest prefix of its prompt in the prefix cache); then one eval_batch
gives every decoding sequence its last sampled token and every prefilling sequence its next
piece of prompt (at most `prefill_chunk` prompt tokens per step, so that a long prompt does not
stall the streams already running); the logits it returns are sampled, and the text goes back
to each job's event queue. A job of n choices prefills once and forks its sequence (seq_copy)
n - 1 times. A finished sequence is checkpointed into the prefix cache (the next turn of a chat
resumes after the reply) and its slot is freed.

Jobs are created and read on the asyncio side; the engine only calls `job.emit`, which hands
each event to the job's loop thread-safely.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import TinyGGMLError
from ..generate import TextStream
from ..sampling import Sampler, SamplerParams


class QueueFull(TinyGGMLError):
    """More jobs waiting than the server accepts."""


class EngineFailed(TinyGGMLError):
    """The engine thread stopped on an error: the server cannot evaluate anything."""


@dataclass
class Job:
    prompt: list                          # token ids
    params: SamplerParams
    max_tokens: int
    n: int = 1                            # choices
    stop: list = field(default_factory=list)
    logprobs: int | None = None           # None: off; k: the chosen token's and k alternatives
    emit: object = None                   # emit(event: tuple), thread-safe
    cancelled: bool = False
    id: int = field(default_factory=itertools.count().__next__)
    # filled by the engine
    cached_tokens: int = 0
    queued_at: float = field(default_factory=time.perf_counter)

    def cancel(self):
        self.cancelled = True


@dataclass
class _Choice:
    job: Job
    index: int
    seq: int
    sampler: Sampler
    text: TextStream
    pending: int | None = None            # sampled, not yet evaluated
    n_gen: int = 0
    done: bool = False


@dataclass
class _Prefill:
    job: Job
    seq: int
    pos: int                              # prompt tokens the sequence holds
    spare: list = field(default_factory=list)   # slots taken for the job's other choices


class Engine:
    def __init__(self, model, parallel: int, prefill_chunk: int = 256, max_queue: int = 64,
                 metrics=None):
        self.model = model
        self.parallel = int(parallel)
        self.prefill_chunk = int(prefill_chunk)
        self.max_queue = int(max_queue)
        self.metrics = metrics
        self._waiting: deque[Job] = deque()
        self._prefill: list[_Prefill] = []
        self._choices: list[_Choice] = []
        self._free = list(range(self.parallel))
        self._live: dict[int, Job] = {}    # submitted and not finished: told if the engine fails
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="tinyggml-engine", daemon=True)
        self.steps = 0
        self.error: str | None = None

    # ---- the asyncio side ---------------------------------------------------------------------
    def start(self):
        self._thread.start()

    def submit(self, job: Job):
        if job.n > self.parallel:
            raise TinyGGMLError(f"n = {job.n} choices, this server runs at most {self.parallel} "
                                f"sequences at once (--parallel)")
        with self._cv:
            if self.error is not None:
                raise EngineFailed(f"the engine stopped: {self.error}")
            if self._stop:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) >= self.max_queue + len(self._free):   # beyond the free slots
                raise QueueFull(f"{len(self._waiting)} requests are waiting; try again shortly")
            self._waiting.append(job)
            self._live[job.id] = job
            self._cv.notify()
        self._gauges()

    def wake(self):
        with self._cv:
            self._cv.notify()

    def shutdown(self, timeout: float = 5.0):
        """Cancel what is waiting or running and stop the thread."""
        with self._cv:
            self._stop = True
            for j in self._waiting:
                j.cancel()
            self._cv.notify()
        self._thread.join(timeout)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return self.parallel - len(self._free)

    def _gauges(self):
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.active_sequences.set(self.parallel - len(self._free))

    # ---- the engine thread --------------------------------------------------------------------
    def _run(self):
        try:
            while True:
                with self._cv:
                    while not self._stop and not (self._waiting or self._prefill or self._choices):
                        self._cv.wait()
                    if self._stop:
                        break
                self._step()
        except BaseException as e:           # a bug: every job hears of it, nothing hangs
            with self._cv:
                self.error = f"{type(e).__name__}: {e}"
                jobs = list(self._live.values())
                self._live.clear()
            for j in jobs:
                j.emit(("error", f"internal error: {self.error}", 500))
            raise
        finally:
            self._cancel_all()

    def _cancel_all(self):
        with self._cv:
            jobs = list(self._live.values())
            self._live.clear()
        for j in jobs:
            j.cancel()
            j.emit(("error", "the server is shutting down", 503))
        for p in self._prefill:
            self._release(p.seq)
            for s in p.spare:
                self._release(s)
        for c in self._choices:
            self._release(c.seq)
        self._prefill, self._choices = [], []
        self._waiting.clear()

    def _release(self, seq: int, checkpoint: bool = False):
        m = self.model
        if checkpoint and m.prefix_cache is not None and m.n_past(seq):
            m.checkpoint(seq)
        m.reset(seq)
        self._free.append(seq)

    def _drop_cancelled(self):
        with self._cv:
            for j in [j for j in self._live.values() if j.cancelled]:
                self._live.pop(j.id, None)
        keep = []
        for p in self._prefill:
            if p.job.cancelled:
                self._release(p.seq)
                for s in p.spare:
                    self._release(s)
            else:
                keep.append(p)
        self._prefill = keep
        keep = []
        for c in self._choices:
            if c.job.cancelled and not c.done:
                self._release(c.seq)
            else:
                keep.append(c)
        self._choices = keep

    def _admit(self):
        m = self.model
        while True:
            with self._cv:
                if not self._waiting:
                    return
                job = self._waiting[0]
                if job.cancelled:
                    self._waiting.popleft()
                    continue
                if len(self._free) < job.n:
                    return                      # first come, first served
                self._waiting.popleft()
            seqs = [self._free.pop(0) for _ in range(job.n)]   # every choice's slot, now
            seq = seqs[0]
            m.reset(seq)
            try:
                job.cached_tokens = m.resume(seq, job.prompt)
            except TinyGGMLError as e:         # this job's input: it alone hears of it
                self._free.extend(seqs)
                with self._cv:
                    self._live.pop(job.id, None)
                job.emit(("error", str(e), 400))
                continue
            if self.metrics is not None:
                self.metrics.tokens_cached.inc(job.cached_tokens)
                self.metrics.tokens_prompt.inc(len(job.prompt))
            job.emit(("started", job.cached_tokens))
            if job.cached_tokens == len(job.prompt):      # all cached: its logits are kept
                self._fork(job, seqs, m.last_logits(seq))
            else:
                self._prefill.append(_Prefill(job, seq, job.cached_tokens, seqs[1:]))

    def _fork(self, job: Job, seqs: list, logits: np.ndarray):
        """The prompt is in seqs[0]: make the job's choices (the other slots become forks of
        it) and sample their first tokens from `logits`."""
        seq = seqs[0]
        for s in seqs[1:]:
            self.model.reset(s)
            self.model.seq_copy(seq, s)
        tok = self.model.tokenizer
        made = []
        for i, s in enumerate(seqs):
            p = job.params
            if p.seed is not None and i:
                p = replace(p, seed=p.seed + i)
            sampler = Sampler(p)
            for t in job.prompt[-p.penalty_last_n:] if p.penalty_last_n > 0 else ():
                sampler.accept(t)
            made.append(_Choice(job, i, s, sampler, TextStream(tok, job.stop)))
        self._choices += made
        for c in made:
            self._sample(c, logits)

    def _sample(self, c: _Choice, logits: np.ndarray):
        """Pick c's next token from `logits`, give out its text, or finish the choice."""
        job, tok = c.job, self.model.tokenizer
        if c.n_gen >= job.max_tokens:
            return self._finish(c, "length")
        t = c.sampler.sample(logits)
        if tok.is_eog(t):
            return self._finish(c, "stop")
        c.sampler.accept(t)
        c.n_gen += 1
        if self.metrics is not None:
            self.metrics.tokens_generated.inc()
        piece = c.text.push(t)
        lp = None
        if job.logprobs is not None:
            x = logits.astype(np.float64)
            x = x - x.max()
            logp = x - np.log(np.exp(x).sum())
            top = np.argsort(-logp)[:job.logprobs] if job.logprobs else []
            lp = (float(logp[t]), [(int(i), float(logp[i])) for i in top])
        job.emit(("token", c.index, piece, t, lp))
        if c.text.stopped:
            return self._finish(c, "stop")
        if c.n_gen >= job.max_tokens:
            return self._finish(c, "length")
        c.pending = t

    def _finish(self, c: _Choice, reason: str):
        rest = c.text.flush()
        if rest:
            c.job.emit(("token", c.index, rest, None, None))
        c.done = True
        c.pending = None
        c.job.emit(("done", c.index, reason, c.n_gen))
        self._release(c.seq, checkpoint=c.n_gen > 0)
        if all(x.done for x in self._choices if x.job is c.job):
            with self._cv:
                self._live.pop(c.job.id, None)

    def _step(self):
        m = self.model
        self._drop_cancelled()
        self._admit()
        batch = {c.seq: [c.pending] for c in self._choices if c.pending is not None}
        budget = self.prefill_chunk
        pieces = []
        for p in self._prefill:
            if budget <= 0:
                break
            n = min(len(p.job.prompt) - p.pos, budget, m.n_ubatch)
            batch[p.seq] = p.job.prompt[p.pos:p.pos + n]
            pieces.append((p, n))
            budget -= n
        self._gauges()
        if not batch:
            return
        out = m.eval_batch(batch, logits="last")
        self.steps += 1
        for c in list(self._choices):
            if c.pending is not None:
                c.pending = None
                self._sample(c, out[c.seq][0])
        for p, n in pieces:
            p.pos += n
            if p.pos == len(p.job.prompt):
                self._prefill.remove(p)
                if not p.job.cancelled:
                    self._fork(p.job, [p.seq] + p.spare, out[p.seq][0])
                else:
                    self._release(p.seq)
                    for s in p.spare:
                        self._release(s)
        self._choices = [c for c in self._choices if not c.done]
        self._gauges()
