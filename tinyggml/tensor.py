"""Tensor: the record a graph is made of (ggml's `ggml_tensor`, in Python).

A tensor is metadata only: type, shape `ne[4]` (ne[0] innermost), byte strides `nb[4]`, the op
that produces it and its sources, op parameters, and for views the root tensor it aliases plus a
byte offset. Recording a tensor never computes anything. Leaf tensors (op NONE) point at external
data: mmapped weights, recurrent state, or per-run inputs owned by the graph.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Tensor types: GGUF / ggml ids (gguf.GGMLQuantizationType), plus two internal ones: QACT,
# activations quantized for the integer dots of quantized mul_mat (int16, one scale per 32), and
# QACT_K, the same split into two int8 halves with one scale per 256 (Q6_K columns). The kernels
# keep the same facts in their type table (backend/kernels/quants.c); tests/test_types.py checks
# that the two, and gguf's GGML_QUANT_SIZES, agree.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, I32, BF16 = 10, 11, 12, 13, 14, 26, 30
QACT, QACT_K = 1000, 1001


class TypeInfo(NamedTuple):
    name: str          # as GGUF files and `tinyggml-cli quantize` name it
    blck: int          # elements per block
    size: int          # bytes per block
    weight: bool       # a weight type mul_mat and get_rows read natively
    quantized: bool    # blocks with scales: integer dots against QACT activations


TYPES = {
    F32: TypeInfo("f32", 1, 4, True, False),
    F16: TypeInfo("f16", 1, 2, True, False),
    BF16: TypeInfo("bf16", 1, 2, True, False),
    I32: TypeInfo("i32", 1, 4, False, False),
    Q4_0: TypeInfo("q4_0", 32, 18, True, True),
    Q4_1: TypeInfo("q4_1", 32, 20, True, True),
    Q5_0: TypeInfo("q5_0", 32, 22, True, True),
    Q5_1: TypeInfo("q5_1", 32, 24, True, True),
    Q8_0: TypeInfo("q8_0", 32, 34, True, True),
    Q2_K: TypeInfo("q2_K", 256, 84, True, True),
    Q3_K: TypeInfo("q3_K", 256, 110, True, True),
    Q4_K: TypeInfo("q4_K", 256, 144, True, True),
    Q5_K: TypeInfo("q5_K", 256, 176, True, True),
    Q6_K: TypeInfo("q6_K", 256, 210, True, True),
    QACT: TypeInfo("qact", 32, 76, False, False),
    QACT_K: TypeInfo("qact_k", 256, 580, False, False),
}
# views of TYPES
BLOCK = {t: (i.blck, i.size) for t, i in TYPES.items()}
TYPE_NAME = {t: i.name for t, i in TYPES.items()}
TYPE_SIZE = {t: i.size for t, i in TYPES.items()}                 # bytes per block (element)
QUANTIZED = tuple(t for t, i in TYPES.items() if i.quantized)
WEIGHT_TYPES = tuple(t for t, i in TYPES.items() if i.weight)    # mul_mat / get_rows read them
NP_DTYPE = {F32: np.float32, F16: np.float16, I32: np.int32}   # others: raw bytes (uint8)

# flags
INPUT = 1     # filled by the runtime before each run
OUTPUT = 2    # read after the run: its memory is never reused
WEIGHT = 4    # model parameter (mmapped)
STATE = 8     # recurrent state, updated in place by the graph

MAX_DIMS = 4


class Tensor:
    __slots__ = ("type", "ne", "nb", "op", "src", "op_params", "view_src", "view_offs",
                 "name", "flags", "data", "packed")

    def __init__(self, type: int, ne, *, nb=None, op: int = 0, src=(), op_params=(),
                 view_src: Tensor | None = None, view_offs: int = 0, name: str = "",
                 flags: int = 0, data: np.ndarray | None = None):
        ne = [int(n) for n in ne] + [1] * (MAX_DIMS - len(ne))
        if len(ne) != MAX_DIMS or any(n < 0 for n in ne):
            raise ValueError(f"bad shape {ne}")
        if nb is None:
            nb = contiguous_strides(type, ne)
        self.type = type
        self.ne = tuple(ne)
        self.nb = tuple(int(b) for b in nb)
        self.op = op
        self.src = tuple(src)
        self.op_params = tuple(op_params)
        # views of views collapse to the root, as in ggml
        if view_src is not None and view_src.view_src is not None:
            view_offs += view_src.view_offs
            view_src = view_src.view_src
        self.view_src = view_src
        self.view_offs = int(view_offs)
        self.name = name
        self.flags = flags
        self.data = data
        # a weight's rows repacked for the decode dots (runtime.pack_weights): what the C plan
        # binds instead of `data`, which keeps the file layout for everything else
        self.packed: np.ndarray | None = None

    # -- shape helpers ------------------------------------------------------------------------
    @property
    def nelements(self) -> int:
        a, b, c, d = self.ne               # plain ints: np.prod was a third of a graph's build
        return a * b * c * d

    @property
    def nbytes(self) -> int:
        """Bytes spanned by the tensor (its extent in memory), as ggml_nbytes."""
        if self.nelements == 0:
            return 0
        blck, size = BLOCK[self.type]
        rest = sum((n - 1) * b for n, b in zip(self.ne[1:], self.nb[1:]))
        if blck == 1:
            return size + (self.ne[0] - 1) * self.nb[0] + rest
        return self.ne[0] * self.nb[0] // blck + rest

    @property
    def ndim(self) -> int:
        d = MAX_DIMS
        while d > 1 and self.ne[d - 1] == 1:
            d -= 1
        return d

    def is_contiguous(self) -> bool:
        return self.nb == contiguous_strides(self.type, self.ne)

    def rows_contiguous(self) -> bool:
        return self.nb[0] == TYPE_SIZE[self.type]

    def root(self) -> Tensor:
        return self.view_src if self.view_src is not None else self

    def shape_str(self) -> str:
        return "[" + ", ".join(str(n) for n in self.ne[:self.ndim]) + "]"

    def __repr__(self):
        from .ops import OPS
        return f"Tensor({self.name or '?'}, {OPS[self.op].name}, {TYPE_NAME[self.type]}, {self.shape_str()})"


def contiguous_strides(type: int, ne) -> tuple:
    blck, size = BLOCK[type]
    if ne[0] % blck:
        raise ValueError(f"{TYPE_NAME[type]} rows need a multiple of {blck} elements, got {ne[0]}")
    nb = [size, size * (ne[0] // blck)]
    for i in range(2, MAX_DIMS):
        nb.append(nb[-1] * ne[i - 1])
    return tuple(nb)


def leaf(type: int, ne, name: str, flags: int, data: np.ndarray | None = None) -> Tensor:
    """A leaf (op NONE) over external data; `data` must be C-contiguous with reversed shape."""
    t = Tensor(type, ne, name=name, flags=flags, data=data)
    if data is not None:
        ok = data.flags["C_CONTIGUOUS"] and data.nbytes == t.nbytes
        if type in NP_DTYPE:
            ok = ok and data.dtype == NP_DTYPE[type]
        if not ok:
            raise ValueError(f"{name}: data {data.dtype}{data.shape} does not match "
                             f"{TYPE_NAME[type]}{list(t.ne)}")
    return t


def as_numpy(t: Tensor, base: np.ndarray) -> np.ndarray:
    """numpy view of `t` (reversed shape, byte strides) over the bytes of its root's `base`."""
    nd = t.ndim
    return np.ndarray(tuple(reversed(t.ne[:nd])), dtype=NP_DTYPE[t.type], buffer=base,
                      offset=t.view_offs, strides=tuple(reversed(t.nb[:nd])))
