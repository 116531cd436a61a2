"""llama-quantize's type names and mixtures (tinyggml.tools.quantize): names, per-tensor types,
fallback lines, dry runs, the output checks.

MIXTURES is written out by hand from llama.cpp's src/llama-quant.cpp at 007dbbf3
(llama_ftype_get_default_type, llama_tensor_get_type_impl, tensor_type_fallback), not from the
module's tables. Three small models put a row length of each kind in front of every rule:
  m1  Mamba-1, tied, n_embd 256, dt_rank 32, 2 layers: token_embd is the head (ne0 256); ssm_in
      ne0 256, ssm_out / ssm_x ne0 512, ssm_dt ne0 32 (a K-quant falls back to a 32-block type)
  m2  Mamba-2, untied, n_embd 96: output / token_embd / ssm_in ne0 96, ssm_out ne0 192
      (no multiple of 256 anywhere)
  m3  Mamba-2, untied, n_embd 256: output / token_embd / ssm_in ne0 256, ssm_out ne0 512
Every other tensor (norms, conv1d, ssm_a, ssm_d, biases) stays F32.
"""
import os

import gguf
import numpy as np
import pytest

from tinyggml.errors import TinyGGMLError
from tinyggml.tools.quantize import TYPE_NAMES, quantize_file, resolve_type
from tinyggml.tools.testing import write_random_model

MODELS = {
    "m1": dict(arch="mamba", n_embd=256, n_layer=2, d_state=16, n_vocab=300, dt_rank=32),
    "m2": dict(arch="mamba2", n_embd=96, n_layer=1, d_state=16, n_vocab=300, head_dim=64,
               tied=False),
    "m3": dict(arch="mamba2", n_embd=256, n_layer=1, d_state=16, n_vocab=300, head_dim=64,
               tied=False),
}
COLUMNS = {     # the tensors a MIXTURES row lists, in its order (m1's blk columns: every layer)
    "m1": ["token_embd.weight", "blk.*.ssm_in.weight", "blk.*.ssm_out.weight",
           "blk.*.ssm_x.weight", "blk.*.ssm_dt.weight"],
    "m2": ["output.weight", "token_embd.weight", "blk.0.ssm_in.weight", "blk.0.ssm_out.weight"],
}
COLUMNS["m3"] = COLUMNS["m2"]

