"""tinyggml-cli: command-line entry point.

    tinyggml-cli run [-m MODEL] -p PROMPT | -f FILE [-n N] [sampling flags] [--interactive]
                     [--prompt-cache FILE [--prompt-cache-all] [--prompt-cache-ro]]
    tinyggml-cli perplexity -m MODEL -f TEXT [--ctx N]
    tinyggml-cli convert HF_DIR -o OUT.gguf [--outtype f32|f16|bf16|q8_0] [--vocab-from GGUF]
    tinyggml-cli bench -m MODEL [-p 128,512] [-n 128] [-d 0,4096] [-t 2] [-r 5] [-o md|json]
    tinyggml-cli quantize IN.gguf OUT.gguf TYPE [--threads N]
    tinyggml-cli make-model PRESET -o OUT.gguf [--type T]   random weights, real sizes
    tinyggml-cli info  -m MODEL                      metadata, tensors, state size
    tinyggml-cli graph -m MODEL [--tokens N] [--seqs S] [--format text|dot|json] [-o FILE]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from ..errors import TinyGGMLError
from ..state_file import write_atomic


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


def _model(path: str, n_threads: int | None = 1, scan: str = "auto", n_seq_max: int = 8):
    from ..runtime import Model
    return Model(path, n_threads=n_threads, scan=scan, n_seq_max=n_seq_max,
                 check_memory=CHECK_MEMORY)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise TinyGGMLError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise TinyGGMLError(f"{path}: not UTF-8 text") from None


# ---- run ------------------------------------------------------------------------------------
def _sampler_params(args):
    from ..sampling import SamplerParams
    return SamplerParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
                         min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                         penalty_last_n=args.repeat_last_n, seed=args.seed)


def _stream(gen, out) -> None:
    for piece in gen:
        out.write(piece)
        out.flush()


def _prompt_cache_open(m, path: str) -> None:
    """Attach a prefix cache holding the session file's states; a file of another model or a
    damaged one is one warning line, and the run starts from scratch."""
    from ..prefix_cache import PrefixCache
    from ..state_file import decode
    # room for the file's two states and the ones this run adds (the prompt's, each reply's):
    # the least recent go first, so a long interactive session stays bounded
    cache = PrefixCache(max_bytes=4 * (m.memory.bytes_per_sequence + 4 * m.n_vocab) + (64 << 20))
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                blob = f.read()
            for e in decode(blob, m.fingerprint, m.memory.bytes_per_sequence, m.n_vocab, what=path):
                cache.put(e)
        except OSError as e:
            print(f"tinyggml: warning: {path}: cannot read the prompt cache ({e.strerror}); "
                  f"starting from scratch", file=sys.stderr)
        except TinyGGMLError as e:
            print(f"tinyggml: warning: ignoring the prompt cache: {e}", file=sys.stderr)
    m.prefix_cache = cache


def _prompt_cache_save(m, path: str, prompt_ids: list, everything: bool) -> None:
    """Write the states after the prompt (and, with everything, after the generated text) of
    sequence 0 to the session file, through a temporary file and a rename."""
    from ..state_file import encode, write_atomic
    prompt = m.prefix_cache.get(prompt_ids)
    entries = [] if prompt is None else [prompt]
    if everything and m.n_past(0) > len(prompt_ids):
        entries.append(m.checkpoint(0))
    entries = [e for e in entries if e.logits is not None]
    if not entries:
        return
    try:
        write_atomic(path, encode(m.fingerprint, entries))
    except OSError as e:
        raise TinyGGMLError(f"{path}: cannot write the prompt cache ({e.strerror})") from None


def cmd_run(args) -> int:
    from ..generate import Timings, start
    prompt = args.prompt if args.prompt is not None else _read_text(args.file)
    m = _model(args.model, args.threads)
    params = _sampler_params(args)
    params.check()
    if args.prompt_cache:
        _prompt_cache_open(m, args.prompt_cache)
    n = args.n_predict if args.n_predict >= 0 else 1 << 62
    out = sys.stdout
    timings: list[Timings] = []
    code = 0
    try:
        if prompt or not args.interactive:
            g = start(m, prompt, n, params)
            g.ignore_eos = args.ignore_eos
            timings.append(g.timings)
            out.write(prompt)
            out.flush()
            _stream(g, out)
            out.write("\n")
            if args.prompt_cache and not args.prompt_cache_ro:
                _prompt_cache_save(m, args.prompt_cache, g.prompt_ids, args.prompt_cache_all)
        if args.interactive:
            code = _interactive(m, params, n, timings, out, args.ignore_eos)
    except KeyboardInterrupt:
        out.write("\n")
        code = 130
    finally:
        out.flush()
        _print_timings(m, timings)
    return code


def _interactive(m, params, n, timings, out, ignore_eos: bool = False) -> int:
    """Read a line, continue the same sequence with it, generate; Ctrl-C stops a reply,
    Ctrl-D (end of input) ends the session."""
    from ..generate import Generation
    first = True
    while True:
        try:
            sys.stderr.write("> ")
            sys.stderr.flush()
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            return 130
        if not line:
            return 0
        ids = m.tokenize(line, add_bos=first and not timings)
        first = False
        g = Generation(m, ids, params, n, reset=not timings, ignore_eos=ignore_eos)
        timings.append(g.timings)
        try:
            _stream(g, out)
            out.write("\n")
        except KeyboardInterrupt:
            out.write("\n")


def _print_timings(m, timings) -> None:
    from ..generate import Timings
    total = Timings(load_ms=m.load_ms)
    for t in timings:
        total.prompt_tokens += t.prompt_tokens
        total.prompt_ms += t.prompt_ms
        total.gen_tokens += t.gen_tokens
        total.gen_ms += t.gen_ms
    print("", file=sys.stderr)
    for line in total.lines():
        print(f"tinyggml: {line}", file=sys.stderr)


# ---- perplexity -----------------------------------------------------------------------------
def cmd_perplexity(args) -> int:
    from .perplexity import perplexity
    text = _read_text(args.file)
    # a sequence slot per chunk of a 512-token ubatch (slots cost memory only once used)
    n_seq = max(8, 512 // max(1, args.ctx))
    m = _model(args.model, args.threads, n_seq_max=n_seq)
    toks = m.tokenize(text)
    n_chunks = len(toks) // args.ctx
    print(f"perplexity: {len(toks)} tokens, {n_chunks} chunks, n_ctx={args.ctx}", file=sys.stderr)
    if args.kl_base:
        from .perplexity import kl_divergence
        base = _model(args.kl_base, args.threads, n_seq_max=n_seq)
        r = kl_divergence(m, base, toks, args.ctx, on_chunk=lambda i, n, kl: sys.stdout.write(
            f"[{i + 1}]{kl:.6f},") or sys.stdout.flush())
        print()
        print(f"PPL = {r.ppl:.4f} (base {r.base_ppl:.4f}); mean KL divergence = {r.kl_mean:.4g} "
              f"+/- {r.kl_err:.2g}; top-1 agreement = {r.top1 * 100:.2f}% over {r.n_scored} tokens")
        return 0

    def progress(i, n, ppl):
        sys.stdout.write(f"[{i + 1}]{ppl:.4f},")
        sys.stdout.flush()
    r = perplexity(m, toks, args.ctx, on_chunk=progress)
    print()
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.err:.5f}")
    return 0


# ---- info -----------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from ..gguf_file import _type_name
    m = _model(args.model)
    f, hp = m.file, m.hparams
    out = [f"file: {m.path} ({os.path.getsize(m.path)} bytes)",
           f"name: {f.value('general.name') or '-'}", f"arch: {m.arch}"]
    for k, v in hp.__dict__.items():
        if k != "arch":
            out.append(f"  {k}: {v}")
    if hasattr(hp, "head_dim"):
        out.append(f"  head_dim: {hp.head_dim}")
    out.append(f"tokenizer: {f.value('tokenizer.ggml.model') or '-'} "
               f"(pre: {f.value('tokenizer.ggml.pre') or '-'})")
    out.append(f"state bytes per sequence: {m.state_bytes_per_sequence}")
    est = m.memory_estimate()
    mib = lambda n: f"{n / 2**20:.1f} MiB"     # noqa: E731
    out.append(f"memory: {mib(est.total())} with one sequence = weights {mib(est.weights)} "
               f"(mapped) + dequantized {mib(est.dequantized)} + state {mib(est.state_per_sequence)} "
               f"per sequence + arena {mib(est.arena)} ({m.n_ubatch}-token ubatch, "
               f"{m.n_threads} threads)")
    from ..backend import describe
    out.append(f"backend: {describe(m.options)}")
    out.append(f"tensors: {len(f.tensors)}")
    total = 0
    for name, t in f.tensors.items():
        total += int(t.n_bytes)
        shape = "[" + ", ".join(str(int(n)) for n in t.shape) + "]"
        out.append(f"  {name:<32s} {_type_name(int(t.tensor_type)):>6s} {shape:>16s} {int(t.n_bytes):>12d} B")
    out.append(f"tensor bytes: {total}")
    print("\n".join(out))
    return 0


# ---- bench --------------------------------------------------------------------------------
def _int_list(text: str) -> list:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"values must be >= 0: {text!r}")
    return vals


def cmd_bench(args) -> int:
    from .bench import run_bench, to_json, to_markdown
    if args.reps < 1:
        raise TinyGGMLError(f"-r must be >= 1, got {args.reps}")
    m = _model(args.model, args.threads, args.scan)

    def progress(test, r, n):
        print(f"\rbench: {test} run {r}/{n}   ", end="", file=sys.stderr, flush=True)
    res = run_bench(m, args.n_prompt, args.n_gen, args.depth, args.reps, progress)
    print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    print(to_json(m, res) if args.output == "json" else to_markdown(m, res))
    return 0


# ---- quantize / make-model -----------------------------------------------------------------
def cmd_quantize(args) -> int:
    from .quantize import quantize_file
    if args.threads is not None and args.threads < 1:
        raise TinyGGMLError(f"--threads must be >= 1, got {args.threads}")
    r = quantize_file(args.input, args.output, args.type, n_threads=args.threads,
                      progress=not args.quiet, allow_requantize=args.allow_requantize)
    print(f"wrote {r['dst']}: {r['qtype']}, {r['src_bytes'] / 2**20:.1f} MiB -> "
          f"{r['dst_bytes'] / 2**20:.1f} MiB in {r['seconds']:.1f} s", file=sys.stderr)
    return 0


def cmd_make_model(args) -> int:
    from .make_model import make_model
    r = make_model(args.preset, args.output, args.type, seed=args.seed, progress=not args.quiet)
    print(f"wrote {r['path']}: {args.preset} {args.type}, {r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    return 0


# ---- convert ------------------------------------------------------------------------------
def cmd_convert(args) -> int:
    from .convert import convert
    r = convert(args.hf_dir, args.output, outtype=args.outtype, vocab_from=args.vocab_from,
                progress=not args.quiet, name=args.name)
    print(f"wrote {r['path']}: {r['arch']} ({r['architecture']}), {r['n_tensors']} tensors, "
          f"{r['n_params'] / 1e6:.1f}M parameters, {r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    return 0


# ---- graph ----------------------------------------------------------------------------------
def cmd_graph(args) -> int:
    from ..alloc import plan_memory
    if args.tokens < 1 or args.seqs < 1 or args.seqs > args.tokens:
        raise TinyGGMLError(f"need 1 <= --seqs <= --tokens (got --tokens {args.tokens} --seqs {args.seqs})")
    m = _model(args.model, n_seq_max=args.seqs)
    g = m.build_graph(args.tokens)
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
        r = subprocess.run([exe, f"-T{suffix[1:]}"], input=text.encode(), capture_output=True)
        if r.returncode != 0:
            raise TinyGGMLError(f"graphviz failed: {r.stderr.decode(errors='replace').strip()}")
        write_atomic(args.output, r.stdout)
    else:
        write_atomic(args.output, text.encode())
    print(f"wrote {args.output}: {len(g.nodes)} nodes, arena {arena} bytes", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinyggml-cli",
        description="tinyggml: run Mamba-1 / Mamba-2 GGUF models on the CPU.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("run", help="generate text from a prompt",
                       description="Generate text after a prompt. Text streams to stdout; timings "
                                   "go to stderr. Stops at end-of-text, after -n tokens, or on "
                                   "Ctrl-C (timings are still printed).")
    s.add_argument("-m", "--model", default=None,
                   help="path to a .gguf model (default: the bundled demo model)")
    src = s.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="prompt text")
    src.add_argument("-f", "--file", help="read the prompt from a file")
    s.add_argument("-n", "--n-predict", type=int, default=128,
                   help="tokens to generate (default 128; -1: until end-of-text)")
    s.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    s.add_argument("--temp", type=float, default=0.8, help="temperature; 0 = greedy (default 0.8)")
    s.add_argument("--top-k", type=int, default=40, help="top-k sampling, 0 = off (default 40)")
    s.add_argument("--top-p", type=float, default=0.95, help="top-p sampling, 1 = off (default 0.95)")
    s.add_argument("--min-p", type=float, default=0.05, help="min-p sampling, 0 = off (default 0.05)")
    s.add_argument("--repeat-penalty", type=float, default=1.0,
                   help="penalize repeated tokens, 1 = off (default 1.0)")
    s.add_argument("--repeat-last-n", type=int, default=64,
                   help="window of recent tokens the penalty looks at (default 64)")
    s.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    s.add_argument("-i", "--interactive", action="store_true",
                   help="after the prompt, read lines from stdin and continue the conversation")
    s.add_argument("--ignore-eos", action="store_true",
                   help="keep generating past end-of-text (as llama-cli --ignore-eos)")
    s.add_argument("--prompt-cache", metavar="FILE",
                   help="session file: resume from the longest prefix of the prompt saved there, "
                        "and save the state after the prompt (as llama-cli's --prompt-cache)")
    s.add_argument("--prompt-cache-all", action="store_true",
                   help="with --prompt-cache: also save the state after the generated text")
    s.add_argument("--prompt-cache-ro", action="store_true",
                   help="with --prompt-cache: read the file, never write it")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("perplexity", help="perplexity of a text file (as llama-perplexity)",
                       description="Perplexity over chunks of --ctx tokens, scoring the second "
                                   "half of each chunk, as llama-perplexity does. Prints the "
                                   "running value per chunk and the final estimate.")
    s.add_argument("-m", "--model", default=None,
                   help="path to a .gguf model (default: the bundled demo model)")
    s.add_argument("-f", "--file", required=True, help="UTF-8 text file")
    s.add_argument("--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    s.add_argument("--kl-base", metavar="BASE.gguf",
                   help="also compare with this model (e.g. the F32 original): mean KL divergence "
                        "and top-1 agreement, as llama-perplexity --kl-divergence")
    s.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    s.set_defaults(func=cmd_perplexity)

    s = sub.add_parser("bench", help="measure prompt (ppN) and generation (tgN) speed",
                       description="llama-bench style: ppN evaluates N prompt tokens at once, tgN "
                                   "generates N tokens one by one (after -d tokens of context); "
                                   "median and range over -r runs, plus peak RSS and state bytes.")
    s.add_argument("-m", "--model", default=None, help="path to a .gguf model (default: demo model)")
    s.add_argument("-p", "--n-prompt", type=_int_list, default=[512], help="prompt sizes (default 512)")
    s.add_argument("-n", "--n-gen", type=_int_list, default=[128], help="generation lengths (default 128)")
    s.add_argument("-d", "--depth", type=_int_list, default=[0],
                   help="context tokens before the tg tests (default 0)")
    s.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    s.add_argument("-r", "--reps", type=int, default=5, help="repetitions (default 5)")
    s.add_argument("-o", "--output", choices=["md", "json"], default="md", help="output format")
    s.add_argument("--scan", choices=["auto", "recurrent", "chunked"], default="auto",
                   help="Mamba-2 prompt scan: chunked (SSD) for sequences of >= 8 tokens in a "
                        "ubatch (auto, default), or one algorithm throughout")
    s.set_defaults(func=cmd_bench)

    from .make_model import PRESETS, TYPES
    s = sub.add_parser("quantize", help="quantize a GGUF model (llama-quantize's rules)",
                       description="Write IN.gguf's 2-D weights as TYPE (the small Mamba tensors "
                                   "stay F32, the output head gets Q6_K/Q8_0 as llama-quantize "
                                   "chooses). The output appears only when complete.")
    s.add_argument("input", help="source .gguf (F32, F16 or BF16 weights)")
    s.add_argument("output", help="destination .gguf")
    s.add_argument("type", choices=[t for t in TYPES if t != "f32"] + ["f32"], metavar="TYPE",
                   help=" | ".join([t for t in TYPES if t != "f32"] + ["f32"]))
    s.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    s.add_argument("--allow-requantize", action="store_true",
                   help="allow re-quantizing already quantized tensors (loses precision)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("make-model", help="write a random-weight model of a real size (benchmarks)",
                       description="A GGUF with random weights in llama.cpp's converter layout, "
                                   "with trained-like statistics (A, dt bias, D), for benchmarks.")
    s.add_argument("preset", choices=list(PRESETS))
    s.add_argument("-o", "--output", required=True, help="output .gguf")
    s.add_argument("--type", choices=list(TYPES), default="f32", help="weight type (default f32)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_make_model)

    s = sub.add_parser("convert", help="convert a Hugging Face Mamba checkpoint to GGUF",
                       description="Convert a Hugging Face Mamba / Mamba-2 / Falcon-Mamba "
                                   "checkpoint (or Mamba-Codestral's mistral layout: params.json + "
                                   "consolidated.safetensors + tokenizer.model.v3) to GGUF, with "
                                   "llama.cpp's names, keys and transforms. No torch needed.")
    s.add_argument("hf_dir", help="checkpoint folder")
    s.add_argument("-o", "--output", required=True, help="output .gguf path")
    s.add_argument("--outtype", choices=["f32", "f16", "bf16", "q8_0"], default="f32",
                   help="type of the 2-D weights (default f32; small tensors stay F32)")
    s.add_argument("--vocab-from", help="take the tokenizer of this GGUF (checkpoints without one)")
    s.add_argument("--name", help="general.name (default: from the folder name)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_convert)

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
    s.add_argument("--seqs", type=int, default=1,
                   help="sequences the ubatch can hold (the size of inp_seq_info; default 1)")
    s.add_argument("--format", choices=["text", "dot", "json"],
                   help="output format (default: from the -o suffix, else text)")
    s.add_argument("-o", "--output", help="output file (.txt, .json, .dot, .svg, .png); default stdout")
    s.set_defaults(func=cmd_graph)
    for name in ("run", "perplexity", "bench", "info", "graph"):
        sub.choices[name].add_argument(
            "--no-memory-check", action="store_true",
            help="load even when the memory estimate exceeds the available memory")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "model", "x") is None:
        args.model = default_model()
    if args.cmd == "run" and args.prompt is None and args.file is None and not args.interactive:
        parser.error("run: give a prompt with -p PROMPT or -f FILE (or use --interactive)")
    if args.cmd == "run" and (args.prompt_cache_all or args.prompt_cache_ro) and not args.prompt_cache:
        parser.error("run: --prompt-cache-all and --prompt-cache-ro need --prompt-cache FILE")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    global CHECK_MEMORY
    CHECK_MEMORY = not getattr(args, "no_memory_check", False)
    try:
        return args.func(args)
    except TinyGGMLError as e:
        print(f"tinyggml-cli: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:        # Ctrl-C while loading, converting, quantizing, ...: files
        print("tinyggml-cli: interrupted", file=sys.stderr)   # are written by rename, none half
        return 130
    except BrokenPipeError:          # e.g. `tinyggml-cli graph ... | head`
        return 0
    except OSError as e:
        print(f"tinyggml-cli: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
