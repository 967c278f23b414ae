"""A stash in a DBM database, through the standard :mod:`shelve` module."""

from __future__ import annotations

import dbm
import logging
import os
import pickle
import shelve
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal, Optional, Union

from .errors import (
    SerializationError,
    StashCorruptError,
    StashError,
    StashReadError,
    StashReadOnlyError,
    StashWriteError,
)
from .stash import CloseableStash, check_key

__all__ = ['ShelveStash']

logger = logging.getLogger(__name__)


@dataclass(init=False, repr=False, eq=False)
class ShelveStash(CloseableStash):
    """Items in one DBM database file set, pickled by :mod:`shelve`.

    The arguments and their defaults are zensols': with ``auto_close`` (the
    default) the database is opened for each call and closed after it, so
    other stash objects and processes see every write at once; without it,
    it is opened on first use and stays open until :meth:`close`.  The
    stash is a context manager that closes it.  After :meth:`close` every
    method raises :class:`~stashworks.errors.StashClosedError`.

    Which DBM backend is used (and so which files appear next to ``path``)
    depends on the Python build, as with :func:`shelve.open`
    (:meth:`get_extension` tells).  DBM files are not safe for several
    processes writing at once, so a writable shelf refuses to be pickled
    (and so to be sent to a worker process); use a
    :class:`~stashworks.DirectoryStash` for that.

    Args:
        path: the database file name (the backend may add suffixes); its
            parent directory is created if needed.
        writeback: keep every item read in memory and write them all back
            when the database is closed (after each call with
            ``auto_close``), so mutating a loaded value in place is saved
            while it stays open (see :func:`shelve.open`).
        auto_close: close the database after each call.
        flag: ``'c'`` create if needed, ``'w'`` existing only, ``'r'``
            read-only (writes raise
            :class:`~stashworks.errors.StashReadOnlyError`), ``'n'`` start
            empty (see :func:`dbm.open`; with ``auto_close`` only the first
            opening empties it).
        protocol: the pickle protocol.

    Raises:
        TypeError: ``auto_close`` is not a bool (such as a flag given in
            its place), or a method is given a key that is not a ``str``.
        StashCorruptError: the database files cannot be read as a database.
        StashReadError: the database cannot be opened (permissions...).
    """

    path: Path
    writeback: bool = True
    auto_close: bool = True
    flag: Literal['r', 'w', 'c', 'n'] = field(default='c', kw_only=True)
    protocol: int = field(default=pickle.HIGHEST_PROTOCOL, kw_only=True)

    _EXTENSION: ClassVar[Optional[str]]

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        writeback: bool = True,
        auto_close: bool = True,
        flag: Literal['r', 'w', 'c', 'n'] = 'c',
        protocol: int = pickle.HIGHEST_PROTOCOL,
    ) -> None:
        self.path = path  # type: ignore[assignment]
        self.writeback = writeback
        self.auto_close = auto_close
        self.flag = flag
        self.protocol = protocol
        self.__post_init__()

    def __post_init__(self) -> None:
        """Finish initialization (also run by a dataclass subclass's constructor)."""
        super().__post_init__()
        self.path = Path(self.path)
        if not isinstance(self.auto_close, bool):
            raise TypeError(
                f'auto_close must be a bool, not {self.auto_close!r}: the arguments are '
                '(path, writeback, auto_close) as in zensols; pass flag= and protocol= by keyword'
            )
        if self.flag not in ('r', 'w', 'c', 'n'):
            raise ValueError(f"flag must be 'r', 'w', 'c' or 'n', not {self.flag!r}")
        self._shelf: Optional[shelve.Shelf[Any]] = None
        self._opened = False

    @classmethod
    def get_extension(cls) -> Optional[str]:
        """The extension the DBM backend adds to a database's file name (``'db'``), or ``None``.

        Found once, by creating a database in a temporary folder.  A backend
        that writes several files (:mod:`dbm.dumb`) answers with the one
        holding the data (``'dat'``).
        """
        if '_EXTENSION' not in cls.__dict__:
            with tempfile.TemporaryDirectory(prefix='stashworks-shelve-') as tmp:
                shelve.open(os.path.join(tmp, 'probe'), flag='c').close()
                names = sorted(os.listdir(tmp))
            suffixes = [n[len('probe.') :] for n in names if n.startswith('probe.')]
            if 'probe' in names or not suffixes:
                ext = None
            elif 'dat' in suffixes:
                ext = 'dat'
            else:
                ext = suffixes[0]
            cls._EXTENSION = ext
        return cls._EXTENSION

    @property
    def real_path(self) -> Path:
        """The file the DBM backend keeps the data in (``path`` plus :meth:`get_extension`)."""
        ext = self.get_extension()
        return self.path if ext is None else self.path.with_name(f'{self.path.name}.{ext}')

    def _open(self, key: Optional[str]) -> shelve.Shelf[Any]:
        flag = self.flag
        if flag in ('c', 'n'):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if flag == 'n' and self._opened:
            flag = 'c'  # only the first opening empties the database
        logger.debug('opening shelf %s', self.path)
        what = f' for item {key!r}' if key is not None else ''
        try:
            # Not a context manager: the shelf stays open until closed.
            shelf = shelve.open(  # noqa: SIM115
                # A read-only database has nothing to write back (and
                # dbm.dumb would refuse to on close).
                str(self.path),
                flag=flag,
                protocol=self.protocol,
                writeback=self.writeback and flag != 'r',
            )
        except dbm.error[0] as exc:
            # dbm.error is a tuple whose first member is the common base.
            if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
                raise StashReadError(f'cannot open {self.path}{what} in {self!r}: {exc}') from exc
            raise StashCorruptError(
                f'cannot open {self.path}{what} in {self!r} as a database: {type(exc).__name__}: {exc}'
            ) from exc
        except OSError as exc:
            raise StashReadError(f'cannot open {self.path}{what} in {self!r}: {exc.strerror or exc}') from exc
        self._opened = True
        return shelf

    @property
    def shelf(self) -> shelve.Shelf[Any]:
        """The open :class:`shelve.Shelf`, opened on first use.

        Raises:
            StashClosedError: after :meth:`close`.
        """
        self.check_open()
        if self._shelf is None:
            self._shelf = self._open(None)
        return self._shelf

    @contextmanager
    def _using(self, key: Optional[str], op: str) -> Iterator[shelve.Shelf[Any]]:
        """The open shelf for one call: errors become stash errors; closed after with ``auto_close``."""
        self.check_open()
        if self._shelf is None:
            self._shelf = self._open(key)
        what = f' item {key!r}' if key is not None else ''
        try:
            yield self._shelf
        except (StashError, KeyError, TypeError):
            raise
        except dbm.error[0] as exc:
            raise StashCorruptError(
                f'cannot {op}{what} in {self.path} ({self!r}): {type(exc).__name__}: {exc}'
            ) from exc
        except OSError as exc:
            error = StashReadError if op in ('read', 'list', 'look up') else StashWriteError
            raise error(f'cannot {op}{what} in {self.path} ({self!r}): {exc.strerror or exc}') from exc
        finally:
            if self.auto_close:
                self._release()

    def _release(self) -> None:
        shelf, self._shelf = self._shelf, None
        if shelf is not None:
            logger.debug('closing shelf %s', self.path)
            try:
                shelf.close()
            except dbm.error[0] as exc:
                raise StashWriteError(f'cannot write {self.path} ({self!r}) when closing it: {exc}') from exc

    def _check_writable(self, op: str, key: Optional[str] = None) -> None:
        if self.flag == 'r':
            raise StashReadOnlyError.refusing(self, op, key, 'is opened read-only')

    def load(self, key: str) -> Any:
        """Return the item under ``key``.

        Raises:
            KeyError: (a :class:`~stashworks.errors.StashKeyError`) when
                there is no such item.
            StashCorruptError: when the stored bytes do not unpickle.
        """
        check_key(key, self)
        with self._using(key, 'read') as shelf:
            try:
                return shelf[key]
            except KeyError:
                raise self.missing_error(key) from None
            except (StashError, OSError, dbm.error[0]):
                raise
            except Exception as exc:
                raise StashCorruptError(
                    f'cannot read item {key!r} from {self.path} in {self!r}: {type(exc).__name__}: {exc}'
                ) from exc

    def dump(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``.

        Raises:
            SerializationError: when ``value`` cannot be pickled; the
                previous value is kept.
            StashReadOnlyError: when opened with ``flag='r'``.
            StashWriteError: when the database cannot be written.
        """
        check_key(key, self)
        self.check_open()
        self._check_writable('dump', key)
        with self._using(key, 'write') as shelf:
            try:
                # shelve pickles the whole value before it touches the
                # database, so an unpicklable value leaves the old one in place.
                shelf[key] = value
            except (pickle.PicklingError, TypeError, AttributeError) as exc:
                # With writeback, shelve caches the value before pickling it;
                # drop it so the old value is what a load (and close) sees.
                getattr(shelf, 'cache', {}).pop(key, None)
                raise SerializationError(
                    f'cannot serialize item {key!r} for {self.path} in {self!r}: {type(exc).__name__}: {exc}'
                ) from exc

    def delete(self, key: str) -> None:
        check_key(key, self)
        self.check_open()
        self._check_writable('delete', key)
        with self._using(key, 'delete') as shelf:
            try:
                del shelf[key]
            except KeyError:
                pass

    def keys(self) -> list[str]:
        with self._using(None, 'list') as shelf:
            return list(shelf.keys())

    def exists(self, key: str) -> bool:
        check_key(key, self)
        with self._using(key, 'look up') as shelf:
            return key in shelf

    # Overridden: Shelf.clear() would unpickle every value on its way out.
    def clear(self) -> None:
        self.check_open()
        self._check_writable('clear')
        with self._using(None, 'clear') as shelf:
            for key in list(shelf.keys()):
                del shelf[key]

    def __len__(self) -> int:
        with self._using(None, 'list') as shelf:
            return len(shelf)

    def sync(self) -> None:
        """Write pending changes (and the writeback cache) to disk."""
        with self._using(None, 'write') as shelf:
            shelf.sync()

    def close(self) -> None:
        """Write everything out and close the database; a second call does nothing."""
        self.closed = True
        self._release()

    def __getstate__(self) -> dict[str, Any]:
        # A copy in another process would keep its own view of the database
        # (dbm.dumb keeps the index in memory) and the two would overwrite
        # each other's items; refuse rather than corrupt.  A read-only
        # shelf travels without its open handle and reopens on first use.
        if self.flag != 'r':
            raise TypeError(
                f'cannot pickle {self!r}: a writable shelf cannot be shared with another process; '
                "open it with flag='r' to read it elsewhere, or use a DirectoryStash"
            )
        state = self.__dict__.copy()
        state['_shelf'] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}')"
