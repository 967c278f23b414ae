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
  cluster's ``worker-saturation``.  The thread count is read again every
  second, so workers that join are used; an adaptive cluster is handed
  every chunk, so it sees the work and grows.
* **The driver's own modules travel with the job** (:mod:`.shipping`), for
  workers that cannot import them.
* **A lost scheduler ends the batch** after ``scheduler_timeout`` seconds
  without it (a scheduler back within that time gets the job again and
  the chunks it lost); it is never counted as a worker's death.
* **Nothing stays behind**: the job's plugin is named after the driver's
  client, and a batch starting on the cluster removes the plugins of
  drivers that are gone (:func:`remove_orphaned_jobs`).

``distributed`` is an optional dependency (``pip install
'stashworks[dask]'``); this module imports without it, and
:class:`DaskExecutor` raises an :class:`ImportError` naming the extra.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import pickle
import queue
import re
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Union

import dill

from .._atomic import TEMP_PREFIX, TEMP_SUFFIX
from .._text import plural
from ..stores import local_only_store, machine_id
from .executor import Executor
from .job import Job, dump_job, load_job
from .layout import worker_name
from .shipping import ModuleInstaller, ShippedModule, find_modules
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

__all__ = ['DaskExecutor', 'ClusterError', 'INSTALL_HINT', 'DEFAULT_SCHEDULER_TIMEOUT', 'remove_orphaned_jobs']

logger = logging.getLogger(__name__)

#: How to get the optional dependency this module needs.
INSTALL_HINT = "pip install 'stashworks[dask]'"

# How often a running chunk asks whether its task was cancelled (Ctrl-C).
_CANCEL_POLL = 0.2
# How often the executor re-reads the cluster's thread count, so chunks
# flow to workers that joined.
_THREADS_POLL = 1.0
# How often the executor looks at its client while the scheduler is away.
_LOST_POLL = 0.25
# Longest wait, after Ctrl-C, for cancelled chunks to stop on the workers.
_STOP_WAIT = 10.0

#: Seconds a batch waits for a lost scheduler to come back before it stops.
DEFAULT_SCHEDULER_TIMEOUT = 60.0

# Plugin names: ``stashworks-job-<token>-<id of the driver's client>``.
_PLUGIN_PREFIX = 'stashworks-job-'


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


class _JobMissingError(_JobLoadError):
    """The job's plugin is not on the worker: a scheduler that restarted has never seen it."""


# How many times a batch installs its job again on a scheduler that lost it.
_MAX_REINSTALLS = 5


class _JobPlugin(WorkerPlugin):
    """Carries one batch's job to a worker, once.

    The scheduler keeps the plugin (as bytes it never unpickles) and
    installs it on every worker, including workers that start after the
    batch did.  The job itself is loaded lazily, in a task's thread, so a
    job that is slow to load never blocks the worker's event loop.
    """

    def __init__(self, name: str, job_bytes: bytes, modules: tuple[ShippedModule, ...] = ()) -> None:
        self.name = name
        self.job_bytes = job_bytes
        self.modules = modules
        self._job: Optional[Job] = None
        self._installer: Optional[ModuleInstaller] = None
        self._base: Optional[Path] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {'name': self.name, 'job_bytes': self.job_bytes, 'modules': self.modules}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state['name'], state['job_bytes'], state.get('modules', ()))  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        # The driver's modules go to the worker's own scratch folder.
        self._base = Path(getattr(worker, 'local_directory', None) or os.getcwd())

    def teardown(self, worker: Any) -> None:
        # Drop the loaded job (it may hold a large model) and the driver's
        # modules when the batch ends.
        with self._lock:
            self._job = None
            if self._installer is not None:
                self._installer.uninstall()
                self._installer = None

    def job(self, where: str) -> Job:
        """The loaded job (loaded on first use, after the driver's modules it needs)."""
        with self._lock:
            if self._job is None:
                try:
                    if self.modules and self._installer is None:
                        self._installer = ModuleInstaller(self.modules, self._base or Path(os.getcwd()))
                        self._installer.install()
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

    # A cancelled chunk may finish the slice of tiny units it is in.
    cancelled.per_slice = True  # type: ignore[attr-defined]
    return cancelled


