"""Open and validate a GGUF model (gguf_reader.GGUFReader); its architecture's typed hparams.

Weights are numpy views of the reader's read-only memmap: zero-copy. Every problem with a file
becomes a ModelLoadError naming the file and, where it applies, the key or tensor, and what was
expected versus found.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import ModelLoadError, shown
from .gguf_reader import GGUFReader
from .tensor import F16, F32, TYPE_NAME


def _type_name(t: int) -> str:
    try:
        import gguf
        return gguf.GGMLQuantizationType(t).name
    except ValueError:
        return f"type {t}"


class GGUFModel:
    """A validated GGUF model file: `.arch`, `.arch_module` (tinyggml.models), `.hparams` (that
    module's HParams), `.value(key)`, `.get(key, kind)`, `.weight(name, ne)`."""

    def __init__(self, path: str):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise ModelLoadError(f"{self.path}: no such file")
        if os.path.isdir(self.path):
            raise ModelLoadError(f"{self.path}: is a directory, not a GGUF file")
        try:
            with open(self.path, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise ModelLoadError(f"{self.path}: cannot read ({e.strerror})") from None
        if magic != b"GGUF":
            raise ModelLoadError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        try:
            self.reader = GGUFReader(self.path)
        except Exception as e:   # the reader fails in many ways on damaged files
            size = os.path.getsize(self.path)
            raise ModelLoadError(f"{self.path}: damaged or truncated GGUF ({size} bytes; "
                                 f"reader: {type(e).__name__}: {e})") from None
        size = os.path.getsize(self.path)
        self.tensors = {}
        for t in self.reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise ModelLoadError(f"{self.path}: truncated: tensor {shown(t.name)} ends at byte "
                                     f"{t.data_offset + t.n_bytes}, file has {size}")
            self.tensors[t.name] = t
        self.dequantized: list[tuple] = []     # (tensor, from type, to type, bytes) at load
        self.arch = self.get("general.architecture", str)
        from .models import ARCHS
        if self.arch not in ARCHS:
            raise ModelLoadError(f"{self.path}: unsupported architecture '{shown(self.arch)}' "
                                 f"(tinyggml runs {', '.join(ARCHS)})")
        self.arch_module = ARCHS[self.arch]
        self.hparams = self.arch_module.read_hparams(self)

    # ---- metadata -----------------------------------------------------------------------------
    def value(self, key: str):
        """The value of metadata `key`, or None when absent or unreadable."""
        f = self.reader.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception:
            return None

    def get(self, key: str, kind, default=None):
        """Metadata `key` as `kind` (int, float, str, bool); `default` when absent, or a
        ModelLoadError naming the key when there is no default or the value is not a `kind`."""
        v = self.value(key)
        if v is None:
            if default is not None:
                return default
            raise ModelLoadError(f"{self.path}: missing metadata key '{key}'")
        bad = ModelLoadError(f"{self.path}: key '{key}' = {v!r:.60} is not {kind.__name__}")
        if kind is bool:
            if not isinstance(v, (bool, int)):
                raise bad
            return bool(v)
        if kind is int:                   # an integer, or a float holding one exactly
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad
            if isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
                raise bad
            return int(v)
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad
            return float(v)
        if not isinstance(v, kind):
            raise bad
        return v

    # ---- tensors ------------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.tensors

    def weight(self, name: str, ne: tuple, types=(F32,)) -> tuple[int, np.ndarray]:
        """(type, numpy data) of tensor `name`, checked against shape `ne` (ggml order).

        Types in `types` are zero-copy views of the mmapped file. Any other type the `gguf`
        package can dequantize (IQ*, TQ*, ...) is dequantized here, once: to F16 where F16 is
        accepted, else F32; `self.dequantized` records it for the load warning."""
        t = self.tensors.get(name)
        if t is None:
            raise ModelLoadError(f"{self.path}: missing tensor '{name}' (expected shape {list(ne)})")
        found = [int(n) for n in t.shape]
        want = list(ne)
        # GGUF drops trailing 1s inconsistently across writers: compare padded shapes
        pad = lambda s: s + [1] * (4 - len(s))
        if pad(found) != pad(want):
            raise ModelLoadError(f"{self.path}: tensor '{name}' has shape {found}, expected {want}")
        ttype = int(t.tensor_type)
        if ttype in types:
            return ttype, t.data
        import gguf
        try:
            data = gguf.quants.dequantize(t.data, gguf.GGMLQuantizationType(ttype))
        except (NotImplementedError, ValueError, KeyError, TypeError):
            raise ModelLoadError(
                f"{self.path}: tensor '{name}' has type {_type_name(ttype)}, which neither "
                f"tinyggml nor the gguf package can read") from None
        out = F16 if F16 in types else F32
        with np.errstate(over="ignore"):       # values beyond F16's range become inf, as in ggml
            data = np.ascontiguousarray(data.astype(np.float16 if out == F16 else np.float32))
        self.dequantized.append((name, _type_name(ttype), TYPE_NAME[out], data.nbytes))
        return out, data
