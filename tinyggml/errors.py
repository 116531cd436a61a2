"""Errors a user can act on. Anything raised to a user is a TinyGGMLError with a clear message."""


class TinyGGMLError(Exception):
    """Base class of every error tinyggml raises on bad input."""


class ModelLoadError(TinyGGMLError):
    """A model file is missing, unreadable, truncated or not a model tinyggml can run."""
