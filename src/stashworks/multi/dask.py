"""Run a batch on a Dask cluster: :class:`DaskExecutor`.

The batch does not change: ``MultiProcessFactoryStash(..., executor=
DaskExecutor(client))`` computes the same keys, resumes the same way and
records failures the same way as on the local process pool.  What differs
is where the chunks run, and what that requires:

* **A shared filesystem.** Workers write results straight to the
  delegate, so its directory (and the failure store's) must be visible
  and writable on every worker.  :meth:`DaskExecutor.start` checks this
  before any work is sent and names the path and the worker when it is
  not.
* **The job travels once per worker.** The job (delegate, factory,
  failure store) is serialized with :mod:`dill` once, as bytes, and
  installed on every worker by a worker plugin, which the scheduler also
  hands to workers that join (or restart) later.  The scheduler only ever
  sees bytes: it unpickles and re-pickles task arguments, and an object
  that runs dill while being unpickled there can hang it.  Each worker
  loads the job the first time one of its tasks needs it, in the task's
  thread, and keeps it until the batch ends.
* **Tasks may run twice.** When a worker dies Dask reruns its task
  elsewhere; writes are atomic and idempotent, so a key computed twice
  leaves one valid item.
* **A chunk that keeps killing workers** ends in Dask's ``KilledWorker``
  after ``distributed.scheduler.allowed-failures`` + 1 worker deaths; it
  is reported ``lost`` with that reason, and the batch isolates the key
  that kills its worker, as on the local pool.
* **No queueing behind a slow chunk.** Chunks are handed to the scheduler
  only as worker threads free up (one per thread, plus ``backlog``), so a
  fast chunk never waits on a worker busy with a slow one, whatever the
  cluster's ``worker-saturation``.

``distributed`` is an optional dependency (``pip install
'stashworks[dask]'``); this module imports without it, and
:class:`DaskExecutor` raises an :class:`ImportError` naming the extra.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import pickle
import queue
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import dill

from .._atomic import TEMP_PREFIX, TEMP_SUFFIX
from .executor import Executor
from .job import Job, dump_job, load_job
from .wire import Chunk, ChunkReport, ExecutorError, Report
from .workers import resolve_workers

try:
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as _missing:  # the optional 'dask' extra is not installed
    distributed = None  # type: ignore[assignment]
    WorkerPlugin = object  # type: ignore[misc,assignment]
    _IMPORT_ERROR: Optional[ImportError] = _missing
else:
    _IMPORT_ERROR = None

__all__ = ['DaskExecutor', 'ClusterError', 'INSTALL_HINT']

logger = logging.getLogger(__name__)

#: How to get the optional dependency this module needs.
INSTALL_HINT = "pip install 'stashworks[dask]'"

# How often a running chunk asks whether its task was cancelled (Ctrl-C).
_CANCEL_POLL = 0.2
# How often the executor re-reads the cluster's thread count, so chunks
# flow to workers that joined.
_THREADS_POLL = 1.0


class ClusterError(ExecutorError):
    """The Dask cluster cannot run the batch.

    Raised when the scheduler cannot be reached, has no workers, when a
    worker cannot see or write a shared directory, or when the job cannot
    be loaded on a worker.  The message names the address, the path and
    the worker concerned.
    """


def _require_distributed() -> None:
    if distributed is None:
        raise ImportError(
            "DaskExecutor needs the optional 'dask' extra (the 'distributed' package), "
            f'which is not installed: {INSTALL_HINT}',
            name='distributed',
        ) from _IMPORT_ERROR


# -- worker side ----------------------------------------------------------------


class _JobLoadError(Exception):
    """A worker could not load the batch's job (sent back to the parent)."""


