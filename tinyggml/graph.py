"""Graph: the ops reachable from some outputs, in topological order (ggml_build_forward_expand).

`expand(t)` does a post-order DFS over `src`, deduplicated by identity: tensors with an op go to
`nodes`, leafs (weights, inputs, states) to `leafs`; unnamed tensors get `node_%d` / `leaf_%d`.
Side-effect nodes (in-place state writes) are expanded explicitly, as llama.cpp does with the
state `ggml_cpy`. `compute_numpy` runs the graph through the float64 references of ops.py.
"""
from __future__ import annotations

import json

import numpy as np

from .ops import EMPTY_OPS, OPS, Op
from .tensor import BLOCK, F16, F32, I32, OUTPUT, TYPE_NAME, TYPE_SIZE, Tensor


class Graph:
    def __init__(self):
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self._seen: set[int] = set()
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}

    def expand(self, t: Tensor) -> Tensor:
        stack = [(t, False)]
        while stack:                       # iterative post-order DFS (graphs can be deep)
            cur, done = stack.pop()
            if done:
                if id(cur) in self._seen:
                    continue
                self._seen.add(id(cur))
                if cur.op == Op.NONE:
                    cur.name = cur.name or f"leaf_{len(self.leafs)}"
                    self.leafs.append(cur)
                else:
                    cur.name = cur.name or f"node_{len(self.nodes)}"
                    self.nodes.append(cur)
                continue
            if id(cur) in self._seen:
                continue
            stack.append((cur, True))
            srcs = [s for s in cur.src if s is not None]
            if cur.view_src is not None:
                srcs.append(cur.view_src)
            for s in reversed(srcs):
                if id(s) not in self._seen:
                    stack.append((s, False))
        return t

    def output(self, t: Tensor, name: str | None = None) -> Tensor:
        t.flags |= OUTPUT
        t.root().flags |= OUTPUT          # a view's memory is its root's: keep it alive
        if name:
            t.name = name
        return self.expand(t)

    def find(self, name: str) -> Tensor:
        for t in self.nodes + self.leafs:
            if t.name == name:
                return t
        raise KeyError(name)

    # ---- inspection -------------------------------------------------------------------------
    def describe(self) -> list[dict]:
        out = []
        for t in self.nodes:
            out.append({"op": OPS[t.op].name, "name": t.name, "type": TYPE_NAME[t.type],
                        "shape": list(t.ne[:t.ndim]), "bytes": t.nbytes,
                        "view": t.view_src is not None,
                        "src": [s.name for s in t.src if s is not None]})
        return out

    def to_text(self, arena_bytes: int | None = None) -> str:
        lines = [f"graph: {len(self.nodes)} nodes, {len(self.leafs)} leafs"]
        for i, t in enumerate(self.nodes):
            srcs = ", ".join(s.name for s in t.src if s is not None)
            lines.append(f"{i:4d} {t.shape_str():>22s} {OPS[t.op].name:>9s} {TYPE_NAME[t.type]:>3s} "
                         f"{t.nbytes:>10d} B  {t.name:<28s} <- {srcs}")
        lines.append(f"leafs:")
        for t in self.leafs:
            lines.append(f"     {t.shape_str():>22s} {TYPE_NAME[t.type]:>13s} {t.nbytes:>10d} B  {t.name}")
        if arena_bytes is not None:
            lines.append(f"arena: {arena_bytes} bytes ({arena_bytes / 2**20:.2f} MiB)")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        ids = {id(t): f"t{i}" for i, t in enumerate(self.leafs + self.nodes)}
        lines = ["digraph tinyggml {", "  rankdir=TB;", '  node [fontname="monospace", fontsize=10];']
        for t in self.leafs:
            lines.append(f'  {ids[id(t)]} [shape=box, style=filled, fillcolor="#dddddd", '
                         f'label="{t.name}\\n{TYPE_NAME[t.type]} {t.shape_str()}"];')
        for t in self.nodes:
            color = "#ffffff" if t.op == Op.VIEW else "#cce5ff"
            lines.append(f'  {ids[id(t)]} [shape=record, style=filled, fillcolor="{color}", '
                         f'label="{{{OPS[t.op].name}|{t.name}|{TYPE_NAME[t.type]} {t.shape_str()}}}"];')
            for s in t.src:
                if s is not None:
                    lines.append(f"  {ids[id(s)]} -> {ids[id(t)]};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_json(self, arena_bytes: int | None = None) -> str:
        return json.dumps({"nodes": self.describe(),
                           "leafs": [{"name": t.name, "type": TYPE_NAME[t.type],
                                      "shape": list(t.ne[:t.ndim]), "bytes": t.nbytes}
                                     for t in self.leafs],
                           "arena_bytes": arena_bytes}, indent=1)

    # ---- numpy float64 execution (the reference executor) -----------------------------------
    def compute_numpy(self, leaf_values: dict[str, np.ndarray] | None = None) -> dict[int, np.ndarray]:
        """Run every node through its float64 reference. Leaf values come from `t.data` unless
        overridden by name. STATE leafs are updated in place in the returned float64 copies.
        Returns {id(tensor): float64 4-D array} for roots and views."""
        store: dict[int, np.ndarray] = {}   # id(root) -> flat float64 storage

        def storage(root: Tensor) -> np.ndarray:
            if id(root) not in store:
                src = (leaf_values or {}).get(root.name, root.data)
                if root.op == Op.NONE and root.type not in (F32, F16, I32):
                    import gguf                         # quantized / BF16: dequantized values
                    arr = gguf.quants.dequantize(np.asarray(src), root.type).reshape(-1)
                    store[id(root)] = arr.astype(np.float64)
                elif root.op == Op.NONE:
                    arr = np.ascontiguousarray(src).reshape(-1)
                    store[id(root)] = arr.astype(np.int64 if root.type == I32 else np.float64)
                elif BLOCK[root.type][0] > 1:
                    store[id(root)] = np.zeros(root.nelements)
                else:
                    store[id(root)] = np.zeros(root.nbytes // TYPE_SIZE[root.type])
            return store[id(root)]

        def value(t: Tensor) -> np.ndarray:
            root = t.root()
            base = storage(root)
            if BLOCK[t.type][0] > 1 or t.type not in (F32, F16, I32):
                if t is not root and (t.view_offs or not t.is_contiguous()):
                    raise NotImplementedError("views of block-quantized tensors")
                return base.reshape(tuple(reversed(t.ne)))
            es = TYPE_SIZE[t.type]
            el = base.itemsize
            return np.lib.stride_tricks.as_strided(
                base[t.view_offs // es:], shape=tuple(reversed(t.ne)),
                strides=tuple(b // es * el for b in reversed(t.nb)))

        for t in self.nodes:
            if t.op in EMPTY_OPS:
                continue
            srcs = [None if s is None else value(s) for s in t.src]
            out = OPS[t.op].ref(t, *srcs)
            value(t)[...] = np.broadcast_to(out, tuple(reversed(t.ne)))
        return {id(t): value(t) for t in self.nodes + self.leafs}
