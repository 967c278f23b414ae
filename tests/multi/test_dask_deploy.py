"""Dask as people deploy it: ``dask scheduler`` and ``dask worker`` processes.

Every process here is real (:mod:`dask_procs`): a scheduler, workers each
in a working folder of its own (not the driver's), on the loopback
interface, sharing only the output folder with the driver.  The faults are
real too: a scheduler or a driver SIGKILLed mid-batch, a worker that
joins late, a worker that dies on a key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

distributed = pytest.importorskip('distributed')
dask = pytest.importorskip('dask')

from dask_procs import (  # noqa: E402
    DaskProcs,
    Flaky,
    Poison,
    Slow,
    concurrency,
    marks_of,
    pid_and_key,
    stashworks_plugins,
    wait_for_workers,
)

from stashworks import BatchError, DirectoryStash  # noqa: E402
from stashworks.multi import MultiProcessFactoryStash  # noqa: E402
from stashworks.multi.dask import DaskExecutor  # noqa: E402

pytestmark = [pytest.mark.dask, pytest.mark.timeout(150)]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER_NAME = re.compile(r'^[^:/]+:[1-9][0-9]*$')


# -- clusters --------------------------------------------------------------------


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[DaskProcs]:
    """Dask processes of one test, all SIGKILLed at its end."""
    with DaskProcs(tmp_path / 'cluster') as started:
        yield started


class Deployed:
    """A scheduler and two one-thread workers, started once for the module."""

    def __init__(self, procs: DaskProcs) -> None:
        self.procs = procs
        # A key that kills its worker ends in KilledWorker on its first
        # death, so the fault tests stay short.
        self.scheduler = procs.scheduler(env={'DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES': '0'})
        self.address = self.scheduler.address
        self.workers = [procs.worker(self.address, nthreads=1) for _ in range(2)]
        self.client = distributed.Client(self.address, set_as_default=False, timeout=30)
        wait_for_workers(self.client, 2, procs=procs.procs)

    def ready(self) -> Any:
        """The module's client, once both workers are up and idle (a test may have killed one)."""
        wait_for_workers(self.client, 2, procs=self.procs.procs)
        _wait_idle(self.client)
        return self.client


@pytest.fixture(scope='module')
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    with DaskProcs(tmp_path_factory.mktemp('deployed')) as started:
        cluster = Deployed(started)
        try:
            yield cluster
        finally:
            cluster.client.close()


def _wait_idle(client: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(client.processing().values()):
        assert time.monotonic() < deadline, 'the cluster is still busy'
        time.sleep(0.05)


def _keys(n: int) -> list[str]:
    return [f'k{i:03d}' for i in range(n)]


def _stash(out: Path, factory: Callable[[str], Any], keys: list[str], executor: Any, **kwargs: Any) -> Any:
    kwargs.setdefault('chunk_size', 2)
    return MultiProcessFactoryStash(
        DirectoryStash(out), factory, keys=keys, executor=executor, progress=False, **kwargs
    )


def _on_disk(out: Path) -> set[str]:
    return set(DirectoryStash(out).keys())


def _status(out: Path) -> dict[str, Any]:
    return json.loads((out / '.stashworks' / 'status.json').read_text(encoding='utf-8'))


class After:
    """An ``on_event`` hook that runs ``action`` once, after ``n`` items were reported."""

    def __init__(self, n: int, action: Callable[[], None]) -> None:
        self.n = n
        self.items = 0
        self.action = action
        self.fired = False

    def __call__(self, event: Any) -> None:
        if event.kind != 'item' or self.fired:
            return
        self.items += 1
        if self.items >= self.n:
            self.fired = True
            self.action()


def _driver_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith('DASK_')}
    # This folder (the helpers) and whatever this process was given.
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(HERE), os.environ.get('PYTHONPATH', '')) if p)
    env.update(extra)
    return env


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'stashworks', *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- 1. a lost scheduler -------------------------------------------------------------


