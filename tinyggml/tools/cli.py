"""tinyggml-cli: the command line (`tinyggml-cli --help`, `tinyggml-cli COMMAND --help`).

Commands: run (and chat = run --conversation), perplexity, bench, info, graph, convert,
quantize, make-model. Flags follow llama.cpp's names and meanings where they exist. Every value
is checked when the command line is parsed: a bad one is a usage error (exit 2) in one line that
names the flag and what it accepts; errors found later (a missing file, a damaged model) are one
line and exit 1; Ctrl-C is exit 130.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import time

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


def _model(path: str, n_threads: int | None = 1, scan: str = "auto", n_seq_max: int = 8,
           n_ubatch: int = 512):
    from ..runtime import Model
    return Model(path, n_threads=n_threads, scan=scan, n_seq_max=n_seq_max, n_ubatch=n_ubatch,
                 check_memory=CHECK_MEMORY)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise TinyGGMLError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise TinyGGMLError(f"{path}: not UTF-8 text") from None


def _progress_wanted(args) -> bool:
    """Progress bars only on a terminal: piped logs get no carriage returns."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


# ---- values: checked while parsing ----------------------------------------------------------
# Each check is an argparse `type`: a bad value becomes "argument FLAG: ..." and exit 2. The
# bounds are kept on the function so the tests can walk every flag with values just outside.
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


class _Version(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the version, commit and compiled kernels, then exit"):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


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


# ---- run / chat -----------------------------------------------------------------------------
def _sampler_params(args):
    from ..sampling import SamplerParams
    return SamplerParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p,
                         min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                         presence_penalty=args.presence_penalty,
                         frequency_penalty=args.frequency_penalty,
                         penalty_last_n=args.repeat_last_n, seed=args.seed)


def _note(args, text: str) -> None:
    if not args.log_disable:
        print(f"tinyggml: {text}", file=sys.stderr)


def _stream(gen, out) -> None:
    for piece in gen:
        out.write(piece)
        out.flush()


def _prepare_run(args):
    """The model and sampler of `run` / `chat`, after the notes llama.cpp users expect."""
    if args.n_gpu_layers is not None:
        _note(args, f"-ngl {args.n_gpu_layers} ignored: tinyggml runs on the CPU")
    m = _model(args.model, args.threads, n_ubatch=min(args.batch_size, args.ubatch_size))
    if args.seed == -1:                   # llama.cpp's default: a random seed, printed
        args.seed = secrets.randbits(32)
        if args.temp > 0:
            _note(args, f"seed = {args.seed}")
    if args.repeat_last_n == -1:          # llama.cpp: -1 = the context size
        args.repeat_last_n = args.ctx_size or INT_MAX
    return m, _sampler_params(args)


def cmd_run(args) -> int:
    from ..generate import Timings, start
    if args.conversation:
        return cmd_chat(args)
    prompt = args.prompt if args.prompt is not None else _read_text(args.file) if args.file else ""
    if args.escape:
        prompt = process_escapes(prompt)
    m, params = _prepare_run(args)
    if args.prompt_cache:
        _prompt_cache_open(m, args.prompt_cache)
    n = args.n_predict if args.n_predict >= 0 else 1 << 62
    out = sys.stdout
    timings: list[Timings] = []
    code = 0
    try:
        if prompt or not args.interactive:
            ids = m.tokenize(prompt)
            if args.ctx_size:
                if len(ids) >= args.ctx_size:
                    raise TinyGGMLError(f"the prompt is {len(ids)} tokens, the context (-c) "
                                        f"{args.ctx_size}: nothing left to generate")
                n = min(n, args.ctx_size - len(ids))
            g = start(m, ids, n, params)
            g.ignore_eos = args.ignore_eos
            timings.append(g.timings)
            if args.display_prompt:
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
        if not args.log_disable:
            _print_timings(m, timings)
    return code


