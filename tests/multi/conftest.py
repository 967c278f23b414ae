"""Fixtures of the batch tests: start methods, factories that misbehave."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The worker-side helpers must be importable by spawned workers too: they
# inherit sys.path, so putting this folder on it is enough.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(params=['fork', 'spawn'])
def start_method(request: pytest.FixtureRequest) -> str:
    """Each process-pool test runs under both start methods."""
    return str(request.param)
