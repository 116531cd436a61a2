#!/usr/bin/env python3
"""Write a small random Mamba / Mamba-2 GGUF in llama.cpp's converter layout (for trying the
runtime and the graph tool without downloading anything).

    python tools/make_random_model.py OUT.gguf [--arch mamba2] [--n-embd 64] [--n-layer 2] ...
"""
import argparse

from tinyggml.tools.testing import write_random_model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--arch", choices=["mamba", "mamba2", "falcon-mamba"], default="mamba2")
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=16, help="Mamba-2 only")
    p.add_argument("--n-group", type=int, default=1, help="Mamba-2 only")
    p.add_argument("--n-vocab", type=int, default=1024)
    p.add_argument("--type", choices=["f32", "f16"], default="f32")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    kw = dict(n_embd=a.n_embd, n_layer=a.n_layer, d_state=a.d_state, n_vocab=a.n_vocab,
              wtype=a.type, seed=a.seed)
    if a.arch == "mamba2":
        kw.update(head_dim=a.head_dim, n_group=a.n_group)
    arch = "mamba2" if a.arch == "mamba2" else "mamba"
    hp = write_random_model(a.out, arch, dt_b_c_rms=a.arch == "falcon-mamba", **kw)
    print(f"wrote {a.out}: {a.arch} {hp}")


if __name__ == "__main__":
    main()
