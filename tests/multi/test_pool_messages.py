"""What workers of the local pool send back: items in batches, pickled cheaply.

A worker holds finished items and sends them in one message at most every
``flush_interval`` seconds, and always before its chunk's report; the
batch counts them per message and settles the counts from the report (or,
when the worker dies, from what the stores hold).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
from batch_jobs import Work, keys, pids_by_key

from stashworks import DirectoryStash, MultiProcessFactoryStash, MultiProcessStash
from stashworks.multi.executor import Chunk, ChunkReport, ItemBatch, Report
from stashworks.multi.failures import FailureStash
from stashworks.multi.job import FactoryJob
from stashworks.multi.pool import LocalPoolExecutor, dumps, loads
from stashworks.multi.status import read_status

pytestmark = pytest.mark.timeout(60)


def run_one_chunk(tmp_path: Path, compute: Callable[[str], Any], chunk_keys: list[str]) -> list[tuple[float, Report]]:
    """Run one chunk on a one-worker pool; every report with its arrival time after submit."""
    job = FactoryJob(DirectoryStash(tmp_path / 'out'), FailureStash(tmp_path / 'failures'), compute)
    got: list[tuple[float, Report]] = []
    with LocalPoolExecutor(start_method='fork') as pool:
        pool.start(job, 1)
        start = time.monotonic()
        pool.submit(Chunk(0, tuple(chunk_keys)))
        for report in pool.reports():
            got.append((time.monotonic() - start, report))
    return got


def test_items_of_a_chunk_arrive_in_a_few_batches_before_its_report(tmp_path: Path) -> None:
    got = run_one_chunk(tmp_path, Work(), keys(500))
    *batches, last = [r for _, r in got]
    assert isinstance(last, ChunkReport) and len(last.done) == 500
    items = [b for b in batches if isinstance(b, ItemBatch)]
    assert items == batches
    assert [k for b in items for k in b.done] == keys(500)  # every item, in order
    elapsed = last.extra['elapsed']
    assert isinstance(elapsed, float)
    # At most one message per flush interval, plus the one before the report.
    assert 1 <= len(batches) <= elapsed / 0.1 + 2


def test_items_finished_while_a_slow_item_runs_arrive_within_the_interval(tmp_path: Path) -> None:
    # k000 and k001 end at once; k002 takes 2 s.
    got = run_one_chunk(tmp_path, lambda k: time.sleep(2.0) if k == 'k002' else k, keys(3))
    arrived = {k: t for t, r in got if isinstance(r, ItemBatch) for k in r.done}
    assert arrived['k001'] < 1.0
    assert got[-1][0] >= 2.0


def test_failed_items_arrive_as_failed(tmp_path: Path) -> None:
    got = run_one_chunk(tmp_path, Work(fail=('k001',)), keys(3))
    failed = [k for _, r in got if isinstance(r, ItemBatch) for k in r.failed]
    assert failed == ['k001']


def test_counts_and_status_are_exact_when_a_worker_dies_after_reporting_items(tmp_path: Path) -> None:
    # k000-k002 take long enough to be sent before k003 kills the worker.
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=Work(sleep=0.15, sigkill=('k003',)),
        keys=keys(4),
        workers=1,
        chunk_size=4,
        max_retries=0,
        start_method='fork',
        progress=False,
    )
    result = stash.prime()
    # Lost once, with its chunk: max_retries=0 never tries the culprit again.
    assert (result.computed, result.failed, result.lost) == (3, 1, 1)
    assert stash.status_path is not None
    status = read_status(stash.status_path)
    assert status is not None and (status['done'], status['failed']) == (3, 1)


def test_progress_bar_counts_each_item_once_when_a_worker_dies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=Work(sleep=0.15, sigkill=('k002',)),
        keys=keys(4),
        workers=1,
        chunk_size=4,
        max_retries=0,
        start_method='fork',
        progress=True,
    ).prime()
    err = capsys.readouterr().err
    assert '4/4' in err and 'failed=1' in err
    assert '5/4' not in err


class Unit:
    """A work unit of a class plain pickle can send by reference."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_work_units_plain_pickle_refuses_reach_the_workers(tmp_path: Path, start_method: str) -> None:
    class LocalUnit(Unit):  # a local class: only dill can send it
        pass

    class Names(MultiProcessStash):
        def _create_data(self) -> Iterable[Unit]:
            return [LocalUnit(k) for k in keys(6)]

        def _key_of(self, unit: Unit) -> str:
            return unit.name

        def _process(self, chunk: list[Unit]) -> Iterable[tuple[str, str]]:
            for unit in chunk:
                yield unit.name, type(unit).__name__

    stash = Names(DirectoryStash(tmp_path / 'out'), workers=2, chunk_size=2, start_method=start_method, progress=False)
    assert dict(stash) == {k: 'LocalUnit' for k in keys(6)}


def test_messages_of_keys_and_counts_are_plain_pickles() -> None:
    import pickle

    msg = ('items', 3, ('k000', 'k001'), ('k002',))
    assert pickle.loads(dumps(msg)) == msg


def test_a_message_plain_pickle_refuses_goes_through_dill() -> None:
    def local(x: int) -> int:
        return x + 1

    assert loads(dumps(('unit', local)))[1](1) == 2


def test_as_many_chunks_as_workers_go_one_to_each_worker(tmp_path: Path) -> None:
    markers = tmp_path / 'markers'
    markers.mkdir()
    MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=Work(markers, sleep=0.2),
        keys=keys(2),
        workers=2,
        chunk_size=1,
        start_method='fork',
        progress=False,
    ).prime()
    assert len(set().union(*pids_by_key(markers).values())) == 2
