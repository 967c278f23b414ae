"""The :class:`Stash` abstraction and its framework family.

A stash is a dict-like store of values by string key.  Concrete storage
lives in other modules (:mod:`stashworks.directory`, :mod:`stashworks.memory`,
:mod:`stashworks.shelf`); this module holds the abstract base and the
wrappers that every stack is built from.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, Iterable, Iterator, Optional, Sequence, TypeVar, Union, overload

from .errors import StashClosedError, StashKeyError, StashReadOnlyError

__all__ = [
    'MISSING',
    'Stash',
    'ReadOnlyStash',
    'CloseableStash',
    'DelegateStash',
    'KeyLimitStash',
    'PreemptiveStash',
    'PrimeableStash',
    'PrimablePreemptiveStash',
    'PrimeablePreemptiveStash',
    'check_key',
]

logger = logging.getLogger(__name__)


class _Missing:
    """The type of :data:`MISSING`; there is only one instance."""

    _instance: Optional['_Missing'] = None

    def __new__(cls) -> '_Missing':
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return '<MISSING>'

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # Unpickles to the same singleton, so ``is MISSING`` survives a
        # round trip through a worker process.
        return 'MISSING'


MISSING: Any = _Missing()
"""Marks "no value" where ``None`` is an ordinary, storable value."""


def check_key(key: object, stash: object) -> str:
    """Return ``key`` if it is a ``str``; raise :class:`TypeError` otherwise."""
    if not isinstance(key, str):
        raise TypeError(f'stash keys are str, not {type(key).__name__}: {key!r} (in {stash!r})')
    return key


if TYPE_CHECKING:
    # A default (PEP 696; typing has it from Python 3.13) keeps an
    # undeclared DirectoryStash('out') a stash of Any for a type checker.
    from typing_extensions import TypeVar as _DefaultTypeVar

    V = _DefaultTypeVar('V', default=Any)
else:
    V = TypeVar('V')
#: The type of a default given to :meth:`Stash.get`.
D = TypeVar('D')


class Stash(ABC, Generic[V]):
    """A dict-like store of values by string key.

    ``Stash[V]`` (``DirectoryStash[Rec]``) declares the type of the values
    for a type checker; nothing checks it at run time.

    Subclasses implement :meth:`load`, :meth:`dump`, :meth:`delete` and
    :meth:`keys`; everything else is derived from those and may be
    overridden where a backend can do better (a directory answers
    :meth:`exists` with one ``stat``).

    Unlike a ``dict``, iterating a stash yields ``(key, value)`` pairs.
    ``None`` is a value like any other: only a key that does not exist
    raises :class:`KeyError`.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # dill rebuilds a class it sends by value (a job's stash subclass
        # defined in __main__) on ``__orig_bases__`` when the class has
        # that attribute, and a subclass of a generic stash inherits its
        # parent's, so it would be rebuilt on the wrong bases.  Each class
        # gets its own: its bases as written.
        if '__orig_bases__' not in cls.__dict__:
            type.__setattr__(cls, '__orig_bases__', cls.__bases__)

    def __post_init__(self) -> None:
        """Finish initialization; a no-op here.

        The constructor a dataclass subclass gets calls it, and a subclass's
        own ``__post_init__`` calls ``super().__post_init__()``, as zensols
        code does; every stash class keeps that chain going.
        """

    @abstractmethod
    def load(self, key: str) -> V:
        """Return the item stored (or created) under ``key``.

        Raises:
            KeyError: (a :class:`~stashworks.errors.StashKeyError`) when
                there is no such item.
        """

    @abstractmethod
    def dump(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the item under ``key``; a missing key is not an error."""

    @abstractmethod
    def keys(self) -> Iterable[str]:
        """Return the keys of every item in the stash."""

    def exists(self, key: str) -> bool:
        """Whether an item exists under ``key``, without loading it."""
        return key in set(self.keys())

    @overload
    def get(self, key: str) -> Optional[V]: ...

    @overload
    def get(self, key: str, default: D) -> Union[V, D]: ...

    def get(self, key: str, default: Any = None) -> Any:
        """Return the item under ``key``, or ``default`` if there is none."""
        try:
            return self.load(key)
        except KeyError:
            return default

    def values(self) -> Iterator[V]:
        """Yield every value, in :meth:`keys` order."""
        for _, value in self.items():
            yield value

    def items(self) -> Iterator[tuple[str, V]]:
        """Yield every ``(key, value)`` pair."""
        for key in list(self.keys()):
            try:
                yield key, self.load(key)
            except KeyError:
                # Deleted by someone else since the listing; skip it as a
                # dict iteration over a snapshot would.
                continue

    def clear(self) -> None:
        """Delete every item."""
        for key in list(self.keys()):
            self.delete(key)

    def key_groups(self, n: int) -> Iterator[list[str]]:
        """Yield the keys in lists of ``n`` (the last one may be shorter).

        Raises:
            ValueError: when ``n`` is less than 1.
        """
        if n < 1:
            raise ValueError(f'n must be >= 1, not {n!r}')
        keys = iter(self.keys())
        while True:
            group = list(islice(keys, n))
            if not group:
                return
            yield group

    def begin_group(self) -> None:
        """Let the dumps that follow be committed together, until :meth:`flush`.

        A store where each write is costly to make durable (one LMDB
        transaction per item) buffers dumps between ``begin_group()`` and
        :meth:`flush`; a batch worker calls it before computing and flushes
        before it reports items done.  Stores that write through (every
        stash here but :class:`~stashworks.LmdbStash`) ignore it.
        """

    def dump_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Store each ``(key, value)`` of ``items``, in order, as :meth:`dump` would.

        A batch worker hands a store the items of many small units at once
        through this; a store that buffers (:class:`~stashworks.LmdbStash`)
        takes them in one step.  By default, :meth:`dump` for each item.

        Raises:
            Exception: what :meth:`dump` raises for the first item that
                cannot be stored; the items before it may have been stored.
        """
        dump = self.dump
        for key, value in items:
            dump(key, value)

    def flush(self) -> None:
        """Make every dump so far durable and visible to other processes.

        Ends a group started by :meth:`begin_group` (a new one starts at the
        next ``begin_group()``).  A no-op for stores that write through.
        """

    def missing_error(self, key: str) -> StashKeyError:
        """The :class:`KeyError` to raise for a ``key`` with no item."""
        return StashKeyError(f'no item {key!r} in {self!r}')

    def __getitem__(self, key: str) -> V:
        return self.load(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.dump(key, value)

    def __delitem__(self, key: str) -> None:
        # A dict raises KeyError for a missing key on ``del``; so do we,
        # while ``delete`` itself stays forgiving.
        if not self.exists(key):
            raise self.missing_error(key)
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.exists(key)

    def __iter__(self) -> Iterator[tuple[str, V]]:
        return self.items()

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())

    def __bool__(self) -> bool:
        # Without this, ``bool`` falls back on ``__len__`` and an empty
        # stash would be falsy, breaking ``stash or default`` idioms.
        return True

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


class ReadOnlyStash(Stash):
    """A stash whose write methods raise :class:`StashReadOnlyError`."""

    def _read_only(self, op: str, key: Optional[str] = None) -> StashReadOnlyError:
        return StashReadOnlyError.refusing(self, op, key)

    def dump(self, key: str, value: Any) -> None:
        raise self._read_only('dump', key)

    def delete(self, key: str) -> None:
        raise self._read_only('delete', key)

    def clear(self) -> None:
        raise self._read_only('clear')


class CloseableStash(Stash[V]):
    """A stash holding a resource that :meth:`close` releases.

    It is a context manager; any use after :meth:`close` raises
    :class:`~stashworks.errors.StashClosedError`.
    """

    closed: bool = False

    def close(self) -> None:
        """Release the resource; calling it again does nothing."""
        self.closed = True

    def check_open(self) -> None:
        """Raise :class:`StashClosedError` if the stash was closed."""
        if self.closed:
            raise StashClosedError(f'{self!r} is closed')

    def __enter__(self) -> 'CloseableStash':
        self.check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The classes below are dataclasses (with hand-written constructors, and
# without the generated __eq__ and __repr__) so that the zensols way of
# subclassing them works: ``@dataclass class S(DelegateStash): extra: int``
# gets ``S(delegate, extra)``.  Their fields follow zensols' order and
# defaults; fields zensols does not have are keyword-only, so they never
# shift a zensols positional argument.  Initialization beyond setting the
# fields lives in ``__post_init__``, which the generated constructor of a
# subclass calls too.


@dataclass(init=False, repr=False, eq=False)
class DelegateStash(CloseableStash):
    """Forwards every call to ``delegate``; the base of wrapper stashes.

    With no delegate it is an empty stash that accepts and forgets writes.
    A dataclass subclass (the zensols form) takes ``delegate`` as its first,
    required, field.

    Args:
        delegate: the stash calls are forwarded to.
    """

    delegate: Optional[Stash]

    def __init__(self, delegate: Optional[Stash] = None) -> None:
        self.delegate = delegate
        self.__post_init__()

    def __post_init__(self) -> None:
        """Finish initialization (also run by a dataclass subclass's constructor)."""
        super().__post_init__()

    def load(self, key: str) -> Any:
        if self.delegate is None:
            raise self.missing_error(key)
        return self.delegate.load(key)

    def get(self, key: str, default: Any = None) -> Any:
        if self.delegate is None:
            return default
        return self.delegate.get(key, default)

    def dump(self, key: str, value: Any) -> None:
        if self.delegate is not None:
            self.delegate.dump(key, value)

    def delete(self, key: str) -> None:
        if self.delegate is not None:
            self.delegate.delete(key)

    def keys(self) -> Iterable[str]:
        return () if self.delegate is None else self.delegate.keys()

    def exists(self, key: str) -> bool:
        return self.delegate is not None and self.delegate.exists(key)

    def clear(self) -> None:
        if self.delegate is not None:
            self.delegate.clear()

    def __len__(self) -> int:
        return 0 if self.delegate is None else len(self.delegate)

    def begin_group(self) -> None:
        if self.delegate is not None:
            self.delegate.begin_group()

    def flush(self) -> None:
        if self.delegate is not None:
            self.delegate.flush()

    def close(self) -> None:
        if isinstance(self.delegate, CloseableStash):
            self.delegate.close()
        super().close()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r})'


