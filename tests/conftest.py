"""Shared test fixtures: where the real traces live, and the repo root."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TRACES = REPO.parent / "shared" / "traces"
SAMPLE_TRACES = REPO / "sample_traces"


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    """../shared/traces (real traces recorded by other projects); skip when absent."""
    if not SHARED_TRACES.is_dir():
        pytest.skip("../shared/traces is absent (a fresh clone has no shared data)")
    return SHARED_TRACES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
