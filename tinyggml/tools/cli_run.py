"""tinyggml-cli run and chat: generation, interactive continuation, conversations with a chat
template, the prompt cache (session file) and llama.cpp-style timings."""
from __future__ import annotations

import os
import secrets
import sys

from ..errors import TinyGGMLError, check_utf8
from .cli_util import INT_MAX, load_model, process_escapes, read_text


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
            for e in decode(blob, m.fingerprint, m.memory.state_bytes, m.n_vocab, what=path):
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
    # one sequence: a state slot per layer for it alone (the first run touches only its pages)
    m = load_model(args.model, args.threads, n_seq_max=1,
                   n_ubatch=min(args.batch_size, args.ubatch_size), n_ctx=args.ctx_size or None,
                   kv_type=args.kv_type)
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
    prompt = args.prompt if args.prompt is not None else read_text(args.file) if args.file else ""
    if args.escape:
        prompt = process_escapes(prompt)
    check_utf8(prompt, "the prompt")
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
            code = _interactive(m, params, args, timings, out)
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


def _interactive(m, params, args, timings, out) -> int:
    """Read a line, continue the same sequence with it (no chat template: see --conversation),
    generate; Ctrl-C stops a reply, Ctrl-D (end of input) ends the session, and so does -c
    when the sequence reaches it."""
    from ..generate import Generation
    first = True
    while True:
        try:
            line = _read_turn()
        except KeyboardInterrupt:
            return 130
        if line is None:
            return 0
        ids = m.tokenize(check_utf8(line, "the input") + "\n", add_bos=first and not timings)
        first = False
        n = args.n_predict if args.n_predict >= 0 else 1 << 62
        if args.ctx_size:
            room = args.ctx_size - m.n_past(0) - len(ids)
            if room <= 0:
                _note(args, f"the context (-c {args.ctx_size}) is full")
                return 0
            n = min(n, room)
        g = Generation(m, ids, params, n, reset=not timings, ignore_eos=args.ignore_eos)
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
        system = read_text(args.file)
    if system is not None and args.escape:
        system = process_escapes(system)
    if system is not None:
        check_utf8(system, "the system prompt")
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
                reply.close()                # the reply so far is kept as the turn's reply
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
