"""DaskExecutor: the same batch, run on a real Dask cluster.

One module-scoped ``LocalCluster`` (two worker processes, one thread
each) serves most tests.  Its scheduler allows one worker death per task
(``allowed-failures: 1``) so that a key that kills its worker costs two
deaths per attempt instead of four and the file stays fast; a worker
killed from outside once still has its task rerun by Dask.
"""

from __future__ import annotations

import logging
import operator
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

distributed = pytest.importorskip('distributed')
dask = pytest.importorskip('dask')

from stashworks import BatchError, DirectoryStash  # noqa: E402
from stashworks.multi import MultiProcessFactoryStash, MultiProcessStash  # noqa: E402
from stashworks.multi.dask import ClusterError, DaskExecutor  # noqa: E402
from stashworks.multi.executor import Chunk, ChunkReport  # noqa: E402
from stashworks.multi.failures import FailureStash  # noqa: E402
from stashworks.multi.job import FactoryJob  # noqa: E402

pytestmark = [pytest.mark.dask, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]


# -- the cluster ----------------------------------------------------------------


def _local_cluster(n_workers: int) -> Any:
    with dask.config.set({'distributed.scheduler.allowed-failures': 1}):
        return distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=':0',
            silence_logs=logging.CRITICAL,
        )


@pytest.fixture(scope='module')
def cluster() -> Any:
    cluster = _local_cluster(2)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def client(cluster: Any) -> Any:
    """A client on the shared cluster, with both workers up (a previous test may have killed one)."""
    client = distributed.Client(cluster, set_as_default=False)
    try:
        client.wait_for_workers(2, timeout=30)
        yield client
    finally:
        client.close()


def _worker_pids(client: Any) -> dict[str, int]:
    return client.run(os.getpid)


def _wait_idle(client: Any, timeout: float = 20) -> None:
    """Wait until no task runs anywhere on the cluster."""
    deadline = time.monotonic() + timeout
    while any(client.processing().values()):
        assert time.monotonic() < deadline, 'the cluster is still busy'
        time.sleep(0.05)


# -- what the workers compute (module level: the workers import it) ---------------


def double(key: str) -> str:
    return key * 2


def slow_double(key: str) -> str:
    time.sleep(0.05)
    return key * 2


def fail_on_bad(key: str) -> str:
    if key == 'bad':
        raise ValueError(f'cannot compute {key}')
    return key * 2


def kill_on_poison(key: str) -> str:
    if key == 'poison':
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return key * 2


class Marking:
    """Computes ``key * 2`` and leaves a marker file per computation."""

    def __init__(self, marks: Path, delay: float = 0.0) -> None:
        self.marks = marks
        self.delay = delay

    def __call__(self, key: str) -> str:
        time.sleep(self.delay)
        (self.marks / f'{key}.{uuid.uuid4().hex[:8]}').touch()
        return key * 2

    def computed(self) -> list[str]:
        return [name.rsplit('.', 1)[0] for name in os.listdir(self.marks)]


class CountsLoads:
    """A factory that leaves a file each time it is unpickled (in a worker)."""

    def __init__(self, loads: Path) -> None:
        self.loads = loads

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        (self.loads / f'{os.getpid()}-{uuid.uuid4().hex[:8]}').touch()

    def __call__(self, key: str) -> str:
        return key * 2


class Squares(MultiProcessStash):
    """The subclass form: units from ``_create_data``, computed by ``_process``."""

    def __init__(self, out: Path, n: int, executor: Any) -> None:
        super().__init__(DirectoryStash(out), executor=executor, progress=False, chunk_size=3)
        self.n = n

    def _create_data(self) -> list[str]:
        return [str(i) for i in range(self.n)]

    def _process(self, units: list[str]) -> Any:
        for unit in units:
            yield unit, int(unit) ** 2


def _stash(out: Path, factory: Callable[[str], Any], keys: list[str], executor: Any, **kwargs: Any) -> Any:
    kwargs.setdefault('chunk_size', 4)
    return MultiProcessFactoryStash(
        DirectoryStash(out), factory, keys=keys, executor=executor, progress=False, **kwargs
    )


def _keys(n: int) -> list[str]:
    return [f'k{i:03d}' for i in range(n)]


