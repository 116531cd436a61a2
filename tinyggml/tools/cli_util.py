"""Shared by the tinyggml-cli commands: the demo model, loading a model, reading text, and the
checks every flag value passes while the command line is parsed (an argparse `type` each: a bad
value becomes "argument FLAG: ..." and exit 2; the bounds stay on the function so the tests can
walk every flag with values just outside them)."""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys

from ..errors import TinyGGMLError

DEMO_MODEL = "shakespeare-mamba2.gguf"


def default_model() -> str:
    """The bundled demo model: $TINYGGML_MODEL, else the copy installed with the package, else
    models/ in a source checkout."""
    env = os.environ.get("TINYGGML_MODEL")
    if env:
        return env
    try:
        from importlib.resources import files
        p = files("tinyggml.demo_models") / DEMO_MODEL
        if p.is_file():
            return str(p)
    except (ImportError, ModuleNotFoundError, TypeError):
        pass
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # tinyggml/
    return os.path.join(os.path.dirname(package), "models", DEMO_MODEL)


CHECK_MEMORY = True        # --no-memory-check turns it off


def load_model(path: str, n_threads: int | None = 1, scan: str = "auto", n_seq_max: int = 8,
               n_ubatch: int = 512, n_ctx: int | None = None, kv_type: str = "f16"):
    """n_ctx, kv_type: the KV cache of models with attention layers (None: the model's own
    context length); pure state-space models ignore both."""
    from ..runtime import Model
    return Model(path, n_threads=n_threads, scan=scan, n_seq_max=n_seq_max, n_ubatch=n_ubatch,
                 check_memory=CHECK_MEMORY, n_ctx=n_ctx, kv_type=kv_type)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise TinyGGMLError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise TinyGGMLError(f"{path}: not UTF-8 text") from None


def progress_wanted(args) -> bool:
    """Progress bars only on a terminal: piped logs get no carriage returns."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


# ---- values: checked while parsing ----------------------------------------------------------
INT_MAX = 2**31 - 1


def int_arg(lo: int | None = None, hi: int | None = None, meaning: str = ""):
    def parse(text: str) -> int:
        try:
            v = int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {_range(lo, hi)}{meaning}, got {v}")
        return v
    parse.bounds = (lo, hi)
    return parse


def float_arg(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
              hi_open: bool = False, meaning: str = ""):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(v)
        bad = bad or (lo is not None and (v <= lo if lo_open else v < lo))
        bad = bad or (hi is not None and (v >= hi if hi_open else v > hi))
        if bad:
            rng = (f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
                   if lo is not None and hi is not None else
                   f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else "a finite number")
            raise argparse.ArgumentTypeError(f"must be {rng}{meaning}, got {text}")
        return v
    parse.bounds = (lo, hi)
    return parse


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def int_list_arg(lo: int = 0, hi: int = 1 << 20):
    def parse(text: str) -> list:
        try:
            vals = [int(v, 10) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {text!r}") from None
        if not vals:
            raise argparse.ArgumentTypeError("expected at least one value")
        bad = [v for v in vals if not lo <= v <= hi]
        if bad:
            raise argparse.ArgumentTypeError(f"values must be between {lo} and {hi}, got {bad[0]}")
        return vals
    parse.bounds = (lo, hi)
    return parse


def ngl_arg(text: str) -> str:
    """-ngl: llama.cpp's GPU layers; accepted (a number, auto or all) and ignored."""
    if text in ("auto", "all"):
        return text
    try:
        if int(text, 10) >= -1:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a number of layers, auto or all, got {text!r}")


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def process_escapes(text: str) -> str:
    """llama.cpp's prompt escapes: \\n \\r \\t \\' \\" \\\\ \\a \\b \\f \\v \\0 and \\xNN;
    anything else stays as typed."""
    def sub(m):
        e = m.group(1)
        if e[0] == "x":
            return chr(int(e[1:], 16))
        return _ESCAPES[e]
    return re.sub(r"\\(x[0-9a-fA-F]{2}|[nrt'\"\\abfv0])", sub, text)


# ---- version --------------------------------------------------------------------------------
def version_text() -> str:
    """Package version, the git commit (of the checkout it runs from, or the one it was built
    from), the kernels this build has and the Python / numpy it runs on."""
    from importlib import metadata
    try:
        ver = metadata.version("tinyggml")
    except metadata.PackageNotFoundError:
        ver = "unknown (not installed)"
    commit = _git_commit()
    from .. import backend
    kernels = ["AVX2/FMA/F16C" if backend.simd_compiled() else "portable scalar only"]
    if backend.int_gemm_compiled():
        kernels.append(f"{backend.int_gemm_compiled()} integer panels")
    used = "in use" if backend.simd_enabled() else "scalar kernels in use"
    import numpy
    return (f"tinyggml {ver}" + (f" (commit {commit})" if commit else "") + "\n"
            f"kernels: {', '.join(kernels)} compiled ({used}); OpenMP, up to "
            f"{backend.openmp_max_threads()} threads\n"
            f"python {sys.version.split()[0]}, numpy {numpy.__version__}")


def _git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isdir(os.path.join(root, ".git")) and shutil.which("git"):
        try:
            r = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
                               capture_output=True, text=True, timeout=5)
            if r.returncode == 0 and r.stdout.strip():
                d = subprocess.run(["git", "-C", root, "status", "--porcelain", "-uno"],
                                   capture_output=True, text=True, timeout=5)
                return r.stdout.strip() + ("-dirty" if d.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        from .._build import COMMIT          # written by setup.py when built from a checkout
        return COMMIT or None
    except ImportError:
        return None


class Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the version, commit and compiled kernels, then exit"):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)
