"""What the hybrid models share: Mamba-2 layers (models/mamba2.py) beside attention layers that
keep a KV cache, and feed-forward blocks. ref: llama.cpp src/llama-graph.cpp (build_attn,
build_ffn), src/models/graph-context-mamba.cpp.

Which layer is which comes from the GGUF: `{arch}.attention.head_count_kv` is a per-layer array,
0 for a recurrent layer (llama.cpp's is_recr); an architecture can refine that (Nemotron-H's
MLP-only layers). Attention (ggml order, n_t tokens of the ubatch):
    q {hd, n_head, n_t}, k, v {hd, n_kv, n_t} -> per-head RMS norms of q and k (LFM2) -> rope
    (when the model has it) -> k, v into the sequences' caches at their positions -> causal
    attention over the cache -> wo
grouped-query: query head h reads kv head h / (n_head / n_kv).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ops
from ..errors import ModelLoadError
from ..memory import HybridMemory
from ..tensor import F16, WEIGHT_TYPES, Tensor
from .common import GraphContext, HParams, name, weight
from .mamba2 import Mamba2HParams

SSM, ATTN, FFN, BOTH, CONV = "ssm", "attn", "ffn", "ssm+attn", "conv"   # layer kinds (BOTH:
                                        # Falcon-H1's mixers side by side; CONV: LFM2's short conv)


def per_layer(f, key: str, n_layer: int, default=None) -> list[int]:
    """A per-layer integer: an array of n_layer values (or of block_count values, when the file
    has prediction blocks after its n_layer decoder blocks: the first n_layer are read), or one
    value for every layer."""
    v = f.value(key)
    if v is None:
        if default is None:
            raise ModelLoadError(f"{f.path}: missing metadata key '{key}'")
        v = default
    if isinstance(v, (list, tuple)):
        n_file = f.get(f"{f.arch}.block_count", int, n_layer)
        ints = all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        if len(v) not in (n_layer, n_file) or not ints:
            raise ModelLoadError(f"{f.path}: key '{key}' should hold {n_layer} integers")
        return [int(x) for x in v[:n_layer]]
    return [f.get(key, int, default)] * n_layer


@dataclass(frozen=True, kw_only=True)
class AttnHParams(HParams):
    """What attention layers add to a model's hyperparameters (every hybrid has them; keyword
    fields, so that an architecture's own HParams can inherit them beside its positional ones)."""
    kinds: tuple = ()            # per layer: SSM, ATTN, BOTH, FFN (an MLP-only layer) or CONV
    attn_heads: int = 0
    kv_heads: int = 0
    head_dim_attn: int = 0
    n_rot: int = 0
    rope_type: int | None = None     # ops.ROPE_NORM / ROPE_NEOX, or None: no position embedding
    rope_base: float = 10000.0
    rope_freq_scale: float = 1.0
    n_ctx_train: int = 0
    n_ff: tuple = ()             # per layer (0: no feed-forward block)

    @staticmethod
    def read_attention(f, n_layer: int, kinds: list | None = None, rope_type: int | None = None) -> dict:
        """The attention keys. kinds: the layers' kinds, by default SSM where head_count_kv is 0
        and ATTN elsewhere."""
        a = f.arch
        if not 0 < n_layer <= 4096:
            raise ModelLoadError(f"{f.path}: block_count {n_layer}")
        kv = per_layer(f, f"{a}.attention.head_count_kv", n_layer)
        heads = per_layer(f, f"{a}.attention.head_count", n_layer)
        kinds = kinds or [SSM if n == 0 else ATTN for n in kv]
        att = [il for il in range(n_layer) if kinds[il] in (ATTN, BOTH)]
        # one attention shape for every attention layer (the KV cache's cells are alike)
        kvs, hs = {kv[il] for il in att}, {heads[il] for il in att}
        if len(kvs) > 1 or len(hs) > 1:
            raise ModelLoadError(f"{f.path}: attention layers of different head counts "
                                 f"({sorted(hs)} / kv {sorted(kvs)}) are not supported")
        n_h, n_kv = (hs.pop(), kvs.pop()) if att else (0, 0)
        n_embd = f.get(f"{a}.embedding_length", int)
        hd = f.get(f"{a}.attention.key_length", int, n_embd // n_h if n_h else 1)
        factor = f.get(f"{a}.rope.scaling.factor", float, 0.0)
        if f.get(f"{a}.attention.sliding_window", int, 0) > 0:
            raise ModelLoadError(f"{f.path}: sliding-window attention is not supported yet")
        if not f.get(f"{a}.attention.causal", bool, True):
            raise ModelLoadError(f"{f.path}: non-causal (embedding) models are not supported")
        return dict(kinds=tuple(kinds), attn_heads=n_h, kv_heads=n_kv, head_dim_attn=hd,
                    n_rot=f.get(f"{a}.rope.dimension_count", int, hd), rope_type=rope_type,
                    rope_base=f.get(f"{a}.rope.freq_base", float, 10000.0),
                    rope_freq_scale=1.0 / factor if factor else 1.0,
                    n_ctx_train=f.get(f"{a}.context_length", int, 4096),
                    n_ff=tuple(per_layer(f, f"{a}.feed_forward_length", n_layer, 0)))

    def check_attention(self, path: str):
        if self.attn_layers:
            if self.attn_heads <= 0 or self.kv_heads <= 0 or self.attn_heads % self.kv_heads:
                raise ModelLoadError(f"{path}: {self.attn_heads} attention heads over "
                                     f"{self.kv_heads} kv heads")
            if not 0 < self.head_dim_attn <= 1024 or self.n_rot % 2 or not 0 <= self.n_rot <= self.head_dim_attn:
                raise ModelLoadError(f"{path}: head size {self.head_dim_attn}, rope dims {self.n_rot}")
        if self.n_ctx_train <= 0:
            raise ModelLoadError(f"{path}: context_length {self.n_ctx_train}")

    @property
    def attn_layers(self) -> list[int]:
        return [il for il, k in enumerate(self.kinds) if k in (ATTN, BOTH)]

    def context_limit(self, n_ctx: int | None) -> int | None:
        if not self.attn_layers:
            return None
        n = self.n_ctx_train if n_ctx is None else int(n_ctx)
        if n < 1:
            raise ModelLoadError(f"n_ctx must be >= 1, got {n_ctx}")
        return n

    def kv_bytes_per_token(self, kv_type: int) -> int:
        return 2 * len(self.attn_layers) * self.head_dim_attn * self.kv_heads * (2 if kv_type == F16 else 4)


@dataclass(frozen=True)
class HybridHParams(Mamba2HParams, AttnHParams):
    """Mamba-2 layers beside attention layers (granitehybrid, falcon-h1, nemotron_h)."""

    @staticmethod
    def read_hybrid(f, kinds: list | None = None, rope_type: int | None = None) -> dict:
        """Mamba-2 and attention keys (kinds: see read_attention)."""
        a = f.arch
        d = dict(**Mamba2HParams.read_ssm(f), n_head=f.get(f"{a}.ssm.time_step_rank", int),
                 n_group=f.get(f"{a}.ssm.group_count", int, 1))
        return dict(**d, **AttnHParams.read_attention(f, d["n_layer"], kinds, rope_type))

    def check(self, path: str, positive: tuple = ()):
        super().check(path, positive)
        if self.n_head <= 0 or self.d_inner % self.n_head or self.n_group <= 0 or self.n_head % self.n_group:
            raise ModelLoadError(f"{path}: inconsistent Mamba-2 sizes: d_inner {self.d_inner}, "
                                 f"heads {self.n_head}, groups {self.n_group}")
        self.check_attention(path)

    @property
    def ssm_layers(self) -> list[int]:
        return [il for il, k in enumerate(self.kinds) if k in (SSM, BOTH)]

    @property
    def state_bytes_per_sequence(self) -> int:
        (a, b), (c, d, e) = self.state_shapes()
        return len(self.ssm_layers) * 4 * (a * b + c * d * e)


def hybrid_memory(hp: HybridHParams, n_seq_max: int, n_ctx: int | None = None, kv_type: int = F16):
    conv, ssm = hp.state_shapes()
    return HybridMemory(conv, ssm, hp.ssm_layers, (hp.head_dim_attn, hp.kv_heads), hp.attn_layers,
                        n_ctx or hp.n_ctx_train, n_seq_max, kv_type)


def optional(f, key: str, ne: tuple) -> Tensor | None:
    return weight(f, key, ne) if f.has(key) else None


def load_attention(f, hp: HybridHParams, w: dict, il: int, q_gate: bool = False):
    """wq / wk / wv (or a fused wqkv), wo, and their optional biases. q_gate: wq also gives each
    head's output gate (Qwen3.5), twice the query rows."""
    p, d = f"blk.{il}.", hp.n_embd
    nq, nk = hp.head_dim_attn * hp.attn_heads, hp.head_dim_attn * hp.kv_heads
    if f.has(p + "attn_qkv.weight"):
        if q_gate:
            raise ModelLoadError(f"{f.path}: layer {il}: a fused attn_qkv with an output gate is "
                                 f"not supported")
        w[f"{il}.wqkv"] = weight(f, p + "attn_qkv.weight", (d, nq + 2 * nk), WEIGHT_TYPES)
        w[f"{il}.wqkv_b"] = optional(f, p + "attn_qkv.bias", (nq + 2 * nk,))
    else:
        for n, m in (("q", nq * (2 if q_gate else 1)), ("k", nk), ("v", nk)):
            w[f"{il}.w{n}"] = weight(f, p + f"attn_{n}.weight", (d, m), WEIGHT_TYPES)
            w[f"{il}.w{n}_b"] = optional(f, p + f"attn_{n}.bias", (m,))
    for n in ("q", "k"):        # per-head RMS norms of queries and keys (LFM2, Qwen3.5)
        w[f"{il}.attn_{n}_norm"] = optional(f, p + f"attn_{n}_norm.weight", (hp.head_dim_attn,))
    if (w[f"{il}.attn_q_norm"] is None) != (w[f"{il}.attn_k_norm"] is None):
        raise ModelLoadError(f"{f.path}: layer {il} has one of attn_q_norm / attn_k_norm without "
                             f"the other")
    w[f"{il}.wo"] = weight(f, p + "attn_output.weight", (nq, d), WEIGHT_TYPES)
    w[f"{il}.wo_b"] = optional(f, p + "attn_output.bias", (d,))


def load_ffn(f, hp: HybridHParams, w: dict, il: int, gated: bool = True):
    """ffn_up, ffn_down (and ffn_gate for SwiGLU), with optional biases."""
    p, d, ff = f"blk.{il}.", hp.n_embd, hp.n_ff[il]
    if ff <= 0:
        raise ModelLoadError(f"{f.path}: layer {il} has a feed-forward block of length {ff}")
    for n, ne in (("up", (d, ff)), ("down", (ff, d))) + ((("gate", (d, ff)),) if gated else ()):
        w[f"{il}.ffn_{n}"] = weight(f, p + f"ffn_{n}.weight", ne, WEIGHT_TYPES)
        w[f"{il}.ffn_{n}_b"] = optional(f, p + f"ffn_{n}.bias", (ne[1],))


def _linear(ctx: GraphContext, key: str, x: Tensor) -> Tensor:
    y = ctx.mul_mat(ctx.w[key], x)
    b = ctx.w.get(key + "_b")
    return y if b is None else ops.add(y, b)


def attention(ctx: GraphContext, cur: Tensor, il: int, kq_scale: float, q_gate: bool = False) -> Tensor:
    """cur: {n_embd, n_t} (normed) => {n_embd, n_t}: the attention block of layer il. q_gate:
    wq gives each head's query and then its output gate; the output is gated by its sigmoid
    (Qwen3.5)."""
    hp = ctx.hp
    hd, nh, nkv, n_t = hp.head_dim_attn, hp.attn_heads, hp.kv_heads, cur.ne[1]
    if f"{il}.wqkv" in ctx.w:
        qkv = name(_linear(ctx, f"{il}.wqkv", cur), "wqkv", il)
        rs = qkv.nb[1]
        q = ops.view(qkv, (hd, nh, n_t), (4, hd * 4, rs), 0)
        k = ops.view(qkv, (hd, nkv, n_t), (4, hd * 4, rs), hd * nh * 4)
        v = ops.view(qkv, (hd, nkv, n_t), (4, hd * 4, rs), hd * (nh + nkv) * 4)
    else:
        if q_gate:
            qg = name(_linear(ctx, f"{il}.wq", cur), "Qcur_full", il)        # {2 hd nh, n_t}
            q = ops.view(qg, (hd, nh, n_t), (4, 2 * hd * 4, qg.nb[1]), 0)
            gate = ops.view(qg, (hd, nh, n_t), (4, 2 * hd * 4, qg.nb[1]), hd * 4)
        else:
            q = ops.reshape(name(_linear(ctx, f"{il}.wq", cur), "Qcur", il), hd, nh, n_t)
        k = ops.reshape(name(_linear(ctx, f"{il}.wk", cur), "Kcur", il), hd, nkv, n_t)
        v = ops.reshape(name(_linear(ctx, f"{il}.wv", cur), "Vcur", il), hd, nkv, n_t)
    if ctx.w.get(f"{il}.attn_q_norm") is not None:
        q = name(ops.rms_norm(q, hp.eps, ctx.w[f"{il}.attn_q_norm"]), "Qnorm", il)
        k = name(ops.rms_norm(k, hp.eps, ctx.w[f"{il}.attn_k_norm"]), "Knorm", il)
    if hp.rope_type is not None:
        pos = ctx.positions
        q = name(ops.rope(q, pos, hp.n_rot, hp.rope_type, hp.rope_base, hp.rope_freq_scale), "Qrope", il)
        k = name(ops.rope(k, pos, hp.n_rot, hp.rope_type, hp.rope_base, hp.rope_freq_scale), "Krope", il)
    kc, vc = ctx.memory.kv_leafs(il)
    ks = name(ops.kv_store(kc, k, ctx.seq_info, ctx.positions), "k_cache", il)
    vs = name(ops.kv_store(vc, v, ctx.seq_info, ctx.positions), "v_cache", il)
    o = name(ops.attn(q, ks, vs, ctx.seq_info, ctx.positions, kq_scale), "attn", il)
    if q_gate:
        o = name(ops.gate_sigmoid(o, gate), "attn_gated", il)
    return name(_linear(ctx, f"{il}.wo", ops.reshape(o, hd * nh, n_t)), "attn_out", il)


def pre_norm_layers(ctx: GraphContext, mixer) -> Tensor:
    """Embeddings -> n_layer x (h = x + mixer(ctx, rms_norm(x) * attn_norm, il); h +
    ffn(rms_norm(h) * ffn_norm)) -> final norm -> logits: LFM2's and Qwen3.5's layers."""
    hp, w = ctx.hp, ctx.w
    cur = ctx.embed()                                                   # {n_embd, n_t}
    for il in range(hp.n_layer):
        x = name(ops.rms_norm(cur, hp.eps, w[f"{il}.attn_norm"]), "attn_norm", il)
        cur = name(ops.add(mixer(ctx, x, il), cur), "ffn_inp", il)
        x = name(ops.rms_norm(cur, hp.eps, w[f"{il}.ffn_norm"]), "ffn_norm", il)
        cur = name(ops.add(ffn(ctx, x, il), cur), "l_out", il)
    return ctx.head(cur)


def ffn(ctx: GraphContext, cur: Tensor, il: int, act: str = "swiglu") -> Tensor:
    """{n_embd, n_t} => {n_embd, n_t}: down(silu(gate(x)) * up(x)) ("swiglu"), or
    down(relu(up(x))^2) ("relu_sqr")."""
    up = name(_linear(ctx, f"{il}.ffn_up", cur), "ffn_up", il)
    if act == "swiglu":
        h = ops.gate_silu(up, name(_linear(ctx, f"{il}.ffn_gate", cur), "ffn_gate", il))
    elif act == "relu_sqr":
        h = ops.relu_sqr(up)
    else:
        raise ValueError(act)
    return name(_linear(ctx, f"{il}.ffn_down", name(h, "ffn_act", il)), "ffn_out", il)