class StopAfter:
    """An ``on_event`` hook that raises KeyboardInterrupt (Ctrl-C) after ``n`` items."""

    def __init__(self, n: int, action: Callable[[], None] | None = None) -> None:
        self.n = n
        self.items = 0
        self.action = action

    def __call__(self, event: Any) -> None:
        if event.kind != 'item':
            return
        self.items += 1
        if self.items == self.n:
            if self.action is None:
                raise KeyboardInterrupt
            self.action()


# -- a full batch -----------------------------------------------------------------


@pytest.mark.parametrize('backlog', [0, None], ids=['one-chunk-per-thread', 'every-chunk-at-once'])
def test_a_batch_on_the_cluster_computes_every_key(client: Any, tmp_path: Path, backlog: int | None) -> None:
    keys = _keys(40)
    stash = _stash(tmp_path / 'out', double, keys, DaskExecutor(client, backlog=backlog))

    result = stash.prime()

    assert (result.computed, result.failed, result.interrupted) == (40, 0, False)
    assert {k: stash.load(k) for k in keys} == {k: k * 2 for k in keys}
    assert list(stash.failures.keys()) == []


def test_an_exception_on_an_item_is_a_failure_record_and_the_rest_complete(client: Any, tmp_path: Path) -> None:
    keys = ['a', 'bad', 'c', 'd', 'e']
    stash = _stash(tmp_path / 'out', fail_on_bad, keys, DaskExecutor(client))

    result = stash.prime()

    assert (result.computed, result.failed) == (4, 1)
    record = stash.failures.load('bad')
    assert (record.error_type, record.message) == ('ValueError', 'cannot compute bad')
    assert 'fail_on_bad' in record.traceback
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['a', 'c', 'd', 'e']


def test_the_subclass_form_runs_on_the_cluster(client: Any, tmp_path: Path) -> None:
    stash = Squares(tmp_path / 'out', 20, DaskExecutor(client))

    result = stash.prime()

    assert (result.computed, result.failed) == (20, 0)
    assert dict(stash.items()) == {str(i): i * i for i in range(20)}


def test_a_pickled_executor_carries_the_scheduler_address_not_the_client(cluster: Any, client: Any) -> None:
    copy = pickle.loads(pickle.dumps(DaskExecutor(client, backlog=3)))

    assert (copy.address, copy.backlog, copy.client) == (cluster.scheduler_address, 3, None)


def test_the_job_is_loaded_once_per_worker_not_once_per_chunk(client: Any, tmp_path: Path) -> None:
    loads = tmp_path / 'loads'
    loads.mkdir()
    stash = _stash(tmp_path / 'out', CountsLoads(loads), _keys(40), DaskExecutor(client), chunk_size=2)

    stash.prime()

    per_process = Counter(name.split('-')[0] for name in os.listdir(loads))
    assert stash.last_result.chunks == 20
    assert 1 <= len(per_process) <= 2
    assert set(per_process.values()) == {1}


# -- resume and interruption --------------------------------------------------------


def test_a_run_interrupted_part_way_resumes_with_only_the_missing_keys(client: Any, tmp_path: Path) -> None:
    marks = tmp_path / 'marks'
    marks.mkdir()
    keys = _keys(60)
    factory = Marking(marks, delay=0.02)
    first = _stash(tmp_path / 'out', factory, keys, DaskExecutor(client), on_event=StopAfter(12))
    with pytest.raises(KeyboardInterrupt):
        first.prime()
    _wait_idle(client)
    present = set(DirectoryStash(tmp_path / 'out').keys())
    assert 12 <= len(present) < 60
    computed_first = Counter(factory.computed())

    second = _stash(tmp_path / 'out', factory, keys, DaskExecutor(client))
    result = second.prime()

    computed_second = Counter(factory.computed()) - computed_first
    assert result.done_before == len(present)
    assert set(computed_second) == set(keys) - present
    assert {k: second.load(k) for k in keys} == {k: k * 2 for k in keys}


