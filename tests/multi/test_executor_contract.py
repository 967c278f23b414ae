"""The executor contract: every executor passes the same tests.

Run against the serial executor, the local pool under fork and under
spawn, and Dask on a real ``LocalCluster`` (two worker processes, one
thread each).  Each test drives the executor directly, as the engine
does: ``start`` (which answers how many workers it uses), ``submit``
while ``free_slots`` allows, ``reports`` until every chunk has exactly
one ``ChunkReport``, ``shutdown``.  Faults are real: a worker that
SIGKILLs itself, an item that raises, a value pickle refuses, a SIGINT
sent to this process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest
from batch_jobs import Work, computations, keys

from stashworks import DirectoryStash, LocalPoolExecutor, SerialExecutor
from stashworks.multi import Chunk, ChunkReport, Executor, ItemEvent, Progress
from stashworks.multi.failures import FailureStash
from stashworks.multi.job import FactoryJob

pytestmark = pytest.mark.timeout(120)

KINDS = ['serial', 'pool-fork', 'pool-spawn', 'dask']


@pytest.fixture(scope='module')
def dask_cluster() -> Iterator[Any]:
    distributed = pytest.importorskip('distributed')
    dask = pytest.importorskip('dask')
    # A task whose worker dies is lost at once (KilledWorker), as a chunk
    # on the local pool is: the engine, not the cluster, decides on retries.
    with dask.config.set({'distributed.scheduler.allowed-failures': 0}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0', silence_logs=logging.CRITICAL
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_executor(kind: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], Executor]]:
    """Builds a fresh executor of this kind (shut down at the end of the test)."""
    made: list[Executor] = []
    client = None
    if kind == 'dask':
        distributed = pytest.importorskip('distributed')
        cluster = request.getfixturevalue('dask_cluster')
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(2, timeout=60)

    def make() -> Executor:
        executor: Executor
        if kind == 'serial':
            executor = SerialExecutor()
        elif kind.startswith('pool'):
            executor = LocalPoolExecutor(start_method=kind.split('-')[1])
        else:
            from stashworks.multi.dask import DaskExecutor

            executor = DaskExecutor(client)
        made.append(executor)
        return executor

    try:
        yield make
    finally:
        for executor in made:
            executor.shutdown(cancel=True)
        if client is not None:
            client.close()


def job_for(out: Path, work: Work) -> FactoryJob:
    return FactoryJob(DirectoryStash(out), FailureStash.beside(out), work)


class Drained:
    """Everything an executor reported: chunk reports, and each unit's announcements."""

    def __init__(self) -> None:
        self.reports: dict[int, list[ChunkReport]] = {}
        self.announced: Counter[tuple[int, str]] = Counter()

    def take(self, report: Any) -> None:
        if isinstance(report, ChunkReport):
            self.reports.setdefault(report.chunk_id, []).append(report)
        elif isinstance(report, Progress):
            for unit in (*report.done, *report.failed):
                self.announced[(report.chunk_id, unit)] += 1
        elif isinstance(report, ItemEvent):
            self.announced[(report.chunk_id, report.key)] += 1
        else:
            raise AssertionError(f'unexpected report {report!r}')

    def settled(self, chunk_id: int) -> tuple[set[str], set[str]]:
        """The units of a chunk reported done and failed (announcements and the report)."""
        (report,) = self.reports[chunk_id]
        return set(report.done), set(report.failed)


def run(executor: Executor, chunks: list[Chunk], timeout: float = 90.0) -> Drained:
    """Submit ``chunks`` as ``free_slots`` allows and read reports until each chunk has one."""
    got = Drained()
    pending = list(chunks)
    deadline = time.monotonic() + timeout
    while pending or len(got.reports) < len(chunks):
        assert time.monotonic() < deadline, f'no report for {set(c.id for c in chunks) - set(got.reports)}'
        while pending and executor.free_slots() > 0:
            executor.submit(pending.pop(0))
        for report in executor.reports(timeout=0.5):
            got.take(report)
            if isinstance(report, ChunkReport):
                break
    return got


