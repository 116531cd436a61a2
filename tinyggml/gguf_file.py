"""Open and validate a GGUF model (gguf_reader.GGUFReader); typed hparams per arch.

Weights are numpy views of the reader's read-only memmap: zero-copy. Every problem with a file
becomes a ModelLoadError naming the file and, where it applies, the key or tensor, and what was
expected versus found.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import ModelLoadError
from .gguf_reader import GGUFReader
from .tensor import BF16, F16, F32, QUANTIZED, TYPE_NAME

ARCHS = ("mamba", "mamba2")
MATMUL_TYPES = (F32, F16, BF16) + QUANTIZED     # 2-D weights the kernels read natively


def _type_name(t: int) -> str:
    try:
        import gguf
        return gguf.GGMLQuantizationType(t).name
    except ValueError:
        return f"type {t}"


@dataclass(frozen=True)
class HParams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    d_conv: int
    d_inner: int
    d_state: int
    eps: float
    dt_rank: int = 0            # Mamba-1
    dt_b_c_rms: bool = False    # Falcon-Mamba
    n_head: int = 0             # Mamba-2 (Mamba-1: d_inner heads of size 1)
    n_group: int = 1            # Mamba-2

    @property
    def head_dim(self) -> int:
        return self.d_inner // self.n_head if self.arch == "mamba2" else 1

    @property
    def heads(self) -> int:
        return self.n_head if self.arch == "mamba2" else self.d_inner

    @property
    def conv_channels(self) -> int:
        return self.d_inner + (2 * self.n_group * self.d_state if self.arch == "mamba2" else 0)

    def state_shapes(self) -> tuple[tuple, tuple]:
        """Per sequence and layer, ggml order: conv {d_conv-1, ch}, ssm {d_state, head_dim, heads}."""
        return (self.d_conv - 1, self.conv_channels), (self.d_state, self.head_dim, self.heads)

    @property
    def state_bytes_per_sequence(self) -> int:
        (a, b), (c, d, e) = self.state_shapes()
        return self.n_layer * 4 * (a * b + c * d * e)


class GGUFModel:
    """A validated GGUF model file: `.arch`, `.hparams`, `.value(key)`, `.weight(name, ne)`."""

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
                raise ModelLoadError(f"{self.path}: truncated: tensor {t.name} ends at byte "
                                     f"{t.data_offset + t.n_bytes}, file has {size}")
            self.tensors[t.name] = t
        self.dequantized: list[tuple] = []     # (tensor, from type, to type, bytes) at load
        self.arch = self._get("general.architecture", str)
        if self.arch not in ARCHS:
            raise ModelLoadError(f"{self.path}: unsupported architecture '{self.arch}' "
                                 f"(tinyggml runs {', '.join(ARCHS)})")
        self.hparams = self._hparams()

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

    def _get(self, key: str, kind, default=None):
        v = self.value(key)
        if v is None:
            if default is not None:
                return default
            raise ModelLoadError(f"{self.path}: missing metadata key '{key}'")
        try:
            if kind is bool:
                return bool(v)
            return kind(v)
        except (TypeError, ValueError):
            raise ModelLoadError(f"{self.path}: key '{key}' = {v!r} is not {kind.__name__}") from None

    def _hparams(self) -> HParams:
        a = self.arch
        if "token_embd.weight" not in self.tensors:
            raise ModelLoadError(f"{self.path}: missing tensor 'token_embd.weight'")
        common = dict(
            arch=a, n_vocab=int(self.tensors["token_embd.weight"].shape[1]) if
            len(self.tensors["token_embd.weight"].shape) > 1 else 0,
            n_embd=self._get(f"{a}.embedding_length", int), n_layer=self._get(f"{a}.block_count", int),
            d_conv=self._get(f"{a}.ssm.conv_kernel", int), d_inner=self._get(f"{a}.ssm.inner_size", int),
            d_state=self._get(f"{a}.ssm.state_size", int),
            eps=self._get(f"{a}.attention.layer_norm_rms_epsilon", float))
        if a == "mamba":
            hp = HParams(**common, dt_rank=self._get("mamba.ssm.time_step_rank", int),
                         dt_b_c_rms=self._get("mamba.ssm.dt_b_c_rms", bool, False))
        else:
            hp = HParams(**common, n_head=self._get("mamba2.ssm.time_step_rank", int),
                         n_group=self._get("mamba2.ssm.group_count", int, 1))
            if hp.n_head <= 0 or hp.d_inner % hp.n_head or hp.n_group <= 0 or hp.n_head % hp.n_group:
                raise ModelLoadError(f"{self.path}: inconsistent Mamba-2 sizes: d_inner {hp.d_inner}, "
                                     f"heads {hp.n_head}, groups {hp.n_group}")
        for k in ("n_vocab", "n_embd", "n_layer", "d_inner", "d_state"):
            if getattr(hp, k) <= 0:
                raise ModelLoadError(f"{self.path}: {k} must be positive, found {getattr(hp, k)}")
        if not 2 <= hp.d_conv <= 16:
            raise ModelLoadError(f"{self.path}: ssm.conv_kernel {hp.d_conv} not in 2..16")
        return hp

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
        data = np.ascontiguousarray(data.astype(np.float16 if out == F16 else np.float32))
        self.dequantized.append((name, _type_name(ttype), TYPE_NAME[out], data.nbytes))
        return out, data
