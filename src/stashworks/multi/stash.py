"""Stashes filled by a parallel, resumable batch.

:class:`MultiProcessFactoryStash` computes ``factory(key)`` (or
``factory.load(key)``) for every work key missing from its delegate, in
worker processes that write the results to the delegate themselves.
:class:`MultiProcessStash` is the subclass form: ``_create_data`` yields
the work units and ``_process`` computes a chunk of them in a worker.

Both are primeable stashes: any read (``[]``, ``get``, ``keys``, ``len``,
iteration) first runs :meth:`~MultiProcessStash.prime`, which runs the
batch for whatever is missing, and costs one key listing once the stash
is complete.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from ..directory import DirectoryStash
from ..errors import BatchError
from ..stash import PrimablePreemptiveStash, Stash, check_key
from .batch import BatchOptions, BatchResult, iter_pairs, run_batch
from .executor import Executor
from .failures import FailureStash, MemoryFailureStash, ReadOnlyFailures
from .job import FactoryJob, Job, ProcessJob, find_directory
from .progress import EventHook
from .serial import SerialExecutor
from .status import status_path
from .workers import parse_memory, resolve_workers

__all__ = ['MultiProcessStash', 'MultiProcessFactoryStash']

logger = logging.getLogger(__name__)

KeySource = Union[Iterable[str], Callable[[], Iterable[str]]]

# Attributes that belong to the parent's run, never shipped to workers.
_LOCAL_STATE = ('executor', 'on_event', 'last_result', '_priming', '_failure_store')


class MultiProcessStash(PrimablePreemptiveStash):
    """A stash whose missing items a batch computes in worker processes.

    Subclass it and implement :meth:`_create_data` (the work units, in
    the parent) and :meth:`_process` (a chunk of units to ``(key, value)``
    pairs, in a worker).  By default each unit is its own key (a ``str``);
    override :meth:`_key_of` otherwise.

    Args:
        delegate: where results are stored; worker processes write to it,
            so it must live on disk (a :class:`~stashworks.DirectoryStash`)
            unless ``executor`` is a :class:`~stashworks.multi.SerialExecutor`.
        workers: ``0`` for every usable CPU, ``n``, ``-n`` for all but
            ``n``, or a fraction in ``(0, 1]``.
        chunk_size: keys per chunk, ``0`` for automatic.
        executor: where chunks run: an :class:`Executor`, ``'local'`` (the
            default process pool) or ``'serial'`` (in this process).
        progress: show a tqdm bar on stderr; ``None`` when stderr is a
            terminal.
        on_event: called in this process with each
            :class:`~stashworks.multi.BatchEvent`.
        max_retries: how many times a key whose worker died is tried again
            before it is recorded as a failure.
        memory_limit: a worker whose RSS grows past this (bytes, or text
            such as ``'2GB'``) is replaced after its current item.
        max_items_per_worker: a worker is replaced after this many items.
        start_method: ``'fork'``, ``'spawn'`` or ``'forkserver'`` (default:
            the platform's).
        state_dir: where the batch keeps ``.stashworks/`` (failures,
            status); default: the delegate's directory.

    Raises:
        ValueError: for a bad ``workers``, ``chunk_size`` or ``memory_limit``.
    """

    def __init__(
        self,
        delegate: Stash,
        workers: Union[int, float] = 0,
        chunk_size: int = 0,
        executor: Union[Executor, str, None] = None,
        progress: Optional[bool] = None,
        on_event: Optional[EventHook] = None,
        max_retries: int = 2,
        memory_limit: Union[int, str, None] = None,
        max_items_per_worker: Optional[int] = None,
        start_method: Optional[str] = None,
        state_dir: Union[str, 'os.PathLike[str]', None] = None,
    ) -> None:
        super().__init__(delegate)
        resolve_workers(workers, cpus=1)  # validates early
        if not isinstance(chunk_size, int) or chunk_size < 0:
            raise ValueError(f'chunk_size must be an int >= 0 (0 for automatic), not {chunk_size!r}')
        if max_retries < 0:
            raise ValueError(f'max_retries must be >= 0, not {max_retries}')
        if max_items_per_worker is not None and max_items_per_worker < 1:
            raise ValueError(f'max_items_per_worker must be >= 1, not {max_items_per_worker}')
        if isinstance(executor, str) and executor not in ('local', 'serial'):
            raise ValueError(f"executor must be an Executor, 'local' or 'serial', not {executor!r}")
        self.workers = workers
        self.chunk_size = chunk_size
        self.executor = executor
        self.progress = progress
        self.on_event = on_event
        self.max_retries = max_retries
        self.memory_limit = parse_memory(memory_limit)
        self.max_items_per_worker = max_items_per_worker
        self.start_method = start_method
        directory = Path(state_dir) if state_dir is not None else find_directory(delegate)
        self.state_dir: Optional[Path] = directory
        self._failure_store: Stash = FailureStash.beside(directory) if directory is not None else MemoryFailureStash()
        #: what the last :meth:`prime` did (``None`` before the first)
        self.last_result: Optional[BatchResult] = None
        self._primed = False
        self._priming = False

    # -- the subclass form -------------------------------------------------

    def _create_data(self) -> Iterable[Any]:
        """Yield the work units (in the parent); by default a unit is its key.

        Raises:
            NotImplementedError: unless a subclass implements it.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement _create_data()')

    def _process(self, chunk: list[Any]) -> Iterable[tuple[str, Any]]:
        """Compute a chunk of units in a worker, yielding ``(key, value)`` pairs.

        Raises:
            NotImplementedError: unless a subclass implements it.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement _process()')

    def _key_of(self, unit: Any) -> str:
        """The key of a work unit; by default the unit itself, a ``str``."""
        return check_key(unit, self)

    # -- how the batch is built (overridden by the factory form) -----------

    def _work(self) -> Iterator[tuple[str, Any]]:
        for unit in self._create_data():
            key = self._key_of(unit)
            yield key, None if unit is key else unit

    def _make_job(self) -> Job:
        return ProcessJob(self._raw_delegate(), self._failure_store, self)

    def _raw_delegate(self) -> Stash:
        if self.delegate is None:
            raise BatchError(f'{self!r} has no delegate to store items in')
        return self.delegate

    # -- the batch ---------------------------------------------------------

    @property
    def failures(self) -> ReadOnlyFailures:
        """The failure records, by key (read-only; see :meth:`retry_failures`)."""
        return ReadOnlyFailures(self._failure_store)

    @property
    def status_path(self) -> Optional[Path]:
        """The batch's status file, or ``None`` for a delegate with no directory."""
        return status_path(self.state_dir) if self.state_dir is not None else None

    def _executor(self, workers: int) -> Executor:
        if isinstance(self.executor, Executor):
            return self.executor
        if self.executor == 'serial':
            return SerialExecutor()
        from .pool import LocalPoolExecutor

        return LocalPoolExecutor(
            start_method=self.start_method,
            memory_limit=self.memory_limit,
            max_items_per_worker=self.max_items_per_worker,
        )

    def _in_process(self) -> bool:
        # Executors that run chunks in this process say so with in_process.
        return self.executor == 'serial' or bool(getattr(self.executor, 'in_process', False))

    def _check_reachable(self, job: Job) -> None:
        if self._in_process():
            return
        delegate = job.delegate
        if find_directory(delegate) is None and not getattr(delegate, 'process_safe', False):
            raise BatchError(
                f'{delegate!r} keeps its items in the memory of this process, so worker processes cannot '
                f'store results in it; use an on-disk delegate such as DirectoryStash, or '
                f"executor='serial' to compute in this process"
            )

    def _resolve_workers(self, missing: int) -> int:
        if self._in_process():
            return 1
        jobs = math.ceil(missing / self.chunk_size) if self.chunk_size else missing
        # A cluster sizes the batch by its own threads, not this machine's CPUs.
        slots = self.executor.capacity() if isinstance(self.executor, Executor) else None
        if slots is not None:
            return resolve_workers(self.workers, jobs=jobs, cpus=max(1, slots))
        return resolve_workers(self.workers, jobs=jobs, memory_per_worker=self.memory_limit)

    def prime(self) -> BatchResult:  # type: ignore[override]
        """Compute every missing item (a no-op once the stash is complete).

        Returns:
            What this run did (the last result when already primed).

        Raises:
            KeyboardInterrupt: Ctrl-C or SIGTERM stopped the batch; every
                completed item is saved and the next ``prime`` resumes.
            BatchError: the batch cannot run (an in-memory delegate with a
                process pool, a job that cannot be sent to workers...).
        """
        if self._primed or self._priming:
            # _priming: a read from inside _create_data must not recurse.
            return self.last_result if self.last_result is not None else BatchResult()
        self._priming = True
        result = BatchResult()
        try:
            self.last_result = result
            job = self._make_job()
            opts = BatchOptions(
                chunk_size=self.chunk_size,
                progress=self.progress,
                on_event=self.on_event,
                max_retries=self.max_retries,
                status_path=self.status_path,
            )

            def executor_for(workers: int) -> Executor:
                self._check_reachable(job)
                if isinstance(job.delegate, DirectoryStash):
                    # Writers killed in an earlier run left temp files behind.
                    job.delegate.remove_stale_temp_files()
                return self._executor(workers)

            run_batch(self._work(), job, executor_for, opts, self._resolve_workers, result)
        finally:
            self._priming = False
        self._primed = True
        self.reset_has_data()
        return result

    def retry_failures(self) -> BatchResult:
        """Clear the recorded failures and compute those keys again.

        Returns:
            What the run did (any other missing key is computed too).
        """
        store = self._failure_store
        keys = list(store.keys())
        for key in keys:
            store.delete(key)
        logger.info('retrying %d failed keys of %r', len(keys), self)
        self._primed = False
        return self.prime()

    def invalidate(self) -> None:
        """Forget that the batch ran, so the next read lists the delegate again."""
        self._primed = False
        self.reset_has_data()

    def clear(self) -> None:
        """Delete every item and failure record; the next read recomputes all."""
        # Deliberately not primed: computing everything to delete it is waste.
        if self.delegate is not None:
            self.delegate.clear()
        self._failure_store.clear()
        self.invalidate()

    def close(self) -> None:
        self.invalidate()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the stash for _process/_key_of only: nothing of the
        # parent's run (executor, callbacks, results) travels with it.
        state = dict(self.__dict__)
        for name in _LOCAL_STATE:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.executor = None
        self.on_event = None
        self.last_result = None
        self._priming = False
        self._failure_store = MemoryFailureStash()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r})'


