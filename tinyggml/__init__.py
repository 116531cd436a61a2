"""tinyggml: a ggml-style graph runtime for Mamba state-space models on the CPU.

    import tinyggml
    m = tinyggml.Model("model.gguf")
    logits = m.eval([1, 2, 3])
"""
from .errors import ModelLoadError, TinyGGMLError
from .options import GraphOptions
from .prefix_cache import PrefixCache
from .runtime import Model
from .tokenizer import StreamDecoder, Tokenizer

__version__ = "0.1.0"
__all__ = ["Model", "PrefixCache", "GraphOptions", "Tokenizer", "StreamDecoder", "TinyGGMLError",
           "ModelLoadError"]