# preset: (general.file_type, m1, m2, m3); "*": a fallback from the type the rules want.
# head (output, or m1's tied token_embd): Q6_K, or Q8_0 when the default type's block does not
# divide ne0; with a 32-block default and ne0 % 256 != 0, Q6_K falls back to Q8_0 (m2).
MIXTURES = {
    "Q4_0":   (2, "Q6_K Q4_0 Q4_0 Q4_0 Q4_0", "Q8_0* Q4_0 Q4_0 Q4_0", "Q6_K Q4_0 Q4_0 Q4_0"),
    "Q4_1":   (3, "Q6_K Q4_1 Q4_1 Q4_1 Q4_1", "Q8_0* Q4_1 Q4_1 Q4_1", "Q6_K Q4_1 Q4_1 Q4_1"),
    "MXFP4_MOE": (38, "Q8_0 Q8_0 Q8_0 Q8_0 Q8_0", "Q8_0 Q8_0 Q8_0 Q8_0", "Q8_0 Q8_0 Q8_0 Q8_0"),
    "Q5_0":   (8, "Q6_K Q5_0 Q5_0 Q5_0 Q5_0", "Q8_0* Q5_0 Q5_0 Q5_0", "Q6_K Q5_0 Q5_0 Q5_0"),
    "Q5_1":   (9, "Q6_K Q5_1 Q5_1 Q5_1 Q5_1", "Q8_0* Q5_1 Q5_1 Q5_1", "Q6_K Q5_1 Q5_1 Q5_1"),
    # TQ*: an untied token_embd wants Q4_K
    "TQ1_0":  (36, "Q6_K TQ1_0 TQ1_0 TQ1_0 Q4_0*", "Q8_0 Q5_0* Q4_0* Q4_0*",
               "Q6_K Q4_K TQ1_0 TQ1_0"),
    "TQ2_0":  (37, "Q6_K TQ2_0 TQ2_0 TQ2_0 Q4_0*", "Q8_0 Q5_0* Q4_0* Q4_0*",
               "Q6_K Q4_K TQ2_0 TQ2_0"),
    "Q2_K":   (10, "Q6_K Q2_K Q2_K Q2_K Q4_0*", "Q8_0 Q4_0* Q4_0* Q4_0*", "Q6_K Q2_K Q2_K Q2_K"),
    "Q3_K_S": (11, "Q6_K Q3_K Q3_K Q3_K Q4_0*", "Q8_0 Q4_0* Q4_0* Q4_0*", "Q6_K Q3_K Q3_K Q3_K"),
    "Q3_K_M": (12, "Q6_K Q3_K Q3_K Q3_K Q4_0*", "Q8_0 Q4_0* Q4_0* Q4_0*", "Q6_K Q3_K Q3_K Q3_K"),
    "Q3_K_L": (13, "Q6_K Q3_K Q3_K Q3_K Q4_0*", "Q8_0 Q4_0* Q4_0* Q4_0*", "Q6_K Q3_K Q3_K Q3_K"),
    "Q4_K_S": (14, "Q6_K Q4_K Q4_K Q4_K Q5_0*", "Q8_0 Q5_0* Q5_0* Q5_0*", "Q6_K Q4_K Q4_K Q4_K"),
    "Q4_K_M": (15, "Q6_K Q4_K Q4_K Q4_K Q5_0*", "Q8_0 Q5_0* Q5_0* Q5_0*", "Q6_K Q4_K Q4_K Q4_K"),
    "Q5_K_S": (16, "Q6_K Q5_K Q5_K Q5_K Q5_1*", "Q8_0 Q5_1* Q5_1* Q5_1*", "Q6_K Q5_K Q5_K Q5_K"),
    "Q5_K_M": (17, "Q6_K Q5_K Q5_K Q5_K Q5_1*", "Q8_0 Q5_1* Q5_1* Q5_1*", "Q6_K Q5_K Q5_K Q5_K"),
    "Q6_K":   (18, "Q6_K Q6_K Q6_K Q6_K Q8_0*", "Q8_0 Q8_0* Q8_0* Q8_0*", "Q6_K Q6_K Q6_K Q6_K"),
    "Q8_0":   (7, "Q8_0 Q8_0 Q8_0 Q8_0 Q8_0", "Q8_0 Q8_0 Q8_0 Q8_0", "Q8_0 Q8_0 Q8_0 Q8_0"),
    "F16":    (1, "F16 F16 F16 F16 F16", "F16 F16 F16 F16", "F16 F16 F16 F16"),
    "BF16":   (32, "BF16 BF16 BF16 BF16 BF16", "BF16 BF16 BF16 BF16", "BF16 BF16 BF16 BF16"),
    "F32":    (0, "F32 F32 F32 F32 F32", "F32 F32 F32 F32", "F32 F32 F32 F32"),
    "COPY":   (0, "F32 F32 F32 F32 F32", "F32 F32 F32 F32", "F32 F32 F32 F32"),  # the source's
}
# Q2_K_S is Q2_K's mixture with file type 21, refused without an importance matrix (below)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    for name, cfg in MODELS.items():
        write_random_model(d / f"{name}.gguf", seed=len(name), **cfg)
    return d


def expected(preset: str, model: str):
    """{tensor: (type, fallback?)} for the tensors MIXTURES lists."""
    row = MIXTURES[preset][1 + list(MODELS).index(model)].split()
    want = {}
    for col, cell in zip(COLUMNS[model], row):
        for il in range(MODELS[model]["n_layer"]):
            want[col.replace("*", str(il))] = (cell.rstrip("*"), cell.endswith("*"))
    return want


