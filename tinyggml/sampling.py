"""Sampling: greedy, temperature, top-k, top-p, min-p, and repetition / presence / frequency
penalties over a window of recent tokens. Seeded: the same seed gives the same tokens.

The chain follows llama.cpp's default order: penalties -> top-k -> top-p -> min-p ->
temperature -> draw. Each filter sets the logits it drops to -inf and always keeps at least
one token. temperature <= 0 means greedy (argmax after penalties).
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from .errors import TinyGGMLError


@dataclass
class SamplerParams:
    temperature: float = 0.8
    top_k: int = 40              # 0: off
    top_p: float = 0.95          # 1.0: off
    min_p: float = 0.05          # 0.0: off
    repeat_penalty: float = 1.0  # 1.0: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64     # window of recent tokens the penalties look at
    seed: int | None = None

    def check(self):
        if self.top_k < 0:
            raise TinyGGMLError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise TinyGGMLError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise TinyGGMLError(f"min_p must be in [0, 1], got {self.min_p}")
        if self.repeat_penalty <= 0:
            raise TinyGGMLError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.penalty_last_n < 0:
            raise TinyGGMLError(f"penalty_last_n must be >= 0, got {self.penalty_last_n}")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def apply_penalties(logits: np.ndarray, recent, repeat: float, presence: float,
                    frequency: float) -> np.ndarray:
    """llama.cpp's penalties: a seen token's logit is divided by `repeat` when positive and
    multiplied by it when negative, then lowered by count*frequency + presence."""
    out = logits.astype(np.float64, copy=True)
    counts = Counter(int(t) for t in recent)
    if not counts:
        return out
    ids = np.fromiter(counts.keys(), dtype=np.int64)
    n = np.fromiter(counts.values(), dtype=np.float64)
    v = out[ids]
    v = np.where(v > 0, v / repeat, v * repeat)
    out[ids] = v - n * frequency - presence
    return out


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or k >= logits.size:
        return logits
    keep = np.argpartition(-logits, k - 1)[:k]
    out = np.full_like(logits, -np.inf)
    out[keep] = logits[keep]
    return out


def top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability sum reaches p."""
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = softmax(logits)[order]
    n_keep = int(np.searchsorted(np.cumsum(probs), p) + 1)
    out = np.full_like(logits, -np.inf)
    keep = order[:max(1, min(n_keep, logits.size))]
    out[keep] = logits[keep]
    return out


def min_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep tokens whose probability is at least p times the most likely one's."""
    if p <= 0.0:
        return logits
    probs = softmax(logits)
    return np.where(probs >= p * probs.max(), logits, -np.inf)


class Sampler:
    def __init__(self, params: SamplerParams | None = None, **kw):
        self.params = params or SamplerParams(**kw)
        self.params.check()
        self.rng = np.random.default_rng(self.params.seed)
        self.recent: deque = deque(maxlen=max(self.params.penalty_last_n, 0) or None)

    def accept(self, token: int):
        """Record a token (prompt or generated) for the penalties."""
        if self.params.penalty_last_n > 0:
            self.recent.append(int(token))

    def sample(self, logits: np.ndarray) -> int:
        p = self.params
        x = np.asarray(logits, dtype=np.float64)
        if p.repeat_penalty != 1.0 or p.presence_penalty or p.frequency_penalty:
            x = apply_penalties(x, self.recent, p.repeat_penalty, p.presence_penalty,
                                p.frequency_penalty)
        if p.temperature <= 0:
            return int(np.argmax(x))
        x = min_p(top_p(top_k(x, p.top_k), p.top_p), p.min_p)
        probs = softmax(x / p.temperature)
        return int(self.rng.choice(probs.size, p=probs))
