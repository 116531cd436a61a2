"""tinyggml-cli: command-line entry point.

    tinyggml-cli info  -m MODEL                      metadata, tensors, state size
    tinyggml-cli graph -m MODEL [--tokens N] [--seqs S] [--format text|dot|json] [-o FILE]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from .errors import TinyGGMLError


def _model(path: str):
    from .runtime import Model
    return Model(path, n_threads=1)


# ---- info -----------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from .gguf_file import _type_name
    m = _model(args.model)
    f, hp = m.file, m.hparams
    out = [f"file: {m.path} ({os.path.getsize(m.path)} bytes)",
           f"name: {f.value('general.name') or '-'}", f"arch: {m.arch}"]
    for k, v in hp.__dict__.items():
        out.append(f"  {k}: {v}")
    if m.arch == "mamba2":
        out.append(f"  head_dim: {hp.head_dim}")
    out.append(f"tokenizer: {f.value('tokenizer.ggml.model') or '-'} "
               f"(pre: {f.value('tokenizer.ggml.pre') or '-'})")
    out.append(f"state bytes per sequence: {m.state_bytes_per_sequence}")
    out.append(f"tensors: {len(f.tensors)}")
    total = 0
    for name, t in f.tensors.items():
        total += int(t.n_bytes)
        shape = "[" + ", ".join(str(int(n)) for n in t.shape) + "]"
        out.append(f"  {name:<32s} {_type_name(int(t.tensor_type)):>6s} {shape:>16s} {int(t.n_bytes):>12d} B")
    out.append(f"tensor bytes: {total}")
    print("\n".join(out))
    return 0


# ---- graph ----------------------------------------------------------------------------------
def cmd_graph(args) -> int:
    from .alloc import plan_memory
    from .runtime import build_graph
    if args.tokens < 1 or args.seqs < 1 or args.seqs > args.tokens:
        raise TinyGGMLError(f"need 1 <= --seqs <= --tokens (got --tokens {args.tokens} --seqs {args.seqs})")
    m = _model(args.model)
    m.state._resize(max(m.state.n_slots, args.seqs))
    g = build_graph(m.weights, m.hparams, m.state, args.tokens, args.seqs)
    _, arena = plan_memory(g.nodes)
    fmt = args.format
    suffix = os.path.splitext(args.output or "")[1].lower()
    if fmt is None:
        fmt = {".dot": "dot", ".gv": "dot", ".svg": "dot", ".png": "dot", ".json": "json"}.get(suffix, "text")
    if fmt == "text":
        text = g.to_text(arena)
    elif fmt == "json":
        text = g.to_json(arena)
    else:
        text = g.to_dot()
    if not args.output:
        sys.stdout.write(text)
        return 0
    if fmt == "dot" and suffix in (".svg", ".png"):
        exe = shutil.which("dot")
        if exe is None:
            raise TinyGGMLError(f"rendering {suffix} needs Graphviz's `dot`, which is not installed "
                                f"(apt install graphviz); use -o FILE.dot for the DOT source")
        r = subprocess.run([exe, f"-T{suffix[1:]}", "-o", args.output], input=text.encode(),
                           capture_output=True)
        if r.returncode != 0:
            raise TinyGGMLError(f"graphviz failed: {r.stderr.decode(errors='replace').strip()}")
    else:
        with open(args.output, "w") as fh:
            fh.write(text)
    print(f"wrote {args.output}: {len(g.nodes)} nodes, arena {arena} bytes", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinyggml-cli",
        description="tinyggml: run Mamba-1 / Mamba-2 GGUF models on the CPU.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("info", help="print a model's metadata, tensors and state size",
                       description="Print a GGUF model's hparams, tensor table (name, type, shape, "
                                   "bytes) and recurrent-state bytes per sequence.")
    s.add_argument("-m", "--model", required=True, help="path to a .gguf model")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("graph", help="dump the compute graph of one ubatch",
                       description="List every node of the graph tinyggml records for one ubatch "
                                   "(op, shape, type, bytes, sources, name) and the arena size. "
                                   "DOT output renders to .svg/.png when Graphviz is installed.")
    s.add_argument("-m", "--model", required=True, help="path to a .gguf model")
    s.add_argument("--tokens", type=int, default=1, help="tokens in the ubatch, all sequences (default 1)")
    s.add_argument("--seqs", type=int, default=1, help="sequences in the ubatch (default 1)")
    s.add_argument("--format", choices=["text", "dot", "json"],
                   help="output format (default: from the -o suffix, else text)")
    s.add_argument("-o", "--output", help="output file (.txt, .json, .dot, .svg, .png); default stdout")
    s.set_defaults(func=cmd_graph)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TinyGGMLError as e:
        print(f"tinyggml-cli: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:          # e.g. `tinyggml-cli graph ... | head`
        return 0
    except OSError as e:
        print(f"tinyggml-cli: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
