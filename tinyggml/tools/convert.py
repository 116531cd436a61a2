"""Convert a Mamba or hybrid (Mamba-2 or short conv + attention) checkpoint to GGUF, writing
what llama.cpp's convert_hf_to_gguf.py writes, without torch.

    summary = convert("mamba-130m-hf/", "mamba-130m-f16.gguf", outtype="f16")

Checkpoints (config.json `architectures[0]`, or `ssm_cfg.layer` for state-spaces configs):
  MambaForCausalLM, MambaLMHeadModel        -> arch "mamba"
  FalconMambaForCausalLM                    -> arch "mamba", ssm.dt_b_c_rms = true
  Mamba2ForCausalLM                         -> arch "mamba2"
  mistral layout (params.json + consolidated.safetensors + tokenizer.model.v3, no config.json:
  Mamba-Codestral-7B-v0.1)                  -> arch "mamba2", read as is, no renaming step
  GraniteMoeHybridForCausalLM (dense)       -> arch "granitehybrid"  } convert_hybrid.py: names,
  FalconH1ForCausalLM                       -> arch "falcon-h1"      } transforms and keys,
  NemotronHForCausalLM (dense)              -> arch "nemotron_h"     } and its departures
  Lfm2ForCausalLM                           -> arch "lfm2"           }
  Qwen3_5ForCausalLM (dense; the text model
  of Qwen3_5ForConditionalGeneration)       -> arch "qwen35"         }
Weights: model.safetensors, sharded model-*.safetensors with model.safetensors.index.json, or
consolidated*.safetensors; F32/F16/BF16/F64, memory-mapped (bf16 -> f32 is a 16-bit shift).

What llama.cpp does for Mamba and this does too: the same keys, values and key order; tensors
in the checkpoint's order (files sorted, names sorted within a file, as safetensors lists them); the
names blk.N.ssm_* ; A = -exp(A_log); conv1d weight squeezed to {d_conv, ch}; Mamba-2 A and D
as {1, n_head} and ssm_norm as {d_inner/n_group, n_group}; token list padded to a multiple of
pad_vocab_size_multiple (8 for Mamba-1, 16 for Mamba-2); Mamba-1 `output` omitted when equal
to `token_embd` (Mamba-2 keeps an lm_head that is present, as llama.cpp does); 1-D, norm, conv
and non-".weight" tensors stay F32, other weights take the outtype (q8_0 falls back to F16 for
rows that are not a multiple of 32).
Departures, each where llama.cpp cannot do better or cannot run at all:
- A = -exp(A_log) is rounded once from float64 (correctly rounded); llama.cpp rounds torch's
  float32 exp (MKL, up to ~0.53 ulp), so ~1% of Mamba-1 ssm_a values differ by 1 ulp.
- Tokenizer (convert_vocab.py): a SentencePiece model is preferred over tokenizer.json for
  Mamba-1 too; tokenizer.model.v3 is read as is; a '▁'-escaped BPE tokenizer.json becomes an
  SPM vocab; no built-in gpt-neox vocab: checkpoints without tokenizer files need vocab_from.
- The mistral layout, and state-spaces `ssm_cfg` values (d_state, headdim, ngroups, ...) are
  read; llama.cpp needs a config.json and ignores ssm_cfg (then uses defaults).
- An embedding whose row count differs from the padded vocab sets the token count (llama.cpp
  writes the padded count, a file its loader rejects).
- Errors are TinyGGMLError naming the file, tensor, and expected vs found; the output is
  written to a temporary file next to `out_path` and renamed only when complete.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import gguf

from . import convert_hybrid as hybrid
from .convert_vocab import load_vocab
from ..errors import TinyGGMLError

Q = gguf.GGMLQuantizationType
OUTTYPES = {    # outtype -> (general.file_type, type of the big 2-D weights)
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}
ARCHS = {"MambaForCausalLM": "mamba", "MambaLMHeadModel": "mamba",
         "FalconMambaForCausalLM": "mamba", "Mamba2ForCausalLM": "mamba2"}
_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}

# checkpoint name (after "model." and "backbone." prefixes) -> GGUF name
_GLOBAL = {"embeddings.weight": "token_embd.weight", "embedding.weight": "token_embd.weight",
           "norm_f.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
_BLOCK = {"norm.weight": "attn_norm.weight", "mixer.in_proj.weight": "ssm_in.weight",
          "mixer.conv1d.weight": "ssm_conv1d.weight", "mixer.conv1d.bias": "ssm_conv1d.bias",
          "mixer.x_proj.weight": "ssm_x.weight", "mixer.dt_proj.weight": "ssm_dt.weight",
          "mixer.dt_proj.bias": "ssm_dt.bias", "mixer.dt_bias": "ssm_dt.bias",
          "mixer.A_log": "ssm_a", "mixer.D": "ssm_d", "mixer.norm.weight": "ssm_norm.weight",
          "mixer.out_proj.weight": "ssm_out.weight"}
_BLOCK_NAMES = {"mamba": ("attn_norm.weight", "ssm_in.weight", "ssm_conv1d.weight",
                          "ssm_conv1d.bias", "ssm_x.weight", "ssm_dt.weight", "ssm_dt.bias",
                          "ssm_a", "ssm_d", "ssm_out.weight"),
                "mamba2": ("attn_norm.weight", "ssm_in.weight", "ssm_conv1d.weight",
                           "ssm_conv1d.bias", "ssm_dt.bias", "ssm_a", "ssm_d",
                           "ssm_norm.weight", "ssm_out.weight")}


# ---- checkpoint: config and weights ----------------------------------------------------------

@dataclass
class Spec:
    """Hyperparameters as llama.cpp reads them (find_hparam key lists and `or default`)."""
    hf_arch: str
    arch: str           # "mamba" | "mamba2"
    n_embd: int
    n_layer: int
    d_conv: int
    d_inner: int
    d_state: int
    eps: float
    n_vocab: int        # padded
    dt_rank: int = 0    # Mamba-1
    dt_b_c_rms: bool = False
    n_head: int = 0     # Mamba-2
    n_group: int = 1
    mistral: bool = False

    def shapes(self, n_rows: int) -> dict:
        """GGUF name (block part) -> expected checkpoint shape, numpy order."""
        ch = self.d_inner + (2 * self.n_group * self.d_state if self.arch == "mamba2" else 0)
        heads = self.n_head if self.arch == "mamba2" else self.d_inner
        s = {"token_embd.weight": (n_rows, self.n_embd), "output.weight": (n_rows, self.n_embd),
             "output_norm.weight": (self.n_embd,), "attn_norm.weight": (self.n_embd,),
             "ssm_conv1d.weight": (ch, 1, self.d_conv), "ssm_conv1d.bias": (ch,),
             "ssm_dt.bias": (heads,), "ssm_out.weight": (self.n_embd, self.d_inner)}
        if self.arch == "mamba":
            s.update({"ssm_in.weight": (2 * self.d_inner, self.n_embd),
                      "ssm_x.weight": (self.dt_rank + 2 * self.d_state, self.d_inner),
                      "ssm_dt.weight": (self.d_inner, self.dt_rank),
                      "ssm_a": (self.d_inner, self.d_state), "ssm_d": (self.d_inner,)})
        else:
            s.update({"ssm_in.weight": (2 * self.d_inner + 2 * self.n_group * self.d_state
                                        + self.n_head, self.n_embd),
                      "ssm_a": (self.n_head,), "ssm_d": (self.n_head,),
                      "ssm_norm.weight": (self.d_inner,)})
        return s


def _find(hp: dict, keys, default=None):
    """llama.cpp's `find_hparam(keys, optional=True) or default`."""
    value = next((hp[k] for k in keys if k in hp), None)
    if value or default is None:
        return value
    return default


