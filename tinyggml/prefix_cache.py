"""PrefixCache: token prefixes -> saved sequence states (with the logits after them), under a
byte budget, so that a prompt that begins like an earlier one resumes where that one was.

    cache = tinyggml.PrefixCache(max_bytes=512 << 20)
    m = tinyggml.Model(path, prefix_cache=cache)      # or m.prefix_cache = cache
    m.generate(prompt)                 # resumes from the longest cached prefix of the prompt
    cache.stats                        # hits, misses, evictions, entries, bytes
    cache.save(dir); tinyggml.PrefixCache.load(dir, m)

A state-space model's state is a fixed-size object, so an entry costs the same at any depth:
one sequence's state (memory.bytes_per_sequence) plus its token history and one row of logits.
Entries are found through a trie of token ids (one node per token, the entry at the node where
its prefix ends); the longest prefix of a query with an entry is one walk down the query.
Eviction is least-recently-used: an entry is used when it is stored or resumed from.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict

import numpy as np

from .errors import TinyGGMLError
from .state_file import Entry, decode, encode, write_atomic

CACHE_FILE = "prefix-cache.tgstate"


def _locked(method):
    """One caller at a time: Models of one file may share a cache from several threads."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


class _Node:
    __slots__ = ("children", "key")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.key: bytes | None = None          # the entry ending here, if any


class PrefixCache:
    def __init__(self, max_bytes: int = 1 << 30):
        if int(max_bytes) < 0:
            raise TinyGGMLError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._lock = threading.RLock()
        self._root = _Node()
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()   # LRU order, oldest first
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self.fingerprint: bytes | None = None      # of the model the entries belong to

    # ---- lookup -------------------------------------------------------------------------------
    @_locked
    def longest(self, tokens) -> Entry | None:
        """The entry with the longest token history that is a prefix of `tokens` (counted as a
        hit, and made most recent), or None (a miss)."""
        node, best = self._root, None
        if node.key is not None:
            best = node.key
        for t in tokens:
            node = node.children.get(int(t))
            if node is None:
                break
            if node.key is not None:
                best = node.key
        if best is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(best)
        return self._entries[best]

    @_locked
    def get(self, tokens) -> Entry | None:
        """The entry for exactly these tokens, or None (not counted, recency unchanged)."""
        return self._entries.get(np.asarray(tokens, np.int32).tobytes())

    def __contains__(self, tokens) -> bool:
        return np.asarray(tokens, np.int32).tobytes() in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes}

    # ---- storing --------------------------------------------------------------------------------
    @_locked
    def put(self, entry: Entry) -> bool:
        """Store `entry` (replacing one of the same tokens); evict least recently used entries
        to stay under max_bytes. False when the entry alone is over the budget."""
        if entry.nbytes > self.max_bytes or not len(entry.tokens):
            return False                  # over the budget alone, or nothing to resume from
        key = np.ascontiguousarray(entry.tokens, np.int32).tobytes()
        if key in self._entries:
            self._drop(key, evicted=False)
        node = self._root
        for t in entry.tokens:
            node = node.children.setdefault(int(t), _Node())
        node.key = key
        self._entries[key] = entry
        self.bytes += entry.nbytes
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)), evicted=True)
        return True

    def _drop(self, key: bytes, evicted: bool):
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
        if evicted:
            self.evictions += 1
        # unlink the trie path's tail that no longer leads to an entry
        path, node = [self._root], self._root
        for t in entry.tokens:
            node = node.children[int(t)]
            path.append(node)
        node.key = None
        for i in range(len(path) - 1, 0, -1):
            if path[i].key is not None or path[i].children:
                break
            del path[i - 1].children[int(entry.tokens[i - 1])]

    @_locked
    def clear(self):
        self._root, self._entries, self.bytes = _Node(), OrderedDict(), 0

    # ---- persistence ------------------------------------------------------------------------------
    @_locked
    def save(self, directory: str):
        """Write every entry (least recent first) to directory/prefix-cache.tgstate, atomically."""
        if self.fingerprint is None:
            raise TinyGGMLError("the cache has no model yet: attach it to a Model first")
        os.makedirs(directory, exist_ok=True)
        write_atomic(os.path.join(directory, CACHE_FILE),
                     encode(self.fingerprint, list(self._entries.values())))

    @classmethod
    def load(cls, directory: str, model, max_bytes: int | None = None) -> PrefixCache:
        """A cache with the entries saved in `directory`, checked against `model` (fingerprint,
        checksum, sizes), and attached to it. A missing, foreign or damaged file is a
        TinyGGMLError naming what is wrong."""
        path = os.path.join(directory, CACHE_FILE)
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError as e:
            raise TinyGGMLError(f"{path}: cannot read ({e.strerror})") from None
        entries = decode(blob, model.fingerprint, model.memory.state_bytes, model.n_vocab,
                         what=path)
        cache = cls(max_bytes if max_bytes is not None else max(1 << 30, sum(e.nbytes for e in entries)))
        for e in entries:
            cache.put(e)
        model.prefix_cache = cache
        return cache
