"""Tokenizers against llama.cpp: its own vocab test vectors, the fixture vectors made with
llama-tokenize, the prompts of the reference runs, and the way back (detokenize). The tests at
the bottom build small GGUF vocabularies and need no fixtures.

Known, deliberate differences between detokenize(tokenize(text)) and text (llama.cpp does the same):
- gpt2 vocabs: llama.cpp's clean_spaces (" ?" -> "?", " 's" -> "'s", ...), so the way back is
  clean_spaces(text);
- SPM with BOS: llama.cpp strips the dummy-prefix space only from the first token, and with a
  BOS first that is the BOS, so [BOS, "▁Hello"] -> " Hello".
"""
import functools
import json
from pathlib import Path
import random
import time

import gguf
import numpy as np
import pytest

from conftest import FIXTURES, requires_fixtures
from tinyggml import TinyGGMLError
from tinyggml.gguf_file import GGUFModel
from tinyggml.tools.testing import rewrite_gguf, tiny_bpe_vocab, write_random_model
from tinyggml.tokenizer import StreamDecoder, Tokenizer, clean_spaces

TOK = FIXTURES / "tokenizers"
SEP = "\n__ggml_vocab_test__\n"
VECTORS = ["gpt-neox.vectors.json", "gpt-neox-mpt.vectors.json", "llama-spm.vectors.json",
           "spm4000.vectors.json"]
MIXED = ["naïve café 日本語のテキスト 한국어 Русский",
         "emoji: 😀🎉🚀 👍🏽 👨\u200d👩\u200d👧\u200d👦 🇺🇸",
         "math: ∑ x² ≤ ∞, α+β=γ",
         "it 's , ok ' ' done 're 've 'm ?! .",
         "\xa0nbsp\u200bzwsp\n\t  end  "]


@functools.lru_cache(maxsize=None)
def load(path) -> Tokenizer:
    """Parsing a 50k vocab GGUF takes ~2 s: once per file for the whole module."""
    return Tokenizer.from_gguf(FIXTURES / path)


def way_back(tok, text):
    """What llama.cpp's detokenize gives for the ids of `text` (see the module docstring)."""
    return clean_spaces(text) if tok.clean_spaces else text


def stream(tok, ids, **kw):
    dec = StreamDecoder(tok, **kw)
    chunks = [dec.push(i) for i in ids] + [dec.flush()]
    return chunks


# ---- llama.cpp's own vectors (models/ggml-vocab-*.gguf.inp/.out) ------------------------------
def read_vectors(prefix):
    """llama.cpp's test texts (<prefix>.inp) and their token ids (<prefix>.out)."""
    cases = Path(f"{prefix}.inp").read_text(encoding="utf-8").split(SEP)[:-1]
    lines = Path(f"{prefix}.out").read_text(encoding="utf-8").split("\n")[:-1]
    return cases, [[int(x) for x in line.split()] for line in lines]


def vector_mismatches(tok, cases, ids):
    """The texts whose tokenization differs from ids, and those whose ids do not come back."""
    bad = [text for text, want in zip(cases, ids) if tok.tokenize(text, add_bos=False) != want]
    back = [text for text, want in zip(cases, ids) if tok.detokenize(want) != way_back(tok, text)]
    return bad, back


@requires_fixtures
@pytest.mark.parametrize("vocab", ["ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"])
def test_ggml_vocab_vectors(vocab):
    cases, ids = read_vectors(TOK / vocab)
    assert len(cases) == len(ids) == 46
    bad, back = vector_mismatches(load(f"tokenizers/{vocab}"), cases, ids)
    assert bad == [], f"{len(bad)}/46 cases differ"
    assert back == []


# llama.cpp's vectors for the pre-tokenizers of the hybrids' vocabularies (models/ggml-vocab-*, at
# llama.cpp 0c1e570): llama-bpe is llama3's (LFM2, Falcon-H1 name it "lfm2", "falcon-h1"), qwen35
# Qwen3.5's; the qwen2 vectors run on the qwen35 vocab, which is the qwen2 one but for its name
REPO_TOK = Path(__file__).resolve().parent / "fixtures" / "tokenizers"


@functools.lru_cache(maxsize=None)
def repo_vocab(name, pre=None) -> Tokenizer:
    import lzma
    import tempfile
    data = lzma.decompress((REPO_TOK / f"ggml-vocab-{name}.gguf.xz").read_bytes())
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vocab.gguf"
        path.write_bytes(data)
        if pre is not None:
            rewrite_gguf(path, Path(d) / "pre.gguf",
                         set_kv={"tokenizer.ggml.pre": (pre, gguf.GGUFValueType.STRING)})
            path = Path(d) / "pre.gguf"
        return Tokenizer.from_gguf(str(path))


