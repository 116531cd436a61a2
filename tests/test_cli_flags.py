"""Every flag of every tinyggml-cli command, with bad values: a usage error (exit 2) in one line
naming the flag, never a traceback. And the README's synopsis agrees with --help."""
import argparse
import re
from pathlib import Path

import pytest

from tinyggml.tools import cli

# options that take free text (paths, prompts, names): nothing to range-check
TEXT_OPTIONS = {"model", "prompt", "file", "system_prompt", "chat_template", "prompt_cache",
                "kl_base", "output", "vocab_from", "name", "input", "hf_dir", "host", "api_key",
                "alias"}


def subcommands():
    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return p, sub.choices


def value_actions(parser):
    """Actions of a subparser that take a value (options and positionals)."""
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction,
                          argparse._StoreFalseAction)) or a.nargs == 0:
            continue
        yield a


def bad_values(action):
    """Values the flag must refuse: outside its bounds, not numbers, NaN / inf, empty."""
    if action.choices is not None:
        return ["bogus", "", "-1"]
    bounds = getattr(action.type, "bounds", None)
    if bounds is None:
        return ["bogus"]
    lo, hi = bounds
    vals = ["abc", "", "nan", "inf", "-inf", "1e999"]
    if lo is not None:
        vals.append(str(lo - 1) if isinstance(lo, int) else repr(lo - 1.0))
    if hi is not None:
        vals.append(str(hi + 1) if isinstance(hi, int) else repr(hi * 2 + 1.0))
        vals.append("9" * 30)
    if isinstance(lo, int) or isinstance(hi, int):
        vals.append("1.5")
    return vals


def argv_with(cmd, action, value):
    """A command line where `action` gets `value` before anything else could fail."""
    if action.option_strings:
        return [cmd, action.option_strings[0], value]
    # positionals: fill the ones before it with harmless text
    sub = subcommands()[1][cmd]
    pos = [a for a in sub._actions if not a.option_strings and a.nargs != 0
           and not isinstance(a, argparse._HelpAction)]
    before = ["x"] * [a.dest for a in pos].index(action.dest)
    return [cmd, *before, value]


CASES = []
for _cmd, _sub in subcommands()[1].items():
    for _a in value_actions(_sub):
        if _a.dest in TEXT_OPTIONS:
            continue
        for _v in bad_values(_a):
            CASES.append(pytest.param(_cmd, _a.dest, _v, id=f"{_cmd}-{_a.dest}-{_v[:12]}"))


@pytest.mark.parametrize("cmd,dest,value", CASES)
def test_bad_value_is_one_line_usage_error(cmd, dest, value, capsys):
    sub = subcommands()[1][cmd]
    action = next(a for a in sub._actions if a.dest == dest)
    with pytest.raises(SystemExit) as e:
        cli.main(argv_with(cmd, action, value))
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tinyggml-cli {cmd}: error: ")
    names = action.option_strings or [action.metavar or action.dest]
    assert any(n in lines[0] for n in names), lines[0]


def test_every_value_flag_is_checked():
    """A new numeric flag without a range check fails here: every option taking a value has
    choices, a checking type (with bounds) or is free text listed above."""
    for cmd, sub in subcommands()[1].items():
        for a in value_actions(sub):
            if a.dest in TEXT_OPTIONS or a.choices is not None:
                continue
            assert a.type is not None and a.type not in (int, float, str), (cmd, a.dest)


def test_checks_match_llama_cpp_meanings():
    _, subs = subcommands()
    run = subs["run"]
    args = run.parse_args(["-p", "x", "--seed", "-1", "-n", "-1", "-ngl", "99", "-c", "64",
                           "-b", "256", "-ub", "128", "--no-warmup", "--log-disable",
                           "--repeat-last-n", "-1", "--temp", "0"])
    assert args.seed == -1 and args.n_predict == -1 and args.n_gpu_layers == "99"
    assert args.ctx_size == 64 and args.batch_size == 256 and args.ubatch_size == 128
    for bad in (["--temp", "-1"], ["-n", "-2"], ["--top-p", "0"], ["--min-p", "1.5"],
                ["--repeat-penalty", "0"], ["--top-k", "-3"], ["--seed", "-2"],
                ["--seed", str(2**32)], ["-t", "0"], ["-ngl", "x"]):
        with pytest.raises(SystemExit):
            run.parse_args(["-p", "x", *bad])


@pytest.mark.parametrize("argv,needle", [
    (["run", "-p", "x", "--prompt-cache-ro"], "--prompt-cache"),
    (["run", "-p", "x", "-sys", "be brief"], "-cnv"),
    (["chat", "--prompt-cache", "f"], "/save"),
    (["run", "-cnv", "-i"], "-i"),
    (["run"], "-p PROMPT"),
    (["graph", "-m", "x", "--tokens", "2", "--seqs", "3"], "--seqs"),
])
def test_flag_combinations_are_usage_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_escapes_as_llama_cpp():
    assert cli.process_escapes(r"a\nb\tc\\n\x41\q") == "a\nb\tc\\nA\\q"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    import tinyggml.backend as b
    assert out.startswith("tinyggml ")
    assert ("AVX2/FMA/F16C" in out) == bool(b.simd_compiled())
    assert "kernels:" in out and "python" in out


# ---- README and --help agree ------------------------------------------------------------------
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_synopsis() -> dict:
    """{command: synopsis text} from the README's "Command line" block."""
    text = README.read_text()
    block = text.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    out, cmd = {}, None
    for line in block.splitlines():
        m = re.match(r"tinyggml-cli (\S+)(.*)", line)
        if m:
            cmd = m.group(1)
            out[cmd] = m.group(2).split("#")[0]
        elif cmd and line.startswith(" "):
            out[cmd] += " " + line.split("#")[0]
    return out


def test_readme_synopsis_matches_help():
    _, subs = subcommands()
    syn = readme_synopsis()
    assert syn.pop("--version", None) is not None, "README: tinyggml-cli --version is missing"
    assert set(syn) == set(subs), f"README lists {sorted(syn)}, the CLI has {sorted(subs)}"
    for cmd, text in syn.items():
        sub = subs[cmd]
        by_flag = {o: a for a in sub._actions for o in a.option_strings}
        for flag, value in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)(?:[ =]([^\s\]|]+(?:\|[^\s\]]+)*))?", text):
            assert flag in by_flag, f"README: `{cmd} {flag}` is not a flag of {cmd}"
            a = by_flag[flag]
            if not value or a.nargs == 0 or value.isupper() or not re.search(r"[a-z0-9]", value):
                continue                      # a metavar (N, FILE, ...) or a flag without value
            if "|" in value:                  # choices written out: all of them, in any order
                assert a.choices is not None and set(value.split("|")) == set(a.choices), (cmd, flag)
                continue
            if re.fullmatch(r"[\d.,-]+", value):   # a number: the default --help gives
                default = a.default
                shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
                assert value == shown, f"README shows `{cmd} {flag} {value}`, the default is {shown}"


def test_every_help_renders():
    _, subs = subcommands()
    for cmd, sub in subs.items():
        text = sub.format_help()
        assert text.startswith(f"usage: tinyggml-cli {cmd}")
        assert " ".join(sub.description.split()[:4]) in " ".join(text.split())
        for a in sub._actions:
            assert a.help, f"{cmd} {a.dest} has no help"
