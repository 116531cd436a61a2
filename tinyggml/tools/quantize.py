"""Quantize a Mamba / Mamba-2 GGUF to another type, as llama.cpp's `llama-quantize` does.

    summary = quantize_file("model-f32.gguf", "model-q4_0.gguf", "q4_0")

Types: q8_0 q4_0 q4_1 q5_0 q5_1 (gguf-py's quantizers, which are ggml's reference ones),
q2_k q3_k q4_k q5_k q6_k (tinyggml.kquants, ggml's reference K-quantizers in numpy), and
f16 bf16 f32. The source may be F32, F16 or BF16 (or quantized, with allow_requantize=True).

What llama-quantize does (src/llama-quant.cpp, no imatrix, default options) and this does too:
- Which tensors: 2-D (ggml_n_dims >= 2) tensors whose name ends in "weight", except
  "*_norm.weight" and "ssm_conv1d": token_embd, output, ssm_in, ssm_x, ssm_dt.weight, ssm_out.
  Everything else (norms, conv1d, ssm_a, ssm_d, biases) is copied as it is.
- `output.weight`, or `token_embd.weight` when there is no output (tied): Q6_K for every
  quantized type except Q8_0 (which stays), or Q8_0 when ne0 is not a multiple of 256.
- A row length ne0 that is not a multiple of the block size falls back: Q4_K -> Q5_0,
  Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, then F16 if ne0 is not a multiple of 32.
  Departure: for a 32-block type (q8_0, q4_0, ...) llama-quantize stops with "no tensor type
  fallback"; this writes that tensor as F16 (Mamba-1's ssm_dt.weight when dt_rank % 32 != 0).
- A tensor already in its target type is copied bit for bit; a quantized source tensor that
  needs converting is refused unless allow_requantize (llama-quantize --allow-requantize).
- Metadata: every key copied in order, then general.quantization_version and general.file_type
  moved to the end (llama.cpp's gguf_set_val removes and re-appends). "q4_k", "q5_k" and "q3_k"
  are llama-quantize's aliases Q4_K_M, Q5_K_M and Q3_K_M; their _M extras only bump attention
  and FFN tensors, which Mamba does not have, so for these models _S and _M give the same
  tensors and only general.file_type says _M.
- Tensor order: non-block tensors by name, then blocks by number, names sorted within a block
  (llama_model_loader's weights_map order).
The file is written to a temporary name next to `dst` and renamed when complete; on any error
or interrupt nothing is left behind.
"""
from __future__ import annotations

import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import gguf

from ..errors import TinyGGMLError
from ..gguf_file import GGUFModel
from .kquants import QUANTIZERS as KQUANTIZERS

Q = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType
QTYPES = {      # name -> (type of the quantized tensors, general.file_type)
    "q8_0": (Q.Q8_0, FT.MOSTLY_Q8_0), "q4_0": (Q.Q4_0, FT.MOSTLY_Q4_0),
    "q4_1": (Q.Q4_1, FT.MOSTLY_Q4_1), "q5_0": (Q.Q5_0, FT.MOSTLY_Q5_0),
    "q5_1": (Q.Q5_1, FT.MOSTLY_Q5_1), "q2_k": (Q.Q2_K, FT.MOSTLY_Q2_K),
    "q3_k": (Q.Q3_K, FT.MOSTLY_Q3_K_M), "q4_k": (Q.Q4_K, FT.MOSTLY_Q4_K_M),
    "q5_k": (Q.Q5_K, FT.MOSTLY_Q5_K_M), "q6_k": (Q.Q6_K, FT.MOSTLY_Q6_K),
    "f16": (Q.F16, FT.MOSTLY_F16), "bf16": (Q.BF16, FT.MOSTLY_BF16), "f32": (Q.F32, FT.ALL_F32),
}
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0, Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0}
CHUNK_VALUES = 1 << 18          # values per work item (rows are never split)


# ---- one tensor ------------------------------------------------------------------------------

def _qname(qtype) -> str:
    """The QTYPES key for a type name (any case), or a TinyGGMLError listing the choices."""
    if isinstance(qtype, str) and qtype.lower() in QTYPES:
        return qtype.lower()
    raise TinyGGMLError(f"unknown quantization type {qtype!r} (choose from {', '.join(QTYPES)})")


