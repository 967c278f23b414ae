"""Claims: runs that share an output folder split its work among them.

Any number of runs (processes, on one host or on hosts sharing the file
system) may fill one output folder at once.  Before a run computes a chunk
it *claims* the chunk's keys; a key claimed by a live run is left to that
run, so no key is computed twice while every run lives.

The protocol needs two things of the file system, which local file systems
and NFS both give: an exclusive create (``link(2)`` onto a name fails if
the name exists) and modification times that follow writes.  No ``flock``.

On disk, in ``<out>/.stashworks/``:

``claims/<n>.json``
    Claim number ``n`` (0, 1, 2, ...): the claiming run's id, host, pid,
    time and keys.  A run makes claim ``n`` by linking a finished temp file
    onto the name, so the name appears with its whole content, or not at
    all; if ``n`` exists, another run got it first, and the run reads it
    and tries ``n + 1``.  So claim ``n`` is only ever made once every claim
    below ``n`` exists, and its maker has read all of them: a key already
    held by a live run's lower claim is left out of claim ``n``.  A claim
    is released (rewritten with ``"released": true``) once its keys are
    settled.
``runs/<run id>.json``
    The claiming run's record (see :mod:`stashworks.multi.runs`), rewritten
    by a heartbeat thread.  A claim holds while its run's record says the
    run is running and the heartbeat is younger than the expiry (on the
    same host: or its pid, with the same start time, still runs).

Taking a dead run's keys over needs no extra step: its claims stop
holding, so the next claim of a live run may list their keys again, and of
two runs doing so at once the lower claim number wins, because the higher
one's maker read the lower one first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional, Sequence, Union

from .._atomic import atomic_write, temp_name
from .layout import utc_now
from .plan import KeySpool
from .runs import RunRecord, RunView, claim_timings, read_run, runs_dir

__all__ = [
    'ClaimBook',
    'ClaimResult',
    'KeyState',
    'SharedWork',
    'claims_dir',
    'claims_enabled',
    'open_book',
    'store_state',
]

logger = logging.getLogger(__name__)

#: ``settled(key)``: ``True`` if the key is stored, ``False`` if it has a
#: failure record, ``None`` if neither (another run may have settled it).
KeyState = Callable[[str], Optional[bool]]

_CLAIM_NAME = re.compile(r'([0-9]+)\.json\Z')


def claims_enabled() -> bool:
    """Whether batches claim their chunks (``STASHWORKS_CLAIMS=0`` turns it off).

    Off, a run behaves as if it were alone on its output folder: it
    neither claims nor looks at other runs' claims.
    """
    return os.environ.get('STASHWORKS_CLAIMS', '1').strip().lower() not in ('0', 'false', 'no', 'off')


def claims_dir(state_dir: Union[str, 'os.PathLike[str]']) -> Path:
    """The folder of claims inside a batch's ``.stashworks`` folder."""
    return Path(state_dir) / 'claims'


@dataclass
class _Claim:
    """Another run's claim, as read."""

    run: str
    keys: tuple[str, ...]
    #: when the file was written (epoch seconds), for a run whose record
    #: cannot be read (yet)
    mtime: float
    released: bool


@dataclass
class ClaimResult:
    """What one call of :meth:`ClaimBook.claim` got.

    Attributes:
        seq: the claim's number (``-1`` when nothing was claimed).
        keys: the keys this run now holds and must compute.
        deferred: keys held by other live runs (check them again with
            :meth:`ClaimBook.poll`).
        done_elsewhere: keys another run stored already.
        failed_elsewhere: keys another run recorded as failed.
    """

    seq: int = -1
    keys: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    done_elsewhere: list[str] = field(default_factory=list)
    failed_elsewhere: list[str] = field(default_factory=list)


