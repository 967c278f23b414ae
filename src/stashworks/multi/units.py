"""Units of work: their identity, and the record of the finished ones.

A batch's *unit* is whatever ``_create_data()`` (or ``keys=``) yields: a
``str``, an ``int``, a path, a tuple, a dict, any picklable value.  A unit
yields any number of *items* (``(key, value)`` pairs).  Two things about
units live here:

* :func:`unit_id`: a unit's stable identity, a ``str``.  For ``str``,
  ``int`` and path units it is ``str(unit)`` (so ``1`` and ``'1'`` are the
  same unit); for anything else a digest of the unit's canonical form
  (``'<type>:<32 hex digits>'``), the same in every process and run.
* :class:`UnitLog`: a batch's append-only record of finished units, in
  ``<state dir>/.stashworks/units/``.  Each record says which unit, which
  version of the code computed it, and which item keys it stored.

The log's files
---------------
Each writing process appends to files of its own, one per version it
records, ``<host>-<pid>-<random>-<version tag>.log``, so writers never
share a file: appends from
several hosts to one file on NFS can overwrite each other (an NFS client
computes the end of the file from its own cached size), while appends to
a file nobody else writes are safe on any file system.  A reader lists
the folder and reads every file (beyond the index, below); one that only
needs to know whether another version ever recorded a unit reads the file
names alone.  Files whose every record was superseded by a newer one are
removed by :meth:`UnitLog.prune`.

Records are written in blocks, each with one ``os.write`` on a descriptor
opened with ``O_APPEND``: one JSON array per record and line
(``[unit, version, item keys or null, time]``), then a trailer line
``#<length of the block> <CRC-32 of the block>``.  A process killed in
the middle of a write leaves at most one torn block at the end of its own
file; the reader skips any block whose trailer is missing or does not
match (and a writer that saw a write fail starts its next block on a new
line).  The data is in the operating system's hands once ``os.write``
returns, so killing the process loses nothing already written; a crash of
the machine itself can lose the last records unless ``durable=True``
(``fsync`` after every write).  A lost record only means the unit is
computed again.

When a unit is recorded more than once (computed again after its code
changed, or twice on a cluster), the record with the latest time wins.

The index
---------
Decoding every record of a large log costs more than the rest of a
resume's planning, so the folder also holds :data:`INDEX_FILE`: the
latest record of each unit, grouped by version (units, their item keys
and times as columns, one ``json.loads`` for them all), and for each log
file how many bytes of it the index covers (up to the end of its last
whole block), with the trailer of a block.  A reader takes the index,
then only what each file holds beyond it, and merges that in (the latest
time wins, as ever).  The files stay the truth: an index that is torn or
altered, or that covers a file now gone or shorter, is ignored and every
record read again.  A read that found many records beyond the index
(:data:`COMPACT_ROWS`, :data:`COMPACT_FILES`) writes a new one, atomically
(a temp file renamed), so a kill leaves the old index or the new; so does
:meth:`UnitLog.compact`.  Threads of one process (a Dask worker's) share a
log object: its buffer and files are used under a lock.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import logging
import os
import pickle
import socket
import stat
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, islice, repeat
from operator import is_, is_not, itemgetter
from pathlib import Path, PurePath
from typing import IO, Any, Callable, Collection, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

from ..errors import BatchError

__all__ = [
    'UNITS_DIR',
    'INDEX_FILE',
    'Census',
    'LatestRows',
    'MemoryUnitLog',
    'UnitLog',
    'UnitPlan',
    'UnitRecord',
    'StaleItemsError',
    'ON_STALE',
    'Provenance',
    'read_census',
    'write_census',
    'code_version',
    'stale_error',
    'check_on_stale',
    'keep_stale',
    'plan_units',
    'unit_id',
    'version_tag',
]

logger = logging.getLogger(__name__)

#: The folder, inside the batch's ``.stashworks`` folder, of the unit log.
UNITS_DIR = 'units'

_SUFFIX = '.log'

#: The index of the log's finished units, in the log's folder.
INDEX_FILE = 'index'

#: The layout of the index file.
INDEX_FORMAT = 1

#: A read that found at least this many records beyond the index writes
#: a new one (as does one that read this many files beyond it).
COMPACT_ROWS = 1000
COMPACT_FILES = 16


def unit_id(unit: Any) -> str:
    """The stable identity of a unit of work.

    Args:
        unit: any value ``_create_data()`` may yield.

    Returns:
        ``str(unit)`` for a ``str``, ``int`` or path; otherwise
        ``'<type name>:<digest>'``, a digest of the unit's canonical form:
        containers element by element, sets and dict items sorted, objects
        by their type's qualified name and attributes, anything else by its
        pickle.  Equal units get equal ids, in any process, whatever
        ``PYTHONHASHSEED``.

    Raises:
        TypeError: the unit cannot be represented (an object that neither
            has attributes nor pickles).
    """
    if isinstance(unit, str):
        return unit
    if isinstance(unit, int) and not isinstance(unit, (bool, enum.Enum)):
        return str(unit)
    if isinstance(unit, PurePath):
        return str(unit)
    try:
        canonical = repr(_canonical(unit, set()))
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
        raise TypeError(f'cannot give the unit {unit!r} an identity: {exc}') from exc
    digest = hashlib.blake2b(canonical.encode('utf-8'), digest_size=16).hexdigest()
    return f'{type(unit).__name__}:{digest}'


def _canonical(v: Any, active: set[int]) -> Any:
    """A structure of tuples and ``repr``-stable scalars standing for ``v``.

    Not pickle itself: pickle writes a value shared twice in a structure
    differently from two equal copies, and a set in hash order.
    """
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
        return (type(v).__name__, v)
    key = id(v)
    if key in active:
        raise TypeError(f'the unit refers to itself ({type(v).__name__})')
    active.add(key)
    try:
        return _canonical_container(v, active)
    finally:
        active.discard(key)


def _canonical_container(v: Any, active: set[int]) -> Any:
    cls = type(v)
    name = f'{cls.__module__}.{cls.__qualname__}'
    if isinstance(v, enum.Enum):
        return ('enum', name, v.name)
    if isinstance(v, PurePath):
        return ('path', name, str(v))
    if isinstance(v, (tuple, list)):
        return ('seq', name, tuple(_canonical(x, active) for x in v))
    if isinstance(v, (set, frozenset)):
        return ('set', name, tuple(sorted((_canonical(x, active) for x in v), key=repr)))
    if isinstance(v, dict):
        items = ((_canonical(k, active), _canonical(x, active)) for k, x in v.items())
        return ('dict', name, tuple(sorted(items, key=repr)))
    state = getattr(v, '__dict__', None)
    if isinstance(state, dict):
        return ('object', name, _canonical(dict(state), active))
    return ('pickle', name, hashlib.sha256(pickle.dumps(v, protocol=4)).hexdigest())


class UnitRecord(NamedTuple):
    """That a unit finished: which version computed it, which items it stored."""

    #: the unit's id (:func:`unit_id`)
    unit: str
    #: the batch version (``version=`` or the code fingerprint) that
    #: computed the unit's items
    version: str
    #: the item keys the unit stored, in order (maybe none)
    keys: tuple[str, ...]
    #: when it was recorded (seconds since the epoch)
    time: float = 0.0
    #: set when the record comes from ``on_stale='keep'``, not from a
    #: computation: the version that computed the items that were kept
    kept_from: Optional[str] = None


# The C string encoder of the json module, called directly: a record is
# four fields, and the general encoder costs more than the write.
_quote: Callable[[str], str] = getattr(json.encoder, 'c_encode_basestring', None) or json.encoder.py_encode_basestring


#: A buffered record: ``(unit, item keys or None for (unit,), kept_from,
#: time or None)``, or a list of units that each stored one item under
#: their own id (the records of a slice of one-item units, kept as one list).
_Entry = Union[tuple[str, Optional[Sequence[str]], Optional[str], Optional[float]], list[str]]


def encode_lines(version: str, entries: Sequence[_Entry], now: float) -> list[str]:
    """The JSON lines of buffered records of one version.

    A record without its own time gets ``now`` (the time of the write that
    makes it durable); the version is encoded once for them all.
    """
    version_text = _quote(version)
    now_text = repr(round(now, 6))
    # The common one-item-per-unit case stores its key once: null stands
    # for (unit,).
    one_key_tail = f',{version_text},null,{now_text}]'
    lines: list[str] = []
    append = lines.append
    for entry in entries:
        if isinstance(entry, list):
            # A run of one-item units: their lines joined in C.
            if entry:
                append('[' + (one_key_tail + '\n[').join(map(_quote, entry)) + one_key_tail)
            continue
        unit, keys, kept_from, when = entry
        if keys is None:
            keys = (unit,)
        if kept_from is None and when is None and len(keys) == 1 and keys[0] == unit:
            append('[' + _quote(unit) + one_key_tail)
            continue
        stored = 'null' if len(keys) == 1 and keys[0] == unit else '[' + ','.join(map(_quote, keys)) + ']'
        kept = '' if kept_from is None else ',' + _quote(kept_from)
        stamp = now_text if when is None else repr(round(when, 6))
        append(f'[{_quote(unit)},{version_text},{stored},{stamp}{kept}]')
    return lines


def encode_block(lines: Sequence[str]) -> bytes:
    """Record lines as one block, then a trailer ``#<length> <crc32>``.

    The trailer covers the block's bytes, so a reader tells a whole block
    from one torn by a kill in the middle of its write.
    """
    body = ('\n'.join(lines) + '\n').encode('utf-8', 'surrogatepass')
    return body + b'#%d %08x\n' % (len(body), zlib.crc32(body))


def parse_blocks(data: bytes) -> list[list[Any]]:
    """The rows of the intact blocks in a log file's bytes; torn or corrupt blocks are skipped."""
    return parse_blocks_to(data)[0]


