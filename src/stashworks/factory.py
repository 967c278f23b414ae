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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import StashReadOnlyError
from .memory import DictionaryStash
from .stash import MISSING, CloseableStash, DelegateStash, PreemptiveStash, PrimablePreemptiveStash, Stash

__all__ = ['CacheStash', 'FactoryStash', 'OneShotFactoryStash']

logger = logging.getLogger(__name__)

#: What :class:`OneShotFactoryStash` accepts as a worker.
Worker = Union[Callable[[], Iterable[tuple[str, Any]]], Iterable[tuple[str, Any]]]


@dataclass(init=False, repr=False, eq=False)
class FactoryStash(PreemptiveStash):
    """Loads from ``delegate``; creates a missing item with ``factory``.

    On :meth:`load`, an item the delegate has (even a stored ``None``) is
    returned as is; otherwise ``factory.load(key)`` creates it, it is
    dumped to the delegate and returned, so the factory runs once per key.
    A :class:`KeyError` from the factory means the key does not exist.

    :meth:`keys` are the delegate's once it has any data (with
    ``enable_preemptive``, the default, as in zensols: the delegate was
    filled ahead of time and asking the factory may be expensive), and the
    factory's keys, the work that can be created, otherwise.

    Writes (:meth:`~Stash.dump`, :meth:`~Stash.delete`,
    :meth:`~Stash.clear`) act on the delegate only: the factory is the
    source and is never written, so a deleted item the factory can create
    still exists and is created again on the next load.

    Args:
        delegate: where created items are stored.
        factory: the stash whose :meth:`~Stash.load` creates an item and
            whose :meth:`~Stash.keys` lists the items it can create.
        enable_preemptive: list the delegate's keys instead of the
            factory's once the delegate has data; ``False`` always lists
            the factory's.
        dump_factory_nones: store a ``None`` the factory creates; with
            ``False`` it is returned but not stored, so the factory runs
            again for that key next time.
        force_clear_factory: :meth:`clear` also clears the factory.  By
            default it is never written (zensols clears a factory that is
            not a :class:`~stashworks.ReadOnlyStash`).
    """

    factory: Stash
    enable_preemptive: bool = True
    dump_factory_nones: bool = True
    force_clear_factory: bool = False

    def __init__(
        self,
        delegate: Stash,
        factory: Stash,
        enable_preemptive: bool = True,
        dump_factory_nones: bool = True,
        force_clear_factory: bool = False,
    ) -> None:
        self.delegate = delegate
        self.factory = factory
        self.enable_preemptive = enable_preemptive
        self.dump_factory_nones = dump_factory_nones
        self.force_clear_factory = force_clear_factory
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.factory, Stash):
            raise TypeError(
                f'the factory of a FactoryStash is a Stash (its load() creates an item), not '
                f'{type(self.factory).__name__}; wrap a function in a ReadOnlyStash subclass'
            )

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
        if value is None and not self.dump_factory_nones:
            return value
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

    def clear(self) -> None:
        """Delete every stored item (and the factory's, with ``force_clear_factory``)."""
        super().clear()
        if self.force_clear_factory:
            self.factory.clear()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r}, factory={self.factory!r})'