def _qtype(qtype) -> Q:
    return qtype if isinstance(qtype, Q) else QTYPES[_qname(qtype)][0]


def quantize_tensor(data_f32: np.ndarray, qtype) -> np.ndarray:
    """Rows of ne0 values (the last numpy axis) -> uint8, in GGUF's byte layout for qtype:
    shape (..., ne0 / block_size * type_size). qtype: a name of QTYPES or a GGMLQuantizationType."""
    t = _qtype(qtype)
    x = np.ascontiguousarray(data_f32, dtype=np.float32)
    block, size = gguf.GGML_QUANT_SIZES[t]
    ne0 = x.shape[-1] if x.ndim else 1
    if ne0 % block:
        raise TinyGGMLError(f"rows of {ne0} values cannot be stored as {t.name} "
                            f"(blocks of {block} values)")
    out_shape = (*x.shape[:-1], ne0 // block * size)
    if t == Q.F32:
        return x.view(np.uint8).reshape(out_shape)
    if t == Q.F16:
        return x.astype(np.float16).view(np.uint8).reshape(out_shape)
    if t in KQUANTIZERS:
        return KQUANTIZERS[t](x.reshape(-1, block)).reshape(out_shape)
    try:    # as one long row: gguf-py loops in Python over groups of 16 rows
        return gguf.quants.quantize(x.reshape(1, -1), t).reshape(out_shape)
    except NotImplementedError:
        raise TinyGGMLError(f"quantization to {t.name} is not implemented") from None


def _n_dims(shape) -> int:
    """ggml_n_dims: dimensions up to the last one larger than 1."""
    return max([i + 1 for i, n in enumerate(shape) if n > 1] or [1])


def allows_quantization(name: str, shape) -> bool:
    """llama.cpp's tensor_allows_quantization, the rules that can apply to Mamba tensors."""
    return (_n_dims(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ssm_conv1d" not in name)


def _fits(t: Q, ne0: int) -> bool:
    return ne0 % gguf.GGML_QUANT_SIZES[t][0] == 0


def target_type(name: str, shape, cur: Q, base: Q, tied: bool) -> tuple[Q, bool]:
    """(type to write tensor `name` of ggml shape `shape` and type `cur` in, whether that is a
    fallback) for a file of base type `base`; tied: the model has no output.weight."""
    if not allows_quantization(name, shape):
        return cur, False
    if base in FLOAT_TYPES:
        return base, False
    t, ne0 = base, int(shape[0])
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        t = Q.Q8_0 if ne0 % 256 else (t if t == Q.Q8_0 else Q.Q6_K)
    if _fits(t, ne0):
        return t, False
    t = FALLBACK.get(t, t)
    return (t if _fits(t, ne0) else Q.F16), True


def llama_order(names):
    """llama_model_loader's weights_map order: layer number (-1 outside blocks), then name."""
    def key(name):
        m = re.match(r"blk\.(\d+)\.", name)
        return (int(m.group(1)) if m else -1, name.encode())
    return sorted(names, key=key)


# ---- the file --------------------------------------------------------------------------------

def _row_chunks(n_rows: int, ne0: int):
    step = max(1, CHUNK_VALUES // max(ne0, 1))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def _convert(t, new: Q, map_fn, on_chunk):
    """The bytes of reader tensor `t` converted to type `new`, row chunks through map_fn."""
    cur = Q(int(t.tensor_type))
    raw = np.asarray(t.data)
    raw = raw.reshape(-1, raw.shape[-1]) if raw.ndim else raw.reshape(1, 1)
    ne0 = int(t.shape[0])

    def work(span):
        rows = raw[span[0]:span[1]]
        x = rows if cur == Q.F32 else gguf.quants.dequantize(rows, cur)
        return quantize_tensor(np.asarray(x, np.float32).reshape(len(rows), ne0), new)

    parts, chunks = [], _row_chunks(len(raw), ne0)
    for span, part in zip(chunks, map_fn(work, chunks)):
        parts.append(part)
        on_chunk((span[1] - span[0]) * ne0)
    return np.concatenate(parts, axis=0)


def _plan(model: GGUFModel, base: Q, allow_requantize: bool):
    """[(reader tensor, new type, fallback?)] in output order; refuses what it cannot do."""
    tied = "output.weight" not in model.tensors
    plan = []
    for name in llama_order(model.tensors):
        t = model.tensors[name]
        cur = Q(int(t.tensor_type))
        new, fell_back = target_type(name, [int(n) for n in t.shape], cur, base, tied)
        if new != cur and cur not in FLOAT_TYPES:
            if not allow_requantize:
                raise TinyGGMLError(
                    f"{model.path}: tensor {name} is already quantized ({cur.name}); requantizing "
                    f"it to {new.name} loses precision twice. Quantize from the F32/F16/BF16 file, "
                    f"or pass allow_requantize=True")
            try:
                gguf.quants.dequantize(np.zeros(gguf.GGML_QUANT_SIZES[cur][1], np.uint8), cur)
            except NotImplementedError:
                raise TinyGGMLError(f"{model.path}: tensor {name} is {cur.name}, which cannot be "
                                    f"dequantized to requantize it") from None
        plan.append((t, new, fell_back))
    return plan


def _writer(model: GGUFModel, path: Path, file_type: FT):
    """A GGUFWriter holding the source's keys (llama-quantize's order and new file type)."""
    w = gguf.GGUFWriter(path=None, arch=model.arch)
    moved = ("general.quantization_version", "general.file_type")
    for key, field in model.reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in moved:
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(int(file_type))
    alignment = model.value("general.alignment")
    if alignment:
        w.data_alignment = int(alignment)
    return w


def quantize_file(src, dst, qtype: str, n_threads: int | None = None, progress: bool = True,
                  *, allow_requantize: bool = False) -> dict:
    """Quantize GGUF `src` to `dst` as type `qtype` (a name in QTYPES).

    n_threads: worker threads over row chunks (None: os.cpu_count()). progress: a bar on stderr.
    Returns a summary: src/dst paths and sizes, qtype, file_type, seconds, and per tensor
    {name: {"type", "from", "shape", "bytes", "fallback"}} in file order."""
    t0 = time.perf_counter()
    qname = _qname(qtype)
    base, file_type = QTYPES[qname]
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise TinyGGMLError(f"{dst}: the output would overwrite the input")
    model = GGUFModel(str(src))
    plan = _plan(model, base, allow_requantize)

    w = _writer(model, dst, file_type)
    tensors = {}
    for t, new, fell_back in plan:
        ne = [int(n) for n in t.shape][:_n_dims(t.shape)]    # gguf_add_tensor drops trailing 1s
        np_shape = tuple(reversed(ne))
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(np_shape, new)))
        w.add_tensor_info(t.name, np_shape, np.dtype(np.float32), nbytes, raw_dtype=new)
        tensors[t.name] = {"type": new.name, "from": Q(int(t.tensor_type)).name,
                           "shape": ne, "bytes": nbytes, "fallback": fell_back}

    n_threads = max(1, n_threads or os.cpu_count() or 1)
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    bar = _bar(sum(int(t.n_elements) for t, _, _ in plan), progress)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t, new, _ in plan:
            if bar is not None:
                bar.set_postfix_str(t.name, refresh=False)
            if new == Q(int(t.tensor_type)):
                data = np.asarray(t.data).view(np.uint8)
                if bar is not None:
                    bar.update(int(t.n_elements))
            else:
                data = _convert(t, new, pool.map if pool else map,
                                bar.update if bar is not None else lambda n: None)
            w.write_tensor_data(np.ascontiguousarray(data).reshape(-1))
        w.close()
        os.replace(tmp, dst)
    except BaseException as e:
        w.close()
        try:
            tmp.unlink()
        except OSError:             # never created
            pass
        if isinstance(e, OSError):
            raise TinyGGMLError(f"{dst}: cannot write ({e.strerror or e})") from e
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    return {"src": str(src), "dst": str(dst), "qtype": qname,
            "file_type": file_type.name, "src_bytes": src.stat().st_size,
            "dst_bytes": dst.stat().st_size, "seconds": time.perf_counter() - t0,
            "tensors": tensors}


def _bar(total: int, enabled: bool):
    """A tqdm bar on stderr counting values, or None (disabled, or tqdm missing)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="quantizing", unit="val", unit_scale=True, file=sys.stderr,
                leave=False)
