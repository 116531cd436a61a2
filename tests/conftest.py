"""Shared test settings. The reference fixtures live in ../shared/fixtures (see its README);
point TINYGGML_FIXTURES elsewhere to use another copy. Tests that need them skip with the
reason when they are absent (a fresh clone); CI always has them."""
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

FIXTURES = Path(os.environ.get("TINYGGML_FIXTURES", TESTS.parents[1] / "shared" / "fixtures"))
HAVE_FIXTURES = (FIXTURES / "models").is_dir()
requires_fixtures = pytest.mark.skipif(
    not HAVE_FIXTURES, reason=f"shared fixtures not found at {FIXTURES} (set TINYGGML_FIXTURES)")
