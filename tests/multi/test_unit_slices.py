"""One-item units in slices: a worker computes tiny units a slice at a time and stores a slice in one step.

A unit that raises, or whose item cannot be stored, still fails alone and
is computed once; the others of its slice are stored; a stop request is
heard after a slice; a slow unit is settled on its own.  Real stores
(LmdbStash, DirectoryStash), real worker processes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from batch_jobs import mark_unit, unit_computations

from stashworks import DirectoryStash, LmdbStash, MultiProcessFactoryStash, Stash
from stashworks.multi.failures import FailureStash
from stashworks.multi.job import Ledger
from stashworks.multi.unitjob import MAX_SLICE, SLICE_SECONDS, UnitJob
from stashworks.multi.units import MemoryUnitLog, UnitLog
from stashworks.multi.wire import Chunk

pytestmark = pytest.mark.timeout(120)

N = 600
BAD = {f'u{i:05d}' for i in range(5, N, 37)}
UNSTORABLE = {f'u{i:05d}' for i in range(11, N, 53)} - BAD


def unit_keys(n: int = N) -> list[str]:
    return [f'u{i:05d}' for i in range(n)]


class Flaky:
    """Marks each computation; raises for BAD units, returns an unpicklable value for UNSTORABLE ones."""

    def __init__(self, markers: Path) -> None:
        self.markers = markers

    def __call__(self, key: str) -> Any:
        mark_unit(self.markers, key)
        if key in BAD:
            raise ValueError(f'bad unit {key}')
        if key in UNSTORABLE:
            return {'key': key, 'lock': threading.Lock()}  # pickle and dill both refuse a lock
        return {'key': key}


STORES: dict[str, Callable[[Path], Stash]] = {'lmdb': LmdbStash, 'directory': DirectoryStash}


@pytest.mark.parametrize('store', sorted(STORES))
@pytest.mark.parametrize('workers', [0, 2], ids=['serial', 'pool'])
def test_a_failing_unit_inside_a_slice_fails_alone_and_every_unit_is_computed_once(
    tmp_path: Path, store: str, workers: int
) -> None:
    markers = tmp_path / 'markers'
    markers.mkdir()
    out = tmp_path / 'out'
    options: dict[str, Any] = {'executor': 'serial'} if workers == 0 else {'workers': workers}
    stash = MultiProcessFactoryStash(STORES[store](out), Flaky(markers), keys=unit_keys(), progress=False, **options)
    result = stash.prime()
    failed = BAD | UNSTORABLE
    assert (result.computed, result.failed) == (N - len(failed), len(failed))
    target = STORES[store](out)
    stored = list(target.keys())
    assert sorted(stored) == sorted(set(unit_keys()) - failed)
    assert all(target.load(k) == {'key': k} for k in stored)
    records = FailureStash.beside(out)
    assert sorted(records.keys()) == sorted(failed)
    for key in UNSTORABLE:
        record = records.load(key)
        assert key in record.message, record
    for key in BAD:
        assert records.load(key).error_type == 'ValueError'
    # Each unit computed exactly once: none again because a neighbour failed.
    assert unit_computations(markers) == {k: 1 for k in unit_keys()}
    # And a second run computes nothing again (failures wait for a retry).
    again = MultiProcessFactoryStash(
        STORES[store](out), Flaky(markers), keys=unit_keys(), progress=False, executor='serial'
    ).prime()
    assert again.computed == 0
    assert unit_computations(markers) == {k: 1 for k in unit_keys()}


def per_slice(check: Callable[[], bool]) -> Callable[[], bool]:
    """A stop check that may be asked after a slice of units (as a Dask worker's is)."""
    check.per_slice = True  # type: ignore[attr-defined]
    return check


def test_a_limit_of_items_per_worker_is_still_asked_after_every_unit(tmp_path: Path) -> None:
    job = _job(tmp_path, lambda key: key, MemoryUnitLog())
    asked: list[int] = []
    ledger = Ledger()

    def limit_reached() -> bool:  # as the local pool's max_items_per_worker check, asked after each unit
        asked.append(1)
        return len(asked) >= 3

    report = job.run_chunk(Chunk(id=1, units=tuple(unit_keys(100))), should_stop=limit_reached, ledger=ledger)
    assert report.done == ('u00000', 'u00001', 'u00002')
    assert len(asked) == 3


def _job(tmp_path: Path, compute: Callable[[str], Any], log: UnitLog) -> UnitJob:
    store = LmdbStash(tmp_path / 'out')
    return UnitJob(store, FailureStash(tmp_path / 'failures'), compute, 'one', 'v1', log)


def test_a_stop_request_is_heard_after_the_first_slice(tmp_path: Path) -> None:
    log = MemoryUnitLog()
    job = _job(tmp_path, lambda key: key, log)
    report = job.run_chunk(Chunk(id=1, units=tuple(unit_keys(200))), should_stop=per_slice(lambda: True))
    # The first slice is one unit: the rest is left for another worker.
    assert report.extra['stopped'] is True
    assert report.done == ('u00000',)
    assert list(job.delegate.keys()) == ['u00000']
    assert [r.unit for r in log.records()] == ['u00000']


def test_slow_units_are_settled_one_by_one(tmp_path: Path) -> None:
    log = MemoryUnitLog()
    slow = SLICE_SECONDS * 1.5

    def compute(key: str) -> str:
        time.sleep(slow)
        return key

    job = _job(tmp_path, compute, log)
    settled: list[int] = []
    ledger = Ledger()

    def should_stop() -> bool:
        settled.append(len(ledger.done))
        return len(settled) == 3

    report = job.run_chunk(Chunk(id=1, units=tuple(unit_keys(8))), should_stop=per_slice(should_stop), ledger=ledger)
    # Each unit takes longer than a slice may: asked after every unit, stopped after the third.
    assert report.done == ('u00000', 'u00001', 'u00002')
    assert report.extra['stopped'] is True


def test_tiny_units_grow_their_slices_and_every_one_is_stored_and_recorded(tmp_path: Path) -> None:
    log = UnitLog(tmp_path / 'units')
    job = _job(tmp_path, lambda key: {'key': key}, log)
    calls: list[int] = []

    def should_stop() -> bool:
        calls.append(1)
        return False

    n = 3 * MAX_SLICE + 17
    report = job.run_chunk(Chunk(id=1, units=tuple(unit_keys(n))), should_stop=per_slice(should_stop))
    assert len(report.done) == n and not report.failed
    # Far fewer stop checks than units: they come a slice at a time.
    assert len(calls) < n / 100
    store = LmdbStash(tmp_path / 'out')
    assert len(store) == n
    assert store.load('u00123') == {'key': 'u00123'}
    records = {r.unit: r for r in log.records()}
    assert sorted(records) == sorted(unit_keys(n))
    assert all(r.version == 'v1' and r.keys == (r.unit,) for r in records.values())


def test_unit_log_add_units_writes_one_record_each(tmp_path: Path) -> None:
    for log in (UnitLog(tmp_path / 'units'), MemoryUnitLog()):
        log.add_units('v1', ['a', 'b"q', 'c\u00e9', 'd\\e'])
        log.add('x', 'v1', ['k1', 'k2'])
        log.add_units('v1', [])
        log.add_units('v2', ['a'])
        assert log.pending == 6
        log.flush()
        assert log.pending == 0
        rows = sorted((r.unit, r.version, r.keys) for r in log.records())
        assert rows == [
            ('a', 'v1', ('a',)),
            ('a', 'v2', ('a',)),
            ('b"q', 'v1', ('b"q',)),
            ('c\u00e9', 'v1', ('c\u00e9',)),
            ('d\\e', 'v1', ('d\\e',)),
            ('x', 'v1', ('k1', 'k2')),
        ]