@pytest.mark.parametrize("vocab,vectors,pre", [("llama-bpe", "llama-bpe", None), ("qwen35", "qwen35", None),
                                               ("qwen35", "qwen2", "qwen2"), ("llama-bpe", "llama-bpe", "lfm2")])
def test_hybrid_pre_tokenizer_vectors(vocab, vectors, pre):
    cases, ids = read_vectors(REPO_TOK / f"ggml-vocab-{vectors}.gguf")
    assert len(cases) == len(ids) >= 46
    bad, back = vector_mismatches(repo_vocab(vocab, pre), cases, ids)
    assert bad == [], f"{len(bad)}/{len(cases)} cases differ: {bad[:3]}"
    assert back == []


def test_hybrid_pre_tokenizer_settings():
    """llama3's pre-tokenizer (and its aliases) adds BOS by default and cleans spaces; Qwen's
    do neither (llama.cpp's llama_vocab load)."""
    llama3, lfm2 = repo_vocab("llama-bpe"), repo_vocab("llama-bpe", "lfm2")
    qwen35, qwen2 = repo_vocab("qwen35"), repo_vocab("qwen35", "qwen2")
    assert (llama3.pre, lfm2.pre, qwen35.pre, qwen2.pre) == ("llama3", "llama3", "qwen35", "qwen2")
    assert llama3.clean_spaces and not qwen35.clean_spaces and not qwen2.clean_spaces
    assert qwen35.detokenize(qwen35.tokenize("it 's ok ?", add_bos=False)) == "it 's ok ?"


# ---- fixture vectors (llama-tokenize --no-bos --no-parse-special) ----------------------------
def vector_file(name):
    d = json.loads((TOK / name).read_text(encoding="utf-8"))
    vocab = d["vocab_file"].split()[0]          # "models/x.gguf (same vocab, ...)" -> the path
    return d, (vocab if (FIXTURES / vocab).exists() else f"tokenizers/{vocab}")


@requires_fixtures
@pytest.mark.parametrize("name", VECTORS)
def test_fixture_vectors(name):
    d, vocab = vector_file(name)
    tok = load(vocab)
    assert len(d["cases"]) == 40
    bad = [c["text"] for c in d["cases"]
           if tok.tokenize(c["text"], add_bos=d["add_bos"], parse_special=d["parse_special"])
           != c["ids"]]
    assert bad == [], f"{len(bad)}/40 cases differ"


@requires_fixtures
@pytest.mark.parametrize("name", VECTORS)
def test_fixture_vectors_way_back(name):
    d, vocab = vector_file(name)
    tok = load(vocab)
    for c in d["cases"]:
        assert tok.detokenize(c["ids"]) == way_back(tok, c["text"]), c["text"]
        assert "".join(stream(tok, c["ids"])) == way_back(tok, c["text"]), c["text"]


@requires_fixtures
def test_vocab_settings():
    neox, mpt = load("tokenizers/ggml-vocab-gpt-neox.gguf"), load("models/mamba1-tiny-f32.gguf")
    spm = load("models/mamba2-tiny-g2-spm-f32.gguf")
    llama = load("tokenizers/ggml-vocab-llama-spm.gguf")
    assert (neox.pre, mpt.pre) == ("default", "mpt")
    assert (mpt.model, mpt.n_vocab, mpt.bos_id, mpt.eos_id, mpt.unk_id, mpt.add_bos) == \
        ("gpt2", 50280, 0, 0, 0, False)
    assert (spm.model, spm.n_vocab, spm.bos_id, spm.eos_id, spm.unk_id, spm.add_bos) == \
        ("llama", 4000, 1, 2, 0, True)        # no add_bos key: llama.cpp's default
    assert llama.add_bos and llama.add_space_prefix
    assert mpt.is_eog(0) and spm.is_eog(2) and not spm.is_eog(1) and not mpt.is_eog(15)


# ---- the prompts of the reference runs (fixtures README, "Prompts") ---------------------------
@requires_fixtures
@pytest.mark.parametrize("ref, vocab, n", [
    ("mamba1-tiny", "models/mamba1-tiny-f32.gguf", 24),
    ("mamba2-tiny-g2-spm", "models/mamba2-tiny-g2-spm-f32.gguf", 24)])
def test_reference_prompts(ref, vocab, n):
    z = np.load(FIXTURES / "reference" / f"{ref}.ref.npz")
    tok = load(vocab)
    ids = tok.tokenize(str(z["prompt_text"]))       # add_bos default: BOS for SPM only
    assert ids == z["tokens"].tolist() and len(ids) == n
    for i in (0, 1):                                # the two-prompt case
        assert tok.tokenize(str(z[f"multi{i}_text"])) == z[f"multi{i}_tokens"].tolist()


