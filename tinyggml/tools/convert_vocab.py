"""Tokenizer keys for the converter: the `tokenizer.*` GGUF metadata that llama.cpp's
convert_hf_to_gguf.py writes, read without transformers.

Where the vocab comes from, first match wins:
  1. `vocab_from=OTHER.gguf`: copy its tokenizer.* keys (llama.cpp's `_set_vocab_builtin`, which
     the gpt-neox checkpoints without tokenizer files get: tokens cut to n_vocab, pre "mpt").
  2. A SentencePiece model, `tokenizer.model` or mistral's `tokenizer.model.v3`
     (`_set_vocab_sentencepiece`: model "llama", pre "default", tokens/scores/types).
  3. `tokenizer.json` with a byte-level BPE (`_set_vocab_gpt2`: model "gpt2", merges, and the
     pre-tokenizer name found by hashing the tokenization of llama.cpp's check text).
     A BPE whose vocab is SentencePiece-escaped ('▁' for spaces, <0xNN> byte fallback: the
     first transformers export of Mamba-Codestral) is written as an SPM "llama" vocab instead;
     as "gpt2" llama.cpp would turn every '▁' into [UNK_BYTE_0xe29681▁...] pieces.
Special token ids and add_bos/add_eos come from gguf.SpecialVocab (tokenizer_config.json,
tokenizer.json, config.json), as in llama.cpp.
"""
from __future__ import annotations

import json
import re
import sys
from hashlib import sha256
from pathlib import Path

import gguf

from ..errors import TinyGGMLError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = (int(t) for t in gguf.TokenType)
SPM_FILES = ("tokenizer.model", "tokenizer.model.v3")

# llama.cpp's check text (convert_hf_to_gguf.py get_vocab_base_pre): the sha256 of str(ids) of
# its tokenization names the pre-tokenizer.
CHKTXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d"
          "\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333"
          " 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
          "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785"
          "\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
          "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a"
          "\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure?"
          " 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")
KNOWN_PRE = {
    # gpt-neox-20b (the Mamba / Falcon-Mamba tokenizer), mpt-7b. llama.cpp's table also lists
    # OLMo under this hash and its last match ("olmo") wins there; both select the same GPT-2
    # regex in llama.cpp. "mpt" is what its built-in gpt-neox vocab gets, as in the fixtures.
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "mpt",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    # the hybrids' tokenizers, as llama.cpp's table names them (its references: Falcon-H1-0.5B /
    # 1B / 7B / 34B-Base, LFM2.5-350M / 8B-A1B, Qwen3.5-9B-Instruct, MiniCPM-V-4_6 (qwen35),
    # Qwen3-Embedding-0.6B and Qwen1.5-7B (qwen2)); the tokenizer reads each as llama.cpp does
    "a6b57017d60e6edb4d88ecc2845188e0eb333a70357e45dcc9b53964a73bbae6": "falcon-h1",
    "60476e1243776c4fb1b993dbd7a5f15ac22f83c80afdf425fa5ae01c8d44ef86": "falcon-h1",
    "3eda48b4c4dc7de733d1a8b3e3b4a85243dbbf704da2ee9d42c6beced8897896": "falcon-h1",
    "48f8e02c0359c0bbdd82f26909171fac1c18a457bb47573ed1fe3bbb2c1cfd4b": "falcon-h1",
    "169bf0296a13c4d9b7672313f749eb36501d931022de052aad6e36f2bf34dd51": "lfm2",
    "9e454714343b69b99b71795c1d27a68c2a1d15dab111f4d353109f966af29da7": "lfm2",
    "d30d75d9059f1aa2c19359de71047b3ae408c70875e8a3ccf8c5fba56c9d8af4": "qwen35",
    "1444df51289cfa8063b96f0e62b1125440111bc79a52003ea14b6eac7016fd5f": "qwen35",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
}
_FIRST_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
               "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
