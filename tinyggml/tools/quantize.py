"""Quantize a Mamba / Mamba-2 GGUF as llama.cpp's `llama-quantize` does, with its type names.

    summary = quantize_file("model-f32.gguf", "model-Q4_K_M.gguf", "Q4_K_M")
    summary = quantize_file("model-f32.gguf", None, "q4_k", dry_run=True)   # sizes only

Names (any case; also llama-quantize's file type numbers, e.g. "15" = Q4_K_M): Q4_0 Q4_1 MXFP4_MOE
Q5_0 Q5_1 TQ1_0 TQ2_0 Q2_K Q2_K_S Q3_K (= Q3_K_M) Q3_K_S Q3_K_M Q3_K_L Q4_K (= Q4_K_M) Q4_K_S
Q4_K_M Q5_K (= Q5_K_M) Q5_K_S Q5_K_M Q6_K Q8_0 F16 BF16 F32 COPY: `TYPE_NAMES`, in llama-quantize's
order. The others it lists (IQ*, Q1_0, Q2_0) need encoders tinyggml does not have. Encoders:
gguf-py's for Q4_0..Q8_0, TQ1_0, TQ2_0, F16, BF16 (ggml's reference ones), tinyggml.kquants for
Q2_K..Q6_K (ggml's reference K-quantizers). The source may be F32, F16 or BF16 (or quantized,
with allow_requantize, llama-quantize's --allow-requantize).

Which tensors (tensor_allows_quantization): 2-D tensors whose name ends in "weight", except
"*_norm.weight" and "ssm_conv1d": token_embd, output, ssm_in, ssm_out, Mamba-1's ssm_x and
ssm_dt. Everything else (norms, conv1d, ssm_a, ssm_d, biases) is copied as it is.

The type each tensor wants, from llama_tensor_get_type (llama.cpp src/llama-quant.cpp at
007dbbf3, no imatrix, default options), before the fallback rule below. D: the preset's default
type (llama_ftype_get_default_type); head: output.weight, or token_embd.weight when the model
has no output.weight (tied); ne0: row length; ssm_*: ssm_in, ssm_out, ssm_x, ssm_dt.

    preset (general.file_type)        D       head                       token_embd   ssm_*
                                                                         (untied)
    Q4_0 Q4_1 Q5_0 Q5_1 (2 3 8 9)     same    Q6_K; Q8_0 if ne0 % 32     D            D
    Q8_0 (7)                          Q8_0    Q8_0                       D            D
    Q2_K (10), Q2_K_S (21)            Q2_K    Q6_K; Q8_0 if ne0 % 256    D            D
    Q3_K_S Q3_K_M Q3_K_L (11 12 13)   Q3_K    Q6_K; Q8_0 if ne0 % 256    D            D
    Q4_K_S Q4_K_M (14 15)             Q4_K    Q6_K; Q8_0 if ne0 % 256    D            D
    Q5_K_S Q5_K_M (16 17)             Q5_K    Q6_K; Q8_0 if ne0 % 256    D            D
    Q6_K (18)                         Q6_K    Q6_K; Q8_0 if ne0 % 256    D            D
    TQ1_0 TQ2_0 (36 37)               same    Q6_K; Q8_0 if ne0 % 256    Q4_K         D
    MXFP4_MOE (38)                    MXFP4   Q8_0                       Q8_0         Q8_0
    F16 BF16 F32 (1 32 0)             same    D                          D            D
    COPY (the source's)               -       every tensor copied as it is

- _S, _M and _L differ only in attn_v / attn_qkv / attn_output / ffn_down rules (the layer-index
  ones among them, use_more_bits), which match no Mamba tensor: for these models Q3_K_S, Q3_K_M
  and Q3_K_L write the same tensors, as do Q4_K_S / Q4_K_M, Q5_K_S / Q5_K_M and Q2_K / Q2_K_S;
  only general.file_type differs. No rule for these names depends on the layer index.
- Q2_K_S: llama-quantize refuses it without an importance matrix (tensor_requires_imatrix:
  every Q2_K tensor but token_embd / output), and so does this; a dry run only warns.
- Fallback (tensor_type_fallback), for quantized D only: a type whose block does not divide
  ne0 becomes Q2_K, Q3_K, TQ1_0, TQ2_0 -> Q4_0; Q4_K -> Q5_0; Q5_K -> Q5_1; Q6_K -> Q8_0;
  then F16 if that does not divide ne0 either. So with a 32-block D the head of ne0 % 256 != 0
  wants Q6_K and falls back to Q8_0 (a logged fallback, as in llama-quantize). Departure: a
  32-block type that does not fit (Mamba-1's ssm_dt when dt_rank % 32 != 0 under Q8_0, Q4_0,
  ...) stops llama-quantize ("no tensor type fallback"); this writes that tensor as F16.
- A tensor already in its target type is copied bit for bit; a quantized source tensor that
  needs converting is refused unless allow_requantize.
- Metadata: every key copied in order, then general.quantization_version and general.file_type
  moved to the end (llama.cpp's gguf_set_val removes and re-appends). Tensor order: non-block
  tensors by name, then blocks by number, names sorted within a block (weights_map order).

Log lines (through `log`, default stderr; llama-quantize's wording, our type names): one per
fallback while planning (the part in [] only when F16 is used), on one line:
    warning: {name:<36} - ncols {ne0:6} not divisible by {block:3} (required for type {want:>7})
    [(WARNING: must use F16 due to unusual shape) ]-> falling back to {used:>7}
at the end one line per type written, largest first: `{type:>7}: {n:4} tensors {MiB:10.2f} MiB`,
then `model size  = {MiB:8.2f} MiB ({bpw:.2f} BPW)`, `quant size  = ...` (tensor data only) and
`WARNING: {n} of {N} tensor(s) required fallback quantization` when there were fallbacks.
The file is written to a temporary name next to `dst` and renamed when complete; on any error
or interrupt nothing is left behind.
"""
from __future__ import annotations

