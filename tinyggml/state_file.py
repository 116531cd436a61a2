"""The byte format of saved sequence states: Model.state_save blobs, prompt-cache (session)
files and PrefixCache directories all use it.

    header   magic b"TGSTATE\\0" | version u32 | fingerprint (32 bytes) | n_entries u32
    entry    n_tokens u64 | tokens i32[n_tokens] | n_logits u64 | logits f32[n_logits]
             | n_state u64 | state (the memory's raw slot bytes)
    trailer  SHA-256 of everything before it (32 bytes)

All integers little-endian. An entry is a sequence at one point: its token history, the logits
after its last token (n_logits 0 when not kept) and its state. The fingerprint ties the bytes
to one model (model_fingerprint); decoding checks magic, version, fingerprint, checksum and
every length before returning anything, and names what does not match.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

from .errors import TinyGGMLError

MAGIC = b"TGSTATE\0"
VERSION = 1
_HEAD = struct.Struct("<8sI32sI")


@dataclass
class Entry:
    tokens: np.ndarray | None       # int32 token history (None: a snapshot that only serves
                                    # rollback, whose sequence's history holds the tokens)
    state: bytes | np.ndarray       # Memory.seq_save bytes (or seq_state's uint8 array)
    logits: np.ndarray | None       # float32 [n_vocab] after the last token, or None
    n_past: int = -1                # the length, when tokens is None

    @property
    def size(self) -> int:
        """Tokens the state has consumed."""
        return len(self.tokens) if self.tokens is not None else self.n_past

    @property
    def nbytes(self) -> int:
        return (len(self.state) + (0 if self.tokens is None else self.tokens.nbytes)
                + (0 if self.logits is None else self.logits.nbytes))


def model_fingerprint(model) -> bytes:
    """SHA-256 over what makes states of one model interchangeable: the architecture and its
    hyperparameters, the tensor table (name, type, shape) and a sample of every tensor's bytes
    (its first, middle and last 64), so fine-tunes of one architecture differ too."""
    h = hashlib.sha256()
    h.update(repr(sorted(vars(model.hparams).items())).encode())
    for name in sorted(model.file.tensors):
        t = model.file.tensors[name]
        h.update(f"{name}:{int(t.tensor_type)}:{[int(n) for n in t.shape]}".encode())
        raw = np.asarray(t.data).reshape(-1).view(np.uint8)
        n = raw.size
        for at in (0, max(0, n // 2 - 32), max(0, n - 64)):
            h.update(raw[at:at + 64].tobytes())
    return h.digest()


def encode(fingerprint: bytes, entries: list[Entry]) -> bytes:
    parts = [_HEAD.pack(MAGIC, VERSION, fingerprint, len(entries))]
    for e in entries:
        toks = np.ascontiguousarray(e.tokens, "<i4")
        lg = np.zeros(0, "<f4") if e.logits is None else np.ascontiguousarray(e.logits, "<f4")
        parts += [struct.pack("<Q", toks.size), toks.tobytes(), struct.pack("<Q", lg.size),
                  lg.tobytes(), struct.pack("<Q", len(e.state)), bytes(e.state)]
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def decode(blob: bytes, fingerprint: bytes, state_bytes, n_vocab: int,
           what: str = "state") -> list[Entry]:
    """The entries of `blob`, after checking that it is whole and belongs to this model
    (`fingerprint`, state bytes per entry: `state_bytes(n_tokens)` (Memory.state_bytes) or a
    constant, logits of `n_vocab`); TinyGGMLError otherwise."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TinyGGMLError(f"{what}: expected bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _HEAD.size + 32:
        raise TinyGGMLError(f"{what}: truncated ({len(blob)} bytes, a header alone is "
                            f"{_HEAD.size + 32})")
    magic, version, fp, n = _HEAD.unpack_from(blob, 0)
    if magic != MAGIC:
        raise TinyGGMLError(f"{what}: not a tinyggml state (magic {magic!r})")
    if version != VERSION:
        raise TinyGGMLError(f"{what}: format version {version}, this tinyggml reads {VERSION}")
    if hashlib.sha256(blob[:-32]).digest() != blob[-32:]:
        raise TinyGGMLError(f"{what}: checksum mismatch (corrupted or truncated)")
    if fp != fingerprint:
        raise TinyGGMLError(f"{what}: saved from another model (fingerprint {fp.hex()[:16]}, "
                            f"this model's {fingerprint.hex()[:16]})")
    out, off, end = [], _HEAD.size, len(blob) - 32

    def take(nbytes: int, field: str) -> bytes:
        nonlocal off
        if nbytes < 0 or off + nbytes > end:
            raise TinyGGMLError(f"{what}: {field} runs past the end of the data")
        b = blob[off:off + nbytes]
        off += nbytes
        return b

    for i in range(n):
        nt = struct.unpack("<Q", take(8, f"entry {i} token count"))[0]
        toks = np.frombuffer(take(4 * nt, f"entry {i} tokens"), "<i4").astype(np.int32)
        if toks.size and (toks.min() < 0 or toks.max() >= n_vocab):
            raise TinyGGMLError(f"{what}: entry {i} has token ids outside the vocabulary")
        nl = struct.unpack("<Q", take(8, f"entry {i} logit count"))[0]
        if nl not in (0, n_vocab):
            raise TinyGGMLError(f"{what}: entry {i} has {nl} logits, the model {n_vocab}")
        lg = np.frombuffer(take(4 * nl, f"entry {i} logits"), "<f4").astype(np.float32) if nl else None
        ns = struct.unpack("<Q", take(8, f"entry {i} state size"))[0]
        want = state_bytes(len(toks)) if callable(state_bytes) else state_bytes
        if ns != want:
            raise TinyGGMLError(f"{what}: entry {i} holds {ns} state bytes, a sequence of this "
                                f"model has {want} after {len(toks)} tokens")
        out.append(Entry(toks, take(ns, f"entry {i} state"), lg))
    if off != end:
        raise TinyGGMLError(f"{what}: {end - off} bytes after the last entry")
    return out


def write_atomic(path: str, data: bytes):
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a file."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)         # mkstemp's 0600 is for the temporary name only
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
