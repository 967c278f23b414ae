"""Units that yield their items, on a real Dask cluster: the unit log and an exact resume.

One module-scoped ``LocalCluster``: two worker processes with two threads
each, so chunks of one batch run side by side in one process, sharing the
job the worker loaded once, and in two processes, each writing log files
of its own.  Computations are counted with marker files.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

distributed = pytest.importorskip('distributed')
dask = pytest.importorskip('dask')

from batch_jobs import unit_computations  # noqa: E402

from stashworks import DirectoryStash  # noqa: E402
from stashworks.multi import MultiProcessFactoryStash, MultiProcessStash  # noqa: E402
from stashworks.multi.dask import DaskExecutor  # noqa: E402
from stashworks.multi.units import UnitLog  # noqa: E402

pytestmark = [pytest.mark.dask, pytest.mark.timeout(120)]

WORKERS, THREADS = 2, 2


@pytest.fixture(scope='module')
def cluster() -> Any:
    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=THREADS,
        processes=True,
        dashboard_address=':0',
        silence_logs=logging.CRITICAL,
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def client(cluster: Any) -> Any:
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(WORKERS, timeout=30)
        yield client
    finally:
        client.close()


def _wait_idle(client: Any, timeout: float = 20) -> None:
    """Wait until no task runs anywhere on the cluster."""
    deadline = time.monotonic() + timeout
    while any(client.processing().values()):
        assert time.monotonic() < deadline, 'the cluster is still busy'
        time.sleep(0.05)


# -- what the workers compute (module level: the workers import it) ---------------

ITEMS = 3


class Pages:
    """``expand`` factory: unit ``u`` yields ``ITEMS`` items and leaves a marker per computation."""

    def __init__(self, markers: Path, sleep: float = 0.0) -> None:
        self.markers = markers
        self.sleep = sleep

    def __call__(self, unit: str) -> Iterator[tuple[str, str]]:
        (self.markers / f'{unit}.{uuid.uuid4().hex[:8]}').touch()
        for i in range(ITEMS):
            if self.sleep:
                time.sleep(self.sleep)
            yield f'{unit}.p{i}', f'{unit}-{i}'


class Chapters(MultiProcessStash):
    """The subclass form: ``_process`` yields several items per unit."""

    def __init__(self, out: Path, markers: Path, units: list[str], executor: Any, **options: Any) -> None:
        super().__init__(DirectoryStash(out), executor=executor, progress=False, **options)
        self.markers = markers
        self.units = units

    def _create_data(self) -> list[str]:
        return self.units

    def _process(self, chunk: list[str]) -> Iterator[tuple[str, str]]:
        for unit in chunk:
            yield from Pages(self.markers)(unit)


def pages_of(units: list[str]) -> dict[str, str]:
    return {f'{u}.p{i}': f'{u}-{i}' for u in units for i in range(ITEMS)}


def keys_of(unit: str) -> tuple[str, ...]:
    return tuple(f'{unit}.p{i}' for i in range(ITEMS))


def _units(n: int) -> list[str]:
    return [f'u{i:03d}' for i in range(n)]


def _stash(out: Path, markers: Path, units: list[str], executor: Any, **kwargs: Any) -> MultiProcessFactoryStash:
    kwargs.setdefault('chunk_size', 2)
    return MultiProcessFactoryStash(
        DirectoryStash(out),
        Pages(markers, kwargs.pop('sleep', 0.0)),
        keys=units,
        expand=True,
        executor=executor,
        progress=False,
        **kwargs,
    )


class StopAfter:
    """An ``on_event`` hook that raises KeyboardInterrupt (Ctrl-C) after ``n`` settled units."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.items = 0

    def __call__(self, event: Any) -> None:
        if event.kind == 'item':
            self.items += 1
            if self.items == self.n:
                raise KeyboardInterrupt


def check_records(out: Path, units: list[str], version: str) -> None:
    """Every unit's record is in ``<out>/.stashworks/units/``, of ``version``, naming its items."""
    records = UnitLog(out / '.stashworks' / 'units').read()
    assert sorted(records) == sorted(units)
    wrong = {u: r.keys for u, r in records.items() if r.keys != keys_of(u) or r.version != version}
    assert wrong == {}


# -- the tests -------------------------------------------------------------------------