import io
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import gguf

from ..errors import TinyGGMLError
from ..gguf_file import GGUFModel
from .kquants import QUANTIZERS as KQUANTIZERS

Q = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType


# ---- llama-quantize's names ------------------------------------------------------------------

class Preset(NamedTuple):
    ftype: FT | None        # general.file_type; None: COPY (the source's)
    type: Q | None          # default tensor type D; None: COPY


PRESETS = {     # llama-quantize's QUANT_OPTIONS that tinyggml can write, in its order
    "Q4_0": Preset(FT.MOSTLY_Q4_0, Q.Q4_0), "Q4_1": Preset(FT.MOSTLY_Q4_1, Q.Q4_1),
    "MXFP4_MOE": Preset(FT.MOSTLY_MXFP4_MOE, Q.MXFP4),
    "Q5_0": Preset(FT.MOSTLY_Q5_0, Q.Q5_0), "Q5_1": Preset(FT.MOSTLY_Q5_1, Q.Q5_1),
    "TQ1_0": Preset(FT.MOSTLY_TQ1_0, Q.TQ1_0), "TQ2_0": Preset(FT.MOSTLY_TQ2_0, Q.TQ2_0),
    "Q2_K": Preset(FT.MOSTLY_Q2_K, Q.Q2_K), "Q2_K_S": Preset(FT.MOSTLY_Q2_K_S, Q.Q2_K),
    "Q3_K_S": Preset(FT.MOSTLY_Q3_K_S, Q.Q3_K), "Q3_K_M": Preset(FT.MOSTLY_Q3_K_M, Q.Q3_K),
    "Q3_K_L": Preset(FT.MOSTLY_Q3_K_L, Q.Q3_K),
    "Q4_K_S": Preset(FT.MOSTLY_Q4_K_S, Q.Q4_K), "Q4_K_M": Preset(FT.MOSTLY_Q4_K_M, Q.Q4_K),
    "Q5_K_S": Preset(FT.MOSTLY_Q5_K_S, Q.Q5_K), "Q5_K_M": Preset(FT.MOSTLY_Q5_K_M, Q.Q5_K),
    "Q6_K": Preset(FT.MOSTLY_Q6_K, Q.Q6_K), "Q8_0": Preset(FT.MOSTLY_Q8_0, Q.Q8_0),
    "F16": Preset(FT.MOSTLY_F16, Q.F16), "BF16": Preset(FT.MOSTLY_BF16, Q.BF16),
    "F32": Preset(FT.ALL_F32, Q.F32), "COPY": Preset(None, None),
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
TYPE_NAMES = ("Q4_0 Q4_1 MXFP4_MOE Q5_0 Q5_1 TQ1_0 TQ2_0 Q2_K Q2_K_S Q3_K Q3_K_S Q3_K_M Q3_K_L "
              "Q4_K Q4_K_S Q4_K_M Q5_K Q5_K_S Q5_K_M Q6_K Q8_0 F16 BF16 F32 COPY").split()
NEEDS_IMATRIX = ("Q2_K_S",)     # its Q2_K tensors (not token_embd / output) need an imatrix
# the tensor types by name (quantize_tensor, tools/make_model.py): name -> (type, file type)
QTYPES = {n.lower(): (PRESETS[ALIASES.get(n, n)].type, PRESETS[ALIASES.get(n, n)].ftype) for n in
          "Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K F16 BF16 F32".split()}
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.TQ1_0: Q.Q4_0, Q.TQ2_0: Q.Q4_0, Q.Q4_K: Q.Q5_0,
            Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
CHUNK_VALUES = 1 << 18          # values per work item (rows are never split)


def resolve_type(name: str) -> str:
    """The PRESETS key for a llama-quantize type name (any case, aliases, or its file type
    number), or a TinyGGMLError listing the accepted names."""
    key = str(name).strip().upper()
    if key.isdigit():           # llama-quantize's try_parse_ftype: the first name with that number
        key = next((n for n in TYPE_NAMES if PRESETS[ALIASES.get(n, n)].ftype == int(key)), key)
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return key
    raise TinyGGMLError(f"unknown quantization type {name!r} (choose from {', '.join(TYPE_NAMES)})")


# ---- one tensor ------------------------------------------------------------------------------

def _qtype(qtype) -> Q:
    if isinstance(qtype, Q):
        return qtype
    if isinstance(qtype, str) and qtype.lower() in QTYPES:
        return QTYPES[qtype.lower()][0]
    raise TinyGGMLError(f"unknown quantization type {qtype!r} (choose from {', '.join(QTYPES)})")


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
    """llama.cpp's tensor_allows_quantization, the rules that can apply to Mamba and hybrid
    tensors."""
    return (_n_dims(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name
            and "ssm_conv1d" not in name and "shortconv.conv.weight" not in name)


def _fits(t: Q, ne0: int) -> bool:
    return ne0 % gguf.GGML_QUANT_SIZES[t][0] == 0


def choose_type(preset: Preset, name: str, shape, cur: Q, tied: bool) -> tuple[Q, Q]:
    """(type llama_tensor_get_type wants, type written) for tensor `name` of ggml shape `shape`
    and type `cur`; they differ when the wanted type's blocks do not divide the rows (fallback).
    tied: the model has no output.weight."""
    if preset.type is None or not allows_quantization(name, shape):
        return cur, cur
    if preset.type in FLOAT_TYPES:
        return preset.type, preset.type
    ne0, mxfp4 = int(shape[0]), preset.ftype == FT.MOSTLY_MXFP4_MOE
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        if mxfp4 or not _fits(preset.type, ne0):
            want = Q.Q8_0
        else:
            want = Q.Q8_0 if preset.type == Q.Q8_0 else Q.Q6_K
    elif mxfp4:                  # MXFP4 is for 3-D expert tensors; Mamba has none
        want = Q.Q8_0
    elif name == "token_embd.weight" and preset.type in (Q.TQ1_0, Q.TQ2_0):
        want = Q.Q4_K
    else:
        want = preset.type
    if _fits(want, ne0):
        return want, want
    used = FALLBACK.get(want, Q.F16)             # F16 for 32-block types: see the docstring
    return want, (used if _fits(used, ne0) else Q.F16)


def target_type(name: str, shape, cur: Q, base: Q, tied: bool) -> tuple[Q, bool]:
    """(type to write, whether that is a fallback) for a file whose default type is `base`."""
    want, used = choose_type(Preset(None, base), name, shape, cur, tied)
    return used, used != want


def fallback_line(name: str, ne0: int, want: Q, used: Q) -> str:
    """llama-quantize's warning for one fallback (tensor_type_fallback)."""
    f16 = "(WARNING: must use F16 due to unusual shape) " if used == Q.F16 else ""
    return (f"warning: {name:<36} - ncols {ne0:6d} not divisible by "
            f"{gguf.GGML_QUANT_SIZES[want][0]:3d} (required for type {want.name:>7}) "
            f"{f16}-> falling back to {used.name:>7}")


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


def _plan(model: GGUFModel, key: str, allow_requantize: bool, dry_run: bool, log):
    """[(reader tensor, wanted type, new type)] in output order. Logs each fallback; refuses
    what llama-quantize refuses before writing anything (a dry run logs it instead)."""
    preset, tied, plan, refusal = PRESETS[key], "output.weight" not in model.tensors, [], None
    for name in llama_order(model.tensors):
        t = model.tensors[name]
        cur = Q(int(t.tensor_type))
        want, new = choose_type(preset, name, [int(n) for n in t.shape], cur, tied)
        if want != new:
            log(fallback_line(name, int(t.shape[0]), want, new))
        if (key in NEEDS_IMATRIX and new == Q.Q2_K and refusal is None
                and name not in ("token_embd.weight", "output.weight")):
            refusal = (f"{model.path}: {key} needs an importance matrix (llama-quantize "
                       f"--imatrix) for tensor {name} ({new.name}), which tinyggml does not "
                       f"compute; Q2_K is the same mixture without one")
        if new != cur and cur not in FLOAT_TYPES:
            if not allow_requantize and refusal is None:
                refusal = (f"{model.path}: tensor {name} is already quantized ({cur.name}); "
                           f"requantizing it to {new.name} loses precision twice. Quantize "
                           f"from the F32/F16/BF16 file, or pass --allow-requantize")
            try:
                gguf.quants.dequantize(np.zeros(gguf.GGML_QUANT_SIZES[cur][1], np.uint8), cur)
            except NotImplementedError:
                raise TinyGGMLError(f"{model.path}: tensor {name} is {cur.name}, which cannot be "
                                    f"dequantized to requantize it") from None
        plan.append((t, want, new))
    if refusal and not dry_run:
        raise TinyGGMLError(refusal)
    if refusal:
        log(f"WARNING: dry run only: {refusal}")
    return plan


def _file_type(model: GGUFModel, key: str, plan) -> int:
    """The preset's general.file_type. COPY keeps the source's; without one, llama_model_loader
    guesses from the commonest tensor type and marks the guess (LlamaFileType.GUESSED)."""
    if PRESETS[key].ftype is not None:
        return int(PRESETS[key].ftype)
    v = model.value("general.file_type")
    if isinstance(v, int):
        return v
    counts = Counter(new for _, _, new in plan)
    top = max(counts, key=counts.get)                    # the first of the most common
    guess = {Q.F32: FT.ALL_F32, Q.Q3_K: FT.MOSTLY_Q3_K_M, Q.Q4_K: FT.MOSTLY_Q4_K_M,
             Q.Q5_K: FT.MOSTLY_Q5_K_M, Q.MXFP4: FT.MOSTLY_MXFP4_MOE}.get(top)
    return int(guess or FT.__members__.get(f"MOSTLY_{top.name}", FT.ALL_F32)) | int(FT.GUESSED)


def _ft_name(file_type: int) -> str:
    name = {int(f): f.name for f in FT}.get(file_type & ~FT.GUESSED, str(file_type))
    return f"{name} (guessed)" if file_type & FT.GUESSED else name


def _writer(model: GGUFModel, file_type: int, plan):
    """A GGUFWriter holding the source's keys (llama-quantize's order and new file type) and
    the tensor infos; returns (writer, {name: bytes})."""
    w = gguf.GGUFWriter(path=None, arch=model.arch)
    moved = ("general.quantization_version", "general.file_type")
    for key, field in model.reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in moved:
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(file_type)
    alignment = model.value("general.alignment")
    if alignment:
        w.data_alignment = int(alignment)
    nbytes = {}
    for t, _, new in plan:
        ne = [int(n) for n in t.shape][:_n_dims(t.shape)]    # gguf_add_tensor drops trailing 1s
        np_shape = tuple(reversed(ne))
        nbytes[t.name] = int(np.prod(gguf.quant_shape_to_byte_shape(np_shape, new)))
        w.add_tensor_info(t.name, np_shape, np.dtype(np.float32), nbytes[t.name], raw_dtype=new)
    return w, nbytes


def _file_size(w, nbytes) -> int:
    """Bytes the writer would write: header, keys and infos padded to the alignment, then each
    tensor padded (GGUFWriter.write_tensor_data). The metadata is serialized into memory by the
    writer itself, handed an open "file" the way its open_output_file leaves one (gguf-py's
    writer state; test_quantize_presets checks the size against real files)."""
    sink = io.BytesIO()
    w.fout, w.state = [sink], gguf.gguf_writer.WriterState.EMPTY
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    pad = lambda n: w.ggml_pad(n, w.data_alignment)     # noqa: E731
    return pad(sink.tell()) + sum(pad(n) for n in nbytes.values())


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _check_output(src: Path, dst: Path):
    if not dst.parent.exists():
        raise TinyGGMLError(f"{dst}: folder {dst.parent} does not exist")
    if not dst.parent.is_dir():
        raise TinyGGMLError(f"{dst}: {dst.parent} is not a folder")
    if dst.is_dir():
        raise TinyGGMLError(f"{dst}: is a folder; give the output file's name")
    if dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise TinyGGMLError(f"{dst}: the output would overwrite the input {src}")


def quantize_file(src, dst, qtype: str, n_threads: int | None = None, progress: bool = True,
                  *, allow_requantize: bool = False, dry_run: bool = False,
                  log: Callable[[str], None] | None = _stderr) -> dict:
    """Quantize GGUF `src` to `dst` as `qtype`, a llama-quantize type name (resolve_type).

    n_threads: worker threads over row chunks (None: os.cpu_count()). progress: a bar on stderr.
    allow_requantize: convert tensors that are already quantized (--allow-requantize).
    dry_run: plan, log and size the file, write nothing (dst may be None; it is not checked).
    log: called with each line (fallbacks, then the summary); None: silent.
    Returns a summary: src/dst paths and sizes (dst_bytes: the file's size, or what it would
    be), qtype (the PRESETS key), file_type, seconds, dry_run; per tensor {name: {"type",
    "from", "shape", "bytes", "fallback"}} in file order; types {type: (n_tensors, bytes)},
    largest first; fallbacks [{"name", "ne0", "wanted", "used"}]."""
    t0 = time.perf_counter()
    log = log or (lambda line: None)
    key = resolve_type(qtype)
    src = Path(src)
    dst = Path(dst) if dst is not None else None
    if not dry_run:
        if dst is None:
            raise TinyGGMLError("no output file given")
        _check_output(src, dst)
    model = GGUFModel(str(src))
    plan = _plan(model, key, allow_requantize, dry_run, log)
    file_type = _file_type(model, key, plan)
    w, nbytes = _writer(model, file_type, plan)
    tensors = {t.name: {"type": new.name, "from": Q(int(t.tensor_type)).name,
                        "shape": [int(n) for n in t.shape][:_n_dims(t.shape)],
                        "bytes": nbytes[t.name], "fallback": want != new}
               for t, want, new in plan}
    fallbacks = [{"name": t.name, "ne0": int(t.shape[0]), "wanted": want.name, "used": new.name}
                 for t, want, new in plan if want != new]
    if dry_run:
        dst_bytes = _file_size(w, nbytes)
    else:
        _write(w, plan, dst, n_threads, progress)
        dst_bytes = dst.stat().st_size
    types = _log_summary(plan, tensors, len(fallbacks), log)
    return {"src": str(src), "dst": None if dst is None else str(dst), "qtype": key,
            "file_type": _ft_name(file_type), "src_bytes": src.stat().st_size,
            "dst_bytes": dst_bytes, "seconds": time.perf_counter() - t0, "dry_run": dry_run,
            "tensors": tensors, "types": types, "fallbacks": fallbacks}


def _write(w, plan, dst: Path, n_threads, progress):
    n_threads = max(1, n_threads or os.cpu_count() or 1)
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None
    bar = _bar(sum(int(t.n_elements) for t, _, _ in plan), progress)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t, _, new in plan:
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


def _log_summary(plan, tensors, n_fallback: int, log) -> dict:
    """Log the types written and the totals as llama-quantize does; return {type: (n, bytes)}."""
    count = Counter(v["type"] for v in tensors.values())
    size = Counter()
    for v in tensors.values():
        size[v["type"]] += v["bytes"]
    types = {t: (count[t], size[t]) for t in sorted(count, key=lambda t: (-size[t], t))}
    for t, (n, b) in types.items():
        log(f"{t:>7}: {n:4d} tensors {b / 2**20:10.2f} MiB")
    n_el = sum(int(t.n_elements) for t, _, _ in plan) or 1
    src_bytes, dst_bytes = sum(int(t.n_bytes) for t, _, _ in plan), sum(size.values())
    log(f"model size  = {src_bytes / 2**20:8.2f} MiB ({src_bytes * 8 / n_el:.2f} BPW)")
    log(f"quant size  = {dst_bytes / 2**20:8.2f} MiB ({dst_bytes * 8 / n_el:.2f} BPW)")
    if n_fallback:
        log(f"WARNING: {n_fallback} of {len(plan)} tensor(s) required fallback quantization")
    return types


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