class ClaimBook:
    """One run's view of the claims on an output folder, and its own claims.

    Use :meth:`open` before the first claim and :meth:`close` at the end
    (also after an error: it releases what the run holds).

    Args:
        state_dir: the batch's ``.stashworks`` folder.
        settled: tells whether another run settled a key (see
            :data:`KeyState`); asked only for keys that another run claimed.
        heartbeat: seconds between two heartbeats (default:
            ``STASHWORKS_HEARTBEAT`` or 5).
        expiry: seconds of silence after which a run's claims are taken
            over (default: ``STASHWORKS_CLAIM_EXPIRY`` or 60).
        info: fields for the run's record (``workers``, ``executor``,
            ``total``...).
        refresh: least seconds between two readings of another run's record.
        keep_for: seconds a released claim stays on disk at least
            (default: the expiry, and at least 10 minutes): a run that
            planned before the release and registers after it still reads
            which keys were settled.
        planned_at: when this run began listing the stores (epoch
            seconds): a claim released before then is left out of the
            index, since the listing already says what became of its keys
            (and the run's own plan is the judge of what is done).
    """

    def __init__(
        self,
        state_dir: Union[str, 'os.PathLike[str]'],
        settled: KeyState,
        heartbeat: Optional[float] = None,
        expiry: Optional[float] = None,
        info: Optional[dict[str, Any]] = None,
        refresh: float = 0.5,
        keep_for: Optional[float] = None,
        planned_at: Optional[float] = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.dir = claims_dir(self.state_dir)
        self.settled = settled
        self.heartbeat, self.expiry = claim_timings(heartbeat, expiry)
        self.refresh = refresh
        self.keep_for = max(self.expiry, 600.0) if keep_for is None else keep_for
        self.planned_at = planned_at
        self._lock = threading.Lock()
        #: this run's open claims: number -> keys not settled yet
        self.mine: dict[int, set[str]] = {}
        self._last_mine = -1
        #: per open claim of this run, its keys as encoded in the file
        self._keys_of: dict[int, bytes] = {}
        #: other runs' claims by number, and the numbers claiming each key
        self.others: dict[int, _Claim] = {}
        self._by_key: dict[str, list[int]] = {}
        self._next = 0
        self._views: dict[str, tuple[float, Optional[RunView]]] = {}
        self.record = RunRecord(self.state_dir, self.heartbeat, self.expiry, info, claims=self._open_claims)
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self.claims_made = 0
        self._opened = False
        self._live, self._live_at = 1, 0.0
        #: whether :meth:`close` ran
        self.closed = False

    @property
    def run_id(self) -> str:
        """This run's id (the name of its record)."""
        return self.record.run_id

    # -- life cycle ----------------------------------------------------------

    def open(self) -> None:
        """Register this run, then read the claims already made.

        The record is written first: a run that reads the claims after
        this one registered sees it as live, so it never cleans claims away
        under it (see :meth:`close`).  Every claim is read, released ones
        too: their keys may have been settled after this run listed the
        stores, which :attr:`settled` then tells.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self.record.start()
        self._opened = True
        listed = self._listed()
        for seq in listed:
            self._read(seq, released_before=self.planned_at)
        if listed:
            self._next = max(listed) + 1

    def close(self, state: str = 'finished', cleanup: bool = False) -> None:
        """Release every claim still open and write this run's final state.

        Args:
            state: ``'finished'``, ``'interrupted'`` or ``'crashed'``; any
                of them voids this run's claims for the other runs at once.
            cleanup: the batch is complete: if no other run holds claims,
                remove the claims released more than :attr:`keep_for`
                seconds ago (all but the highest number, which keeps later
                claims numbered above every earlier one) and the records of
                runs that ended or died.
        """
        if self.closed:
            return
        self.closed = True
        for seq in list(self.mine):
            self._release(seq)
        if not self._opened:
            return
        self.record.close(state)
        if cleanup:
            try:
                self._cleanup()
            except OSError as exc:
                logger.warning('cannot clean the claims in %s: %s', self.dir, exc)

    def _cleanup(self) -> None:
        views = self._all_runs()
        if any(v.holds_claims for v in views if v.run_id != self.run_id):
            return
        seqs = self._listed()
        # Only claims released long ago go: a run still planning (it has
        # not registered yet) learns from the recent ones which of its
        # planned keys were settled meanwhile.
        old = time.time() - self.keep_for
        for seq in seqs[:-1]:
            path = self.dir / f'{seq}.json'
            try:
                if os.stat(path).st_mtime < old:
                    os.unlink(path)
            except FileNotFoundError:
                pass
        for view in views:
            if view.run_id != self.run_id and view.state in ('ended', 'dead'):
                try:
                    os.unlink(runs_dir(self.state_dir) / f'{view.run_id}.json')
                except FileNotFoundError:
                    pass

    def _all_runs(self) -> list[RunView]:
        """Every other run's record (this run's own is not read: it asks about others)."""
        folder = runs_dir(self.state_dir)
        own = f'{self.run_id}.json'
        out = []
        for entry in os.scandir(folder):
            if _is_record(entry.name) and entry.name != own:
                view = read_run(folder / entry.name, self.expiry)
                if view is not None:
                    out.append(view)
        return out

    # -- claims of others ----------------------------------------------------

    def _listed(self) -> list[int]:
        try:
            with os.scandir(self.dir) as it:
                return sorted(int(m.group(1)) for e in it if (m := _CLAIM_NAME.match(e.name)))
        except FileNotFoundError:
            return []

    def _read(self, seq: int, released_before: Optional[float] = None) -> None:
        """Read another run's claim ``seq`` into the index.

        A claim released before ``released_before`` (epoch seconds) is
        not indexed.
        """
        path = self.dir / f'{seq}.json'
        data: Any = None
        mtime = time.time()
        try:
            with open(path, 'rb') as fh:
                mtime = os.fstat(fh.fileno()).st_mtime
                data = json.loads(fh.read())
        except FileNotFoundError:
            # Removed by the cleanup of a complete batch: all settled.
            data = None
        except (OSError, ValueError) as exc:
            logger.warning('unreadable claim %s ignored: %s', path, exc)
            data = None
        if not isinstance(data, dict):
            data = {'run': '', 'released': True, 'keys': []}
        run = str(data.get('run', ''))
        if run == self.run_id:
            return
        released = bool(data.get('released'))
        if released and released_before is not None and mtime < released_before - self._clock_slack(run):
            # Settled before this run planned: its keys are in the plan's
            # counts already.  Only the number is kept (an interrupted run
            # of ten million keys leaves millions of them behind).
            self.others[seq] = _Claim(run, (), mtime, True)
            return
        keys = data.get('keys') or []
        claim = _Claim(run, tuple(k for k in keys if isinstance(k, str)), mtime, released)
        self.others[seq] = claim
        # A released claim is indexed too: its keys may have been settled
        # after this run listed the stores, which ``settled`` will tell.
        for key in claim.keys:
            self._by_key.setdefault(key, []).append(seq)

    def _clock_slack(self, run: str) -> float:
        """Seconds by which ``run``'s file times may run ahead of this host's clock.

        None for a run of this host (one clock); a couple of seconds for
        another host's, whose files a network file system stamps.
        """
        view = self._view(run)
        return 0.0 if view is not None and view.data.get('host') == self._host else 2.0

    def _view(self, run: str) -> Optional[RunView]:
        now = time.monotonic()
        cached = self._views.get(run)
        if cached is not None and now - cached[0] < self.refresh:
            return cached[1]
        view = read_run(runs_dir(self.state_dir) / f'{run}.json', self.expiry) if run else None
        self._views[run] = (now, view)
        return view

    def _holds(self, seq: int) -> bool:
        """Whether another run's claim ``seq`` still holds its keys."""
        claim = self.others[seq]
        if claim.released:
            return False
        view = self._view(claim.run)
        if view is None:
            # No record to read (not visible yet on a network file system,
            # or removed): a young claim holds, an old one does not.
            return time.time() - claim.mtime < self.expiry
        return view.holds_claims and not view.released(seq)

    def live_runs(self) -> int:
        """How many runs hold claims on the folder, this one included (cached for a few seconds)."""
        now = time.monotonic()
        if now - self._live_at > max(2.0, self.refresh):
            self._live_at = now
            try:
                self._live = 1 + sum(1 for v in self._all_runs() if v.run_id != self.run_id and v.holds_claims)
            except OSError:
                self._live = 1
        return self._live

    def holder(self, key: str) -> Optional[str]:
        """The id of the live run holding ``key``, or ``None``."""
        for seq in self._by_key.get(key, ()):
            if self._holds(seq):
                return self.others[seq].run
        return None

    def _sort(self, keys: Iterable[str], result: ClaimResult) -> list[str]:
        """Keep the keys nobody else holds or settled; file the others in ``result``."""
        by_key = self._by_key
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        if by_key.keys().isdisjoint(keys):
            return list(keys)  # no other run ever claimed any of them
        holds: dict[int, bool] = {}  # per call: each claim judged once
        keep = []
        for key in keys:
            seqs = by_key.get(key)
            if seqs is None:
                keep.append(key)
                continue
            held = False
            for seq in seqs:
                h = holds.get(seq)
                if h is None:
                    h = holds[seq] = self._holds(seq)
                if h:
                    held = True
                    break
            if held:
                result.deferred.append(key)
                continue
            state = self.settled(key)
            if state is None:
                keep.append(key)  # taken over: its holder died or let go
            elif state:
                result.done_elsewhere.append(key)
            else:
                result.failed_elsewhere.append(key)
        return keep

    # -- own claims ----------------------------------------------------------

    def _open_claims(self) -> tuple[list[int], int]:
        with self._lock:
            return sorted(self.mine), self._last_mine

    def claim(self, keys: Sequence[str]) -> ClaimResult:
        """Claim what nobody else holds of ``keys``.

        Returns:
            The claim: the keys this run holds now (possibly none), and
            what became of the others.
        """
        result = ClaimResult()
        keep = self._sort(keys, result)
        while keep:
            seq = self._next
            encoded = json.dumps(keep, separators=(',', ':')).encode('utf-8')
            if self._create(seq, encoded):
                self._keys_of[seq] = encoded
                with self._lock:
                    self.mine[seq] = set(keep)
                    self._last_mine = seq
                self._next = seq + 1
                self.claims_made += 1
                result.seq = seq
                result.keys = keep
                return result
            # Another run made claim ``seq`` first: read it, leave its keys.
            self._read(seq)
            self._next = seq + 1
            taken = self.others.get(seq)
            if taken is not None and taken.keys:
                theirs = set(taken.keys)
                if not theirs.isdisjoint(keep):
                    keep = self._sort(keep, result)
        return result

    def _create(self, seq: int, keys: bytes) -> bool:
        """Make claim ``seq`` with ``keys`` (a JSON list); ``False`` if it exists already."""
        head = {'run': self.run_id, 'host': self._host, 'pid': self._pid, 'time': utc_now()}
        payload = json.dumps(head, separators=(',', ':')).encode('utf-8')[:-1] + b',"keys":' + keys + b'}'
        final = self.dir / f'{seq}.json'
        tmp = self.dir / temp_name()
        with open(tmp, 'xb') as fh:
            fh.write(payload)
        try:
            os.link(tmp, final)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:
            # The claims folder was removed (a cleanup by a finished run
            # that could not see this one yet): make it again.
            self.dir.mkdir(parents=True, exist_ok=True)
            return False
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def settle(self, keys: Iterable[str]) -> None:
        """Keys this run computed (stored or failed); releases the claims they complete."""
        emptied = []
        keys = keys if isinstance(keys, (set, frozenset)) else set(keys)
        if not keys:
            return
        with self._lock:
            # A run holds a few claims at a time (about two chunks per
            # worker): set operations per claim, no Python loop per key.
            for seq, left in self.mine.items():
                if left.isdisjoint(keys):
                    continue
                left.difference_update(keys)
                if not left:
                    emptied.append(seq)
        for seq in emptied:
            self._release(seq)

    def _release(self, seq: int) -> None:
        with self._lock:
            self.mine.pop(seq, None)
        keys = self._keys_of.pop(seq, b'[]')
        # The keys stay in the file: a run that reads it later learns they
        # were settled here (it cannot know from its own listing of the stores).
        head = {'run': self.run_id, 'released': True, 'time': utc_now()}
        payload = json.dumps(head, separators=(',', ':')).encode('utf-8')[:-1] + b',"keys":' + keys + b'}'

        def fill(fh: IO[bytes]) -> None:
            fh.write(payload)

        try:
            atomic_write(self.dir / f'{seq}.json', fill)
        except OSError as exc:
            # The run's record says it too (the claim is no longer listed).
            logger.warning('cannot release claim %d in %s: %s', seq, self.dir, exc)

    @property
    def held_keys(self) -> int:
        """How many keys this run holds and has not settled."""
        with self._lock:
            return sum(map(len, self.mine.values()))

    # -- waiting for others ---------------------------------------------------

    def poll(self, keys: Iterable[str]) -> ClaimResult:
        """Look again at keys deferred to other runs.

        Returns:
            ``deferred``: still held by a live run; ``done_elsewhere`` /
            ``failed_elsewhere``: settled by another run; ``keys``: held
            by nobody and unsettled (free to claim; not claimed yet).
        """
        result = ClaimResult()
        keys = list(keys)
        self._views.clear()  # read the other runs' records afresh
        # A release shows in the claim file at once, in the record only
        # with the next heartbeat: read the files of the claims waited on.
        seqs = {seq for key in keys for seq in self._by_key.get(key, ()) if not self.others[seq].released}
        for seq in seqs:
            self._refresh(seq)
        result.keys = self._sort(keys, result)
        return result

    def _refresh(self, seq: int) -> None:
        """Read whether another run released its claim ``seq``."""
        try:
            with open(self.dir / f'{seq}.json', 'rb') as fh:
                data = json.loads(fh.read())
        except FileNotFoundError:
            self.others[seq].released = True  # cleaned away: settled
            return
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get('released'):
            self.others[seq].released = True

    def update(self, **fields: Any) -> None:
        """Progress fields for this run's record (``done``, ``computed``...)."""
        self.record.update(claimed_keys=self.held_keys, **fields)


