"""Errors a user can act on. Anything raised to a user is a TinyGGMLError with a clear message."""


class TinyGGMLError(Exception):
    """Base class of every error tinyggml raises on bad input."""


class ModelLoadError(TinyGGMLError):
    """A model file is missing, unreadable, truncated or not a model tinyggml can run."""


def check_utf8(text: str, what: str = "the text") -> str:
    """`text` as given, if it can be written as UTF-8; bytes that were not UTF-8 (in argv,
    stdin, JSON escapes) arrive as lone surrogates and are refused here, naming the first."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise TinyGGMLError(f"{what} is not valid UTF-8 (not valid Unicode at character "
                            f"{e.start}, {text[e.start]!r})") from None
    return text


def shown(text, limit: int = 80) -> str:
    """Text read from a file, fit for a one-line message: bytes that are not UTF-8 as \\xNN,
    control characters escaped (a name can hold a newline or a terminal escape), long text cut."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "backslashreplace")
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                  for c in str(text))
    return out if len(out) <= limit else out[:limit] + "..."