def test_a_killed_scheduler_ends_the_batch_within_the_scheduler_timeout(procs: DaskProcs, tmp_path: Path) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=2)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 1, procs=procs.procs)
    out = tmp_path / 'out'
    killed: list[float] = []

    def kill_scheduler() -> None:
        sched.kill()
        killed.append(time.monotonic())

    executor = DaskExecutor(sched.address, scheduler_timeout=3)
    stash = _stash(out, Slow(tmp_path / 'marks', 0.1), _keys(80), executor, on_event=After(6, kill_scheduler))
    (tmp_path / 'marks').mkdir()

    with pytest.raises(BatchError) as info:
        stash.prime()

    took = time.monotonic() - killed[0]
    message = str(info.value)
    assert sched.address in message and 'scheduler' in message, message
    assert took < 3 + 20, f'the batch took {took:.1f} s to notice the lost scheduler'
    status = _status(out)
    assert status['state'] not in ('running', 'finished'), status
    assert status['eta_seconds'] is None


def test_a_lost_scheduler_is_not_a_worker_death_and_the_next_run_resumes(procs: DaskProcs, tmp_path: Path) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=2)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 1, procs=procs.procs)
    out, marks = tmp_path / 'out', tmp_path / 'marks'
    marks.mkdir()
    keys = _keys(40)
    # max_retries=0 and one key per chunk: a chunk counted as lost with its
    # worker would record its key as a failure at once.
    first = _stash(
        out,
        Slow(marks, 0.1),
        keys,
        DaskExecutor(sched.address, scheduler_timeout=3),
        chunk_size=1,
        max_retries=0,
        on_event=After(4, sched.kill),
    )
    with pytest.raises(BatchError):
        first.prime()
    procs.close()  # the old worker too: nothing writes behind the next run's back
    assert list(first.failures.keys()) == []
    present = _on_disk(out)
    assert 4 <= len(present) < 40

    again = procs.scheduler()
    procs.worker(again.address, nthreads=2)
    second = _stash(out, Slow(marks, 0.01), keys, DaskExecutor(again.address))
    result = second.prime()

    assert result.done_before == len(present)
    assert (result.computed, result.failed) == (40 - len(present), 0)
    assert {k: second.load(k) for k in keys} == {k: k * 2 for k in keys}
    assert _status(out)['state'] == 'finished'


def test_ctrl_c_while_the_scheduler_is_away_stops_cleanly(procs: DaskProcs, tmp_path: Path) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=2)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 1, procs=procs.procs)
    out = tmp_path / 'out'
    (tmp_path / 'marks').mkdir()
    ctrl_c = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))

    def kill_then_ctrl_c() -> None:
        sched.kill()
        ctrl_c.start()

    stash = _stash(
        out,
        Slow(tmp_path / 'marks', 0.1),
        _keys(60),
        DaskExecutor(sched.address, scheduler_timeout=30),
        on_event=After(4, kill_then_ctrl_c),
    )
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            stash.prime()
    finally:
        ctrl_c.cancel()

    assert time.monotonic() - started < 25
    assert _status(out)['state'] == 'interrupted'
    assert list(stash.failures.keys()) == []


def test_the_command_line_exits_non_zero_naming_the_lost_scheduler(procs: DaskProcs, tmp_path: Path) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=2)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 1, procs=procs.procs)
    (tmp_path / 'keys.txt').write_text('\n'.join(_keys(100)) + '\n')
    out = tmp_path / 'out'
    args = ['run', 'dask_procs:slow_item', '--keys', 'keys.txt', '--out', str(out), '--chunk-size', '2']
    args += ['--scheduler', sched.address, '--scheduler-timeout', '3', '--no-progress']
    driver = subprocess.Popen(
        [sys.executable, '-m', 'stashworks', *args],
        cwd=tmp_path,
        env=_driver_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_on_disk(out) if out.exists() else ()) < 4:
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, 'the batch did not start'
            time.sleep(0.05)
        sched.kill()
        stdout, stderr = driver.communicate(timeout=40)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()

    assert driver.returncode == 1, (stdout, stderr)
    assert f'lost the Dask scheduler at {sched.address}' in stderr, stderr
    assert _status(out)['state'] != 'running'