def _read_turn(prompt: str = "> ") -> str | None:
    """A line from stdin (None at end of input); a line ending in a backslash continues on the
    next, as in llama-cli. Piped input is echoed to stdout so the transcript reads whole."""
    lines = []
    while True:
        sys.stderr.write(prompt if not lines else "")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            return "\n".join(lines) if lines else None
        line = line.rstrip("\n")
        if line.endswith("\\"):
            lines.append(line[:-1])
            continue
        lines.append(line)
        text = "\n".join(lines)
        if not sys.stdin.isatty():
            sys.stdout.write(f"> {text}\n")
            sys.stdout.flush()
        return text


def _interactive(m, params, n, timings, out, ignore_eos: bool = False) -> int:
    """Read a line, continue the same sequence with it (no chat template: see --conversation),
    generate; Ctrl-C stops a reply, Ctrl-D (end of input) ends the session."""
    from ..generate import Generation
    first = True
    while True:
        try:
            line = _read_turn()
        except KeyboardInterrupt:
            return 130
        if line is None:
            return 0
        ids = m.tokenize(line + "\n", add_bos=first and not timings)
        first = False
        g = Generation(m, ids, params, n, reset=not timings, ignore_eos=ignore_eos)
        timings.append(g.timings)
        try:
            _stream(g, out)
            out.write("\n")
        except KeyboardInterrupt:
            out.write("\n")


CHAT_HELP = ("/exit quits, /regen answers the last turn again, /save FILE and /load FILE keep "
             "the conversation, /clear starts over; a line ending in \\ continues; Ctrl-C stops "
             "a reply, Ctrl-D ends")


def cmd_chat(args) -> int:
    """Conversation mode: the chat template renders each turn; the sequence keeps its state
    between turns, so a turn evaluates only its own tokens."""
    from ..chat import ChatTemplate, Conversation
    from ..generate import Timings
    system = args.system_prompt if args.system_prompt is not None else args.prompt
    if system is None and args.file:
        system = _read_text(args.file)
    if system is not None and args.escape:
        system = process_escapes(system)
    m, params = _prepare_run(args)
    tmpl = ChatTemplate.for_model(m, args.chat_template)
    conv = Conversation(m, tmpl, params, max_tokens=args.n_predict, system=system or None,
                        ignore_eos=args.ignore_eos, n_ctx=args.ctx_size)
    _note(args, f"chat: {tmpl.name}; {CHAT_HELP}")
    out, timings, code = sys.stdout, [], 0
    try:
        turn = 0
        while True:
            try:
                line = _read_turn()
            except KeyboardInterrupt:
                code = 130
                break
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                cmd, _, arg = text.partition(" ")
                arg = arg.strip()
                if cmd in ("/exit", "/quit"):
                    break
                try:
                    if cmd == "/regen":
                        reply = conv.regen()
                    elif cmd == "/save" and arg:
                        conv.save(arg)
                        _note(args, f"saved the conversation ({m.n_past(0)} tokens) to {arg}")
                        continue
                    elif cmd == "/load" and arg:
                        conv.load(arg)
                        _note(args, f"loaded {arg}: {len(conv.messages)} messages, "
                                    f"{m.n_past(0)} tokens of state")
                        continue
                    elif cmd == "/clear":
                        conv.clear()
                        continue
                    else:
                        print(f"tinyggml: unknown command {text!r}: {CHAT_HELP}", file=sys.stderr)
                        continue
                except TinyGGMLError as e:
                    print(f"tinyggml: {e}", file=sys.stderr)
                    continue
            else:
                try:
                    reply = conv.send(text)
                except TinyGGMLError as e:
                    print(f"tinyggml: {e}", file=sys.stderr)
                    continue
            turn += 1
            try:
                _stream(reply, out)
            except KeyboardInterrupt:
                pass                         # the reply so far is kept
            except TinyGGMLError as e:
                print(f"tinyggml: {e}", file=sys.stderr)
            out.write("\n")
            out.flush()
            t: Timings = conv.last.timings
            timings.append(t)
            kept = m.n_past(0) - t.prompt_tokens - t.gen_tokens
            _note(args, f"turn {turn}: prompt {t.prompt_tokens} new tokens ({kept} already in "
                        f"the state) in {t.prompt_ms:.1f} ms; reply {t.gen_tokens} tokens in "
                        f"{t.gen_ms:.1f} ms ({t.stop})")
    finally:
        out.flush()
        if not args.log_disable:
            _print_timings(m, timings)
    return code