_PER_TOKEN = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class Vocab:
    """What to write: model, pre, tokens, types, optional scores, and a SpecialVocab (merges,
    special ids, add_* flags, chat template) or, for vocab_from, the copied keys."""

    def __init__(self, model, pre, tokens, types, scores=None, special=None, copied=(),
                 source=""):
        self.model, self.pre, self.tokens, self.types = model, pre, tokens, types
        self.scores, self.special, self.copied, self.source = scores, special, list(copied), source

    def write(self, w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        if self.special is not None:
            self.special.add_to_gguf(w, quiet=True)
        for key, value, vtype, sub_type in self.copied:
            w.add_key_value(key, value, vtype, sub_type)


def load_vocab(hf_dir: Path, n_vocab: int, vocab_from=None, spm_ids_fallback=False) -> Vocab:
    """The vocab of checkpoint `hf_dir`, `n_vocab` tokens long (the padded vocab size)."""
    if vocab_from is not None:
        return vocab_from_gguf(Path(vocab_from), n_vocab)
    for fname in SPM_FILES:
        if (hf_dir / fname).is_file():
            return vocab_from_spm(hf_dir, hf_dir / fname, n_vocab, spm_ids_fallback)
    if (hf_dir / "tokenizer.json").is_file():
        return vocab_from_tokenizer_json(hf_dir, n_vocab)
    raise TinyGGMLError(
        f"{hf_dir}: no tokenizer (tokenizer.model, tokenizer.model.v3 or tokenizer.json). Pass "
        f"--vocab-from <a GGUF with the right tokenizer>; for the gpt-neox tokenizer of the "
        f"state-spaces and transformers Mamba models that is llama.cpp's "
        f"models/ggml-vocab-gpt-neox.gguf")


# ---- 1. another GGUF's tokenizer ------------------------------------------------------------

def vocab_from_gguf(path: Path, n_vocab: int) -> Vocab:
    """Copy the tokenizer.* keys of `path`: per-token arrays cut (or padded) to n_vocab, and a
    missing pre as llama.cpp's built-in vocabs get it ("mpt" for gpt2, else "default")."""
    if not path.is_file():
        raise TinyGGMLError(f"--vocab-from {path}: no such file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:      # the reader raises ValueError / struct errors on bad files
        raise TinyGGMLError(f"--vocab-from {path}: not a readable GGUF file ({e})") from None
    fields = {k: f for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
        if key not in fields:
            raise TinyGGMLError(f"--vocab-from {path}: no '{key}' key, not a tokenizer GGUF")
    model = fields["tokenizer.ggml.model"].contents()
    pre = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else (
        "mpt" if model == "gpt2" else "default")
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]) for i in
              fields["tokenizer.ggml.tokens"].data][:n_vocab]
    types = fields["tokenizer.ggml.token_type"].contents()[:n_vocab]
    scores = (fields["tokenizer.ggml.scores"].contents()[:n_vocab]
              if "tokenizer.ggml.scores" in fields else None)
    for i in range(len(tokens), n_vocab):   # shorter than the model: pad as get_vocab_base does
        tokens.append(f"[PAD{i}]".encode())
        types.append(UNUSED)
        if scores is not None:
            scores.append(-1000.0)
    copied = []
    for key in ["tokenizer.ggml.merges"] + [k for k in fields if k not in _FIRST_KEYS]:
        if key in fields:
            f = fields[key]
            sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            copied.append((key, f.contents(), f.types[0], sub))
    return Vocab(model, pre, tokens, types, scores, copied=copied, source=f"copied from {path}")


# ---- 2. SentencePiece model ------------------------------------------------------------------

def vocab_from_spm(hf_dir: Path, spm_path: Path, n_vocab: int, ids_fallback: bool) -> Vocab:
    """As llama.cpp's _create_vocab_sentencepiece: [PADi] placeholders, the model's pieces,
    added_tokens.json and tokenizer_config.json's added_tokens_decoder on top."""
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(spm_path))
    except (OSError, RuntimeError) as e:
        raise TinyGGMLError(f"{spm_path}: not a SentencePiece model ({e})") from None
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [UNUSED] * n_vocab
    for i in range(min(sp.vocab_size(), n_vocab)):
        tokens[i] = sp.IdToPiece(i).encode()
        scores[i] = sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else
                    UNUSED if sp.IsUnused(i) else BYTE if sp.IsByte(i) else NORMAL)
    if sp.vocab_size() > n_vocab:
        _warn(f"{spm_path}: {sp.vocab_size()} pieces, the model has {n_vocab}: extra ignored")
    added = _read_json(hf_dir / "added_tokens.json") or {}
    for text, i in added.items():
        if i < n_vocab:
            tokens[i], scores[i], types[i] = text.encode(), -1000.0, USER_DEFINED
    config = _read_json(hf_dir / "tokenizer_config.json") or {}
    for i, data in config.get("added_tokens_decoder", {}).items():
        i, text = int(i), data["content"]
        if i >= n_vocab:
            continue
        if data.get("special") or _looks_special(text):
            types[i] = CONTROL
        else:
            text, types[i] = text.replace("\u2581", " "), USER_DEFINED
        tokens[i], scores[i] = text.encode(), -1000.0
    special = gguf.SpecialVocab(hf_dir, n_vocab=len(tokens))
    if ids_fallback:    # mistral layout: no json names the special tokens; the model does
        for typ, i in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()),
                       ("pad", sp.pad_id())):
            if 0 <= i < n_vocab:
                special.special_token_ids.setdefault(typ, i)
    return Vocab("llama", "default", tokens, types, scores, special, source=str(spm_path))


