"""Chat templates (Jinja2, as transformers renders them), stop strings, and conversations that
keep their state between turns: only new tokens evaluated, /regen, /save and /load."""
import re
import subprocess
import sys

import pytest

from tinyggml import Model
from tinyggml.chat import PLAIN, ChatTemplate, Conversation
from tinyggml.errors import TinyGGMLError
from tinyggml.generate import Generation
from tinyggml.sampling import SamplerParams
from tinyggml.tools.testing import write_random_model

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GREEDY = SamplerParams(temperature=0)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    kw = dict(n_embd=32, n_layer=2, d_state=8, head_dim=16, n_group=2, n_vocab=300)
    write_random_model(d / "plain.gguf", arch="mamba2", **kw)
    write_random_model(d / "chatml.gguf", arch="mamba2", chat_template=CHATML, **kw)
    return d


@pytest.fixture(scope="module")
def plain(paths):
    return Model(paths / "plain.gguf", n_threads=1)


@pytest.fixture(scope="module")
def chatml(paths):
    return Model(paths / "chatml.gguf", n_threads=1)


# ---- templates ------------------------------------------------------------------------------
def test_template_from_gguf_else_plain(plain, chatml):
    t = ChatTemplate.for_model(chatml)
    assert t.source == CHATML and t.stop == []
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]
    assert t.render(msgs) == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                              "<|im_start|>assistant\n")
    p = ChatTemplate.for_model(plain)
    assert p.source == PLAIN and p.stop == ["\nUser:"]
    assert p.render(msgs + [{"role": "assistant", "content": " yes"},
                            {"role": "assistant", "content": "no"}], add_generation_prompt=False) \
        == "S\n\nUser: hi\nAssistant: yes\nAssistant: no\n"


def test_template_features_as_transformers(plain, tmp_path):
    src = ("{% for m in messages %}{% if loop.index0 == 0 and m.role != 'user' %}"
           "{{ raise_exception('first message must be the user') }}{% endif %}"
           "{% if m.content == 'skip' %}{% continue %}{% endif %}"
           "{{ bos_token }}[{{ m | tojson }}]{% endfor %}\n   {% if add_generation_prompt %}>{% endif %}")
    f = tmp_path / "t.jinja"
    f.write_text(src)
    t = ChatTemplate.for_model(plain, str(f))
    out = t.render([{"role": "user", "content": "é"}, {"role": "user", "content": "skip"}])
    bos = plain.tokenizer.tokens[plain.tokenizer.bos_id]
    assert out == bos + '[{"role": "user", "content": "é"}]>'       # trim/lstrip blocks, no \u
    with pytest.raises(TinyGGMLError, match="first message must be the user"):
        t.render([{"role": "assistant", "content": "x"}])
    # OpenAI content parts are joined
    assert "ab" in t.render([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                         {"type": "text", "text": "b"}]}])


@pytest.mark.parametrize("src,msgs,match", [
    ("{% for %}", None, "not a valid Jinja2 template"),
    ("{{ messages.__class__.__mro__ }}", [{"role": "user", "content": "x"}], "rendering failed"),
    ("{{ 1 / 0 }}", [{"role": "user", "content": "x"}], "rendering failed"),
    (CHATML, [{"role": "wizard", "content": "x"}], "role"),
    (CHATML, [], "non-empty"),
    (CHATML, [{"role": "user", "content": 5}], "content"),
])
def test_template_errors_are_tinyggml_errors(src, msgs, match):
    with pytest.raises(TinyGGMLError, match=match):
        ChatTemplate(src).render(msgs)


def test_missing_template_file(plain, tmp_path):
    with pytest.raises(TinyGGMLError, match="cannot read the chat template"):
        ChatTemplate.for_model(plain, str(tmp_path / "none.jinja"))


# ---- stop strings -----------------------------------------------------------------------------
def _free_run(m, prompt, n):
    m.reset(5)
    g = Generation(m, m.tokenize(prompt), GREEDY, n, seq_id=5)
    return "".join(g), g


