"""RecurrentState: per-sequence conv and SSM states, constant size whatever the context length.

For each layer (ggml order, F32):
    conv {d_conv-1, channels, n_slots}         the last d_conv-1 inputs of the causal conv
    ssm  {d_state, head_dim, n_head, n_slots}  the SSM hidden state h (Mamba-1: head_dim 1)
A sequence id maps to a slot; graphs read and write the slots of the sequences in their ubatch
in place (ssm_conv / ssm_scan). Slots grow by doubling; `version` changes when the arrays are
reallocated, so compiled plans (which hold data pointers) know to rebind.
cf. mambapy `MambaBlock.step` cache: (h, inputs).
"""
from __future__ import annotations

import numpy as np

from .errors import TinyGGMLError
from .gguf_file import HParams


class RecurrentState:
    def __init__(self, hp: HParams, n_slots: int = 1):
        self.hp = hp
        self.n_slots = 0
        self.conv: list[np.ndarray] = []
        self.ssm: list[np.ndarray] = []
        self.slot_of: dict[int, int] = {}
        self.version = 0
        self._resize(max(1, n_slots))

    def _resize(self, n: int):
        (dc1, ch), (ds, hd, nh) = self.hp.state_shapes()
        conv = [np.zeros((n, ch, dc1), np.float32) for _ in range(self.hp.n_layer)]
        ssm = [np.zeros((n, nh, hd, ds), np.float32) for _ in range(self.hp.n_layer)]
        for old, new in zip(self.conv + self.ssm, conv + ssm):
            new[:old.shape[0]] = old
        self.conv, self.ssm, self.n_slots = conv, ssm, n
        self.version += 1

    @property
    def bytes_per_sequence(self) -> int:
        return self.hp.state_bytes_per_sequence

    def slot(self, seq_id: int) -> int:
        """The slot of `seq_id`, given a free one on first use. Free slots are always zero
        (allocated zeroed, zeroed when a sequence is cleared; graphs write only the slots of
        their own sequences), so taking one costs nothing: no second pass over the states
        (19 MiB per sequence for mamba2-130m, 256 MiB for Mamba-Codestral-7B)."""
        if not isinstance(seq_id, (int, np.integer)) or isinstance(seq_id, bool):
            raise TinyGGMLError(f"seq_id must be an int, got {type(seq_id).__name__}")
        seq_id = int(seq_id)
        if seq_id in self.slot_of:
            return self.slot_of[seq_id]
        used = set(self.slot_of.values())
        free = [s for s in range(self.n_slots) if s not in used]
        if not free:
            self._resize(self.n_slots * 2)
            free = [s for s in range(self.n_slots) if s not in used]
        s = free[0]
        self.slot_of[seq_id] = s
        return s

    def _zero(self, s: int):
        for a in self.conv + self.ssm:
            a[s] = 0.0

    def clear(self, seq_id: int | None = None):
        """Forget one sequence (its slot is zeroed and freed), or all of them."""
        if seq_id is None:
            for a in self.conv + self.ssm:
                a[...] = 0.0
            self.slot_of.clear()
        elif int(seq_id) in self.slot_of:
            self._zero(self.slot_of.pop(int(seq_id)))
