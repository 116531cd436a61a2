"""Chat: a GGUF's chat template rendered with Jinja2 as Hugging Face renders it, and a
conversation that keeps its sequence's state between turns.

    tmpl = ChatTemplate.for_model(model)                 # tokenizer.chat_template, or PLAIN
    text = tmpl.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True)

    chat = Conversation(model, tmpl, SamplerParams(temperature=0))
    for piece in chat.send("Hi"): print(piece, end="")  # evaluates only the new turn's tokens

Rendering follows transformers' apply_chat_template: a sandboxed, immutable Jinja2
environment with trim_blocks and lstrip_blocks, the loop-controls extension, a `tojson` that
keeps non-ASCII text, and the globals `raise_exception` and `strftime_now`; the template sees
`messages`, `add_generation_prompt`, `bos_token` and `eos_token`. Message content given as a
list of OpenAI parts ({"type": "text", "text": ...}) is joined into one string first.

A turn is evaluated incrementally, as llama-cli does: the sequence keeps the reply's tokens as
the model wrote them, and only the text the template puts after the reply (the end of its
turn, the new user turn, the generation prompt) is tokenized and evaluated. When the template
rewrites earlier turns (trims them, drops them), the whole rendering is tokenized instead and
the sequence is rolled back to the longest prefix it shares with it.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import replace
from datetime import datetime

from .errors import TinyGGMLError

# For models whose file has no tokenizer.chat_template: plain "Role: text" lines, which base
# models continue sensibly; a reply ends at the model's end-of-text or at the next "User:". A
# reply that starts with a space or a newline (as the model wrote it after "Assistant:") is
# rendered as it is, so that the rendering reproduces the text the sequence holds.
PLAIN = ("{% for m in messages %}"
         "{% if m.role == 'system' %}{{ m.content }}\n\n"
         "{% elif m.role == 'user' %}User: {{ m.content }}\n"
         "{% elif m.content[:1] in [' ', '\\n'] %}Assistant:{{ m.content }}\n"
         "{% else %}Assistant: {{ m.content }}\n{% endif %}"
         "{% endfor %}"
         "{% if add_generation_prompt %}Assistant:{% endif %}")
PLAIN_STOP = ["\nUser:"]
ROLES = ("system", "user", "assistant", "tool")


class TemplateException(TinyGGMLError):
    """The template refused the messages (its raise_exception), e.g. roles that do not
    alternate."""


def _raise_exception(message):
    raise TemplateException(f"chat template: {message}")


def _tojson(value, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


def content_text(content) -> str:
    """A message's content as one string: OpenAI's list of parts is joined (text parts only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                raise TinyGGMLError("message content parts must be {\"type\": \"text\", \"text\": ...}")
        return "".join(out)
    raise TinyGGMLError(f"message content must be a string or a list of text parts, "
                        f"not {type(content).__name__}")


def check_messages(messages) -> list:
    """Messages as the template sees them: dicts with a known role and string content."""
    if not isinstance(messages, list) or not messages:
        raise TinyGGMLError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TinyGGMLError(f"messages[{i}] must be an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise TinyGGMLError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        out.append({**m, "content": content_text(m.get("content"))})
    return out


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = "",
                 name: str = "chat template", stop: list | None = None):
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        self.source, self.name = source, name
        self.bos_token, self.eos_token = bos_token, eos_token
        self.stop = list(stop or [])
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise TinyGGMLError(f"{name}: not a valid Jinja2 template ({e})") from None

    @classmethod
    def for_model(cls, model, path: str | None = None) -> "ChatTemplate":
        """The template of `path` (a Jinja2 file, --chat-template), else the GGUF's
        tokenizer.chat_template, else PLAIN."""
        tok = model.tokenizer
        names = {}
        for key, tid in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id)):
            names[key] = tok.tokens[tid] if tid is not None else ""
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    return cls(f.read(), name=path, **names)
            except OSError as e:
                raise TinyGGMLError(f"{path}: cannot read the chat template ({e.strerror})") from None
            except UnicodeDecodeError:
                raise TinyGGMLError(f"{path}: the chat template is not UTF-8 text") from None
        src = model.file.value("tokenizer.chat_template")
        if isinstance(src, str) and src.strip():
            return cls(src, name=f"{model.path}: tokenizer.chat_template", **names)
        return cls(PLAIN, name="plain chat template", stop=PLAIN_STOP, **names)

    @property
    def is_plain(self) -> bool:
        return self.source == PLAIN

    def render(self, messages, add_generation_prompt: bool = True, **extra) -> str:
        msgs = check_messages(messages)
        try:
            return self._template.render(messages=msgs, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except TinyGGMLError:
            raise
        except Exception as e:       # the template is the file's code: any failure is its own
            raise TinyGGMLError(f"{self.name}: rendering failed ({type(e).__name__}: {e})") from None

    def tokenize(self, model, text: str, first: bool) -> list:
        """Rendered text to ids: special tokens in the text are parsed, and BOS is added at the
        start of a conversation unless the template wrote it already."""
        tok = model.tokenizer
        ids = model.tokenize(text, add_bos=None if first else False, parse_special=True)
        bos = tok.bos_id
        if first and bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]
        return ids


