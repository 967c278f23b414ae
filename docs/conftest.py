"""Run the examples of the guide pages (``pytest docs/quickstart.md``) in a fresh directory each."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _in_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples write to relative paths such as 'data/squares'.
    monkeypatch.chdir(tmp_path)
