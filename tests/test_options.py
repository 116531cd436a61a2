"""Graph options: explicit, with a documented default per CPU; importing the backend changes
nothing."""
import importlib

import pytest

import tinyggml
from tinyggml import ops
from tinyggml.options import GraphOptions
from tinyggml.tools.testing import write_random_model


def test_default_per_cpu():
    for vendor in ("Intel", "AMD", ""):
        assert GraphOptions.for_cpu("AVX-512 VNNI", vendor).int_gemm is True
        assert GraphOptions.for_cpu("", vendor).int_gemm is False
    assert GraphOptions.for_cpu("AVX2", "Intel").int_gemm is True
    assert GraphOptions.for_cpu("AVX2", "AMD").int_gemm is False
    assert GraphOptions.for_cpu("AVX2", "").int_gemm is False
    assert GraphOptions.for_cpu("AVX2", "AMD", int_gemm=True, scan="recurrent").int_gemm is True
    # the zmm GEMM tiles everywhere but on AMD's AVX-512 (Zen 4); the scans' wide blocks everywhere
    assert GraphOptions.for_cpu("AVX-512 VNNI", "AMD").wide_gemm is False
    for isa, vendor in (("AVX-512 VNNI", "Intel"), ("AVX-512 VNNI", ""), ("AVX2", "AMD"), ("AVX2", "Intel")):
        assert GraphOptions.for_cpu(isa, vendor).wide_gemm is True
    assert all(GraphOptions.for_cpu(isa, v).wide_scan for isa in ("AVX-512 VNNI", "AVX2", "")
               for v in ("Intel", "AMD", ""))
    assert GraphOptions.for_cpu("AVX-512 VNNI", "AMD", wide_gemm=True).wide_gemm is True


def test_cpu_vendor_from_cpuid():
    import platform
    from tinyggml.backend import cpu_vendor
    if platform.machine() not in ("x86_64", "AMD64", "i686"):
        assert cpu_vendor() == ""
        return
    try:
        with open("/proc/cpuinfo") as f:
            ids = {line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")}
    except OSError:
        pytest.skip("no /proc/cpuinfo to compare with")
    if len(ids) != 1:
        pytest.skip(f"/proc/cpuinfo names {len(ids)} vendors (emulated?)")
    assert cpu_vendor() == {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(ids.pop(), "")


def test_environment_override(monkeypatch):
    monkeypatch.setenv("TINYGGML_INT_GEMM", "1")
    assert GraphOptions.for_cpu().int_gemm is True
    monkeypatch.setenv("TINYGGML_INT_GEMM", "0")
    assert GraphOptions.for_cpu().int_gemm is False
    # the variable replaces only its own choice
    from tinyggml.backend import cpu_vendor, int_gemm_compiled, simd_enabled
    isa = int_gemm_compiled() if simd_enabled() else ""
    assert GraphOptions.for_cpu().wide_gemm == GraphOptions.for_cpu(isa, cpu_vendor()).wide_gemm
    monkeypatch.setenv("TINYGGML_INT_GEMM", "yes")
    with pytest.raises(ValueError, match="TINYGGML_INT_GEMM"):
        GraphOptions.for_cpu()
    monkeypatch.delenv("TINYGGML_INT_GEMM")
    monkeypatch.setenv("TINYGGML_AMX", "0")
    assert GraphOptions.for_cpu().amx is False
    monkeypatch.setenv("TINYGGML_AMX", "on")
    with pytest.raises(ValueError, match="TINYGGML_AMX"):
        GraphOptions.for_cpu()


def test_importing_the_backend_changes_no_module_state():
    before = {k: v for k, v in vars(ops).items() if k.isupper()}
    import tinyggml.backend as b
    importlib.reload(b)
    assert {k: v for k, v in vars(ops).items() if k.isupper()} == before
    assert ops.DEFAULT_OPTIONS == GraphOptions()          # the neutral default, on any CPU


def test_model_options(tmp_path):
    p = tmp_path / "m.gguf"
    write_random_model(p, "mamba2", n_embd=32, n_layer=1, d_state=8, head_dim=8, n_vocab=50)
    m = tinyggml.Model(p, int_gemm=True, scan="chunked", ssd_chunk=7)
    assert (m.options.int_gemm, m.options.scan, m.options.ssd_chunk) == (True, "chunked", 7)
    m2 = tinyggml.Model(p, options=GraphOptions(int_gemm_min_cols=4), scan="recurrent")
    assert m2.options.int_gemm_min_cols == 4 and m2.options.scan == "recurrent"
    with pytest.raises(tinyggml.TinyGGMLError, match="scan"):
        tinyggml.Model(p, scan="fast")