def parse_blocks_to(data: bytes) -> tuple[list[list[Any]], int]:
    """:func:`parse_blocks`, and where the last intact block ends.

    Everything before that offset is settled: a reader that read it once
    needs to read only what lies after it (a torn or half-written block
    at the end lies after it, and is read again when it is whole).
    """
    good = []
    pos = 0
    settled = 0
    while True:
        mark = data.find(b'\n#', pos)
        if mark < 0:
            break
        end = data.find(b'\n', mark + 1)
        if end < 0:
            break  # a torn trailer: the block's write did not finish
        pos = end
        try:
            length_text, crc_text = data[mark + 2 : end].split(b' ')
            length, crc = int(length_text), int(crc_text, 16)
        except ValueError:
            continue
        start = mark + 1 - length
        if start < 0:
            continue
        body = data[start : mark + 1]
        if zlib.crc32(body) == crc:
            good.append(body[:-1].replace(b'\n', b','))
            settled = end + 1
    if not good:
        return [], settled
    # One json.loads for the whole file: much cheaper than one per line.
    try:
        rows = json.loads(b'[' + b','.join(good) + b']')
    except ValueError:
        rows = []
        for block in good:
            try:
                rows.extend(json.loads(b'[' + block + b']'))
            except ValueError:
                continue
    if rows and set(map(type, rows)) == {list} and min(map(len, rows)) >= 4:
        return rows, settled  # every row well formed (checked in C)
    return [r for r in rows if isinstance(r, list) and len(r) >= 4], settled


def to_record(row: Sequence[Any]) -> UnitRecord:
    """A :class:`UnitRecord` from a stored row."""
    unit, version, keys, when = row[0], row[1], row[2], row[3]
    kept = row[4] if len(row) > 4 else None
    return UnitRecord(unit, version, (unit,) if keys is None else tuple(keys), float(when), kept)


def latest_rows(rows: Iterable[Sequence[Any]], into: dict[str, Sequence[Any]]) -> None:
    """Keep the latest row of each unit in ``into`` (a later row wins a tie)."""
    if not into:
        rows = rows if isinstance(rows, list) else list(rows)
        into.update(zip(map(itemgetter(0), rows), rows, strict=True))
        if len(into) == len(rows):
            return  # one row per unit (the usual log): nothing to choose
        into.clear()
    get = into.get
    for row in rows:
        old = get(row[0])
        if old is None or row[3] >= old[3]:
            into[row[0]] = row


#: Stands for "no record" where ``None`` means "the unit's own key".
_ABSENT: Any = object()


def _entry(unit: str, keys: Optional[Sequence[str]]) -> Any:
    """The entry of :class:`LatestRows` for a stored row's keys field (``None`` is the unit's own key)."""
    if keys is None:
        return unit
    if len(keys) == 1:
        return keys[0]
    return list(keys)


