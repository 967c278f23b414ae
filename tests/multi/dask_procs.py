"""Real ``dask scheduler`` and ``dask worker`` processes for the deployment tests.

A deployed cluster is not a ``LocalCluster``: the scheduler and every
worker are processes of their own, each started in its own working
folder, sharing only the output file system with the driver.  This module
starts such processes on the loopback interface (never any other address)
and tears them down reliably:

* every process starts in a session of its own, so a worker's nanny and
  the worker process it forks die together with one ``killpg``;
* ports are chosen by the operating system (``--port 0``) and read back
  from ``--scheduler-file``, so two test runs never collide;
* every wait is bounded, and :meth:`DaskProcs.close` SIGKILLs whatever is
  left, whatever happened in the test.

The second half holds what the workers compute in these tests: it is
importable on the workers because :class:`DaskProcs` puts this folder on
their ``PYTHONPATH`` (as a deployment installs the same software on every
node); the driver's own folder is never on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = [
    'LOOPBACK',
    'DaskProcs',
    'Proc',
    'Scheduler',
    'Worker',
    'Slow',
    'Flaky',
    'Poison',
    'concurrency',
    'stashworks_plugins',
]

HERE = Path(__file__).resolve().parent

#: The only interface these processes ever listen on.
LOOPBACK = '127.0.0.1'

#: Seconds to wait for a process to come up, or to go away.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass
class Proc:
    """One started process: its ``Popen``, its working folder and its log."""

    popen: subprocess.Popen[bytes]
    folder: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process and everything it started (its session)."""
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def wait_dead(self, timeout: float = STOP_TIMEOUT) -> None:
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(timeout=timeout)

    def tail(self, lines: int = 30) -> str:
        """The end of the process's log, for an assertion message."""
        try:
            text = self.log.read_text(encoding='utf-8', errors='replace')
        except OSError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])


@dataclass
class Scheduler(Proc):
    """A ``dask scheduler`` process and where it listens."""

    address: str = ''
    dashboard_port: Optional[int] = None


@dataclass
class Worker(Proc):
    """A ``dask worker`` process (a nanny and the worker it runs)."""

    nthreads: int = 1
    resources: dict[str, float] = field(default_factory=dict)


