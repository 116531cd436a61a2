"""Shared test settings. The reference fixtures live in ../shared/fixtures (see its README);
point TINYGGML_FIXTURES elsewhere to use another copy. Tests that need them skip with the
reason when they are absent (a fresh clone); CI always has them."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

FIXTURES = Path(os.environ.get("TINYGGML_FIXTURES", TESTS.parents[1] / "shared" / "fixtures"))
HAVE_FIXTURES = (FIXTURES / "models").is_dir()
requires_fixtures = pytest.mark.skipif(
    not HAVE_FIXTURES, reason=f"shared fixtures not found at {FIXTURES} (set TINYGGML_FIXTURES)")


def close(got, want, err_msg=""):
    """Equal up to float32 rounding: the decode path (one column) and the batched path sum in
    different orders, and the difference grows through the layers; 2e-6 of the logit scale is
    far below any state or batching mistake (those move logits by 1e-2 or more)."""
    np.testing.assert_allclose(got, want, atol=2e-6 * max(1.0, float(np.abs(want).max())),
                               rtol=0, err_msg=err_msg)
