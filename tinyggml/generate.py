"""Text generation: prompt -> tokens -> prompt eval -> sample / eval loop -> streamed text.

Timings are kept the way llama.cpp reports them (load, prompt eval, generation) so the CLI can
print them, also after Ctrl-C.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import TinyGGMLError
from .sampling import Sampler, SamplerParams


@dataclass
class Timings:
    load_ms: float = 0.0
    prompt_tokens: int = 0
    prompt_ms: float = 0.0
    gen_tokens: int = 0
    gen_ms: float = 0.0
    stop: str = ""                       # "eos", "stop" (a stop string), "length", "interrupted"

    def lines(self) -> list[str]:
        def rate(n, ms):
            return f"{n / ms * 1000:8.2f} tokens per second" if ms > 0 and n else "     n/a"
        return [
            f"load time        = {self.load_ms:10.2f} ms",
            f"prompt eval time = {self.prompt_ms:10.2f} ms / {self.prompt_tokens:5d} tokens "
            f"({rate(self.prompt_tokens, self.prompt_ms)})",
            f"eval time        = {self.gen_ms:10.2f} ms / {self.gen_tokens:5d} runs   "
            f"({rate(self.gen_tokens, self.gen_ms)})",
            f"total time       = {self.load_ms + self.prompt_ms + self.gen_ms:10.2f} ms",
        ]


class TextStream:
    """Generated token ids in, text out: incremental detokenization (a continuation of a
    prompt) and stop strings. A stop string ends the text before it and is never given out, so
    the characters that could begin one wait until the next token decides."""

    def __init__(self, tok, stop=()):
        from .tokenizer import StreamDecoder
        self._dec = StreamDecoder(tok, continuation=True)
        self.stops = [s for s in stop if s]
        self._pending = ""        # decoded, not given out: it may begin a stop string
        self._text: list = []     # pieces of everything decoded (what the state holds)
        self._reply: list = []    # pieces of everything given out
        self.stopped = False      # a stop string was found: nothing more is given out

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def reply(self) -> str:
        return "".join(self._reply)

    def _hold(self, text: str) -> int:
        """How many characters at the end of `text` could begin a stop string."""
        n = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), n, -1):
                if text.endswith(s[:k]):
                    n = k
                    break
        return n

    def _give(self, text: str, final: bool) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            self._reply.append(text)
            return text
        text = self._pending + text
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            text, self._pending, self.stopped = text[:min(hits)], "", True
        else:
            keep = 0 if final else self._hold(text)
            text, self._pending = text[:len(text) - keep], text[len(text) - keep:]
        self._reply.append(text)
        return text

    def push(self, token: int) -> str:
        piece = self._dec.push(token)
        self._text.append(piece)
        return self._give(piece, False)

    def flush(self) -> str:
        rest = self._dec.flush()
        self._text.append(rest)
        return self._give(rest, True)


@dataclass
class Generation:
    """One generation: iterate it for text pieces; `.tokens` and `.timings` fill as it runs."""
    model: object
    prompt_ids: list
    params: SamplerParams
    max_tokens: int
    seq_id: int = 0
    reset: bool = True                   # start the sequence fresh (False: continue it)
    ignore_eos: bool = False             # end-of-generation tokens are sampled like any other
    stop: list = field(default_factory=list)   # stop strings: the reply ends before the first
    tokens: list = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    _out: TextStream | None = field(default=None, repr=False)

    @property
    def reply(self) -> str:
        """The text given out (before any stop string)."""
        return self._out.reply if self._out else ""

    @property
    def text(self) -> str:
        """The text of every generated token (the state holds it)."""
        return self._out.text if self._out else ""

    def __iter__(self):
        m, tok = self.model, self.model.tokenizer
        sampler = Sampler(self.params)
        for t in self.prompt_ids:
            sampler.accept(t)
        if self.reset:
            m.reset(self.seq_id)
        self.timings.load_ms = getattr(m, "load_ms", 0.0)
        t0 = time.perf_counter()
        n0 = m.tokens_evaluated
        if len(self.prompt_ids):
            logits = m.eval(self.prompt_ids, seq_id=self.seq_id, logits="last")[0]
        else:                              # continue after what the sequence holds
            logits = m.last_logits(self.seq_id)
            if logits is None:
                raise TinyGGMLError(f"sequence {self.seq_id} has no logits to continue from")
            logits = logits.copy()
        self.timings.prompt_tokens = m.tokens_evaluated - n0    # the prefix cache may skip some
        self.timings.prompt_ms = (time.perf_counter() - t0) * 1000
        out = self._out = TextStream(tok, self.stop)
        self.timings.stop = "length"
        t0 = time.perf_counter()
        try:
            eog = sorted(tok.eog_ids) if self.ignore_eos else []
            while len(self.tokens) < self.max_tokens:
                if eog:                    # as llama-cli --ignore-eos: never sampled
                    logits[eog] = -np.inf      # (eval's array: ours to change)
                nxt = sampler.sample(logits)
                if tok.is_eog(nxt):
                    self.timings.stop = "eos"
                    break
                sampler.accept(nxt)
                self.tokens.append(nxt)
                piece = out.push(nxt)
                if piece:
                    yield piece
                # always feed the token back (the one completing a stop string too): the state
                # then holds prompt + everything generated
                logits = m.eval([nxt], seq_id=self.seq_id, logits="last")[0]
                self.timings.gen_tokens += 1
                self.timings.gen_ms = (time.perf_counter() - t0) * 1000
                if out.stopped:
                    self.timings.stop = "stop"
                    break
        except (KeyboardInterrupt, GeneratorExit):
            self.timings.stop = "interrupted"
            self.timings.gen_ms = (time.perf_counter() - t0) * 1000
            raise
        if m.prefix_cache is not None and self.tokens:
            m.checkpoint(self.seq_id)      # the next turn of a chat resumes after this reply
        rest = out.flush()
        if out.stopped:
            self.timings.stop = "stop"
        if rest:
            yield rest


def start(model, prompt, max_tokens: int, params: SamplerParams, seq_id: int = 0,
          add_bos: bool | None = None) -> Generation:
    if max_tokens < 0:
        raise TinyGGMLError(f"max_tokens must be >= 0, got {max_tokens}")
    params.check()
    if isinstance(prompt, str):
        ids = model.tokenize(prompt, add_bos=add_bos)
    else:                                  # token ids as they are
        ids = [int(t) for t in model._check_tokens(prompt)]
    if not ids:
        bos = model.tokenizer.bos_id
        if bos is None:
            raise TinyGGMLError("empty prompt, and the vocabulary has no BOS token to start from")
        ids = [bos]
    return Generation(model, ids, params, max_tokens, seq_id)