def chunks_of(names: list[str], size: int, first_id: int = 0) -> list[Chunk]:
    return [Chunk(first_id + i // size, tuple(names[i : i + size])) for i in range(0, len(names), size)]


# -- submit, report, shutdown ------------------------------------------------------


def test_every_chunk_gets_one_report_and_every_unit_is_announced_at_most_once(
    make_executor: Callable[[], Executor], tmp_path: Path
) -> None:
    out = tmp_path / 'out'
    executor = make_executor()
    workers = executor.start(job_for(out, Work()), 2, limit=10)
    assert isinstance(workers, int) and 1 <= workers <= 2
    assert executor.free_slots() >= 1
    names = keys(30)
    chunks = chunks_of(names, 3)

    got = run(executor, chunks)
    executor.shutdown()
    executor.shutdown()  # a second call is harmless

    assert sorted(got.reports) == [c.id for c in chunks]
    assert all(len(r) == 1 and not r[0].lost for r in got.reports.values())
    assert max(got.announced.values(), default=1) == 1
    for chunk in chunks:
        done, failed = got.settled(chunk.id)
        assert done == set(chunk.units) and failed == set()
        # What a Progress announced, the report also lists (or nothing was announced).
        announced = {u for (cid, u) in got.announced if cid == chunk.id}
        assert announced <= done
    assert sorted(DirectoryStash(out).keys()) == names
    assert DirectoryStash(out).load('k007') == 'value-k007'


def test_after_no_more_chunks_every_chunk_sent_reports_and_a_later_chunk_still_runs(
    make_executor: Callable[[], Executor], tmp_path: Path
) -> None:
    # The engine says so once its last chunk is submitted; the units of a
    # lost chunk may still come after it.
    out = tmp_path / 'out'
    executor = make_executor()
    executor.start(job_for(out, Work()), 2, limit=10)
    chunks = chunks_of(keys(12), 3)
    got, pending = Drained(), list(chunks)
    deadline = time.monotonic() + 90
    while len(got.reports) < len(chunks):
        assert time.monotonic() < deadline
        while pending and executor.free_slots() > 0:
            executor.submit(pending.pop(0))
            if not pending:
                executor.no_more_chunks()
        for report in executor.reports(timeout=0.5):
            got.take(report)
            if isinstance(report, ChunkReport):
                break

    late = run(executor, [Chunk(99, ('k100', 'k101'))])
    executor.shutdown()

    assert sorted(got.reports) == [c.id for c in chunks]
    assert all(not r.lost for rs in got.reports.values() for r in rs)
    assert late.settled(99) == ({'k100', 'k101'}, set())
    assert sorted(DirectoryStash(out).keys()) == [*keys(12), 'k100', 'k101']


def test_start_reads_the_workers_setting_and_never_exceeds_the_limit(
    make_executor: Callable[[], Executor], tmp_path: Path, kind: str
) -> None:
    executor = make_executor()
    workers = executor.start(job_for(tmp_path / 'out', Work()), 0, limit=1)
    assert workers == 1


# -- faults -------------------------------------------------------------------------


def test_a_chunk_whose_item_raises_reports_it_failed_and_finishes_the_rest(
    make_executor: Callable[[], Executor], tmp_path: Path
) -> None:
    out = tmp_path / 'out'
    executor = make_executor()
    executor.start(job_for(out, Work(fail=('k001',))), 2)
    got = run(executor, [Chunk(0, tuple(keys(4)))])

    (report,) = got.reports[0]
    assert not report.lost
    done, failed = got.settled(0)
    assert failed == {'k001'} and done == {'k000', 'k002', 'k003'}
    record = FailureStash.beside(out).load('k001')
    assert (record.error_type, record.message) == ('ValueError', 'cannot compute k001')


def test_an_unpicklable_result_is_a_failure_of_its_item_not_of_the_chunk(
    make_executor: Callable[[], Executor], tmp_path: Path
) -> None:
    out = tmp_path / 'out'
    executor = make_executor()
    executor.start(job_for(out, Work(unpicklable=('k002',))), 2)
    got = run(executor, [Chunk(0, tuple(keys(4)))])

    (report,) = got.reports[0]
    assert not report.lost
    assert got.settled(0) == ({'k000', 'k001', 'k003'}, {'k002'})
    assert FailureStash.beside(out).load('k002').error_type == 'SerializationError'


def test_a_worker_that_dies_loses_its_chunk_and_the_executor_goes_on(
    make_executor: Callable[[], Executor], tmp_path: Path, kind: str
) -> None:
    if kind == 'serial':
        pytest.skip('the serial executor has no worker: a death would be this process')
    out = tmp_path / 'out'
    executor = make_executor()
    executor.start(job_for(out, Work(sigkill=('k101',))), 2)

    got = run(executor, [Chunk(0, ('k100', 'k101', 'k102'))])
    (report,) = got.reports[0]
    assert report.lost
    assert report.reason  # says why: a signal, KilledWorker...
    assert not DirectoryStash(out).exists('k102')

    # A fresh worker takes the next chunks.
    after = run(executor, chunks_of(keys(6), 3, first_id=1))
    assert all(not r[0].lost for r in after.reports.values())
    assert sorted(set(DirectoryStash(out).keys()) & set(keys(6))) == keys(6)


# -- stopping -----------------------------------------------------------------------


def _computed(markers: Path) -> int:
    return sum(computations(markers).values())


def test_cancel_stops_running_and_queued_chunks_promptly(
    make_executor: Callable[[], Executor], tmp_path: Path, kind: str
) -> None:
    markers = tmp_path / 'markers'
    markers.mkdir()
    executor = make_executor()
    executor.start(job_for(tmp_path / 'out', Work(markers, sleep=0.1)), 2)
    chunks = chunks_of(keys(40), 10)
    for chunk in chunks:
        executor.submit(chunk)
    # Read until the first item of some chunk is done (serial: its first chunk).
    for report in executor.reports(timeout=20):
        if isinstance(report, (Progress, ChunkReport)):
            break

    started = time.monotonic()
    executor.shutdown(cancel=True)
    stopped_in = time.monotonic() - started
    settled = _computed(markers)
    time.sleep(1.0)

    assert stopped_in < 10
    assert _computed(markers) == settled, 'chunks went on after shutdown(cancel=True)'
    assert settled < 40
    assert list(executor.reports(timeout=0.1)) == []


def test_ctrl_c_while_reading_reports_raises_and_leaves_nothing_running(
    make_executor: Callable[[], Executor], tmp_path: Path, kind: str
) -> None:
    markers = tmp_path / 'markers'
    markers.mkdir()
    me = psutil.Process()
    before = {p.pid for p in me.children()}  # a cluster of an earlier test, say
    executor = make_executor()
    executor.start(job_for(tmp_path / 'out', Work(markers, sleep=0.1)), 2)
    for chunk in chunks_of(keys(40), 10):
        executor.submit(chunk)
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))

    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in executor.reports():
            pass
    executor.shutdown(cancel=True)
    settled = _computed(markers)
    time.sleep(1.0)

    assert _computed(markers) == settled, 'work went on after Ctrl-C'
    assert settled < 40
    left = [p for p in me.children() if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