def types_in(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: gguf.GGMLQuantizationType(t.tensor_type).name for t in r.tensors}


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("preset", list(MIXTURES))
def test_mixture_written(preset, model, models, tmp_path):
    src, out = models / f"{model}.gguf", tmp_path / "out.gguf"
    lines, dry_lines = [], []
    dry = quantize_file(src, None, preset.lower(), dry_run=True, log=dry_lines.append)
    assert os.listdir(tmp_path) == []                                   # the dry run wrote nothing
    summary = quantize_file(src, out, preset, n_threads=2, progress=False, log=lines.append)
    r, written = types_in(out)
    want = expected(preset, model)
    assert {n: written[n] for n in want} == {n: t for n, (t, _) in want.items()}
    assert all(t == "F32" for n, t in written.items() if n not in want)
    assert r.fields["general.file_type"].contents() == MIXTURES[preset][0]
    assert summary["qtype"] == preset
    # fallbacks: the summary, then one log line each before the per-type lines
    fell = [n for n, (_, fb) in want.items() if fb]
    assert [f["name"] for f in summary["fallbacks"]] == fell
    assert [n for n, v in summary["tensors"].items() if v["fallback"]] == fell
    assert [ln.split()[1] for ln in lines if ln.startswith("warning: ")] == fell
    assert (f"WARNING: {len(fell)} of {len(written)} tensor(s) required fallback quantization"
            in lines) == bool(fell)
    # types written: counts and bytes from the file itself
    sizes = {}
    for t in r.tensors:
        name = gguf.GGMLQuantizationType(t.tensor_type).name
        n, b = sizes.get(name, (0, 0))
        sizes[name] = (n + 1, b + int(t.n_bytes))
    assert summary["types"] == sizes
    # the dry run: the same plan and the real file's size
    assert dry["dst_bytes"] == summary["dst_bytes"] == out.stat().st_size
    for key in ("types", "fallbacks", "tensors", "file_type", "qtype"):
        assert dry[key] == summary[key], key
    assert dry["dry_run"] and not summary["dry_run"] and dry["dst"] is None
    assert dry_lines == lines


def test_k_mixtures_match_on_mamba_tensors(models):
    """_S, _M and _L differ only on attention / FFN tensors: here only the file type differs."""
    def plan(name):
        s = quantize_file(models / "m1.gguf", None, name, dry_run=True, log=None)
        return {n: v["type"] for n, v in s["tensors"].items()}
    for group in (["Q3_K_S", "Q3_K_M", "Q3_K_L", "q3_k"], ["Q4_K_S", "Q4_K_M", "q4_k"],
                  ["Q5_K_S", "Q5_K_M", "q5_k"], ["Q2_K", "Q2_K_S"]):
        assert all(plan(g) == plan(group[0]) for g in group[1:]), group


# ---- log lines -------------------------------------------------------------------------------

def test_fallback_and_summary_lines(models):
    lines = []
    s = quantize_file(models / "m2.gguf", None, "Q4_K_M", dry_run=True, log=lines.append)
    q5_0, q8_0 = s["types"]["Q5_0"][1], s["types"]["Q8_0"][1]
    f32 = s["types"]["F32"][1]
    n_el = sum(int(np.prod(v["shape"])) for v in s["tensors"].values())
    assert lines == [
        "warning: token_embd.weight                    - ncols     96 not divisible by 256 "
        "(required for type    Q4_K) -> falling back to    Q5_0",
        "warning: blk.0.ssm_in.weight                  - ncols     96 not divisible by 256 "
        "(required for type    Q4_K) -> falling back to    Q5_0",
        "warning: blk.0.ssm_out.weight                 - ncols    192 not divisible by 256 "
        "(required for type    Q4_K) -> falling back to    Q5_0",
        f"   Q5_0:    3 tensors {q5_0 / 2**20:10.2f} MiB",
        f"   Q8_0:    1 tensors {q8_0 / 2**20:10.2f} MiB",
        f"    F32:    8 tensors {f32 / 2**20:10.2f} MiB",
        f"model size  = {n_el * 4 / 2**20:8.2f} MiB (32.00 BPW)",
        f"quant size  = {(q5_0 + q8_0 + f32) / 2**20:8.2f} MiB "
        f"({(q5_0 + q8_0 + f32) * 8 / n_el:.2f} BPW)",
        "WARNING: 3 of 12 tensor(s) required fallback quantization",
    ]
    assert s["fallbacks"][0] == {"name": "token_embd.weight", "ne0": 96, "wanted": "Q4_K",
                                 "used": "Q5_0"}


