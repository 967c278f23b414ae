"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import IO, Any

import pytest

from stashworks._atomic import is_temp_name


class CountingSerializer:
    """Pickle that counts its loads and dumps, to prove what does not deserialize."""

    def __init__(self) -> None:
        self.loads = 0
        self.dumps = 0

    def dump(self, value: Any, fh: IO[bytes]) -> None:
        self.dumps += 1
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, fh: IO[bytes]) -> Any:
        self.loads += 1
        return pickle.load(fh)


@pytest.fixture
def counting_serializer() -> CountingSerializer:
    """A fresh :class:`CountingSerializer`."""
    return CountingSerializer()


@pytest.fixture
def temp_files():
    """A function listing the atomic-write temp files left in a directory."""

    def list_temps(path: Path) -> list[str]:
        return sorted(n for n in os.listdir(path) if is_temp_name(n)) if path.is_dir() else []

    return list_temps
