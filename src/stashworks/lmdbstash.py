"""A stash in one LMDB database: millions of small items in two files.

:class:`LmdbStash` keeps its items in an LMDB environment (``data.mdb`` and
``lock.mdb`` in a folder), through the optional ``lmdb`` package
(``pip install 'stashworks[lmdb]'``).  Where :class:`~stashworks.DirectoryStash`
pays for a file per item, LMDB pays for a B-tree insert: tiny items are
written, read, listed and counted many times faster, and ten million of
them are one file instead of ten million.

Several processes may use one database at once: LMDB serialises writers
on a lock in ``lock.mdb`` and lets readers see the last committed state,
never a partial one.  The database must be on a local file system (LMDB
shares memory maps and locks between processes, which network file
systems do not keep coherent).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import itertools
import logging
import operator
import os
import pickle
import struct
import threading
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Optional, Sequence, TypeVar, Union

try:
    import lmdb
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "LmdbStash needs the optional lmdb package; install it with: pip install 'stashworks[lmdb]'"
    ) from exc

from .errors import SerializationError, StashClosedError, StashCorruptError, StashError, StashWriteError
from .serial import PickleSerializer, Serializer, default_serializer, serialize_into
from .stash import CloseableStash, check_key

__all__ = ['LmdbStash', 'DATA_FILE', 'LOCK_FILE']

logger = logging.getLogger(__name__)

T = TypeVar('T')

#: The file that holds the items, in the stash's folder.
DATA_FILE = 'data.mdb'
#: LMDB's lock file (writer lock and readers table), beside the data file.
LOCK_FILE = 'lock.mdb'

# LMDB's key limit in its default build.  A fixed number rather than the
# build's own, so that every process, whatever its build, stores a key the
# same way.
_MAX_KEY = 511
# A key that LMDB cannot hold as it is ('' or longer than _MAX_KEY bytes)
# is stored under 0xFF + sha256 of the key, with the key itself in front of
# the value.  0xFF never occurs in UTF-8, so these never collide with a
# plain key, and they sort after all of them.
_HASHED = b'\xff'
_KEY_LEN = struct.Struct('<I')
_DELETED: Any = object()  # a delete waiting in a group's buffer
_pickle_dumps = pickle.dumps
# Opens of an environment another process is growing at that moment.
_OPEN_ATTEMPTS = 8
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)

# Keys per read transaction when streaming (items(), missing_keys()): a
# transaction is never held while the caller runs, so the map may grow and
# the process may fork between batches.
_SCAN_BATCH = 10_000


# -- one environment per folder and process ----------------------------------------------------------


class _Env:
    """An open LMDB environment, shared by every LmdbStash on one folder in this process.

    LMDB refuses (and the lmdb package detects) a second open of one
    environment in a process: its POSIX locks belong to the process, so
    closing the second would drop the first one's locks.  ``lock``
    serialises this process's transactions, as changing the map size
    requires that none be active.
    """

    def __init__(self, path: str, map_size: int, sync: bool, max_readers: int) -> None:
        self.path = path
        self.sync = sync
        self.lock = threading.RLock()
        self.users = 0
        #: commits since the last ``env.sync()`` (only counted when not syncing every commit)
        self.unsynced = False
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                env = lmdb.open(
                    path,
                    map_size=map_size,
                    subdir=True,
                    sync=sync,
                    max_readers=max_readers,
                    max_dbs=0,
                    # A cached read transaction keeps a reader slot, which a
                    # forked child would share with the parent (py-lmdb issue 346).
                    max_spare_txns=0,
                    lock=True,
                )
                break
            except lmdb.MapResizedError:
                # Opening begins a transaction: another process that grew
                # the map between the open's read of its size and that
                # transaction makes it fail.  A new open reads the new size.
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
        self.env: Optional[lmdb.Environment] = env
        # Reader slots of processes killed while reading stay taken until
        # someone clears them; a new user is the natural moment.
        cleared = self.env.reader_check()
        if cleared:
            logger.debug('cleared %d stale reader slots in %s', cleared, path)
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self.main_db = env.open_db()
                break
            except lmdb.MapResizedError:
                # The same race, one transaction later: adopt the map's
                # size as it is now and begin again.
                if attempt == _OPEN_ATTEMPTS - 1:
                    env.close()
                    raise
                env.set_mapsize(0)

    def close(self) -> None:
        env, self.env = self.env, None
        if env is not None:
            if self.unsynced:
                env.sync(True)
            env.close()


_envs: dict[str, _Env] = {}
_envs_lock = threading.Lock()


def _acquire(path: str, map_size: int, sync: bool, max_readers: int) -> _Env:
    with _envs_lock:
        handle = _envs.get(path)
        if handle is None or handle.env is None:
            handle = _Env(path, map_size, sync, max_readers)
            _envs[path] = handle
        handle.users += 1
        return handle


def _release(handle: _Env) -> None:
    with _envs_lock:
        handle.users -= 1
        if handle.users <= 0:
            if _envs.get(handle.path) is handle:
                del _envs[handle.path]
            with handle.lock:
                handle.close()


def _before_fork() -> None:
    # Like the logging module with its locks: hold every environment's lock
    # across fork, so no transaction of this process is in flight in the
    # child's copy of memory.
    _envs_lock.acquire()
    for handle in _envs.values():
        handle.lock.acquire()


def _after_fork_in_parent() -> None:
    for handle in _envs.values():
        handle.lock.release()
    _envs_lock.release()


def _after_fork_in_child() -> None:
    # LMDB: an environment must not be used after fork.  The child closes
    # its copies (no transaction was open, see _before_fork, so closing
    # touches none of the parent's reader slots) and opens its own when a
    # stash is next used.
    global _envs_lock
    _envs_lock = threading.Lock()
    inherited = list(_envs.values())
    _envs.clear()
    for handle in inherited:
        handle.lock = threading.RLock()
        env, handle.env = handle.env, None
        if env is not None:
            try:
                env.close()
            except lmdb.Error:  # pragma: no cover - nothing to do in a child
                logger.debug('could not close inherited environment %s', handle.path)


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


# -- the stash ------------------------------------------------------------------------------------------


class LmdbStash(CloseableStash):
    """Items in an LMDB database in the folder ``path``.

    Any ``str`` key works (keys LMDB cannot hold as they are, such as
    ``''`` or keys over 511 UTF-8 bytes, are stored under a hash and
    round-trip exactly), ``None`` is a value like any other, and values go
    through the same serializer strategy as
    :class:`~stashworks.DirectoryStash` (pickle by default).  :meth:`keys`
    reads one cursor and ``len()`` reads one counter: neither unpickles
    anything.

    Outside a group each :meth:`dump` and :meth:`delete` is its own
    transaction.  Between :meth:`begin_group` and :meth:`flush` they are
    buffered in memory and committed together (and every ``group_items``
    items or ``group_bytes`` bytes, to bound the buffer); a batch worker
    works that way, so it commits once per chunk, not once per item.
    Reading a key in a group sees its buffered value.

    The database grows by itself: when the memory map is full it is made
    larger and the transaction is run again.  A process may open the
    stash again after ``fork`` (the child opens its own environment) or
    receive it pickled (it opens the database on first use).

    Args:
        path: the folder of the database (created if needed).
        serializer: how values become bytes (pickle by default).
        map_size: the initial size of the memory map in bytes; it only
            bounds the address space used and doubles whenever it is full.
        sync: ``fsync`` every commit.  By default (``False``) a commit
            survives the crash of any process (SIGKILL, the OOM killer),
            and :meth:`flush` and :meth:`close` make everything committed
            durable on disk; only a crash of the machine itself between two
            flushes can lose (or, LMDB warns, damage) recent commits.
        max_readers: the size of LMDB's readers table (set by the first
            process to create the database).
        group_items: buffered items at which a group commits early.
        group_bytes: buffered bytes at which a group commits early.

    Raises:
        ImportError: when the ``lmdb`` package is not installed (when the
            module is imported).
    """

    #: Only processes on this machine may share the database (LMDB needs a
    #: local file system); a batch on a cluster checks it before any work.
    local_only: ClassVar[bool] = True
    #: The items live in the folder ``path`` on disk, which worker processes
    #: open themselves; a batch keeps its own files (``.stashworks/``) there.
    items_in_directory: ClassVar[bool] = True

    def __init__(
        self,
        path: Union[str, 'os.PathLike[str]'],
        serializer: Optional[Serializer] = None,
        map_size: int = 1 << 30,
        sync: bool = False,
        max_readers: int = 512,
        group_items: int = 10_000,
        group_bytes: int = 64 << 20,
    ) -> None:
        if map_size < 1:
            raise ValueError(f'map_size must be > 0, not {map_size}')
        if group_items < 1 or group_bytes < 1:
            raise ValueError(f'group_items and group_bytes must be > 0, not {group_items} and {group_bytes}')
        self.path = Path(path)
        self.serializer = serializer if serializer is not None else default_serializer
        self.map_size = map_size
        self.sync = sync
        self.max_readers = max_readers
        self.group_items = group_items
        self.group_bytes = group_bytes
        self._handle: Optional[_Env] = None
        self._group = False
        self._buffer: dict[bytes, Any] = {}
        self._buffer_bytes = 0
        # pickle.dumps/loads straight away when the serializer is plain
        # pickle: the same bytes, without a file object per item.
        ser = self.serializer
        self._protocol: Optional[int] = ser.protocol if type(ser) is PickleSerializer else None

    # -- environment ---------------------------------------------------------------------------------

    def _env(self) -> _Env:
        """The open environment, opened on first use (again in a forked child)."""
        handle = self._handle
        if handle is not None and handle.env is not None:
            return handle
        if self.closed:
            raise StashClosedError(f'{self!r} is closed')
        if handle is not None:
            # Inherited across fork: the parent's buffered writes are the
            # parent's to commit.
            self._buffer = {}
            self._buffer_bytes = 0
            self._group = False
        self._handle = handle = self._open()
        return handle

    def _open(self) -> _Env:
        if self.path.exists() and not self.path.is_dir():
            raise StashWriteError(f'cannot open {self!r}: {self.path} is not a folder')
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return _acquire(os.path.realpath(self.path), self.map_size, self.sync, self.max_readers)
        except lmdb.InvalidError as exc:
            raise StashCorruptError(f'cannot open {self!r}: {self.path / DATA_FILE} is not an LMDB database') from exc
        except (lmdb.Error, OSError) as exc:
            raise StashWriteError(f'cannot open {self!r} at {self.path}: {exc}') from exc

    def _check(self) -> None:
        if self.closed:
            raise StashClosedError(f'{self!r} is closed')

    def _read(self, fn: Callable[[Any], T], what: str) -> T:
        """Run ``fn(txn)`` in a read transaction; ``what`` names the data for an error."""
        handle = self._env()
        with handle.lock:
            env = handle.env
            assert env is not None
            for attempt in range(3):
                try:
                    with env.begin(db=handle.main_db) as txn:
                        return fn(txn)
                except lmdb.MapResizedError:
                    # Another process grew the database past our map: adopt its size.
                    env.set_mapsize(0)
                except lmdb.ReadersFullError as exc:
                    if attempt or not env.reader_check():
                        raise StashError(
                            f'cannot read {what} in {self!r}: every slot of the readers table '
                            f'({env.max_readers()}) is taken; open it with a larger max_readers'
                        ) from exc
                except lmdb.Error as exc:
                    raise StashCorruptError(f'cannot read {what} from {self.path} in {self!r}: {exc}') from exc
            raise StashError(f'cannot read {what} from {self.path} in {self!r}: the map keeps being resized')

    def _write(self, fn: Callable[[Any], None], what: str) -> None:
        """Run ``fn(txn)`` in a write transaction and commit it, growing the map as needed."""
        handle = self._env()
        with handle.lock:
            env = handle.env
            assert env is not None
            while True:
                try:
                    with env.begin(write=True, db=handle.main_db) as txn:
                        fn(txn)
                    break
                except lmdb.MapFullError:
                    # Aborted by the with block; no transaction is open in
                    # this process (handle.lock), as set_mapsize requires.
                    size = env.info()['map_size'] * 2
                    logger.debug('growing the map of %s to %d bytes', handle.path, size)
                    env.set_mapsize(size)
                except lmdb.MapResizedError:
                    env.set_mapsize(0)
                except lmdb.Error as exc:
                    raise StashWriteError(f'cannot write {what} to {self.path} in {self!r}: {exc}') from exc
            if not handle.sync:
                handle.unsynced = True

    # -- keys and values -----------------------------------------------------------------------------

    def _db_key(self, key: str) -> tuple[bytes, Optional[bytes]]:
        """The LMDB key for ``key``, and the key's bytes when they are stored in the value."""
        if not isinstance(key, str):
            check_key(key, self)
        kb = key.encode('utf-8', 'surrogatepass')
        if 0 < len(kb) <= _MAX_KEY:
            return kb, None
        return _HASHED + hashlib.sha256(kb).digest(), kb

    def _unserializable(self, key: str, exc: Exception) -> SerializationError:
        # Worded as serialize_into words it.
        return SerializationError(
            f'cannot serialize item {key!r} for {self.path} in {self!r}: {type(exc).__name__}: {exc}'
        )

    def _encode(self, key: str, value: Any) -> bytes:
        if self._protocol is not None:
            try:
                return pickle.dumps(value, protocol=self._protocol)
            except Exception as exc:
                raise self._unserializable(key, exc) from exc
        buf = io.BytesIO()
        serialize_into(self.serializer, value, buf, f'item {key!r} for {self.path} in {self!r}')
        return buf.getvalue()

    def _decode(self, key: str, data: bytes) -> Any:
        try:
            if self._protocol is not None:
                return pickle.loads(data)
            return self.serializer.load(io.BytesIO(data))
        except Exception as exc:
            raise StashCorruptError(
                f'cannot read item {key!r} from {self.path} in {self!r}: {type(exc).__name__}: {exc or "(no message)"}'
            ) from exc

    @staticmethod
    def _split_hashed(data: bytes) -> tuple[bytes, bytes]:
        """``(key bytes, value bytes)`` of an entry stored under a hashed key."""
        (size,) = _KEY_LEN.unpack_from(data)
        start = _KEY_LEN.size
        return data[start : start + size], data[start + size :]

    def _value_bytes(self, kb: Optional[bytes], data: Any) -> Optional[bytes]:
        """The value's bytes from a stored entry; ``None`` if it is missing (or another key's)."""
        if data is None or data is _DELETED:
            return None
        if kb is None:
            return bytes(data)
        stored, value = self._split_hashed(bytes(data))
        return value if stored == kb else None

    def _lookup(self, key: str) -> Optional[bytes]:
        handle = self._handle
        if handle is not None and handle.env is not None and not self._buffer and type(key) is str:
            # The usual read, in as few steps as it takes: an open
            # environment, nothing buffered, a key LMDB holds as it is.
            # Anything unusual (or any LMDB error) takes the general path.
            raw = key.encode('utf-8', 'surrogatepass')
            if 0 < len(raw) <= _MAX_KEY:
                try:
                    with handle.lock, handle.env.begin() as txn:
                        return txn.get(raw)
                except lmdb.Error:
                    pass
        dbk, kb = self._db_key(key)
        self._env()
        buf = self._buffer
        if buf and dbk in buf:
            return self._value_bytes(kb, buf[dbk])
        data = self._read(lambda txn: txn.get(dbk), f'item {key!r}')
        return self._value_bytes(kb, data)

    # -- Stash -------------------------------------------------------------------------------------------

    def load(self, key: str) -> Any:
        data = self._lookup(key)
        if data is None:
            raise self.missing_error(key)
        return self._decode(key, data)

    def exists(self, key: str) -> bool:
        return self._lookup(key) is not None

    def load_bytes(self, key: str) -> bytes:
        """The item's value as stored: the serializer's bytes, not deserialized.

        Raises:
            KeyError: (a :class:`~stashworks.errors.StashKeyError`) when
                there is no such item.
        """
        data = self._lookup(key)
        if data is None:
            raise self.missing_error(key)
        return data

    def dump(self, key: str, value: Any) -> None:
        handle = self._handle
        if (
            self._group
            and type(key) is str
            and self._protocol is not None
            and handle is not None
            and handle.env is not None
        ):
            # A batch worker's item: a key LMDB holds as it is, pickled into
            # the group's buffer.  Every step here is paid once per item.
            try:
                dbk = key.encode()
            except UnicodeEncodeError:
                dbk = b''  # a lone surrogate: the general path below
            if 0 < len(dbk) <= _MAX_KEY:
                try:
                    data = _pickle_dumps(value, self._protocol)
                except Exception as exc:
                    raise self._unserializable(key, exc) from exc
                buf = self._buffer
                buf[dbk] = data
                size = self._buffer_bytes = self._buffer_bytes + len(data)
                if len(buf) >= self.group_items or size >= self.group_bytes:
                    self._commit()
                return
        if handle is None or handle.env is None:
            handle = self._env()
        if type(key) is str and self._protocol is not None:
            # The usual item (a key LMDB holds as it is, pickled), in as few
            # steps as it takes: a batch worker dumps every item here.
            dbk = key.encode('utf-8', 'surrogatepass')
            kb = None if 0 < len(dbk) <= _MAX_KEY else dbk
            if kb is not None:
                dbk = _HASHED + hashlib.sha256(kb).digest()
            try:
                data = pickle.dumps(value, self._protocol)
            except Exception as exc:
                raise self._unserializable(key, exc) from exc
        else:
            dbk, kb = self._db_key(key)
            data = self._encode(key, value)
        if kb is not None:
            data = _KEY_LEN.pack(len(kb)) + kb + data
        elif not self._group:
            # The usual write (see _lookup); a full map and every other
            # LMDB error go to _write, which grows the map and retries.
            try:
                with handle.lock:
                    with handle.env.begin(write=True) as txn:  # type: ignore[union-attr]
                        txn.put(dbk, data)
                    if not handle.sync:
                        handle.unsynced = True
                return
            except lmdb.Error:
                pass
        if self._group:
            self._buffer[dbk] = data
            self._buffer_bytes += len(dbk) + len(data)
            if len(self._buffer) >= self.group_items or self._buffer_bytes >= self.group_bytes:
                self._commit()
            return
        self._write(lambda txn: txn.put(dbk, data), f'item {key!r}')

    def dump_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Store each ``(key, value)``; in a group, the usual items go to its buffer in one step.

        A batch worker's slice of tiny units: keys LMDB holds as they are,
        values pickled, in C loops rather than one :meth:`dump` each.  Any
        other item (a long key, a serializer that is not pickle, no group
        open) takes :meth:`dump`'s path.
        """
        handle = self._handle
        proto = self._protocol
        if not items or not self._group or proto is None or handle is None or handle.env is None:
            return super().dump_many(items)
        try:
            dbks = list(map(str.encode, map(_first, items)))
        except (TypeError, UnicodeEncodeError):  # not a str, or a lone surrogate
            return super().dump_many(items)
        sizes = list(map(len, dbks))
        if min(sizes) == 0 or max(sizes) > _MAX_KEY:
            return super().dump_many(items)
        try:
            datas = list(map(_pickle_dumps, map(_second, items), itertools.repeat(proto)))
        except Exception:
            # One of them cannot be pickled: dump() names its key.
            return super().dump_many(items)
        buf = self._buffer
        buf.update(zip(dbks, datas, strict=True))
        self._buffer_bytes += sum(sizes) + sum(map(len, datas))
        if len(buf) >= self.group_items or self._buffer_bytes >= self.group_bytes:
            self._commit()

    def delete(self, key: str) -> None:
        self._env()
        dbk, kb = self._db_key(key)
        if self._group:
            self._buffer[dbk] = _DELETED
            if len(self._buffer) >= self.group_items:
                self._commit()
            return
        if kb is None:
            self._write(lambda txn: txn.delete(dbk), f'item {key!r}')
            return

        def delete_hashed(txn: Any) -> None:
            # Only this key's entry, should another key share the hash.
            if self._value_bytes(kb, txn.get(dbk)) is not None:
                txn.delete(dbk)

        self._write(delete_hashed, f'item {key!r}')

    def keys(self) -> list[str]:
        """Every key, in LMDB's order (by UTF-8 bytes; keys stored under a hash last)."""
        self._commit()
        return self._read(self._list_keys, 'the keys')

    def _list_keys(self, txn: Any) -> list[str]:
        raw = list(txn.cursor().iternext(keys=True, values=False))
        plain = bisect.bisect_left(raw, _HASHED)
        keys = [k.decode('utf-8', 'surrogatepass') for k in raw[:plain]] if plain < len(raw) else None
        if keys is None:
            keys = [k.decode('utf-8', 'surrogatepass') for k in raw]
            return keys
        for dbk in raw[plain:]:
            kb, _ = self._split_hashed(txn.get(dbk))
            keys.append(kb.decode('utf-8', 'surrogatepass'))
        return keys

    def __len__(self) -> int:
        self._commit()
        handle = self._env()
        with handle.lock:
            assert handle.env is not None
            return int(handle.env.stat()['entries'])

    def items(self) -> Iterator[tuple[str, Any]]:
        """Yield every ``(key, value)`` pair, reading a batch of entries per transaction."""
        self._commit()
        after: Optional[bytes] = None
        while True:
            entries: list[Any] = self._read(functools.partial(self._scan, after=after), 'the items')
            for kb, data, _ in entries:
                key = kb.decode('utf-8', 'surrogatepass')
                yield key, self._decode(key, data)
            if len(entries) < _SCAN_BATCH:
                return
            after = entries[-1][2]

    def _scan(self, txn: Any, *, after: Optional[bytes]) -> list[Any]:
        """Up to ``_SCAN_BATCH`` ``(key bytes, value bytes, db key)`` entries after the db key ``after``."""
        cursor = txn.cursor()
        if after is None:
            found = cursor.first()
        else:
            found = cursor.set_range(after)
            if found and cursor.key() == after:
                found = cursor.next()
        out: list[Any] = []
        while found and len(out) < _SCAN_BATCH:
            dbk, data = cursor.item()
            if dbk[:1] == _HASHED:
                kb, data = self._split_hashed(data)
            else:
                kb = dbk
            out.append((kb, data, dbk))
            found = cursor.next()
        return out

    def clear(self) -> None:
        handle = self._env()
        self._buffer = {}
        self._buffer_bytes = 0
        self._write(lambda txn: txn.drop(handle.main_db, delete=False), 'every item')

    # -- groups ---------------------------------------------------------------------------------------------

    def begin_group(self) -> None:
        """Buffer the dumps and deletes that follow until :meth:`flush`."""
        self._env()
        self._group = True

    def flush(self) -> None:
        """Commit the group's buffer in one transaction and make every commit durable; ends the group."""
        self._commit()
        self._group = False
        handle = self._env()
        if handle.unsynced:
            with handle.lock:
                assert handle.env is not None
                handle.env.sync(True)
                handle.unsynced = False

    def _commit(self) -> None:
        """Write the group's buffer in one transaction (a no-op when it is empty)."""
        buf = self._buffer
        if not buf:
            self._check()
            return
        self._env()
        buf = self._buffer  # _env() drops a buffer inherited across fork
        if not buf:
            return
        # (``in`` compares in C: the buffer rarely holds a delete.)
        deletes = [k for k, v in buf.items() if v is _DELETED] if _DELETED in buf.values() else []
        # Sorted: LMDB fills its pages in order (and timsort finds a
        # batch's keys, usually already in order, in one pass).
        puts = sorted(buf.items()) if not deletes else sorted((k, v) for k, v in buf.items() if v is not _DELETED)

        def write(txn: Any) -> None:
            for dbk in deletes:
                txn.delete(dbk)
            if puts:
                txn.cursor().putmulti(puts)

        first = next(iter(buf))
        shown = first.decode('utf-8', 'surrogatepass') if first[:1] != _HASHED else '(a long key)'
        self._write(write, f'{len(buf)} items (first {shown!r})')
        self._buffer = {}
        self._buffer_bytes = 0

    # -- planning ---------------------------------------------------------------------------------------

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """For each of ``keys``, in order, whether it has an item.

        The batch engine's planning hook (see :mod:`stashworks.multi.plan`):
        one cursor lookup per key in a read transaction per
        ``10,000`` keys, so working out what is left of a batch of millions
        of keys never lists (or holds) every stored key.
        """
        if not len(self):
            return [False] * len(keys)  # a new batch: nothing to look up
        out: list[bool] = []
        for start in range(0, len(keys), _SCAN_BATCH):
            part = keys[start : start + _SCAN_BATCH]
            out.extend(self._read(functools.partial(self._present, keys=part), 'the stored keys'))
        return out

    def missing_keys(self, keys: Iterable[str]) -> Iterator[str]:
        """Yield those of ``keys`` that have no item, in their order, holding one block of keys at a time."""
        it = iter(keys)
        while True:
            block = list(itertools.islice(it, _SCAN_BATCH))
            if not block:
                return
            present = self.exists_many(block)
            yield from [key for key, there in zip(block, present, strict=True) if not there]

    def _present(self, txn: Any, *, keys: Sequence[str]) -> list[bool]:
        find = txn.cursor().set_key
        try:
            # The usual keys: short, valid UTF-8 once encoded.  map() keeps
            # the loops in C: planning asks about every key of a batch.
            encoded = list(map(str.encode, keys))
        except (UnicodeEncodeError, TypeError):
            encoded = []
        if encoded:
            sizes = list(map(len, encoded))
            if min(sizes) > 0 and max(sizes) <= _MAX_KEY:
                return list(map(find, encoded))
        out = []
        for key in keys:
            dbk, kb = self._db_key(key)
            out.append(self._value_bytes(kb, txn.get(dbk)) is not None)
        return out

    # -- life cycle ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Commit any buffered writes, make them durable and release the database; idempotent."""
        handle = self._handle
        # A handle inherited across fork (env None) is not this process's to release.
        if handle is not None and handle.env is not None and not self.closed:
            try:
                self.flush()
            finally:
                self._handle = None
                _release(handle)
        self._handle = None
        self._buffer = {}
        self._group = False
        self.closed = True

    def __getstate__(self) -> dict[str, Any]:
        # A copy in another process opens the database itself, on first use;
        # writes buffered here stay here.
        state = self.__dict__.copy()
        state['_handle'] = None
        state['_buffer'] = {}
        state['_buffer_bytes'] = 0
        state['_group'] = False
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"