@pytest.mark.parametrize("preset,block", [("Q4_K_M", 256), ("Q8_0", 32), ("Q4_0", 32)])
def test_rows_fitting_no_block_fall_back_to_f16(preset, block, tmp_path):
    """Mamba-1 with dt_rank 16: ssm_dt's rows fit neither a K-quant nor its fallback, so F16, as
    llama-quantize does. For a 32-block type llama-quantize stops there ("no tensor type
    fallback is defined"); tinyggml writes F16 (the module's one departure)."""
    src = tmp_path / "m.gguf"
    write_random_model(src, "mamba", n_embd=256, n_layer=1, d_state=16, n_vocab=300, seed=3)
    lines = []
    s = quantize_file(src, tmp_path / "o.gguf", preset, progress=False, log=lines.append)
    want = preset.split("_K")[0] + "_K" if "_K" in preset else preset
    assert lines[0] == (f"warning: blk.0.ssm_dt.weight                  - ncols     16 not "
                        f"divisible by {block:3d} (required for type {want:>7}) (WARNING: must "
                        f"use F16 due to unusual shape) -> falling back to     F16")
    assert s["tensors"]["blk.0.ssm_dt.weight"]["type"] == "F16"
    assert types_in(tmp_path / "o.gguf")[1]["blk.0.ssm_dt.weight"] == "F16"


def test_log_goes_to_stderr_by_default(models, capsys):
    quantize_file(models / "m2.gguf", None, "Q4_0", dry_run=True)
    out, err = capsys.readouterr()
    assert out == "" and "falling back to    Q8_0" in err and "quant size" in err
    quantize_file(models / "m2.gguf", None, "Q4_0", dry_run=True, log=None)
    assert capsys.readouterr() == ("", "")


# ---- names -----------------------------------------------------------------------------------

def test_names_any_case_aliases_and_numbers():
    required = ("Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S "
                "Q5_K_M Q6_K F16 BF16 F32 Q2_K Q3_K Q4_K Q5_K Q6_K").split()
    assert set(required) <= set(TYPE_NAMES)
    for name in TYPE_NAMES:
        assert resolve_type(name.lower()) == resolve_type(name) == resolve_type(name.title())
    aliases = {"q4_k": "Q4_K_M", "Q5_k": "Q5_K_M", "q3_K": "Q3_K_M", "q2_k": "Q2_K",
               "q6_k": "Q6_K", " bf16 ": "BF16"}
    assert {n: resolve_type(n) for n in aliases} == aliases
    # llama-quantize also takes the file type number: the first name listed with it
    numbers = {"2": "Q4_0", "15": "Q4_K_M", "12": "Q3_K_M", "21": "Q2_K_S", "7": "Q8_0",
               "0": "F32", "1": "F16", "32": "BF16"}
    assert {n: resolve_type(n) for n in numbers} == numbers


@pytest.mark.parametrize("name", ["Q4_K_X", "q9_k", "IQ2_XXS", "19", "", "q4-k"])
def test_unknown_name_lists_the_names(name, models, tmp_path):
    listing = "Q4_0, Q4_1, MXFP4_MOE, Q5_0, Q5_1, TQ1_0, TQ2_0, Q2_K, Q2_K_S, Q3_K, Q3_K_S, " \
              "Q3_K_M, Q3_K_L, Q4_K, Q4_K_S, Q4_K_M, Q5_K, Q5_K_S, Q5_K_M, Q6_K, Q8_0, F16, " \
              "BF16, F32, COPY"
    with pytest.raises(TinyGGMLError) as e:
        resolve_type(name)
    assert str(e.value) == f"unknown quantization type {name!r} (choose from {listing})"
    with pytest.raises(TinyGGMLError, match="unknown quantization type"):
        quantize_file(models / "m1.gguf", tmp_path / "o.gguf", name, progress=False)
    assert os.listdir(tmp_path) == []


# ---- refusals and special presets ------------------------------------------------------------

def test_q2_k_s_needs_an_importance_matrix(models, tmp_path):
    """llama-quantize refuses Q2_K tensors in a Q2_K_S file without --imatrix; a dry run warns."""
    src = models / "m3.gguf"
    with pytest.raises(TinyGGMLError, match=r"m3.gguf: Q2_K_S needs an importance matrix .*"
                                            r"blk.0.ssm_in.weight \(Q2_K\)"):
        quantize_file(src, tmp_path / "o.gguf", "q2_k_s", progress=False, log=None)
    assert os.listdir(tmp_path) == []
    lines = []
    s = quantize_file(src, None, "Q2_K_S", dry_run=True, log=lines.append)
    assert lines[0].startswith("WARNING: dry run only: ") and "importance matrix" in lines[0]
    assert s["file_type"] == "MOSTLY_Q2_K_S"
    q2 = quantize_file(src, None, "Q2_K", dry_run=True, log=None)
    assert s["tensors"] == q2["tensors"] and s["dst_bytes"] == q2["dst_bytes"]


