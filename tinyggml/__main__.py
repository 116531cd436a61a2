"""`python -m tinyggml ...` is `tinyggml-cli ...`."""
import sys

from .tools.cli import main

sys.exit(main())