# ---- 3. tokenizer.json -----------------------------------------------------------------------

def vocab_from_tokenizer_json(hf_dir: Path, n_vocab: int) -> Vocab:
    path = hf_dir / "tokenizer.json"
    tj = _read_json(path)
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise TinyGGMLError(f"{path}: tokenizer model {model.get('type')!r} is not supported "
                            f"(only BPE); pass --vocab-from <a GGUF with this tokenizer>")
    if is_spm_escaped(tj):
        return _spm_from_bpe_json(hf_dir, tj, n_vocab)
    return _gpt2_from_bpe_json(hf_dir, path, tj, n_vocab)


def is_spm_escaped(tj: dict) -> bool:
    """A SentencePiece vocab stored as a BPE: byte fallback, or more '▁' than 'Ġ' pieces."""
    vocab = tj["model"].get("vocab", {})
    n_spm = sum(1 for t in vocab if t.startswith("\u2581"))
    n_bytelevel = sum(1 for t in vocab if t.startswith("\u0120"))
    return bool(tj["model"].get("byte_fallback")) or n_spm > n_bytelevel


def _full_vocab(path: Path, tj: dict, n_vocab: int):
    """token -> id over the BPE vocab plus the added tokens (transformers' tokenizer.vocab)."""
    vocab = dict(tj["model"].get("vocab", {}))
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    vocab.update({a["content"]: i for i, a in added.items()})
    if vocab and max(vocab.values()) >= n_vocab:
        raise TinyGGMLError(f"{path}: token id {max(vocab.values())} does not fit the model's "
                            f"vocab of {n_vocab}")
    return {i: t for t, i in vocab.items()}, added


def _gpt2_from_bpe_json(hf_dir: Path, path: Path, tj: dict, n_vocab: int) -> Vocab:
    """As llama.cpp's get_vocab_base + _set_vocab_gpt2, with `tokenizers` for transformers."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    chkhsh = sha256(str(tok.encode(CHKTXT).ids).encode()).hexdigest()
    if chkhsh not in KNOWN_PRE:
        raise TinyGGMLError(
            f"{path}: BPE pre-tokenizer not recognized (llama.cpp check hash {chkhsh}; known: "
            f"gpt-neox/mpt, gpt-2, llama-bpe); pass --vocab-from <a GGUF with this tokenizer>")
    reverse, added = _full_vocab(path, tj, n_vocab)
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        text = reverse[i]
        if i in added:
            a = added[i]
            if not a.get("normalized", not a.get("special", False)):
                text = tok.decode(tok.encode(text, add_special_tokens=False).ids,
                                  skip_special_tokens=False)
            if a.get("special") or _looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)
    special = gguf.SpecialVocab(hf_dir, load_merges=True)
    return Vocab("gpt2", KNOWN_PRE[chkhsh], tokens, types, None, special, source=str(path))


def _spm_from_bpe_json(hf_dir: Path, tj: dict, n_vocab: int) -> Vocab:
    """A '▁'-escaped BPE as a llama (SPM) vocab. llama.cpp's SPM tokenizer merges the adjacent
    pair with the highest score, so a merged piece scores -(its merge rank): the BPE order."""
    path = hf_dir / "tokenizer.json"
    reverse, added = _full_vocab(path, tj, n_vocab)
    model = tj["model"]
    rank = {}
    for r, m in enumerate(model.get("merges", [])):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(left + right, r)
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [UNUSED] * n_vocab
    for i, text in reverse.items():
        score, typ = 0.0, NORMAL
        if text == model.get("unk_token"):
            typ = UNKNOWN
        elif i in added:
            if added[i].get("special") or _looks_special(text):
                typ = CONTROL
            else:
                text, typ, score = text.replace("\u2581", " "), USER_DEFINED, -1000.0
        elif _BYTE_PIECE.fullmatch(text):
            typ = BYTE
        else:   # pieces no merge makes (single characters) rank after every merge
            score = -float(rank.get(text, len(rank) + i))
        tokens[i], scores[i], types[i] = text.encode(), score, typ
    special = gguf.SpecialVocab(hf_dir, n_vocab=n_vocab)
    return Vocab("llama", "default", tokens, types, scores, special,
                 source=f"{path} ('\u2581'-escaped BPE written as SPM)")


# ---- helpers ---------------------------------------------------------------------------------

def _looks_special(text: str) -> bool:
    """llama.cpp's does_token_look_special: added tokens that ought to be control tokens."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise TinyGGMLError(f"{path}: cannot read JSON ({e})") from None


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)