def _is_record(name: str) -> bool:
    return name.endswith('.json') and not name.startswith('.')


class SharedWork:
    """One run's missing units, handed out in claimed chunks.

    The engine asks :meth:`take` for the units of its next chunk instead
    of slicing its list of missing units: it gets only units this run now
    holds.  Units held by other live runs wait in :attr:`deferred`; when
    the list is used up, :meth:`take` looks at them again (at most every
    ``poll_interval`` seconds) and claims those whose holder died or let
    them go unsettled.  The run is over when nothing is left to take,
    nothing is in flight and :attr:`waiting` is false.

    Args:
        book: this run's open claim book.
        missing: the units the run planned, in work order (taken from as chunks are claimed).
        poll_interval: least seconds between two looks at deferred units.
    """

    def __init__(self, book: ClaimBook, missing: Union[KeySpool, Sequence[str]], poll_interval: float = 0.2) -> None:
        self.book = book
        self.missing = missing if isinstance(missing, KeySpool) else KeySpool(missing)
        self.poll_interval = poll_interval
        #: units held by other live runs, to look at again
        self.deferred: list[str] = []
        self._free: deque[str] = deque()
        self._last_poll = 0.0
        #: units other runs stored / recorded as failed, found so far
        self.done_elsewhere = 0
        self.failed_elsewhere = 0
        #: ``(done, failed)`` counts found since the last :meth:`drain`
        self._news = [0, 0]

    @property
    def unsent(self) -> int:
        """Units not handed out yet (deferred ones excluded)."""
        return self.missing.remaining + len(self._free)

    def share(self) -> int:
        """This run's share of the unsent units, for sizing chunks.

        Every live run walks the same list, so near the end a run's chunks
        should shrink as if the rest were split among all of them.
        """
        unsent = self.unsent
        return -(-unsent // self.book.live_runs()) if unsent else 0

    @property
    def waiting(self) -> bool:
        """Whether units held by other runs are still unsettled."""
        return bool(self.deferred)

    def _file(self, got: ClaimResult) -> None:
        self.deferred.extend(got.deferred)
        if got.done_elsewhere or got.failed_elsewhere:
            self.done_elsewhere += len(got.done_elsewhere)
            self.failed_elsewhere += len(got.failed_elsewhere)
            self._news[0] += len(got.done_elsewhere)
            self._news[1] += len(got.failed_elsewhere)

    def drain(self) -> tuple[int, int]:
        """Units other runs settled since the last call: ``(done, failed)``."""
        news = (self._news[0], self._news[1])
        self._news = [0, 0]
        return news

    def poll(self, force: bool = False) -> None:
        """Look at the deferred units again (rate-limited unless ``force``)."""
        if not self.deferred:
            return
        now = time.monotonic()
        if not force and now - self._last_poll < self.poll_interval:
            return
        self._last_poll = now
        polled = self.book.poll(self.deferred)
        self.deferred = []
        self._file(polled)
        self._free.extend(polled.keys)

    def take(self, size: int) -> tuple[str, ...]:
        """Claim up to ``size`` units for the next chunk; ``()`` when none can be had now."""
        size = max(1, size)
        while True:
            if self._free:
                candidates = [self._free.popleft() for _ in range(min(size, len(self._free)))]
            elif self.missing.remaining:
                candidates = self.missing.take(size)
            else:
                self.poll()
                if not self._free:
                    return ()
                continue
            got = self.book.claim(candidates)
            self._file(got)
            if got.keys:
                return tuple(got.keys)


def store_state(delegate: Any, failures: Any, done: Optional[Callable[[str], bool]] = None) -> KeyState:
    """The :data:`KeyState` of a batch's stores: stored, failed, or neither.

    Args:
        delegate: the items' store (``exists(key)``).
        failures: the failure records (``exists(key)``).
        done: tells a unit done instead of ``delegate.exists`` (a unit
            whose items have other keys, or that must be of this version).
    """
    is_done = done if done is not None else delegate.exists

    def settled(key: str) -> Optional[bool]:
        if is_done(key):
            return True
        if failures.exists(key):
            return False
        return None

    return settled


def open_book(
    state_dir: Optional[Path],
    settled: KeyState,
    info: Optional[dict[str, Any]] = None,
    planned_at: Optional[float] = None,
) -> Optional[ClaimBook]:
    """An open :class:`ClaimBook` for a run on ``state_dir``, or ``None``.

    ``None`` when the batch has no folder of its own (an in-memory
    delegate: no other run can see it) or ``STASHWORKS_CLAIMS=0``.
    ``planned_at`` is when the run began listing the stores (epoch seconds).
    """
    if state_dir is None or not claims_enabled():
        return None
    book = ClaimBook(state_dir, settled, info=info, planned_at=planned_at)
    try:
        book.open()
    except BaseException:
        book.close('crashed')
        raise
    return book
