"""A stash in a DBM database, through the standard :mod:`shelve` module."""

from __future__ import annotations

import logging
import os
import pickle
import shelve
from pathlib import Path
from typing import Any, Literal, Optional, Union

from .errors import SerializationError, StashCorruptError, StashReadOnlyError, StashWriteError
from .stash import CloseableStash, check_key

__all__ = ['ShelveStash']

logger = logging.getLogger(__name__)


class ShelveStash(CloseableStash):
    """Items in one DBM database file set, pickled by :mod:`shelve`.

    The database is opened on first use and stays open until
    :meth:`close`; the stash is a context manager that closes it.  After
    :meth:`close` every method raises
    :class:`~stashworks.errors.StashClosedError`.

    Which DBM backend is used (and so which files appear next to ``path``)
    depends on the Python build, as with :func:`shelve.open`.  DBM files are
    not safe for several processes writing at once, so a writable shelf
    refuses to be pickled (and so to be sent to a worker process); use a
    :class:`~stashworks.DirectoryStash` for that.

    Args:
        path: the database file name (the backend may add suffixes); its
            parent directory is created if needed.
        writeback: keep every item read in memory and write them all back
            on :meth:`sync` and :meth:`close`, so mutating a loaded value
            in place is saved (see :func:`shelve.open`).
        flag: ``'c'`` create if needed, ``'w'`` existing only, ``'r'``
            read-only (writes raise
            :class:`~stashworks.errors.StashReadOnlyError`), ``'n'`` always
            start empty (see :func:`dbm.open`).
        protocol: the pickle protocol.

    Raises:
        TypeError: from every method given a key that is not a ``str``.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        writeback: bool = False,
        flag: Literal['r', 'w', 'c', 'n'] = 'c',
        protocol: int = pickle.HIGHEST_PROTOCOL,
    ) -> None:
        self.path = Path(path)
        self.writeback = writeback
        self.flag = flag
        self.protocol = protocol
        self._shelf: Optional[shelve.Shelf[Any]] = None

    @property
    def shelf(self) -> shelve.Shelf[Any]:
        """The open :class:`shelve.Shelf`, opened on first use.

        Raises:
            StashClosedError: after :meth:`close`.
        """
        self.check_open()
        if self._shelf is None:
            if self.flag in ('c', 'n'):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            logger.debug('opening shelf %s', self.path)
            # Not a context manager: the shelf stays open until close().
            self._shelf = shelve.open(  # noqa: SIM115
                str(self.path), flag=self.flag, protocol=self.protocol, writeback=self.writeback
            )
        return self._shelf

    def _check_writable(self, op: str, key: Optional[str] = None) -> None:
        if self.flag == 'r':
            what = f' {key!r}' if key is not None else ''
            raise StashReadOnlyError(f'cannot {op}{what}: {self!r} is opened read-only')

    def load(self, key: str) -> Any:
        """Return the item under ``key``.

        Raises:
            KeyError: (a :class:`~stashworks.errors.StashKeyError`) when
                there is no such item.
            StashCorruptError: when the stored bytes do not unpickle.
        """
        shelf = self.shelf
        check_key(key, self)
        try:
            return shelf[key]
        except KeyError:
            raise self.missing_error(key) from None
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
        shelf = self.shelf
        check_key(key, self)
        self._check_writable('dump', key)
        try:
            # shelve pickles the whole value before it touches the
            # database, so an unpicklable value leaves the old one in place.
            shelf[key] = value
        except OSError as exc:
            raise StashWriteError(f'cannot write item {key!r} to {self.path} in {self!r}: {exc}') from exc
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            # With writeback, shelve caches the value before pickling it;
            # drop it so the old value is what a load (and close) sees.
            getattr(shelf, 'cache', {}).pop(key, None)
            raise SerializationError(
                f'cannot serialize item {key!r} for {self.path} in {self!r}: {type(exc).__name__}: {exc}'
            ) from exc

    def delete(self, key: str) -> None:
        shelf = self.shelf
        check_key(key, self)
        self._check_writable('delete', key)
        try:
            del shelf[key]
        except KeyError:
            pass

    def keys(self) -> list[str]:
        return list(self.shelf.keys())

    def exists(self, key: str) -> bool:
        shelf = self.shelf
        return check_key(key, self) in shelf

    # Overridden: Shelf.clear() would unpickle every value on its way out.
    def clear(self) -> None:
        shelf = self.shelf
        self._check_writable('clear')
        for key in list(shelf.keys()):
            del shelf[key]

    def __len__(self) -> int:
        return len(self.shelf)

    def sync(self) -> None:
        """Write pending changes (and the writeback cache) to disk."""
        self.shelf.sync()

    def close(self) -> None:
        """Write everything out and close the database; a second call does nothing."""
        shelf, self._shelf = self._shelf, None
        self.closed = True
        if shelf is not None:
            logger.debug('closing shelf %s', self.path)
            shelf.close()

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