def test_ctrl_c_stops_running_chunks_and_leaves_the_clients_cluster_usable(client: Any, tmp_path: Path) -> None:
    marks = tmp_path / 'marks'
    marks.mkdir()
    # Chunks of 40 items of 0.05 s: a chunk that ran to its end would take two seconds.
    stash = _stash(tmp_path / 'out', Marking(marks, delay=0.05), _keys(200), DaskExecutor(client), chunk_size=40)
    ctrl_c = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))

    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        stash.prime()
    time.sleep(1.0)  # a chunk notices its cancellation within 0.2 s and one item
    settled = len(os.listdir(marks))
    time.sleep(0.5)

    assert len(os.listdir(marks)) == settled, 'running chunks went on after Ctrl-C'
    assert settled < 60
    assert client.status == 'running'
    assert client.submit(operator.add, 1, 2).result(timeout=10) == 3


def test_a_client_created_from_an_address_is_closed_at_the_end(cluster: Any, client: Any, tmp_path: Path) -> None:
    executor = DaskExecutor(cluster.scheduler_address)
    seen: list[Any] = []
    stash = _stash(tmp_path / 'out', double, _keys(8), executor, on_event=lambda e: seen.append(executor.client))

    stash.prime()

    own = next(c for c in seen if c is not None)
    assert own is not client
    assert own.status == 'closed'
    assert executor.client is None
    assert client.status == 'running'