def test_a_scheduler_back_on_the_same_port_within_the_timeout_lets_the_batch_finish(
    procs: DaskProcs, tmp_path: Path
) -> None:
    sched = procs.scheduler()
    port = int(sched.address.rsplit(':', 1)[1])
    procs.worker(sched.address, nthreads=2)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 1, procs=procs.procs)
    out = tmp_path / 'out'
    (tmp_path / 'marks').mkdir()
    keys = _keys(60)

    def restart() -> None:
        sched.kill()
        sched.wait_dead()
        back = procs.scheduler(port=port)
        procs.worker(back.address, nthreads=2)

    stash = _stash(
        out,
        Slow(tmp_path / 'marks', 0.05),
        keys,
        DaskExecutor(sched.address, scheduler_timeout=60),
        max_retries=0,
        on_event=After(6, restart),
    )
    result = stash.prime()

    assert (result.failed, result.interrupted) == (0, False)
    assert {k: stash.load(k) for k in keys} == {k: k * 2 for k in keys}
    assert list(stash.failures.keys()) == []


def test_a_job_the_scheduler_lost_is_installed_again(deployed: Deployed, tmp_path: Path) -> None:
    # What a scheduler restarted between two looks at the client looks
    # like: the job's plugin is gone, the workers say so.
    client = deployed.ready()

    def drop_the_job() -> None:
        for name in stashworks_plugins(client)['scheduler']:
            client.unregister_worker_plugin(name)

    keys = _keys(40)
    stash = _stash(
        tmp_path / 'out',
        Slow(tmp_path / 'marks', 0.02),
        keys,
        DaskExecutor(deployed.address),
        on_event=After(4, drop_the_job),
    )
    (tmp_path / 'marks').mkdir()

    result = stash.prime()

    assert (result.computed, result.failed) == (40, 0)
    assert {k: stash.load(k) for k in keys} == {k: k * 2 for k in keys}


# -- 2. a cluster that grows ----------------------------------------------------------


def test_a_worker_that_joins_late_gets_chunks(procs: DaskProcs, tmp_path: Path) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=1)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 1, procs=procs.procs)
        marks = tmp_path / 'marks'
        marks.mkdir()
        joined = threading.Event()

        def join() -> None:
            procs.worker(sched.address, nthreads=3)
            threading.Thread(target=lambda: (client.wait_for_workers(2, timeout=60), joined.set())).start()

        stash = _stash(
            tmp_path / 'out',
            Slow(marks, 0.25),
            _keys(80),
            DaskExecutor(sched.address),
            chunk_size=1,
            on_event=After(2, join),
        )
        result = stash.prime()

    assert joined.is_set(), 'the late worker never joined'
    assert (result.computed, result.failed) == (80, 0)
    # One thread at first, four once the worker joined.
    assert concurrency(marks) >= 3, f'at most {concurrency(marks)} items ran at once'


def test_when_a_worker_leaves_fewer_chunks_stay_in_flight(procs: DaskProcs, tmp_path: Path) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=1)
    leaving = procs.worker(sched.address, nthreads=1)
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 2, procs=procs.procs)
    marks = tmp_path / 'marks'
    marks.mkdir()
    events: list[tuple[float, str, int]] = []
    left: list[float] = []

    def record(event: Any) -> None:
        if event.kind in ('submit', 'chunk', 'lost'):
            events.append((time.monotonic(), event.kind, event.chunk_id))
        if event.kind == 'chunk' and len(events) > 12 and not left:
            leaving.kill()  # the worker and its nanny: it does not come back
            left.append(time.monotonic())

    stash = _stash(
        tmp_path / 'out', Slow(marks, 0.2), _keys(40), DaskExecutor(sched.address), chunk_size=1, on_event=record
    )
    result = stash.prime()

    assert (result.computed, result.failed) == (40, 0)
    in_flight: set[int] = set()
    before, after = 0, 0
    for when, kind, chunk_id in events:
        if kind == 'submit':
            in_flight.add(chunk_id)
        else:
            in_flight.discard(chunk_id)
        if when < left[0]:
            before = max(before, len(in_flight))
        elif when > left[0] + 3:  # the scheduler and the executor have seen it go
            after = max(after, len(in_flight))
    assert (before, after) == (2, 1)


def test_an_adaptive_cluster_grows_and_the_batch_uses_it(tmp_path: Path) -> None:
    marks = tmp_path / 'marks'
    marks.mkdir()
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            host='127.0.0.1',
            dashboard_address='127.0.0.1:0',
            silence_logs=logging.CRITICAL,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        # As docs/cluster.md shows it: a cluster that grows to the work.
        cluster.adapt(minimum=1, maximum=4, interval='200ms', target_duration='1s')
        stash = _stash(tmp_path / 'out', Slow(marks, 0.2), _keys(80), DaskExecutor(client), chunk_size=1)
        result = stash.prime()

    assert (result.computed, result.failed) == (80, 0)
    pids = {pid for _, pid, _, _ in marks_of(marks)}
    assert len(pids) >= 3, f'the items ran on {len(pids)} worker processes'
    assert concurrency(marks) >= 3, f'at most {concurrency(marks)} items ran at once'


