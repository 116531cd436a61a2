"""Memory: the per-sequence storage a model's graphs read and write, behind one small protocol.

A sequence id maps to a slot; a memory holds `n_seq_max` slots, fixed when the model is built,
so the arrays never move and a compiled plan's pointers stay valid for the model's life. What
a slot holds depends on the layers: RecurrentState keeps each SSM layer's conv and SSM states
(constant size whatever the context length); HybridMemory adds, for each attention layer, a
KV cache of up to n_ctx positions (hybrid models: both halves in one slot scheme, so a ubatch
of ragged sequences is still one graph run).

    slot = mem.seq_slot(seq_id)            # the sequence's slot, taking a free one on first use
    mem.seq_copy(src_id, dst_id, n_past)   # dst continues exactly as src would
    blob = mem.seq_save(seq_id, n_past)    # the slot's bytes: state_bytes(n_past) long
    mem.seq_load(seq_id, blob, n_past)
    mem.clear(seq_id)                      # forget one sequence (its slot is freed), or all
    mem.bytes_per_sequence                 # the recurrent part (constant)
    mem.bytes_per_token                    # the KV cache's part, per position (0: none)

n_past is the sequence's length: the KV cache's positions beyond it are never read, so they
are neither saved nor copied. A blob of the recurrent part alone (bytes_per_sequence long)
loads that part and keeps the KV cache as it is: a sequence's own snapshot restores its SSM
layers while its attention layers roll back by truncation (their first n_past positions are
unchanged since the snapshot).

The recurrent arrays are allocated with np.zeros (calloc), the KV caches as anonymous mappings:
pages the sequences never touch cost no memory, so n_seq_max and n_ctx can be generous, and a
cleared sequence's KV pages go back to the system.
"""
from __future__ import annotations

import mmap
from abc import ABC, abstractmethod

import numpy as np

from . import ops
from .errors import TinyGGMLError
from .tensor import F16, F32, STATE, Tensor, leaf

PAGE = mmap.PAGESIZE


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

    n_ctx: int | None = None          # positions a sequence can hold (None: no limit)

    @abstractmethod
    def _arrays(self) -> list[np.ndarray]:
        """Every array of the recurrent part, slot first: (n_seq_max, ...)."""

    def _kv_arrays(self) -> list[np.ndarray]:
        """Every KV cache array, (n_seq_max, n_kv, n_ctx, head_dim): position third."""
        return []

    @property
    def bytes_per_sequence(self) -> int:
        """The recurrent part of a sequence (constant)."""
        return sum(a[0].nbytes for a in self._arrays())

    @property
    def bytes_per_token(self) -> int:
        """The KV cache's bytes per position of a sequence (0 without attention layers)."""
        return sum(a[0, :, 0].nbytes for a in self._kv_arrays())

    def state_bytes(self, n_past: int) -> int:
        """A sequence's saved state after n_past tokens."""
        return self.bytes_per_sequence + n_past * self.bytes_per_token

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
        self._release_kv(s)

    def _release_kv(self, s: int):
        """Give the KV pages of slot s back to the system (what it held is never read again:
        positions are written before they are read)."""

    # ---- contents ---------------------------------------------------------------------------------
    def _check_n_past(self, n_past: int, what: str) -> int:
        n_past = int(n_past)
        if n_past < 0 or (self._kv_arrays() and n_past > self.n_ctx):
            raise TinyGGMLError(f"{what}: {n_past} positions, a sequence holds 0..{self.n_ctx}")
        return n_past

    def seq_copy(self, src: int, dst: int, n_past: int = 0):
        """Sequence `dst` becomes a copy of `src` (which must exist, n_past tokens long): both
        continue alike."""
        src = _seq_id(src)
        if src not in self.slot_of:
            raise TinyGGMLError(f"seq_copy: sequence {src} has no state")
        n_past = self._check_n_past(n_past, "seq_copy")
        if _seq_id(dst) == src:
            return
        s, d = self.slot_of[src], self.seq_slot(dst)
        for a in self._arrays():
            a[d] = a[s]
        for a in self._kv_arrays():
            a[d, :, :n_past] = a[s, :, :n_past]

    def seq_save(self, seq_id: int, n_past: int = 0) -> bytes:
        """The sequence's slot as state_bytes(n_past) raw bytes (zeros for a sequence never run)."""
        return self.seq_state(seq_id, n_past).tobytes()

    def seq_state(self, seq_id: int, n_past: int = 0, kv: bool = True) -> np.ndarray:
        """seq_save's bytes as a uint8 array, copied in one pass (snapshots keep these); with
        kv=False the recurrent part alone (a snapshot only its own sequence restores)."""
        seq_id = _seq_id(seq_id)
        n_past = self._check_n_past(n_past, "seq_state")
        out = np.zeros(self.state_bytes(n_past) if kv else self.bytes_per_sequence, np.uint8)
        if seq_id in self.slot_of:
            s, off = self.slot_of[seq_id], 0
            for a in self._arrays():
                n = a[s].nbytes
                out[off:off + n] = a[s].reshape(-1).view(np.uint8)
                off += n
            for a in self._kv_arrays() if kv else ():      # position-major, as the state files
                n = a[s, :, :n_past].nbytes
                out[off:off + n] = a[s, :, :n_past].transpose(1, 0, 2).reshape(-1).view(np.uint8)
                off += n
        return out

    def seq_load(self, seq_id: int, data: bytes, n_past: int = 0):
        """Set the sequence's slot from seq_save's bytes (state_bytes(n_past) long), or its
        recurrent part alone from bytes_per_sequence bytes (the KV cache is kept: see the
        module docstring). Any other length is refused and the sequence left as it was."""
        n_past = self._check_n_past(n_past, "seq_load")
        kv = len(data) == self.state_bytes(n_past)
        if not kv and len(data) != self.bytes_per_sequence:
            raise TinyGGMLError(f"seq_load: {len(data)} bytes, a sequence of this model has "
                                f"{self.state_bytes(n_past)} after {n_past} tokens")
        s = self.seq_slot(seq_id)
        off = 0
        for a in self._arrays():
            n = a[s].nbytes
            a[s] = np.frombuffer(data, a.dtype, a[s].size, off).reshape(a.shape[1:])
            off += n
        for a in self._kv_arrays() if kv else ():
            part = a[s, :, :n_past]
            part[...] = np.frombuffer(data, a.dtype, part.size, off).reshape(
                (n_past, part.shape[0], part.shape[2])).transpose(1, 0, 2)
            off += part.nbytes