class LatestRows(Mapping[str, Sequence[Any]]):
    """The latest record of each unit, grouped by version.

    A read-only mapping from unit id to the stored row (``[unit, version,
    keys or None, time, kept_from?]``), as :meth:`UnitLog.latest_rows`
    returns it.  Rows are built on demand: the planner reads the groups
    themselves (:meth:`units_of`), one ``dict`` per version from unit id
    to its item keys, which is what makes planning a set lookup per unit
    rather than a row decoded per unit.

    Each unit is in at most one group.  An entry is a ``str`` (the unit
    stored one item, under that key) or a list of keys (none, or several).
    """

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, Any]] = {}
        #: groups of the index not made into dicts yet: (units, keys);
        #: planning a resume needs only a set of the units and the keys
        self._lazy: dict[str, tuple[list[str], list[Any]]] = {}
        #: times of rows merged one by one (they override the index's)
        self._times: dict[str, float] = {}
        #: the index's times, decoded when first asked: (units, packed times)
        self._packed: list[tuple[list[str], str]] = []
        #: the latest time the index holds (a newer row wins without a look-up)
        self._packed_max = float('-inf')
        self._kept: dict[str, str] = {}
        #: the versions some of whose entries are lists (not one key each)
        self._multi: set[str] = set()

    # -- building --------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> 'LatestRows':
        """The latest of ``rows`` (a later row wins a tie)."""
        latest: dict[str, Sequence[Any]] = {}
        latest_rows(rows, latest)
        made = cls()
        made._add_latest(latest)
        return made

    def _add_latest(self, latest: Mapping[str, Sequence[Any]]) -> None:
        # Only for units this object does not hold yet (a fresh one).  A
        # whole log is read this way after a kill: column by column, in C
        # where it can be, rather than row by row.
        if not latest:
            return
        uids = list(latest)
        rows = list(latest.values())
        self._times.update(zip(uids, map(itemgetter(3), rows), strict=True))
        if sum(map(len, rows)) != 4 * len(rows):  # some row has kept_from
            self._kept.update((u, r[4]) for u, r in zip(uids, rows, strict=True) if len(r) > 4 and r[4] is not None)
        versions = set(map(itemgetter(1), rows))
        groups = self._all()
        for version in versions:
            if len(versions) == 1:
                units, keys = uids, list(map(itemgetter(2), rows))
            else:
                units = [u for u, r in zip(uids, rows, strict=True) if r[1] == version]
                keys = [r[2] for r in rows if r[1] == version]
            entries = [u if k is None else k[0] if len(k) == 1 else k for u, k in zip(units, keys, strict=True)]
            if set(map(type, entries)) - {str}:
                self._multi.add(version)
            group = groups.get(version)
            if group is None:
                group = groups[version] = {}
            group.update(zip(units, entries, strict=True))

    def _add_group(self, version: str, units: list[str], keys: list[Any], packed: str, top: float, multi: bool) -> None:
        # One version's part of the index (a fresh object: no unit is held twice).
        self._lazy[version] = (units, keys)
        if multi:
            self._multi.add(version)
        self._packed.append((units, packed))
        self._packed_max = max(self._packed_max, top)

    def merge(self, rows: Iterable[Sequence[Any]]) -> None:
        """Take ``rows`` (read after what this object holds) in: the latest row of each unit wins.

        On a tie in time the merged row wins: it was read later.
        """
        latest: dict[str, Sequence[Any]] = {}
        latest_rows(rows, latest)
        if not latest:
            return
        if not self._all():
            self._add_latest(latest)
            return
        groups, times, kept = self._all(), self._times, self._kept
        for uid, row in latest.items():
            when = row[3]
            held = self._group_of(uid)
            if held is not None:
                if when < self._packed_max or uid in times:
                    old = self.time_of(uid)
                    if old is not None and when < old:
                        continue
                if held != row[1]:
                    del groups[held][uid]
            group = groups.get(row[1])
            if group is None:
                group = groups[row[1]] = {}
            entry = group[uid] = _entry(uid, row[2])
            if entry.__class__ is not str:
                self._multi.add(row[1])
            times[uid] = when
            if len(row) > 4 and row[4] is not None:
                kept[uid] = row[4]
            else:
                kept.pop(uid, None)
        for version in [v for v, g in groups.items() if not g]:
            del groups[version]

    # -- reading ---------------------------------------------------------

    def _all(self) -> dict[str, dict[str, Any]]:
        """Every group as a dict (the index's are made on first use)."""
        if self._lazy:
            for version, (units, keys) in self._lazy.items():
                self._groups[version] = dict(zip(units, keys, strict=True))
            self._lazy.clear()
        return self._groups

    def _group_of(self, uid: str) -> Optional[str]:
        for version, group in self._all().items():
            if uid in group:
                return version
        return None

    def versions(self) -> set[str]:
        """The versions that computed some unit's latest record."""
        return {v for v, g in self._groups.items() if g} | {v for v, (u, _) in self._lazy.items() if u}

    def recorded(self, version: str) -> Collection[str]:
        """The units whose latest record is ``version``, each once (the index's column as it is, or the group)."""
        lazy = self._lazy.get(version)
        if lazy is not None:
            return lazy[0]
        return self._groups.get(version, {}).keys()

    def item_keys(self, version: str) -> list[Any]:
        """The entries (a key, or a list of keys) of the units whose latest record is ``version``."""
        lazy = self._lazy.get(version)
        if lazy is not None:
            return lazy[1]
        return list(self._groups.get(version, {}).values())

    def units_of(self, version: str) -> Mapping[str, Any]:
        """Unit id to item keys (a ``str`` for one, else a list) of the units whose latest record is ``version``."""
        return self._all().get(version, {})

    def one_key_each(self, version: str) -> bool:
        """Whether every entry of ``version`` is one key (a ``str``)."""
        return version not in self._multi

    def kept(self) -> Mapping[str, str]:
        """Unit id to ``kept_from`` of the latest records that kept another version's items."""
        return self._kept

    def time_of(self, uid: str) -> Optional[float]:
        """The time of the latest record of ``uid``."""
        when = self._times.get(uid)
        if when is not None:
            return when
        if self._packed:
            self._unpack()
            return self._times.get(uid)
        return None

    def _unpack(self) -> None:
        # The index's times stay packed until a row is asked for: planning
        # never needs them.
        from array import array

        packed, self._packed = self._packed, []
        times = self._times
        for units, text in packed:
            values = array('d')
            values.frombytes(base64.b64decode(text))
            if sys.byteorder == 'big':
                values.byteswap()  # stored little-endian
            for uid, when in zip(units, values, strict=True):
                times.setdefault(uid, when)  # a merged row's time wins

    def get(self, uid: str, default: Any = None) -> Any:
        for version, group in self._all().items():
            entry = group.get(uid, _ABSENT)
            if entry is not _ABSENT:
                row = [uid, version, [entry] if entry.__class__ is str else entry, self.time_of(uid)]
                from_version = self._kept.get(uid)
                if from_version is not None:
                    row.append(from_version)
                return row
        return default

    def __getitem__(self, uid: str) -> Sequence[Any]:
        row = self.get(uid, _ABSENT)
        if row is _ABSENT:
            raise KeyError(uid)
        return row

    def __contains__(self, uid: object) -> bool:
        return any(uid in g for g in self._all().values())

    def __iter__(self) -> Iterator[str]:
        for group in list(self._all().values()):
            yield from group

    def __len__(self) -> int:
        return sum(map(len, self._all().values()))

    def __bool__(self) -> bool:
        # Without making the index's groups into dicts.
        return any(self._groups.values()) or any(units for units, _ in self._lazy.values())

    def __repr__(self) -> str:
        sizes = ', '.join(f'{v!r}: {len(g)}' for v, g in self._all().items())
        return f'{type(self).__name__}({{{sizes}}})'

    # -- the index file --------------------------------------------------

    def encode(self, covers: Mapping[str, int]) -> bytes:
        """This object as an index file covering ``covers`` (log file name to bytes read)."""
        from array import array

        if self._packed:
            self._unpack()
        time_of = self._times.get
        versions: dict[str, Any] = {}
        for version, group in self._all().items():
            units = list(group)
            # One key is a str: a list of one decodes much slower.
            keys = list(group.values())
            times = array('d', map(time_of, units, repeat(0.0)))
            if sys.byteorder == 'big':
                times.byteswap()
            kept = {uid: source for uid, source in self._kept.items() if uid in group}
            versions[version] = {
                'units': units,
                'keys': keys,
                'times': base64.b64encode(times.tobytes()).decode('ascii'),
                'top': max(times) if units else 0.0,
                'kept': kept,
                'multi': version in self._multi,
            }
        body = (
            json.dumps(
                {'format': INDEX_FORMAT, 'covers': dict(covers), 'versions': versions},
                ensure_ascii=False,
                separators=(',', ':'),
            ).encode('utf-8', 'surrogatepass')
            + b'\n'
        )
        # The trailer of a log block: a torn or altered index is told apart.
        return body + b'#%d %08x\n' % (len(body), zlib.crc32(body))

    @classmethod
    def decode(cls, data: bytes) -> Optional[tuple['LatestRows', dict[str, int]]]:
        """The rows and what they cover from an index file's bytes; ``None`` if it is not a whole, valid index."""
        if not data.endswith(b'\n'):
            return None
        mark = data.rfind(b'\n#', 0, len(data) - 1)
        if mark < 0:
            return None
        try:
            length_text, crc_text = data[mark + 2 : -1].split(b' ')
            length, crc = int(length_text), int(crc_text, 16)
        except ValueError:
            return None
        body = data[: mark + 1]
        if length != len(body) or zlib.crc32(body) != crc:
            return None
        try:
            doc = json.loads(body)
            if doc.get('format') != INDEX_FORMAT:
                return None
            covers = doc['covers']
            if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in covers.items()):
                return None
            made = cls()
            for version, part in doc['versions'].items():
                units, keys, packed = part['units'], part['keys'], part['times']
                # Times are decoded when first asked for; their length is checked now.
                if len(units) != len(keys) or len(packed) != (8 * len(units) + 2) // 3 * 4:
                    return None
                made._add_group(version, units, keys, packed, float(part['top']), bool(part['multi']))
                made._kept.update(part['kept'])
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return made, covers