class DaskProcs:
    """Starts and stops real Dask processes under ``root``.

    Args:
        root: a folder for the processes' working folders, scheduler files
            and logs (a test's ``tmp_path``).
        env: extra environment for every process (for example
            ``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES``).
    """

    def __init__(self, root: Path, env: Optional[dict[str, str]] = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.procs: list[Proc] = []

    # -- starting --------------------------------------------------------

    def _environment(self, extra: Optional[dict[str, str]]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith('DASK_')}
        # The workers import this module's helpers (the software every
        # node has); the driver's folder and the test's tmp folders are
        # deliberately not on their path.
        env['PYTHONPATH'] = os.pathsep.join(p for p in (str(HERE), os.environ.get('PYTHONPATH', '')) if p)
        env['PYTHONDONTWRITEBYTECODE'] = '1'
        # Quiet, fast processes: no logs worth reading unless a test fails.
        env.setdefault('DASK_DISTRIBUTED__LOGGING__DISTRIBUTED', 'warning')
        env.update(self.env)
        env.update(extra or {})
        return env

    def _spawn(
        self, name: str, args: list[str], env: Optional[dict[str, str]]
    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        folder = self.root / f'{name}-{uuid.uuid4().hex[:6]}'
        folder.mkdir(parents=True)
        log = folder / 'log.txt'
        with open(log, 'wb') as out:
            popen = subprocess.Popen(
                [sys.executable, '-m', 'dask', *args],
                cwd=folder,
                env=self._environment(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return popen, folder, log

    def scheduler(self, port: int = 0, env: Optional[dict[str, str]] = None, dashboard: bool = True) -> Scheduler:
        """Start ``dask scheduler`` on the loopback interface and wait until it listens.

        Args:
            port: ``0`` for a free port chosen by the system, or a port to
                reuse (a scheduler restarted where the last one was).
            env: extra environment for this process.
            dashboard: serve the dashboard (on a free loopback port).
        """
        name = 'scheduler'
        folder_hint = self.root / f'{name}-files'
        folder_hint.mkdir(exist_ok=True)
        sched_file = folder_hint / f'scheduler-{uuid.uuid4().hex[:8]}.json'
        args = ['scheduler', '--host', LOOPBACK, '--port', str(port), '--scheduler-file', str(sched_file)]
        args += ['--dashboard-address', f'{LOOPBACK}:0'] if dashboard else ['--no-dashboard']
        popen, folder, log = self._spawn(name, args, env)
        proc = Scheduler(popen, folder, log)
        self.procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if popen.poll() is not None:
                raise RuntimeError(f'dask scheduler exited with {popen.returncode}:\n{proc.tail()}')
            try:
                info = json.loads(sched_file.read_text(encoding='utf-8'))
            except (OSError, ValueError):
                info = {}
            if info.get('address'):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f'dask scheduler did not start within {START_TIMEOUT:g} s:\n{proc.tail()}')
        proc.address = str(info['address'])
        assert proc.address.startswith(f'tcp://{LOOPBACK}:'), proc.address
        port_info = info.get('services', {}).get('dashboard')
        proc.dashboard_port = int(port_info) if port_info else None
        return proc

    def worker(
        self,
        address: str,
        nthreads: int = 1,
        resources: Optional[dict[str, float]] = None,
        env: Optional[dict[str, str]] = None,
        nanny: bool = True,
    ) -> Worker:
        """Start ``dask worker ADDRESS`` in a working folder of its own (not waited for).

        Use :func:`wait_for_workers` (or ``client.wait_for_workers``) to
        wait until it has joined.
        """
        assert address.startswith(f'tcp://{LOOPBACK}:'), f'loopback only, not {address}'
        folder_args = [
            'worker',
            address,
            '--host',
            LOOPBACK,
            '--nthreads',
            str(nthreads),
            '--nworkers',
            '1',
            '--no-dashboard',
            '--death-timeout',
            '60',
            '--local-directory',
            'dask-scratch',
        ]
        if not nanny:
            folder_args.append('--no-nanny')
        if resources:
            folder_args += ['--resources', ' '.join(f'{k}={v:g}' for k, v in resources.items())]
        popen, folder, log = self._spawn('worker', folder_args, env)
        # The worker's files go to its own folder, as on a node.
        proc = Worker(popen, folder, log, nthreads=nthreads, resources=dict(resources or {}))
        self.procs.append(proc)
        return proc

    # -- stopping --------------------------------------------------------

    def close(self) -> None:
        """SIGKILL every process started here (and their children), and reap them."""
        for proc in self.procs:
            proc.kill(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def __enter__(self) -> 'DaskProcs':
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for_workers(client: Any, n: int, timeout: float = START_TIMEOUT, procs: Optional[list[Proc]] = None) -> None:
    """Wait (bounded) until ``client``'s scheduler has ``n`` workers; show their logs if not."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError as exc:
        logs = '\n'.join(f'--- {p.folder.name}\n{p.tail()}' for p in procs or [])
        raise TimeoutError(f'{n} workers did not join within {timeout:g} s\n{logs}') from exc


def stashworks_plugins(client: Any) -> dict[str, list[str]]:
    """The stashworks worker plugins the scheduler holds and each worker has loaded.

    Returns ``{'scheduler': [...], <worker address>: [...], ...}``.
    """
    found: dict[str, list[str]] = {
        'scheduler': sorted(client.run_on_scheduler(_scheduler_plugins)),
    }
    for address, names in client.run(_worker_plugins).items():
        found[address] = sorted(names)
    return found


def _scheduler_plugins(dask_scheduler: Any) -> list[str]:
    return [name for name in dask_scheduler.worker_plugins if 'stashworks' in name]


def _worker_plugins(dask_worker: Any) -> list[str]:
    return [name for name in dask_worker.plugins if 'stashworks' in name]


# -- what the workers compute (importable on the workers) -----------------------


class Slow:
    """``f(key) -> key * 2`` after ``delay`` s, leaving ``<key>.<pid>.<start>.<end>`` in ``marks``.

    The marks let a test count computations and measure how many ran at
    once (:func:`concurrency`).
    """

    def __init__(self, marks: Path, delay: float = 0.1) -> None:
        self.marks = str(marks)
        self.delay = delay

    def __call__(self, key: str) -> str:
        start = time.time()
        time.sleep(self.delay)
        end = time.time()
        Path(self.marks, f'{key}.{os.getpid()}.{start:.4f}.{end:.4f}.{uuid.uuid4().hex[:6]}').touch()
        return key * 2


def marks_of(marks: Path) -> list[tuple[str, int, float, float]]:
    """``(key, pid, start, end)`` of every computation :class:`Slow` recorded."""
    out = []
    for name in os.listdir(marks):
        key, pid, start_s, start_f, end_s, end_f, _ = name.rsplit('.', 6)
        out.append((key, int(pid), float(f'{start_s}.{start_f}'), float(f'{end_s}.{end_f}')))
    return out


def concurrency(marks: Path) -> int:
    """The largest number of :class:`Slow` computations that overlapped in time."""
    edges = []
    for _, _, start, end in marks_of(marks):
        edges.append((start, 1))
        edges.append((end, -1))
    peak = running = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


class Flaky:
    """Raises ``OSError`` the first ``fails`` times a key is computed, then returns ``key * 2``.

    Attempts are counted in files under ``counts``, so they add up across
    worker processes and machines sharing the folder.
    """

    def __init__(self, counts: Path, fails: int) -> None:
        self.counts = str(counts)
        self.fails = fails

    def __call__(self, key: str) -> str:
        Path(self.counts, f'{key}.{uuid.uuid4().hex[:8]}').touch()
        seen = sum(1 for name in os.listdir(self.counts) if name.rsplit('.', 1)[0] == key)
        if seen <= self.fails:
            raise OSError(f'transient error on {key} (attempt {seen})')
        return key * 2


class Poison:
    """``key * 2``, except that ``bad`` raises and ``poison`` SIGKILLs its worker process."""

    def __call__(self, key: str) -> str:
        if key == 'bad':
            raise ValueError(f'cannot compute {key}')
        if key == 'poison':
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)
        return key * 2


def pid_and_key(key: str) -> str:
    """Which worker computed ``key``: its pid, for tests of where tasks ran."""
    time.sleep(0.02)
    return f'{os.getpid()}:{key}'


def slow_item(key: str) -> str:
    """``key * 2`` after 0.1 s (for the command line, which takes MODULE:FUNCTION)."""
    time.sleep(0.1)
    return key * 2


def flaky_item(key: str) -> str:
    """:class:`Flaky` failing twice per key, counting in ``$STASHWORKS_TEST_COUNTS``."""
    return Flaky(Path(os.environ['STASHWORKS_TEST_COUNTS']), 2)(key)
