"""The worker side of a batch by units: compute each unit, store its items, record it.

A :class:`UnitJob` is what a batch ships to its workers.  It computes a
chunk's units, writes their items to the store (in groups when the store
commits in groups), writes a failure record for each unit that raises,
and appends the record of each finished unit to the batch's
:class:`~stashworks.multi.units.UnitLog` once its items are durable.
"""

from __future__ import annotations

import logging
import threading
import time
from operator import itemgetter
from typing import Any, Callable, Mapping, Optional, Sequence

from ..stash import Stash
from .job import Finish, Finishers, FinishMany, Job, Ledger, StopCheck
from .units import UnitLog
from .wire import Chunk

__all__ = ['JOB_MODES', 'MAX_SLICE', 'RECORD_SECONDS', 'SLICE_SECONDS', 'UnitJob']

logger = logging.getLogger(__name__)

#: Longest the record of a one-item unit waits in a worker's buffer when
#: the store writes through (seconds).  Its item is the truth about it, so
#: a record lost with a kill only loses which version computed it (it then
#: counts as current).  The record of a unit of any other form is its
#: completion, and is written as soon as the unit's items are durable.
RECORD_SECONDS = 0.1

#: How a :class:`UnitJob` calls its code: ``'one'`` (``compute(unit)`` is
#: the unit's one item, stored under the unit's id), ``'expand'``
#: (``compute(unit)`` returns the unit's ``(key, value)`` pairs) or
#: ``'process'`` (``compute([unit])`` yields them: a stash's
#: ``_process``).
JOB_MODES = ('one', 'expand', 'process')

#: One-item units are computed in slices that end their bookkeeping
#: together (see :meth:`UnitJob._compute_slices`): a slice grows while it
#: takes less than half of this many seconds, and shrinks when it takes more.
SLICE_SECONDS = 0.01
#: The most units in one slice.
MAX_SLICE = 4096


