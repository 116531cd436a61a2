"""Random-weight GGUFs of real Mamba and hybrid sizes, for benchmarks (`tinyggml-cli make-model`).

Exactly the layout llama.cpp's converter writes (the same writer as tinyggml.testing, checked
against ../shared/fixtures by tests/test_testing_writer.py), with weight statistics like a trained
model's where they matter for the numerics: A from A_log = log(1..d_state) (Mamba-1, the S4D-real
init) or log U(1, 16) per head (Mamba-2), dt bias from the usual dt init (log-uniform in
[1e-3, 1e-1] through inverse softplus), D ~ U(0.5, 1.5), projections N(0, 1/fan_in).
Tensors are generated, converted and written one at a time, so a 7B model needs only one
tensor's worth of memory beyond the output file.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import TinyGGMLError
from .quantize import QTYPES

def _pattern(n_layer: int, attention: tuple, other: str = "M") -> str:
    """A hybrid's layer kinds: "*" (attention) at the given layers, `other` elsewhere ("M":
    Mamba-2, "C": LFM2's short conv)."""
    return "".join("*" if il in attention else other for il in range(n_layer))


PRESETS = {
    # fixture-sized models (../shared/fixtures) for smoke tests
    "mamba-tiny": dict(arch="mamba", n_embd=64, n_layer=2, d_state=16, n_vocab=50280),
    "mamba2-tiny": dict(arch="mamba2", n_embd=64, n_layer=2, d_state=32, head_dim=16,
                        n_group=1, n_vocab=50288),
    "mamba-130m": dict(arch="mamba", n_embd=768, n_layer=24, d_state=16, n_vocab=50280),
    "mamba-1.4b": dict(arch="mamba", n_embd=2048, n_layer=48, d_state=16, n_vocab=50280),
    "mamba2-130m": dict(arch="mamba2", n_embd=768, n_layer=24, d_state=128, head_dim=64,
                        n_group=1, n_vocab=50288),
    "mamba2-1.3b": dict(arch="mamba2", n_embd=2048, n_layer=48, d_state=128, head_dim=64,
                        n_group=1, n_vocab=50288),
    "mamba-codestral-7b": dict(arch="mamba2", n_embd=4096, n_layer=64, d_state=128, head_dim=64,
                               n_group=8, n_vocab=32768, tied=False),
    # hybrids, shaped like the released models' config.json (tools/testing.hybrid_config's
    # arguments): Granite-4.0-H-350M, -1B (attention at 4 of 32 / 40 layers, no position
    # embedding, tied), Falcon-H1-0.5B (attention and Mamba-2 side by side in all 36 layers,
    # no gated norm: mamba_rms_norm false)
    "granite-4.0-h-350m": dict(arch="granitehybrid", pattern=_pattern(32, (10, 13, 17, 27)),
                               n_embd=768, d_inner=1536, ssm_head_dim=32, d_state=128, n_group=1,
                               n_head=12, n_kv=4, head_dim=64, n_ff=2048, n_vocab=100352,
                               rope=False, context_length=32768,
                               scales=dict(embedding_scale=12.0, residual_scale=0.246,
                                           attention_scale=0.015625, logit_scale=3.0)),
    "granite-4.0-h-1b": dict(arch="granitehybrid", pattern=_pattern(40, (5, 15, 25, 35)),
                             n_embd=1536, d_inner=3072, ssm_head_dim=64, d_state=128, n_group=1,
                             n_head=12, n_kv=4, head_dim=128, n_ff=4096, n_vocab=100352,
                             rope=False, context_length=131072,
                             scales=dict(embedding_scale=12.0, residual_scale=0.22,
                                         attention_scale=0.0078125, logit_scale=6.0)),
    "falcon-h1-0.5b": dict(arch="falcon-h1", pattern="M" * 36, n_embd=1024, d_inner=1536,
                           ssm_head_dim=64, d_state=128, n_group=1, n_head=8, n_kv=2, head_dim=64,
                           n_ff=2048, n_vocab=32784, rope_base=1e11, ssm_norm=False, tied=False,
                           context_length=16384),
    # LFM2-350M / -1.2B: gated short convolutions with attention at 6 of 16 layers (GQA 8 kv
    # heads, q / k norms, rope NEOX), tied; feed-forward sizes as the converter derives them
    # (block_ff_dim 6656 / 12288 auto-adjusted to 4608 / 8192)
    "lfm2-350m": dict(arch="lfm2", pattern=_pattern(16, (2, 5, 8, 10, 12, 14), "C"), n_embd=1024,
                      n_head=16, n_kv=8, n_ff=4608, n_vocab=65536, rope_base=1e6, l_cache=3,
                      context_length=128000),
    "lfm2-1.2b": dict(arch="lfm2", pattern=_pattern(16, (2, 5, 8, 10, 12, 14), "C"), n_embd=2048,
                      n_head=32, n_kv=8, n_ff=8192, n_vocab=65536, rope_base=1e6, l_cache=3,
                      context_length=128000),
    # Qwen3.5-0.8B: gated delta rule in three layers of four (16 key and 16 value heads of 128),
    # gated attention (8 heads over 2 KV heads of 256, rope on 64 dims), tied
    "qwen3.5-0.8b": dict(arch="qwen35", pattern="DDD*" * 6, n_embd=1024, d_state=128, n_group=16,
                         d_inner=2048, ssm_head_dim=128, d_conv=4, n_head=8, n_kv=2, head_dim=256,
                         n_rot=64, n_ff=3584, n_vocab=248320, rope_base=1e7, context_length=262144),
}
# the types tinyggml writes: f32 first, then the quantizer's table (tools/quantize.py QTYPES)
TYPES = ("f32",) + tuple(t for t in QTYPES if t != "f32")


