"""Float64 numpy reference for Mamba-1, Falcon-Mamba and Mamba-2 GGUF models.

This is the spec that the tinyggml graphs are checked against. It reads a GGUF with the
`gguf` package alone (it does not import tinyggml), dequantizes every tensor to float64 and
runs the recurrent form of each block one token at a time, so prefill and decode are the
same code and the state can be carried from one call to the next.

`RefModel(path, dtype=np.float32)` runs the same code in float32 throughout (weights, state,
every intermediate, the final norm and the LM head; `forward` checks its outputs' dtype): a
plain float32 evaluation, the yardstick for how close to float64 a float32 runtime can be
(tests/test_numerics.py, tools/numerics.py). Python float constants (eps, 1.0) do not widen
float32 arrays (NEP 50).

Glossary (code name: paper symbol):
    T: number of tokens                    (`L` in [1] Algorithm 2)
    d, n_embd: model width                 (`D` in [1] Algorithm 2)
    d_inner: expanded width, expand * d    (`ED` in [1] Algorithm 2)
    d_state: latent state size             (`N` in [1] Algorithm 2 / [2])
    d_conv: causal conv kernel width       (`conv1d` kernel in [1] Figure 3)
    dt_rank: rank of the delta projection  (`R` in [1] Section 3.6, `dt_rank` in [3])
    delta: input-dependent step size       (`Δ` in [1] Algorithm 2)
    A, B, C, D: SSM parameters             (`A`, `B`, `C`, `D` in [1] Algorithm 2)
    dA: exp(delta * A)                     (`Ā`, zero-order hold)
    dBx: delta * B * x                     (`B̄x`, the Euler step that [3] and llama.cpp use)
    h_ssm: recurrent SSM state             (`h` in [1] equation 2a)
    n_head, head_dim (Mamba-2)             (`H`, `P` in [2] Section 7)
    n_group (Mamba-2)                      (number of B/C groups, `G` in [2] Section 7.2)
    z: gate branch                         (the right branch of [1] Figure 3)

[1] Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
    arXiv 2312.00752.
[2] Dao & Gu, "Transformers are SSMs" (Mamba-2, SSD), arXiv 2405.21060.
[3] Official code: state-spaces/mamba `mamba_ssm/modules/mamba_simple.py` (`Mamba.step`) and
    `mamba_ssm/modules/mamba2.py` (`Mamba2.step`); the GGUF graphs are llama.cpp
    `src/models/mamba-base.cpp`.

Departures from the official code, all taken from llama.cpp / transformers:
- The pre-norm is Norm -> Mixer -> Add with the residual kept in full precision; the official
  code fuses Add -> Norm, which is the same function.
- Falcon-Mamba (`{arch}.ssm.dt_b_c_rms`) puts a weightless RMSNorm on dt, B and C, with the
  same epsilon as the block norms (GGUF stores only one).
- Mamba-2 uses the gated RMSNorm with norm_before_gate=False, one norm per group of
  d_inner / n_group channels: rmsnorm(y * silu(z)) * weight.
- GGUF stores A already as -exp(A_log) (rounded to float32).
"""
import functools
import os

import numpy as np
import gguf


class _Reader(gguf.GGUFReader):
    """gguf.GGUFReader, parsing through a plain ndarray view of its memmap.

    The reader parses every vocab string eagerly with several slices each, and np.memmap
    slicing is slow (__array_finalize__): a 50k-token vocab takes ~2 s, ~1 s this way.
    Everything else, including what the reader returns, is the stock reader's.
    """

    def _get(self, *args, **kwargs):
        memmap = self.data
        plain = self.__dict__.get("_plain")
        if plain is None:
            plain = self._plain = memmap.view(np.ndarray)
        self.data = plain
        try:
            return super()._get(*args, **kwargs)
        finally:
            self.data = memmap


@functools.lru_cache(maxsize=16)
def _open_cached(path, mtime_ns, size):
    return _Reader(path)


