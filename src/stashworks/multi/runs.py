"""The registry of runs working on one output folder.

Every run of a batch on an output folder keeps a small JSON record in
``<out>/.stashworks/runs/<run id>.json``: who it is (host, pid, the pid's
start time), how it runs (workers, executor), how far it got (counts,
items/s) and which claims it holds (see :mod:`stashworks.multi.claims`).
A daemon thread rewrites the record every ``heartbeat`` seconds; its
modification time is the run's heartbeat.  The record is the one file
per run that other runs read to tell whether its claims still hold, and
what ``stashworks status`` reads to list every run.

One record per run, rewritten whatever number of claims the run holds,
is cheaper than touching every claim file: the cost of the heartbeat does
not grow with the work, and a claim needs no second write to stay alive.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import psutil

from .._atomic import atomic_write, is_temp_name
from .layout import STATE_DIR, utc_now

__all__ = [
    'DEFAULT_EXPIRY',
    'DEFAULT_HEARTBEAT',
    'RunRecord',
    'RunView',
    'claim_timings',
    'pid_alive',
    'read_runs',
    'runs_dir',
    'runs_summary',
]

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a run (``STASHWORKS_HEARTBEAT``).
DEFAULT_HEARTBEAT = 5.0
#: Seconds after its last heartbeat when a run's claims stop holding
#: (``STASHWORKS_CLAIM_EXPIRY``), unless its pid still runs on this host.
DEFAULT_EXPIRY = 60.0

# A process that started this much after the run says it did is not the
# run: its pid was reused.  The slack covers the rounding of start times.
_PID_REUSE_SLACK = 1.0


def claim_timings(heartbeat: Optional[float] = None, expiry: Optional[float] = None) -> tuple[float, float]:
    """The heartbeat interval and claim expiry to use, in seconds.

    Explicit values win; then the environment variables
    ``STASHWORKS_HEARTBEAT`` and ``STASHWORKS_CLAIM_EXPIRY``; then the
    defaults.  The expiry is at least three heartbeats, so one late
    heartbeat never expires a live run.

    Raises:
        ValueError: a value (or an environment variable) that is not a
            positive number.
    """

    def pick(value: Optional[float], env: str, default: float) -> float:
        if value is None:
            text = os.environ.get(env, '').strip()
            if not text:
                return default
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f'{env} must be a number of seconds, not {text!r}') from None
        if not value > 0:
            raise ValueError(f'{env} must be > 0 seconds, not {value!r}')
        return float(value)

    hb = pick(heartbeat, 'STASHWORKS_HEARTBEAT', DEFAULT_HEARTBEAT)
    exp = pick(expiry, 'STASHWORKS_CLAIM_EXPIRY', DEFAULT_EXPIRY)
    return hb, max(exp, 3 * hb)


def runs_dir(state_dir: Union[str, 'os.PathLike[str]']) -> Path:
    """The folder of run records inside a batch's ``.stashworks`` folder."""
    return Path(state_dir) / 'runs'


