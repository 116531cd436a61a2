"""Tensor: the record a graph is made of (ggml's `ggml_tensor`, in Python).

A tensor is metadata only: type, shape `ne[4]` (ne[0] innermost), byte strides `nb[4]`, the op
that produces it and its sources, op parameters, and for views the root tensor it aliases plus a
byte offset. Recording a tensor never computes anything. Leaf tensors (op NONE) point at external
data: mmapped weights, recurrent state, or per-run inputs owned by the graph.
"""
from __future__ import annotations

import numpy as np

# GGUF / ggml type ids (gguf.GGMLQuantizationType)
F32, F16, I32 = 0, 1, 26
TYPE_NAME = {F32: "f32", F16: "f16", I32: "i32"}
TYPE_SIZE = {F32: 4, F16: 2, I32: 4}
NP_DTYPE = {F32: np.float32, F16: np.float16, I32: np.int32}

# flags
INPUT = 1     # filled by the runtime before each run
OUTPUT = 2    # read after the run: its memory is never reused
WEIGHT = 4    # model parameter (mmapped)
STATE = 8     # recurrent state, updated in place by the graph

MAX_DIMS = 4


class Tensor:
    __slots__ = ("type", "ne", "nb", "op", "src", "op_params", "view_src", "view_offs",
                 "name", "flags", "data")

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

    # -- shape helpers ------------------------------------------------------------------------
    @property
    def nelements(self) -> int:
        return int(np.prod(self.ne))

    @property
    def nbytes(self) -> int:
        """Bytes spanned by the tensor (its extent in memory)."""
        if self.nelements == 0:
            return 0
        return TYPE_SIZE[self.type] + sum((n - 1) * b for n, b in zip(self.ne, self.nb))

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
    nb = [TYPE_SIZE[type]]
    for i in range(1, MAX_DIMS):
        nb.append(nb[-1] * ne[i - 1])
    return tuple(nb)


def leaf(type: int, ne, name: str, flags: int, data: np.ndarray | None = None) -> Tensor:
    """A leaf (op NONE) over external data; `data` must be C-contiguous with reversed shape."""
    t = Tensor(type, ne, name=name, flags=flags, data=data)
    if data is not None:
        expect = tuple(reversed(t.ne[:max(t.ndim, data.ndim)]))
        if data.dtype != NP_DTYPE[type] or data.size != t.nelements or not data.flags["C_CONTIGUOUS"]:
            raise ValueError(f"{name}: data {data.dtype}{data.shape} does not match {TYPE_NAME[type]}{expect}")
    return t


def as_numpy(t: Tensor, base: np.ndarray) -> np.ndarray:
    """numpy view of `t` (reversed shape, byte strides) over the bytes of its root's `base`."""
    nd = t.ndim
    return np.ndarray(tuple(reversed(t.ne[:nd])), dtype=NP_DTYPE[t.type], buffer=base,
                      offset=t.view_offs, strides=tuple(reversed(t.nb[:nd])))
