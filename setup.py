"""Build the Cython/C backend with OpenMP and -O3.

By default the kernels are compiled for the build machine (-march=native, like GGML_NATIVE).
Set TINYGGML_PORTABLE=1 for a portable build (baseline x86-64, scalar kernels),
TINYGGML_NO_OPENMP=1 for a compiler without OpenMP, and TINYGGML_SANITIZE=1 for a build with
AddressSanitizer and UndefinedBehaviorSanitizer (tests run under it with the ASan runtime
preloaded: see README).
"""
import os
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

KERNELS = "tinyggml/backend/kernels"

cflags = ["-O3", "-std=c11", "-Wno-unused-function", "-Werror=implicit-function-declaration"]
ldflags = []
if os.environ.get("TINYGGML_PORTABLE", "") in ("", "0"):
    cflags.append("-march=native")
if os.environ.get("TINYGGML_SANITIZE", "") not in ("", "0"):
    # AddressSanitizer + UndefinedBehaviorSanitizer, any finding fatal (README: how to run)
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    cflags += san + ["-O1", "-g"]
    ldflags += san
if os.environ.get("TINYGGML_NO_OPENMP", "") in ("", "0"):
    cflags.append("-fopenmp")
    ldflags.append("-fopenmp")

ext = Extension(
    "tinyggml.backend._backend",
    sources=["tinyggml/backend/_backend.pyx"] + [f"{KERNELS}/{f}" for f in
                                                 ("ops.c", "mul_mat.c", "ssm.c", "attn.c", "quants.c", "repack.c", "compute.c")],
    include_dirs=[KERNELS],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    depends=[f"{KERNELS}/{f}" for f in ("tg.h", "internal.h", "simd.h", "quants.h")],
)
# the GGUF reader's string arrays (a vocabulary: 100k strings walked and decoded in C)
strings = Extension("tinyggml._strings", sources=["tinyggml/_strings.pyx"],
                    extra_compile_args=["-O2"])



def _record_commit():
    """tinyggml/_build.py: the git commit this build comes from (for `tinyggml-cli --version`
    after a plain `pip install .`, where the checkout is gone)."""
    commit = ""
    if os.path.isdir(".git"):
        try:
            r = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                               text=True, timeout=10)
            d = subprocess.run(["git", "status", "--porcelain", "-uno"], capture_output=True,
                               text=True, timeout=10)
            if r.returncode == 0:
                commit = r.stdout.strip() + ("-dirty" if d.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    with open(os.path.join("tinyggml", "_build.py"), "w") as f:
        f.write(f'"""Written by setup.py."""\nCOMMIT = {commit!r}\n')


_record_commit()

# The bundled demo model (models/*.gguf) ships inside the package as tinyggml.demo_models, so
# `tinyggml-cli run` finds it after a plain `pip install .` too.
setup(
    ext_modules=cythonize([ext, strings], language_level=3),
    packages=find_packages(include=["tinyggml", "tinyggml.*"]) + ["tinyggml.demo_models"],
    package_dir={"tinyggml.demo_models": "models"},
    package_data={"tinyggml.backend": ["kernels/*.h", "kernels/*.c", "*.pxd", "*.pyx"],
                  "tinyggml.demo_models": ["*.gguf", "*.md", "*.json"]},
)