def version_tag(version: str) -> str:
    """The short tag of a version in the log's file names (8 hex digits)."""
    return hashlib.blake2b(version.encode('utf-8', 'surrogatepass'), digest_size=4).hexdigest()


def _tag_of(file: Path) -> str:
    # <host>-<pid>-<random>-<tag>.log
    return file.name[: -len(_SUFFIX)].rsplit('-', 1)[-1]


class UnitLog:
    """The append-only record of a batch's finished units, on disk.

    Each writing process appends to files of its own, one per version it
    records (``<host>-<pid>-<random>-<version tag>.log``): a reader that
    only needs to know whether any unit was computed by another version
    lists the folder and reads nothing (:meth:`versions_on_disk`).

    The object is cheap to pickle (a path and options): each process that
    writes opens its files on its first write (again after a fork).

    Args:
        path: the log's folder (usually ``<dir>/.stashworks/units``).
        durable: ``fsync`` each write, so records survive a crash of the
            machine, not only of the process (slower: a disk flush per
            write).
    """

    def __init__(self, path: Union[str, 'os.PathLike[str]'], durable: bool = False) -> None:
        self.path = Path(path)
        self.durable = durable
        self._fds: dict[str, int] = {}
        self._pid = 0
        self._broken: set[str] = set()
        self._pending: dict[str, list[_Entry]] = {}
        # Threads of one process may share the log (a Dask worker runs
        # chunks of one job in several threads): buffering, flushing and
        # opening files are serialised.
        self._lock = threading.RLock()
        self._lock_pid = os.getpid()

    @classmethod
    def beside(cls, directory: Union[str, 'os.PathLike[str]'], durable: bool = False) -> 'UnitLog':
        """The unit log of a batch whose items live in ``directory``."""
        from .failures import STATE_DIR

        return cls(Path(directory) / STATE_DIR / UNITS_DIR, durable=durable)

    # -- writing -------------------------------------------------------------

    def add(
        self,
        unit: str,
        version: str,
        keys: Sequence[str],
        kept_from: Optional[str] = None,
        when: Optional[float] = None,
    ) -> None:
        """Buffer the record of a finished unit; :meth:`flush` writes it.

        Args:
            unit: the unit's id.
            version: the version that computed its items.
            keys: the keys of the items it stored, in order.
            kept_from: for ``on_stale='keep'``: the version that really
                computed the items.
            when: the record's time; by default the time of the flush
                that writes it (a record's time orders the records of one
                unit: the latest wins).
        """
        if isinstance(keys, str):
            raise TypeError(f'keys of unit {unit!r} must be a sequence of str, not a str')
        with self._guard():
            pending = self._pending.get(version)
            if pending is None:
                pending = self._pending[version] = []
            # Encoded at flush time, all at once: a record costs an append here.
            pending.append((unit, keys, kept_from, when))

    def add_entries(self, version: str, entries: Iterable[tuple[str, Optional[Sequence[str]]]]) -> None:
        """Buffer many records of one version: ``(unit, item keys)``, ``None`` for the unit's own key."""
        with self._guard():
            pending = self._pending.get(version)
            if pending is None:
                pending = self._pending[version] = []
            pending.extend((unit, keys, None, None) for unit, keys in entries)

    def add_units(self, version: str, units: Sequence[str]) -> None:
        """Buffer the records of finished units that each stored one item, under the unit's id."""
        if units:
            with self._guard():
                pending = self._pending.get(version)
                if pending is None:
                    pending = self._pending[version] = []
                pending.append(list(units))

    def _guard(self) -> 'threading.RLock':
        """The lock of this process's buffer and files."""
        pid = os.getpid()
        if self._lock_pid != pid:
            # A fork copies the lock as it was, maybe held by a thread the
            # child does not have.
            self._lock = threading.RLock()
            self._lock_pid = pid
        return self._lock

    def record(self, unit: str, version: str, keys: Sequence[str], kept_from: Optional[str] = None) -> None:
        """Write the record of a finished unit now."""
        self.add(unit, version, keys, kept_from)
        self.flush()

    @property
    def pending(self) -> int:
        """Records buffered and not written yet."""
        with self._guard():  # another thread may be adding a version's buffer
            return sum(len(e) if type(e) is list else 1 for entries in self._pending.values() for e in entries)

    def flush(self) -> None:
        """Write the buffered records, one ``os.write`` per version.

        Raises:
            OSError: the folder or file cannot be written (the records stay
                buffered for the next flush).
        """
        with self._guard():
            now = time.time()
            for version in list(self._pending):
                self._write(version, encode_block(encode_lines(version, self._pending[version], now)))
                del self._pending[version]

    def _write(self, version: str, data: bytes) -> None:
        fd = self._open(version)
        if version in self._broken:
            # The last write failed part way: end its torn block first.
            data = b'\n' + data
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write (a signal, a full disk)
                written += os.write(fd, data[written:])
            if self.durable:
                os.fsync(fd)
        except OSError:
            self._broken.add(version)
            raise
        self._broken.discard(version)

    def _open(self, version: str) -> int:
        pid = os.getpid()
        if self._pid != pid:
            # First write here, or a fork copied the parent's descriptors:
            # this process gets files of its own (the parent's stay its own).
            self._fds = {}
            self._broken = set()
            self._pid = pid
        fd = self._fds.get(version)
        if fd is not None:
            return fd
        self.path.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace(os.sep, '_').replace('-', '_') or 'host'
        name = f'{host}-{pid}-{uuid.uuid4().hex[:8]}-{version_tag(version)}{_SUFFIX}'
        fd = self._fds[version] = os.open(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return fd

    def close(self) -> None:
        """Write what is buffered and close this process's files."""
        with self._guard():
            try:
                self.flush()
            finally:
                if self._pid == os.getpid():
                    for fd in self._fds.values():
                        os.close(fd)
                self._fds = {}

    # -- reading -------------------------------------------------------------

    def files(self) -> list[Path]:
        """The log's files, every writer's."""
        try:
            with os.scandir(self.path) as it:
                return sorted(Path(e.path) for e in it if e.name.endswith(_SUFFIX) and e.is_file())
        except FileNotFoundError:
            return []

    def versions_on_disk(self) -> set[str]:
        """The tags (:func:`version_tag`) of the versions recorded, from the file names alone."""
        return {_tag_of(f) for f in self.files()}

    def only(self, version: str) -> bool:
        """Whether every record on disk is of ``version`` (no other version was ever recorded)."""
        return self.versions_on_disk() <= {version_tag(version)}

    def rows(self) -> Iterator[list[Any]]:
        """Every intact record as stored (``[unit, version, keys or None, time, kept_from?]``)."""
        for file in self.files():
            yield from self._file_rows(file)

    @staticmethod
    def _file_rows(file: Path) -> list[list[Any]]:
        try:
            return parse_blocks(file.read_bytes())
        except FileNotFoundError:
            return []  # removed by clear() or prune() meanwhile

    def records(self) -> Iterator[UnitRecord]:
        """Every intact record, file by file."""
        return map(to_record, self.rows())

    def latest_rows(self) -> LatestRows:
        """The latest record of each recorded unit, as stored (the fast form of :meth:`read`).

        Reads the index (:meth:`compact`) when it is valid for the files on
        disk, then only what the log's files hold beyond it; when that was
        a lot (:data:`COMPACT_ROWS` records or :data:`COMPACT_FILES` files),
        a new index is written for the next reader.
        """
        return self._load(None)

    def compact(self) -> int:
        """Write the index of the log: the latest record of each unit, and how far each file was read.

        A reader then reads the index in one go and only what was appended
        to the log since.  The log's files stay the truth: the index is
        used only while every file it covers is still there and at least
        as long as when it was written; otherwise the files are read again
        and a new index written.  Writing it is atomic (a temp file
        renamed), so a kill at any moment leaves the old index or the new
        one.  A folder that cannot be written gets no index (no error).

        Returns:
            How many units the index holds.
        """
        return len(self._load(True))

    def _load(self, compact: Optional[bool]) -> LatestRows:
        sizes = self._scan()
        loaded = self._read_index(sizes)
        rows, covers = loaded if loaded is not None else (LatestRows(), {})
        tail: list[list[Any]] = []
        files_read = 0
        for name in sorted(sizes):
            start = covers.get(name, 0)
            if sizes[name] <= start:
                covers.setdefault(name, start)
                continue
            try:
                with open(self.path / name, 'rb') as fh:
                    if start:
                        fh.seek(start)
                    data = fh.read()
            except FileNotFoundError:
                covers.pop(name, None)  # removed by clear() or prune() meanwhile
                continue
            got, settled = parse_blocks_to(data)
            tail.extend(got)
            covers[name] = start + settled
            files_read += 1
        rows.merge(tail)
        if compact or (compact is None and (len(tail) >= COMPACT_ROWS or files_read >= COMPACT_FILES)):
            self._write_index(rows, covers)
        return rows

    def _scan(self) -> dict[str, int]:
        """The size of each of the log's files, by name."""
        sizes: dict[str, int] = {}
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if not entry.name.endswith(_SUFFIX):
                        continue
                    try:
                        info = entry.stat()
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        sizes[entry.name] = info.st_size
        except FileNotFoundError:
            pass
        return sizes

    def _read_index(self, sizes: Mapping[str, int]) -> Optional[tuple[LatestRows, dict[str, int]]]:
        """The index, if it is whole and every file it covers is on disk at least as long."""
        try:
            data = (self.path / INDEX_FILE).read_bytes()
        except OSError:
            return None
        decoded = LatestRows.decode(data)
        if decoded is None:
            logger.debug('the index of the unit log %s is torn or invalid: reading every record', self.path)
            return None
        rows, covers = decoded
        for name, offset in covers.items():
            size = sizes.get(name)
            if size is None or size < offset:
                # A covered file was removed (clear, prune) or cut short:
                # the index may hold records no file holds any more.
                logger.debug('the index of the unit log %s is out of date: reading every record', self.path)
                return None
        return rows, covers

    def _write_index(self, rows: LatestRows, covers: Mapping[str, int]) -> bool:
        from .._atomic import atomic_write, is_temp_name

        data = rows.encode(covers)

        def write(fh: IO[bytes]) -> None:
            fh.write(data)

        try:
            atomic_write(self.path / INDEX_FILE, write, fsync=self.durable)
        except OSError as exc:
            # A cache: a folder this process cannot write still reads fine.
            logger.debug('cannot write the index of the unit log %s: %s', self.path, exc)
            return False
        # The temp file of an index writer killed mid-write is never renamed.
        cutoff = time.time() - 3600
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    if is_temp_name(entry.name) and entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
        except OSError:
            pass
        return True

    def read(self) -> dict[str, UnitRecord]:
        """The latest record of each recorded unit."""
        return {unit: to_record(row) for unit, row in self.latest_rows().items()}

    def prune(self, version: str) -> int:
        """Remove the files of other versions whose every record was superseded.

        Once the stale units were computed again (or kept), their old
        records only slow the next reader down.  A file of ``version`` is
        never removed.

        Returns:
            How many files were removed.
        """
        current = version_tag(version)
        by_file = {f: self._file_rows(f) for f in self.files()}
        newest: dict[str, Sequence[Any]] = {}
        for rows in by_file.values():
            latest_rows(rows, newest)
        removed = 0
        for file, rows in by_file.items():
            if _tag_of(file) == current or any(newest.get(row[0]) is row for row in rows):
                continue
            try:
                file.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        if removed:
            self.compact()  # the index covered the removed files: it no longer counts
        return removed

    def clear(self) -> None:
        """Remove every record (every writer's file, and the index)."""
        self.close()
        try:
            (self.path / INDEX_FILE).unlink()
        except FileNotFoundError:
            pass
        for file in self.files():
            try:
                file.unlink()
            except FileNotFoundError:
                pass

    def __getstate__(self) -> dict[str, Any]:
        # A descriptor means nothing in another process; nor do records
        # this process has not written yet.
        return {'path': self.path, 'durable': self.durable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state['path'], durable=state['durable'])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"


class MemoryUnitLog(UnitLog):
    """A unit log kept in this process's memory, for delegates with no folder.

    Only an executor that runs chunks in this process can use it.
    """

    def __init__(self) -> None:
        super().__init__(Path('.'))
        self._rows: list[list[Any]] = []

    def flush(self) -> None:
        with self._guard():
            now = time.time()
            for version, entries in self._pending.items():
                self._rows.extend(parse_blocks(encode_block(encode_lines(version, entries, now))))
            self._pending.clear()

    def close(self) -> None:
        self.flush()

    def files(self) -> list[Path]:
        return []

    def versions_on_disk(self) -> set[str]:
        return {version_tag(row[1]) for row in self._rows}

    def rows(self) -> Iterator[list[Any]]:
        return iter(list(self._rows))

    def latest_rows(self) -> LatestRows:
        return LatestRows.from_rows(self._rows)

    def compact(self) -> int:
        return len(self.latest_rows())

    def prune(self, version: str) -> int:
        newest: dict[str, Sequence[Any]] = {}
        latest_rows(self._rows, newest)
        before = len(self._rows)
        self._rows = [r for r in self._rows if newest.get(r[0]) is r]
        return before - len(self._rows)

    def clear(self) -> None:
        self._pending.clear()
        self._rows.clear()

    def __getstate__(self) -> dict[str, Any]:
        return {'rows': self._rows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self._rows = list(state['rows'])

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


# -- what a batch's units are: done, stale, failed or missing ----------------

#: The states of a unit, as :class:`Census` counts them.
DONE, STALE, FAILED, MISSING = 'done', 'stale', 'failed', 'missing'


@dataclass
class Census:
    """The batch's own units (and their items), by state.

    Only the units the batch yields count: other files in the same folder
    (another batch's items, items written by hand) do not.

    Attributes:
        version: the batch's version.
        units: the batch's distinct units.
        done_units: units finished by this version (or with no recorded
            version: items written by hand or by an older layout).
        done_items: their items.
        stale_units: units finished by another version.
        stale_items: their items.
        stale_versions: items per other version.
        failed_units: units with a recorded failure.
        missing_units: units neither done, stale nor failed (never run, or
            interrupted half way).
        kept_units: done units whose items were kept from another version
            (``on_stale='keep'``).
    """

    version: str = ''
    units: int = 0
    done_units: int = 0
    done_items: int = 0
    stale_units: int = 0
    stale_items: int = 0
    stale_versions: dict[str, int] = field(default_factory=dict)
    failed_units: int = 0
    missing_units: int = 0
    kept_units: int = 0

    @property
    def items(self) -> int:
        """Items the batch's finished units stored (done and stale)."""
        return self.done_items + self.stale_items

    def count(self, state: str, items: int = 0, version: Optional[str] = None, kept: bool = False) -> None:
        """Add one unit in ``state`` with ``items`` items."""
        self.units += 1
        if state == DONE:
            self.done_units += 1
            self.done_items += items
            self.kept_units += kept
        elif state == STALE:
            self.stale_units += 1
            self.stale_items += items
            if version is not None:
                self.stale_versions[version] = self.stale_versions.get(version, 0) + items
        elif state == FAILED:
            self.failed_units += 1
        else:
            self.missing_units += 1

    def as_dict(self) -> dict[str, Any]:
        """The counts as a JSON-ready ``dict`` (for the status file)."""
        return {
            'version': self.version,
            'units': self.units,
            'done_units': self.done_units,
            'done_items': self.done_items,
            'stale_units': self.stale_units,
            'stale_items': self.stale_items,
            'stale_versions': dict(sorted(self.stale_versions.items())),
            'failed_units': self.failed_units,
            'missing_units': self.missing_units,
            'kept_units': self.kept_units,
        }


#: The values of ``on_stale``.
ON_STALE = ('error', 'recompute', 'keep')


class StaleItemsError(BatchError):
    """The output holds items computed by another version of the batch's code.

    Raised by ``prime()`` before any work, unless ``on_stale`` says what
    to do.

    Attributes:
        version: this batch's version.
        units: how many of the batch's units were computed by other versions.
        items: how many items those units stored.
        versions: items per other version.
        where: the batch's folder (or a description of its store).
    """

    def __init__(self, version: str, units: int, items: int, versions: Mapping[str, int], where: str) -> None:
        self.version = version
        self.units = units
        self.items = items
        self.versions = dict(versions)
        self.where = where
        listed = ', '.join(f'{v} ({n} items)' for v, n in sorted(self.versions.items()))
        super().__init__(
            f'{items} items of {units} units in {where} were computed by another version of the code '
            f"({listed}), not by this batch's version {version}; nothing was computed. "
            f"Pass on_stale='recompute' to compute those units again (nothing else), or on_stale='keep' "
            f'to keep their items as they are (the choice is recorded); on the command line: '
            f'--on-stale recompute|keep'
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.version, self.units, self.items, self.versions, self.where))


def check_on_stale(value: str) -> str:
    """Validate an ``on_stale`` option.

    Raises:
        ValueError: not one of :data:`ON_STALE`.
    """
    if value not in ON_STALE:
        raise ValueError(f"on_stale must be 'error', 'recompute' or 'keep', not {value!r}")
    return value


#: ``membership(keys) -> [bool, ...]``: whether a store holds each key.
Membership = Callable[[Sequence[str]], Sequence[bool]]

#: Units asked about at once while planning.
BLOCK = 65_536


@dataclass
class UnitPlan:
    """What a batch of units has to do, before any decision about stale units.

    Attributes:
        missing: the units to compute, in work order, each once.
        payload: the unit objects of ``missing`` and ``stale`` by id, when
            units are not their ids (else ``None``).
        census: every unit of the batch by state.
        stale: the units finished by another version: id to ``(version,
            item keys)``.
    """

    missing: list[str]
    payload: Optional[dict[str, Any]]
    census: Census
    stale: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)


