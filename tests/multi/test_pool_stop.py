"""Workers of the local pool stop as soon as they are done once no new chunk will come."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from batch_jobs import Work, keys

from stashworks import DirectoryStash, LocalPoolExecutor
from stashworks.multi import Chunk, ChunkReport
from stashworks.multi.failures import FailureStash
from stashworks.multi.job import FactoryJob

pytestmark = pytest.mark.timeout(120)


def drain(executor: LocalPoolExecutor, n: int) -> list[ChunkReport]:
    reports: list[ChunkReport] = []
    deadline = time.monotonic() + 60
    while len(reports) < n:
        assert time.monotonic() < deadline, f'{len(reports)} of {n} reports'
        reports.extend(r for r in executor.reports(timeout=0.5) if isinstance(r, ChunkReport))
    return reports


def test_told_there_are_no_more_chunks_workers_end_by_themselves_once_done(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    executor = LocalPoolExecutor(start_method='fork')
    try:
        executor.start(FactoryJob(DirectoryStash(out), FailureStash.beside(out), Work()), 2)
        names = keys(8)
        for i in range(4):
            executor.submit(Chunk(i, tuple(names[2 * i : 2 * i + 2])))
        executor.no_more_chunks()
        reports = drain(executor, 4)
        assert sorted(r.chunk_id for r in reports) == [0, 1, 2, 3] and not any(r.lost for r in reports)
        # No shutdown yet: the workers end on their own, and none is started in their place.
        deadline = time.monotonic() + 30
        while executor.live_pids():
            assert time.monotonic() < deadline, executor.live_pids()
            time.sleep(0.02)
        list(executor.reports(timeout=0.2))
        assert executor.workers_started == 2
    finally:
        executor.shutdown()
    assert sorted(DirectoryStash(out).keys()) == names


def test_a_chunk_sent_after_the_workers_stopped_gets_a_fresh_worker(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    executor = LocalPoolExecutor(start_method='fork')
    try:
        executor.start(FactoryJob(DirectoryStash(out), FailureStash.beside(out), Work()), 2)
        executor.submit(Chunk(0, ('k000', 'k001')))
        executor.no_more_chunks()
        drain(executor, 1)
        # As the engine does with the units of a lost chunk.
        executor.submit(Chunk(1, ('k002',)))
        (report,) = drain(executor, 1)
        assert (report.chunk_id, report.done, report.lost) == (1, ('k002',), False)
        assert executor.workers_started <= 3
    finally:
        executor.shutdown()
    assert sorted(DirectoryStash(out).keys()) == ['k000', 'k001', 'k002']
