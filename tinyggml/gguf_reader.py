"""A fast GGUF reader: the metadata parsed with struct over a memoryview, the tensors as
zero-copy views of one read-only memmap.

`gguf.GGUFReader` builds several numpy slices per value, vocabulary strings included, so
opening a model with a 50k-token BPE vocabulary (tokens and merges: 100k strings) takes ~3 s,
nearly all of a small model's load. This reader parses the same file in tens of milliseconds
and offers the part of `GGUFReader`'s interface tinyggml uses, with the same values:
`fields` (name -> field with `.types` and `.contents()`, the three `GGUF.*` header fields
first, then the keys in file order), `tensors` (name, tensor_type, shape, n_elements,
n_bytes, data_offset, data, shaped as the gguf reader shapes them), `data` (the memmap),
`alignment`, `data_offset`. The gguf package still supplies the format's constants, the writer
and dequantization. Little-endian files, versions 2 and 3 (those the gguf reader reads); every
inconsistency raises ValueError with what was found where.
"""
from __future__ import annotations

import os
import struct
from typing import Any, NamedTuple

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from . import _strings
from .errors import shown

VERSIONS = (2, 3)
MAX_DIMS = 4                      # GGML_MAX_DIMS

# value type -> (struct format, numpy dtype) for fixed-size scalars
_SCALARS = {
    GGUFValueType.UINT8: ("<B", np.uint8), GGUFValueType.INT8: ("<b", np.int8),
    GGUFValueType.UINT16: ("<H", np.uint16), GGUFValueType.INT16: ("<h", np.int16),
    GGUFValueType.UINT32: ("<I", np.uint32), GGUFValueType.INT32: ("<i", np.int32),
    GGUFValueType.FLOAT32: ("<f", np.float32), GGUFValueType.BOOL: ("<?", np.bool_),
    GGUFValueType.UINT64: ("<Q", np.uint64), GGUFValueType.INT64: ("<q", np.int64),
    GGUFValueType.FLOAT64: ("<d", np.float64),
}
# tensor types the gguf reader exposes as typed elements (the rest as bytes per row)
_ELEMENT_DTYPES = {
    GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64, GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16, GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


class _Strings:
    """An array of strings, located when the file is parsed (each length walked and
    bounds-checked) and read only when Field.contents asks: opening a model for its weights
    never decodes the vocabulary (100k strings). The bytes are read from the file's mapping
    then, as the tensors are: a file cut short after opening faults there, as it would in a
    weight. Both the walk and the decoding are C loops (_strings.pyx)."""
    __slots__ = ("_buf", "_off", "count")

    def __init__(self, buf: memoryview, off: int, count: int):
        self._buf, self._off, self.count = buf, off, count

    def decode(self) -> list[str]:
        return _strings.decode(self._buf, self._off, self.count)


class Field:
    """One metadata value. `types`: the value type, then the element type for arrays (a
    nested array lists each level); `contents()`: Python values as gguf's ReaderField gives
    them (str, int, float, bool, or a flat list of them for arrays)."""
    __slots__ = ("name", "offset", "types", "_value")

    def __init__(self, name: str, offset: int, types: list, value):
        self.name, self.offset, self.types, self._value = name, offset, types, value

    def contents(self) -> Any:
        v = self._value
        if isinstance(v, bytes):
            return v.decode("utf-8")
        if isinstance(v, np.ndarray):            # an array of numbers
            return v.tolist()
        if isinstance(v, _Strings):
            return v.decode()
        if isinstance(v, list):                  # an array of arrays: flattened, as gguf does
            out = []
            for x in v:
                if isinstance(x, bytes):
                    out.append(x.decode("utf-8"))
                elif isinstance(x, np.ndarray):
                    out.extend(x.tolist())
                else:
                    out.extend(Field("", 0, [], x).contents())
            return out
        return v

    def __repr__(self) -> str:
        return f"Field({self.name!r}, types={[GGUFValueType(t).name for t in self.types]})"


class ReaderTensor(NamedTuple):
    name: str
    tensor_type: GGMLQuantizationType
    shape: np.ndarray             # ggml order (ne0 first), uint64
    n_elements: int
    n_bytes: int
    data_offset: int              # from the start of the file
    data: np.ndarray | None       # view of the memmap; None when the file ends before it


class GGUFReader:
    def __init__(self, path, mode: str = "r"):
        if mode != "r":
            raise ValueError("this reader only reads (mode 'r')")
        if os.path.getsize(path) == 0:
            raise ValueError("not a GGUF file (empty)")
        self.data = np.memmap(path, mode="r")
        self._buf = memoryview(self.data.view(np.ndarray))
        self._size = len(self._buf)
        self.fields: dict[str, Field] = {}
        self.tensors: list[ReaderTensor] = []
        self.alignment = GGUF_DEFAULT_ALIGNMENT
        self._parse()

    # ---- primitive reads, bounds-checked ------------------------------------------------------
    def _need(self, off: int, n: int, what: str) -> None:
        if n < 0 or off + n > self._size:
            raise ValueError(f"file ends inside {what} (needs bytes {off}..{off + n}, "
                             f"file has {self._size})")

    def _unpack(self, fmt: str, off: int, what: str):
        n = struct.calcsize(fmt)
        self._need(off, n, what)
        return struct.unpack_from(fmt, self._buf, off)[0], off + n

    def _string(self, off: int, what: str) -> tuple[bytes, int]:
        n, off = self._unpack("<Q", off, what)
        self._need(off, n, what)
        return bytes(self._buf[off:off + n]), off + n

    def _value_type(self, raw: int, what: str) -> GGUFValueType:
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise ValueError(f"{what}: unknown value type {raw}") from None

    def _value(self, vtype: GGUFValueType, off: int, what: str) -> tuple[Any, list, int]:
        """(value, [types], next offset); numbers as Python scalars, strings as bytes, arrays of
        numbers as numpy views, of strings / arrays as lists."""
        if vtype == GGUFValueType.STRING:
            s, off = self._string(off, what)
            return s, [vtype], off
        if vtype in _SCALARS:
            fmt, _ = _SCALARS[vtype]
            v, off = self._unpack(fmt, off, what)
            return v, [vtype], off
        # an array: element type, count, elements
        raw, off = self._unpack("<I", off, what)
        etype = self._value_type(raw, what)
        count, off = self._unpack("<Q", off, what)
        if etype in _SCALARS:
            dtype = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
            self._need(off, count * dtype.itemsize, what)
            arr = np.frombuffer(self._buf, dtype=dtype, count=count, offset=off)
            return arr, [vtype, etype], off + count * dtype.itemsize
        # strings (8-byte length each) or nested arrays (12 bytes of header each) at least
        self._need(off, count * 8, what)
        if etype == GGUFValueType.STRING:
            end = _strings.walk(self._buf, off, count)
            if end < 0:
                raise ValueError(f"file ends inside {what} (its {count} strings from byte {off} "
                                 f"run past the end of the file, {self._size} bytes)")
            return _Strings(self._buf, off, count), [vtype, etype], end
        items, sub = [], [etype]
        for _ in range(count):
            v, sub, off = self._value(etype, off, what)
            items.append(v)
        return items, [vtype] + sub, off

    # ---- the file -----------------------------------------------------------------------------
    def _parse(self) -> None:
        magic, off = self._unpack("<I", 0, "the header")
        if magic != 0x46554747:                                  # b"GGUF"
            raise ValueError(f"not a GGUF file (magic {bytes(self._buf[:4])!r})")
        version, off = self._unpack("<I", off, "the header")
        if version & 0xFFFF == 0 and version != 0:
            raise ValueError("big-endian GGUF files are not supported")
        if version not in VERSIONS:
            raise ValueError(f"GGUF version {version} is not supported (versions 2 and 3)")
        n_tensors, off = self._unpack("<Q", off, "the header")
        n_kv, off = self._unpack("<Q", off, "the header")
        for name, v, t in (("GGUF.version", version, GGUFValueType.UINT32),
                           ("GGUF.tensor_count", n_tensors, GGUFValueType.UINT64),
                           ("GGUF.kv_count", n_kv, GGUFValueType.UINT64)):
            self.fields[name] = Field(name, 0, [t], v)
        # every key takes at least 12 bytes, every tensor info 24: counts beyond that are damage
        self._need(off, 12 * n_kv + 24 * n_tensors, "the key and tensor tables")
        for i in range(n_kv):
            start = off
            raw_key, off = self._string(off, f"key {i}")
            key = raw_key.decode("utf-8", errors="backslashreplace")
            raw, off = self._unpack("<I", off, f"key '{key}'")
            value, types, off = self._value(self._value_type(raw, f"key '{key}'"), off, f"key '{key}'")
            if key in self.fields:
                raise ValueError(f"duplicate key '{shown(key)}'")
            self.fields[key] = Field(key, start, types, value)
        align = self.fields.get("general.alignment")
        if align is not None:
            a = align.contents()
            if not isinstance(a, int) or isinstance(a, bool) or a <= 0 or a & (a - 1):
                raise ValueError(f"general.alignment {a!r} is not a power of two")
            self.alignment = a
        infos = []
        for i in range(n_tensors):
            raw_name, off = self._string(off, f"tensor info {i}")
            name = raw_name.decode("utf-8", errors="backslashreplace")
            n_dims, off = self._unpack("<I", off, f"tensor '{shown(name)}'")
            if not 1 <= n_dims <= MAX_DIMS:
                raise ValueError(f"tensor '{shown(name)}': {n_dims} dimensions (1..{MAX_DIMS})")
            self._need(off, 8 * n_dims, f"tensor '{shown(name)}'")
            dims = np.frombuffer(self._buf, dtype="<u8", count=n_dims, offset=off).astype(np.uint64)
            off += 8 * n_dims
            raw, off = self._unpack("<I", off, f"tensor '{shown(name)}'")
            rel, off = self._unpack("<Q", off, f"tensor '{shown(name)}'")
            try:
                ttype = GGMLQuantizationType(raw)
                block, type_size = GGML_QUANT_SIZES[ttype]
            except (ValueError, KeyError):
                raise ValueError(f"tensor '{shown(name)}': unknown tensor type {raw}") from None
            infos.append((name, ttype, dims, rel, block, type_size))
        self.data_offset = off + (-off) % self.alignment
        seen = set()
        extents = []
        for name, ttype, dims, rel, block, type_size in infos:
            if name in seen:
                raise ValueError(f"duplicate tensor '{shown(name)}'")
            seen.add(name)
            if int(dims[0]) % block:
                raise ValueError(f"tensor '{shown(name)}': {int(dims[0])} values per row is not a "
                                 f"multiple of the {ttype.name} block ({block})")
            n_el = 1
            for d in dims.tolist():
                n_el *= int(d)
            n_bytes = n_el // block * type_size
            if rel % self.alignment:
                raise ValueError(f"tensor '{shown(name)}': offset {rel} is not a multiple of the "
                                 f"alignment ({self.alignment})")
            start = self.data_offset + rel
            extents.append((start, start + n_bytes, name))
            np_dims = tuple(int(d) for d in reversed(dims.tolist()))
            data = None
            if start + n_bytes <= self._size:
                if ttype in _ELEMENT_DTYPES:
                    dtype = np.dtype(_ELEMENT_DTYPES[ttype])
                    data = self.data[start:start + n_bytes].view(dtype).reshape(np_dims)
                else:                          # bytes per row, as gguf's quant_shape_to_byte_shape
                    data = self.data[start:start + n_bytes].reshape(
                        np_dims[:-1] + (np_dims[-1] // block * type_size,))
            self.tensors.append(ReaderTensor(name, ttype, dims, n_el, n_bytes, start, data))
        end, last = -1, None                   # the furthest end so far, and whose it is
        for s1, e1, b in sorted(extents):
            if e1 == s1:                       # empty tensors overlap nothing
                continue
            if s1 < end:
                raise ValueError(f"tensors '{shown(last)}' and '{shown(b)}' overlap (bytes {s1}..{min(end, e1)} "
                                 f"of the file)")
            end, last = e1, b