def plan_units(
    work: Iterable[tuple[str, Any]],
    stored: Membership,
    failed: Membership,
    version: str,
    rows: Optional[Mapping[str, Sequence[Any]]],
    one_key: bool,
    skip_failed: bool = True,
    block: int = BLOCK,
) -> UnitPlan:
    """Sort a batch's units into done, stale, failed and missing.

    Args:
        work: ``(unit id, unit)`` pairs, streamed once; ``unit`` is
            ``None`` when the id is the unit.
        stored: which keys the item store holds.
        failed: which units have a failure record.
        version: the batch's version.
        rows: the latest record of each unit (:meth:`UnitLog.latest_rows`);
            ``None`` when the log holds no other version and the store's
            keys are the truth (the one-key form's fast path).
        one_key: each unit stores one item under its own id; the store's
            keys are then the truth, and a unit with no record counts as
            current.  Otherwise a unit is done once its record exists and
            every item it lists is stored; a unit with no record counts as
            done only if the log is empty and the store holds its id (a
            folder written before units were recorded).
        skip_failed: units with a failure record are left out (else they
            are missing).
        block: units asked about at once.

    Raises:
        BatchError: a unit id is not a ``str``.
    """
    if one_key and not rows:
        return _plan_by_store(work, stored, failed, version, skip_failed, block)
    if not one_key and isinstance(rows, LatestRows) and rows.versions() == {version}:
        return _plan_current(work, stored, failed, rows, version, skip_failed, block)
    census = Census(version)
    missing: list[str] = []
    stale: dict[str, tuple[str, tuple[str, ...]]] = {}
    payload: Optional[dict[str, Any]] = None
    seen: set[str] = set()
    legacy = not rows  # no record at all: the store alone can tell
    records = rows or {}
    pairs = iter(work)
    counted = 0
    while True:
        batch = list(islice(pairs, block))
        if not batch:
            break
        units = dict(batch)  # drops repeats within the block, keeps the order
        _check_ids(list(units), counted)
        counted += len(batch)
        fresh = [u for u in units if u not in seen] if seen else list(units)
        seen.update(fresh)
        found = [records.get(u) for u in fresh]
        present: Sequence[bool] = stored(fresh) if one_key or legacy else ()
        answers: Iterator[bool] = iter(())
        if not one_key:
            # Every recorded item of the block, asked about in one call.
            flat: list[str] = []
            for uid, row in zip(fresh, found, strict=True):
                if row is not None:
                    flat.extend((uid,) if row[2] is None else row[2])
            answers = iter(stored(flat)) if flat else answers
        done_units = done_items = kept = 0
        undecided: list[str] = []
        for i, uid in enumerate(fresh):
            row = found[i]
            if one_key:
                if not present[i]:
                    undecided.append(uid)
                    continue
                keys: Sequence[str] = (uid,)
            elif row is not None:
                keys = (uid,) if row[2] is None else row[2]
                if not (next(answers) if len(keys) == 1 else all(list(islice(answers, len(keys))))):
                    # An item it stored is gone (deleted by hand, or lost
                    # with a crash of the machine): computed again.
                    undecided.append(uid)
                    continue
            elif legacy and present[i]:
                keys = (uid,)
            else:
                undecided.append(uid)
                continue
            if row is None or row[1] == version:
                done_units += 1
                done_items += len(keys)
                kept += row is not None and len(row) > 4
                continue
            stale[uid] = (row[1], tuple(keys))
            census.count(STALE, len(keys), row[1])
            unit = units[uid]
            if unit is not None:
                payload = {} if payload is None else payload
                payload[uid] = unit
        census.units += done_units
        census.done_units += done_units
        census.done_items += done_items
        census.kept_units += kept
        recorded = failed(undecided) if skip_failed and undecided else [False] * len(undecided)
        for uid, has_failed in zip(undecided, recorded, strict=True):
            if has_failed:
                census.count(FAILED)
                continue
            census.count(MISSING)
            missing.append(uid)
            unit = units[uid]
            if unit is not None:
                payload = {} if payload is None else payload
                payload[uid] = unit
    return UnitPlan(missing, payload, census, stale)