class UnitJob(Job):
    """Computes units one by one, stores their items, records each finished unit.

    A unit's record (its id, the batch's version, the keys of the items it
    stored) is written after its items are durable: for a store that
    writes in groups, after the group's flush; for a store that writes
    through, at most :data:`RECORD_SECONDS` later, and at the end of each
    chunk.  A unit that raises (or whose item cannot be stored) gets a
    failure record and no unit record, whatever items it stored before.

    ``process`` mode calls ``_process`` with one unit at a time, so every
    item it yields belongs to that unit (a whole chunk at once could not
    say which unit yielded what).

    Args:
        delegate: where items are stored.
        failures: where failure records go.
        compute: the factory, or the stash's bound ``_process``.
        mode: one of :data:`JOB_MODES`.
        version: the batch's version, written in each record.
        log: the unit log; ``None`` records nothing.
    """

    def __init__(
        self,
        delegate: Stash,
        failures: Stash,
        compute: Callable[[Any], Any],
        mode: str = 'one',
        version: str = '',
        log: Optional[UnitLog] = None,
        retries: int = 0,
    ) -> None:
        if mode not in JOB_MODES:
            raise ValueError(f'mode must be one of {JOB_MODES}, not {mode!r}')
        super().__init__(delegate, failures)
        self.compute = compute
        self.mode = mode
        #: for a unit that yields items: how many more times a unit that
        #: raised is computed again (the 'one' mode wraps compute instead)
        self.retries = retries
        self.version = version
        self.units_log = log
        self._finished: Mapping[str, Sequence[Any]] = {}
        self._finished_read = 0.0
        #: set by the parent when stale units are computed again: a stored
        #: item is then done only if this version computed it
        self.check_versions = False

    @property
    def unit_keys(self) -> dict[str, tuple[str, ...]]:
        """Item keys of units finished in the running chunk, until recorded.

        One ``dict`` per thread: a Dask worker runs chunks of the one job
        it loaded in several threads at once, and each chunk records its
        own units.
        """
        local = self.__dict__.get('_local')
        if local is None:
            local = self.__dict__.setdefault('_local', threading.local())
        keys: Optional[dict[str, tuple[str, ...]]] = getattr(local, 'keys', None)
        if keys is None:
            keys = local.keys = {}
        return keys

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop('_local', None)  # per thread, of this process
        return state

    def _compute_chunk(self, chunk: Chunk, finish: Finish, finish_many: Optional[FinishMany]) -> bool:
        units: Sequence[Any] = chunk.payload if chunk.payload is not None else chunk.units
        if len(units) != len(chunk.units):
            raise ValueError(f'chunk {chunk.id} has {len(chunk.units)} unit ids for {len(units)} units')
        one = self.mode == 'one'
        if one and finish_many is not None:
            return self._compute_slices(chunk, units, finish_many)
        last = len(chunk.units) - 1
        for i, (uid, unit) in enumerate(zip(chunk.units, units, strict=True)):
            if one:
                try:
                    value = self.compute(unit)
                except BaseException as exc:
                    # In a worker process only its own stop passes (a job's
                    # SystemExit, KeyboardInterrupt... is its unit's failure).
                    if isinstance(exc, self.passthrough):
                        raise
                    self.record_failure(uid, exc, chunk.attempt)
                    ok = False
                else:
                    ok = self._store(uid, value, chunk.attempt)
            else:
                ok = self._expand(uid, unit, chunk.attempt)
            if finish(uid, ok) and i < last:
                return True
        return False

    def _compute_slices(self, chunk: Chunk, units: Sequence[Any], finish_many: FinishMany) -> bool:
        """Compute one-item units a slice at a time, store each slice's items in one step.

        A slice starts at one unit and doubles while it takes less than
        :data:`SLICE_SECONDS` (up to :data:`MAX_SLICE` units), so a slow
        unit is settled (and asked to stop after) on its own, as ever,
        while a million tiny ones pay the per-unit bookkeeping a slice at a
        time.  A unit whose code raises, or whose item cannot be stored,
        fails alone.
        """
        ids = chunk.units
        attempt = chunk.attempt
        compute = self.compute
        passthrough = self.passthrough
        clock = time.perf_counter
        n = len(ids)
        start = 0
        step = 1
        while start < n:
            end = min(n, start + step)
            began = clock()
            pairs: list[tuple[str, Any]] = []
            failed: list[str] = []
            for uid, unit in zip(ids[start:end], units[start:end], strict=True):
                try:
                    pairs.append((uid, compute(unit)))
                except BaseException as exc:
                    # In a worker process only its own stop passes (a job's
                    # SystemExit, KeyboardInterrupt... is its unit's failure).
                    if isinstance(exc, passthrough):
                        raise
                    self.record_failure(uid, exc, attempt)
                    failed.append(uid)
            done = self._store_slice(pairs, attempt, failed)
            took = clock() - began
            if took < SLICE_SECONDS / 2 and step < MAX_SLICE:
                step *= 2
            elif took > SLICE_SECONDS and step > 1:
                step //= 2
            start = end
            if finish_many(done, failed) and start < n:
                return True
        return False

    def _store_slice(self, pairs: list[tuple[str, Any]], attempt: int, failed: list[str]) -> list[str]:
        """Store a slice's items; the keys stored (one that cannot be goes to ``failed``)."""
        if not pairs:
            return []
        try:
            self.delegate.dump_many(pairs)
        except Exception:
            # One item at a time, to find the one (or ones) that cannot be
            # stored; writing the others again is harmless.
            done = []
            for key, value in pairs:
                if self._store(key, value, attempt):
                    done.append(key)
                else:
                    failed.append(key)
            return done
        return list(map(itemgetter(0), pairs))

    def _expand(self, uid: str, unit: Any, attempt: int) -> bool:
        tries = 1
        while True:
            keys: dict[str, None] = {}
            try:
                pairs = self.compute([unit]) if self.mode == 'process' else self.compute(unit)
                for pair in pairs:
                    key, value = pair
                    if not isinstance(key, str):
                        raise TypeError(
                            f'unit {uid!r} yielded an item whose key is not a str but {type(key).__name__}: {key!r}'
                        )
                    self.delegate.dump(key, value)
                    keys[key] = None
            except Exception as exc:
                if tries <= self.retries:
                    # retries=N: the whole unit again; what it stored before
                    # it raised is overwritten by the next computation.
                    logger.info(
                        'unit %r raised %s: %s; computing it again (retry %d of %d)',
                        uid, type(exc).__name__, exc, tries, self.retries,
                    )
                    tries += 1
                    continue
                if tries > 1:
                    try:
                        exc.stashworks_tries = tries  # type: ignore[attr-defined]
                    except AttributeError:  # an exception with __slots__: its record says 1
                        pass
                # The items it stored stay, unrecorded: the unit is not done
                # and its next computation overwrites them.
                self.record_failure(uid, exc, attempt)
                return False
            except BaseException as exc:
                if isinstance(exc, self.passthrough):
                    raise
                self.record_failure(uid, exc, attempt)
                return False
            self.unit_keys[uid] = tuple(keys)  # this thread's: see unit_keys
            return True

    def unit_done(self, unit: str) -> bool:
        """Whether ``unit`` finished, from what the stores and the log hold (in the parent).

        The engine asks it about the units of a chunk whose worker died
        before it reported them.
        """
        if self.mode == 'one':
            if not self.delegate.exists(unit):
                return False
            if not self.check_versions:
                return True
            # Stale units are being computed again: an item is done only if
            # no other version's record is the latest about it.
        log = self.units_log
        if log is None:
            return self.mode == 'one'
        row = self._finished.get(unit)
        now = time.monotonic()
        if (row is None or row[1] != self.version) and now - self._finished_read > 0.5:
            # Read again at most twice a second: a lost chunk asks about
            # each of its units in a row.
            self._finished = log.latest_rows()
            self._finished_read = now
            row = self._finished.get(unit)
        if self.mode == 'one':
            return row is None or row[1] == self.version
        if row is None or row[1] != self.version:
            return False
        # Recorded, and every item it stored is still there (one deleted
        # by hand sends the unit back, as planning does).
        exists = self.delegate.exists
        return all(exists(key) for key in ((unit,) if row[2] is None else row[2]))

    def exists(self, unit: str) -> bool:
        """:meth:`unit_done` under the name a store's membership test has."""
        return self.unit_done(unit)

    def _write_through(self, ledger: Ledger, should_stop: Optional[StopCheck]) -> Finishers:
        return self._recording(ledger, super()._write_through(ledger, should_stop), grouped=False)

    def _grouped(self, chunk: Chunk, ledger: Ledger, should_stop: Optional[StopCheck]) -> Finishers:
        return self._recording(ledger, super()._grouped(chunk, ledger, should_stop), grouped=True)

    def _recording(self, ledger: Ledger, finishers: Finishers, grouped: bool) -> Finishers:
        log = self.units_log
        if log is None:
            return finishers
        finish, finish_many, commit = finishers
        version, keys_of = self.version, self.unit_keys
        done = ledger.done
        recorded = len(done)
        wait = RECORD_SECONDS if self.mode == 'one' else 0.0
        due = time.monotonic() + wait
        # Records waiting for their write: (unit, item keys or None for
        # the unit's own key), cheap to append once per unit.
        entries: list[tuple[str, Optional[tuple[str, ...]]]] = []
        # Units that stored one item under their own id, recorded as a run.
        plain: list[str] = []

        def write() -> None:
            nonlocal due
            due = time.monotonic() + wait
            if plain:
                log.add_units(version, plain)
                plain.clear()
            if entries:
                log.add_entries(version, entries)
                entries.clear()
            try:
                log.flush()
            except OSError as exc:
                # Kept buffered for the next flush; lost records only
                # mean those units are computed again.
                logger.error('cannot record finished units in %s: %s', log.path, exc)

        def harvest() -> None:
            # A unit enters ledger.done only once its items are durable
            # (the job's own rule), so its record may be written from then.
            nonlocal recorded
            new = done[recorded:]
            recorded += len(new)
            if keys_of:
                entries.extend((uid, keys_of.pop(uid, None)) for uid in new)
            else:
                plain.extend(new)

        def record_settled() -> None:
            # One-item units: nothing per unit but a clock read; their
            # records are gathered from the ledger when the time is due.
            if (len(done) > recorded if grouped else time.monotonic() >= due) or not wait:
                harvest()
                if entries or plain:
                    write()

        def recording_finish(unit: str, ok: bool) -> bool:
            stop = finish(unit, ok)
            record_settled()
            return stop

        def recording_finish_many(units: list[str], bad: list[str]) -> bool:
            assert finish_many is not None
            stop = finish_many(units, bad)
            record_settled()
            return stop

        def recording_commit() -> None:
            try:
                commit()
            finally:
                harvest()
                if entries or plain or log.pending:
                    write()
                keys_of.clear()

        many = recording_finish_many if finish_many is not None else None
        return Finishers(recording_finish, many, recording_commit)