def read_spec(hf_dir: Path) -> Spec:
    cfg_path, mistral = hf_dir / "config.json", False
    if not cfg_path.is_file() and (hf_dir / "params.json").is_file():
        cfg_path, mistral = hf_dir / "params.json", True
    if not cfg_path.is_file():
        raise TinyGGMLError(f"{hf_dir}: no config.json (nor a mistral params.json)")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise TinyGGMLError(f"{cfg_path}: cannot read JSON ({e})") from None
    hp = dict(cfg)
    ssm_cfg = cfg.get("ssm_cfg") or {}
    for ours, theirs in (("d_state", "d_state"), ("d_conv", "d_conv"), ("head_dim", "headdim"),
                         ("n_groups", "ngroups"), ("dt_rank", "dt_rank"), ("expand", "expand")):
        if theirs in ssm_cfg:       # state-spaces configs keep the mixer settings here
            hp.setdefault(ours, ssm_cfg[theirs])
    if mistral:
        hf_arch = "Mamba2ForCausalLM"
    elif cfg.get("architectures"):
        hf_arch = cfg["architectures"][0]
    elif "ssm_cfg" in cfg:
        hf_arch = ssm_cfg.get("layer", "Mamba") + "ForCausalLM"
    else:
        raise TinyGGMLError(f"{cfg_path}: no 'architectures' (nor 'ssm_cfg') to tell the model")
    if hf_arch in hybrid.ARCHS or hf_arch in hybrid.UNSUPPORTED:
        return hybrid.read_spec(cfg_path, cfg, hf_arch)
    if hf_arch not in ARCHS:
        raise TinyGGMLError(f"{cfg_path}: architecture {hf_arch!r} is not supported "
                            f"(supported: {', '.join([*ARCHS, *hybrid.ARCHS])})")
    arch = ARCHS[hf_arch]

    def need(keys):
        v = _find(hp, keys)
        if v is None:
            raise TinyGGMLError(f"{cfg_path}: none of the keys {list(keys)} is set")
        return int(v)

    n_embd = need(["hidden_size", "d_model", "dim"])
    n_layer = need(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    d_inner = int(_find(hp, ["mamba_d_ssm", "intermediate_size", "d_inner"],
                        int(_find(hp, ["expand"], 2) * n_embd)))
    pad = int(_find(hp, ["pad_vocab_size_multiple", "pad_vocab_multiple"],
                    8 if arch == "mamba" else 16))
    vocab = need(["vocab_size"])
    spec = Spec(hf_arch, arch, n_embd, n_layer,
                d_conv=int(_find(hp, ["conv_kernel", "d_conv"], 4)), d_inner=d_inner,
                d_state=int(_find(hp, ["state_size", "d_state"], 16 if arch == "mamba" else 128)),
                eps=float(_find(hp, ["layer_norm_epsilon", "rms_norm_eps", "norm_eps"], 1e-5)),
                n_vocab=-(vocab // -pad) * pad, mistral=mistral)
    if arch == "mamba":
        dt_rank = _find(hp, ["time_step_rank", "dt_rank"], "auto")
        spec.dt_rank = -(n_embd // -16) if dt_rank == "auto" else int(dt_rank)
        spec.dt_b_c_rms = hp.get("model_type") == "falcon_mamba"
    else:
        head_dim = int(_find(hp, ["mamba_d_head", "head_dim"], 64))
        if d_inner % head_dim:
            raise TinyGGMLError(f"{cfg_path}: d_inner {d_inner} is not a multiple of "
                                f"head_dim {head_dim}")
        spec.n_head, spec.n_group = d_inner // head_dim, int(_find(hp, ["n_groups"], 1))
    return spec


class SafeTensors:
    """Name -> memory-mapped array over the checkpoint's .safetensors files, in the order
    llama.cpp reads them."""

    def __init__(self, hf_dir: Path, mistral: bool):
        self.index, parts = {}, self._part_names(hf_dir, mistral)
        for part in parts:
            self._read_header(hf_dir / part)
        self.parts = parts

    @staticmethod
    def _part_names(hf_dir: Path, mistral: bool) -> list:
        index_file = hf_dir / "model.safetensors.index.json"
        if index_file.is_file() and not mistral:
            try:
                with open(index_file, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise TinyGGMLError(f"{index_file}: no readable 'weight_map' ({e})") from None
            missing = sorted({p for p in weight_map.values() if not (hf_dir / p).is_file()})
            if missing:
                raise TinyGGMLError(f"{hf_dir}: shard(s) listed in {index_file.name} are "
                                    f"missing: {', '.join(missing)}")
            return sorted(set(weight_map.values()))
        prefix = "consolidated" if mistral else "model"
        parts = sorted(p.name for p in hf_dir.glob(f"{prefix}*.safetensors"))
        if not parts:
            raise TinyGGMLError(f"{hf_dir}: no {prefix}*.safetensors weights (pytorch_model.bin "
                                f"is not supported: re-save the model with safetensors)")
        return parts

    def _read_header(self, path: Path) -> None:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            try:
                if n > size - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(f.read(n))
            except ValueError as e:
                raise TinyGGMLError(f"{path}: not a safetensors file ({e})") from None
        for name in sorted(k for k in header if k != "__metadata__"):
            meta = header[name]
            if name in self.index:
                raise TinyGGMLError(f"{path}: tensor '{name}' is also in {self.file(name)}")
            begin, end = meta["data_offsets"]
            if meta["dtype"] not in _ST_DTYPES:
                raise TinyGGMLError(f"{path}: tensor '{name}' has dtype {meta['dtype']}, "
                                    f"expected one of {', '.join(_ST_DTYPES)}")
            if 8 + n + end > size:
                raise TinyGGMLError(f"{path}: tensor '{name}' runs past the end of the file "
                                    f"(truncated?)")
            self.index[name] = (path, meta["dtype"], tuple(meta["shape"]), 8 + n + begin)

    def shape(self, name: str) -> tuple:
        return self.index[name][2]

    def file(self, name: str) -> Path:
        return self.index[name][0]

    def load(self, name: str) -> np.ndarray:
        """float32 copy of tensor `name` (bf16: the 16 bits become the high half of an f32)."""
        path, dtype, shape, offset = self.index[name]
        raw = np.memmap(path, dtype=_ST_DTYPES[dtype], mode="r", offset=offset, shape=shape)
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return np.array(raw, dtype=np.float32)


# ---- plan: names, checks, transforms, types ---------------------------------------------------

@dataclass
class Item:
    src: str            # checkpoint name
    name: str           # GGUF name
    shape: tuple        # GGUF shape, numpy order
    qtype: Q
    load: object = None     # hybrids: load(st) -> the GGUF tensor (else _transform's)


def gguf_name(src: str):
    """(GGUF name, block id) for a checkpoint name, or (None, None)."""
    base = src.removeprefix("model.").removeprefix("backbone.")
    if base in _GLOBAL:
        return _GLOBAL[base], None
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", base)
    if m and m.group(2) in _BLOCK:
        return f"blk.{m.group(1)}.{_BLOCK[m.group(2)]}", int(m.group(1))
    return None, None


def _gguf_shape(spec: Spec, name: str, found: tuple) -> tuple:
    """The shape llama.cpp stores (numpy order): conv1d squeezed, Mamba-2 A/D as a column,
    the gated norm split by group."""
    if name.endswith(".ssm_conv1d.weight"):
        return found[0], found[-1]
    if spec.arch == "mamba2" and name.endswith((".ssm_a", ".ssm_d")):
        return found[0], 1
    if name.endswith(".ssm_norm.weight"):
        return spec.n_group, spec.d_inner // spec.n_group
    return found


def _transform(spec: Spec, name: str, data: np.ndarray) -> np.ndarray:
    if name.endswith(".ssm_a"):     # float64 exp, then one rounding to f32
        data = (-np.exp(data.astype(np.float64))).astype(np.float32)
    return data.reshape(_gguf_shape(spec, name, data.shape))


def _out_type(name: str, shape: tuple, big: Q) -> Q:
    """llama.cpp's prepare_tensors rules for the Mamba and hybrid tensors."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or ".ssm_conv1d." in name \
            or ".shortconv.conv." in name or not name.endswith(".weight"):
        return Q.F32
    if shape[-1] % gguf.GGML_QUANT_SIZES[big][0]:
        return Q.F16    # llama.cpp: QuantError -> "falling back to F16"
    return big


def plan(spec: Spec, st: SafeTensors, big: Q) -> list:
    """Map, check and type every checkpoint tensor, in the checkpoint's order."""
    names = {}      # GGUF name -> checkpoint name
    for src in st.index:
        name, bid = gguf_name(src)
        if name is None or (bid is not None
                            and name.split(".", 2)[2] not in _BLOCK_NAMES[spec.arch]):
            raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' is not part of a "
                                f"{spec.hf_arch} model")
        if bid is not None and bid >= spec.n_layer:
            raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' is in block {bid}, but the "
                                f"config has {spec.n_layer} blocks")
        if name in names:
            raise TinyGGMLError(f"{st.file(src)}: '{src}' and '{names[name]}' both map to {name}")
        names[name] = src
    wanted = ["token_embd.weight", "output_norm.weight"] + [
        f"blk.{i}.{s}" for i in range(spec.n_layer) for s in _BLOCK_NAMES[spec.arch]]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise TinyGGMLError(f"{st.file(next(iter(st.index)))}: missing tensor(s) for "
                            f"{spec.hf_arch}: {', '.join(missing[:8])}"
                            f"{' ...' if len(missing) > 8 else ''}")
    embd = st.shape(names["token_embd.weight"])
    shapes = spec.shapes(embd[0] if len(embd) == 2 else -1)
    items = []
    for name, src in names.items():
        found, expected = st.shape(src), shapes[name.split(".", 2)[2] if name.startswith("blk.")
                                                else name]
        if found != expected and not (name.endswith("conv1d.weight") and found == expected[::2]):
            raise TinyGGMLError(f"{st.file(src)}: tensor '{src}' ({name}) has shape "
                                f"{list(found)}, expected {list(expected)} from the config")
        shape = _gguf_shape(spec, name, found)
        items.append(Item(src, name, shape, _out_type(name, shape, big)))
    if spec.arch == "mamba" and "output.weight" in names and np.array_equal(
            st.load(names["output.weight"]), st.load(names["token_embd.weight"])):
        items = [it for it in items if it.name != "output.weight"]    # tied: omitted
    return items


# ---- write ----------------------------------------------------------------------------------

def convert(hf_dir, out_path, outtype="f32", vocab_from=None, progress=True, name=None) -> dict:
    """Convert checkpoint folder `hf_dir` to GGUF file `out_path`; returns a summary dict.

    outtype: f32 | f16 | bf16 | q8_0. vocab_from: a GGUF whose tokenizer.* keys to copy (for
    checkpoints without tokenizer files). name: general.name (default: from the folder name,
    as llama.cpp derives it)."""
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if outtype not in OUTTYPES:
        raise TinyGGMLError(f"outtype {outtype!r} is not supported (choose from "
                            f"{', '.join(OUTTYPES)})")
    if not hf_dir.is_dir():
        raise TinyGGMLError(f"{hf_dir}: not a checkpoint folder")
    ftype, big = OUTTYPES[outtype]
    spec = read_spec(hf_dir)
    st = SafeTensors(hf_dir, spec.mistral)
    if isinstance(spec, hybrid.HybridSpec):
        items = [Item(src, name, shape, _out_type(name, shape, big), load)
                 for src, name, shape, load in hybrid.plan(spec, st)]
    else:
        items = plan(spec, st, big)
    rows = next(it.shape[0] for it in items if it.name == "token_embd.weight")
    if rows != spec.n_vocab:    # llama.cpp would write a file its loader rejects
        print(f"warning: {hf_dir}: the embedding has {rows} rows, the padded vocab is "
              f"{spec.n_vocab}; writing {rows} tokens", file=sys.stderr)
        spec.n_vocab = rows
    vocab = load_vocab(hf_dir, spec.n_vocab, vocab_from, spm_ids_fallback=spec.mistral)

    w = gguf.GGUFWriter(path=None, arch=spec.arch)
    n_params = sum(int(np.prod(it.shape)) for it in items)
    _write_metadata(w, spec, hf_dir, name, n_params, ftype)
    vocab.write(w)
    for it in items:
        nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(it.shape, it.qtype)))
        w.add_tensor_info(it.name, it.shape, np.dtype(np.float32), nbytes, raw_dtype=it.qtype)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    bar = _Progress(len(items), progress)
    try:
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for it in items:
            bar.step(it.name)
            data = it.load(st) if it.load else _transform(spec, it.name, st.load(it.src))
            w.write_tensor_data(gguf.quants.quantize(data, it.qtype))
        w.close()
        os.replace(tmp, out_path)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return {"path": str(out_path), "arch": spec.arch, "architecture": spec.hf_arch,
            "outtype": outtype, "n_tensors": len(items), "n_params": n_params,
            "n_vocab": spec.n_vocab, "tokenizer": vocab.source,
            "bytes": out_path.stat().st_size}


def _write_metadata(w, spec: Spec, hf_dir: Path, name, n_params: int, ftype) -> None:
    """general.*, then the arch keys in llama.cpp's order (set_gguf_parameters)."""
    w.add_type(gguf.GGUFType.MODEL)
    meta = gguf.Metadata.load(None, hf_dir, name, n_params)
    if meta.name is None:
        meta.name = hf_dir.name
    if meta.size_label is None and n_params > 0:
        meta.size_label = gguf.size_label(n_params, n_params, 0, 0)
    meta.set_gguf_meta_model(w)
    if isinstance(spec, hybrid.HybridSpec):
        hybrid.write_keys(w, spec, ftype)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        return
    w.add_context_length(2 ** 20)   # llama.cpp: arbitrary; the state does not grow with it
    w.add_embedding_length(spec.n_embd)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(spec.n_layer)
    w.add_ssm_conv_kernel(spec.d_conv)
    w.add_ssm_inner_size(spec.d_inner)
    w.add_ssm_state_size(spec.d_state)
    if spec.arch == "mamba":
        w.add_ssm_time_step_rank(spec.dt_rank)
        w.add_layer_norm_rms_eps(spec.eps)
        w.add_ssm_dt_b_c_rms(spec.dt_b_c_rms)
    else:
        w.add_ssm_time_step_rank(spec.n_head)
        w.add_ssm_group_count(spec.n_group)
        w.add_layer_norm_rms_eps(spec.eps)
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


class _Progress:
    """A tqdm bar on stderr when tqdm is installed, else `[k/n] name` lines; off: nothing."""

    def __init__(self, n: int, enabled: bool):
        self.n, self.k, self.bar, self.enabled = n, 0, None, enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=n, desc="converting", unit="tensor", file=sys.stderr,
                                leave=False)
            except ImportError:
                pass

    def step(self, name: str) -> None:
        self.k += 1
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(f"[{self.k}/{self.n}] {name}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