class _JobPlugin(WorkerPlugin):
    """Carries one batch's job to a worker, once.

    The scheduler keeps the plugin (as bytes it never unpickles) and
    installs it on every worker, including workers that start after the
    batch did.  The job itself is loaded lazily, in a task's thread, so a
    job that is slow to load never blocks the worker's event loop.
    """

    def __init__(self, name: str, job_bytes: bytes) -> None:
        self.name = name
        self.job_bytes = job_bytes
        self._job: Optional[Job] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {'name': self.name, 'job_bytes': self.job_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state['name'], state['job_bytes'])  # type: ignore[misc]

    def teardown(self, worker: Any) -> None:
        # Drop the loaded job (it may hold a large model) when the batch ends.
        self._job = None

    def job(self, where: str) -> Job:
        """The loaded job (loaded on first use)."""
        with self._lock:
            if self._job is None:
                try:
                    self._job = load_job(self.job_bytes)
                except Exception as exc:
                    raise _JobLoadError(
                        f'cannot load the batch job on worker {where}: {type(exc).__name__}: {exc} '
                        '(is every module the job uses installed on the workers?)'
                    ) from exc
            return self._job


def _cancel_check(worker: Any, key: Any) -> Callable[[], bool]:
    """A ``should_stop`` callback: has this task been cancelled?

    Dask cannot interrupt a running task's thread; a chunk asks between
    items instead, at most every :data:`_CANCEL_POLL` seconds.
    """
    last = time.monotonic()

    def cancelled() -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < _CANCEL_POLL:
            return False
        last = now
        try:
            ts = worker.state.tasks.get(key)
        except Exception:
            # The worker's internals changed: never stop early rather than guess.
            return False
        return ts is None or ts.state in ('cancelled', 'released', 'forgotten')

    return cancelled


def _run_chunk(plugin_name: str, chunk_bytes: bytes) -> ChunkReport:
    """The task: run one chunk of the installed job on this worker."""
    worker = distributed.get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, _JobPlugin):
        raise _JobLoadError(f'the batch job {plugin_name} is not installed on worker {worker.address}')
    job = plugin.job(worker.address)
    chunk = dill.loads(chunk_bytes)
    return job.run_chunk(chunk, should_stop=_cancel_check(worker, worker.get_current_task()))


def _probe_shared_paths(probes: list[tuple[str, str, str]]) -> list[str]:
    """Run on each worker: can it read the parent's token and write beside it?

    Returns one line per problem (empty when every path is usable).
    """
    problems = []
    for path, name, token in probes:
        where = Path(path)
        try:
            seen = (where / name).read_text(encoding='utf-8')
        except OSError as exc:
            problems.append(f'{path}: cannot read the check file written by the parent ({exc.strerror or exc})')
            continue
        if seen != token:
            problems.append(f'{path}: is a different directory on this worker (the check file holds other content)')
            continue
        probe = where / f'{TEMP_PREFIX}probe-{uuid.uuid4().hex[:12]}-{os.getpid()}{TEMP_SUFFIX}'
        try:
            with open(probe, 'xb') as fh:
                fh.write(b'ok')
            os.unlink(probe)
        except OSError as exc:
            problems.append(f'{path}: cannot create a file ({exc.strerror or exc})')
    return problems


# -- parent side ----------------------------------------------------------------


def _restore_executor(address: str, options: dict[str, Any]) -> 'DaskExecutor':
    return DaskExecutor(address, **options)


