"""Tokenizers built from GGUF metadata that agree exactly with llama.cpp (`src/llama-vocab.cpp`).

    tok = Tokenizer.from_gguf("model.gguf")        # or an open gguf.GGUFReader: never parse twice
    ids = tok.tokenize("Hello world")              # BOS added when the vocab asks for it
    text = tok.detokenize(ids)

Two vocab types, chosen by `tokenizer.ggml.model`:
- "llama" (SentencePiece BPE, byte fallback <0xNN>): the GGUF vocab is turned back into a
  sentencepiece `ModelProto` and the sentencepiece library runs the merges. Its rule (merge the
  adjacent pair whose joined piece has the highest score, leftmost first; bytes for characters
  that never become a piece) is llama.cpp's `llm_tokenizer_spm_session`.
- "gpt2" (byte-level BPE): an HF `tokenizers` BPE model built from tokens + merges, behind the
  regex pre-tokenizer llama.cpp picks for `tokenizer.ggml.pre` (`PRE_REGEXES`). Each regex splits
  the pieces of the previous one, keeping matched and unmatched text, as `unicode_regex_split` does.

What the libraries would do differently, and is done here the llama.cpp way:
1. Special tokens (`tokenizer_st_partition`). The text is first split on the texts of special
   tokens, longest first. User-defined tokens (type 4, e.g. gpt-neox's runs of spaces) are
   ALWAYS split out; control and unknown tokens only with parse_special=True. The libraries
   get only the plain-text fragments.
2. SPM space prefix. llama.cpp prepends " " to a fragment at the start of the text or right after
   a special token, so the proto has add_dummy_prefix off and we add the space ourselves.
3. SPM token types. llama.cpp may merge into any token whose text matches, and it never splits
   user-defined or unused tokens back, so every token except BYTE and the one UNKNOWN goes into
   the proto as NORMAL (sentencepiece would re-split UNUSED pieces and greedily pre-match
   USER_DEFINED ones).
4. Detokenization (`llama_detokenize(remove_special=false, unparse_special=special)`): per-token
   pieces joined as bytes. Control/unknown tokens render as "" unless special=True (the default
   special=False is what llama-completion prints: no "<|endoftext|>"); user-defined tokens render as their raw text; the
   first piece loses one leading space when add_space_prefix (SPM: "▁Hello" -> "Hello", but
   [BOS, "▁Hello"] -> " Hello", as in llama.cpp); gpt2 vocabs (but the qwen2 / qwen35
   pre-tokenizers') then get llama.cpp's `clean_spaces` passes (" ," -> ",", " ' " -> "'", " 's" -> "'s", ...), so detokenize is not
   an exact inverse of tokenize there. HF's ByteLevel decoder is not used: it cannot render
   user-defined tokens, which are stored as raw text.

Not modelled (no model tinyggml runs needs them): pre-tokenizers other than gpt-2, mpt, default,
llama3 (and its aliases: lfm2, falcon-h1, llama-bpe, ...), qwen2 and qwen35 (an unknown name
warns and uses default), the per-model lstrip/rstrip token attributes (phi-3,
jina), merges whose result is not a token (HF refuses them; llama.cpp would merge, then fall
back to bytes).
"""
from __future__ import annotations

import codecs
import os
import re
import sys
from itertools import repeat

from .errors import ModelLoadError, TinyGGMLError, check_utf8, shown