def _plan_current(
    work: Iterable[tuple[str, Any]],
    stored: Membership,
    failed: Membership,
    rows: LatestRows,
    version: str,
    skip_failed: bool,
    block: int,
) -> UnitPlan:
    # Units that yield their items, and every latest record is of this
    # version (no stale unit): a unit is done if it is recorded and every
    # item it recorded is stored.  No Python loop runs per unit in the
    # usual case: the recorded items are checked against the store's keys
    # as one column, then the recorded units are taken out of the work's.
    one_each = rows.one_key_each(version)
    kept_from = rows.kept()
    listing = _store_keys(stored)
    if listing is not None:
        # The store answers from one listing: that set, asked directly
        # (a column at once, and no second listing for a block).
        stored = partial(_held_by, listing.__contains__)
    pairs = iter(work)
    # Straight into a dict: the pairs are not kept, so the work's iterator
    # reuses one tuple (a list of a block's tuples would cost their
    # allocation and the garbage collector's passes).
    first = dict(islice(pairs, block))  # drops repeats within the block, keeps the order
    _check_ids(first, 0)
    recorded_keys = rows.item_keys(version) if one_each else ()
    # Whether every item of every current record is stored, asked once.
    # When the records are not many more than the block's units (a resume),
    # one question about every recorded item costs less than one per block.
    every_item = (
        bool(first)
        and bool(recorded_keys)
        and len(recorded_keys) <= 4 * len(first)
        and (listing.issuperset(recorded_keys) if listing is not None else all(stored(recorded_keys)))
    )
    if every_item:
        return _plan_recorded(first, pairs, failed, rows.recorded(version), version, kept_from, skip_failed, block)
    census = Census(version)
    missing: list[str] = []
    payload: Optional[dict[str, Any]] = None
    seen = _FirstTimes()
    counted = 0
    units = first
    while units:
        fresh = seen.of(units)
        # Each block asks about its own units' items.
        undecided, recorded, items, kept = _sort_block(fresh, rows.units_of(version), kept_from, stored, one_each)
        census.units += recorded
        census.done_units += recorded
        census.done_items += items
        census.kept_units += kept
        if skip_failed and undecided:
            failures = failed(undecided)
            if any(failures):
                census.units += sum(failures)
                census.failed_units += sum(failures)
                undecided = [u for u, has_failed in zip(undecided, failures, strict=True) if not has_failed]
        census.units += len(undecided)
        census.missing_units += len(undecided)
        missing.extend(undecided)
        if any(map(is_not, units.values(), repeat(None))):  # some unit is not its own id
            payload = {} if payload is None else payload
            payload.update((u, units[u]) for u in undecided if units[u] is not None)
        counted += block  # a block that is not full is the last
        units = dict(islice(pairs, block))
        _check_ids(units, counted)
    return UnitPlan(missing, payload, census)