class DaskExecutor(Executor):
    """Runs a batch's chunks on a Dask cluster.

    Args:
        client: a connected :class:`distributed.Client` (left open by
            :meth:`shutdown`), or a scheduler address such as
            ``'tcp://host:8786'`` (a client is created by :meth:`start`
            and closed by :meth:`shutdown`).
        backlog: chunks handed to the scheduler beyond one per worker
            thread.  ``0`` (the default) hands a chunk over only when a
            thread is free for it, so no chunk queues behind a slow one and
            a worker death touches only running chunks.  ``None`` hands
            every chunk over at once, which an adaptive cluster needs to
            see the backlog and scale up.
        check_paths: check, before any work is sent, that every worker
            can read and write the job's shared directories.
        timeout: seconds to wait for the scheduler to answer and for at
            least one worker.

    Raises:
        ImportError: if ``distributed`` (the ``dask`` extra) is not
            installed; the message says how to install it.
        TypeError: if ``client`` is neither a client nor an address.
    """

    def __init__(
        self,
        client: Union['distributed.Client', str],
        *,
        backlog: Optional[int] = 0,
        check_paths: bool = True,
        timeout: float = 30.0,
    ) -> None:
        _require_distributed()
        if isinstance(client, str):
            self.address: Optional[str] = client
            self._user_client: Optional[distributed.Client] = None
        elif isinstance(client, distributed.Client):
            self.address = None
            self._user_client = client
        else:
            raise TypeError(f'DaskExecutor needs a distributed.Client or a scheduler address, not {client!r}')
        if backlog is not None and backlog < 0:
            raise ValueError(f'backlog must be >= 0 or None, not {backlog!r}')
        self.backlog = backlog
        self.check_paths = check_paths
        self.timeout = timeout
        self._reset()

    def _reset(self) -> None:
        self._client: Optional[distributed.Client] = None
        self._own_client = False
        self._plugin_name: Optional[str] = None
        self._pending: deque[Chunk] = deque()
        self._running: dict[Any, tuple[Any, Chunk]] = {}
        self._done: queue.Queue[Any] = queue.Queue()
        self._counter = itertools.count()
        self._threads = 0
        self._threads_read = 0.0
        #: most chunks running at once when the batch asked for fewer
        #: workers than the cluster has threads (``None``: all of them)
        self._cap: Optional[int] = None
        self._cancelling = False
        self._started = False
        self._description = ''

    # A stash that holds its executor may itself be shipped to workers
    # (the subclass form of MultiProcessStash): ship only the settings,
    # never a live client.
    def __reduce__(self) -> tuple[Any, ...]:
        address = self.address
        if address is None and self._user_client is not None:
            address = self._user_client.scheduler.address
        options = {'backlog': self.backlog, 'check_paths': self.check_paths, 'timeout': self.timeout}
        return (_restore_executor, (address, options))

    @property
    def client(self) -> Optional['distributed.Client']:
        """The client in use (``None`` before :meth:`start` for an address)."""
        return self._client or self._user_client

    @property
    def description(self) -> str:
        if self._description:
            return self._description
        if self._user_client is not None:
            return f'Dask cluster at {self._user_client.scheduler.address}'
        return f'Dask cluster at {self.address}'

    # -- Executor ----------------------------------------------------------

    def start(self, job: Job, workers: Union[int, float] = 0, limit: Optional[int] = None) -> int:
        """Connect, check the shared paths and install ``job`` on every worker.

        ``workers`` is read against the cluster's threads (``0``: all of
        them, as many as there are at each dispatch); an explicit count
        smaller than the cluster is a cap on the chunks running at once,
        logged as a warning.

        Returns:
            The cluster's threads now, or the cap (never more than ``limit``).

        Raises:
            ClusterError: the scheduler cannot be reached or has no worker,
                a worker cannot use a shared path, or the job cannot be
                serialized.
        """
        if self._started:
            raise ExecutorError(f'{self.description} is already running a batch')
        self._reset()
        client = self._connect()
        self._started = True
        try:
            self._wait_for_workers(client)
            if self.check_paths:
                self._check_shared_paths(client, [Path(p) for p in job.shared_paths()])
            self._install(client, job)
        except BaseException:
            self.shutdown(cancel=True)
            raise
        nthreads = client.nthreads()
        self._threads = sum(nthreads.values())
        self._threads_read = time.monotonic()
        address = client.scheduler.address
        self._description = f'Dask cluster at {address} ({len(nthreads)} workers, {self._threads} threads)'
        logger.info('running on %s', self._description)
        size = resolve_workers(workers, jobs=limit, cpus=max(1, self._threads))
        explicit = resolve_workers(workers, cpus=max(1, self._threads))
        if not (isinstance(workers, int) and workers == 0) and explicit < self._threads:
            # Asked for fewer than the cluster has: honour it, and say so.
            self._cap = explicit
            logger.warning(
                'the batch runs at most %d chunks at once but %s has %d threads; pass workers=0 to use them all',
                explicit,
                self._description,
                self._threads,
            )
        return size

    def submit(self, chunk: Chunk) -> None:
        if not self._started:
            raise ExecutorError(f'{self.description}: submit() before start()')
        self._pending.append(chunk)
        self._fill()

    def reports(self, timeout: Optional[float] = None) -> Iterator[Report]:
        idle_since = time.monotonic()
        while self._pending or self._running:
            self._fill()
            wait = _THREADS_POLL
            if timeout is not None:
                wait = min(wait, max(0.0, idle_since + timeout - time.monotonic()))
            try:
                future = self._done.get(timeout=wait)
            except queue.Empty:
                if timeout is not None and time.monotonic() - idle_since >= timeout:
                    return
                continue
            report = self._collect(future)
            if report is not None:
                idle_since = time.monotonic()
                yield report

    def shutdown(self, cancel: bool = False) -> None:
        if not self._started:
            return
        self._started = False
        client = self._client
        try:
            if client is not None:
                futures = [future for future, _ in self._running.values()]
                if futures and cancel:
                    self._cancelling = True
                    logger.info('cancelling %d chunks on %s', len(futures), self.description)
                    client.cancel(futures)
                elif futures:
                    distributed.wait(futures)
                self._uninstall(client)
        finally:
            self._pending.clear()
            self._running.clear()
            if client is not None and self._own_client:
                client.close()
            self._client = None

    # -- start-up ----------------------------------------------------------

    def _connect(self) -> 'distributed.Client':
        if self._user_client is not None:
            if self._user_client.status not in ('running', 'connecting', 'newly-created'):
                raise ClusterError(f'the Dask client given to DaskExecutor is {self._user_client.status}')
            self._client = self._user_client
            return self._client
        client = self._open_client()
        self._client, self._own_client = client, True
        return client

    def _open_client(self) -> 'distributed.Client':
        try:
            return distributed.Client(self.address, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f'cannot connect to the Dask scheduler at {self.address}: {exc}') from exc

    def _wait_for_workers(self, client: 'distributed.Client') -> None:
        try:
            client.wait_for_workers(1, timeout=self.timeout)
        except (TimeoutError, OSError) as exc:
            raise ClusterError(
                f'the Dask cluster at {client.scheduler.address} has no worker after {self.timeout:g} s'
            ) from exc

    def _check_shared_paths(self, client: 'distributed.Client', paths: list[Path]) -> None:
        """Fail unless every worker can read a token the parent wrote, and write, in each path."""
        probes: list[tuple[str, str, str]] = []
        written: list[Path] = []
        try:
            for path in paths:
                token = uuid.uuid4().hex
                name = f'{TEMP_PREFIX}check-{token[:12]}{TEMP_SUFFIX}'
                try:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / name).write_text(token, encoding='utf-8')
                except OSError as exc:
                    raise ClusterError(
                        f'cannot write to the shared directory {path} on this machine: {exc.strerror or exc}'
                    ) from exc
                written.append(path / name)
                # The path exactly as the job will use it on the workers:
                # a relative path resolves against each worker's own
                # working directory.
                probes.append((str(path), name, token))
            results = client.run(_probe_shared_paths, probes, on_error='return')
        finally:
            for file in written:
                try:
                    file.unlink()
                except OSError:
                    pass
        problems = []
        for address, result in sorted(results.items()):
            if isinstance(result, BaseException):
                problems.append(f'worker {address}: the check itself failed: {type(result).__name__}: {result}')
            else:
                problems.extend(f'worker {address}: {line}' for line in result)
        if problems:
            hint = ''
            if any(not p.is_absolute() for p in paths):
                hint = " Relative paths resolve against each worker's own working directory: use absolute ones."
            raise ClusterError(
                "the Dask workers cannot use the batch's shared directories; workers write results straight "
                'to them, so they must be on a filesystem every worker sees and may write:\n  '
                + '\n  '.join(problems)
                + ('\n' + hint.strip() if hint else '')
            )

    def _install(self, client: 'distributed.Client', job: Job) -> None:
        try:
            job_bytes = dump_job(job, 'the Dask workers')
        except ExecutorError as exc:
            raise ClusterError(str(exc)) from exc.__cause__
        digest = hashlib.sha256(job_bytes).hexdigest()
        # The digest names the job; the suffix keeps two batches with the
        # same job on one cluster from removing each other's plugin.
        name = f'stashworks-job-{digest[:16]}-{uuid.uuid4().hex[:8]}'
        try:
            client.register_plugin(_JobPlugin(name, job_bytes), name=name)
        except Exception as exc:
            raise ClusterError(
                f'cannot install the batch job on the Dask workers of {client.scheduler.address}: '
                f'{type(exc).__name__}: {exc}'
            ) from exc
        self._plugin_name = name
        logger.debug('installed job %s (%d bytes) on %s', name, len(job_bytes), client.scheduler.address)

    def _uninstall(self, client: 'distributed.Client') -> None:
        name, self._plugin_name = self._plugin_name, None
        if name is None or client.status != 'running':
            return
        try:
            client.unregister_worker_plugin(name)
        except Exception as exc:
            # The cluster keeps working; only the job's bytes linger.
            logger.warning('could not remove the batch job %s from %s: %s', name, self.description, exc)

    # -- running -----------------------------------------------------------

    def free_slots(self) -> int:
        """One chunk per cluster thread (read again every second, so a cluster that grows is used), plus ``backlog``."""
        if not self._started:
            return 0
        return max(0, self._room() - len(self._running) - len(self._pending))

    def _room(self) -> int:
        """How many chunks may be on the cluster at once now."""
        if self.backlog is None:
            return sys.maxsize
        now = time.monotonic()
        if now - self._threads_read >= _THREADS_POLL and self._client is not None:
            try:
                self._threads = sum(self._client.nthreads().values())
            except Exception as exc:
                logger.debug('cannot read the thread count of %s: %s', self.description, exc)
            self._threads_read = now
        threads = self._threads if self._cap is None else min(self._cap, self._threads)
        # At least one chunk in flight, so work goes on while workers restart.
        return max(1, threads) + self.backlog

    def _fill(self) -> None:
        client = self._client
        if client is None:
            return
        room = self._room()
        while self._pending and len(self._running) < room:
            chunk = self._pending.popleft()
            key = f'stashworks-chunk-{self._plugin_name}-{chunk.id}-{next(self._counter)}'
            # The chunk travels as bytes too: its payload may be any user
            # object, and the scheduler must never run dill.
            future = client.submit(
                _run_chunk, self._plugin_name, dill.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL), key=key, retries=0
            )
            self._running[future.key] = (future, chunk)
            future.add_done_callback(self._done.put)

    def _collect(self, future: Any) -> Optional[ChunkReport]:
        entry = self._running.pop(future.key, None)
        if entry is None:
            return None
        chunk = entry[1]
        status = future.status
        if status == 'cancelled':
            if self._cancelling:
                return None
            return ChunkReport(chunk.id, lost=True, reason='the Dask cluster cancelled the task')
        if status == 'finished':
            try:
                report = future.result()
            except Exception as exc:
                # The result was lost with its worker before it reached us.
                return self._lost(chunk, exc, future)
            if isinstance(report, ChunkReport):
                return report
            return ChunkReport(chunk.id, lost=True, reason=f'the task returned {type(report).__name__}, not a report')
        try:
            error = future.exception()
        except Exception as exc:
            error = exc
        if isinstance(error, _JobLoadError):
            raise ClusterError(str(error)) from error
        return self._lost(chunk, error, future)

    def _lost(self, chunk: Chunk, exc: BaseException, future: Any) -> ChunkReport:
        if isinstance(exc, distributed.KilledWorker):
            worker = getattr(exc.last_worker, 'address', '')
            reason = f'KilledWorker: {exc}'
            logger.warning('chunk %d (%d keys) lost: %s', chunk.id, len(chunk.keys), reason)
            return ChunkReport(chunk.id, lost=True, reason=reason, worker=worker)
        # run_chunk records failures per item, so an error escaping it is
        # not an item's: the batch treats the chunk as lost and isolates.
        reason = f'{type(exc).__name__}: {exc}'
        logger.error('chunk %d (%d keys) failed on %s: %s', chunk.id, len(chunk.keys), self.description, reason)
        return ChunkReport(chunk.id, lost=True, reason=reason)