# tokenizer.ggml.token_type values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3_REGEX = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_REGEX = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp llm_tokenizer_bpe: LLAMA_VOCAB_PRE_TYPE_{GPT2, MPT, DEFAULT, LLAMA3, QWEN2, QWEN35}
PRE_REGEXES = {
    "gpt-2": [GPT2_REGEX],
    "mpt": [GPT2_REGEX],
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "llama3": [LLAMA3_REGEX],
    "qwen2": [QWEN2_REGEX],
    "qwen35": [QWEN35_REGEX],
}
# tokenizer.ggml.pre names llama.cpp reads as another's pre-tokenizer
PRE_ALIASES = {**dict.fromkeys(("llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                "midm-2.0", "lfm2", "jina-v5-nano"), "llama3"),
               **dict.fromkeys(("deepseek-r1-qwen", "kormo", "f2llmv2"), "qwen2")}
# what else a pre-tokenizer sets in llama.cpp (llama_vocab::impl::load): a word that is already a
# token is taken whole (ignore_merges), BOS added by default, clean_spaces on detokenize
IGNORE_MERGES, ADD_BOS, NO_CLEAN_SPACES = {"llama3"}, {"llama3"}, {"qwen2", "qwen35"}
# token texts llama.cpp treats as end of generation (and forces to control type)
EOG_TEXTS = frozenset(["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                       "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>"])
# llama.cpp clean_spaces (gpt2 vocabs), three passes over the joined text
CLEAN_SPACES = [(re.compile(r" ([?!.,])"), r"\1"), (re.compile(r" ' "), "'"),
                (re.compile(r" '(?=[sm]|re|ve)"), "'")]


def _byte_decoder() -> dict:
    """GPT-2 byte-level alphabet, inverted: symbol -> byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + k): b for k, b in enumerate(others)}}


def clean_spaces(text: str) -> str:
    for pattern, repl in CLEAN_SPACES:
        text = pattern.sub(repl, text)
    return text


class Tokenizer:
    """A llama.cpp-compatible tokenizer: `.model` ("llama" | "gpt2"), `.n_vocab`, `.bos_id`,
    `.eos_id`, `.unk_id` (int or None), `.add_bos`; see the module docstring."""

    def __init__(self, model: str, tokens: list, *, types=None, scores=None, merges=None,
                 pre=None, bos_id=None, eos_id=None, unk_id=None, pad_id=None, eot_id=None,
                 eom_id=None, add_bos=None, add_eos=None, add_space_prefix=None,
                 source: str = "<tokenizer>"):
        if model not in ("llama", "gpt2"):
            raise ModelLoadError(f"{source}: unsupported tokenizer model '{shown(model)}' (tinyggml "
                                f"supports 'llama' (SentencePiece) and 'gpt2' (byte-level BPE))")
        n = len(tokens)
        self.model, self.n_vocab, self.source = model, n, source
        # llama.cpp renames empty tokens, and refuses duplicates
        self.tokens = ([t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)] if "" in tokens
                       else list(tokens))
        self._ids = dict(zip(self.tokens, range(n)))
        if len(self._ids) != n:
            raise ModelLoadError(f"{source}: duplicate token texts in tokenizer.ggml.tokens")
        self.types = list(map(int, types)) if types is not None else [NORMAL] * n
        eog_texts = [self._ids[t] for t in EOG_TEXTS if t in self._ids]
        for i in eog_texts:
            self.types[i] = CONTROL

        def special(value, default):           # a key out of range falls back to the default
            for v in (value, default):
                if v is not None and 0 <= int(v) < n:
                    return int(v)
            return None
        spm = model == "llama"
        self.bos_id = special(bos_id, 1 if spm else 11)     # llama.cpp's defaults (gpt2: 11,
        self.eos_id = special(eos_id, 2 if spm else 11)     # a Falcon leftover)
        self.unk_id = special(unk_id, 0 if spm else None)
        self.pad_id = special(pad_id, None)
        pre = PRE_ALIASES.get(pre, pre)
        self.add_bos = bool((spm or pre in ADD_BOS) if add_bos is None else add_bos)
        self.clean_spaces = not spm and pre not in NO_CLEAN_SPACES
        self.add_eos = bool(False if add_eos is None else add_eos)
        self.add_space_prefix = bool(spm if add_space_prefix is None else add_space_prefix)
        if self.add_bos and self.bos_id is None:
            raise ModelLoadError(f"{source}: add_bos_token is true but there is no BOS token")
        eog = {self.eos_id, special(eot_id, None), special(eom_id, None), *eog_texts}
        self.eog_ids = frozenset(eog - {None})
        self.pre = pre
        if not spm and pre not in PRE_REGEXES:
            if pre is not None:
                print(f"tinyggml: {source}: unknown tokenizer.ggml.pre '{pre}', using "
                      f"llama.cpp's 'default' pre-tokenizer", file=sys.stderr)
            self.pre = "default"
        # special tokens for the partition, longest (in bytes) first; True = always split out
        kinds = {CONTROL: False, UNKNOWN: False, USER_DEFINED: True}
        others = [i for i, t in enumerate(self.types) if t != NORMAL]
        self._specials = sorted(((self.tokens[i], i, kinds[self.types[i]]) for i in others
                                 if self.types[i] in kinds), key=lambda s: -len(s[0].encode()))
        # as llama.cpp: one piece cache made with special=True (the other types' pieces now,
        # NORMAL ones on first use: most of a vocabulary is never shown); without special,
        # control and unknown tokens render as ""
        self._gpt2_bytes = _byte_decoder() if model == "gpt2" else None
        self._pieces: list = [None] * n
        for i in others:
            self._pieces[i] = self._make_piece(i)
        self._hidden = frozenset(i for i in others if self.types[i] in (CONTROL, UNKNOWN))
        if spm:
            self._sp = self._build_spm(scores)
        else:
            self._hf = self._build_bpe(merges)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path_or_reader) -> "Tokenizer":
        """From a GGUF path, an open reader (gguf_reader.GGUFReader or gguf.GGUFReader), or
        anything with a `.reader` (GGUFModel)."""
        from .gguf_reader import GGUFReader
        reader = getattr(path_or_reader, "reader", path_or_reader)
        if isinstance(reader, (str, os.PathLike)):
            path = os.fspath(reader)
            if not os.path.isfile(path):
                raise ModelLoadError(f"{path}: no such file")
            try:
                reader = GGUFReader(path)
            except Exception as e:
                raise ModelLoadError(f"{path}: not a readable GGUF file "
                                     f"({type(e).__name__}: {e})") from None
        source = str(getattr(reader.data, "filename", None) or "<GGUF reader>")

        def value(key):
            field = reader.fields.get(f"tokenizer.ggml.{key}")
            if field is None:
                return None
            try:
                return field.contents()
            except UnicodeDecodeError as e:
                raise ModelLoadError(f"{source}: tokenizer.ggml.{key} is not valid UTF-8 "
                                     f"({e.reason} at byte {e.start})") from None
        model, tokens = value("model"), value("tokens")
        if model is None or tokens is None:
            raise ModelLoadError(f"{source}: no tokenizer in this GGUF (tokenizer.ggml.model = "
                                f"{model!r}, tokenizer.ggml.tokens "
                                f"{'missing' if tokens is None else 'present'})")
        merges = value("merges")
        if model == "gpt2" and merges is None:
            raise ModelLoadError(f"{source}: gpt2 tokenizer without tokenizer.ggml.merges")

        # every key of the right kind (and arrays of the vocabulary's length) before any use
        def bad(key, what):
            return ModelLoadError(f"{source}: tokenizer.ggml.{key} {what}")
        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)   # noqa: E731
        # element checks by the set of element types (one C pass; bool is not int here)
        only = lambda v, types: isinstance(v, list) and set(map(type, v)) <= types  # noqa: E731
        if not isinstance(model, str):
            raise bad("model", f"is {type(model).__name__}, expected a string")
        if not tokens or not only(tokens, {str}):
            raise bad("tokens", "is not a non-empty array of strings")
        n = len(tokens)
        for key, kind, types in (("token_type", "integers", {int}),
                                 ("scores", "numbers", {int, float})):
            v = value(key)
            if v is not None and (not only(v, types) or len(v) != n):
                raise bad(key, f"is not an array of {n} {kind} (one per token)")
        if merges is not None and not only(merges, {str}):
            raise bad("merges", "is not an array of strings")
        ids = {}
        for key in ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id",
                    "eot_token_id", "eom_token_id"):
            v = value(key)
            if v is not None and not is_int(v):
                raise bad(key, f"is {type(v).__name__}, expected an integer")
            ids[key] = v
        flags = {}
        for key in ("add_bos_token", "add_eos_token", "add_space_prefix"):
            v = value(key)
            if v is not None and not isinstance(v, (bool, int)):
                raise bad(key, f"is {type(v).__name__}, expected a boolean")
            flags[key] = v
        pre = value("pre")
        if pre is not None and not isinstance(pre, str):
            raise bad("pre", f"is {type(pre).__name__}, expected a string")
        try:
            return cls(model, tokens, types=value("token_type"), scores=value("scores"),
                       merges=merges, pre=pre, bos_id=ids["bos_token_id"],
                       eos_id=ids["eos_token_id"], unk_id=ids["unknown_token_id"],
                       pad_id=ids["padding_token_id"], eot_id=ids["eot_token_id"],
                       eom_id=ids["eom_token_id"], add_bos=flags["add_bos_token"],
                       add_eos=flags["add_eos_token"], add_space_prefix=flags["add_space_prefix"],
                       source=source)
        except TinyGGMLError:
            raise
        except Exception as e:        # what the checks above cannot see (merges the BPE refuses)
            raise ModelLoadError(f"{source}: tokenizer metadata not usable "
                                 f"({type(e).__name__}: {e})") from None

    def _make_piece(self, i: int) -> bytes:
        """llama.cpp token_to_piece(special=True, lstrip=0) of token i, as raw bytes."""
        text, t, decoder = self.tokens[i], self.types[i], self._gpt2_bytes
        if t in (CONTROL, UNKNOWN, USER_DEFINED):
            return text.encode()
        if t == BYTE:
            return bytes([int(text[3:5], 16)])                       # "<0xNN>"
        if t != NORMAL:
            return b""                                              # unused / undefined
        if decoder is None:
            return text.replace("\u2581", " ").encode()             # SPM: ▁ is a space
        return b"".join(bytes([decoder[c]]) if c in decoder else      # as llama_decode_text
                        b"[UNK_BYTE_0x" + c.encode().hex().encode() + text.encode() + b"]"
                        for c in text)

    def _build_spm(self, scores):
        from sentencepiece import SentencePieceProcessor, sentencepiece_model_pb2 as pb
        P = pb.ModelProto.SentencePiece
        m = pb.ModelProto()
        m.trainer_spec.model_type = pb.TrainerSpec.BPE
        m.trainer_spec.vocab_size = self.n_vocab
        m.trainer_spec.byte_fallback = BYTE in self.types
        m.trainer_spec.bos_id = m.trainer_spec.eos_id = m.trainer_spec.pad_id = -1
        m.normalizer_spec.name = "identity"
        m.normalizer_spec.add_dummy_prefix = False           # added per fragment, see (2)
        m.normalizer_spec.remove_extra_whitespaces = False
        m.normalizer_spec.escape_whitespaces = True
        unk = next((i for i, t in enumerate(self.types) if t == UNKNOWN), None)
        scores = scores if scores is not None else [0.0] * self.n_vocab
        for i, (text, t) in enumerate(zip(self.tokens, self.types)):
            kind = P.BYTE if t == BYTE else P.UNKNOWN if i == unk else P.NORMAL   # see (3)
            m.pieces.add(piece=text, score=float(scores[i]), type=kind)
        if unk is None:                   # sentencepiece needs one; with bytes it never shows up
            m.pieces.add(piece="<tinyggml-no-unk>", score=0.0, type=P.UNKNOWN)
        m.trainer_spec.unk_id = self.n_vocab if unk is None else unk
        try:
            return SentencePieceProcessor(model_proto=m.SerializeToString())
        except Exception as e:
            raise ModelLoadError(f"{self.source}: SPM vocabulary rejected by sentencepiece: "
                                f"{e}") from None

    def _build_bpe(self, merges):
        from tokenizers import Regex, Tokenizer as HFTokenizer, models, pre_tokenizers
        # llama.cpp splits a merge at the first space after index 0 (no such space: ("", "")).
        # Real vocabularies have one space in every merge, not first: one split of them all.
        words = " ".join(merges).split(" ")
        if "" not in words and set(map(str.count, merges, repeat(" "))) <= {1}:
            pairs = list(zip(words[0::2], words[1::2]))
        else:
            pairs = [(m[:k], m[k + 1:]) if k > 0 else ("", "") for m in merges for k in (m.find(" ", 1),)]
        ignore = self.pre in IGNORE_MERGES
        try:                # HF refuses merges of non-tokens, which llama.cpp skips
            bpe = models.BPE(vocab=self._ids, merges=pairs, ignore_merges=ignore)
        except Exception:
            vocab = self._ids
            pairs = [(a, b) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
            bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore)
        hf = HFTokenizer(bpe)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in PRE_REGEXES[self.pre]]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        return hf

    # ---- text -> ids --------------------------------------------------------------------------
    def partition(self, text: str, parse_special: bool = False) -> list:
        """llama.cpp tokenizer_st_partition: text fragments (str) and special token ids (int)."""
        frags = [text] if text else []
        for tok_text, tid, always in self._specials:
            if not (always or parse_special) or tok_text not in text:
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or tok_text not in f:
                    out.append(f)
                    continue
                for k, part in enumerate(f.split(tok_text)):
                    if k:
                        out.append(tid)
                    if part:
                        out.append(part)
            frags = out
        return frags

    def tokenize(self, text: str, add_bos: bool | None = None,
                 parse_special: bool = False) -> list[int]:
        """Token ids of `text`. add_bos=None does what the vocab asks (llama.cpp add_special:
        BOS if add_bos_token, EOS if add_eos_token); False adds neither; True forces BOS."""
        if not isinstance(text, str):
            raise TinyGGMLError(f"tokenize takes a str, got {type(text).__name__}")
        check_utf8(text)
        frags = self.partition(text, parse_special)
        raw = [i for i, f in enumerate(frags) if isinstance(f, str)]
        if self.model == "llama":
            texts = [" " + frags[i] if self.add_space_prefix and (i == 0 or isinstance(
                frags[i - 1], int)) else frags[i] for i in raw]        # see (2)
            encoded = self._sp.encode(texts) if texts else []
        else:
            encoded = [e.ids for e in self._hf.encode_batch(
                [frags[i] for i in raw], add_special_tokens=False)]
        for i, ids in zip(raw, encoded):
            frags[i] = ids
        ids = [t for f in frags for t in ([f] if isinstance(f, int) else f)]
        if add_bos or (add_bos is None and self.add_bos):
            if self.bos_id is None:
                raise ModelLoadError(f"{self.source}: add_bos asked but the vocab has no BOS")
            ids.insert(0, self.bos_id)
        if add_bos is None and self.add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    # ---- ids -> text --------------------------------------------------------------------------
    def _check(self, tid) -> int:
        tid = int(tid)
        if not 0 <= tid < self.n_vocab:
            raise TinyGGMLError(f"token id {tid} out of range: vocabulary has "
                                f"{self.n_vocab} tokens")
        return tid

    def token_to_piece(self, id, special: bool = False) -> bytes:
        """Raw bytes of one token (llama.cpp token_to_piece, lstrip 0): may be part of a
        UTF-8 character; b"" for control tokens unless special=True."""
        tid = self._check(id)
        if not special and tid in self._hidden:
            return b""
        piece = self._pieces[tid]
        if piece is None:
            piece = self._pieces[tid] = self._make_piece(tid)
        return piece

    def detokenize(self, ids, special: bool = False) -> str:
        """Text of `ids` as llama.cpp's llama_detokenize(remove_special=False,
        unparse_special=special); invalid UTF-8 becomes U+FFFD."""
        data = [self.token_to_piece(t, special) for t in ids]
        if data and self.add_space_prefix and data[0][:1] == b" ":
            data[0] = data[0][1:]
        text = b"".join(data).decode("utf-8", errors="replace")
        return clean_spaces(text) if self.clean_spaces else text

    def is_eog(self, id) -> bool:
        """End of generation: EOS, EOT/EOM and llama.cpp's end-of-turn texts."""
        return int(id) in self.eog_ids

    def __repr__(self):
        return (f"Tokenizer({self.model}, n_vocab={self.n_vocab}, bos={self.bos_id}, "
                f"eos={self.eos_id}, add_bos={self.add_bos})")


class StreamDecoder:
    """Incremental detokenize: the pushes and the final flush concatenate to exactly
    tok.detokenize(ids, special). Incomplete UTF-8 is held back (never a U+FFFD mid-way), and for
    gpt2 vocabs the few characters clean_spaces might still change (a trailing " ", " '",
    " 'r" or " 'v") wait for the next token."""

    def __init__(self, tok: Tokenizer, special: bool = False, continuation: bool = False):
        """continuation=True: the ids continue a prompt, so the first token keeps its leading
        space (detokenize drops it only at the very start of a text)."""
        self.tok, self.special = tok, special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._first = not continuation
        self._pending = ""      # decoded text that clean_spaces may still change
        self._tail = ""         # the last 3 characters given out, before cleaning

    def push(self, id) -> str:
        piece = self.tok.token_to_piece(id, self.special)
        if self._first and self.tok.add_space_prefix and piece[:1] == b" ":
            piece = piece[1:]
        self._first = False
        text = self._pending + self._utf8.decode(piece)
        if not self.tok.clean_spaces:
            return text
        cut = len(text)     # clean_spaces never looks across a cut without these endings
        while cut and (self._tail + text[:cut]).endswith((" ", " '", " 'r", " 'v")):
            cut -= 1
        self._pending = text[cut:]
        self._tail = (self._tail + text[:cut])[-3:]
        return clean_spaces(text[:cut])

    def flush(self) -> str:
        text = self._pending + self._utf8.decode(b"", final=True)
        self._pending = ""
        return clean_spaces(text) if self.tok.clean_spaces else text