# ---- a conversation -------------------------------------------------------------------------
_MAGIC, _VERSION = b"TGCHAT\0\0", 1
_MARK = "\ue000tinyggml:reply\ue001"      # stands for a reply's content while rendering


class Conversation:
    """Turns of a chat on one sequence of `model`. send() evaluates only what the sequence
    does not already hold; regen() rolls the last reply back and samples it again; save() /
    load() keep the messages and the sequence's state in one file."""

    def __init__(self, model, template: ChatTemplate, params, max_tokens: int = -1,
                 seq_id: int = 0, system: str | None = None, ignore_eos: bool = False,
                 n_ctx: int = 0):
        self.model, self.template, self.params = model, template, params
        self.max_tokens, self.seq_id, self.ignore_eos, self.n_ctx = max_tokens, seq_id, ignore_eos, n_ctx
        self.messages: list = [{"role": "system", "content": system}] if system else []
        self._prompt_text = ""     # the sequence holds this rendered prompt ...
        self._reply_text = None    # ... then this text of the reply (None: unknown)
        self._turn_start = 0       # tokens before the last reply (for regen)
        self.last = None           # the last turn's Generation (timings, tokens)
        self.last_prompt_new = 0   # tokens the last turn evaluated for its prompt
        self._replies = 0          # replies sampled: each draws with its own seed
        self._active = None        # the reply being streamed, if one is unfinished

    def _prompt_ids(self, rendered: str) -> list:
        """The ids of the conversation up to the new generation prompt. The sequence holds the
        last prompt P and the reply's text H as the model wrote it; rendering the messages with
        a marker for that reply's content gives P' + marker + A (A: the end of the reply's turn,
        the new turns, the generation prompt). When P' starts with P (the earlier turns render
        as before; what the template puts between P and a reply is ignored, as the model wrote
        its reply right after P) and content + A starts with H, only the rest of it is new.
        Otherwise the whole rendering is tokenized (and _sync rolls the sequence back to what
        it shares with it)."""
        m, seq = self.model, self.seq_id
        msgs = self.messages
        have = m.tokens(seq) if m.n_past(seq) else []
        last = max((i for i, x in enumerate(msgs) if x["role"] == "assistant"), default=-1)
        if have and self._reply_text is not None and last >= 0:
            marked = [dict(x) for x in msgs]
            content = marked[last]["content"]
            marked[last]["content"] = _MARK
            text = self.template.render(marked, add_generation_prompt=True)
            at = text.find(_MARK)
            if at >= 0 and text[:at].startswith(self._prompt_text) and _MARK not in text[at + 1:]:
                tail = content + text[at + len(_MARK):]
                if tail.startswith(self._reply_text):
                    return have + self.template.tokenize(m, tail[len(self._reply_text):], first=False)
        return self.template.tokenize(m, rendered, first=True)

    def _sync(self, ids: list) -> list:
        """Bring the sequence to the longest prefix it shares with `ids` (rolling back what
        differs); the ids left to evaluate. None left: the sequence's last logits serve."""
        m, seq = self.model, self.seq_id
        have = list(m.tokens(seq)) if m.n_past(seq) else []
        n = 0
        for a, b in zip(have, ids):
            if a != b:
                break
            n += 1
        if n < len(have):
            m.rollback(seq, n)
        if n == len(ids) and m.last_logits(seq) is None:
            m.rollback(seq, n - 1)         # no logits kept there: evaluate the last token again
            n -= 1
        return ids[n:]

    def _settle(self):
        """Close a reply left unfinished (a caller that stopped reading, Ctrl-C): its end of
        turn is recorded before anything new happens."""
        if self._active is not None:
            self._active.close()
            self._active = None

    def send(self, text: str):
        """Add a user turn and stream the reply (an iterator of text pieces)."""
        self._settle()
        self.messages.append({"role": "user", "content": text})
        return self._reply()

    def _reply(self, ids: list | None = None):
        from .generate import Generation
        rendered = self.template.render(self.messages, add_generation_prompt=True)
        if ids is None:
            ids = self._prompt_ids(rendered)
        limit = self.max_tokens if self.max_tokens >= 0 else 1 << 62
        if self.n_ctx:
            limit = min(limit, self.n_ctx - len(ids))
            if limit <= 0:
                self.messages.pop()
                raise TinyGGMLError(f"the conversation ({len(ids)} tokens) fills the context "
                                    f"(-c {self.n_ctx}); /clear starts a new one")
        rest = self._sync(ids)
        self._turn_start = len(ids)
        params = self.params
        if params.seed is not None:     # a regenerated answer draws anew, reproducibly
            params = replace(params, seed=(params.seed + self._replies) % 2**32)
        self._replies += 1
        g = Generation(self.model, rest, params, limit, self.seq_id,
                       reset=self.model.n_past(self.seq_id) == 0, ignore_eos=self.ignore_eos,
                       stop=self.template.stop)
        self.last = g
        self._active = self._run(g, rendered)
        return self._active

    def _run(self, g, rendered: str):
        self._prompt_text, self._reply_text = rendered, None
        try:
            yield from g
        finally:
            # After Ctrl-C the partial reply is the turn's reply, when the state holds exactly
            # prompt + its tokens; interrupted earlier (in the prompt, or between a token's
            # sampling and its evaluation), the state is unknown: the next turn tokenizes the
            # whole rendering and rolls back to what the sequence shares with it.
            self._active = None
            held = self.model.n_past(self.seq_id)
            if held == self._turn_start + len(g.tokens):
                self._reply_text = g.text
            if g.tokens or held >= self._turn_start:
                self.messages.append({"role": "assistant", "content": g.reply})
            else:
                self.messages.pop()         # the turn never got its prompt in: as if unsent
            self.last_prompt_new = g.timings.prompt_tokens

    def regen(self):
        """Drop the last reply, roll the sequence back to the end of its prompt (a snapshot is
        kept there) and reply again."""
        self._settle()
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise TinyGGMLError("nothing to regenerate yet")
        self.messages.pop()
        have = list(self.model.tokens(self.seq_id))
        if self._reply_text is None or len(have) < self._turn_start:
            return self._reply()            # the state is not the last prompt + reply
        return self._reply(have[:self._turn_start])

    def clear(self):
        self._settle()
        self.model.reset(self.seq_id)
        self.messages = [m for m in self.messages if m["role"] == "system"][:1]
        self._prompt_text, self._reply_text = "", None

    # ---- files ------------------------------------------------------------------------------
    def save(self, path: str):
        """Messages, the text the state holds and the sequence's state, in one file (written
        by rename)."""
        from .state_file import write_atomic
        self._settle()
        head = json.dumps({"messages": self.messages, "prompt_text": self._prompt_text,
                           "reply_text": self._reply_text, "turn_start": self._turn_start},
                          ensure_ascii=False).encode()
        state = self.model.state_save(self.seq_id) if self.model.n_past(self.seq_id) else b""
        body = _MAGIC + struct.pack("<IQQ", _VERSION, len(head), len(state)) + head + state
        try:
            write_atomic(path, body + hashlib.sha256(body).digest())
        except OSError as e:
            raise TinyGGMLError(f"{path}: cannot write ({e.strerror})") from None

    def load(self, path: str):
        """Restore a save()d conversation; a file of another model, format or a damaged one is
        refused and the conversation is left as it was."""
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as e:
            raise TinyGGMLError(f"{path}: cannot read ({e.strerror})") from None
        fixed = len(_MAGIC) + 20
        if len(blob) < fixed + 32 or blob[:len(_MAGIC)] != _MAGIC:
            raise TinyGGMLError(f"{path}: not a tinyggml chat file")
        if hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
            raise TinyGGMLError(f"{path}: checksum mismatch (corrupted or truncated)")
        version, n_head, n_state = struct.unpack_from("<IQQ", blob, len(_MAGIC))
        if version != _VERSION:
            raise TinyGGMLError(f"{path}: chat file version {version}, this tinyggml reads {_VERSION}")
        if fixed + n_head + n_state + 32 != len(blob):
            raise TinyGGMLError(f"{path}: lengths do not match the file size")
        try:
            head = json.loads(blob[fixed:fixed + n_head].decode())
            messages = check_messages(head["messages"]) if head["messages"] else []
            prompt_text, turn_start = str(head["prompt_text"]), int(head["turn_start"])
            reply_text = head["reply_text"]
            if reply_text is not None and not isinstance(reply_text, str):
                raise TypeError("reply_text is not a string")
        except (ValueError, KeyError, TypeError) as e:
            raise TinyGGMLError(f"{path}: damaged conversation record ({e})") from None
        state = blob[fixed + n_head:fixed + n_head + n_state]
        if state:
            try:
                self.model.state_load(self.seq_id, state)
            except TinyGGMLError as e:
                raise TinyGGMLError(f"{path}: {e}") from None
        else:
            self.model.reset(self.seq_id)
        self.messages, self._turn_start = messages, turn_start
        self._prompt_text, self._reply_text = prompt_text, reply_text
