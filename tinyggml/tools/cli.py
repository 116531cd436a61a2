"""tinyggml-cli: the command line (`tinyggml-cli --help`, `tinyggml-cli COMMAND --help`).

Commands: run (and chat = run --conversation), perplexity, bench, info, graph, convert,
quantize, make-model, serve. Flags follow llama.cpp's names and meanings where they exist.
Every value is checked when the command line is parsed: a bad one is a usage error (exit 2) in
one line that names the flag and what it accepts; errors found later (a missing file, a damaged
model) are one line and exit 1; Ctrl-C is exit 130. The commands live in cli_run.py and
cli_commands.py, the value checks in cli_util.py.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import TinyGGMLError
from . import cli_util
from .cli_commands import (cmd_bench, cmd_convert, cmd_graph, cmd_info, cmd_make_model,
                           cmd_perplexity, cmd_quantize, cmd_serve, quant_type_arg)
from .cli_run import CHAT_HELP, cmd_chat, cmd_run
from .cli_util import (INT_MAX, Version, default_model, float_arg, int_arg, int_list_arg,  # noqa: F401
                       ngl_arg, process_escapes, version_text)


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit 2), naming the flag and pointing at --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


THREADS = int_arg(1, 1024)
MODEL_HELP = "path to a .gguf model (default: the bundled demo model)"


def _add_model(s, required: bool = False) -> None:
    s.add_argument("-m", "--model", required=required, default=None,
                   help="path to a .gguf model" if required else MODEL_HELP)


def _add_threads(s, what: str = "up to the physical cores, each graph run on the count that is fastest at the moment") -> None:
    s.add_argument("-t", "--threads", type=THREADS, default=None, metavar="N",
                   help=f"threads, 1-1024 (default: {what})")


def _add_batch(s) -> None:
    s.add_argument("-b", "--batch-size", type=int_arg(1, 1 << 16), default=2048, metavar="N",
                   help="logical batch size (default 2048); graphs run ubatches of at most "
                        "min(-b, -ub) tokens")
    s.add_argument("-ub", "--ubatch-size", type=int_arg(1, 1 << 16), default=512, metavar="N",
                   help="physical batch size: tokens per graph run (default 512)")


def _add_kv_type(s) -> None:
    s.add_argument("--kv-type", choices=("f16", "f32"), default="f16",
                   help="cells of the KV cache of attention layers (hybrid models): f16 (default, "
                        "half the memory, as llama.cpp) or f32")


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
                   help="stop when prompt + generated text reach N tokens; for models with "
                        "attention layers (hybrids) also the size of the KV cache (default 0: "
                        "no limit for pure state-space models, whose state does not grow with "
                        "the context; the model's context length for hybrids)")
    _add_kv_type(s)
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
    _add_compat(o)


def _add_compat(s) -> None:
    """llama.cpp flags that mean nothing here, accepted so that its command lines work."""
    s.add_argument("--no-warmup", action="store_true",
                   help="accepted for llama.cpp compatibility (tinyggml runs no warm-up)")
    s.add_argument("-ngl", "--gpu-layers", "--n-gpu-layers", dest="n_gpu_layers", type=ngl_arg,
                   default=None, metavar="N", help="accepted and ignored: tinyggml runs on the CPU")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tinyggml-cli",
               description="tinyggml: run Mamba-1 / Mamba-2 and hybrid (Granite-4.0-H, "
                           "Falcon-H1, Nemotron-H) GGUF models on the CPU. "
                           "`tinyggml-cli COMMAND --help` describes each command.")
    p.add_argument("--version", action=Version)
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
    _add_kv_type(s)
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
    s.add_argument("--seqs", type=int_list_arg(1, 256), default=[1], metavar="S[,S...]",
                   help="sequences decoded together in the tg tests, each at its own depth "
                        "(default 1); t/s is their aggregate, also shown per sequence")
    _add_threads(s)
    s.add_argument("-r", "--reps", type=int_arg(1, 1000), default=5, metavar="N",
                   help="repetitions (default 5)")
    s.add_argument("-o", "--output", choices=["md", "json"], default="md",
                   help="output format (default md)")
    s.add_argument("--scan", choices=["auto", "recurrent", "chunked"], default="auto",
                   help="Mamba-2's scan and Qwen3.5's delta rule over prompts: in chunks for "
                        "sequences of >= 8 tokens in a ubatch (auto, default), or one algorithm "
                        "throughout")
    _add_kv_type(s)
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
    s.add_argument("--distinct-layers", type=int_arg(0, 2**31 - 1), default=0, metavar="N",
                   help="quantize only layers 0..N-1 and repeat their bytes in the later layers "
                        "(layer i = layer i %% N): a 7B K-quant file in minutes instead of hours; "
                        "every layer still has its own bytes (default 0: all distinct)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_make_model)

    s = sub.add_parser("convert", help="convert a Hugging Face Mamba or hybrid checkpoint to GGUF",
                       description="Convert a Hugging Face Mamba / Mamba-2 / Falcon-Mamba "
                                   "checkpoint (or Mamba-Codestral's mistral layout: params.json + "
                                   "consolidated.safetensors + tokenizer.model.v3), or a hybrid "
                                   "one: Granite-4.0-H (GraniteMoeHybridForCausalLM, dense), "
                                   "Falcon-H1, Nemotron-H (dense), LFM2 (Lfm2ForCausalLM), "
                                   "Qwen3.5 (dense; Qwen3_5ForCausalLM or the text model of "
                                   "Qwen3_5ForConditionalGeneration), to "
                                   "GGUF, with llama.cpp's names, keys and transforms. No torch "
                                   "needed.")
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
    s.add_argument("-c", "--ctx-size", type=int_arg(1, INT_MAX), default=None, metavar="N",
                   help="hybrid models: the KV cache size to estimate memory for (default: the "
                        "model's context length)")
    _add_kv_type(s)
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
    _add_kv_type(s)
    s.set_defaults(func=cmd_serve)

    for name in ("perplexity", "bench", "serve"):
        _add_compat(sub.choices[name])
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
    cli_util.CHECK_MEMORY = not getattr(args, "no_memory_check", False)
    if getattr(args, "n_gpu_layers", None) is not None and not getattr(args, "log_disable", False):
        print(f"tinyggml: note: -ngl {args.n_gpu_layers} ignored: tinyggml runs on the CPU",
              file=sys.stderr)
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