def _run_chunk(plugin_name: str, chunk_bytes: bytes) -> ChunkReport:
    """The task: run one chunk of the installed job on this worker."""
    worker = distributed.get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, _JobPlugin):
        raise _JobMissingError(f'the batch job {plugin_name} is not installed on worker {worker.address}')
    job = plugin.job(worker.address)
    chunk = dill.loads(chunk_bytes)
    return job.run_chunk(chunk, should_stop=_cancel_check(worker, worker.get_current_task()))


def _whoami() -> str:
    """Run on a worker: its name in reports and failure records (``host:pid``)."""
    return worker_name()


def _executing(prefix: str, dask_worker: Any) -> list[str]:
    """Run on a worker: the batch's tasks whose thread still runs (cancelled or not)."""
    state = dask_worker.state
    running = set(state.executing) | set(getattr(state, 'long_running', ()))
    return [str(ts.key) for ts in running if str(ts.key).startswith(prefix)]


def _scheduler_jobs(dask_scheduler: Any) -> tuple[list[str], list[str]]:
    """Run on the scheduler: the stashworks job plugins, and the clients connected now."""
    names = [name for name in dask_scheduler.worker_plugins if str(name).startswith(_PLUGIN_PREFIX)]
    return names, [str(c) for c in dask_scheduler.clients]


def remove_orphaned_jobs(client: 'distributed.Client') -> list[str]:
    """Remove the batch jobs whose driver is gone from a cluster's scheduler and workers.

    A batch installs its job on the workers as a plugin named after its
    driver's client, and removes it when it ends.  A driver that was
    killed (SIGKILL, a lost node) cannot: its job stays loaded on every
    worker.  Every batch calls this when it starts; call it yourself to
    clean a cluster now.

    Args:
        client: a connected client of the cluster.

    Returns:
        The names of the plugins removed.
    """
    names, clients = client.run_on_scheduler(_scheduler_jobs)
    alive = set(clients)
    removed = []
    for name in names:
        owner = name[len(_PLUGIN_PREFIX) :].split('-', 1)[-1]
        if owner in alive:
            continue
        try:
            client.unregister_worker_plugin(name)
        except Exception as exc:
            logger.warning('could not remove the orphaned batch job %s: %s', name, exc)
            continue
        removed.append(name)
    if removed:
        logger.info('removed %s whose driver is gone: %s', plural(len(removed), 'batch job'), ', '.join(removed))
    return removed


def _task_name(job: Job) -> str:
    """The user's function, as the first part of the batch's task keys (the dashboard's name)."""
    target: Any = getattr(job, 'compute', None) or getattr(job, 'process', None)
    # Through wrappers (retries=) to the user's own function.
    target = getattr(target, '__wrapped__', target)
    if target is None:
        name = type(job).__name__
    else:
        self_ = getattr(target, '__self__', None)
        if self_ is not None and not isinstance(self_, type):
            name = f'{type(self_).__name__}.{getattr(target, "__name__", "call")}'
        else:
            name = getattr(target, '__qualname__', None) or type(target).__name__
    # Dask splits keys on '-' and drops hex and numeric words: keep a name
    # that survives, starting with a letter.
    name = re.sub(r'[^A-Za-z0-9_.]+', '_', name).strip('_.') or 'stashworks'
    return name if name[0].isalpha() else f'f{name}'


def _slots(info: dict[str, Any], resources: Optional[dict[str, float]]) -> int:
    """Chunks the cluster can run at once: its threads, or its threads that have ``resources``."""
    total = 0
    for worker in info.get('workers', {}).values():
        threads = int(worker.get('nthreads', 0))
        if resources:
            have = worker.get('resources', {}) or {}
            for name, need in resources.items():
                if need > 0:
                    threads = min(threads, math.floor(float(have.get(name, 0)) / need))
        total += max(0, threads)
    return total


def worker_machines(client: 'distributed.Client') -> dict[str, str]:
    """Each worker's machine (:func:`stashworks.stores.machine_id`), by worker address."""
    return dict(client.run(machine_id))