@pytest.mark.parametrize('by', ['client', 'address'])
def test_workers_0_sizes_the_batch_by_the_clusters_threads_not_this_machines_cpus(
    cluster: Any, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    import stashworks.multi.workers as workers_module

    # Pretend this machine has 16 CPUs: the batch must still size itself
    # by the cluster's 2 threads.
    monkeypatch.setattr(workers_module, 'usable_cpus', lambda: 16)
    executor = DaskExecutor(client if by == 'client' else cluster.scheduler_address)
    stash = _stash(tmp_path / 'out', double, _keys(40), executor)

    result = stash.prime()

    assert (result.computed, result.workers) == (40, 2)
    assert executor.client is None or by == 'client'


# -- cluster realities -----------------------------------------------------------


def test_a_worker_killed_from_outside_mid_batch_loses_no_item(client: Any, tmp_path: Path) -> None:
    victim = next(iter(_worker_pids(client).values()))
    keys = _keys(60)
    stash = _stash(
        tmp_path / 'out',
        slow_double,
        keys,
        DaskExecutor(client),
        on_event=StopAfter(10, lambda: os.kill(victim, signal.SIGKILL)),
    )

    result = stash.prime()

    assert victim not in client.run(os.getpid).values()
    assert (result.computed, result.failed, result.interrupted) == (60, 0, False)
    assert {k: stash.load(k) for k in keys} == {k: k * 2 for k in keys}


def test_a_key_that_always_kills_its_worker_ends_as_a_failure_and_innocent_keys_complete(
    client: Any, tmp_path: Path
) -> None:
    keys = ['a', 'b', 'poison', 'c', 'd', 'e', 'f', 'g']
    stash = _stash(tmp_path / 'out', kill_on_poison, keys, DaskExecutor(client), max_retries=1)

    result = stash.prime()

    assert (result.computed, result.failed) == (7, 1)
    record = stash.failures.load('poison')
    assert record.error_type == 'WorkerDied'
    assert 'poison' in record.message and 'KilledWorker' in record.message
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == sorted(set(keys) - {'poison'})


def test_a_key_computed_twice_leaves_one_valid_item(client: Any, tmp_path: Path) -> None:
    out = tmp_path / 'out'
    job = FactoryJob(DirectoryStash(out), FailureStash.beside(out), slow_double)
    keys = tuple(_keys(10))
    executor = DaskExecutor(client)
    executor.start(job, 2)
    try:
        executor.submit(Chunk(0, keys))
        executor.submit(Chunk(1, keys))
        reports = [r for r in executor.reports() if isinstance(r, ChunkReport)]
    finally:
        executor.shutdown()

    assert sorted(r.chunk_id for r in reports) == [0, 1]
    assert all(r.done == keys for r in reports)
    assert sorted(os.listdir(out)) == sorted([f'{k}.dat' for k in keys] + ['.stashworks'])
    assert {k: DirectoryStash(out).load(k) for k in keys} == {k: k * 2 for k in keys}


# -- clear errors ------------------------------------------------------------------


def test_a_relative_output_folder_is_resolved_in_the_parent_for_every_worker(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The workers' working directory is the one the cluster started in, not
    # this one; the batch resolves the folder once, here, so the workers
    # write where this process looks (issue 9: nothing lands elsewhere).
    monkeypatch.chdir(tmp_path)
    stash = _stash(Path('out'), double, _keys(4), DaskExecutor(client))
    stash.prime()
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == _keys(4)
    assert stash['k001'] == 'k001k001'


def _become_nobody() -> None:
    # Import first: root's Python may not be readable by 'nobody'.
    import stashworks.multi.dask  # noqa: F401

    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.skipif(
    not hasattr(os, 'geteuid') or os.geteuid() != 0, reason='needs root to run a worker as another user'
)
def test_a_shared_path_a_worker_cannot_write_is_reported() -> None:
    shared = Path(tempfile.mkdtemp(prefix='stashworks-shared-'))
    shared.chmod(0o755)  # readable by every user, writable by its owner only
    cluster = _local_cluster(1)
    try:
        with distributed.Client(cluster, set_as_default=False) as client:
            # The worker process drops to 'nobody', like a worker running
            # under another account on a real cluster.
            client.run(_become_nobody)
            out = shared / 'out'
            job = FactoryJob(DirectoryStash(out), FailureStash.beside(out), double)
            executor = DaskExecutor(client)

            with pytest.raises(ClusterError) as info:
                executor.start(job, 1)

            (address,) = client.scheduler_info()['workers']
            assert f'worker {address}: {out}: cannot create a file (Permission denied)' in str(info.value)
            assert executor.client is client and client.status == 'running'
    finally:
        cluster.close()
        shutil.rmtree(shared)


def test_a_shared_path_this_machine_cannot_create_is_reported(client: Any, tmp_path: Path) -> None:
    (tmp_path / 'file').write_text('not a directory')
    out = tmp_path / 'file' / 'out'
    job = FactoryJob(DirectoryStash(out), FailureStash.beside(out), double)

    with pytest.raises(ClusterError, match=re.escape(f'cannot write to the shared directory {out}')):
        DaskExecutor(client).start(job, 2)


def test_an_unreachable_scheduler_is_reported_with_its_address(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    job = FactoryJob(DirectoryStash(out), FailureStash.beside(out), double)

    with pytest.raises(ClusterError, match=re.escape('cannot connect to the Dask scheduler at tcp://127.0.0.1:1')):
        DaskExecutor('tcp://127.0.0.1:1', timeout=1).start(job, 1)


class NeedsALibraryOnlyTheParentHas:
    """A factory whose unpickling imports a library the workers do not have.

    (A module of the user's own would travel with the job: see
    test_dask_deploy.py.  An installed library does not.)
    """

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __setstate__(self, state: dict[str, Any]) -> None:
        if os.getpid() != state['parent']:
            import parent_only_factory  # type: ignore[import-not-found]  # noqa: F401
        self.__dict__.update(state)

    def __call__(self, key: str) -> str:
        return key


def test_a_job_the_workers_cannot_load_is_reported_with_the_worker(client: Any, tmp_path: Path) -> None:
    stash = _stash(tmp_path / 'out', NeedsALibraryOnlyTheParentHas(), _keys(4), DaskExecutor(client))

    with pytest.raises(BatchError, match=r'cannot load the batch job on worker tcp://.*parent_only_factory'):
        stash.prime()
    assert client.status == 'running'


# -- the optional extra -------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_importing_stashworks_does_not_import_dask() -> None:
    run = _python(
        """
        import sys
        import stashworks, stashworks.multi
        print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))
        """
    )
    assert run.stdout.strip() == '[]', run.stderr


def test_without_the_extra_the_import_error_names_it() -> None:
    run = _python(
        """
        import sys
        sys.modules['distributed'] = None  # as if the extra were not installed
        import stashworks
        try:
            stashworks.DaskExecutor('tcp://127.0.0.1:8786')
        except ImportError as exc:
            print(exc)
        """
    )
    assert "pip install 'stashworks[dask]'" in run.stdout, run.stderr


# -- the example ----------------------------------------------------------------------


def test_the_dask_cluster_example_runs(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / 'examples' / 'dask_cluster.py'), str(tmp_path / 'out')],
        capture_output=True,
        text=True,
        timeout=80,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert '200 items' in run.stdout
    assert len(DirectoryStash(tmp_path / 'out')) == 200