# ---- special tokens ---------------------------------------------------------------------------
@requires_fixtures
def test_parse_special():
    tok = load("models/mamba1-tiny-f32.gguf")
    text = "a<|endoftext|>b"
    assert tok.tokenize(text, parse_special=True) == tok.tokenize("a") + [0] + tok.tokenize("b")
    assert 0 not in tok.tokenize(text)
    assert tok.detokenize(tok.tokenize(text, parse_special=True)) == "ab"     # control: ""
    assert tok.detokenize(tok.tokenize(text, parse_special=True), special=True) == text
    # user-defined tokens (gpt-neox's space runs) are split out even without parse_special
    assert tok.tokenize("a  b") == tok.tokenize("a") + [50276] + tok.tokenize("b")
    assert tok.detokenize(tok.tokenize("a  b")) == "a  b"


@requires_fixtures
def test_spm_special_and_leading_space():
    tok = load("tokenizers/ggml-vocab-llama-spm.gguf")
    hello = tok.tokenize("Hello", add_bos=False)
    assert tok.tokenize("Hello") == [1] + hello
    # after a special token the next text gets the dummy-prefix space again
    assert tok.tokenize("<s>Hello", add_bos=False, parse_special=True) == [1] + hello
    assert tok.tokenize("<s>", add_bos=False) != [1]
    assert tok.detokenize(hello) == "Hello"
    assert tok.detokenize([1] + hello) == " Hello"               # llama.cpp keeps it after BOS
    assert tok.detokenize([1] + hello, special=True) == "<s> Hello"
    assert tok.tokenize("") == [1] and tok.tokenize("", add_bos=False) == []


# ---- streaming --------------------------------------------------------------------------------
@requires_fixtures
@pytest.mark.parametrize("vocab", ["models/mamba1-tiny-f32.gguf",
                                   "models/mamba2-tiny-g2-spm-f32.gguf",
                                   "tokenizers/ggml-vocab-llama-spm.gguf"])
def test_stream_decoder(vocab):
    tok = load(vocab)
    for text in MIXED:
        ids = tok.tokenize(text)
        chunks = stream(tok, ids)
        assert "".join(chunks) == tok.detokenize(ids)
        assert not any("\ufffd" in c for c in chunks)
    # multi-byte characters really are split over tokens here
    assert any(not tok.token_to_piece(i).decode("utf-8", "ignore")
               for i in tok.tokenize("日本語 😀", add_bos=False))


@requires_fixtures
def test_speed_whole_book():
    tok = load("models/mamba1-tiny-f32.gguf")
    text = "\n".join(json.loads((TOK / "gpt-neox.vectors.json").read_text())["cases"][k]["text"]
                     for k in range(40)) * 150            # ~150 KB
    t = time.perf_counter()
    ids = tok.tokenize(text)
    assert time.perf_counter() - t < 5.0                   # ~0.1 s on an idle core
    assert tok.detokenize(ids) == clean_spaces(text)


# ---- no fixtures needed -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tiny.gguf"
    write_random_model(path, "mamba", n_embd=16, n_layer=1, d_state=4, n_vocab=300)
    return path


def test_tiny_gpt2_round_trip(tiny_gpt2):
    tok = Tokenizer.from_gguf(tiny_gpt2)
    assert (tok.model, tok.n_vocab, tok.pre, tok.bos_id, tok.eos_id, tok.add_bos) == \
        ("gpt2", 300, "gpt-2", 0, 0, False)
    assert tok.is_eog(0) and not tok.is_eog(5)
    for text in MIXED + ["", " ", "hello the world, tea time"]:
        ids = tok.tokenize(text)
        assert all(0 < i < 300 for i in ids)
        assert tok.detokenize(ids) == clean_spaces(text)
    tokens, _, merges = tiny_bpe_vocab(300)
    ids = tok.tokenize(" e")
    assert len(ids) == 1 and tokens[ids[0]] == "\u0120e" and "\u0120 e" in merges     # Ġe
    assert tok.tokenize("it 's , ok") != tok.tokenize("it's, ok")
    assert tok.detokenize(tok.tokenize("it 's , ok")) == "it's, ok"      # clean_spaces


def test_from_reader_and_model(tiny_gpt2):
    a = Tokenizer.from_gguf(tiny_gpt2)
    b = Tokenizer.from_gguf(gguf.GGUFReader(str(tiny_gpt2)))
    c = Tokenizer.from_gguf(GGUFModel(str(tiny_gpt2)))      # the runtime's own reader
    assert a.tokenize(MIXED[0]) == b.tokenize(MIXED[0]) == c.tokenize(MIXED[0])
    assert str(tiny_gpt2) in c.source