def _plan_recorded(
    first: dict[str, Any],
    pairs: Iterator[tuple[str, Any]],
    failed: Membership,
    recorded: Iterable[str],
    version: str,
    kept_from: Mapping[str, str],
    skip_failed: bool,
    block: int,
) -> UnitPlan:
    """:func:`_plan_current` once every item of every record is known stored: a unit is done iff recorded.

    The work's units are gathered in one ``dict`` (each once, in order),
    then every recorded unit is taken out of it: what is left is not done,
    in work order.  No set of the recorded units is built, and no unit is
    looked up twice.  Unit objects are kept only for units not recorded.
    """
    census = Census(version)
    todo: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    has_objects = False
    current: Optional[set[str]] = None
    counted = block
    units = first
    while units:
        new = units
        if todo and not units.keys().isdisjoint(todo.keys()):
            new = {u: unit for u, unit in units.items() if u not in todo}  # a unit met in an earlier block
        if any(map(is_not, units.values(), repeat(None))):  # some unit is not its own id
            has_objects = True
            if current is None:
                current = set(recorded)
            objects.update((u, unit) for u, unit in new.items() if unit is not None and u not in current)
            new = dict.fromkeys(new)  # done units' objects are not kept
        if todo:
            todo.update(new)
        else:
            todo = new
        units = dict(islice(pairs, block))
        _check_ids(units, counted)
        counted += block  # a block that is not full is the last
    total = len(todo)
    kept = sum(map(kept_from.__contains__, todo)) if kept_from else 0
    # In C: pop every recorded unit (most are in the work, on a resume).
    deque(map(todo.pop, recorded, repeat(None)), maxlen=0)
    undecided = list(todo)
    done = total - len(undecided)
    census.units += done
    census.done_units += done
    census.done_items += done  # one item each
    census.kept_units += kept
    if skip_failed and undecided:
        failures = failed(undecided)
        if any(failures):
            census.units += sum(failures)
            census.failed_units += sum(failures)
            undecided = [u for u, has_failed in zip(undecided, failures, strict=True) if not has_failed]
    census.units += len(undecided)
    census.missing_units += len(undecided)
    payload = {u: objects[u] for u in undecided if u in objects} if has_objects else None
    return UnitPlan(undecided, payload, census)


def _store_keys(stored: Membership) -> Optional[set[str]]:
    """Every key of the store ``stored`` asks about, if it answers from one listing of it; else ``None``.

    The engine's membership test (:class:`~stashworks.multi.plan.Membership`,
    not imported here: that module imports this one) names its store as
    ``store`` and answers from one listing of it, unless the store has an
    ``exists_many`` of its own, which is then left to answer.  Any other
    test is left to answer too.
    """
    from ..stash import Stash

    store = getattr(stored, 'store', None)
    if not isinstance(store, Stash) or callable(getattr(store, 'exists_many', None)):
        return None
    return set(store.keys())


def _held_by(held: Callable[[str], bool], keys: Sequence[str]) -> list[bool]:
    return list(map(held, keys))


class _FirstTimes:
    """The units of each block of work not met in an earlier block, in order.

    The last few blocks are kept as they are (a block is a ``dict``) and
    only then merged into one set: a plan of a few blocks never copies its
    units, and one of many pays one insertion per unit, as a set alone
    would.
    """

    #: blocks kept before they are merged into the set
    KEEP = 4

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._blocks: list[Mapping[str, Any]] = []

    def of(self, units: Mapping[str, Any]) -> list[str]:
        """The units of a block (each once) not met in an earlier one."""
        seen, blocks = self._seen, self._blocks
        if len(blocks) >= self.KEEP:
            self._merge()
        keys = units.keys()
        repeats = (seen and not seen.isdisjoint(keys)) or any(not keys.isdisjoint(b.keys()) for b in blocks)
        blocks.append(units)
        if not repeats:
            return list(units)  # the usual case: no unit repeats
        self._merge(but_last=True)
        return [u for u in units if u not in seen]

    def _merge(self, but_last: bool = False) -> None:
        blocks = self._blocks
        kept = blocks.pop() if but_last else None
        for block in blocks:
            self._seen.update(block)
        blocks.clear()
        if kept is not None:
            blocks.append(kept)


