"""One truth about tensor types: tensor.TYPES (Python), the kernels' type table
(backend/kernels/quants.c) and gguf-py's GGML_QUANT_SIZES must agree, and every module's type
lists are views of TYPES."""
import gguf

from tinyggml import backend, tensor
from tinyggml.tensor import QACT, QACT_K, TYPES


def test_python_table_equals_the_kernels_table():
    c = backend.type_traits()
    assert set(c) == set(TYPES), "a type one side has and the other lacks"
    for t, info in TYPES.items():
        name, blck, size, quant = c[t]
        assert (name, blck, size, quant) == (info.name, info.blck, info.size, info.quantized), t


def test_file_types_match_gguf():
    for t, info in TYPES.items():
        if t in (QACT, QACT_K):
            continue                                   # internal, never in a file
        gt = gguf.GGMLQuantizationType(t)
        assert gguf.GGML_QUANT_SIZES[gt] == (info.blck, info.size), gt.name
        assert gt.name.lower() == info.name.lower()


def test_derived_lists():
    assert tensor.BLOCK == {t: (i.blck, i.size) for t, i in TYPES.items()}
    assert set(tensor.QUANTIZED) < set(tensor.WEIGHT_TYPES)
    assert all(TYPES[t].blck > 1 for t in tensor.QUANTIZED)
    assert tensor.I32 not in tensor.WEIGHT_TYPES and QACT not in tensor.WEIGHT_TYPES


def test_max_src_shared_with_the_plan():
    """The executor's source / parameter limits come from tg.h, and Plan refuses more."""
    import numpy as np
    import pytest
    from tinyggml.graph import Graph
    from tinyggml.ops import Op
    from tinyggml.tensor import F32, INPUT, Tensor, leaf
    assert backend.MAX_SRC >= 8 and backend.MAX_PARAMS >= 8
    a = leaf(F32, (4,), "a", INPUT, np.zeros(4, np.float32))
    bad = Tensor(F32, (4,), op=Op.ADD, src=(a,) * (backend.MAX_SRC + 1))
    g = Graph()
    g.output(bad)
    with pytest.raises(ValueError, match="sources"):
        backend.Plan(g)
