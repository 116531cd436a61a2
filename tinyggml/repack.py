"""Weights repacked at load for the decode dots (kernels/repack.c has the layout and the dots).

A 2-D Q4_0 / Q8_0 / Q4_K / Q6_K weight's rows are interleaved in groups of 16 so that the integer
dots of decoding (and of small batches) read 16 rows with one load and one activation
broadcast (AVX-512 VNNI builds; AVX2 builds repack Q4_0 and Q4_K, 8 rows per register; the
portable build nothing). The packed copy is what
the C plans bind (Tensor.packed); every kernel that reads single rows of it (prompts' panels,
get_rows of a tied embedding) gathers them, so the file's pages are not read again after the
copy and are dropped from the process (madvise): the resident memory stays about one copy of
the weights. Tensor.data keeps the file layout for Python (numpy reference, fingerprints).
"""
from __future__ import annotations

import mmap

import numpy as np

from .backend import pack_rows, pack_supported
from .tensor import QUANTIZED, Tensor

GROUP = 16   # rows per packed group (repack.c TG_PACK_ROWS)


def packable(t: Tensor) -> bool:
    return (t is not None and t.type in QUANTIZED and pack_supported(t.type) and t.view_src is None
            and t.data is not None and t.ne[2] == t.ne[3] == 1 and t.ne[1] >= GROUP
            and t.rows_contiguous())


def _release(arr: np.ndarray) -> None:
    """Drop the whole pages under `arr` (a view of a read-only file mapping) from the resident
    set; touching them again reads them back from the page cache."""
    root = arr
    while isinstance(root.base, np.ndarray):
        root = root.base
    mm = getattr(root, "_mmap", None)
    if not isinstance(mm, mmap.mmap) or not hasattr(mm, "madvise"):
        return
    start = arr.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    page = mmap.PAGESIZE
    lo, hi = -(-start // page) * page, (start + arr.nbytes) // page * page
    if 0 <= lo < hi <= len(mm):
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def pack_weights(weights: dict, n_threads: int = 1) -> int:
    """Repack every packable weight of `weights` (each tensor once) in place, all in one
    arena; returns the bytes repacked."""
    todo = list({id(t): t for t in weights.values() if packable(t)}.values())
    offs, total = [], 0
    for t in todo:
        offs.append(total)
        total += -(-np.asarray(t.data).nbytes // 64) * 64
    arena = np.empty(total, dtype=np.uint8)
    for t, off in zip(todo, offs):
        n = np.asarray(t.data).nbytes
        t.packed = pack_rows(t.type, t.data, t.ne[0], t.ne[1], n_threads, out=arena[off:off + n])
        _release(np.asarray(t.data))
    return sum(t.packed.nbytes for t in todo)
