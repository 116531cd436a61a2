"""tinyggml-cli perplexity, bench, serve, quantize, make-model, convert, info and graph."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from ..errors import TinyGGMLError
from ..state_file import write_atomic
from .cli_util import load_model, progress_wanted, read_text


# ---- perplexity -----------------------------------------------------------------------------
def _eta(seconds: float) -> str:
    return f"{seconds / 60:.2f} minutes" if seconds >= 60 else f"{seconds:.1f} seconds"


def cmd_perplexity(args) -> int:
    from .perplexity import perplexity
    text = read_text(args.file)
    ctx = args.ctx_size
    # a sequence slot per chunk of a ubatch (slots cost memory only once used)
    n_ubatch = min(args.batch_size, args.ubatch_size)
    n_seq = max(8, n_ubatch // ctx)
    m = load_model(args.model, args.threads, n_seq_max=n_seq, n_ubatch=n_ubatch, n_ctx=ctx,
                   kv_type=args.kv_type)
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
        base = load_model(args.kl_base, args.threads, n_seq_max=n_seq, n_ubatch=n_ubatch,
                          n_ctx=ctx, kv_type=args.kv_type)

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
    # the KV cache of hybrids holds the deepest test: its context (batched decode staggers the
    # sequences' depths by 8 tokens) and the tokens it adds
    n_ctx = max(args.depth) + 8 * max(args.seqs) + max(args.n_prompt + args.n_gen + [1])
    m = load_model(args.model, args.threads, args.scan, n_seq_max=max(8, max(args.seqs)),
                   n_ctx=n_ctx, kv_type=args.kv_type)
    tty = sys.stderr.isatty()

    def progress(test, r, n):
        if tty:
            print(f"\rbench: {test} run {r}/{n}   ", end="", file=sys.stderr, flush=True)
    res = run_bench(m, args.n_prompt, args.n_gen, args.depth, args.reps, progress, seqs=args.seqs)
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
    from sse_starlette.sse import AppStatus
    # streams are requests too: on SIGTERM they may finish within --shutdown-timeout (uvicorn's
    # graceful shutdown), rather than sse-starlette closing them at once
    AppStatus.disable_automatic_graceful_drain()
    if args.chat_template is not None and not os.path.isfile(args.chat_template):
        raise TinyGGMLError(f"{args.chat_template}: no such file (--chat-template)")
    m = load_model(args.model, args.threads, n_seq_max=args.parallel, n_ctx=args.ctx_size,
                   kv_type=args.kv_type)
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
                      progress=progress_wanted(args), allow_requantize=args.allow_requantize,
                      dry_run=args.dry_run)
    what = "would write" if args.dry_run else "wrote"
    print(f"{what} {r['dst']}: {r['qtype']}, {r['src_bytes'] / 2**20:.1f} MiB -> "
          f"{r['dst_bytes'] / 2**20:.1f} MiB in {r['seconds']:.1f} s", file=sys.stderr)
    return 0


def cmd_make_model(args) -> int:
    from .make_model import make_model
    r = make_model(args.preset, args.output, args.type, seed=args.seed,
                   progress=progress_wanted(args), distinct_layers=args.distinct_layers)
    print(f"wrote {r['path']}: {args.preset} {args.type}, {r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    return 0


# ---- convert ------------------------------------------------------------------------------
def cmd_convert(args) -> int:
    from .convert import convert
    r = convert(args.hf_dir, args.output, outtype=args.outtype, vocab_from=args.vocab_from,
                progress=progress_wanted(args), name=args.name)
    print(f"wrote {r['path']}: {r['arch']} ({r['architecture']}), {r['n_tensors']} tensors, "
          f"{r['n_params'] / 1e6:.1f}M parameters, {r['bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    return 0


# ---- info -----------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from ..gguf_file import _type_name
    m = load_model(args.model, n_ctx=args.ctx_size, kv_type=args.kv_type)
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
    kv = m.memory.bytes_per_token
    if kv:
        out.append(f"KV cache: {kv} bytes per token ({m.kv_type}), {kv * m.n_ctx / 2**20:.1f} MiB "
                   f"per sequence at n_ctx {m.n_ctx} (-c), allocated as the context grows")
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
    m = load_model(args.model, n_seq_max=args.seqs)
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