def _process_started(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def pid_alive(pid: Any, started: Any) -> bool:
    """Whether process ``pid`` of this host runs and is the one started at ``started``.

    A zombie counts as dead, and so does a process that started after
    ``started`` (epoch seconds): its pid was reused.
    """
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if isinstance(started, (int, float)) and started > 0:
            return proc.create_time() <= started + _PID_REUSE_SLACK
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        # AccessDenied: the process exists but belongs to someone else.
        return True


@dataclass
class RunView:
    """A run as another process sees it.

    Attributes:
        data: the run's record, as written.
        age: seconds since its last heartbeat (the record's mtime), by this
            host's clock.
        state: ``'live'`` (heartbeat fresh), ``'expiring'`` (heartbeat late
            or its pid gone, claims still held until ``expires_in`` runs
            out), ``'dead'`` (claims expired) or ``'ended'`` (it finished or
            was stopped: its claims hold no more).
        expires_in: seconds until its claims expire (0 once they have).
    """

    data: dict[str, Any]
    age: float
    state: str
    expires_in: float
    open_claims: frozenset[int] = frozenset()

    @property
    def run_id(self) -> str:
        """The run's id."""
        return str(self.data.get('run', ''))

    @property
    def holds_claims(self) -> bool:
        """Whether the claims of this run still hold."""
        return self.state in ('live', 'expiring')

    @property
    def claims(self) -> list[int]:
        """The numbers of the claims the run holds (as of its last heartbeat)."""
        return sorted(self.open_claims)

    def released(self, seq: int) -> bool:
        """Whether the run said it released its claim ``seq``."""
        last = self.data.get('claims_last', -1)
        return isinstance(last, int) and seq <= last and seq not in self.open_claims

    def __post_init__(self) -> None:
        claims = self.data.get('claims', ())
        self.open_claims = (
            frozenset(s for s in claims if isinstance(s, int)) if isinstance(claims, list) else frozenset()
        )


def judge(data: dict[str, Any], age: float, expiry: float) -> RunView:
    """Tell whether a run's claims hold, from its record and the record's age.

    A run that says it ended holds nothing.  Otherwise its claims hold
    while its heartbeat is younger than ``expiry``; on this host they also
    hold while its pid runs (a busy machine may delay a heartbeat, never
    kill a run), and a run whose pid is gone is shown as expiring.
    """
    if data.get('state', 'running') != 'running':
        return RunView(data, age, 'ended', 0.0)
    heartbeat = data.get('heartbeat_interval', DEFAULT_HEARTBEAT)
    late = age > 2 * (heartbeat if isinstance(heartbeat, (int, float)) else DEFAULT_HEARTBEAT) + 1
    left = max(0.0, expiry - age)
    if data.get('host') == socket.gethostname():
        alive = pid_alive(data.get('pid'), data.get('pid_started'))
        if alive:
            return RunView(data, age, 'live', left)
        return RunView(data, age, 'expiring' if left > 0 else 'dead', left)
    if left <= 0:
        return RunView(data, age, 'dead', 0.0)
    return RunView(data, age, 'expiring' if late else 'live', left)


def read_run(path: Path, expiry: float, now: Optional[float] = None) -> Optional[RunView]:
    """Read one run record; ``None`` if it is gone or unreadable.

    The file is opened and then ``fstat``-ed: on NFS, opening revalidates
    the attributes, so the mtime is the server's, not a cached one.
    """
    try:
        with open(path, 'rb') as fh:
            mtime = os.fstat(fh.fileno()).st_mtime
            raw = fh.read()
    except OSError:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        logger.warning('unreadable run record %s ignored', path)
        return None
    if not isinstance(data, dict):
        return None
    age = max(0.0, (time.time() if now is None else now) - mtime)
    return judge(data, age, expiry)


def read_runs(state_dir: Union[str, 'os.PathLike[str]'], expiry: Optional[float] = None) -> list[RunView]:
    """Every run recorded in a batch's ``.stashworks`` folder, oldest first.

    Args:
        state_dir: the ``.stashworks`` folder, or the output folder holding it.
        expiry: seconds after which a silent run's claims expire (default:
            what each run wrote in its record, else :func:`claim_timings`).
    """
    state = Path(state_dir)
    if state.name != STATE_DIR and (state / STATE_DIR).is_dir():
        state = state / STATE_DIR
    folder = runs_dir(state)
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith('.json') and not is_temp_name(e.name))
    except FileNotFoundError:
        return []
    views = []
    default = claim_timings()[1] if expiry is None else expiry
    for name in names:
        view = read_run(folder / name, default)
        if view is None:
            continue
        if expiry is None:
            own = view.data.get('expiry')
            if isinstance(own, (int, float)) and own > 0 and own != default:
                view = judge(view.data, view.age, float(own))
        views.append(view)
    views.sort(key=lambda v: str(v.data.get('started', '')))
    return views


def runs_summary(
    directory: Union[str, 'os.PathLike[str]'], done: Optional[int] = None, failed: Optional[int] = None
) -> dict[str, Any]:
    """Every recorded run of a batch, and the combined progress of the live ones.

    Args:
        directory: the output folder (or its ``.stashworks`` folder).
        done: items stored now (counted by the caller, on disk).
        failed: failure records now.

    Returns:
        ``{'runs': [...], 'combined': {...}}``, JSON-ready.  Each run has
        ``run``, ``host``, ``pid``, ``state`` (``live``, ``expiring``,
        ``dead`` or ``ended``), ``workers``, ``executor``, ``rate``,
        ``computed``, ``claims`` (how many it holds), ``claimed_keys``,
        ``heartbeat_age`` and ``expires_in`` (seconds until its claims are
        taken over).  ``combined`` has ``live_runs`` (runs whose claims
        hold), ``beating`` (those of them with a fresh heartbeat), ``total``,
        ``rate`` (the beating runs' items/s, summed) and ``eta_seconds``.
    """
    views = read_runs(directory)
    runs = []
    for view in views:
        d = view.data
        runs.append(
            {
                'run': view.run_id,
                'host': d.get('host'),
                'pid': d.get('pid'),
                'state': view.state,
                'workers': d.get('workers'),
                'executor': d.get('executor'),
                'started': d.get('started'),
                'rate': d.get('rate'),
                'computed': d.get('computed'),
                'claims': len(view.open_claims) if view.holds_claims else 0,
                'claimed_keys': d.get('claimed_keys', 0) if view.holds_claims else 0,
                'heartbeat_age': round(view.age, 1),
                'expires_in': round(view.expires_in, 1) if view.holds_claims else 0.0,
            }
        )
    live = [v for v in views if v.holds_claims]
    totals = [t for t in (v.data.get('total') for v in (live or views)) if isinstance(t, int)]
    total = max(totals) if totals else None
    rate = sum(float(v.data.get('rate') or 0.0) for v in live if v.state == 'live')
    eta = None
    if live and rate > 0 and total is not None and done is not None:
        eta = round(max(0, total - done - (failed or 0)) / rate, 1)
    combined = {
        'live_runs': len(live),
        'beating': sum(1 for v in live if v.state == 'live'),
        'total': total,
        'rate': round(rate, 3),
        'eta_seconds': eta,
    }
    return {'runs': runs, 'combined': combined}