# ---- perplexity -----------------------------------------------------------------------------
def _eta(seconds: float) -> str:
    return f"{seconds / 60:.2f} minutes" if seconds >= 60 else f"{seconds:.1f} seconds"


def cmd_perplexity(args) -> int:
    from .perplexity import perplexity
    text = _read_text(args.file)
    ctx = args.ctx_size
    # a sequence slot per chunk of a ubatch (slots cost memory only once used)
    n_ubatch = min(args.batch_size, args.ubatch_size)
    n_seq = max(8, n_ubatch // ctx)
    m = _model(args.model, args.threads, n_seq_max=n_seq, n_ubatch=n_ubatch)
    toks = m.tokenize(text)
    n_chunks = len(toks) // ctx
    if args.chunks >= 0:
        n_chunks = min(n_chunks, args.chunks)
        toks = toks[:n_chunks * ctx]
    if n_chunks == 0:
        raise TinyGGMLError(f"{args.file}: {len(toks)} tokens, one chunk needs -c {ctx}")
    print(f"perplexity: {len(toks)} tokens, {n_chunks} chunks, n_ctx={ctx}", file=sys.stderr)
    t0 = time.perf_counter()
    shown = False

    def timing(done, n, per_pass):
        """After the first pass, as llama-perplexity: seconds per pass and the time left."""
        nonlocal shown
        if shown or done >= n:
            return
        shown = True
        dt = time.perf_counter() - t0
        left = dt / done * (n - done)
        print(f"perplexity: {dt:.2f} seconds per pass ({per_pass} chunks of {ctx} tokens), "
              f"{dt / done:.2f} seconds per chunk - ETA {_eta(left)}", file=sys.stderr, flush=True)

    if args.kl_base:
        from .perplexity import kl_divergence
        base = _model(args.kl_base, args.threads, n_seq_max=n_seq, n_ubatch=n_ubatch)

        def kl_chunk(i, n, kl):
            timing(i + 1, n, 1)
            sys.stdout.write(f"[{i + 1}]{kl:.6f},")
            sys.stdout.flush()
        r = kl_divergence(m, base, toks, ctx, on_chunk=kl_chunk)
        print()
        print(f"PPL = {r.ppl:.4f} (base {r.base_ppl:.4f}); mean KL divergence = {r.kl_mean:.4g} "
              f"+/- {r.kl_err:.2g}; top-1 agreement = {r.top1 * 100:.2f}% over {r.n_scored} tokens")
        return 0

    def progress(i, n, ppl):
        sys.stdout.write(f"[{i + 1}]{ppl:.4f},")
        sys.stdout.flush()
    r = perplexity(m, toks, ctx, on_chunk=progress, on_pass=timing)
    print()
    print(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.err:.5f}")
    print(f"perplexity: {time.perf_counter() - t0:.2f} seconds for {n_chunks} chunks",
          file=sys.stderr)
    return 0


# ---- bench --------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    from .bench import run_bench, to_json, to_markdown
    m = _model(args.model, args.threads, args.scan)
    tty = sys.stderr.isatty()

    def progress(test, r, n):
        if tty:
            print(f"\rbench: {test} run {r}/{n}   ", end="", file=sys.stderr, flush=True)
    res = run_bench(m, args.n_prompt, args.n_gen, args.depth, args.reps, progress)
    if tty:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    print(to_json(m, res) if args.output == "json" else to_markdown(m, res))
    return 0


# ---- serve ----------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    import socket
    from .. import server
    lacking = server.missing()
    if lacking:
        raise TinyGGMLError(f"serve needs {', '.join(lacking)}: pip install 'tinyggml[server]'")
    import uvicorn
    if args.chat_template is not None and not os.path.isfile(args.chat_template):
        raise TinyGGMLError(f"{args.chat_template}: no such file (--chat-template)")
    m = _model(args.model, args.threads, n_seq_max=args.parallel)
    name = args.alias or os.path.splitext(os.path.basename(args.model))[0]
    app, engine = server.build(m, parallel=args.parallel, cache_mib=args.cache_mib,
                               chat_template=args.chat_template, model_id=name,
                               ctx_size=args.ctx_size, max_tokens=args.max_tokens,
                               api_key=args.api_key, max_queue=args.queue,
                               prefill_chunk=args.prefill_chunk)
    try:
        sock = socket.create_server((args.host, args.port))
    except OSError as e:
        engine.shutdown()
        raise TinyGGMLError(f"cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    host, port = sock.getsockname()[:2]
    print(f"tinyggml: serving {m.path} as '{name}' on http://{host}:{port} ({args.parallel} "
          f"sequences, {m.n_threads} threads)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="info" if args.verbose else "warning",
                            timeout_graceful_shutdown=args.shutdown_timeout, lifespan="on")
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then raises the signal again for the
    # handler it found: this one notes it, so that a clean shutdown exits 0
    import signal
    caught = []
    before = {sig: signal.signal(sig, lambda n, _f: caught.append(n))
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        engine.shutdown()
    if caught:
        print(f"tinyggml: stopped ({signal.Signals(caught[0]).name})", file=sys.stderr)
    return 0


# ---- quantize / make-model -----------------------------------------------------------------
def quant_type_arg(text: str) -> str:
    from .quantize import resolve_type
    try:
        return resolve_type(text)
    except TinyGGMLError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_quantize(args) -> int:
    from .quantize import quantize_file
    r = quantize_file(args.input, args.output, args.type, n_threads=args.threads,
                      progress=_progress_wanted(args), allow_requantize=args.allow_requantize,
                      dry_run=args.dry_run)
    what = "would write" if args.dry_run else "wrote"
    print(f"{what} {r['dst']}: {r['qtype']}, {r['src_bytes'] / 2**20:.1f} MiB -> "
          f"{r['dst_bytes'] / 2**20:.1f} MiB in {r['seconds']:.1f} s", file=sys.stderr)
    return 0


def cmd_make_model(args) -> int:
    from .make_model import make_model
    r = make_model(args.preset, args.output, args.type, seed=args.seed,
                   progress=_progress_wanted(args))
    print(f"wrote {r['path']}: {args.preset} {args.type}, {r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    return 0


# ---- convert ------------------------------------------------------------------------------
def cmd_convert(args) -> int:
    from .convert import convert
    r = convert(args.hf_dir, args.output, outtype=args.outtype, vocab_from=args.vocab_from,
                progress=_progress_wanted(args), name=args.name)
    print(f"wrote {r['path']}: {r['arch']} ({r['architecture']}), {r['n_tensors']} tensors, "
          f"{r['n_params'] / 1e6:.1f}M parameters, {r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
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


# ---- graph ----------------------------------------------------------------------------------
def cmd_graph(args) -> int:
    from ..alloc import plan_memory
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


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit 2), naming the flag and pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


THREADS = int_arg(1, 1024)
MODEL_HELP = "path to a .gguf model (default: the bundled demo model)"


def _add_model(s, required: bool = False) -> None:
    s.add_argument("-m", "--model", required=required, default=None,
                   help="path to a .gguf model" if required else MODEL_HELP)


def _add_threads(s, what: str = "physical cores") -> None:
    s.add_argument("-t", "--threads", type=THREADS, default=None, metavar="N",
                   help=f"threads, 1-1024 (default: {what})")


def _add_batch(s) -> None:
    s.add_argument("-b", "--batch-size", type=int_arg(1, 1 << 16), default=2048, metavar="N",
                   help="logical batch size (default 2048); graphs run ubatches of at most "
                        "min(-b, -ub) tokens")
    s.add_argument("-ub", "--ubatch-size", type=int_arg(1, 1 << 16), default=512, metavar="N",
                   help="physical batch size: tokens per graph run (default 512)")


def _add_run_args(s) -> None:
    _add_model(s)
    src = s.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="prompt text (with -cnv: the system prompt)")
    src.add_argument("-f", "--file", help="read the prompt from a UTF-8 file")
    s.add_argument("-n", "--n-predict", type=int_arg(-1, INT_MAX, " (-1: until end of text)"),
                   default=128, metavar="N",
                   help="tokens to generate per reply (default 128; -1: until end of text or "
                        "-c)")
    s.add_argument("-c", "--ctx-size", type=int_arg(0, INT_MAX), default=0, metavar="N",
                   help="stop when prompt + generated text reach N tokens (default 0: no limit; "
                        "the state of a state-space model does not grow with the context)")
    _add_threads(s)
    _add_batch(s)
    g = s.add_argument_group("sampling (llama.cpp's order: penalties, top-k, top-p, min-p, "
                             "temperature)")
    g.add_argument("--temp", type=float_arg(0.0, 100.0, meaning=" (0: greedy)"), default=0.8,
                   metavar="T", help="temperature, 0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=int_arg(0, INT_MAX), default=40, metavar="K",
                   help="top-k sampling, 0 = off (default 40)")
    g.add_argument("--top-p", type=float_arg(0.0, 1.0, lo_open=True), default=0.95, metavar="P",
                   help="top-p sampling, 1 = off (default 0.95)")
    g.add_argument("--min-p", type=float_arg(0.0, 1.0), default=0.05, metavar="P",
                   help="min-p sampling, 0 = off (default 0.05)")
    g.add_argument("--repeat-penalty", type=float_arg(0.0, 100.0, lo_open=True), default=1.0,
                   metavar="R", help="penalize repeated tokens, 1 = off (default 1.0)")
    g.add_argument("--repeat-last-n", type=int_arg(-1, INT_MAX, " (-1: the context size)"),
                   default=64, metavar="N",
                   help="recent tokens the penalties look at (default 64; 0 = off, -1 = -c)")
    g.add_argument("--presence-penalty", type=float_arg(-100.0, 100.0), default=0.0,
                   metavar="A", help="presence penalty, 0 = off (default 0)")
    g.add_argument("--frequency-penalty", type=float_arg(-100.0, 100.0), default=0.0,
                   metavar="A", help="frequency penalty, 0 = off (default 0)")
    g.add_argument("-s", "--seed", type=int_arg(-1, 2**32 - 1, " (-1: random)"), default=-1,
                   metavar="S", help="random seed (default -1: a random one, printed)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="keep generating past end-of-text (as llama-cli --ignore-eos)")
    c = s.add_argument_group("conversation")
    c.add_argument("-i", "--interactive", action="store_true",
                   help="after the prompt, read lines from stdin and continue the same text "
                        "(no chat template)")
    c.add_argument("-cnv", "--conversation", action="store_true",
                   help="chat: each line you type is a user turn rendered with the model's "
                        "chat template; the state is kept between turns (same as `chat`)")
    c.add_argument("-sys", "--system-prompt", metavar="TEXT",
                   help="system message of the conversation (default: -p / -f when given)")
    c.add_argument("--chat-template", "--chat-template-file", metavar="FILE", dest="chat_template",
                   help="Jinja2 chat template file (default: the GGUF's tokenizer.chat_template, "
                        "else plain 'User: / Assistant:' lines)")
    k = s.add_argument_group("prompt cache")
    k.add_argument("--prompt-cache", metavar="FILE",
                   help="session file: resume from the longest prefix of the prompt saved there, "
                        "and save the state after the prompt (as llama-cli's --prompt-cache)")
    k.add_argument("--prompt-cache-all", action="store_true",
                   help="with --prompt-cache: also save the state after the generated text")
    k.add_argument("--prompt-cache-ro", action="store_true",
                   help="with --prompt-cache: read the file, never write it")
    o = s.add_argument_group("output and llama.cpp compatibility")
    o.add_argument("--no-display-prompt", dest="display_prompt", action="store_false",
                   help="do not print the prompt before the generated text")
    o.add_argument("-e", "--escape", action="store_true", default=True,
                   help="process escapes (\\n, \\t, \\\\, \\xNN, ...) in the prompt (default)")
    o.add_argument("--no-escape", dest="escape", action="store_false",
                   help="take the prompt literally")
    o.add_argument("--log-disable", action="store_true",
                   help="no timings or notes on stderr (errors still)")
    o.add_argument("--no-warmup", action="store_true",
                   help="accepted for llama.cpp compatibility (tinyggml runs no warm-up)")
    o.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", dest="n_gpu_layers", type=ngl_arg,
                   default=None, metavar="N", help="accepted and ignored: tinyggml runs on the CPU")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tinyggml-cli",
               description="tinyggml: run Mamba-1 / Mamba-2 GGUF models on the CPU. "
                           "`tinyggml-cli COMMAND --help` describes each command.")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("run", help="generate text from a prompt (or chat, with -cnv)",
                       description="Generate text after a prompt. Text streams to stdout; timings "
                                   "go to stderr. Stops at end-of-text, after -n tokens, at -c, "
                                   "or on Ctrl-C (timings are still printed, exit 130).")
    _add_run_args(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("chat", help="chat with a model (run --conversation)",
                       description="Chat: each line you type is a user turn, rendered with the "
                                   "model's chat template (Jinja2); the conversation's state is "
                                   "kept between turns, so a turn evaluates only its new tokens. "
                                   + CHAT_HELP + ".")
    _add_run_args(s)
    s.set_defaults(func=cmd_chat, conversation=True)

    s = sub.add_parser("perplexity", help="perplexity of a text file (as llama-perplexity)",
                       description="Perplexity over chunks of -c tokens, scoring the second "
                                   "half of each chunk, as llama-perplexity does. Prints the "
                                   "running value per chunk, the time per pass with an estimate "
                                   "of the time left, and the final estimate.")
    _add_model(s)
    s.add_argument("-f", "--file", required=True, help="UTF-8 text file")
    s.add_argument("-c", "--ctx-size", "--ctx", dest="ctx_size", type=int_arg(4, 1 << 20),
                   default=512, metavar="N", help="tokens per chunk (default 512)")
    s.add_argument("--chunks", type=int_arg(-1, INT_MAX), default=-1, metavar="N",
                   help="score at most N chunks (default -1: all)")
    s.add_argument("--kl-base", metavar="BASE.gguf",
                   help="also compare with this model (e.g. the F32 original): mean KL divergence "
                        "and top-1 agreement, as llama-perplexity --kl-divergence")
    _add_threads(s)
    _add_batch(s)
    s.set_defaults(func=cmd_perplexity)

    s = sub.add_parser("bench", help="measure prompt (ppN) and generation (tgN) speed",
                       description="llama-bench style: ppN evaluates N prompt tokens at once, tgN "
                                   "generates N tokens one by one (after -d tokens of context); "
                                   "median and range over -r runs, plus peak RSS and state bytes.")
    _add_model(s)
    s.add_argument("-p", "--n-prompt", type=int_list_arg(), default=[512], metavar="N[,N...]",
                   help="prompt sizes (default 512; 0 = none)")
    s.add_argument("-n", "--n-gen", type=int_list_arg(), default=[128], metavar="N[,N...]",
                   help="generation lengths (default 128; 0 = none)")
    s.add_argument("-d", "--depth", type=int_list_arg(), default=[0], metavar="N[,N...]",
                   help="context tokens before the tg tests (default 0)")
    _add_threads(s)
    s.add_argument("-r", "--reps", type=int_arg(1, 1000), default=5, metavar="N",
                   help="repetitions (default 5)")
    s.add_argument("-o", "--output", choices=["md", "json"], default="md",
                   help="output format (default md)")
    s.add_argument("--scan", choices=["auto", "recurrent", "chunked"], default="auto",
                   help="Mamba-2 prompt scan: chunked (SSD) for sequences of >= 8 tokens in a "
                        "ubatch (auto, default), or one algorithm throughout")
    s.set_defaults(func=cmd_bench)

    from .make_model import PRESETS, TYPES
    from .quantize import TYPE_NAMES
    s = sub.add_parser("quantize", help="quantize a GGUF model (llama-quantize's types and presets)",
                       description="Write IN.gguf's 2-D weights as TYPE, with llama-quantize's "
                                   "per-tensor rules (the small Mamba tensors stay F32, the output "
                                   "head gets Q6_K / Q8_0), a line per fallback and a summary of "
                                   "the types written. The output appears only when complete.")
    s.add_argument("input", help="source .gguf (F32, F16 or BF16 weights)")
    s.add_argument("output", help="destination .gguf (its folder must exist)")
    s.add_argument("type", type=quant_type_arg, metavar="TYPE",
                   help="case-insensitive: " + ", ".join(TYPE_NAMES))
    _add_threads(s, "all cores")
    s.add_argument("--allow-requantize", action="store_true",
                   help="allow re-quantizing already quantized tensors (loses precision)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the types and sizes it would write, write nothing")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("make-model", help="write a random-weight model of a real size (benchmarks)",
                       description="A GGUF with random weights in llama.cpp's converter layout, "
                                   "with trained-like statistics (A, dt bias, D), for benchmarks.")
    s.add_argument("preset", choices=list(PRESETS), metavar="PRESET",
                   help="model shape: " + ", ".join(PRESETS))
    s.add_argument("-o", "--output", required=True, help="output .gguf")
    s.add_argument("--type", choices=list(TYPES), default="f32", help="weight type (default f32)")
    s.add_argument("--seed", type=int_arg(0, 2**32 - 1), default=0, help="random seed (default 0)")
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
    s.add_argument("--vocab-from", metavar="GGUF",
                   help="take the tokenizer of this GGUF (checkpoints without one)")
    s.add_argument("--name", help="general.name (default: from the folder name)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("info", help="print a model's metadata, tensors and state size",
                       description="Print a GGUF model's hparams, tensor table (name, type, shape, "
                                   "bytes), recurrent-state bytes per sequence and memory estimate.")
    _add_model(s, required=True)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("graph", help="dump the compute graph of one ubatch",
                       description="List every node of the graph tinyggml records for one ubatch "
                                   "(op, shape, type, bytes, sources, name) and the arena size. "
                                   "DOT output renders to .svg/.png when Graphviz is installed.")
    _add_model(s, required=True)
    s.add_argument("--tokens", type=int_arg(1, 1 << 16), default=1, metavar="N",
                   help="tokens in the ubatch, all sequences (default 1)")
    s.add_argument("--seqs", type=int_arg(1, 1 << 16), default=1, metavar="S",
                   help="sequences the ubatch can hold (the size of inp_seq_info; default 1)")
    s.add_argument("--format", choices=["text", "dot", "json"],
                   help="output format (default: from the -o suffix, else text)")
    s.add_argument("-o", "--output", help="output file (.txt, .json, .dot, .svg, .png); default stdout")
    s.set_defaults(func=cmd_graph)
    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (continuous batching, "
                                     "prefix reuse)",
                       description="Serve the model over HTTP: POST /v1/completions and "
                                   "/v1/chat/completions (OpenAI's API, streaming as server-sent "
                                   "events), GET /v1/models, /health, /metrics (Prometheus), POST "
                                   "/tokenize and /detokenize. Every running request advances in "
                                   "the same graph run each step; prompts resume from the prefix "
                                   "cache. Needs the server extra: pip install 'tinyggml[server]'.")
    _add_model(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int_arg(0, 65535), default=8080, metavar="N",
                   help="port (default 8080; 0: any free port, printed)")
    _add_threads(s)
    s.add_argument("-np", "--parallel", type=int_arg(1, 256), default=4, metavar="N",
                   help="sequences evaluated together (default 4); more requests wait in a queue")
    s.add_argument("--queue", type=int_arg(0, 1 << 16), default=64, metavar="N",
                   help="requests that may wait for a sequence (default 64); beyond: 503")
    s.add_argument("--cache-mib", type=int_arg(0, 1 << 24), default=1024, metavar="M",
                   help="prefix cache budget in MiB (default 1024; 0: no reuse)")
    s.add_argument("--api-key", metavar="KEY", help="require Authorization: Bearer KEY")
    s.add_argument("--max-tokens", type=int_arg(1, INT_MAX), default=1024, metavar="N",
                   help="the most tokens a request may generate (default 1024)")
    s.add_argument("-c", "--ctx-size", type=int_arg(2, INT_MAX), default=8192, metavar="N",
                   help="prompt + max_tokens limit per request (default 8192)")
    s.add_argument("--prefill-chunk", type=int_arg(1, 1 << 16), default=256, metavar="N",
                   help="prompt tokens evaluated per step beside the running streams (default 256)")
    s.add_argument("--chat-template", "--chat-template-file", metavar="FILE", dest="chat_template",
                   help="Jinja2 chat template file (default: the GGUF's tokenizer.chat_template, "
                        "else plain 'User: / Assistant:' lines)")
    s.add_argument("--alias", metavar="NAME",
                   help="the model's name in the API (default: the file name without .gguf)")
    s.add_argument("--shutdown-timeout", type=float_arg(0.0, 3600.0), default=30.0, metavar="S",
                   help="on SIGTERM / Ctrl-C, seconds running requests may take to finish "
                        "(default 30); then they are cancelled")
    s.add_argument("-v", "--verbose", action="store_true", help="log every request")
    s.set_defaults(func=cmd_serve)

    for name in ("run", "chat", "perplexity", "bench", "info", "graph", "serve"):
        sub.choices[name].add_argument(
            "--no-memory-check", action="store_true",
            help="load even when the memory estimate exceeds the available memory")
    return p


def _check_combinations(parser, args) -> None:
    """Rules between flags: usage errors too."""
    sub = parser._subparsers._group_actions[0].choices[args.cmd]
    if args.cmd in ("run", "chat"):
        conv = args.conversation
        if not conv and args.prompt is None and args.file is None and not args.interactive:
            sub.error("give a prompt with -p PROMPT or -f FILE (or use -i / -cnv)")
        if (args.prompt_cache_all or args.prompt_cache_ro) and not args.prompt_cache:
            sub.error("--prompt-cache-all and --prompt-cache-ro need --prompt-cache FILE")
        if conv and args.prompt_cache:
            sub.error("--prompt-cache is for plain runs; in conversation mode use /save FILE "
                      "and /load FILE")
        if conv and args.interactive:
            sub.error("-i continues plain text and -cnv chats with a template: choose one")
        if not conv and (args.system_prompt is not None or args.chat_template is not None):
            sub.error("-sys and --chat-template need -cnv (or the chat command)")
    if args.cmd == "graph" and args.seqs > args.tokens:
        sub.error(f"--seqs ({args.seqs}) cannot exceed --tokens ({args.tokens})")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "model", "x") is None:
        args.model = default_model()
    _check_combinations(parser, args)
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