@dataclass(init=False, repr=False, eq=False)
class KeyLimitStash(DelegateStash):
    """Shows only the first ``limit`` keys of its delegate; handy to debug.

    Items past the limit are invisible: not listed, not loadable, not
    counted.

    Args:
        delegate: the stash to limit.
        limit: how many keys to show; unlimited by default, as in zensols.
    """

    limit: int = sys.maxsize

    def __init__(self, delegate: Optional[Stash] = None, limit: int = sys.maxsize) -> None:
        self.delegate = delegate
        self.limit = limit
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f'limit must be an int >= 0, not {self.limit!r}')

    def keys(self) -> list[str]:
        return list(islice(super().keys(), self.limit))

    def exists(self, key: str) -> bool:
        return key in self.keys()

    def load(self, key: str) -> Any:
        if not self.exists(key):
            raise self.missing_error(key)
        return super().load(key)

    def get(self, key: str, default: Any = None) -> Any:
        # Route through load so the limit applies.
        return Stash.get(self, key, default)

    def __len__(self) -> int:
        return len(self.keys())

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r}, limit={self.limit})'


class _HasData:
    """Remembers whether ``self.delegate`` holds any data.

    Mixed in before a :class:`DelegateStash` subclass; writes through the
    stash keep the answer right, so it costs one key listing at most.
    """

    delegate: Optional[Stash]
    _has_data: Optional[bool] = None

    @property
    def has_data(self) -> bool:
        """Whether the delegate has at least one item."""
        if self._has_data is None:
            # keys(), not iteration: iterating a stash would load the values.
            self._has_data = self.delegate is not None and any(True for _ in self.delegate.keys())  # noqa: SIM118
        return self._has_data

    def reset_has_data(self) -> None:
        """Forget :attr:`has_data` so the next use lists the delegate again."""
        self._has_data = None

    # The zensols spellings, for subclasses written against zensols.
    def _reset_has_data(self) -> None:
        self._has_data = None

    def _set_has_data(self, has_data: bool = True) -> None:
        self._has_data = has_data

    def dump(self, key: str, value: Any) -> None:
        super().dump(key, value)  # type: ignore[misc]
        self._has_data = True

    def delete(self, key: str) -> None:
        super().delete(key)  # type: ignore[misc]
        self.reset_has_data()

    def clear(self) -> None:
        super().clear()  # type: ignore[misc]
        self.reset_has_data()


