"""Memory: the per-sequence storage a model's graphs read and write, behind one small protocol.

A sequence id maps to a slot; a memory holds `n_seq_max` slots, fixed when the model is built,
so the arrays never move and a compiled plan's pointers stay valid for the model's life. What
a slot holds depends on the layers: RecurrentState keeps each SSM layer's conv and SSM states
(constant size whatever the context length); a KV cache (attention layers) would keep keys and
values per position, and a hybrid model one or the other per layer, behind the same protocol.

    slot = mem.seq_slot(seq_id)      # the sequence's slot, taking a free one on first use
    mem.seq_copy(src_id, dst_id)     # dst continues exactly as src would
    blob = mem.seq_save(seq_id)      # the slot's bytes (raw, bytes_per_sequence long)
    mem.seq_load(seq_id, blob)
    mem.clear(seq_id)                # forget one sequence (its slot is zeroed and freed), or all
    mem.bytes_per_sequence

The arrays are allocated with np.zeros (calloc): pages the sequences never touch cost no
memory, so n_seq_max can be generous.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .errors import TinyGGMLError
from .tensor import F32, STATE, Tensor, leaf


def _seq_id(seq_id) -> int:
    if not isinstance(seq_id, (int, np.integer)) or isinstance(seq_id, bool):
        raise TinyGGMLError(f"seq_id must be an int, got {type(seq_id).__name__}")
    return int(seq_id)


class Memory(ABC):
    """Slots of per-sequence storage (see the module docstring). Subclasses say what a slot
    holds: `_arrays()`, every array with the slot as its first axis."""

    def __init__(self, n_seq_max: int):
        if int(n_seq_max) < 1:
            raise TinyGGMLError(f"n_seq_max must be >= 1, got {n_seq_max}")
        self.n_seq_max = int(n_seq_max)
        self.slot_of: dict[int, int] = {}

    @abstractmethod
    def _arrays(self) -> list[np.ndarray]:
        """Every array of the memory, slot first: (n_seq_max, ...)."""

    @property
    def bytes_per_sequence(self) -> int:
        return sum(a[0].nbytes for a in self._arrays())

    # ---- slots ----------------------------------------------------------------------------------
    def seq_slot(self, seq_id: int) -> int:
        """The slot of `seq_id`, given a free one on first use. A free slot is always zero
        (allocated zeroed, zeroed when its sequence is cleared; graphs write only the slots of
        their own sequences), so taking one costs nothing."""
        seq_id = _seq_id(seq_id)
        s = self.slot_of.get(seq_id)
        if s is not None:
            return s
        used = set(self.slot_of.values())
        free = next((s for s in range(self.n_seq_max) if s not in used), None)
        if free is None:
            raise TinyGGMLError(f"all {self.n_seq_max} sequence slots are in use (sequences "
                                f"{sorted(self.slot_of)}): reset one, or build the model with a "
                                f"larger n_seq_max")
        self.slot_of[seq_id] = free
        return free

    def has(self, seq_id: int) -> bool:
        return _seq_id(seq_id) in self.slot_of

    def clear(self, seq_id: int | None = None):
        """Forget one sequence (its slot is zeroed and freed), or all of them."""
        if seq_id is None:
            for s in self.slot_of.values():
                self._zero(s)
            self.slot_of.clear()
            return
        s = self.slot_of.pop(_seq_id(seq_id), None)
        if s is not None:
            self._zero(s)

    def _zero(self, s: int):
        for a in self._arrays():
            a[s] = 0

    # ---- contents ---------------------------------------------------------------------------------
    def seq_copy(self, src: int, dst: int):
        """Sequence `dst` becomes a copy of `src` (which must exist): both continue alike."""
        src = _seq_id(src)
        if src not in self.slot_of:
            raise TinyGGMLError(f"seq_copy: sequence {src} has no state")
        if _seq_id(dst) == src:
            return
        s, d = self.slot_of[src], self.seq_slot(dst)
        for a in self._arrays():
            a[d] = a[s]

    def seq_save(self, seq_id: int) -> bytes:
        """The sequence's slot as bytes_per_sequence raw bytes (zeros for a sequence never run)."""
        return self.seq_state(seq_id).tobytes()

    def seq_state(self, seq_id: int) -> np.ndarray:
        """seq_save's bytes as a uint8 array, copied in one pass (snapshots keep these)."""
        seq_id = _seq_id(seq_id)
        out = np.zeros(self.bytes_per_sequence, np.uint8)
        if seq_id in self.slot_of:
            s, off = self.slot_of[seq_id], 0
            for a in self._arrays():
                n = a[s].nbytes
                out[off:off + n] = a[s].reshape(-1).view(np.uint8)
                off += n
        return out

    def seq_load(self, seq_id: int, data: bytes):
        """Set the sequence's slot from seq_save's bytes; the wrong length is refused and the
        sequence left as it was."""
        if len(data) != self.bytes_per_sequence:
            raise TinyGGMLError(f"seq_load: {len(data)} bytes, a sequence of this model has "
                                f"{self.bytes_per_sequence}")
        s = self.seq_slot(seq_id)
        off = 0
        for a in self._arrays():
            n = a[s].nbytes
            a[s] = np.frombuffer(data, a.dtype, a[s].size, off).reshape(a.shape[1:])
            off += n


class RecurrentState(Memory):
    """Per layer, F32, slot first (numpy order; ggml order in the graph):
        conv (n_seq_max, ch, d_conv-1)                     {d_conv-1, ch, n_seq_max}
        ssm  (n_seq_max, heads, head_dim, d_state)         {d_state, head_dim, heads, n_seq_max}
    conv holds the last d_conv-1 inputs of the causal conv, ssm the hidden state h (Mamba-1:
    head_dim 1, a head per channel). ssm_conv / ssm_scan read and write the slots of the
    ubatch's sequences in place. cf. mambapy `MambaBlock.step` cache: (h, inputs)."""

    def __init__(self, conv_shape: tuple, ssm_shape: tuple, n_layer: int, n_seq_max: int = 1,
                 layers=None):
        """conv_shape (d_conv-1, ch) and ssm_shape (d_state, head_dim, heads), ggml order;
        `layers`: the layers that have a recurrent state (default all n_layer)."""
        super().__init__(n_seq_max)
        self.conv_shape, self.ssm_shape = tuple(conv_shape), tuple(ssm_shape)
        self.layers = list(range(n_layer)) if layers is None else list(layers)
        n = self.n_seq_max
        self.conv = {il: np.zeros((n,) + self.conv_shape[::-1], np.float32) for il in self.layers}
        self.ssm = {il: np.zeros((n,) + self.ssm_shape[::-1], np.float32) for il in self.layers}

    def _arrays(self):
        return [a for il in self.layers for a in (self.conv[il], self.ssm[il])]

    def leafs(self, il: int) -> tuple[Tensor, Tensor]:
        """Layer il's states as graph leafs: conv {d_conv-1, ch, n_seq_max}, ssm {d_state,
        head_dim, heads, n_seq_max}."""
        n = self.n_seq_max
        return (leaf(F32, self.conv_shape + (n,), f"cache_conv_l{il}", STATE, self.conv[il]),
                leaf(F32, self.ssm_shape + (n,), f"cache_ssm_l{il}", STATE, self.ssm[il]))
