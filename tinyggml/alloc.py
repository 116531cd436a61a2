"""Arena planner: liveness -> byte offsets (ggml-alloc's gallocr, simplified).

Only computed, non-view nodes live in the arena. Views share their root's memory; weights,
states and inputs are external. Walking the nodes in execution order, each node gets a block
(best fit from a free list); a block returns to the list after the last node that reads it,
directly or through a view. OUTPUT tensors are never freed.
"""
from __future__ import annotations

from .ops import EMPTY_OPS
from .tensor import OUTPUT, Tensor

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class _FreeList:
    def __init__(self):
        self.blocks: list[list[int]] = []   # [offset, size], sorted by offset, merged
        self.end = 0                         # arena high-water mark

    def alloc(self, size: int) -> int:
        best = None
        for b in self.blocks:
            if b[1] >= size and (best is None or b[1] < best[1]):
                best = b
        if best is not None:
            off = best[0]
            best[0] += size
            best[1] -= size
            if best[1] == 0:
                self.blocks.remove(best)
            return off
        # grow: reuse a free block that touches the end
        if self.blocks and self.blocks[-1][0] + self.blocks[-1][1] == self.end:
            last = self.blocks.pop()
            self.end = last[0] + size
            return last[0]
        off = self.end
        self.end += size
        return off

    def free(self, off: int, size: int):
        self.blocks.append([off, size])
        self.blocks.sort()
        merged = [self.blocks[0]]
        for b in self.blocks[1:]:
            if merged[-1][0] + merged[-1][1] == b[0]:
                merged[-1][1] += b[1]
            else:
                merged.append(b)
        self.blocks = merged


def needs_arena(t: Tensor) -> bool:
    return t.op not in EMPTY_OPS and t.view_src is None


def plan_memory(nodes: list[Tensor]) -> tuple[dict[int, int], int]:
    """Return ({id(tensor): arena offset}, arena bytes) for the nodes, in execution order."""
    last_use: dict[int, int] = {}
    for i, t in enumerate(nodes):
        if needs_arena(t):
            last_use.setdefault(id(t), i)
        if t.op in EMPTY_OPS:
            continue
        for s in t.src:
            if s is not None:
                last_use[id(s.root())] = i
    frees: dict[int, list[Tensor]] = {}
    for t in nodes:
        if needs_arena(t) and not t.flags & OUTPUT:
            frees.setdefault(last_use[id(t)], []).append(t)

    fl = _FreeList()
    offsets: dict[int, int] = {}
    for i, t in enumerate(nodes):
        if needs_arena(t):
            offsets[id(t)] = fl.alloc(_align(t.nbytes))
        for dead in frees.get(i, ()):
            fl.free(offsets[id(dead)], _align(dead.nbytes))
    return offsets, fl.end
