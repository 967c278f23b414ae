"""``retries=N`` for units that yield their items: the subclass form and ``expand=True``.

An item whose computation raised is computed again, in the same worker,
before its failure is recorded; for a unit that yields items the whole
unit is computed again (the items it stored before it raised are
overwritten).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from stashworks import DirectoryStash, MultiProcessFactoryStash, MultiProcessStash

pytestmark = pytest.mark.timeout(120)


def _count(folder: Path, unit: Any) -> int:
    """Note one call for ``unit``; return how many calls there were before."""
    before = sum(1 for name in os.listdir(folder) if name.split('.')[0] == str(unit))
    (folder / f'{unit}.{uuid.uuid4().hex}').touch()
    return before


class FlakyUnits(MultiProcessStash):
    """Each unit yields two items, and raises on its first ``fails`` calls, after the first item."""

    def __init__(self, out: Path, counts: Path, fails: int, retries: int) -> None:
        super().__init__(DirectoryStash(out), workers=2, retries=retries, progress=False)
        self.counts = counts
        self.fails = fails

    def _create_data(self) -> Iterable[Any]:
        return range(6)

    def _process(self, chunk: list[Any]) -> Iterator[tuple[str, Any]]:
        for unit in chunk:
            calls = _count(self.counts, unit)
            yield f'{unit}-a', unit
            if calls < self.fails:
                raise OSError(f'unit {unit} hiccuped (call {calls + 1})')
            yield f'{unit}-b', unit * 10


class FlakyPairs:
    """A factory for ``expand=True``: the (key, value) pairs of a unit, raising on its first calls."""

    def __init__(self, counts: Path, fails: int) -> None:
        self.counts = counts
        self.fails = fails

    def __call__(self, unit: int) -> Iterator[tuple[str, Any]]:
        calls = _count(self.counts, unit)
        yield f'{unit}-a', unit
        if calls < self.fails:
            raise OSError(f'unit {unit} hiccuped (call {calls + 1})')
        yield f'{unit}-b', unit * 10


def _expected() -> dict[str, int]:
    return {**{f'{u}-a': u for u in range(6)}, **{f'{u}-b': u * 10 for u in range(6)}}


def test_the_subclass_form_computes_a_unit_that_raised_again(tmp_path: Path) -> None:
    counts = tmp_path / 'counts'
    counts.mkdir()
    stash = FlakyUnits(tmp_path / 'out', counts, fails=2, retries=2)
    stash.prime()
    assert dict(DirectoryStash(tmp_path / 'out').items()) == _expected()
    assert not list(stash.failures.keys())
    assert len(os.listdir(counts)) == 18  # two failures and a success per unit


def test_the_subclass_form_records_a_unit_after_its_retries(tmp_path: Path) -> None:
    counts = tmp_path / 'counts'
    counts.mkdir()
    stash = FlakyUnits(tmp_path / 'out', counts, fails=5, retries=1)
    stash.prime()
    assert sorted(stash.failures.keys()) == [str(u) for u in range(6)]
    record = stash.failures.load('3')
    assert (record.error_type, record.attempts) == ('OSError', 2)
    assert len(os.listdir(counts)) == 12


def test_the_expand_form_computes_a_unit_that_raised_again(tmp_path: Path) -> None:
    counts = tmp_path / 'counts'
    counts.mkdir()
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        FlakyPairs(counts, 1),
        keys=range(6),
        expand=True,
        workers=2,
        retries=1,
        progress=False,
    )
    stash.prime()
    assert dict(DirectoryStash(tmp_path / 'out').items()) == _expected()
    assert not list(stash.failures.keys())
    assert len(os.listdir(counts)) == 12