@dataclass(init=False, repr=False, eq=False)
class OneShotFactoryStash(PrimablePreemptiveStash):
    """Fills ``delegate`` from ``worker`` once, before any use.

    :meth:`prime` (called by every CRUD method) runs the worker when the
    delegate has no data yet and dumps each ``(key, value)`` pair it
    produces to the delegate.  A delegate that already has data (from an
    earlier run, when it is persistent) is used as it is.

    If the worker raises, what it had dumped so far is cleared again (the
    delegate was empty before), so the next use starts over rather than
    taking a partial result for a complete one.

    As in zensols, the delegate comes first and the worker may be set as an
    attribute after construction, or be a property of a subclass::

        stash = OneShotFactoryStash(DirectoryStash(path))
        stash.worker = make_pairs

    Args:
        delegate: where the pairs are stored (a new
            :class:`~stashworks.DictionaryStash` if ``None``).
        worker: a callable returning an iterable of ``(key, value)`` pairs,
            or such an iterable itself.

    Raises:
        TypeError: a worker given in the delegate's place, or a
            :class:`Stash` given as the worker.
    """

    # Not a dataclass field (a field's annotation would make it one): a
    # subclass may make it a property, which a generated __init__ could not set.
    if TYPE_CHECKING:
        worker: Optional[Worker] = None
    else:
        worker = None

    def __init__(self, delegate: Optional[Stash] = None, worker: Optional[Worker] = None) -> None:
        if delegate is not None and not isinstance(delegate, Stash):
            raise TypeError(
                f'the first argument of OneShotFactoryStash is the delegate stash (as in zensols), not a '
                f'{type(delegate).__name__}; write OneShotFactoryStash(delegate, worker=...) or '
                f'OneShotFactoryStash(worker=...) to fill a DictionaryStash'
            )
        self.delegate = delegate
        if worker is not None:
            self.worker = worker
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delegate is None:
            self.delegate = DictionaryStash()
        # type(self).worker: reading the instance attribute of a subclass
        # whose worker is a property would run it.
        if not isinstance(getattr(type(self), 'worker', None), property) and isinstance(self.worker, Stash):
            raise TypeError(
                f'a Stash ({self.worker!r}) is not a worker: it goes first, as the delegate; write '
                'OneShotFactoryStash(delegate, worker=...), with a worker that returns (key, value) pairs'
            )
        self._primed = False

    def _work(self) -> Iterable[tuple[str, Any]]:
        worker = self.worker
        if worker is None:
            raise TypeError(f'{self!r} has no worker: set its .worker (or pass worker=) before using it')
        if isinstance(worker, Stash):
            raise TypeError(f'a Stash ({worker!r}) is not a worker: pass it as the delegate')
        if callable(worker):
            return worker()
        return worker

    def prime(self) -> None:
        """Run the worker if the delegate has no data and it has not run yet."""
        if self._primed or self.has_data:
            return
        delegate = self.delegate
        assert delegate is not None  # set in __init__
        work = self._work()
        logger.info('filling %r from %r', delegate, self.worker)
        # Set first: the dumps below must not re-enter prime().
        self._primed = True
        try:
            for key, value in work:
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
        return f'{type(self).__name__}(delegate={self.delegate!r})'


@dataclass(init=False, repr=False, eq=False)
class CacheStash(DelegateStash):
    """Keeps the items read from ``delegate`` in :attr:`cache_stash`.

    A cached item (``None`` included) is returned without asking the
    delegate again.  Writes go to the delegate first and then to the cache,
    so a failed write leaves both as they were; :meth:`delete` and
    :meth:`clear` drop the item from both.

    Args:
        delegate: the stash whose items are cached.
        cache_stash: where cached items are kept; a new
            :class:`~stashworks.DictionaryStash` (memory) by default, as in
            zensols.
        read_only: refuse :meth:`dump`, :meth:`delete` and :meth:`clear`
            with :class:`~stashworks.errors.StashReadOnlyError`, so the
            delegate is never written through this stash.  Use
            :meth:`evict` to free memory.

    Raises:
        TypeError: ``cache_stash`` is not a :class:`Stash` (a ``bool`` there
            is the older ``CacheStash(delegate, read_only)`` form).
    """

    cache_stash: Stash = field(default_factory=DictionaryStash)
    read_only: bool = field(default=False, kw_only=True)

    def __init__(self, delegate: Stash, cache_stash: Optional[Stash] = None, read_only: bool = False) -> None:
        self.delegate = delegate
        self.cache_stash = DictionaryStash() if cache_stash is None else cache_stash
        self.read_only = read_only
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.cache_stash, bool):
            raise TypeError(
                'the second argument of CacheStash is the cache stash (as in zensols); '
                f'write CacheStash(delegate, read_only={self.cache_stash})'
            )
        if not isinstance(self.cache_stash, Stash):
            raise TypeError(f'cache_stash must be a Stash, not {type(self.cache_stash).__name__}')

    def _check_writable(self, op: str, key: Optional[str] = None) -> None:
        if self.read_only:
            raise StashReadOnlyError.refusing(self, op, key)

    def load(self, key: str) -> Any:
        """Return the item, from the cache if it was read before.

        Raises:
            KeyError: when the delegate has no such item.
        """
        cache = self.cache_stash
        if type(cache) is DictionaryStash:
            # The usual in-memory cache: one dict lookup per hit.
            value = cache.data.get(key, MISSING)
            if value is MISSING:
                value = super().load(key)
                cache.data[key] = value
            return value
        try:
            return cache.load(key)
        except KeyError:
            pass
        value = super().load(key)
        cache.dump(key, value)
        return value

    # Overridden: DelegateStash.get would bypass the cache.
    def get(self, key: str, default: Any = None) -> Any:
        return Stash.get(self, key, default)

    def exists(self, key: str) -> bool:
        return self.cache_stash.exists(key) or super().exists(key)

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
        cache = self.cache_stash
        if type(cache) is DictionaryStash:
            # Frees the memory; a cache of another kind keeps its items.
            cache.clear()
        elif isinstance(cache, CloseableStash):
            cache.close()
        super().close()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r})'
