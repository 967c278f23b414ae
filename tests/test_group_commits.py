"""Worker-side groups: a unit counts as done only after its group is committed, groups end on time.

A batch worker calls ``begin_group()`` on a buffering store before a chunk
and ``flush()`` when a group ends (every ``GROUP_SECONDS``, and at the
chunk's end); a unit enters the chunk's ledger, from which the worker
reports it, only after that flush.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pytest

from stashworks import Stash
from stashworks.multi import job as job_module
from stashworks.multi.failures import FailureStash
from stashworks.multi.job import FactoryJob, Ledger
from stashworks.multi.wire import Chunk

pytestmark = pytest.mark.timeout(60)


class BufferingStash(Stash):
    """An in-memory store that commits in groups: ``flush`` moves the buffer to ``committed``."""

    def __init__(self, fail_flushes: int = 0) -> None:
        self.buffer: dict[str, Any] = {}
        self.committed: dict[str, Any] = {}
        self.flushes = 0
        self.fail_flushes = fail_flushes

    def load(self, key: str) -> Any:
        if key in self.buffer:
            return self.buffer[key]
        if key in self.committed:
            return self.committed[key]
        raise self.missing_error(key)

    def exists(self, key: str) -> bool:
        return key in self.buffer or key in self.committed

    def dump(self, key: str, value: Any) -> None:
        self.buffer[key] = value

    def delete(self, key: str) -> None:
        self.buffer.pop(key, None)
        self.committed.pop(key, None)

    def keys(self) -> Iterable[str]:
        return list({**self.committed, **self.buffer})

    def flush(self) -> None:
        self.flushes += 1
        if self.fail_flushes:
            self.fail_flushes -= 1
            self.buffer.clear()
            raise OSError('disk full')
        self.committed.update(self.buffer)
        self.buffer.clear()


class CommittedOnly(list[str]):
    """A ledger list that checks each unit is committed when it is added."""

    def __init__(self, store: BufferingStash) -> None:
        super().__init__()
        self.store = store

    def append(self, unit: str) -> None:
        assert unit in self.store.committed, f'{unit} reported before its group was committed'
        super().append(unit)

    def extend(self, units: Iterable[str]) -> None:
        for unit in units:
            self.append(unit)


def keys(n: int) -> tuple[str, ...]:
    return tuple(f'k{i:06d}' for i in range(n))


def test_a_unit_enters_the_ledger_only_once_its_group_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Groups end every 5 units here, so a chunk is several groups.
    monkeypatch.setattr(job_module, 'GROUP_UNITS', 5)
    store = BufferingStash()
    job = FactoryJob(store, FailureStash(tmp_path / 'failures'), lambda key: key.upper())
    ledger = Ledger()
    ledger.done = CommittedOnly(store)
    report = job.run_chunk(Chunk(0, keys(23)), ledger=ledger)
    assert list(report.done) == list(keys(23))
    assert store.committed == {k: k.upper() for k in keys(23)}
    assert store.flushes >= 5  # 4 full groups, then the chunk's end (more if the clock ends one)


def test_groups_of_tiny_units_end_on_time_not_every_thousand_units(tmp_path: Path) -> None:
    store = BufferingStash()
    job = FactoryJob(store, FailureStash(tmp_path / 'failures'), lambda key: key)
    report = job.run_chunk(Chunk(0, keys(20_000)))
    elapsed = report.extra['elapsed']
    assert isinstance(elapsed, float)
    assert len(report.done) == 20_000
    # One flush per GROUP_SECONDS at most, plus the chunk's end; a flush per
    # 1,000 units (an fsync each, for LMDB) would be 20.
    assert store.flushes <= elapsed / job_module.GROUP_SECONDS + 2


def test_a_group_whose_commit_fails_fails_each_of_its_units_with_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_module, 'GROUP_UNITS', 4)
    store = BufferingStash(fail_flushes=1)
    failures = FailureStash(tmp_path / 'failures')
    work = keys(10)

    def compute(key: str) -> str:
        if key == 'k000006':
            raise ValueError('bad')
        return key

    job = FactoryJob(store, failures, compute)
    report = job.run_chunk(Chunk(0, work))
    # The first group (k000000..k000003) was not committed: each of its
    # units failed with the store's error.  k000006 failed by itself.
    assert sorted(report.failed) == [*work[:4], 'k000006']
    assert list(report.done) == [k for k in work[4:] if k != 'k000006']
    assert store.committed == {k: k for k in report.done}
    for key in report.failed:
        record = failures.load(key)
        expected = 'ValueError' if key == 'k000006' else 'OSError'
        assert record.error_type == expected, (key, record)
        if expected == 'OSError':
            assert 'disk full' in record.message
