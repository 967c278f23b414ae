"""Stashes that create, fill or cache the items of another stash.

* :class:`FactoryStash` creates a missing item from its ``factory`` and
  stores it in its ``delegate``.
* :class:`OneShotFactoryStash` fills its ``delegate`` from a ``worker``
  once, before first use.
* :class:`CacheStash` keeps the items it has read in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Optional, Union

from .errors import StashReadOnlyError
from .memory import DictionaryStash
from .stash import MISSING, DelegateStash, PreemptiveStash, PrimablePreemptiveStash, Stash

__all__ = ['CacheStash', 'FactoryStash', 'OneShotFactoryStash']

logger = logging.getLogger(__name__)

#: What :class:`OneShotFactoryStash` accepts as a worker.
Worker = Union[Callable[[], Iterable[tuple[str, Any]]], Iterable[tuple[str, Any]]]


class FactoryStash(PreemptiveStash):
    """Loads from ``delegate``; creates a missing item with ``factory``.

    On :meth:`load`, an item the delegate has (even a stored ``None``) is
    returned as is; otherwise ``factory.load(key)`` creates it, it is
    dumped to the delegate and returned, so the factory runs once per key.
    A :class:`KeyError` from the factory means the key does not exist.

    :meth:`keys` are the factory's keys, the work that can be created; with
    ``enable_preemptive`` they are the delegate's once it has any data
    (useful when the delegate was filled ahead of time and asking the
    factory is expensive).

    Writes (:meth:`~Stash.dump`, :meth:`~Stash.delete`,
    :meth:`~Stash.clear`) act on the delegate only: the factory is the
    source and is never written, so a deleted item the factory can create
    still exists and is created again on the next load.

    Args:
        delegate: where created items are stored.
        factory: the stash whose :meth:`~Stash.load` creates an item and
            whose :meth:`~Stash.keys` lists the items it can create.
        enable_preemptive: list the delegate's keys instead of the
            factory's once the delegate has data.
    """

    def __init__(self, delegate: Stash, factory: Stash, enable_preemptive: bool = False) -> None:
        super().__init__(delegate)
        self.factory = factory
        self.enable_preemptive = enable_preemptive

    def load(self, key: str) -> Any:
        """Return the stored item, creating and storing it if needed.

        Raises:
            KeyError: when neither the delegate nor the factory has ``key``.
        """
        try:
            # One load instead of exists() + load(): on a directory that is
            # one open() rather than a stat and an open().
            return super().load(key)
        except KeyError:
            pass
        try:
            value = self.factory.load(key)
        except KeyError as exc:
            raise self.missing_error(key) from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('created %r with %r, storing it in %r', key, self.factory, self.delegate)
        self.dump(key, value)
        return value

    # Overridden: DelegateStash.get asks only the delegate; a factory stash
    # creates the item on get() as on load().
    def get(self, key: str, default: Any = None) -> Any:
        return Stash.get(self, key, default)

    def keys(self) -> Iterable[str]:
        if self.enable_preemptive and self.has_data:
            return super().keys()
        return self.factory.keys()

    def exists(self, key: str) -> bool:
        return super().exists(key) or self.factory.exists(key)

    # Overridden: DelegateStash counts the delegate, but keys() may be the
    # factory's.
    def __len__(self) -> int:
        if self.enable_preemptive and self.has_data:
            return super().__len__()
        return len(self.factory)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r}, factory={self.factory!r})'


class OneShotFactoryStash(PrimablePreemptiveStash):
    """Fills ``delegate`` from ``worker`` once, before any use.

    :meth:`prime` (called by every CRUD method) runs the worker when the
    delegate has no data yet and dumps each ``(key, value)`` pair it
    produces to the delegate.  A delegate that already has data (from an
    earlier run, when it is persistent) is used as it is.

    If the worker raises, what it had dumped so far is cleared again (the
    delegate was empty before), so the next use starts over rather than
    taking a partial result for a complete one.

    Args:
        worker: a callable returning an iterable of ``(key, value)`` pairs,
            or such an iterable itself.
        delegate: where the pairs are stored.
    """

    def __init__(self, worker: Worker, delegate: Optional[Stash] = None) -> None:
        super().__init__(delegate if delegate is not None else DictionaryStash())
        self.worker = worker
        self._primed = False

    def _work(self) -> Iterable[tuple[str, Any]]:
        if callable(self.worker):
            return self.worker()
        return self.worker

    def prime(self) -> None:
        """Run the worker if the delegate has no data and it has not run yet."""
        if self._primed or self.has_data:
            return
        delegate = self.delegate
        assert delegate is not None  # set in __init__
        logger.info('filling %r from %r', delegate, self.worker)
        # Set first: the dumps below must not re-enter prime().
        self._primed = True
        try:
            for key, value in self._work():
                delegate.dump(key, value)
        except BaseException:
            self._primed = False
            delegate.clear()
            raise
        finally:
            self.reset_has_data()

    def clear(self) -> None:
        """Delete every item; the next use runs the worker again."""
        super().clear()
        self._primed = False

    def __repr__(self) -> str:
        return f'{type(self).__name__}(worker={self.worker!r}, delegate={self.delegate!r})'


class CacheStash(DelegateStash):
    """Keeps the items read from ``delegate`` in memory, in :attr:`cache_stash`.

    A cached item (``None`` included) is returned without asking the
    delegate again.  Writes go to the delegate first and then to the cache,
    so a failed write leaves both as they were; :meth:`delete` and
    :meth:`clear` drop the item from both.

    Args:
        delegate: the stash whose items are cached.
        read_only: refuse :meth:`dump`, :meth:`delete` and :meth:`clear`
            with :class:`~stashworks.errors.StashReadOnlyError`, so the
            delegate is never written through this stash.  Use
            :meth:`evict` to free memory.
    """

    def __init__(self, delegate: Stash, read_only: bool = False) -> None:
        super().__init__(delegate)
        self.read_only = read_only
        self.cache_stash = DictionaryStash()

    def _check_writable(self, op: str, key: Optional[str] = None) -> None:
        if self.read_only:
            what = f' {key!r}' if key is not None else ''
            raise StashReadOnlyError(f'cannot {op}{what}: {self!r} is read-only')

    def load(self, key: str) -> Any:
        """Return the item, from the cache if it was read before.

        Raises:
            KeyError: when the delegate has no such item.
        """
        value = self.cache_stash.data.get(key, MISSING)
        if value is MISSING:
            value = super().load(key)
            self.cache_stash.data[key] = value
        return value

    # Overridden: DelegateStash.get would bypass the cache.
    def get(self, key: str, default: Any = None) -> Any:
        return Stash.get(self, key, default)

    def exists(self, key: str) -> bool:
        return key in self.cache_stash.data or super().exists(key)

    def dump(self, key: str, value: Any) -> None:
        self._check_writable('dump', key)
        super().dump(key, value)
        self.cache_stash.dump(key, value)

    def delete(self, key: str) -> None:
        self._check_writable('delete', key)
        # Evict first: should the delegate fail half way, a later load must
        # ask it again rather than trust the cache.
        self.cache_stash.delete(key)
        super().delete(key)

    def clear(self) -> None:
        self._check_writable('clear')
        self.cache_stash.clear()
        super().clear()

    def evict(self, key: Optional[str] = None) -> None:
        """Forget the cached ``key`` (every cached item if ``None``); the delegate keeps it."""
        if key is None:
            self.cache_stash.clear()
        else:
            self.cache_stash.delete(key)

    def close(self) -> None:
        self.cache_stash.clear()
        super().close()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r})'
