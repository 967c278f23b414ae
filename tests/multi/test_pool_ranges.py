"""A pool worker sends a run of its chunk's own units as a slice, not as keys; the parent cuts them from the chunk."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from batch_jobs import Work, keys

from stashworks import DirectoryStash
from stashworks.multi.failures import FailureStash
from stashworks.multi.job import FactoryJob, Ledger
from stashworks.multi.pool import LocalPoolExecutor, _Outbox
from stashworks.multi.wire import Chunk, ChunkReport, Progress

pytestmark = pytest.mark.timeout(60)


class Pipe:
    """The sending end of a result pipe, keeping what was sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))


def test_done_units_in_chunk_order_travel_as_a_slice_until_one_fails() -> None:
    pipe = Pipe()
    out = _Outbox(pipe, 0.1)
    units = tuple(keys(6))
    ledger = Ledger()
    out.watch(3, ledger, units)
    ledger.done.extend(units[:2])
    out.flush()
    ledger.done.append(units[2])
    out.flush()
    out.flush()  # nothing new: no message
    ledger.failed.append(units[3])
    ledger.done.append(units[4])
    out.flush()
    assert pipe.sent == [
        ('items', 3, slice(0, 2), ()),
        ('items', 3, slice(2, 3), ()),
        # Once a unit failed, done units no longer sit at their own place.
        ('items', 3, (units[4],), (units[3],)),
    ]


def test_units_not_of_the_chunk_travel_as_keys() -> None:
    pipe = Pipe()
    out = _Outbox(pipe, 0.1)
    ledger = Ledger()
    out.watch(0, ledger, ('a', 'b', 'c'))
    ledger.done.extend(['b', 'a'])
    out.flush()
    assert pipe.sent == [('items', 0, ('b', 'a'), ())]


def test_the_parent_relays_every_unit_of_slices_and_keys_once_in_order(tmp_path: Path) -> None:
    # k003 fails: what came before may travel as slices, what follows as keys.
    work = keys(400)
    job = FactoryJob(DirectoryStash(tmp_path / 'out'), FailureStash(tmp_path / 'failures'), Work(fail=('k003',)))
    got: list[Any] = []
    with LocalPoolExecutor(start_method='fork', flush_interval=0.01) as pool:
        pool.start(job, 1)
        pool.submit(Chunk(0, tuple(work[:200])))
        pool.submit(Chunk(1, tuple(work[200:])))
        got.extend(pool.reports())
    relayed = [r for r in got if isinstance(r, Progress)]
    reports = {r.chunk_id: r for r in got if isinstance(r, ChunkReport)}
    for chunk_id, chunk_keys in ((0, work[:200]), (1, work[200:])):
        done = [k for r in relayed if r.chunk_id == chunk_id for k in r.done]
        failed = [k for r in relayed if r.chunk_id == chunk_id for k in r.failed]
        expected_failed = ['k003'] if chunk_id == 0 else []
        assert done == [k for k in chunk_keys if k not in expected_failed]
        assert failed == expected_failed
        assert list(reports[chunk_id].done) == done
        assert list(reports[chunk_id].failed) == failed
