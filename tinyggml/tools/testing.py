"""Small random Mamba-1 / Falcon-Mamba / Mamba-2 GGUF files for tests and benchmarks.

`write_random_model` writes the same keys, tensor names, shapes, dtypes and tensor order as
llama.cpp's `convert_hf_to_gguf.py` (`--outtype f32` / `--outtype f16`) writes for a
MambaForCausalLM / FalconMambaForCausalLM / Mamba2ForCausalLM checkpoint, plus a tiny valid
byte-level BPE vocab. tests/test_testing_writer.py checks the layout against the converter's
own files in ../shared/fixtures.

The weights are drawn to look like a trained model rather than HF's init (norm weights and
D not all one, conv bias not zero, a different A per element / head), so that a runtime that
skips any of them gets visibly different logits.

Only numpy and gguf are used: this module imports nothing from tinyggml and works without
the compiled backend.
"""
import itertools

import numpy as np
import gguf

# 2-D matmul weights that `--outtype f16` stores as F16; everything else stays F32
F16_WEIGHTS = ("token_embd.weight", "output.weight", "ssm_in.weight", "ssm_x.weight",
               "ssm_dt.weight", "ssm_out.weight")
CONTEXT_LENGTH = 2 ** 20      # what the converter writes for every Mamba model
EOT = "<|endoftext|>"


def _byte_symbols():
    """GPT-2's byte-level alphabet in code-point order: printable bytes first (they map to
    themselves), then the others, mapped to U+0100 and up (the tokenizer owns the table)."""
    from ..tokenizer import _byte_decoder
    return sorted(_byte_decoder())


def tiny_bpe_vocab(n_vocab):
    """A valid "gpt2" vocab of exactly n_vocab tokens.

    Layout: id 0 = <|endoftext|> (control; BOS = EOS = UNK = 0 as in the gpt-neox files),
    then byte symbols (all 256 once n_vocab >= 258), then merged pairs of byte symbols, each
    with its merge rule, then (past 65,793 tokens) triples: a pair merged with a symbol. There
    is always at least one merge: gguf-py drops an empty array, and llama.cpp refuses a gpt2
    vocab without a merges key.
    Returns: (tokens, token_types, merges)
    """
    if not 3 <= n_vocab <= 257 + 256 * 256 * 257:       # every pair, then every pair + symbol
        raise ValueError(f"n_vocab must be in [3, {257 + 256 * 256 * 257}], got {n_vocab}")
    n_merge = max(1, n_vocab - 257)
    byte_syms = _byte_symbols()[:n_vocab - 1 - n_merge]
    have = set(byte_syms)
    common = dict.fromkeys(c for c in "Ġetaoinshrdlucmfwypvbgkjqxz" + "".join(byte_syms)
                           if c in have)
    merges = list(itertools.islice(itertools.product(common, repeat=2), n_merge))
    pairs = [a + b for a, b in merges]
    merges += itertools.islice(itertools.product(pairs, common), n_merge - len(merges))
    tokens = [EOT] + byte_syms + [a + b for a, b in merges]
    types = [int(gguf.TokenType.CONTROL)] + [int(gguf.TokenType.NORMAL)] * (n_vocab - 1)
    assert len(tokens) == n_vocab == len(set(tokens))
    return tokens, types, [f"{a} {b}" for a, b in merges]


def write_tiny_vocab(writer, n_vocab):
    """tiny_bpe_vocab(n_vocab) as a GGUF "gpt2" tokenizer, BOS = EOS = 0."""
    tokens, types, merges = tiny_bpe_vocab(n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)


def inv_softplus(y):
    """x such that softplus(x) = log(1 + e^x) = y."""
    return y + np.log(-np.expm1(-y))


