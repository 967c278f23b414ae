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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from ..directory import DirectoryStash
from ..errors import BatchError
from ..stash import PrimablePreemptiveStash, Stash, check_key
from .batch import Batch, BatchResult, prepare_output
from .claims import open_book, store_state
from .executor import Executor
from .failures import FailureStash, MemoryFailureStash, ReadOnlyFailures
from .guard import absolute
from .job import Job
from .layout import STATE_DIR, find_directory, status_path
from .plan import KeySpool, Membership, Plan, identify, iter_pairs, plan_batch
from .pool import LocalPoolExecutor
from .progress import EventHook
from .retrying import with_retries
from .serial import SerialExecutor
from .settings import BatchSettings
from .unitjob import UnitJob
from .units import (
    Census,
    MemoryUnitLog,
    Provenance,
    UnitLog,
    code_version,
    keep_stale,
    plan_units,
    stale_error,
    unit_id,
    write_census,
)

__all__ = ['MultiProcessStash', 'MultiProcessFactoryStash']

logger = logging.getLogger(__name__)

KeySource = Union[Iterable[Any], Callable[[], Iterable[Any]]]


@dataclass(init=False, repr=False, eq=False)
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
        workers: ``0`` or ``-1`` for every usable CPU, ``n``, ``-n`` for
            all but ``n - 1`` (as joblib's ``n_jobs``), or a fraction in
            ``(0, 1]``.
        chunk_size: keys per chunk, ``0`` for automatic.
        executor: where chunks run: an :class:`Executor`, ``'local'`` (the
            default process pool) or ``'serial'`` (in this process).
        progress: show a tqdm bar on stderr; ``None`` when stderr is a
            terminal.
        on_event: called in this process with each
            :class:`~stashworks.multi.BatchEvent`.
        max_retries: how many times a key whose worker died is tried again
            before it is recorded as a failure.
        retries: how many more times an item whose factory raised an
            exception is computed, in the same worker, before its failure
            is recorded (for transient errors; the factory form).
        memory_limit: a worker whose RSS grows past this (bytes, or text
            such as ``'2GB'``) is replaced after its current item.
        max_items_per_worker: a worker is replaced after this many items.
        start_method: ``'fork'``, ``'spawn'`` or ``'forkserver'`` (default:
            the platform's).
        state_dir: where the batch keeps ``.stashworks/`` (failures,
            status); default: the delegate's directory.
        version: the version of the code that computes items, a string
            you change when results must change; default: a fingerprint
            of that code (see docs/batch.md, "Units and versions").
        on_stale: when the output holds units computed by another
            version: ``'error'`` (raise :class:`StaleItemsError` before any
            work), ``'recompute'`` (compute those units again) or
            ``'keep'`` (keep them, and record that choice).
        unit_id: the identity of a work unit (a ``str``); default:
            ``str`` of a ``str``, ``int`` or path unit, a digest of any other.
        item_timeout: seconds one item may take; a worker past it is
            replaced and the key recorded as a failure with ``error_type``
            ``'ItemTimeout'`` (local process pool only; ``None``: no limit).

    A subclass may also be declared as a zensols dataclass
    (``@dataclass class S(MultiProcessStash)`` with fields of its own): it
    then takes ``delegate`` first, its own fields next, and ``chunk_size``,
    ``workers`` and zensols' ``config`` and ``name`` as keywords.  ``config``
    and ``name`` are accepted and unused (zensols rebuilds the stash in each
    worker from them; stashworks sends the stash itself); the other options
    keep their defaults there.

    Raises:
        ValueError: for a bad ``workers``, ``chunk_size`` or ``memory_limit``.
    """

    # The fields of the zensols dataclass form; keyword-only, so that a
    # subclass may add fields without defaults (as zensols subclasses do).
    chunk_size: int = field(default=0, kw_only=True)
    workers: Union[int, float] = field(default=0, kw_only=True)
    config: Any = field(default=None, kw_only=True)
    name: Optional[str] = field(default=None, kw_only=True)

    def __init__(
        self,
        delegate: Stash,
        workers: Union[int, float] = 0,
        chunk_size: int = 0,
        executor: Union[Executor, str, None] = None,
        progress: Optional[bool] = None,
        on_event: Optional[EventHook] = None,
        max_retries: int = 2,
        retries: int = 0,
        memory_limit: Union[int, str, None] = None,
        max_items_per_worker: Optional[int] = None,
        start_method: Optional[str] = None,
        state_dir: Union[str, 'os.PathLike[str]', None] = None,
        version: Optional[str] = None,
        on_stale: str = 'error',
        unit_id: Optional[Callable[[Any], str]] = None,
        item_timeout: Optional[float] = None,
    ) -> None:
        self.delegate = delegate
        #: the batch's options about units and versions
        self.provenance = Provenance(version, on_stale, unit_id)
        #: the batch's options, validated
        self.settings = BatchSettings(
            workers=workers,
            chunk_size=chunk_size,
            executor=executor,
            progress=progress,
            on_event=on_event,
            max_retries=max_retries,
            retries=retries,
            memory_limit=memory_limit,
            max_items_per_worker=max_items_per_worker,
            start_method=start_method,
            state_dir=state_dir,
            item_timeout=item_timeout,
        )
        self.__post_init__()

    def __post_init__(self) -> None:
        """Finish initialization (also run by a dataclass subclass's constructor)."""
        super().__post_init__()
        if 'settings' not in self.__dict__:
            # The dataclass form: its fields are the options.
            self.settings = BatchSettings(workers=self.workers, chunk_size=self.chunk_size)
        self.workers, self.chunk_size = self.settings.workers, self.settings.chunk_size
        directory = self.settings.state_path or find_directory(self.delegate)
        #: where the batch keeps ``.stashworks/`` (``None``: in memory)
        self.state_dir: Optional[Path] = directory
        self._failure_store: Stash = FailureStash.beside(directory) if directory is not None else MemoryFailureStash()
        #: what the last :meth:`prime` did (``None`` before the first)
        self.last_result: Optional[BatchResult] = None
        self._primed = False
        self._priming = False

    # -- the subclass form -------------------------------------------------

    #: options about units and versions (the constructor sets its own)
    provenance = Provenance()

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
        cls = type(self)
        default = (
            self.provenance.unit_id is None
            and cls._key_of is MultiProcessStash._key_of
            and cls._unit_id is MultiProcessStash._unit_id
        )
        return identify(self._create_data(), None if default else self._unit_id)

    def _unit_id(self, unit: Any) -> str:
        """The identity of a work unit: ``unit_id=``, a subclass's ``_key_of``, or the default."""
        custom = self.provenance.unit_id
        if custom is not None:
            return custom(unit)
        if type(self)._key_of is not MultiProcessStash._key_of:
            return self._key_of(unit)  # the earlier name of the hook
        return unit_id(unit)

    def _code(self) -> Any:
        """What computes items, for the fingerprint."""
        return self._process

    def _one_key(self) -> bool:
        """Whether each unit stores exactly one item, under its own id."""
        return False

    def _version(self) -> str:
        return code_version(self._code(), self.provenance.version)

    def _unit_log(self) -> UnitLog:
        if self.state_dir is not None:
            return UnitLog.beside(self.state_dir)
        log = self.__dict__.get('_memory_units')
        if not isinstance(log, UnitLog):
            log = self.__dict__['_memory_units'] = MemoryUnitLog()
        return log

    def _make_job(self) -> Job:
        # The bound method travels to the workers (with this stash, minus
        # what belongs to the parent's run: see __getstate__).
        return UnitJob(
            self._raw_delegate(),
            self._failure_store,
            self._process,
            'process',
            self._version(),
            self._unit_log(),
            retries=self.settings.retries,
        )

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

    def _absolute_paths(self) -> None:
        """Make every folder the batch writes absolute, once, here in the parent.

        A job may change the working directory (``os.chdir``), in a worker
        or, with the serial executor, in this process: a relative folder
        would then name another place, and items would land where nobody
        looks.  The stash keeps the absolute paths afterwards.
        """
        store: Optional[Stash] = self.delegate
        for _ in range(32):  # follow wrappers (a cache...) to the folder
            if store is None:
                break
            if isinstance(store, DirectoryStash) and not store.path.is_absolute():
                store.path = absolute(store.path)
            store = getattr(store, 'delegate', None)
        if self.state_dir is not None and not self.state_dir.is_absolute():
            self.state_dir = absolute(self.state_dir)
        failures = self._failure_store
        if isinstance(failures, FailureStash) and not failures.path.is_absolute():
            self._failure_store = FailureStash(absolute(failures.path))

    def _with_item_timeout(self, executor: Executor) -> Executor:
        """Give ``executor`` the ``item_timeout`` option, or say that it cannot enforce it."""
        limit = self.settings.item_timeout
        if limit is None:
            return executor
        if isinstance(executor, LocalPoolExecutor):
            if executor.item_timeout is None:
                executor.item_timeout = limit
        else:
            # The serial executor runs items in this process, which
            # nothing outside can stop without stopping the caller too.
            logger.warning(
                'item_timeout=%g is not enforced by the %s executor: an item that hangs hangs the batch '
                '(the local process pool enforces it)',
                limit,
                executor.description,
            )
        return executor

    def _make_executor(self) -> Executor:
        choice, settings = self.settings.executor, self.settings
        if isinstance(choice, Executor):
            return self._with_item_timeout(choice)
        if choice == 'serial':
            return self._with_item_timeout(SerialExecutor())
        return LocalPoolExecutor(
            start_method=settings.start_method,
            memory_limit=settings.memory_bytes,
            max_items_per_worker=settings.max_items_per_worker,
            item_timeout=settings.item_timeout,
        )

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
        started = time.monotonic()
        result = self.last_result = BatchResult()
        try:
            self._absolute_paths()
            job = self._make_job()
            plan = self._plan(job)
            result.total, result.done_before, result.failed_before = plan.total, plan.done_before, plan.failed_before
            if plan.missing:
                executor = self._make_executor()
                prepare_output(job.delegate, executor, writes=job.shared_paths())
                # Other runs on the same folder: claim chunks before computing them.
                claims = open_book(
                    self.state_dir / STATE_DIR if self.state_dir is not None else None,
                    # A unit job tells done units itself (other keys, versions).
                    store_state(job.delegate, job.failures, getattr(job, 'unit_done', None)),
                    info={'total': plan.total, 'executor': executor.description},
                    planned_at=time.time() - (time.monotonic() - started),
                )
                try:
                    with Batch(plan, job, executor, self.settings, result, self.status_path, started, claims) as batch:
                        batch.start()
                        batch.run()
                finally:
                    if claims is not None:
                        claims.close('crashed')  # a no-op once the batch closed it
            else:
                result.elapsed = time.monotonic() - started
                logger.debug('nothing to compute: %s', result)
        finally:
            self._priming = False
        self._after_run(result)
        self._primed = True
        self.reset_has_data()
        return result

    def _plan(self, job: Job) -> Plan:
        """Which units to compute; stale units are handled as ``on_stale`` says.

        Raises:
            StaleItemsError: units were computed by another version and
                ``on_stale`` is ``'error'``.
        """
        version = job.version if isinstance(job, UnitJob) else self._version()
        log = self._unit_log()
        self._stale_handled = False
        if self._one_key() and log.only(version):
            # The store's keys are the truth and no other version ever
            # recorded a unit: one listing, no record read.
            plan = plan_batch(self._work(), job.delegate, job.failures, spool_dir=self.state_dir)
            census = Census(version, units=plan.total, done_units=plan.done_before, done_items=plan.done_before)
            census.failed_units, census.missing_units = plan.failed_before, len(plan.missing)
            self.census = census
            write_census(self.state_dir, census)
            return plan
        stored, failed = Membership(job.delegate), Membership(job.failures)
        units = plan_units(self._work(), stored, failed, version, log.latest_rows(), self._one_key())
        if units.stale:
            where = str(self.state_dir) if self.state_dir is not None else repr(job.delegate)
            choice = self.provenance.on_stale
            if choice == 'error':
                self.census = units.census
                write_census(self.state_dir, units.census)
                raise stale_error(units, where)
            if choice == 'keep':
                kept = keep_stale(log, units, version)
                logger.warning('kept %d units computed by other versions in %s (on_stale=keep)', kept, where)
            else:
                logger.warning('computing %d stale units again in %s (on_stale=recompute)', len(units.stale), where)
                units.missing.extend(units.stale)
                if isinstance(job, UnitJob):
                    job.check_versions = True  # a stored item is no longer proof of done
            self._stale_handled = True
        self.census = units.census
        write_census(self.state_dir, units.census)
        return Plan(KeySpool(units.missing), units.payload, units.census.done_units, units.census.failed_units)

    def _after_run(self, result: BatchResult) -> None:
        stale_handled = getattr(self, '_stale_handled', False)
        if stale_handled and not result.interrupted and not result.missing:
            # Every stale unit was computed again or kept: their old
            # records only slow the next reader down.
            self._unit_log().prune(self._version())
        census: Optional[Census] = getattr(self, 'census', None)
        failed = result.failed + result.failed_elsewhere
        settled = result.computed + result.done_elsewhere
        if census is None or not (settled or failed or stale_handled):
            return  # nothing ran: the plan's census is current
        if self._one_key() and not stale_handled:
            # One item per unit and one version: the run's counts say it
            # all, without listing the store again.
            census.done_units += settled
            census.done_items += settled
            census.failed_units += failed
            census.missing_units = max(0, census.missing_units - settled - failed)
        else:
            census = self.unit_census()
        self.census = census
        write_census(self.state_dir, census)

    def unit_census(self) -> Census:
        """The batch's own units and items by state (done, stale, failed, missing), computing nothing."""
        delegate = self._raw_delegate()
        version = self._version()
        log = self._unit_log()
        rows = None if self._one_key() and log.only(version) else log.latest_rows()
        units = plan_units(
            self._work(), Membership(delegate), Membership(self._failure_store), version, rows, self._one_key()
        )
        return units.census

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
        self._unit_log().clear()
        self.invalidate()

    def close(self) -> None:
        self.invalidate()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the stash for _process only: nothing of the parent's
        # run (executor, callbacks, results) travels with it.
        state = dict(self.__dict__)
        state['settings'] = BatchSettings()
        # config (zensols' form, unused) may not even pickle.
        for name in ('last_result', '_priming', '_failure_store', 'config'):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
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

    The other arguments are the options of :class:`MultiProcessStash`, in
    the same order.

    Raises:
        TypeError: a callable factory without ``keys``, or a factory that
            is neither a stash nor callable.
    """

    def __init__(
        self,
        delegate: Stash,
        factory: Union[Stash, Callable[[Any], Any]],
        keys: Optional[KeySource] = None,
        workers: Union[int, float] = 0,
        chunk_size: int = 0,
        executor: Union[Executor, str, None] = None,
        progress: Optional[bool] = None,
        on_event: Optional[EventHook] = None,
        max_retries: int = 2,
        retries: int = 0,
        memory_limit: Union[int, str, None] = None,
        max_items_per_worker: Optional[int] = None,
        start_method: Optional[str] = None,
        state_dir: Union[str, 'os.PathLike[str]', None] = None,
        expand: bool = False,
        version: Optional[str] = None,
        on_stale: str = 'error',
        unit_id: Optional[Callable[[Any], str]] = None,
        item_timeout: Optional[float] = None,
    ) -> None:
        if not isinstance(factory, Stash):
            if not callable(factory):
                raise TypeError(f'factory must be a Stash or a callable, not {type(factory).__name__}')
            if keys is None:
                raise TypeError('keys= is required when the factory is a plain callable (it has no keys())')
        super().__init__(
            delegate,
            workers=workers,
            chunk_size=chunk_size,
            executor=executor,
            progress=progress,
            on_event=on_event,
            max_retries=max_retries,
            retries=retries,
            memory_limit=memory_limit,
            max_items_per_worker=max_items_per_worker,
            start_method=start_method,
            state_dir=state_dir,
            version=version,
            on_stale=on_stale,
            unit_id=unit_id,
            item_timeout=item_timeout,
        )
        self.factory = factory
        self.work_keys = keys
        #: the factory returns a unit's ``(key, value)`` pairs
        self.expand = bool(expand)

    #: set by the constructor: the factory returns a unit's ``(key, value)`` pairs
    expand = False

    def _keys_source(self) -> Iterable[str]:
        if self.work_keys is None:
            assert isinstance(self.factory, Stash)
            return self.factory.keys()
        if callable(self.work_keys):
            return self.work_keys()
        return self.work_keys

    def _work(self) -> Iterator[tuple[str, Any]]:
        custom = self.provenance.unit_id
        if custom is None and not self.expand:
            # One item per key: the keys are str (the factory's contract,
            # as for FactoryStash); planning names any that is not.
            return iter_pairs(self._keys_source())
        return self._expanded_work(custom)

    def _expanded_work(self, custom: Optional[Callable[[Any], str]]) -> Iterator[tuple[str, Any]]:
        return identify(self._keys_source(), custom)

    def _code(self) -> Any:
        return self.factory.load if isinstance(self.factory, Stash) else self.factory

    def _one_key(self) -> bool:
        return not self.expand

    def _make_job(self) -> Job:
        mode = 'expand' if self.expand else 'one'
        # One item per unit: the factory is wrapped; a unit that yields
        # items is computed again whole by the job itself.
        code = with_retries(self._code(), self.settings.retries) if mode == 'one' else self._code()
        retries = 0 if mode == 'one' else self.settings.retries
        return UnitJob(
            self._raw_delegate(), self._failure_store, code, mode, self._version(), self._unit_log(), retries=retries
        )

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r}, factory={self.factory!r})'
