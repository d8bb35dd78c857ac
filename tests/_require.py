"""Optional dependencies of the test-suite: torch (oracle) and the shared data sets.

On a machine without them the tests that need them skip with a visible
reason.  With ``PROBGEN_REQUIRE_ALL=1`` (set by ``.ci/run``) a missing
dependency is a failure instead, so CI cannot pass by skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("PROBGEN_REQUIRE_ALL", "") not in ("", "0", "false", "no")
ROOT = Path(__file__).resolve().parents[1]


def _missing(reason: str):
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (PROBGEN_REQUIRE_ALL is set, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def require_torch():
    """Return the torch module in float64 mode-ready form, or skip/fail."""
    try:
        import torch
    except ImportError:
        _missing("torch is not installed: pip install -e '.[torch]' to run the autograd oracle tests")
    return torch


def shared_datasets_dir() -> Path:
    """The shared data directory: ``$PROBGEN_DATA`` or ``../shared/datasets``; skip/fail if absent."""
    env = os.environ.get("PROBGEN_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "datasets"
    if not (path / "binarized_mnist.npz").is_file():
        _missing(f"shared datasets not found at {path} (set PROBGEN_DATA)")
    return path
