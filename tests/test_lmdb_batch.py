"""Batches into an LmdbStash: the local pool (fork, spawn), Dask on one machine, kills, Ctrl-C, 100k keys.

Every process is real and every kill a real signal.  Run as a script, the
module is the parent of a batch for the tests that kill or interrupt it::

    STASHWORKS_TEST_SLOW_FROM=K python tests/test_lmdb_batch.py OUT N
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

pytest.importorskip('lmdb')

from stashworks import (
    BatchError,
    LmdbStash,
    MultiProcessFactoryStash,
    MultiProcessStash,
)
from stashworks.multi.failures import FailureStash

HERE = Path(__file__).resolve()


@pytest.fixture(params=['fork', 'spawn'])
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def key_of(i: int) -> str:
    return f'k-{i:07d}'


def keys(n: int) -> Iterator[str]:
    """The work keys, from a generator: never a list in the parent."""
    return (key_of(i) for i in range(n))


def value_of(key: str) -> dict[str, Any]:
    i = int(key[2:])
    return {'key': key, 'square': i * i}


def compute(key: str) -> dict[str, Any]:
    return value_of(key)


#: Keys from this number on take 1 ms each (so a kill lands mid-batch);
#: read at call time, so every run has the same code (and version).
SLOW_FROM_ENV = 'STASHWORKS_TEST_SLOW_FROM'


def compute_slowly(key: str) -> dict[str, Any]:
    """``compute``, sleeping 1 ms per item from the key numbered ``$STASHWORKS_TEST_SLOW_FROM`` on."""
    slow_from = os.environ.get(SLOW_FROM_ENV)
    if slow_from is not None and int(key[2:]) >= int(slow_from):
        time.sleep(0.001)
    return value_of(key)


class FailOn:
    """``compute``, raising for keys divisible by ``every``."""

    def __init__(self, every: int) -> None:
        self.every = every

    def __call__(self, key: str) -> dict[str, Any]:
        if int(key[2:]) % self.every == 0:
            raise ValueError(f'bad key {key}')
        return value_of(key)


class KillWorkerOnce:
    """``compute``, SIGKILLing its own worker at ``key`` the first time (a marker file says it did)."""

    def __init__(self, key: str, marker: Path) -> None:
        self.key = key
        self.marker = marker

    def __call__(self, key: str) -> dict[str, Any]:
        if key == self.key:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        return value_of(key)


class Squares(MultiProcessStash):
    """The subclass form: units are ints, keys their names."""

    def __init__(self, path: Path, n: int, **options: Any) -> None:
        super().__init__(LmdbStash(path), **options)
        self.n = n

    def _create_data(self) -> Iterable[Any]:
        return range(self.n)

    def _key_of(self, unit: Any) -> str:
        return key_of(unit)

    def _process(self, chunk: list[Any]) -> Iterable[tuple[str, Any]]:
        for i in chunk:
            yield key_of(i), value_of(key_of(i))


def check_every_value(path: Path, n: int, failed_every: int = 0) -> None:
    """Every key has its right value (but those meant to fail), and nothing else is stored."""
    with LmdbStash(path) as stash:
        wanted = {key_of(i) for i in range(n) if not (failed_every and i % failed_every == 0)}
        seen = 0
        for key, value in stash.items():
            assert key in wanted, f'unexpected key {key}'
            assert value == value_of(key), f'wrong value under {key}'
            seen += 1
        assert seen == len(wanted) == len(stash)


def factory_batch(out: Path, n: int, factory: Any = compute, **options: Any) -> MultiProcessFactoryStash:
    options.setdefault('workers', 2)
    options.setdefault('progress', False)
    return MultiProcessFactoryStash(LmdbStash(out), factory, keys=lambda: keys(n), **options)


# -- the local pool ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_factory_batch_fills_an_lmdb_stash(tmp_path: Path, start_method: str) -> None:
    stash = factory_batch(tmp_path / 'out', 3000, start_method=start_method)
    result = stash.prime()
    assert (result.computed, result.failed) == (3000, 0)
    check_every_value(tmp_path / 'out', 3000)
    # Complete now: the next prime computes nothing.
    again = factory_batch(tmp_path / 'out', 3000, start_method=start_method).prime()
    assert (again.computed, again.done_before) == (0, 3000)


@pytest.mark.timeout(120)
def test_a_subclass_batch_fills_an_lmdb_stash(tmp_path: Path, start_method: str) -> None:
    stash = Squares(tmp_path / 'out', 2000, workers=2, progress=False, start_method=start_method)
    assert len(stash) == 2000
    assert stash[key_of(1234)] == value_of(key_of(1234))
    check_every_value(tmp_path / 'out', 2000)


@pytest.mark.timeout(120)
def test_workers_commit_in_groups_not_one_transaction_per_item(tmp_path: Path) -> None:
    import lmdb

    batch = factory_batch(tmp_path / 'out', 20_000)
    batch.prime()
    batch.close()
    with lmdb.open(str(tmp_path / 'out')) as env:
        transactions = env.info()['last_txnid']
    assert transactions <= 20_000 / 50, f'{transactions} write transactions for 20,000 items'
    check_every_value(tmp_path / 'out', 20_000)


@pytest.mark.timeout(120)
def test_failures_are_recorded_in_the_state_folder_beside_the_database(tmp_path: Path) -> None:
    result = factory_batch(tmp_path / 'out', 500, FailOn(100)).prime()
    assert (result.computed, result.failed) == (495, 5)
    assert sorted(FailureStash.beside(tmp_path / 'out').keys()) == [key_of(i) for i in range(0, 500, 100)]
    assert (tmp_path / 'out' / '.stashworks').is_dir()
    check_every_value(tmp_path / 'out', 500, failed_every=100)


@pytest.mark.timeout(180)
def test_sigkill_of_a_worker_loses_nothing_committed_and_the_batch_completes(tmp_path: Path, start_method: str) -> None:
    factory = KillWorkerOnce(key_of(2500), tmp_path / 'killed')
    result = factory_batch(tmp_path / 'out', 5000, factory, start_method=start_method).prime()
    assert (tmp_path / 'killed').exists()
    assert result.failed == 0
    check_every_value(tmp_path / 'out', 5000)


# -- the parent killed or interrupted --------------------------------------------------------------


def start_parent(out: Path, n: int, slow_from: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE), str(out), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, SLOW_FROM_ENV: str(slow_from)},
    )


def wait_for_items(out: Path, at_least: int, proc: subprocess.Popen[str], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / 'data.mdb').exists():
            with LmdbStash(out) as stash:
                n = len(stash)
            if n >= at_least:
                return n
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f'fewer than {at_least} items after {timeout} s')


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(240)
def test_sigkill_of_the_parent_mid_batch_loses_only_uncommitted_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / 'out'
    n = 6000
    proc = start_parent(out, n, slow_from=1000)
    wait_for_items(out, 1500, proc)
    workers = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    # The orphaned workers notice and stop (or are stopped here), then the
    # database holds only whole, right items.
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in workers:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    with LmdbStash(out) as stash:
        partial = len(stash)
        for key, value in stash.items():
            assert value == value_of(key)
    assert 0 < partial < n
    # The dead run's claims on keys hold until they expire (see
    # stashworks.multi.claims); a short expiry keeps the test short.
    monkeypatch.setenv('STASHWORKS_HEARTBEAT', '0.5')
    monkeypatch.setenv('STASHWORKS_CLAIM_EXPIRY', '2')
    result = factory_batch(out, n, compute_slowly).prime()
    assert result.computed == n - result.done_before
    check_every_value(out, n)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(120)
def test_100k_keys_from_a_generator_resume_after_ctrl_c(tmp_path: Path) -> None:
    # The CI-sized version of the ten-million-key batch (see
    # benchmarks/bench_lmdb_scale.py for 1M and 10M).
    out = tmp_path / 'out'
    n = 100_000
    proc = start_parent(out, n, slow_from=40_000)
    wait_for_items(out, 20_000, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    with LmdbStash(out) as stash:
        stored = len(stash)
    assert 20_000 <= stored < n
    proc = subprocess.run([sys.executable, str(HERE), str(out), str(n)], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    done = dict(line.split(' ', 1) for line in proc.stdout.splitlines() if ' ' in line)
    assert int(done['DONE'].split()[0]) == n - stored
    # The parent's peak memory stays far below the 10M-key target of 300 MB.
    assert int(done['PEAK_RSS_KB']) < 300 * 1024
    check_every_value(out, n)


# -- Dask on one machine ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def cluster() -> Any:
    distributed = pytest.importorskip('distributed')
    import logging

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0', silence_logs=logging.CRITICAL
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_a_batch_on_a_local_dask_cluster_fills_an_lmdb_stash(tmp_path: Path, cluster: Any) -> None:
    import distributed

    from stashworks.multi.dask import DaskExecutor

    with distributed.Client(cluster, set_as_default=False) as client:
        result = factory_batch(tmp_path / 'out', 3000, executor=DaskExecutor(client), workers=0).prime()
    assert (result.computed, result.failed) == (3000, 0)
    check_every_value(tmp_path / 'out', 3000)


@pytest.mark.dask
@pytest.mark.timeout(120)
def test_a_cluster_with_workers_on_other_hosts_is_refused_before_any_work(
    tmp_path: Path, cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real multi-host cluster cannot be built on one test machine: the
    # workers' machine identities are faked (the only mock here); the
    # cluster, its workers and the batch are real.
    import distributed

    from stashworks.multi import dask as dask_executor

    real = dask_executor.worker_machines

    def one_worker_elsewhere(client: Any) -> dict[str, str]:
        machines = real(client)
        first = sorted(machines)[0]
        return {**machines, first: 'another-host'}

    monkeypatch.setattr(dask_executor, 'worker_machines', one_worker_elsewhere)
    with distributed.Client(cluster, set_as_default=False) as client:
        stash = factory_batch(tmp_path / 'out', 100, executor=dask_executor.DaskExecutor(client), workers=0)
        with pytest.raises(BatchError, match=r'(?s)LMDB.*local file system.*DirectoryStash'):
            stash.prime()
    with LmdbStash(tmp_path / 'out') as lmdb_stash:
        assert len(lmdb_stash) == 0


# -- the parent script -------------------------------------------------------------------------------


def _peak_rss_kb() -> int:
    # VmHWM is this process's own peak.  ru_maxrss is not: Linux carries it
    # over an exec from the process that forked (here pytest, which grows
    # to hundreds of MB over a whole suite).
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    out, n = Path(sys.argv[1]), int(sys.argv[2])
    stash = factory_batch(out, n, compute_slowly)
    try:
        result = stash.prime()
    except KeyboardInterrupt:
        return 130
    print(f'DONE {result.computed} {result.failed}', flush=True)
    print(f'PEAK_RSS_KB {_peak_rss_kb()}', flush=True)
    return 0


if __name__ == '__main__':
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())


def long_key(i: int) -> str:
    return f'{i:0200d}'


def one(key: str) -> int:
    return 1


@pytest.mark.timeout(90)
def test_fast_items_with_long_keys_never_deadlock_the_pool(tmp_path: Path) -> None:
    # Items this fast, with keys this long, fill the pipes both ways: a
    # chunk on its way to a worker while the worker reports what it did.
    store = LmdbStash(tmp_path / 'out')
    batch = MultiProcessFactoryStash(store, one, keys=lambda: (long_key(i) for i in range(50_000)), workers=2)
    result = batch.prime()
    assert (result.computed, len(store)) == (50_000, 50_000)
    batch.close()