def _sort_block(
    fresh: list[str], current: Mapping[str, Any], kept_from: Mapping[str, str], stored: Membership, one_each: bool
) -> tuple[list[str], int, int, int]:
    """Units of a block not done (in order), and the done ones' count, items and kept units."""
    found = list(map(current.get, fresh, repeat(_ABSENT)))
    if one_each:
        # One item per unit: the recorded units' keys are the entries.
        flat = [e for e in found if e is not _ABSENT]
        recorded = len(flat)
    else:
        flat = []
        append, extend = flat.append, flat.extend
        recorded = 0
        for entry in found:
            if entry is _ABSENT:
                continue
            recorded += 1
            if entry.__class__ is str:
                append(entry)
            else:
                extend(entry)
    items = len(flat)
    gone: set[str] = set()
    if flat:
        answers = stored(flat)
        if not all(answers):
            # An item a recorded unit stored is gone (deleted by hand,
            # or lost with a crash of the machine): computed again.
            lost = {key for key, here in zip(flat, answers, strict=True) if not here}
            for uid, entry in zip(fresh, found, strict=True):
                if entry is _ABSENT:
                    continue
                keys = (entry,) if entry.__class__ is str else entry
                if not lost.isdisjoint(keys):
                    gone.add(uid)
                    recorded -= 1
                    items -= len(keys)
    kept = 0
    if kept_from:
        done = (u for u, e in zip(fresh, found, strict=True) if e is not _ABSENT and u not in gone)
        kept = sum(map(kept_from.__contains__, done))
    if gone:
        undecided = [u for u, e in zip(fresh, found, strict=True) if e is _ABSENT or u in gone]
    else:
        undecided = list(compress(fresh, map(is_, found, repeat(_ABSENT))))
    return undecided, recorded, items, kept


def _check_ids(ids: Iterable[Any], counted: int) -> None:
    types = set(map(type, ids))  # C-speed check of every id
    if types <= {str} or all(issubclass(t, str) for t in types):  # a str subclass (numpy.str_) is a str
        return
    n, uid = next((n, u) for n, u in enumerate(ids, counted) if not isinstance(u, str))
    raise BatchError(f'the id of work unit #{n} is not a str but {type(uid).__name__}: {uid!r}')


def _plan_by_store(
    work: Iterable[tuple[str, Any]],
    stored: Membership,
    failed: Membership,
    version: str,
    skip_failed: bool,
    block: int,
) -> UnitPlan:
    # One-key units and a log with no other version: the store's keys are
    # all there is to know, so this is a set difference, block by block,
    # with no work per unit beyond a lookup.
    census = Census(version)
    missing: list[str] = []
    payload: Optional[dict[str, Any]] = None
    seen: set[str] = set()
    pairs = iter(work)
    counted = 0
    while True:
        batch = list(islice(pairs, block))
        if not batch:
            break
        units = dict(batch)  # drops repeats within the block, keeps the order
        _check_ids(list(units), counted)
        counted += len(batch)
        fresh = [u for u in units if u not in seen] if seen else list(units)
        seen.update(fresh)
        absent = [u for u, here in zip(fresh, stored(fresh), strict=True) if not here]
        census.units += len(fresh)
        census.done_units += len(fresh) - len(absent)
        census.done_items += len(fresh) - len(absent)
        if skip_failed and absent:
            recorded = failed(absent)
            if any(recorded):
                census.failed_units += sum(1 for r in recorded if r)
                absent = [u for u, r in zip(absent, recorded, strict=True) if not r]
        census.missing_units += len(absent)
        missing.extend(absent)
        values = list(units.values())
        if values.count(None) != len(values):  # some unit is not its own id
            payload = {} if payload is None else payload
            payload.update((u, units[u]) for u in absent if units[u] is not None)
    return UnitPlan(missing, payload, census)


def keep_stale(log: UnitLog, plan: UnitPlan, version: str) -> int:
    """Record that the stale units' items are kept as they are (``on_stale='keep'``).

    Each stale unit gets a record of ``version`` that names the version
    that really computed its items (``kept_from``), so the choice is on
    file and the next run sees those units as current.

    Returns:
        How many units were kept.
    """
    for uid, (old, keys) in plan.stale.items():
        log.add(uid, version, keys, kept_from=old)
    log.flush()
    kept = len(plan.stale)
    census = plan.census
    census.done_units += kept
    census.done_items += census.stale_items
    census.kept_units += kept
    census.stale_units = census.stale_items = 0
    census.stale_versions = {}
    plan.stale = {}
    return kept


# -- the parent side ------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """A batch stash's options about units and versions.

    Attributes:
        version: the batch's version; ``None`` for the code's fingerprint.
        on_stale: what ``prime()`` does when the output holds units
            computed by another version: one of :data:`ON_STALE`.
        unit_id: the identity of a unit; ``None`` for :func:`unit_id`.
    """

    version: Optional[str] = None
    on_stale: str = 'error'
    unit_id: Optional[Callable[[Any], str]] = None

    def __post_init__(self) -> None:
        check_on_stale(self.on_stale)
        if self.version is not None and (not isinstance(self.version, str) or not self.version):
            raise TypeError(f'version must be a non-empty str, not {self.version!r}')
        if self.unit_id is not None and not callable(self.unit_id):
            raise TypeError(f'unit_id must be a callable, not {type(self.unit_id).__name__}')


#: The census of a batch's units, next to its status file.
CENSUS_FILE = 'units.json'


def write_census(state_dir: Optional[Path], census: Census) -> None:
    """Write ``census`` to ``<state_dir>/.stashworks/units.json`` (nothing without a folder)."""
    if state_dir is None:
        return
    from .._atomic import atomic_write
    from .layout import STATE_DIR

    path = Path(state_dir) / STATE_DIR / CENSUS_FILE
    data = census.as_dict()
    if read_census(state_dir) == data:
        return  # unchanged (a complete batch read again, maybe from a read-only folder)
    payload = json.dumps(data, indent=1).encode('utf-8')

    def write(fh: IO[bytes]) -> None:
        fh.write(payload)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except OSError as exc:
        # Like the status file: a convenience, never a reason to stop.
        logger.warning('cannot write the census of units %s: %s', path, exc)


def read_census(directory: Union[str, 'os.PathLike[str]']) -> Optional[dict[str, Any]]:
    """The census the last ``prime()`` wrote for a batch whose items live in ``directory``."""
    from .layout import STATE_DIR

    try:
        data = json.loads((Path(directory) / STATE_DIR / CENSUS_FILE).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def code_version(compute: Any, version: Optional[str]) -> str:
    """The batch's version: ``version`` if given, else the fingerprint of ``compute``."""
    if version is not None:
        return version
    from .fingerprint import fingerprint

    return fingerprint(compute, ignore=('_create_data',))


def stale_error(plan: UnitPlan, where: str) -> StaleItemsError:
    """The :class:`StaleItemsError` for the stale units of ``plan``."""
    c = plan.census
    return StaleItemsError(c.version, c.stale_units, c.stale_items, c.stale_versions, where)