def new_run_id() -> str:
    """A run id, unique across hosts: the host, the pid and a random part."""
    host = ''.join(c if c.isalnum() or c in '-_' else '_' for c in socket.gethostname())[:40]
    return f'{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}'


class RunRecord:
    """This run's record in the registry, kept fresh by a heartbeat thread.

    Args:
        state_dir: the batch's ``.stashworks`` folder.
        heartbeat: seconds between two rewrites of the record.
        expiry: seconds after the last heartbeat when other runs may take
            this run's claims over (written into the record, so ``status``
            shows the same deadline).
        info: fields to write as they are (``workers``, ``executor``...).
        claims: returns ``(open claim numbers, highest claim number made)``
            each time the record is written.
    """

    def __init__(
        self,
        state_dir: Path,
        heartbeat: float,
        expiry: float,
        info: Optional[dict[str, Any]] = None,
        claims: Optional[Callable[[], tuple[list[int], int]]] = None,
    ) -> None:
        self.run_id = new_run_id()
        self.path = runs_dir(state_dir) / f'{self.run_id}.json'
        self.heartbeat = heartbeat
        self.expiry = expiry
        self.claims = claims
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started_mono = time.monotonic()
        self.data: dict[str, Any] = {
            'run': self.run_id,
            'host': socket.gethostname(),
            'pid': os.getpid(),
            'pid_started': _process_started(os.getpid()),
            'state': 'running',
            'started': utc_now(),
            'updated': utc_now(),
            'heartbeat_interval': heartbeat,
            'expiry': expiry,
            'workers': 0,
            'executor': '',
            'total': 0,
            'done': 0,
            'failed': 0,
            'computed': 0,
            'rate': 0.0,
            'claims': [],
            'claims_last': -1,
            'claimed_keys': 0,
        }
        if info:
            self.data.update(info)

    def start(self) -> None:
        """Write the record now (before any claim) and start the heartbeat."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write(strict=True)
        self._thread = threading.Thread(target=self._beat, name=f'stashworks-heartbeat-{self.run_id}', daemon=True)
        self._thread.start()

    def update(self, **fields: Any) -> None:
        """Change fields; they reach the file with the next heartbeat."""
        with self._lock:
            self.data.update(fields)
            computed = self.data.get('computed', 0)
            elapsed = time.monotonic() - self._started_mono
            if isinstance(computed, (int, float)) and elapsed > 0:
                self.data['rate'] = round(computed / elapsed, 3)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.write()

    def write(self, strict: bool = False) -> None:
        """Rewrite the record (its new mtime is a heartbeat)."""
        with self._lock:
            if self.claims is not None:
                open_claims, last = self.claims()
                self.data['claims'] = open_claims
                self.data['claims_last'] = last
            self.data['updated'] = utc_now()
            payload = json.dumps(self.data, separators=(',', ':')).encode('utf-8')

        def fill(fh: IO[bytes]) -> None:
            fh.write(payload)

        try:
            atomic_write(self.path, fill)
        except OSError as exc:
            if strict:
                raise
            # A missed heartbeat is survivable; the next one may succeed.
            logger.warning('cannot write run record %s: %s', self.path, exc)

    def close(self, state: str) -> None:
        """Stop the heartbeat and write the final state (``finished``...).

        After this, other runs treat every claim of this run as void.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self.heartbeat))
        self.update(state=state)
        self.write()
