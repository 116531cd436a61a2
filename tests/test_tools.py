"""The benchmark tools run and reject bad input cleanly (no timing is asserted: speed lives in
BENCHMARKS.md). Tiny shapes, one repetition."""
import importlib.util
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_matmul_reports_every_shape(capsys):
    bench = load("bench_matmul")
    shapes = ["16x64x7xf32", "16x64x7xf16", "16x64x7xq4_0", "16x256x1xq4_k", "16x64x1xq8_0"]
    assert bench.main(shapes + ["-t", "2", "-r", "1"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [ln.split(":")[0] for ln in lines] == shapes
    for ln in lines:
        assert "best" in ln and "GFLOP/s" in ln
        n = int(ln.split(":")[0].split("x")[2])
        assert ("GB/s" in ln) == (n == 1)                 # decode shapes: weight bandwidth too


@pytest.mark.parametrize("bad, msg", [("16x64x7", "is not MxKxNxTYPE"), ("16x64x7xq9", "unknown type"),
                                      ("0x64x7xf32", "must be positive")])
def test_bench_matmul_rejects_bad_shapes(bad, msg):
    with pytest.raises(SystemExit, match=msg):
        load("bench_matmul").main([bad])


def test_bench_matmul_block_mismatch_is_an_error(capsys):
    assert load("bench_matmul").main(["16x100x7xq4_0", "-r", "1"]) == 1
    assert "blocks of 32" in capsys.readouterr().err


@pytest.mark.parametrize("nt", [1, 2, 3])
def test_read_bandwidth_probe(nt):
    """The roofline's bandwidth probe runs with 1 or 4 streams per thread, on a size that leaves
    leftover floats; a stream count it does not have is refused."""
    from tinyggml.backend import measure_read_bandwidth
    for streams in (1, 4):
        assert measure_read_bandwidth(4 * 1_000_003, nt, 1, streams=streams) > 0
    with pytest.raises(ValueError, match="streams"):
        measure_read_bandwidth(1 << 20, nt, 1, streams=3)