class MultiProcessFactoryStash(MultiProcessStash):
    """Computes ``factory(key)`` for every work key missing from ``delegate``.

    ``factory`` is either a stash, whose ``keys()`` are the work and whose
    ``load(key)`` computes an item, or a plain callable ``f(key) -> value``
    given with ``keys``.  Lambdas, closures and locally defined classes
    work (they travel to the workers with dill, once per worker).

    Args:
        delegate: where results are stored (usually a
            :class:`~stashworks.DirectoryStash`).
        factory: a stash or a callable computing one item from its key.
        keys: the work keys (an iterable, or a callable returning one
            each time the batch runs); required with a callable factory,
            and takes precedence over a factory stash's ``keys()``.
        **kwargs: the options of :class:`MultiProcessStash`.

    Raises:
        TypeError: a callable factory without ``keys``, or a factory that
            is neither a stash nor callable.
    """

    def __init__(
        self,
        delegate: Stash,
        factory: Union[Stash, Callable[[str], Any]],
        keys: Optional[KeySource] = None,
        workers: Union[int, float] = 0,
        chunk_size: int = 0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(factory, Stash):
            if not callable(factory):
                raise TypeError(f'factory must be a Stash or a callable, not {type(factory).__name__}')
            if keys is None:
                raise TypeError('keys= is required when the factory is a plain callable (it has no keys())')
        super().__init__(delegate, workers=workers, chunk_size=chunk_size, **kwargs)
        self.factory = factory
        self.work_keys = keys

    def _keys_source(self) -> Iterable[str]:
        if self.work_keys is None:
            assert isinstance(self.factory, Stash)
            return self.factory.keys()
        if callable(self.work_keys):
            return self.work_keys()
        return self.work_keys

    def _work(self) -> Iterator[tuple[str, Any]]:
        return iter_pairs(self._keys_source())

    def _make_job(self) -> Job:
        compute = self.factory.load if isinstance(self.factory, Stash) else self.factory
        return FactoryJob(self._raw_delegate(), self._failure_store, compute)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r}, factory={self.factory!r})'