def test_copy_keeps_types_and_file_type(models, tmp_path):
    q8 = tmp_path / "q8.gguf"
    quantize_file(models / "m3.gguf", q8, "Q8_0", progress=False, log=None)
    out = tmp_path / "copy.gguf"
    s = quantize_file(q8, out, "COPY", progress=False, log=None)   # no --allow-requantize needed
    r, written = types_in(out)
    assert written == types_in(q8)[1] and s["file_type"] == "MOSTLY_Q8_0"
    assert r.fields["general.file_type"].contents() == 7
    assert out.read_bytes() == q8.read_bytes()


def test_copy_guesses_a_missing_file_type(models, tmp_path):
    """llama_model_loader: the commonest tensor type, marked guessed (F32 here: 0 | 1024)."""
    src = tmp_path / "nokey.gguf"
    r = gguf.GGUFReader(models / "m2.gguf")
    w = gguf.GGUFWriter(str(src), "mamba2")
    for key, field in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = gguf.GGUFValueType(field.types[0])
        sub = gguf.GGUFValueType(field.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    s = quantize_file(src, tmp_path / "o.gguf", "copy", progress=False, log=None)
    assert s["file_type"] == "ALL_F32 (guessed)"
    assert gguf.GGUFReader(tmp_path / "o.gguf").fields["general.file_type"].contents() == 1024


def test_requantize_refusal_says_the_flag(models, tmp_path):
    q8 = tmp_path / "q8.gguf"
    quantize_file(models / "m2.gguf", q8, "Q8_0", progress=False, log=None)
    with pytest.raises(TinyGGMLError) as e:
        quantize_file(q8, tmp_path / "q4.gguf", "Q4_0", progress=False, log=None)
    assert str(e.value).startswith(f"{q8}: tensor ") and str(e.value).endswith(
        "Quantize from the F32/F16/BF16 file, or pass --allow-requantize")
    assert sorted(os.listdir(tmp_path)) == ["q8.gguf"]
    lines = []                                            # a dry run says so and goes on
    s = quantize_file(q8, None, "Q4_0", dry_run=True, log=lines.append)
    warning = [ln for ln in lines if ln.startswith("WARNING: dry run only: ")]
    assert len(warning) == 1 and warning[0].endswith("or pass --allow-requantize")
    assert s["tensors"]["blk.0.ssm_in.weight"]["type"] == "Q4_0"


# ---- the output file -------------------------------------------------------------------------

def test_output_folder_must_exist(models, tmp_path):
    dst = tmp_path / "nope" / "o.gguf"
    with pytest.raises(TinyGGMLError) as e:
        quantize_file(models / "m1.gguf", dst, "Q8_0", progress=False, log=None)
    assert str(e.value) == f"{dst}: folder {tmp_path / 'nope'} does not exist"
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(TinyGGMLError, match=r"file/o.gguf: .*file is not a folder"):
        quantize_file(models / "m1.gguf", tmp_path / "file" / "o.gguf", "Q8_0", log=None)
    with pytest.raises(TinyGGMLError, match="is a folder"):
        quantize_file(models / "m1.gguf", tmp_path, "Q8_0", log=None)
    assert os.listdir(tmp_path) == ["file"]
    # a dry run writes nothing, so it does not look at the output
    assert quantize_file(models / "m1.gguf", dst, "Q8_0", dry_run=True, log=None)["dst_bytes"] > 0


def test_output_must_not_be_the_input(models, tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes((models / "m2.gguf").read_bytes())
    before = src.read_bytes()
    link = tmp_path / "link.gguf"
    link.symlink_to(src)
    for dst in (src, tmp_path / "." / "m.gguf", link):
        with pytest.raises(TinyGGMLError, match="the output would overwrite the input"):
            quantize_file(src, dst, "Q8_0", progress=False, log=None)
    assert src.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["link.gguf", "m.gguf"]