def test_stop_string_ends_the_reply_and_is_never_shown(plain):
    text, _ = _free_run(plain, "abc", 40)
    assert len(text) > 12
    stop = text[7:11]                         # a stop string somewhere inside the free run
    first = text.find(stop)
    plain.reset(5)
    g = Generation(plain, plain.tokenize("abc"), GREEDY, 40, seq_id=5, stop=["zzzz-never", stop])
    pieces = list(g)
    assert "".join(pieces) == text[:first] == g.reply
    assert g.timings.stop == "stop"
    assert g.text.startswith(text[:first] + stop)           # the state holds the whole tokens
    assert plain.n_past(5) == len(plain.tokenize("abc")) + len(g.tokens)
    assert all(stop not in p for p in pieces)


# ---- conversations ----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["plain", "chatml"])
def test_turns_evaluate_only_new_tokens(which, request):
    m = request.getfixturevalue(which)
    m.reset(0)
    c = Conversation(m, ChatTemplate.for_model(m), GREEDY, max_tokens=12, system="Be brief.")
    for i, turn in enumerate(["hello there", "and then?", "why so?"]):
        before = m.tokens(0)
        reply = "".join(c.send(turn))
        t = c.last.timings
        if i:
            # the earlier tokens stay (no rollback), and the prompt evaluated is exactly the
            # text the template puts after the last reply: its end of turn, the new turn, the
            # generation prompt
            assert m.tokens(0)[:len(before)] == before
            assert len(before) + t.prompt_tokens + t.gen_tokens == m.n_past(0)
            marked = [dict(x) for x in c.messages[:-1]]
            marked[-2]["content"] = "\ue000"
            after = c.template.render(marked).split("\ue000")[1]
            assert t.prompt_tokens == len(m.tokenize(after, add_bos=False, parse_special=True))
            assert t.prompt_tokens < len(before)
        assert c.messages[-1] == {"role": "assistant", "content": reply}


def test_regen_evaluates_nothing_and_matches(plain):
    plain.reset(0)
    c = Conversation(plain, ChatTemplate.for_model(plain), GREEDY, max_tokens=10)
    first = "".join(c.send("hello"))
    n = plain.n_past(0)
    again = "".join(c.regen())
    assert again == first and c.last.timings.prompt_tokens == 0 and plain.n_past(0) == n
    assert [m["role"] for m in c.messages] == ["user", "assistant"]
    sampled = Conversation(plain, ChatTemplate.for_model(plain), SamplerParams(seed=1, temperature=1.5),
                           max_tokens=10, seq_id=1)
    a = "".join(sampled.send("hello"))
    b = "".join(sampled.regen())              # the sampler moves on: another answer is allowed
    assert sampled.last.timings.prompt_tokens == 0 and isinstance(a + b, str)


def test_template_that_rewrites_history_rolls_back_exactly(plain):
    """A template that rewrites earlier replies cannot be continued: the whole rendering is
    tokenized and the sequence rolled back to what it shares with it."""
    trim = ("{% for m in messages %}{{ m.role }}: {{ m.content | upper }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")
    plain.reset(0)
    c = Conversation(plain, ChatTemplate(trim, bos_token="", eos_token=""), GREEDY, max_tokens=8)
    "".join(c.send("one"))
    "".join(c.send("two"))
    rendered = c.template.render(c.messages[:-1])
    expect = c.template.tokenize(plain, rendered, first=True)
    assert plain.tokens(0)[:len(expect)] == expect


def test_save_load_continues_exactly(plain, tmp_path):
    plain.reset(0)
    tmpl = ChatTemplate.for_model(plain)
    a = Conversation(plain, tmpl, GREEDY, max_tokens=10)
    "".join(a.send("first"))
    a.save(tmp_path / "c.chat")
    b = Conversation(plain, tmpl, GREEDY, max_tokens=10, seq_id=2)
    b.load(tmp_path / "c.chat")
    assert b.messages == a.messages
    ra, rb = "".join(a.send("second")), "".join(b.send("second"))
    assert ra == rb and a.last.timings.prompt_tokens == b.last.timings.prompt_tokens
    # damaged files are refused and leave the conversation as it was
    blob = (tmp_path / "c.chat").read_bytes()
    (tmp_path / "bad.chat").write_bytes(blob[:-40] + bytes(40))
    msgs = list(b.messages)
    with pytest.raises(TinyGGMLError, match="checksum"):
        b.load(tmp_path / "bad.chat")
    (tmp_path / "junk.chat").write_bytes(b"hello")
    with pytest.raises(TinyGGMLError, match="not a tinyggml chat file"):
        b.load(tmp_path / "junk.chat")
    assert b.messages == msgs


def cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "tinyggml.tools.cli", *map(str, args)],
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_cli_chat_session(paths, tmp_path):
    f = tmp_path / "s.chat"
    common = ["-m", paths / "chatml.gguf", "-n", 8, "--temp", 0, "-t", 1]
    r = cli("chat", *common, stdin=f"hello\nmore please\n/regen\n/save {f}\n/nope\nlast one\n")
    assert r.returncode == 0, r.stderr
    assert "> hello\n" in r.stdout and "> last one\n" in r.stdout       # piped turns echoed
    turns = [ln for ln in r.stderr.splitlines() if re.search(r"tinyggml: turn \d+:", ln)]
    assert len(turns) == 4 and "prompt 0 new tokens" in turns[2]          # /regen
    assert "unknown command '/nope'" in r.stderr and "saved the conversation" in r.stderr
    replies = r.stdout.split("> last one\n")[1]
    # a new process loads the session and answers the last turn exactly as the first did
    r2 = cli("run", "-cnv", *common, stdin=f"/load {f}\nlast one\n")
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.split("> last one\n")[1] == replies
    new = [ln for ln in r2.stderr.splitlines() if "turn 1:" in ln][0]
    old = turns[3]
    same = lambda ln: ln.split(": prompt ")[1].split(" in ")[0]     # noqa: E731
    assert same(new) == same(old)             # "N new tokens (M already in the state)"


def test_regen_with_a_seed_samples_anew(plain):
    plain.reset(0)
    c = Conversation(plain, ChatTemplate.for_model(plain), SamplerParams(seed=3, temperature=1.5),
                     max_tokens=12)
    first = "".join(c.send("hello"))
    again = "".join(c.regen())
    assert again != first                         # another draw, from the same prompt state
    plain.reset(0)
    c2 = Conversation(plain, ChatTemplate.for_model(plain), SamplerParams(seed=3, temperature=1.5),
                      max_tokens=12)
    assert "".join(c2.send("hello")) == first     # and reproducible from the seed


def test_an_unfinished_reply_is_closed_before_the_next_turn(plain):
    plain.reset(0)
    c = Conversation(plain, ChatTemplate.for_model(plain), GREEDY, max_tokens=12)
    it = c.send("one")
    next(it)                                      # the reader stops (Ctrl-C while printing)
    "".join(c.send("two"))
    assert [m["role"] for m in c.messages] == ["user", "assistant", "user", "assistant"]


def test_a_prompt_interrupted_midway_is_evaluated_whole_next_turn(plain, monkeypatch):
    """Ctrl-C inside the prompt's evaluation: the turn is dropped and the next one brings the
    sequence to exactly the conversation's tokens."""
    plain.reset(0)
    c = Conversation(plain, ChatTemplate.for_model(plain), GREEDY, max_tokens=6, system="Sys.")
    "".join(c.send("first"))
    real = plain.eval_batch
    calls = {"n": 0}

    def flaky(batch, logits="all"):
        calls["n"] += 1
        if calls["n"] == 1:                       # evaluate part of the prompt, then interrupt
            sid, toks = next(iter(batch.items()))
            real({sid: toks[:2]}, logits=logits)
            raise KeyboardInterrupt
        return real(batch, logits=logits)
    monkeypatch.setattr(plain, "eval_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        "".join(c.send("second"))
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant"]
    monkeypatch.setattr(plain, "eval_batch", real)
    "".join(c.send("third"))
    rendered = c.template.render(c.messages[:-1])
    expect = c.template.tokenize(plain, rendered, first=True)
    held = plain.tokens(0)
    # the state is the whole conversation: the first reply's tokens as generated, then the rest
    assert held[:len(held) - c.last.timings.gen_tokens][-5:] == expect[-5:]
    assert plain.detokenize(held).startswith(plain.detokenize(expect[:len(c.template.tokenize(
        plain, c.template.render(c.messages[:1]), first=True)) - 1]))


def test_text_that_is_not_unicode_is_refused(plain):
    with pytest.raises(TinyGGMLError, match="not valid Unicode"):
        plain.tokenize("ab\udcffcd")
    r = subprocess.run([sys.executable, "-m", "tinyggml.tools.cli", "run", "-m", str(plain.path),
                        "-p", "ab\udcffcd".encode("utf-8", "surrogateescape"), "-n", "2"],
                       capture_output=True, timeout=120)
    assert r.returncode == 1 and b"not valid UTF-8" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