class PreemptiveStash(_HasData, DelegateStash):
    """Knows whether its delegate holds any data yet (:attr:`has_data`).

    Subclasses use it to decide whether data must be created before it is
    read.
    """


@dataclass(init=False, repr=False, eq=False)
class PrimeableStash(DelegateStash):
    """Runs :meth:`prime` before every CRUD call.

    :meth:`prime` does whatever preparatory work the stash needs (create
    data, open a resource); it must be cheap once done, since every read
    calls it.  The default does nothing.

    As in zensols, a dataclass subclass does not take a delegate first (a
    zensols ``PrimeableStash`` has none): ``delegate`` is an optional
    keyword there.
    """

    delegate: Optional[Stash] = field(default=None, kw_only=True)

    def prime(self) -> None:
        """Do preparatory work; called before any CRUD method.

        This one primes the delegate when it is primeable too, as zensols
        does, so a subclass that calls ``super().prime()`` finds the stash
        below it ready.
        """
        if isinstance(self.delegate, PrimeableStash):
            self.delegate.prime()

    def load(self, key: str) -> Any:
        self.prime()
        return super().load(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.prime()
        return super().get(key, default)

    def dump(self, key: str, value: Any) -> None:
        self.prime()
        super().dump(key, value)

    def delete(self, key: str) -> None:
        self.prime()
        super().delete(key)

    def keys(self) -> Iterable[str]:
        self.prime()
        return super().keys()

    def exists(self, key: str) -> bool:
        self.prime()
        return super().exists(key)

    def __len__(self) -> int:
        self.prime()
        return super().__len__()


@dataclass(init=False, repr=False, eq=False)
class PrimablePreemptiveStash(_HasData, PrimeableStash):
    """A :class:`PrimeableStash` that also knows whether it has data.

    The usual :meth:`prime` creates the data when :attr:`has_data` is
    false (see :class:`~stashworks.OneShotFactoryStash` and
    :class:`~stashworks.MultiProcessStash`).  :attr:`has_data` itself
    never primes.  A dataclass subclass takes ``delegate`` first, as in
    zensols.
    """

    # Positional and required again, as zensols' PreemptiveStash has it.
    delegate: Optional[Stash] = field(kw_only=False)


PrimeablePreemptiveStash = PrimablePreemptiveStash
"""Alternative spelling of :class:`PrimablePreemptiveStash`."""
