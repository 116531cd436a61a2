"""Logit error measures shared by tests/test_numerics.py and tools/numerics.py: the error of a
run against float64 reference rows, pooled over seeds, and the Mamba-Codestral-shaped random
model both use."""
import numpy as np

from tinyggml.tools.testing import write_random_model

CODESTRAL_SHAPE = dict(n_embd=256, n_layer=3, d_state=128, head_dim=64, n_group=8, n_vocab=4000,
                       tied=False)


def write_codestral_shape(path, seed):
    """A random Mamba-2 with Mamba-Codestral-7B's head shape (d_state 128, head_dim 64, one
    head per group), small: the parameters drawn as the fixtures' (tinyggml.tools.testing)."""
    return write_random_model(path, "mamba2", seed=seed, **CODESTRAL_SHAPE)


def logit_errors(hidden, lm_head, got, rows=256):
    """Per position: max |hidden @ lm_head.T - got| over the vocabulary, and the sum of squares
    (by blocks of rows: T x n_vocab float64 is large)."""
    mx, sq = [], []
    for i in range(0, len(hidden), rows):
        d = np.abs(hidden[i:i + rows] @ lm_head.T - got[i:i + rows])
        mx.append(d.max(axis=1))
        sq.append((d * d).sum(axis=1))
    return np.concatenate(mx), np.concatenate(sq)


def summarize(per_seed, n_vocab):
    """max, rms and p99 (99th percentile over positions of the per-position max) of the
    per-seed (max, sum of squares) arrays, pooled over seeds."""
    mx = np.concatenate([m for m, _ in per_seed])
    sq = np.concatenate([q for _, q in per_seed])
    return dict(max=float(mx.max()), rms=float(np.sqrt(sq.sum() / (len(sq) * n_vocab))),
                p99=float(np.quantile(mx, 0.99)))