class RecurrentState(Memory):
    """Per layer, F32, slot first (numpy order; ggml order in the graph):
        conv (n_seq_max, ch, d_conv-1)                     {d_conv-1, ch, n_seq_max}
        ssm  (n_seq_max, heads, head_dim, d_state)         {d_state, head_dim, heads, n_seq_max}
    conv holds the last d_conv-1 inputs of the causal conv, ssm the hidden state h (Mamba-1:
    head_dim 1, a head per channel). ssm_conv / ssm_scan read and write the slots of the
    ubatch's sequences in place. cf. mambapy `MambaBlock.step` cache: (h, inputs)."""

    def __init__(self, conv_shape: tuple, ssm_shape: tuple, n_layer: int, n_seq_max: int = 1,
                 layers=None):
        """conv_shape (d_conv-1, ch) and ssm_shape (d_state, head_dim, heads), ggml order, or
        None for layers with a conv state alone (LFM2's short convolutions); `layers`: the
        layers that have a recurrent state (default all n_layer)."""
        super().__init__(n_seq_max)
        self.conv_shape = tuple(conv_shape)
        self.ssm_shape = None if ssm_shape is None else tuple(ssm_shape)
        self.layers = list(range(n_layer)) if layers is None else list(layers)
        n = self.n_seq_max
        self.conv = {il: np.zeros((n,) + self.conv_shape[::-1], np.float32) for il in self.layers}
        self.ssm = ({} if self.ssm_shape is None else
                    {il: np.zeros((n,) + self.ssm_shape[::-1], np.float32) for il in self.layers})

    def _arrays(self):
        return [a for il in self.layers for a in (self.conv[il], self.ssm.get(il)) if a is not None]

    def leafs(self, il: int) -> tuple[Tensor, Tensor | None]:
        """Layer il's states as graph leafs: conv {d_conv-1, ch, n_seq_max}, ssm {d_state,
        head_dim, heads, n_seq_max} (None without an SSM state)."""
        n = self.n_seq_max
        conv = leaf(F32, self.conv_shape + (n,), f"cache_conv_l{il}", STATE, self.conv[il])
        if self.ssm_shape is None:
            return conv, None
        return conv, leaf(F32, self.ssm_shape + (n,), f"cache_ssm_l{il}", STATE, self.ssm[il])