def test_an_interrupted_batch_on_the_cluster_resumes_exactly(client: Any, tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    units = _units(48)
    first = _stash(out, markers, units, DaskExecutor(client), sleep=0.01, on_event=StopAfter(12))
    with pytest.raises(KeyboardInterrupt):
        first.prime()
    _wait_idle(client)
    time.sleep(0.3)  # a cancelled chunk ends its running unit, then stops
    finished = set(UnitLog.beside(out).read())
    assert 12 <= len(finished) < len(units)
    before = unit_computations(markers)

    second = _stash(out, markers, units, DaskExecutor(client))
    result = second.prime()

    assert (result.done_before, result.failed, result.interrupted) == (len(finished), 0, False)
    assert dict(DirectoryStash(out)) == pages_of(units)
    after = unit_computations(markers)
    for unit in finished:
        assert after[unit] == before[unit] == 1, unit  # a finished unit is never computed again
    for unit in set(units) - finished:
        assert after[unit] == before.get(unit, 0) + 1, unit  # interrupted half way or never started
    # The records were written by the workers, into the output's own folder.
    check_records(out, units, second._version())
    log_files = UnitLog.beside(out).files()
    assert log_files and all(f.parent == out / '.stashworks' / 'units' for f in log_files)
    writers = {int(f.name.split('-')[1]) for f in log_files}
    assert os.getpid() not in writers and writers <= set(client.run(os.getpid).values())
    assert _stash(out, markers, units, DaskExecutor(client)).prime().computed == 0
    assert unit_computations(markers) == after


def test_chunks_sharing_a_worker_job_record_every_unit_with_its_own_items(client: Any, tmp_path: Path) -> None:
    # Two threads per worker run chunks of one job at once; a short switch
    # interval makes them interleave between any two bytecodes.
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    units = _units(400)
    client.run(sys.setswitchinterval, 1e-6)
    try:
        stash = _stash(out, markers, units, DaskExecutor(client), chunk_size=25)
        result = stash.prime()
    finally:
        client.run(sys.setswitchinterval, 0.005)

    assert (result.computed, result.failed) == (400, 0)
    check_records(out, units, stash._version())
    again = _stash(out, markers, units, DaskExecutor(client), chunk_size=25).prime()
    assert (again.done_before, again.computed) == (400, 0)
    assert set(unit_computations(markers).values()) == {1}


def test_the_subclass_form_on_the_cluster_runs_twice_and_computes_once(client: Any, tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    units = _units(30)

    def run() -> Any:
        stash = Chapters(out, markers, units, DaskExecutor(client), chunk_size=3)
        return stash, stash.prime()

    stash, result = run()
    assert result.computed == 30
    _, again = run()

    assert (again.done_before, again.computed) == (30, 0)
    assert dict(DirectoryStash(out)) == pages_of(units)
    assert unit_computations(markers) == {u: 1 for u in units}
    check_records(out, units, stash._version())


def test_a_worker_killed_mid_batch_leaves_every_unit_recorded_once_complete(client: Any, tmp_path: Path) -> None:
    out, markers = tmp_path / 'out', tmp_path / 'markers'
    markers.mkdir()
    units = _units(40)
    victim = next(iter(client.run(os.getpid).values()))

    class KillAfter:
        def __init__(self, n: int) -> None:
            self.n, self.items = n, 0

        def __call__(self, event: Any) -> None:
            if event.kind == 'item':
                self.items += 1
                if self.items == self.n:
                    os.kill(victim, signal.SIGKILL)

    stash = _stash(out, markers, units, DaskExecutor(client), sleep=0.02, chunk_size=5, on_event=KillAfter(8))
    result = stash.prime()

    assert victim not in client.run(os.getpid).values()
    assert (result.computed, result.failed, result.interrupted) == (40, 0, False)
    assert dict(DirectoryStash(out)) == pages_of(units)
    check_records(out, units, stash._version())
    counts = unit_computations(markers)
    # Dask runs the killed worker's tasks again, whole: a unit of those
    # chunks may be computed twice (its items overwritten, its record
    # written again), never more, and the next run computes nothing.
    assert set(counts) == set(units) and max(counts.values()) <= 2
    again = _stash(out, markers, units, DaskExecutor(client)).prime()
    assert (again.done_before, again.computed) == (40, 0)
    assert unit_computations(markers) == counts