def test_stream_decoder_clean_spaces_fuzz(tiny_gpt2):
    """Random runs of the characters clean_spaces looks at, plus split multi-byte characters:
    the stream must match detokenize exactly, whatever the token boundaries."""
    tok = Tokenizer.from_gguf(tiny_gpt2)
    alphabet = [tok.tokenize(s) for s in [" ", "'", "s", "m", "r", "e", "v", "t", ",", ".", "?",
                                          "x", "é", "😀", "  ", " '"]]
    rng = random.Random(0)
    for _ in range(300):
        ids = [i for _ in range(rng.randrange(1, 25)) for i in rng.choice(alphabet)]
        chunks = stream(tok, ids)
        assert "".join(chunks) == tok.detokenize(ids)
        assert not any("\ufffd" in c for c in chunks)
    broken = tok.tokenize("😀")[:-1] + tok.tokenize("a")          # invalid UTF-8
    assert "".join(stream(tok, broken)) == tok.detokenize(broken) == "\ufffda"


def test_unknown_pre_falls_back_to_default(tiny_gpt2, tmp_path, capsys):
    odd = tmp_path / "odd.gguf"
    rewrite_gguf(tiny_gpt2, odd, set_kv={"tokenizer.ggml.pre": ("no-such-pre",
                                                                gguf.GGUFValueType.STRING)})
    tok = Tokenizer.from_gguf(odd)
    err = capsys.readouterr().err
    assert "no-such-pre" in err and err.count("\n") == 1 and tok.pre == "default"


def write_spm(path):
    """A tiny SPM vocab: unk, bos, eos, 256 byte tokens, then scored pieces."""
    pieces = {"\u2581": -10, "a": -10, "b": -10, "c": -10, "\u2581a": -2, "ab": -3,
              "\u2581ab": -1, "abc": -4}
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list(pieces)
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    w = gguf.GGUFWriter(str(path), "mamba2")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [float(s) for s in pieces.values()])
    w.add_token_types(types)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tokens


def test_tiny_spm(tmp_path):
    tokens = write_spm(tmp_path / "spm.gguf")
    tok = Tokenizer.from_gguf(tmp_path / "spm.gguf")
    assert (tok.model, tok.bos_id, tok.eos_id, tok.unk_id, tok.add_bos) == ("llama", 1, 2, 0, True)
    ids = tok.tokenize("ab cé", add_bos=False)
    # "▁ab▁cé": ▁+a (-2) first, then ▁a+b (-1); é is not a piece: bytes C3 A9
    assert [tokens[i] for i in ids] == ["\u2581ab", "\u2581", "c", "<0xC3>", "<0xA9>"]
    assert tok.detokenize(ids) == "ab cé"
    assert tok.tokenize("ab cé") == [1] + ids
    assert "".join(stream(tok, [1] + ids)) == tok.detokenize([1] + ids) == " ab cé"


# ---- errors -----------------------------------------------------------------------------------
def test_no_tokenizer_keys(tmp_path):
    path = tmp_path / "bare.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(TinyGGMLError, match="no tokenizer") as e:
        Tokenizer.from_gguf(path)
    assert str(path) in str(e.value)
    with pytest.raises(TinyGGMLError, match="no such file"):
        Tokenizer.from_gguf(tmp_path / "missing.gguf")


def test_unknown_model_and_bad_ids(tiny_gpt2, tmp_path):
    odd = tmp_path / "t5.gguf"
    rewrite_gguf(tiny_gpt2, odd, set_kv={"tokenizer.ggml.model": ("t5", gguf.GGUFValueType.STRING)})
    with pytest.raises(TinyGGMLError, match="'t5'") as e:
        Tokenizer.from_gguf(odd)
    assert str(odd) in str(e.value)
    tok = Tokenizer.from_gguf(tiny_gpt2)
    for bad in (300, -1):
        with pytest.raises(TinyGGMLError, match="out of range"):
            tok.detokenize([5, bad])
        with pytest.raises(TinyGGMLError, match="out of range"):
            tok.token_to_piece(bad)
    with pytest.raises(TinyGGMLError):
        tok.tokenize(b"bytes")


def test_irregular_merges_split_as_llama_cpp():
    """Merges are split at the first space after index 0 (llama.cpp), whichever path does it:
    one split of them all when every merge has one space, not first; one at a time otherwise.
    Merges that are not of tokens (or whose result is not one) are skipped either way."""
    tokens, types, merges = tiny_bpe_vocab(300)
    regular = Tokenizer("gpt2", tokens, types=types, merges=merges, pre="gpt-2")
    odd = ["nospace", " lead", "two  spaces", "Ġ e x", "e zzz", "trail "]
    for extra in (odd, odd[:1], odd[-1:], ["e zzz"]):
        # the odd merges ranked first: they must not shift or shadow the real ones
        tok = Tokenizer("gpt2", tokens, types=types, merges=extra + merges, pre="gpt-2")
        for text in MIXED + ["hello the world, tea time", " e"]:
            assert tok.tokenize(text) == regular.tokenize(text), (extra, text)