def _check_local_only(client: 'distributed.Client', job: Job) -> None:
    """Refuse a store only one machine may share (LMDB) when a worker runs on another machine."""
    store = local_only_store(job.delegate)
    if store is None:
        return
    here = machine_id()
    elsewhere = sorted(address for address, machine in worker_machines(client).items() if machine != here)
    if elsewhere:
        raise ClusterError(
            f'{store!r} keeps its items in LMDB, which needs a local file system: every process that opens '
            f'it must run on this machine (a network file system does not keep its memory map and locks '
            f'coherent between hosts), but the Dask workers {", ".join(elsewhere)} run on another machine; '
            f'for a cluster on several hosts, use a DirectoryStash on a file system every worker sees'
        )


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
            and closed by :meth:`shutdown`); ``None`` reads the address
            from Dask's ``scheduler-address`` setting (the
            ``DASK_SCHEDULER_ADDRESS`` environment variable).
        backlog: chunks handed to the scheduler beyond one per worker
            thread.  ``0`` hands a chunk over only when a thread is free
            for it, so no chunk queues behind a slow one and a worker death
            touches only running chunks.  ``None`` hands every chunk over
            at once, which an adaptive cluster needs to see the work and
            scale up.  ``'auto'`` (the default) is ``None`` when the
            client's cluster adapts (``cluster.adapt(...)``), ``0``
            otherwise.
        check_paths: check, before any work is sent, that every worker
            can read and write the job's shared directories.
        timeout: seconds to wait for the scheduler to answer and for at
            least one worker.
        scheduler_timeout: seconds without the scheduler after which the
            batch stops with a :class:`ClusterError` (sooner if the client
            gives up reconnecting first, after its own ``timeout``).
        resources: the resources each chunk needs (``{'GPU': 1}``), as
            Dask's ``resources=``: chunks run only on workers that have
            them, and the batch counts only the chunks those workers can
            run at once.

    Raises:
        ImportError: if ``distributed`` (the ``dask`` extra) is not
            installed; the message says how to install it.
        TypeError: if ``client`` is neither a client nor an address.
        ValueError: for a bad option, or no address anywhere.
    """

    def __init__(
        self,
        client: Union['distributed.Client', str, None] = None,
        *,
        backlog: Union[int, Literal['auto'], None] = 'auto',
        check_paths: bool = True,
        timeout: float = 30.0,
        scheduler_timeout: float = DEFAULT_SCHEDULER_TIMEOUT,
        resources: Optional[dict[str, float]] = None,
    ) -> None:
        _require_distributed()
        if client is None:
            import dask.config

            # The variable as it is now (Dask's config read it at import).
            client = os.environ.get('DASK_SCHEDULER_ADDRESS') or dask.config.get('scheduler-address', None)
            if not client:
                raise ValueError(
                    'DaskExecutor needs a client or a scheduler address; none was given and '
                    'DASK_SCHEDULER_ADDRESS is not set'
                )
        if isinstance(client, str):
            self.address: Optional[str] = client
            self._user_client: Optional[distributed.Client] = None
        elif isinstance(client, distributed.Client):
            self.address = None
            self._user_client = client
        else:
            raise TypeError(f'DaskExecutor needs a distributed.Client or a scheduler address, not {client!r}')
        if backlog != 'auto' and backlog is not None and (not isinstance(backlog, int) or backlog < 0):
            raise ValueError(f"backlog must be >= 0, None or 'auto', not {backlog!r}")
        if not scheduler_timeout > 0:
            raise ValueError(f'scheduler_timeout must be > 0 seconds, not {scheduler_timeout!r}')
        if resources is not None and (
            not isinstance(resources, dict) or any(not isinstance(v, (int, float)) or v < 0 for v in resources.values())
        ):
            raise ValueError(f"resources must map names to amounts >= 0, such as {{'GPU': 1}}, not {resources!r}")
        self.backlog = backlog
        self.check_paths = check_paths
        self.timeout = timeout
        self.scheduler_timeout = float(scheduler_timeout)
        self.resources = dict(resources) if resources else None
        self._early: Optional[distributed.Client] = None
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
        self._plugin: Optional[_JobPlugin] = None
        self._task_prefix = 'stashworks'
        #: the backlog in force for this batch (``'auto'`` resolved)
        self._backlog: Optional[int] = 0
        #: ``host:pid`` of each worker address seen, for the record of a death
        self._names: dict[str, str] = {}
        #: since when the scheduler is out of reach (``None``: it is not)
        self._lost_since: Optional[float] = None
        self._reinstalls = 0

    # A stash that holds its executor may itself be shipped to workers
    # (the subclass form of MultiProcessStash): ship only the settings,
    # never a live client.
    def __reduce__(self) -> tuple[Any, ...]:
        address = self.address
        if address is None and self._user_client is not None:
            address = self._user_client.scheduler.address
        options = {
            'backlog': self.backlog,
            'check_paths': self.check_paths,
            'timeout': self.timeout,
            'scheduler_timeout': self.scheduler_timeout,
            'resources': self.resources,
        }
        return (_restore_executor, (address, options))

    @property
    def client(self) -> Optional['distributed.Client']:
        """The client in use (``None`` before :meth:`start` for an address)."""
        return self._client or self._user_client

    @property
    def dashboard_link(self) -> Optional[str]:
        """The scheduler's dashboard (``None`` before connecting, or if it has none)."""
        client = self.client or self._early
        if client is None:
            return None
        try:
            link = client.dashboard_link
        except Exception:
            return None
        return str(link) if link else None

    def connect(self) -> 'distributed.Client':
        """Connect to the scheduler now (:meth:`start` does it otherwise), to show the dashboard early.

        Raises:
            ClusterError: the scheduler cannot be reached.
        """
        if self._user_client is not None:
            return self._user_client
        if self._client is not None:
            return self._client
        if self._early is None:
            self._early = self._open_client()
        return self._early

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
            self._sweep(client)
            self._wait_for_workers(client)
            _check_local_only(client, job)
            if self.check_paths:
                self._check_shared_paths(client, [Path(p) for p in job.shared_paths()])
            self._install(client, job)
        except BaseException:
            self.shutdown(cancel=True)
            raise
        info = client.scheduler_info()
        nthreads = {a: int(w.get('nthreads', 0)) for a, w in info.get('workers', {}).items()}
        self._threads = _slots(info, self.resources)
        self._threads_read = time.monotonic()
        self._learn_names(client, nthreads)
        self._backlog = self._resolve_backlog(client)
        address = client.scheduler.address
        threads = plural(sum(nthreads.values()), 'thread')
        self._description = f'Dask cluster at {address} ({plural(len(nthreads), "worker")}, {threads})'
        if self.resources:
            self._description += f', {self._threads} with {self.resources}'
        logger.info('running on %s', self._description)
        if self.dashboard_link:
            logger.info('Dask dashboard: %s', self.dashboard_link)
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
        """Yield chunk reports as chunks end.

        Raises:
            ClusterError: the scheduler was out of reach for
                ``scheduler_timeout`` seconds (or the client gave up on it).
        """
        idle_since = time.monotonic()
        while self._pending or self._running:
            self._check_scheduler()
            self._fill()
            wait = _THREADS_POLL if self._lost_since is None else _LOST_POLL
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
            if client is not None and client.status == 'running':
                futures = [future for future, _ in self._running.values()]
                if futures and cancel:
                    self._cancelling = True
                    logger.info('cancelling %d chunks on %s', len(futures), self.description)
                    client.cancel(futures)
                    # A cancelled chunk stops after its current item: wait
                    # for that, so what the batch counts is what is on disk.
                    self._wait_stopped(client)
                elif futures:
                    distributed.wait(futures)
                self._uninstall(client)
        except Exception as exc:
            # The scheduler went away while stopping: nothing more to tell it.
            logger.warning('could not stop the batch cleanly on %s: %s', self.description, exc)
        finally:
            self._pending.clear()
            self._running.clear()
            self._plugin = None
            if client is not None and self._own_client:
                try:
                    client.close(timeout=min(self.timeout, 10.0))
                except Exception as exc:
                    logger.debug('closing the client of %s: %s', self.description, exc)
            self._client = None

    def _wait_stopped(self, client: 'distributed.Client') -> None:
        deadline = time.monotonic() + _STOP_WAIT
        while True:
            try:
                running = client.run(_executing, self._task_prefix, on_error='ignore')
            except Exception as exc:
                logger.debug('cannot ask the workers of %s what runs: %s', self.description, exc)
                return
            if not any(running.values()) or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    # -- start-up ----------------------------------------------------------

    def _connect(self) -> 'distributed.Client':
        if self._user_client is not None:
            if self._user_client.status not in ('running', 'connecting', 'newly-created'):
                raise ClusterError(f'the Dask client given to DaskExecutor is {self._user_client.status}')
            self._client = self._user_client
            return self._client
        # connect() may have connected already: use that client.
        client, self._early = self._early, None
        if client is None or client.status != 'running':
            client = self._open_client()
        self._client, self._own_client = client, True
        return client

    def _sweep(self, client: 'distributed.Client') -> None:
        """Remove the jobs of drivers that are gone (best effort: the batch runs anyway)."""
        try:
            remove_orphaned_jobs(client)
        except Exception as exc:
            logger.debug('cannot look for orphaned batch jobs on %s: %s', self.description, exc)

    def _resolve_backlog(self, client: 'distributed.Client') -> Optional[int]:
        if self.backlog != 'auto':
            return self.backlog
        cluster = getattr(client, 'cluster', None)
        # An adaptive cluster grows only for work it can see: hand it all.
        return None if getattr(cluster, '_adaptive', None) is not None else 0

    def _learn_names(self, client: 'distributed.Client', addresses: Any) -> None:
        """Ask new workers their ``host:pid``, for the record if one dies."""
        new = [a for a in addresses if a not in self._names]
        if not new:
            return
        try:
            self._names.update(client.run(_whoami, workers=new, on_error='ignore'))
        except Exception as exc:
            logger.debug('cannot ask the workers of %s their names: %s', self.description, exc)

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
        if not self.resources:
            return
        deadline = time.monotonic() + self.timeout
        while _slots(client.scheduler_info(), self.resources) == 0:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f'no worker of the Dask cluster at {client.scheduler.address} has the resources '
                    f'{self.resources} after {self.timeout:g} s (start workers with --resources)'
                )
            time.sleep(0.2)

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
        token = uuid.uuid4().hex[:8]
        # The client's id in the name tells, after a crash, whether the
        # driver that installed the job is still there (remove_orphaned_jobs).
        name = f'{_PLUGIN_PREFIX}{token}-{client.id}'
        self._task_prefix = f'{_task_name(job)}-stashworks-{token}'
        plugin = _JobPlugin(name, job_bytes, find_modules(job_bytes))
        try:
            client.register_plugin(plugin, name=name)
        except Exception as exc:
            raise ClusterError(
                f'cannot install the batch job on the Dask workers of {client.scheduler.address}: '
                f'{type(exc).__name__}: {exc}'
            ) from exc
        self._plugin_name, self._plugin = name, plugin
        if plugin.modules:
            logger.info(
                'shipping the modules %s with the job, for workers that cannot import them',
                ', '.join(m.name for m in plugin.modules),
            )
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
        if self._backlog is None:
            return sys.maxsize
        now = time.monotonic()
        client = self._client
        if now - self._threads_read >= _THREADS_POLL and client is not None and client.status == 'running':
            try:
                info = client.scheduler_info()
                self._threads = _slots(info, self.resources)
                self._learn_names(client, info.get('workers', {}))
            except Exception as exc:
                logger.debug('cannot read the thread count of %s: %s', self.description, exc)
            self._threads_read = now
        threads = self._threads if self._cap is None else min(self._cap, self._threads)
        # At least one chunk in flight, so work goes on while workers restart.
        return max(1, threads) + self._backlog

    def _fill(self) -> None:
        client = self._client
        if client is None or self._lost_since is not None or client.status != 'running':
            return
        room = self._room()
        while self._pending and len(self._running) < room:
            chunk = self._pending.popleft()
            # The user's function first: it names the task in the dashboard.
            key = f'{self._task_prefix}-{chunk.id}-{next(self._counter)}'
            # The chunk travels as bytes too: its payload may be any user
            # object, and the scheduler must never run dill.
            future = client.submit(
                _run_chunk,
                self._plugin_name,
                dill.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL),
                key=key,
                retries=0,
                resources=self.resources,
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
            if self._scheduler_gone(future):
                self._keep_for_later(chunk)
                return None
            return ChunkReport(chunk.id, lost=True, reason='the Dask cluster cancelled the task')
        if status == 'finished':
            try:
                report = future.result()
            except Exception as exc:
                if self._scheduler_gone(future):
                    self._keep_for_later(chunk)
                return None
                # The result was lost with its worker before it reached us.
                return self._lost(chunk, exc, future)
            if isinstance(report, ChunkReport):
                return report
            return ChunkReport(chunk.id, lost=True, reason=f'the task returned {type(report).__name__}, not a report')
        try:
            error = future.exception()
        except Exception as exc:
            error = exc
        if isinstance(error, _JobMissingError) and self._reinstalls < _MAX_REINSTALLS:
            # The scheduler came back (a new one, on the same address)
            # between two looks at the client: install the job again.
            self._reinstalls += 1
            self._keep_for_later(chunk)
            return None
        if isinstance(error, _JobLoadError):
            raise ClusterError(str(error)) from error
        return self._lost(chunk, error, future)

    def _lost(self, chunk: Chunk, exc: BaseException, future: Any) -> ChunkReport:
        if isinstance(exc, distributed.KilledWorker):
            address = str(getattr(exc.last_worker, 'address', ''))
            # Named as the failure records of errors name a worker: host:pid.
            worker = self._names.get(address, address)
            pid = worker.rsplit(':', 1)[-1]
            reason = f'KilledWorker: {exc}'
            logger.warning('chunk %d (%d keys) lost: %s', chunk.id, len(chunk.keys), reason)
            extra: dict[str, object] = {'pid': int(pid)} if pid.isdigit() and worker != address else {}
            return ChunkReport(chunk.id, lost=True, reason=reason, worker=worker, extra=extra)
        # run_chunk records failures per item, so an error escaping it is
        # not an item's: the batch treats the chunk as lost and isolates.
        reason = f'{type(exc).__name__}: {exc}'
        logger.error('chunk %d (%d keys) failed on %s: %s', chunk.id, len(chunk.keys), self.description, reason)
        return ChunkReport(chunk.id, lost=True, reason=reason)

    # -- a lost scheduler --------------------------------------------------

    def _scheduler_gone(self, future: Any) -> bool:
        """Was ``future`` lost because the client lost the scheduler (not a worker)?"""
        state = getattr(future, '_state', None)
        reason = getattr(getattr(state, 'exception', None), 'reason', None)
        client = self._client
        return reason == 'scheduler-connection-lost' or (client is not None and client.status != 'running')

    def _keep_for_later(self, chunk: Chunk) -> None:
        """A chunk the lost scheduler took with it: sent again if it comes back, never a death."""
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            logger.warning(
                'lost the Dask scheduler at %s; waiting up to %g s for it to come back',
                self._address(),
                self.scheduler_timeout,
            )
        self._pending.appendleft(chunk)

    def _address(self) -> str:
        client = self._client or self._user_client
        address = self.address
        if client is not None:
            try:
                address = client.scheduler.address
            except Exception:
                pass
        return str(address)

    def _check_scheduler(self) -> None:
        """Notice a lost scheduler, take a returning one back, or give up on it.

        Raises:
            ClusterError: it has been away for ``scheduler_timeout`` s, or
                the client closed.
        """
        client = self._client
        if client is None:
            return
        status = client.status
        if status == 'running':
            if self._lost_since is not None:
                self._reinstall(client)
            return
        now = time.monotonic()
        if self._lost_since is None:
            self._lost_since = now
            logger.warning(
                'lost the Dask scheduler at %s; waiting up to %g s for it to come back',
                self._address(),
                self.scheduler_timeout,
            )
        away = now - self._lost_since
        if status in ('closing', 'closed') or away >= self.scheduler_timeout:
            why = 'the client gave up reconnecting' if status in ('closing', 'closed') else 'no answer'
            raise ClusterError(
                f'lost the Dask scheduler at {self._address()}: {why} after {away:.0f} s '
                f'(scheduler_timeout={self.scheduler_timeout:g}); every item written so far is kept, '
                'and the next run resumes with the missing ones'
            )

    def _reinstall(self, client: 'distributed.Client') -> None:
        """The scheduler is back (a new one knows nothing of the job): install it again."""
        away = time.monotonic() - (self._lost_since or time.monotonic())
        plugin, name = self._plugin, self._plugin_name
        if plugin is not None and name is not None:
            try:
                client.register_plugin(plugin, name=name)
            except Exception as exc:
                raise ClusterError(
                    f'the Dask scheduler at {self._address()} came back but the batch job cannot be '
                    f'installed again: {type(exc).__name__}: {exc}'
                ) from exc
        self._lost_since = None
        self._threads_read = 0.0
        logger.warning(
            'the Dask scheduler at %s is back after %.0f s; %d chunks go out again',
            self._address(),
            away,
            len(self._pending),
        )
