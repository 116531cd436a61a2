"""An independent float64 numpy reference of the hybrid models (granitehybrid, falcon-h1,
nemotron_h, lfm2, qwen35), token by token: the spec the graphs in tinyggml/models are tested
against on files the tests write themselves (tools/testing.py write_random_hybrid). Attention
keeps every past key and value in plain lists; rope, softmax and the grouped-query heads are
written out here, not taken from tinyggml. The Mamba-2 mixer is mamba_np's.

Semantics are llama.cpp's (src/models/granite-hybrid.cpp, falcon-h1.cpp, nemotron-h.cpp,
lfm2.cpp, qwen35.cpp): the gated norm of Mamba-2 layers is per group, dt is not clamped,
Granite's multipliers are applied in the graph, Falcon-H1's were folded into the weights by
the converter, Qwen3.5's norms hold the 1 the converter added.
"""
import numpy as np
import gguf

from .mamba_np import _kv, mamba2_mixer, open_gguf, rmsnorm, silu


def rope(x, pos, n_rot, neox, base):
    """x: (heads, hd) rotated in place by position pos: pairs (2i, 2i+1), or (i, i + n_rot/2)."""
    half = n_rot // 2
    theta = pos * base ** (-np.arange(half) * 2.0 / n_rot)
    c, s = np.cos(theta), np.sin(theta)
    a = np.arange(half) if neox else np.arange(half) * 2
    b = a + half if neox else a + 1
    x0, x1 = x[:, a].copy(), x[:, b].copy()
    x[:, a] = x0 * c - x1 * s
    x[:, b] = x0 * s + x1 * c