def open_gguf(path):
    """A GGUFReader for path, cached per (path, mtime, size): the tests open each fixture
    several times and parsing a 50k-token vocab takes about a second."""
    st = os.stat(path)
    return _open_cached(str(path), st.st_mtime_ns, st.st_size)


def _kv(reader, key, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def load_weights(path, dtype=np.float64):
    """Read a GGUF model file, every tensor dequantized and cast to `dtype`.

    Returns:
        arch: "mamba" (Mamba-1, Falcon-Mamba) or "mamba2"
        hparams: n_embd, n_layer, d_conv, d_inner, d_state, eps, n_vocab, tied (no output.weight),
            and dt_rank, dt_b_c_rms (mamba) or n_head, n_group, head_dim (mamba2)
        weights: {GGUF tensor name: `dtype` array}, numpy shape (ggml ne reversed)
    """
    reader = open_gguf(path)
    arch = _kv(reader, "general.architecture")
    if arch not in ("mamba", "mamba2"):
        raise ValueError(f"{path}: architecture {arch!r} is not mamba or mamba2")
    weights = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape))
        weights[t.name] = np.asarray(w, dtype=dtype).reshape(shape)
    hp = {
        "n_embd": _kv(reader, f"{arch}.embedding_length"),
        "n_layer": _kv(reader, f"{arch}.block_count"),
        "d_conv": _kv(reader, f"{arch}.ssm.conv_kernel"),
        "d_inner": _kv(reader, f"{arch}.ssm.inner_size"),
        "d_state": _kv(reader, f"{arch}.ssm.state_size"),
        "eps": float(_kv(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "n_vocab": weights["token_embd.weight"].shape[0],
        "tied": "output.weight" not in weights,
    }
    if arch == "mamba":
        hp["dt_rank"] = _kv(reader, "mamba.ssm.time_step_rank")
        hp["dt_b_c_rms"] = bool(_kv(reader, "mamba.ssm.dt_b_c_rms", False))
    else:
        hp["n_head"] = _kv(reader, "mamba2.ssm.time_step_rank")
        hp["n_group"] = _kv(reader, "mamba2.ssm.group_count", 1)
        hp["head_dim"] = hp["d_inner"] // hp["n_head"]
    return arch, hp, weights


def rmsnorm(x, weight, eps):
    """Args: x: shape (..., n), weight: shape (n,) or None (weightless norm)."""
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    # log(1 + e^x) without overflow; torch and ggml switch to x above 20 (a 2e-9 difference)
    return np.logaddexp(0.0, x)


def conv_step(conv_state, x, weight, bias):
    """One step of the causal depthwise conv1d, updating conv_state in place.

    Args:
        conv_state: shape (d_conv - 1, channels), the previous inputs, oldest first
        x: shape (channels,), the current input
        weight: shape (channels, d_conv), bias: shape (channels,)
    Returns: shape (channels,)
    """
    window = np.concatenate([conv_state, x[None, :]], axis=0)  # (d_conv, channels)
    conv_state[...] = window[1:]
    return np.einsum("kc,ck->c", window, weight) + bias


def _no_trace(name, value):
    pass


def mamba1_mixer(x, w, hp, st, trace=_no_trace):
    """One token through a Mamba-1 / Falcon-Mamba mixer. See [1] Figure 3, [3] `Mamba.step`.

    Args:
        x: shape (d,), the normalized residual stream
        w: this layer's weights, keyed by the part after "blk.N."
        st: {"conv": (d_conv - 1, d_inner), "ssm": (d_inner, d_state)}, updated in place
        trace: called with (name, value) for the intermediate values that the tinyggml graph
            names alike (ssm_in, ssm_conv, ...: RefModel.trace)
    Returns: shape (d,)
    """
    d_inner, d_state, dt_rank = hp["d_inner"], hp["d_state"], hp["dt_rank"]
    xz = w["ssm_in.weight"] @ x                                      # (2*d_inner,)
    trace("ssm_in", xz)
    x, z = xz[:d_inner], xz[d_inner:]
    x = silu(conv_step(st["conv"], x, w["ssm_conv1d.weight"], w["ssm_conv1d.bias"]))
    trace("ssm_conv", x)
    x_db = w["ssm_x.weight"] @ x                                     # (dt_rank + 2*d_state,)
    trace("ssm_x", x_db)
    dt = x_db[:dt_rank]
    B = x_db[dt_rank:dt_rank + d_state]
    C = x_db[dt_rank + d_state:]
    if hp["dt_b_c_rms"]:
        dt, B, C = (rmsnorm(v, None, hp["eps"]) for v in (dt, B, C))
        trace("dt_norm", dt), trace("b_norm", B), trace("c_norm", C)
    dt = w["ssm_dt.weight"] @ dt
    trace("ssm_dt", dt)
    dt = dt + w["ssm_dt.bias"]
    trace("ssm_dt_b", dt)
    delta = softplus(dt)                                             # (d_inner,)
    dA = np.exp(delta[:, None] * w["ssm_a"])                         # (d_inner, d_state)
    dBx = (delta * x)[:, None] * B[None, :]                          # (d_inner, d_state)
    st["ssm"][...] = dA * st["ssm"] + dBx
    y = st["ssm"] @ C + w["ssm_d"] * x                               # (d_inner,)
    trace("ssm_scan", y)
    y = y * silu(z)
    trace("ssm_gate", y)
    out = w["ssm_out.weight"] @ y
    trace("ssm_out", out)
    return out


def mamba2_mixer(x, w, hp, st, trace=_no_trace):
    """One token through a Mamba-2 mixer. See [2] Section 7, [3] `Mamba2.step`.

    Args:
        x: shape (d,), the normalized residual stream
        w: this layer's weights, keyed by the part after "blk.N."
        st: {"conv": (d_conv - 1, d_inner + 2*n_group*d_state),
             "ssm": (n_head, head_dim, d_state)}, updated in place
        trace: as mamba1_mixer's
    Returns: shape (d,)
    """
    d_inner, d_state = hp["d_inner"], hp["d_state"]
    n_head, n_group, head_dim = hp["n_head"], hp["n_group"], hp["head_dim"]
    n_bc = n_group * d_state
    zxbcdt = w["ssm_in.weight"] @ x               # (2*d_inner + 2*n_group*d_state + n_head,)
    trace("ssm_in", zxbcdt)
    z = zxbcdt[:d_inner]
    xbc = zxbcdt[d_inner:2 * d_inner + 2 * n_bc]
    dt = zxbcdt[2 * d_inner + 2 * n_bc:]
    xbc = silu(conv_step(st["conv"], xbc, w["ssm_conv1d.weight"], w["ssm_conv1d.bias"]))
    trace("ssm_conv", xbc)
    x = xbc[:d_inner].reshape(n_head, head_dim)
    B = xbc[d_inner:d_inner + n_bc].reshape(n_group, d_state)
    C = xbc[d_inner + n_bc:].reshape(n_group, d_state)
    group = np.arange(n_head) // (n_head // n_group)                # head h -> its B/C group
    B, C = B[group], C[group]                                        # (n_head, d_state)
    dt = dt + w["ssm_dt.bias"]
    trace("ssm_dt_b", dt)
    delta = softplus(dt)                                             # (n_head,)
    dA = np.exp(delta * w["ssm_a"][:, 0])                            # (n_head,) scalar A per head
    dBx = (delta[:, None] * x)[:, :, None] * B[:, None, :]           # (n_head, head_dim, d_state)
    st["ssm"][...] = dA[:, None, None] * st["ssm"] + dBx
    y = np.einsum("hpn,hn->hp", st["ssm"], C) + w["ssm_d"] * x       # (n_head, head_dim)
    trace("ssm_scan", y)
    g = (y.reshape(d_inner) * silu(z)).reshape(n_group, d_inner // n_group)
    if "ssm_norm.weight" in w:                   # absent: no gated norm (Falcon-H1's option)
        g = rmsnorm(g, None, hp["eps"]) * w["ssm_norm.weight"]       # per group of channels
        trace("ssm_norm", g)
    out = w["ssm_out.weight"] @ g.reshape(d_inner)
    trace("ssm_out", out)
    return out


class RefModel:
    """The whole model: embeddings, n_layer pre-norm residual blocks, final norm, LM head."""

    def __init__(self, path, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.arch, self.hparams, self.weights = load_weights(path, self.dtype)
        hp, w = self.hparams, self.weights
        self.layers = []
        for il in range(hp["n_layer"]):
            prefix = f"blk.{il}."
            self.layers.append({k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)})
        self.mixer = mamba1_mixer if self.arch == "mamba" else mamba2_mixer
        self.lm_head = w["token_embd.weight"] if hp["tied"] else w["output.weight"]
        # a dict here makes forward() record every named intermediate value, one row per
        # token, under the tinyggml graph's node names ("blk.0.ssm_in", ..., "result_norm"):
        # node-by-node comparisons (tools/numerics.py --nodes)
        self.trace = None

    def new_state(self):
        """Zero state, one {"conv", "ssm"} dict per layer; its size does not depend on T."""
        hp = self.hparams
        if self.arch == "mamba":
            conv_ch = hp["d_inner"]
            ssm_shape = (hp["d_inner"], hp["d_state"])
        else:
            conv_ch = hp["d_inner"] + 2 * hp["n_group"] * hp["d_state"]
            ssm_shape = (hp["n_head"], hp["head_dim"], hp["d_state"])
        return [{"conv": np.zeros((hp["d_conv"] - 1, conv_ch), self.dtype),
                 "ssm": np.zeros(ssm_shape, self.dtype)} for _ in range(hp["n_layer"])]

    def forward(self, tokens, state=None, logits=True):
        """Run tokens one after the other, continuing from (and updating) state.

        Args:
            tokens: shape (T,), token ids
            state: from new_state() or a previous forward(); None starts from zeros
            logits: False skips the LM head (returns None for them: T x n_vocab float64 is
                large for long prompts; take final_norm_hidden @ lm_head.T by rows instead)
        Returns:
            logits: shape (T, n_vocab)
            layer_hidden: shape (n_layer + 1, T, d), embeddings then each block's output
            final_norm_hidden: shape (T, d), input of the LM head
        """
        hp, w = self.hparams, self.weights
        if state is None:
            state = self.new_state()
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        layer_hidden = np.zeros((hp["n_layer"] + 1, len(tokens), hp["n_embd"]), self.dtype)
        rec = self.trace
        for t, tok in enumerate(tokens):
            h = w["token_embd.weight"][tok].copy()
            layer_hidden[0, t] = h
            for il, lw in enumerate(self.layers):
                x = rmsnorm(h, lw["attn_norm.weight"], hp["eps"])
                if rec is None:
                    h = h + self.mixer(x, lw, hp, state[il])
                else:
                    def trace(name, v, il=il):
                        rec.setdefault(f"blk.{il}.{name}", []).append(np.array(v).reshape(-1))
                    trace("attn_norm", x)
                    h = h + self.mixer(x, lw, hp, state[il], trace)
                    trace("l_out", h)
                layer_hidden[il + 1, t] = h
        assert h.dtype == self.dtype and state[0]["ssm"].dtype == self.dtype, "dtype widened"
        final = rmsnorm(layer_hidden[-1], w["output_norm.weight"], hp["eps"])
        out = final @ self.lm_head.T if logits else None
        assert final.dtype == self.dtype and (out is None or out.dtype == self.dtype)
        if rec is not None:
            rec.setdefault("result_norm", []).extend(final)
            if out is not None:
                rec.setdefault("result_output", []).extend(out)
        return out, layer_hidden, final

    def greedy(self, tokens, n_new, state=None):
        """Feed tokens, then n_new greedy steps. Returns (new token ids, their margins)."""
        if state is None:
            state = self.new_state()
        logits = self.forward(tokens, state)[0][-1]
        out, margins = [], []
        for _ in range(n_new):
            top2 = np.sort(logits)[-2:]
            out.append(int(np.argmax(logits)))
            margins.append(top2[1] - top2[0])
            logits = self.forward([out[-1]], state)[0][-1]
        return np.array(out), np.array(margins)