# -- 3. a killed driver ---------------------------------------------------------------

_DRIVER = """
import sys
from pathlib import Path
from dask_procs import Slow
from stashworks import DirectoryStash
from stashworks.multi import MultiProcessFactoryStash
from stashworks.multi.dask import DaskExecutor

out, marks, address = sys.argv[1:4]
Path(marks).mkdir(exist_ok=True)
MultiProcessFactoryStash(
    DirectoryStash(out), Slow(Path(marks), 0.1), keys=[f'k{i:03d}' for i in range(200)],
    executor=DaskExecutor(address), chunk_size=2, progress=False,
).prime()
"""


def _start_driver_and_kill_it(deployed: Deployed, tmp_path: Path) -> None:
    out = tmp_path / 'killed-out'
    driver = subprocess.Popen(
        [sys.executable, '-c', _DRIVER, str(out), str(tmp_path / 'killed-marks'), deployed.address],
        cwd=tmp_path,
        env=_driver_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_on_disk(out) if out.exists() else ()) < 4:
            assert driver.poll() is None, driver.communicate()[1]
            assert time.monotonic() < deadline, 'the killed driver never started'
            time.sleep(0.05)
    finally:
        driver.kill()
        driver.wait(timeout=10)


def test_a_later_run_removes_the_job_a_killed_driver_left_on_the_workers(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    _start_driver_and_kill_it(deployed, tmp_path)
    left = stashworks_plugins(client)
    assert left['scheduler'], 'the killed driver left no job behind: the test proves nothing'
    _wait_idle(client)

    stash = _stash(tmp_path / 'out', pid_and_key, _keys(8), DaskExecutor(deployed.address))
    stash.prime()

    assert all(names == [] for names in stashworks_plugins(client).values()), stashworks_plugins(client)


def test_remove_orphaned_jobs_removes_only_jobs_whose_driver_is_gone(deployed: Deployed, tmp_path: Path) -> None:
    from stashworks.multi.dask import remove_orphaned_jobs

    client = deployed.ready()
    _start_driver_and_kill_it(deployed, tmp_path)
    orphans = stashworks_plugins(client)['scheduler']
    assert orphans

    removed = remove_orphaned_jobs(client)

    assert sorted(removed) == orphans
    assert all(names == [] for names in stashworks_plugins(client).values())


def test_stashworks_dask_cleanup_removes_the_job_of_a_killed_driver(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    _start_driver_and_kill_it(deployed, tmp_path)
    orphans = stashworks_plugins(client)['scheduler']
    assert orphans

    run = _cli(['dask-cleanup', '--scheduler', deployed.address], cwd=tmp_path, env=_driver_env())

    assert run.returncode == 0, run.stderr
    assert f'removed {len(orphans)} batch job' in run.stdout and orphans[0] in run.stdout
    assert all(names == [] for names in stashworks_plugins(client).values())
    again = _cli(['dask-cleanup'], cwd=tmp_path, env=_driver_env(DASK_SCHEDULER_ADDRESS=deployed.address))
    assert again.returncode == 0 and 'no batch job whose driver is gone' in again.stdout, again.stderr


def test_a_batch_leaves_nothing_on_the_cluster_when_it_ends(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    stash = _stash(tmp_path / 'out', pid_and_key, _keys(8), DaskExecutor(deployed.address))

    stash.prime()

    assert all(names == [] for names in stashworks_plugins(client).values())


# -- 4. smaller things -----------------------------------------------------------------


def test_a_one_key_batch_does_not_ask_for_more_workers(
    deployed: Deployed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deployed.ready()
    stash = _stash(tmp_path / 'out', pid_and_key, ['only'], DaskExecutor(deployed.address))

    with caplog.at_level(logging.WARNING, logger='stashworks'):
        result = stash.prime()

    assert result.computed == 1
    assert not [r for r in caplog.records if 'sized for' in r.getMessage()], caplog.text


def test_the_ctrl_c_summary_counts_every_item_on_disk(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    out, marks = tmp_path / 'out', tmp_path / 'marks'
    marks.mkdir()
    stash = _stash(out, Slow(marks, 0.05), _keys(300), DaskExecutor(client), chunk_size=30)
    ctrl_c = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))

    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            stash.prime()
    finally:
        ctrl_c.cancel()  # the batch failed before it: never interrupt what follows
    _wait_idle(client)
    time.sleep(1.0)  # anything still running on a worker would write now

    result = stash.last_result
    assert result.done_before + result.computed == len(_on_disk(out))
    assert result.missing == 300 - len(_on_disk(out))


def test_failure_records_name_workers_host_pid_for_errors_and_deaths(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    keys = ['a', 'bad', 'b', 'poison', 'c']
    stash = _stash(tmp_path / 'out', Poison(), keys, DaskExecutor(client), chunk_size=1, max_retries=0)

    result = stash.prime()

    assert (result.computed, result.failed) == (3, 2)
    error, death = stash.failures.load('bad'), stash.failures.load('poison')
    assert death.error_type == 'WorkerDied'
    for record in (error, death):
        assert WORKER_NAME.match(record.worker), record
        assert record.worker.split(':')[0] == socket.gethostname()
        assert record.pid == int(record.worker.split(':')[1])


# -- 5. what a Dask user needs ----------------------------------------------------------


def _user_module(folder: Path) -> str:
    """Write a module that exists only on the driver; return its name."""
    name = f'drivermod_{uuid.uuid4().hex[:8]}'
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f'{name}.py').write_text(
        textwrap.dedent(
            """
            import os

            FACTOR = 3

            def helper(key):
                return key * FACTOR

            def compute(key):
                return f'{helper(key)}@{os.getpid()}'
            """
        )
    )
    return name


def test_a_module_only_on_the_driver_reaches_the_workers(
    deployed: Deployed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = deployed.ready()
    name = _user_module(tmp_path / 'driver')
    monkeypatch.syspath_prepend(str(tmp_path / 'driver'))
    module = __import__(name)
    try:
        stash = _stash(tmp_path / 'out', module.compute, _keys(6), DaskExecutor(deployed.address))
        result = stash.prime()
    finally:
        sys.modules.pop(name, None)

    assert result.computed == 6
    worker_pids = set(client.run(os.getpid).values())
    for key in _keys(6):
        value, pid = stash.load(key).split('@')
        assert value == key * 3 and int(pid) in worker_pids
    # Nothing of it stays on the workers once the batch ended.
    assert not any(client.run(lambda: [m for m in sys.modules if m.startswith('drivermod_')]).values())


def test_run_with_scheduler_computes_on_the_cluster_with_the_drivers_module(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    driver = tmp_path / 'driver'
    name = _user_module(driver)
    (driver / 'keys.txt').write_text('\n'.join(_keys(10)) + '\n')
    out = tmp_path / 'out'

    run = _cli(
        ['run', f'{name}:compute', '--keys', 'keys.txt', '--out', str(out), '--scheduler', deployed.address],
        cwd=driver,
        env=_driver_env(),
    )

    assert run.returncode == 0, run.stderr
    assert client.dashboard_link.split('/status')[0] in run.stdout + run.stderr
    worker_pids = set(client.run(os.getpid).values())
    values = {k: DirectoryStash(out).load(k) for k in _keys(10)}
    assert {int(v.split('@')[1]) for v in values.values()} <= worker_pids
    status = _status(out)
    assert deployed.address in status['executor']
    assert status['dashboard'].startswith('http://127.0.0.1:')


def test_demo_uses_the_cluster_named_by_dask_scheduler_address(deployed: Deployed, tmp_path: Path) -> None:
    deployed.ready()
    out = tmp_path / 'demo'

    run = _cli(
        ['demo', '--limit', '12', '--out', str(out)],
        cwd=tmp_path,
        env=_driver_env(DASK_SCHEDULER_ADDRESS=deployed.address),
    )

    assert run.returncode == 0, run.stderr
    assert deployed.address in _status(out)['executor']
    assert len(DirectoryStash(out)) + len(os.listdir(out / '.stashworks' / 'failures')) == 12


def test_status_shows_the_dashboard_link(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    out = tmp_path / 'out'
    _stash(out, pid_and_key, _keys(4), DaskExecutor(deployed.address)).prime()
    link = _status(out)['dashboard']
    assert (
        link.startswith('http://127.0.0.1:') and link.split('/status')[0] == client.dashboard_link.split('/status')[0]
    )

    run = _cli(['status', str(out)], cwd=tmp_path, env=_driver_env())

    assert run.returncode == 0, run.stderr
    assert f'dashboard: {link}' in run.stdout


def test_task_names_show_the_users_function(deployed: Deployed, tmp_path: Path) -> None:
    client = deployed.ready()
    stash = _stash(tmp_path / 'out', pid_and_key, _keys(8), DaskExecutor(deployed.address))

    with distributed.get_task_stream(client) as stream:
        stash.prime()

    names = {dask.utils.key_split(task['key']) for task in stream.data}
    assert names and all('pid_and_key' in name for name in names), names


@pytest.mark.parametrize('where', ['local', 'dask'])
def test_retries_retry_an_item_that_raised_before_recording_a_failure(
    deployed: Deployed, tmp_path: Path, where: str
) -> None:
    executor = DaskExecutor(deployed.ready()) if where == 'dask' else 'local'
    counts = tmp_path / 'counts'
    counts.mkdir()
    keys = _keys(6)
    stash = _stash(tmp_path / 'out', Flaky(counts, 2), keys, executor, retries=2, workers=2)

    result = stash.prime()

    assert (result.computed, result.failed) == (6, 0)
    assert {k: stash.load(k) for k in keys} == {k: k * 2 for k in keys}
    assert len(os.listdir(counts)) == 18  # two failures and a success per key


def test_an_item_that_keeps_raising_is_recorded_after_its_retries(deployed: Deployed, tmp_path: Path) -> None:
    counts = tmp_path / 'counts'
    counts.mkdir()
    stash = _stash(tmp_path / 'out', Flaky(counts, 5), ['x'], DaskExecutor(deployed.ready()), retries=1)

    result = stash.prime()

    assert (result.computed, result.failed) == (0, 1)
    record = stash.failures.load('x')
    assert (record.error_type, record.attempts) == ('OSError', 2)
    assert 'attempt 2' in record.message


def test_run_retries_option(tmp_path: Path) -> None:
    counts = tmp_path / 'counts'
    counts.mkdir()
    (tmp_path / 'keys.txt').write_text('a\nb\nc\n')
    out = tmp_path / 'out'

    run = _cli(
        ['run', 'dask_procs:flaky_item', '--keys', 'keys.txt', '--out', str(out), '--retries', '2', '--workers', '2'],
        cwd=tmp_path,
        env=_driver_env(STASHWORKS_TEST_COUNTS=str(counts)),
    )

    assert run.returncode == 0, run.stderr
    assert sorted(DirectoryStash(out).keys()) == ['a', 'b', 'c']


def test_resources_send_chunks_only_to_workers_that_have_them_and_size_the_batch(
    procs: DaskProcs, tmp_path: Path
) -> None:
    sched = procs.scheduler()
    procs.worker(sched.address, nthreads=2)
    procs.worker(sched.address, nthreads=2, resources={'GPU': 1})
    with distributed.Client(sched.address, set_as_default=False) as client:
        wait_for_workers(client, 2, procs=procs.procs)
        gpu_worker = next(a for a, w in client.scheduler_info()['workers'].items() if w['resources'].get('GPU'))
        gpu_pid = client.run(os.getpid, workers=[gpu_worker])[gpu_worker]
        keys = _keys(12)
        stash = _stash(tmp_path / 'out', pid_and_key, keys, DaskExecutor(client, resources={'GPU': 1}), chunk_size=1)

        result = stash.prime()

    assert result.computed == 12
    # One GPU: the batch is sized for one chunk at a time, all on that worker.
    assert result.workers == 1
    assert {int(stash.load(k).split(':')[0]) for k in keys} == {gpu_pid}


def test_an_executor_without_an_address_reads_dask_scheduler_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('DASK_SCHEDULER_ADDRESS', 'tcp://127.0.0.1:8786')
    assert DaskExecutor().address == 'tcp://127.0.0.1:8786'

    monkeypatch.delenv('DASK_SCHEDULER_ADDRESS')
    with dask.config.set({'scheduler-address': None}), pytest.raises(ValueError, match='DASK_SCHEDULER_ADDRESS'):
        DaskExecutor()
