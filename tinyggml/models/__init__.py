"""Graph definitions, one module per architecture (GGUF `general.architecture`)."""
from . import mamba, mamba2

ARCH_MODULES = {"mamba": mamba, "mamba2": mamba2}
