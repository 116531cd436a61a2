"""Model definitions, one module per architecture (GGUF `general.architecture`), as llama.cpp's
src/models/*.cpp. Each module has:

    ARCH                      the GGUF architecture name
    read_hparams(f)           its HParams (common.HParams + its own keys), validated
    load_tensors(f, hp)       {name: weight leaf}, zero-copy views of the mmapped file
    make_memory(hp, n_seq_max, n_ctx, kv_type)  the per-sequence memory its layers read and
                              write (memory.py); n_ctx, kv_type: the KV cache of attention layers
    build_graph(ctx)          the forward graph of one ubatch in a common.GraphContext -> logits

Adding an architecture is one new module and a line in ARCHS.
"""
from . import falcon_h1, granitehybrid, lfm2, mamba, mamba2, nemotron_h, qwen35

ARCHS = {m.ARCH: m for m in (mamba, mamba2, granitehybrid, falcon_h1, nemotron_h, lfm2, qwen35)}