def _layer_tensors(rng, arch, n_embd, d_inner, d_state, d_conv, dt_rank, n_head, n_group):
    """One block's tensors in the converter's order (HF names sorted), numpy shapes."""
    def normal(*shape, std=1.0):
        return rng.standard_normal(shape) * std

    def linear(n_out, n_in):                     # in_proj / x_proj / out_proj: N(0, 1/fan_in)
        return normal(n_out, n_in, std=n_in ** -0.5)

    def dt_bias(n):                               # dt log-uniform in [1e-3, 1e-1]
        return inv_softplus(np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), n)))

    def norm_weight(*shape):                      # not all ones, and not kept positive
        return 1.0 + normal(*shape, std=0.3)

    t = {}
    if arch == "mamba":
        conv_ch = d_inner
        t["ssm_a"] = -np.exp(np.log(rng.uniform(1, 16, (d_inner, d_state))))
        t["ssm_d"] = rng.uniform(0.5, 1.5, d_inner)
    else:
        conv_ch = d_inner + 2 * n_group * d_state
        t["ssm_a"] = -np.exp(np.log(rng.uniform(1, 16, (n_head, 1))))
        t["ssm_d"] = rng.uniform(0.5, 1.5, (n_head, 1))
    t["ssm_conv1d.bias"] = normal(conv_ch, std=0.2)
    bound = d_conv ** -0.5                        # torch Conv1d default init, fan_in = d_conv
    t["ssm_conv1d.weight"] = rng.uniform(-bound, bound, (conv_ch, d_conv))
    if arch == "mamba":
        t["ssm_dt.bias"] = dt_bias(d_inner)
        t["ssm_dt.weight"] = rng.uniform(-dt_rank ** -0.5, dt_rank ** -0.5, (d_inner, dt_rank))
        t["ssm_in.weight"] = linear(2 * d_inner, n_embd)
        t["ssm_out.weight"] = linear(n_embd, d_inner)
        t["ssm_x.weight"] = linear(dt_rank + 2 * d_state, d_inner)
    else:
        t["ssm_dt.bias"] = dt_bias(n_head)
        t["ssm_in.weight"] = linear(2 * d_inner + 2 * n_group * d_state + n_head, n_embd)
        t["ssm_norm.weight"] = norm_weight(n_group, d_inner // n_group)
        t["ssm_out.weight"] = linear(n_embd, d_inner)
    t["attn_norm.weight"] = norm_weight(n_embd)
    return t


def write_random_model(path, arch, *, n_embd, n_layer, d_state, d_conv=4, expand=2,
                       dt_rank=None, head_dim=None, n_group=1, n_vocab, tied=True,
                       dt_b_c_rms=False, wtype="f32", seed=0, chat_template=None):
    """Write a random model to path and return its hparams.

    Args:
        arch: "mamba" (Mamba-1; with dt_b_c_rms=True, Falcon-Mamba) or "mamba2"
        dt_rank: Mamba-1 only; default ceil(n_embd / 16), as HF's "auto"
        head_dim: Mamba-2 only; default min(64, d_inner); n_head = d_inner / head_dim
        n_group: Mamba-2 only; must divide n_head
        tied: no output.weight, the LM head is token_embd
        wtype: "f32", or "f16" for the converter's `--outtype f16` layout
        seed: the same arguments and seed give the same file
        chat_template: a tokenizer.chat_template (Jinja2) to store, or None
    Returns: dict with n_embd, n_layer, d_inner, d_state, d_conv, eps, n_vocab, tied and
        dt_rank, dt_b_c_rms (mamba) or n_head, head_dim, n_group (mamba2)
    """
    if arch not in ("mamba", "mamba2"):
        raise ValueError(f"arch must be 'mamba' or 'mamba2', got {arch!r}")
    if wtype not in ("f32", "f16"):
        raise ValueError(f"wtype must be 'f32' or 'f16', got {wtype!r}")
    d_inner = expand * n_embd
    hp = dict(n_embd=n_embd, n_layer=n_layer, d_inner=d_inner, d_state=d_state,
              d_conv=d_conv, eps=1e-5, n_vocab=n_vocab, tied=tied)
    n_head = None
    if arch == "mamba":
        dt_rank = dt_rank or -(-n_embd // 16)
        hp.update(dt_rank=dt_rank, dt_b_c_rms=bool(dt_b_c_rms))
    else:
        if dt_b_c_rms:
            raise ValueError("dt_b_c_rms is a Mamba-1 (Falcon-Mamba) option")
        head_dim = head_dim or min(64, d_inner)
        if d_inner % head_dim or (d_inner // head_dim) % n_group:
            raise ValueError(f"d_inner {d_inner} must split into n_head heads of {head_dim} "
                             f"channels, n_head a multiple of n_group {n_group}")
        n_head = d_inner // head_dim
        hp.update(n_head=n_head, head_dim=head_dim, n_group=n_group)

    rng = np.random.default_rng(seed)
    tensors = {"token_embd.weight": rng.standard_normal((n_vocab, n_embd)) * 0.5}
    for il in range(n_layer):
        layer = _layer_tensors(rng, arch, n_embd, d_inner, d_state, d_conv, dt_rank,
                               n_head, n_group)
        tensors.update((f"blk.{il}.{name}", w) for name, w in layer.items())
    tensors["output_norm.weight"] = 1.0 + 0.3 * rng.standard_normal(n_embd)
    if not tied:
        tensors["output.weight"] = rng.standard_normal((n_vocab, n_embd)) * n_embd ** -0.5
    for name, w in tensors.items():
        base = name.split(".", 2)[2] if name.startswith("blk.") else name
        f16 = wtype == "f16" and base in F16_WEIGHTS
        tensors[name] = w.astype(np.float16 if f16 else np.float32)

    writer = gguf.GGUFWriter(str(path), arch)    # writes general.architecture
    writer.add_type("model")
    writer.add_name(f"tinyggml-random-{arch}")
    n_params = sum(w.size for w in tensors.values())
    writer.add_size_label(gguf.size_label(n_params, 0, 0, 0))
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(n_layer)
    writer.add_ssm_conv_kernel(d_conv)
    writer.add_ssm_inner_size(d_inner)
    writer.add_ssm_state_size(d_state)
    writer.add_ssm_time_step_rank(dt_rank if arch == "mamba" else n_head)
    if arch == "mamba2":
        writer.add_ssm_group_count(n_group)
    writer.add_layer_norm_rms_eps(hp["eps"])
    if arch == "mamba":
        writer.add_ssm_dt_b_c_rms(bool(dt_b_c_rms))
    file_type = gguf.LlamaFileType.MOSTLY_F16 if wtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_tiny_vocab(writer, n_vocab)
    writer.add_unk_token_id(0)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for name, w in tensors.items():
        writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hp


def rewrite_gguf(src, dst, *, arch=None, drop=(), replace=None, set_kv=None):
    """Copy GGUF `src` to `dst` with changes, to make damaged or unusual files for tests.

    Args:
        arch: a new general.architecture (keys keep their old prefix)
        drop: tensor names to leave out
        replace: {tensor name: numpy array (F32/F16), or (raw bytes array, GGMLQuantizationType)}
        set_kv: {key: (value, GGUFValueType)} to add or overwrite
    """
    reader = gguf.GGUFReader(str(src))
    replace, set_kv = replace or {}, set_kv or {}
    old_arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch or old_arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in set_kv:
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)
    for key, (value, vtype) in set_kv.items():
        writer.add_key_value(key, value, vtype)
    for t in reader.tensors:
        if t.name in drop:
            continue
        new = replace.get(t.name)
        if new is None:
            writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
        elif isinstance(new, tuple):
            writer.add_tensor(t.name, new[0], raw_dtype=new[1])
        else:
            writer.add_tensor(t.name, new)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


HYBRID_ARCHS = ("granitehybrid", "falcon-h1", "nemotron_h", "lfm2", "qwen35")


def hybrid_config(arch, *, pattern, n_embd, d_state=16, d_conv=4, d_inner=None, ssm_head_dim=16,
                  n_group=1, n_head=4, n_kv=2, head_dim=None, n_ff=None, n_vocab=300, rope=True,
                  rope_base=10000.0, scales=None, ssm_norm=True, tied=True, context_length=4096,
                  l_cache=3, n_rot=None):
    """Every size of a hybrid model (Mamba-2 layers beside attention layers), defaults filled in
    and checked; what hybrid_tensors and write_hybrid_keys take.

    Args:
        arch: "granitehybrid", "falcon-h1", "nemotron_h", "lfm2" or "qwen35"
        pattern: one character per layer, Nemotron-H's hybrid_override_pattern: "M" Mamba-2,
            "*" attention, "-" MLP only (nemotron_h). Granite: "M" / "*", each with a SwiGLU
            block; Falcon-H1: every layer has both mixers side by side (pattern gives n_layer);
            LFM2: "C" (short conv) / "*" (attention with q / k norms, rope NEOX), each with a
            SwiGLU block; Qwen3.5: "D" (gated delta rule) / "*" (gated attention, q / k norms,
            partial rope NEOX), each with a SwiGLU block
        l_cache: LFM2's short conv taps
        Qwen3.5's linear attention: d_state key head size, n_group key heads, ssm_head_dim
            value head size, d_inner / ssm_head_dim value heads; n_rot its rope dims
            (default head_dim / 4, the released models' share)
        d_inner: default 2 * n_embd; ssm_head_dim: the Mamba-2 head size
        n_head, n_kv, head_dim: attention heads, KV heads, head size (default n_embd / n_head)
        n_ff: the feed-forward size (default 2 * n_embd)
        rope: granitehybrid's rope.scaling.finetuned (Granite-4.0-H: False, Bamba: True);
            falcon-h1 always has rope (NEOX), nemotron_h never
        scales: granitehybrid's {"embedding_scale", "residual_scale", "attention_scale",
            "logit_scale"} (absent: not written, as the converter does for falsy values)
        ssm_norm: falcon-h1 only: False leaves out the gated norm's weight (mamba_rms_norm)
    """
    if arch not in HYBRID_ARCHS:
        raise ValueError(f"arch must be one of {HYBRID_ARCHS}, got {arch!r}")
    for il, c in enumerate(pattern):
        kinds = {"lfm2": "C*", "qwen35": "D*"}.get(arch, "M*-")
        if c not in kinds or (c == "-" and arch != "nemotron_h"):
            raise ValueError(f"layer {il}: kind {c!r} for {arch}")
    d_inner = d_inner or 2 * n_embd
    head_dim = head_dim or n_embd // n_head
    if d_inner % ssm_head_dim or (d_inner // ssm_head_dim) % n_group or n_head % n_kv:
        raise ValueError("inconsistent head sizes")
    return dict(arch=arch, pattern=pattern, n_embd=n_embd, n_layer=len(pattern), d_inner=d_inner,
                d_state=d_state, d_conv=d_conv, n_group=n_group, n_ssm_head=d_inner // ssm_head_dim,
                n_head=n_head, n_kv=n_kv, head_dim=head_dim, n_ff=n_ff or 2 * n_embd,
                n_vocab=n_vocab, eps=1e-5, rope=rope, rope_base=rope_base,
                scales=dict(scales or {}), ssm_norm=ssm_norm, tied=tied,
                context_length=context_length, l_cache=l_cache, n_rot=n_rot or head_dim // 4)


def hybrid_final_norm(arch: str) -> str:
    """The final norm's GGUF name (llama.cpp's converter names LFM2's `token_embd_norm`)."""
    return "token_embd_norm.weight" if arch == "lfm2" else "output_norm.weight"


def hybrid_tensors(rng, cfg):
    """(name, float64 array) of every tensor of hybrid model `cfg` (hybrid_config), in the
    converter's order, generated one block at a time (a big model never sits in memory)."""
    arch, n_embd = cfg["arch"], cfg["n_embd"]

    def linear(n_out, n_in):
        return rng.standard_normal((n_out, n_in)) * n_in ** -0.5

    def norm_weight(*shape):
        return 1.0 + 0.3 * rng.standard_normal(shape)

    yield "token_embd.weight", rng.standard_normal((cfg["n_vocab"], n_embd)) * 0.5
    hd, n_ff = cfg["head_dim"], cfg["n_ff"]
    for il, c in enumerate(cfg["pattern"]):
        t = {"attn_norm.weight": norm_weight(n_embd)}
        if c == "M" or arch == "falcon-h1":
            lt = _layer_tensors(rng, "mamba2", n_embd, cfg["d_inner"], cfg["d_state"], cfg["d_conv"],
                                None, cfg["n_ssm_head"], cfg["n_group"])
            del lt["attn_norm.weight"]
            if not cfg["ssm_norm"]:
                del lt["ssm_norm.weight"]
            t.update(lt)
        if c == "D":
            nk, dk, nv, di = cfg["n_group"], cfg["d_state"], cfg["n_ssm_head"], cfg["d_inner"]
            ch = 2 * nk * dk + di
            t["attn_qkv.weight"] = linear(ch, n_embd)
            t["attn_gate.weight"] = linear(di, n_embd)
            t["ssm_conv1d.weight"] = rng.uniform(-0.5, 0.5, (ch, cfg["d_conv"]))
            t["ssm_dt.bias"] = rng.normal(0.0, 1.0, nv)
            t["ssm_a"] = -rng.uniform(1.0, 16.0, nv)
            t["ssm_beta.weight"] = linear(nv, n_embd)
            t["ssm_alpha.weight"] = linear(nv, n_embd)
            t["ssm_norm.weight"] = norm_weight(di // nv)
            t["ssm_out.weight"] = linear(n_embd, di)
        if c == "C":
            t["shortconv.conv.weight"] = rng.standard_normal((n_embd, cfg["l_cache"])) * 0.5
            t["shortconv.in_proj.weight"] = linear(3 * n_embd, n_embd)
            t["shortconv.out_proj.weight"] = linear(n_embd, n_embd)
        if c == "*" and arch in ("lfm2", "qwen35"):
            t["attn_q_norm.weight"] = norm_weight(hd)
            t["attn_k_norm.weight"] = norm_weight(hd)
        if c == "*" or arch == "falcon-h1":      # Qwen3.5: each head's query, then its gate
            t["attn_q.weight"] = linear(cfg["n_head"] * hd * (2 if arch == "qwen35" else 1), n_embd)
            t["attn_k.weight"] = linear(cfg["n_kv"] * hd, n_embd)
            t["attn_v.weight"] = linear(cfg["n_kv"] * hd, n_embd)
            t["attn_output.weight"] = linear(n_embd, cfg["n_head"] * hd)
        if arch != "nemotron_h" or c == "-":
            if arch != "nemotron_h":
                norm = {"falcon-h1": "ffn_norm", "qwen35": "post_attention_norm.weight"}.get(arch, "ffn_norm.weight")
                t[norm] = norm_weight(n_embd)
                t["ffn_gate.weight"] = linear(n_ff, n_embd)
            t["ffn_up.weight"] = linear(n_ff, n_embd)
            t["ffn_down.weight"] = linear(n_embd, n_ff)
        for k in sorted(t):
            yield f"blk.{il}.{k}", t[k]
    yield hybrid_final_norm(arch), norm_weight(n_embd)
    if not cfg["tied"]:
        yield "output.weight", linear(cfg["n_vocab"], n_embd)


def write_hybrid_keys(writer, cfg):
    """The architecture keys llama.cpp's converter writes for hybrid model `cfg`."""
    arch, pattern = cfg["arch"], cfg["pattern"]
    writer.add_context_length(cfg["context_length"])
    writer.add_embedding_length(cfg["n_embd"])
    writer.add_block_count(cfg["n_layer"])
    writer.add_head_count(cfg["n_head"])
    if arch in ("falcon-h1", "qwen35"):
        writer.add_head_count_kv(cfg["n_kv"])
        writer.add_feed_forward_length(cfg["n_ff"])
    else:
        writer.add_head_count_kv([cfg["n_kv"] if c == "*" else 0 for c in pattern])
        if arch == "nemotron_h":
            writer.add_feed_forward_length([cfg["n_ff"] if c == "-" else 0 for c in pattern])
        else:
            writer.add_feed_forward_length(cfg["n_ff"])
    writer.add_key_length(cfg["head_dim"])
    writer.add_value_length(cfg["head_dim"])
    writer.add_rope_freq_base(cfg["rope_base"])
    if arch == "lfm2":
        writer.add_shortconv_l_cache(cfg["l_cache"])
        writer.add_layer_norm_rms_eps(cfg["eps"])
        return
    if arch == "qwen35":
        writer.add_rope_dimension_count(cfg["n_rot"])
        writer.add_rope_dimension_sections([cfg["n_rot"] // 4, cfg["n_rot"] // 8, cfg["n_rot"] // 8, 0])
        writer.add_layer_norm_rms_eps(cfg["eps"])
        writer.add_ssm_conv_kernel(cfg["d_conv"])
        writer.add_ssm_state_size(cfg["d_state"])
        writer.add_ssm_group_count(cfg["n_group"])
        writer.add_ssm_time_step_rank(cfg["n_ssm_head"])
        writer.add_ssm_inner_size(cfg["d_inner"])
        writer.add_array(f"{arch}.attention.recurrent_layers", [c == "D" for c in pattern])
        writer.add_full_attention_interval(4)
        return
    if arch == "granitehybrid":
        writer.add_rope_scaling_finetuned(bool(cfg["rope"]))
        for k, v in cfg["scales"].items():
            getattr(writer, f"add_{k}")(v)
    writer.add_ssm_conv_kernel(cfg["d_conv"])
    writer.add_ssm_inner_size(cfg["d_inner"])
    writer.add_ssm_state_size(cfg["d_state"])
    writer.add_ssm_time_step_rank(cfg["n_ssm_head"])
    writer.add_ssm_group_count(cfg["n_group"])
    if arch == "nemotron_h":
        writer.add_layer_norm_eps(cfg["eps"])
    else:
        writer.add_layer_norm_rms_eps(cfg["eps"])


def write_random_hybrid(path, arch, *, wtype="f32", seed=0, **sizes):
    """Write a random hybrid model with the keys and tensor names llama.cpp's converter writes
    for the arch, and return its hparams (hybrid_config's, whose arguments `sizes` are).
    wtype "f16" stores the 2-D projections as F16."""
    cfg = hybrid_config(arch, **sizes)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type("model")
    writer.add_name(f"tinyggml-random-{arch}")
    write_hybrid_keys(writer, cfg)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if wtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_tiny_vocab(writer, cfg["n_vocab"])
    for name, w in hybrid_tensors(rng, cfg):
        f16 = wtype == "f16" and w.ndim == 2 and not name.endswith(("ssm_conv1d.weight", "ssm_norm.weight",
                                                                     "shortconv.conv.weight"))
        writer.add_tensor(name, w.astype(np.float16 if f16 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return cfg