def _anon_array(shape: tuple, dtype) -> tuple[np.ndarray, mmap.mmap]:
    """A zeroed array on an anonymous private mapping (no swap reserved: pages are committed
    as they are first written), and the mapping (for madvise)."""
    nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20) | getattr(mmap, "MAP_NORESERVE", 0)
    try:
        mm = mmap.mmap(-1, nbytes, flags=flags)
    except OSError as e:
        raise TinyGGMLError(f"cannot map {nbytes / 2**30:.2f} GiB for a KV cache ({e.strerror}): "
                            f"use a smaller n_ctx or n_seq_max") from None
    return np.frombuffer(mm, dtype, int(np.prod(shape))).reshape(shape), mm


class HybridMemory(RecurrentState):
    """RecurrentState for the SSM layers, and for each attention layer a KV cache, slot first,
    then head (numpy order):
        k, v  (n_seq_max, n_kv, n_ctx, head_dim)
    so that a head's keys are one run of memory (attention reads them head by head); the graph
    sees it as {head_dim, n_kv, n_ctx, n_seq_max} with the head and position strides swapped.
    F32 or F16 cells. A sequence's tokens sit at their positions 0..n_past-1; kv_store writes a
    ubatch's keys and values there, attn reads positions 0..pos of the token's slot. Saved
    states hold the positions first (n_past, n_kv, head_dim), whatever the layout here."""

    def __init__(self, conv_shape: tuple, ssm_shape: tuple, ssm_layers, kv_shape: tuple,
                 attn_layers, n_ctx: int, n_seq_max: int = 1, kv_type: int = F16):
        """kv_shape (head_dim, n_kv), ggml order; kv_type F32 or F16; ssm_shape None: the
        recurrent layers keep a conv state alone."""
        super().__init__(conv_shape, ssm_shape, 0, n_seq_max, layers=ssm_layers)
        if int(n_ctx) < 1:
            raise TinyGGMLError(f"n_ctx must be >= 1, got {n_ctx}")
        if kv_type not in (F32, F16):
            raise TinyGGMLError("the KV cache holds F32 or F16 cells")
        self.n_ctx, self.kv_shape, self.kv_type = int(n_ctx), tuple(kv_shape), kv_type
        self.attn_layers = list(attn_layers)
        dt = np.float16 if kv_type == F16 else np.float32
        shape = (self.n_seq_max, self.kv_shape[1], self.n_ctx, self.kv_shape[0])
        self.k, self.v, self._maps = {}, {}, []
        for il in self.attn_layers:
            for d in (self.k, self.v):
                d[il], mm = _anon_array(shape, dt)
                self._maps.append((d[il], mm))

    def _kv_arrays(self):
        return [a for il in self.attn_layers for a in (self.k[il], self.v[il])]

    def _release_kv(self, s: int):
        for a, mm in self._maps:
            start, end = s * a[0].nbytes, (s + 1) * a[0].nbytes
            start, end = -(-start // PAGE) * PAGE, end // PAGE * PAGE
            if end > start and hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def kv_leafs(self, il: int) -> tuple[Tensor, Tensor]:
        """Layer il's caches for the graph: views {head_dim, n_kv, n_ctx, n_seq_max} of the
        leafs {head_dim, n_ctx, n_kv, n_seq_max} (head and position strides swapped)."""
        hd, nkv = self.kv_shape
        elt = 2 if self.kv_type == F16 else 4
        nb = (elt, self.n_ctx * hd * elt, hd * elt, nkv * self.n_ctx * hd * elt)
        out = []
        for name, arr in ((f"cache_k_l{il}", self.k[il]), (f"cache_v_l{il}", self.v[il])):
            t = leaf(self.kv_type, (hd, self.n_ctx, nkv, self.n_seq_max), name, STATE, arr)
            out.append(ops.view(t, (hd, nkv, self.n_ctx, self.n_seq_max), nb, 0))
        return tuple(out)
