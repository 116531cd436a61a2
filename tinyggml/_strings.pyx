# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""GGUF string arrays in C: each string is an 8-byte little-endian length, then its UTF-8 bytes.

A vocabulary holds 100k of them (tokens and merges). Walking their lengths and decoding them
one by one in a Python loop was most of the time a small model took to open; here a walk is a
C loop and a decode is one PyUnicode_DecodeUTF8 per string.
"""
from libc.stdint cimport uint8_t, uint64_t
from cpython.unicode cimport PyUnicode_DecodeUTF8


cdef inline uint64_t _length(const uint8_t[::1] buf, Py_ssize_t off) noexcept nogil:
    cdef uint64_t n = 0
    cdef int k
    for k in range(7, -1, -1):                 # little-endian whatever the host
        n = (n << 8) | buf[off + k]
    return n


cdef Py_ssize_t _walk(const uint8_t[::1] buf, Py_ssize_t off, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t size = buf.shape[0], i
    cdef uint64_t n
    for i in range(count):
        if off > size - 8:
            return -1
        n = _length(buf, off)
        if n > <uint64_t>(size - off - 8):
            return -1
        off += 8 + <Py_ssize_t>n
    return off


def walk(const uint8_t[::1] buf, Py_ssize_t off, Py_ssize_t count):
    """The offset just past `count` strings starting at `off`, or -1 when one of them (its
    length or its bytes) runs past the end of `buf`."""
    if off < 0 or count < 0:
        return -1
    with nogil:
        off = _walk(buf, off, count)
    return off


def decode(const uint8_t[::1] buf, Py_ssize_t off, Py_ssize_t count):
    """The `count` strings at `off` as a list of str (walk() must have accepted them).
    Invalid UTF-8 raises UnicodeDecodeError, its positions within the string."""
    cdef list out = [None] * count
    cdef Py_ssize_t i
    cdef uint64_t n
    for i in range(count):
        n = _length(buf, off)
        out[i] = PyUnicode_DecodeUTF8(<const char *>&buf[off + 8], <Py_ssize_t>n, NULL)
        off += 8 + <Py_ssize_t>n
    return out