class RefHybrid:
    def __init__(self, path):
        r = open_gguf(path)
        a = self.arch = _kv(r, "general.architecture")
        self.w = {}
        for t in r.tensors:
            w = gguf.quants.dequantize(t.data, t.tensor_type)
            self.w[t.name] = np.asarray(w, np.float64).reshape(tuple(int(n) for n in reversed(t.shape)))
        n_layer = _kv(r, f"{a}.block_count")

        def arr(key, default=0):
            v = _kv(r, key, default)
            return list(v) if isinstance(v, (list, tuple)) else [v] * n_layer

        kv, ff = arr(f"{a}.attention.head_count_kv"), arr(f"{a}.feed_forward_length")
        eps = _kv(r, f"{a}.attention.layer_norm_rms_epsilon") or _kv(r, f"{a}.attention.layer_norm_epsilon")
        d_inner, n_ssm = _kv(r, f"{a}.ssm.inner_size", 1), _kv(r, f"{a}.ssm.time_step_rank", 1)
        self.hp = dict(n_layer=n_layer, eps=float(eps), d_inner=d_inner, d_state=_kv(r, f"{a}.ssm.state_size"),
                       n_head=n_ssm, n_group=_kv(r, f"{a}.ssm.group_count"), head_dim=d_inner // n_ssm,
                       attn_heads=_kv(r, f"{a}.attention.head_count"), kv_heads=max(kv),
                       hd=_kv(r, f"{a}.attention.key_length") or _kv(r, f"{a}.embedding_length") // _kv(r, f"{a}.attention.head_count"), base=float(_kv(r, f"{a}.rope.freq_base", 10000.0)))
        if a == "falcon-h1":
            self.kinds = ["both"] * n_layer
        elif a == "nemotron_h":
            self.kinds = ["ssm" if k == 0 and f == 0 else "attn" if f == 0 else "mlp" for k, f in zip(kv, ff)]
        elif a == "lfm2":
            self.kinds = ["conv" if k == 0 else "attn" for k in kv]
        elif a == "qwen35":
            n_layer -= _kv(r, f"{a}.nextn_predict_layers", 0)
            self.hp["n_layer"] = n_layer
            self.kinds = ["delta" if rec else "attn" for rec in _kv(r, f"{a}.attention.recurrent_layers")[:n_layer]]
        else:
            self.kinds = ["ssm" if k == 0 else "attn" for k in kv]
        self.rope = {"granitehybrid": bool(_kv(r, f"{a}.rope.scaling.finetuned", True)),
                     "falcon-h1": True, "nemotron_h": False, "lfm2": True, "qwen35": True}[a]
        self.neox = a in ("falcon-h1", "lfm2", "qwen35")
        self.n_rot = _kv(r, f"{a}.rope.dimension_count", self.hp["hd"])
        self.final_norm = self.w["token_embd_norm.weight" if a == "lfm2" else "output_norm.weight"]
        self.es = float(_kv(r, f"{a}.embedding_scale", 0.0) or 1.0)
        self.rs = float(_kv(r, f"{a}.residual_scale", 0.0) or 1.0)
        ats = float(_kv(r, f"{a}.attention.scale", 0.0))
        self.kq = ats or self.hp["hd"] ** -0.5
        ls = float(_kv(r, f"{a}.logit_scale", 0.0))
        self.ls = 1.0 / ls if ls else 1.0
        self.lm_head = self.w.get("output.weight", self.w["token_embd.weight"])

    def layer(self, il):
        p = f"blk.{il}."
        return {k[len(p):]: v for k, v in self.w.items() if k.startswith(p)}

    def new_state(self):
        hp = self.hp
        if self.arch == "qwen35":
            dc, ch = self.w["blk.0.ssm_conv1d.weight"].shape[1], self.w["blk.0.ssm_conv1d.weight"].shape[0]
            dk, nv = hp["d_state"], hp["n_head"]
            return [{"conv": np.zeros((dc - 1, ch)), "S": np.zeros((nv, hp["d_inner"] // nv, dk)),
                     "k": [], "v": []} for _ in range(hp["n_layer"])]
        if self.arch == "lfm2":       # the short conv's state: the last L-1 values of B * x
            L = next(v.shape[1] for k, v in self.w.items() if k.endswith("shortconv.conv.weight"))
            return [{"conv": np.zeros((L - 1, self.w["token_embd.weight"].shape[1])), "k": [], "v": []}
                    for _ in range(hp["n_layer"])]
        ch = hp["d_inner"] + 2 * hp["n_group"] * hp["d_state"]
        dc = next((v.shape[1] for k, v in self.w.items() if k.endswith("ssm_conv1d.weight")), 4)
        return [{"conv": np.zeros((dc - 1, ch)), "ssm": np.zeros((hp["n_head"], hp["head_dim"], hp["d_state"])),
                 "k": [], "v": []} for _ in range(hp["n_layer"])]

    def attention(self, h, lw, st):
        hp = self.hp
        nh, nkv, hd = hp["attn_heads"], hp["kv_heads"], hp["hd"]
        q, gate = lw["attn_q.weight"] @ h, None
        if self.arch == "qwen35":                                # each head: query, then gate
            qg = q.reshape(nh, 2, hd)
            q, gate = qg[:, 0].copy(), qg[:, 1].reshape(-1)
        q = q.reshape(nh, hd)
        k = (lw["attn_k.weight"] @ h).reshape(nkv, hd)
        v = (lw["attn_v.weight"] @ h).reshape(nkv, hd)
        if "attn_q_norm.weight" in lw:                           # LFM2, Qwen3.5: per-head norms
            q = np.stack([rmsnorm(r, lw["attn_q_norm.weight"], hp["eps"]) for r in q])
            k = np.stack([rmsnorm(r, lw["attn_k_norm.weight"], hp["eps"]) for r in k])
        pos = len(st["k"])
        if self.rope:
            rope(q, pos, self.n_rot, self.neox, hp["base"])
            rope(k, pos, self.n_rot, self.neox, hp["base"])
        st["k"].append(k)
        st["v"].append(v)
        K, V = np.stack(st["k"]), np.stack(st["v"])               # (n_pos, nkv, hd)
        out = np.zeros((nh, hd))
        for head in range(nh):
            g = head // (nh // nkv)
            s = K[:, g] @ q[head] * self.kq
            p = np.exp(s - s.max())
            out[head] = (p / p.sum()) @ V[:, g]
        out = out.reshape(-1)
        if gate is not None:
            out = out / (1.0 + np.exp(-gate))
        return lw["attn_output.weight"] @ out

    def short_conv(self, h, lw, st):
        """LFM2: out_proj(C * conv(B * x)), B, C, x = in_proj(h); a causal depthwise conv of L taps
        over B * x (no bias, no activation), its last L-1 inputs kept in st["conv"]."""
        b, c, x = np.split(lw["shortconv.in_proj.weight"] @ h, 3)
        win = np.vstack([st["conv"], b * x])                   # (L, d): oldest first
        st["conv"] = win[1:]
        conv = (win * lw["shortconv.conv.weight"].T).sum(0)     # weight (d, L): tap j on win[j]
        return lw["shortconv.out_proj.weight"] @ (c * conv)

    def gated_delta(self, h, lw, st):
        """Qwen3.5's linear attention: qkv through a causal conv (+ SiLU), then per value head
        (its key head: head % n_k, the converter's tiled order) the delta rule on a d_v x d_k
        state, a per-head RMS norm, the SiLU gate of z, and out_proj."""
        hp = self.hp
        dk, nk, nv = hp["d_state"], hp["n_group"], hp["n_head"]
        dv = hp["d_inner"] // nv
        x = lw["attn_qkv.weight"] @ h
        win = np.vstack([st["conv"], x])                       # (d_conv, ch): oldest first
        st["conv"] = win[1:]
        x = silu((win * lw["ssm_conv1d.weight"].T).sum(0))
        q, k = x[:nk * dk].reshape(nk, dk), x[nk * dk:2 * nk * dk].reshape(nk, dk)
        v = x[2 * nk * dk:].reshape(nv, dv)
        q = q / np.sqrt((q * q).sum(1, keepdims=True) + 1e-6) / np.sqrt(dk)
        k = k / np.sqrt((k * k).sum(1, keepdims=True) + 1e-6)
        a = lw["ssm_alpha.weight"] @ h + lw["ssm_dt.bias"]
        decay = np.exp(lw["ssm_a"].reshape(-1) * np.log1p(np.exp(a)))
        beta = 1.0 / (1.0 + np.exp(-(lw["ssm_beta.weight"] @ h)))
        z = (lw["attn_gate.weight"] @ h).reshape(nv, dv)
        y = np.zeros((nv, dv))
        for hh in range(nv):
            S, kk, qq = st["S"][hh], k[hh % nk], q[hh % nk]     # S: (dv, dk)
            S *= decay[hh]
            S += np.outer((v[hh] - S @ kk) * beta[hh], kk)
            y[hh] = rmsnorm(S @ qq, lw["ssm_norm.weight"], hp["eps"]) * silu(z[hh])
        return lw["ssm_out.weight"] @ y.reshape(-1)

    def mlp(self, f, lw):
        up = lw["ffn_up.weight"] @ f
        if "ffn_gate.weight" in lw:
            return lw["ffn_down.weight"] @ (silu(lw["ffn_gate.weight"] @ f) * up)
        return lw["ffn_down.weight"] @ (np.maximum(up, 0) ** 2)

    def forward(self, tokens, state=None):
        """Logits (T, n_vocab) of tokens fed one by one, continuing `state` (updated)."""
        hp, eps = self.hp, self.hp["eps"]
        state = self.new_state() if state is None else state
        layers = [self.layer(il) for il in range(hp["n_layer"])]
        out = []
        for tok in np.asarray(tokens, np.int64).reshape(-1):
            x = self.w["token_embd.weight"][tok] * self.es
            for il, lw in enumerate(layers):
                h = rmsnorm(x, lw["attn_norm.weight"], eps)
                kind = self.kinds[il]
                if kind == "both":                                   # Falcon-H1
                    x = x + self.attention(h, lw, state[il]) + mamba2_mixer(h, lw, hp, state[il])
                elif kind == "ssm":
                    x = x + self.rs * mamba2_mixer(h, lw, hp, state[il])
                elif kind == "conv":
                    x = x + self.short_conv(h, lw, state[il])
                elif kind == "delta":
                    x = x + self.gated_delta(h, lw, state[il])
                elif kind == "attn":
                    x = x + self.rs * self.attention(h, lw, state[il])
                else:                                                # Nemotron-H MLP layer
                    x = x + self.mlp(h, lw)
                if self.arch != "nemotron_h":
                    norm = lw.get("ffn_norm.weight", lw.get("ffn_norm", lw.get("post_attention_norm.weight")))
                    x = x + self.rs * self.mlp(rmsnorm(x, norm, eps), lw)
            out.append(rmsnorm(x, self.final_norm, eps) @ self.lm_head.T * self.ls)
        return np.array(out)