def _sizes(cfg: dict):
    arch, n_embd = cfg["arch"], cfg["n_embd"]
    d_inner = 2 * n_embd
    dt_rank = -(-n_embd // 16) if arch == "mamba" else None
    n_head = d_inner // cfg["head_dim"] if arch == "mamba2" else None
    return arch, n_embd, d_inner, dt_rank, n_head, cfg.get("n_group", 1)


def _tensors(cfg: dict, rng):
    """(name, float32 numpy array) in the converter's order, generated one block at a time."""
    from .testing import _layer_tensors
    arch, n_embd, d_inner, dt_rank, n_head, n_group = _sizes(cfg)
    yield "token_embd.weight", (rng.standard_normal((cfg["n_vocab"], n_embd), np.float32) * 0.5)
    for il in range(cfg["n_layer"]):
        layer = _layer_tensors(rng, arch, n_embd, d_inner, cfg["d_state"], 4, dt_rank, n_head,
                               n_group)
        if arch == "mamba":                       # S4D-real: A_log[c, n] = log(n + 1)
            layer["ssm_a"] = -np.tile(np.arange(1, cfg["d_state"] + 1, dtype=np.float64),
                                      (d_inner, 1))
        for name, w in layer.items():
            yield f"blk.{il}.{name}", w.astype(np.float32)
    yield "output_norm.weight", (1.0 + 0.3 * rng.standard_normal(n_embd)).astype(np.float32)
    if not cfg.get("tied", True):
        yield "output.weight", (rng.standard_normal((cfg["n_vocab"], n_embd), np.float32)
                                * n_embd ** -0.5)


def _shapes(cfg: dict) -> list:
    """(name, numpy shape) of every tensor, without generating the big ones."""
    from .testing import _layer_tensors
    arch, n_embd, d_inner, dt_rank, n_head, n_group = _sizes(cfg)
    one = _layer_tensors(np.random.default_rng(0), arch, n_embd, d_inner, cfg["d_state"], 4,
                         dt_rank, n_head, n_group)
    out = [("token_embd.weight", (cfg["n_vocab"], n_embd))]
    for il in range(cfg["n_layer"]):
        out += [(f"blk.{il}.{name}", w.shape) for name, w in one.items()]
    out.append(("output_norm.weight", (n_embd,)))
    if not cfg.get("tied", True):
        out.append(("output.weight", (cfg["n_vocab"], n_embd)))
    return out


def _hybrid_shapes(cfg: dict) -> list:
    """(name, numpy shape) of every tensor of a hybrid, generating one block of each kind."""
    from .testing import hybrid_final_norm, hybrid_tensors
    rng = np.random.default_rng(0)
    small = dict(cfg, n_vocab=1, pattern="".join(dict.fromkeys(cfg["pattern"])))
    by_kind = {}
    for name, arr in hybrid_tensors(rng, small):
        if name.startswith("blk."):
            il, rest = name[4:].split(".", 1)
            by_kind.setdefault(small["pattern"][int(il)], []).append((rest, arr.shape))
    vocab = (cfg["n_vocab"], cfg["n_embd"])
    out = [("token_embd.weight", vocab)]
    for il, c in enumerate(cfg["pattern"]):
        out += [(f"blk.{il}.{rest}", shape) for rest, shape in by_kind[c]]
    out.append((hybrid_final_norm(cfg["arch"]), (cfg["n_embd"],)))
    if not cfg["tied"]:
        out.append(("output.weight", vocab))
    return out


def make_model(preset: str, out: str, wtype: str = "f32", seed: int = 0, progress: bool = True,
               distinct_layers: int = 0) -> dict:
    """Write the random model `preset` to `out` in weight type `wtype`. distinct_layers = n > 0:
    layers n, n + 1, ... repeat the bytes of layers 0..n-1 (layer i those of i % n), so a large
    K-quant file takes minutes instead of hours to make (each layer still has its own bytes
    in the file: a benchmark reads as much memory as with distinct layers)."""
    import gguf
    from .quantize import quantize_tensor, target_type
    if preset not in PRESETS:
        raise TinyGGMLError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if wtype not in TYPES:
        raise TinyGGMLError(f"unknown type {wtype!r} (choose from {', '.join(TYPES)})")
    if distinct_layers < 0:
        raise TinyGGMLError(f"distinct_layers must be >= 0, got {distinct_layers}")
    from .testing import HYBRID_ARCHS, hybrid_config, hybrid_tensors, write_hybrid_keys, write_tiny_vocab
    cfg = dict(PRESETS[preset])
    arch = cfg["arch"]
    hybrid = arch in HYBRID_ARCHS
    if hybrid:
        cfg = hybrid_config(**cfg)
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    Q = gguf.GGMLQuantizationType
    base = Q[wtype.upper()]
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_type("model")
    w.add_name(f"tinyggml-random-{preset}")
    if hybrid:
        write_hybrid_keys(w, cfg)
    else:
        d_inner = 2 * cfg["n_embd"]
        w.add_context_length(1048576)
        w.add_embedding_length(cfg["n_embd"])
        w.add_feed_forward_length(0)
        w.add_head_count(0)
        w.add_block_count(cfg["n_layer"])
        w.add_ssm_conv_kernel(4)
        w.add_ssm_inner_size(d_inner)
        w.add_ssm_state_size(cfg["d_state"])
        w.add_ssm_time_step_rank(-(-cfg["n_embd"] // 16) if arch == "mamba" else d_inner // cfg["head_dim"])
        if arch == "mamba2":
            w.add_ssm_group_count(cfg["n_group"])
        w.add_layer_norm_rms_eps(1e-5)
        if arch == "mamba":
            w.add_ssm_dt_b_c_rms(False)
    ftype = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16"}.get(wtype, f"MOSTLY_{wtype.upper()}")
    if wtype in ("q4_k", "q5_k", "q3_k"):
        ftype += "_M"
    w.add_file_type(int(gguf.LlamaFileType[ftype]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_tiny_vocab(w, cfg["n_vocab"])
    w.add_unk_token_id(0)
    # tensor infos come before the data in a GGUF: shapes and types first, data streamed after
    plan = []
    for name, shape in (_hybrid_shapes(cfg) if hybrid else _shapes(cfg)):
        t, _ = target_type(name, shape[::-1], gguf.GGMLQuantizationType.F32, base,
                           cfg.get("tied", True))
        plan.append((name, shape, t))
    w.add_size_label(gguf.size_label(sum(int(np.prod(s)) for _, s, _ in plan), 0, 0, 0))
    rng_seed = np.random.SeedSequence(seed)
    try:
        for name, shape, t in plan:
            blck, size = gguf.GGML_QUANT_SIZES[t]
            row_bytes = shape[-1] // blck * size
            nbytes = int(np.prod(shape[:-1])) * row_bytes
            if t in (Q.F32, Q.F16):          # element shapes; other types give byte shapes
                w.add_tensor_info(name, shape, np.dtype(np.float32 if t == Q.F32 else np.float16),
                                  nbytes, raw_dtype=t)
            else:
                w.add_tensor_info(name, tuple(shape[:-1]) + (row_bytes,), np.dtype(np.uint8),
                                  nbytes, raw_dtype=t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        rng = np.random.default_rng(rng_seed)
        first = {}                            # distinct_layers: (layer, rest, type, shape) -> bytes
        for i, (name, arr) in enumerate(hybrid_tensors(rng, cfg) if hybrid else _tensors(cfg, rng)):
            t = plan[i][2]
            m = re.fullmatch(r"blk\.(\d+)\.(.+)", name) if distinct_layers else None
            key = (int(m.group(1)) % distinct_layers, m.group(2), t, tuple(plan[i][1])) if m else None
            if key in first:
                data = first[key]
            else:
                arr = np.asarray(arr, np.float32)
                data = arr if t == Q.F32 else quantize_tensor(arr, t)
                if key is not None:
                    first[key] = data
            w.write_tensor_data(data)
            if progress:
                print(f"\rmake-model: [{i + 1}/{len(plan)}] {name:<28s}", end="", file=sys.stderr,
                      flush=True)
        w.close()
        if progress:
            print(file=sys.stderr)
        os.replace(tmp, out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return dict(preset=preset, type=wtype, path=str(out), bytes=out.stat().st_size, **cfg)
