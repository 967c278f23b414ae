"""The method-level cache: :func:`persisted`, :class:`PersistedWork`, :class:`PersistableContainer`.

A method decorated with ``@persisted('_name')`` runs once per instance; its
result is kept in the instance, optionally shared by every instance of the
class (``cache_global``) and optionally written to a file that later
instances, and later runs of the program, read instead of running the
method again.  A :class:`PersistedWork` is the state behind one such
method; a :class:`PersistableContainer` makes instances that hold them
picklable.

Where the value lives: a :class:`PersistedWork` stored in the instance
attribute ``_name`` keeps its cached value in the instance ``__dict__``
under the key ``'_name:value'`` (never a valid identifier, so it cannot
clash with an attribute).  The decorated method looks there first, which is
what makes a cache hit nearly as cheap as a hand-written memoizing property.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import weakref
from copy import copy
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional, TypeVar, Union, cast

from ._atomic import atomic_write
from .dealloc import Deallocatable
from .errors import PersistError, StashCorruptError, StashReadError, StashWriteError
from .serial import Serializer, default_serializer, serialize_into
from .stash import MISSING

__all__ = ['PersistableContainer', 'PersistedWork', 'persisted']

logger = logging.getLogger(__name__)

_F = TypeVar('_F', bound=Callable[..., Any])

# Values cached with ``cache_global``: class -> {value key: value}.  Weak keys,
# so a class that goes away (a test's local class) takes its values with it.
_GLOBALS: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()

_VALUE_SUFFIX = ':value'


def _value_key(attr: str) -> str:
    """The instance ``__dict__`` key holding the value of the work stored in ``attr``."""
    # Interned, so the key the hit path looks up is the very object stored in
    # the dict and the lookup ends at an identity check, not a string compare.
    return sys.intern(attr + _VALUE_SUFFIX)


class PersistedWork(Deallocatable):
    """The cached result of one method (or worker) for one owner.

    On a call, the value is looked up in order: in the owner, in the
    class-wide cache (with ``cache_global``), in the file (with a ``path``);
    only if all miss is the worker run, and its result stored at every
    level.  A worker that raises stores nothing anywhere.

    Usually created by :func:`persisted` on first use; create one yourself in
    the owner's ``__init__`` (under the attribute name given to
    :func:`persisted`) to choose a file per instance, as in::

        self._counter = PersistedWork(Path('counter.dat'), self, mkdir=True)

    Args:
        path: a :class:`~pathlib.Path` (or other :class:`os.PathLike`) to
            keep the value in a file as well, or a ``str`` (a name) or
            ``None`` to keep it in memory only.  A relative path is resolved
            against the working directory at the time the file is used.
        owner: the object whose attribute this work is; its ``__dict__``
            holds the cached value.
        cache_global: also share the value with every instance of the
            owner's class (not with subclasses), for the life of the process.
        transient: leave the value out when the owner is pickled (it is
            recomputed, or read from the file, after unpickling).
        initial_value: a value to start with, as if the worker had already
            returned it; only kept in memory, nothing is written.
        mkdir: create the file's missing parent directories when writing.
        deallocate_recursive: on :meth:`deallocate`, also walk containers
            in the value to deallocate what they hold.
        recover_empty: treat an empty file as no file (files this class
            writes are never empty, but a file from elsewhere may be).
        serializer: how the value becomes the file's bytes; pickle (highest
            protocol) by default.
        worker: what :meth:`__call__` runs on a miss (see :meth:`__do_work__`).

    Raises:
        PersistError: ``initial_value`` is given and ``owner`` has no
            instance ``__dict__`` to cache it in.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str], None],
        owner: Any,
        cache_global: bool = False,
        transient: bool = False,
        initial_value: Any = MISSING,
        mkdir: bool = False,
        deallocate_recursive: bool = False,
        recover_empty: bool = False,
        serializer: Optional[Serializer] = None,
        worker: Optional[Callable[..., Any]] = None,
    ) -> None:
        # A str is a name, not a path (checked first: it is the common case
        # and cheaper than the isinstance check against the PathLike ABC).
        self.name: Optional[str] = path if isinstance(path, str) else None
        self.path: Optional[Path] = None if path is None or self.name is not None else Path(path)
        self.owner: Any = owner
        self.cache_global = cache_global
        self.transient = transient
        self.mkdir = mkdir
        self.deallocate_recursive = deallocate_recursive
        self.recover_empty = recover_empty
        self.serializer: Serializer = default_serializer if serializer is None else serializer
        self.worker = worker
        # The owner ``__dict__`` key the value lives under, decided on first
        # need (see ``varname``); None until then.
        self._varname: Optional[str] = None
        self._deallocated = False
        if initial_value is not MISSING:
            self._store(initial_value)

    @property
    def use_disk(self) -> bool:
        """Whether the value is also kept in a file."""
        return self.path is not None

    @property
    def varname(self) -> str:
        """The key under which the owner's ``__dict__`` holds the value.

        It follows the attribute of the owner that holds this work
        (``'_counter'`` gives ``'_counter:value'``), so the decorated method
        finds the value without going through this object.
        """
        if self._varname is None:
            self._varname = self._find_varname()
        return self._varname

    def _find_varname(self) -> str:
        d = getattr(self.owner, '__dict__', None)
        if d is not None:
            for attr, value in d.items():
                if value is self:
                    return _value_key(attr)
        # Not (yet) an attribute of its owner, e.g. ``initial_value`` set in
        # the constructor; :meth:`_bind` moves the value once the name is known.
        return _value_key(self.name if self.name is not None else f'<{self.path}>')

    def _bind(self, key: str) -> None:
        """Settle the value key (of the attribute holding this work), moving any value already cached."""
        old = self._varname
        self._varname = key
        if old is None or old == key:
            return
        d = self._owner_dict()
        if old in d:
            d[key] = d.pop(old)
        if self.cache_global:
            g = _GLOBALS.get(type(self.owner))
            if g is not None and old in g:
                g[key] = g.pop(old)

    def _owner_dict(self) -> dict[str, Any]:
        if self._deallocated:
            raise PersistError(f'{self!r} was deallocated and cannot be used')
        if self.owner is None:
            raise PersistError(f'{self!r} has no owner to cache in (set its .owner)')
        try:
            return cast(dict[str, Any], self.owner.__dict__)
        except AttributeError:
            raise PersistError(
                f'{type(self.owner).__qualname__} instances have no __dict__ to cache {self!r} in'
            ) from None

    # -- reading and writing the value --------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Return the value, computing it with :meth:`__do_work__` on a miss.

        Raises:
            PersistError: no owner, deallocated, or no worker to run.
            StashCorruptError: the file exists but cannot be read.
            StashReadError: the file cannot be opened (permissions, a folder).
            SerializationError: the value cannot be serialized to the file.
            StashWriteError: the file cannot be written.
        """
        return self._get(lambda: self.__do_work__(*args, **kwargs))

    def __do_work__(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the value: runs :attr:`worker`; override in a subclass instead if you like.

        Raises:
            PersistError: there is no worker.
        """
        if self.worker is None:
            raise PersistError(f'{self!r} has no worker to compute its value')
        return self.worker(*args, **kwargs)

    def _get(self, compute: Callable[[], Any]) -> Any:
        d = self._owner_dict()
        key = self.varname
        value = d.get(key, MISSING)
        if value is not MISSING:
            return value
        if self.cache_global:
            value = _GLOBALS.get(type(self.owner), {}).get(key, MISSING)
            if value is not MISSING:
                d[key] = value
                return value
        if self.path is not None:
            value = self._load()
            if value is MISSING:
                self._check_parent()
                value = self._compute(compute)
                self._write(value)
        else:
            value = self._compute(compute)
        self._store(value)
        return value

    def _compute(self, compute: Callable[[], Any]) -> Any:
        if not logger.isEnabledFor(logging.DEBUG):
            return compute()
        start = time.perf_counter()
        value = compute()
        logger.debug('computed %r in %.3fs', self, time.perf_counter() - start)
        return value

    def _store(self, value: Any) -> None:
        """Cache ``value`` in memory: the owner, and the class with ``cache_global``."""
        self._owner_dict()[self.varname] = value
        if self.cache_global:
            _GLOBALS.setdefault(type(self.owner), {})[self.varname] = value

    def _describe(self) -> str:
        # The owner's type, not its repr: a repr may itself use this value.
        return f'{self.varname[: -len(_VALUE_SUFFIX)]!r} of {type(self.owner).__qualname__}'

    def _load(self) -> Any:
        """The value in the file, or MISSING when there is no (usable) file."""
        assert self.path is not None
        try:
            fh = open(self.path, 'rb')  # noqa: SIM115 (closed by the with below; only open() may mean "no file")
        except FileNotFoundError:
            return MISSING
        except OSError as exc:
            raise StashReadError(
                f'cannot read persisted value {self._describe()} from {self.path}: {exc.strerror or exc}'
            ) from exc
        with fh:
            if self.recover_empty and os.fstat(fh.fileno()).st_size == 0:
                logger.info('ignoring empty file %s for %s', self.path, self._describe())
                return MISSING
            try:
                value = self.serializer.load(fh)
            except Exception as exc:
                raise StashCorruptError(
                    f'cannot read persisted value {self._describe()} from {self.path}: '
                    f'{type(exc).__name__}: {exc or "(no message)"}'
                ) from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('loaded %s from %s', self._describe(), self.path)
        return value

    def _check_parent(self) -> None:
        # Checked before computing, so a typo in a path fails before an hour
        # of work, not after.
        assert self.path is not None
        parent = self.path.parent
        if parent.is_dir():
            return
        if not self.mkdir:
            raise PersistError(
                f'cannot persist {self._describe()} to {self.path}: directory {parent} does not exist '
                '(pass mkdir=True to create it)'
            )
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StashWriteError(f'cannot create directory {parent} for {self._describe()}: {exc}') from exc

    def _write(self, value: Any) -> None:
        assert self.path is not None
        path = self.path

        def write(fh: IO[bytes]) -> None:
            serialize_into(self.serializer, value, fh, f'persisted value {self._describe()} for {path}')

        try:
            atomic_write(path, write)
        except OSError as exc:
            err = StashWriteError(f'cannot write persisted value {self._describe()} to {path}: {exc.strerror or exc}')
            err.errno = exc.errno
            raise err from exc
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('wrote %s to %s', self._describe(), path)

    # -- public state management --------------------------------------------

    def set(self, value: Any) -> None:
        """Make ``value`` the cached value, as if the worker had returned it.

        With a ``path`` the file is (atomically) rewritten first; if that
        fails, neither the file nor the in-memory value changes.

        Raises:
            PersistError: no owner, or deallocated.
            SerializationError: the value cannot be serialized.
            StashWriteError: the file cannot be written.
        """
        self._owner_dict()
        if self.path is not None:
            self._check_parent()
            self._write(value)
        self._store(value)

    def is_set(self) -> bool:
        """Whether a value is cached in memory (in the owner or class-wide); the file is not consulted."""
        if self.owner is None or self._deallocated:
            return False
        if self.varname in self._owner_dict():
            return True
        return self.cache_global and self.varname in _GLOBALS.get(type(self.owner), {})

    def clear_global(self) -> None:
        """Forget only the class-wide value (``cache_global``)."""
        if self.owner is not None:
            _GLOBALS.get(type(self.owner), {}).pop(self.varname, None)

    def clear(self) -> None:
        """Forget the value everywhere: owner, class-wide cache and file.

        The next call computes it again.
        """
        if self.path is not None:
            try:
                self.path.unlink()
                logger.debug('deleted %s', self.path)
            except FileNotFoundError:
                pass
        if self.owner is not None and not self._deallocated:
            self._owner_dict().pop(self.varname, None)
        self.clear_global()

    def deallocate(self) -> None:
        """Deallocate the cached value (if :class:`Deallocatable`) and detach from the owner.

        The value leaves the owner and the class-wide cache; the file stays.
        The work cannot be used afterwards.
        """
        super().deallocate()
        if self._deallocated:
            return
        owner = self.owner
        if owner is not None:
            d = getattr(owner, '__dict__', {})
            value = d.pop(self.varname, MISSING)
            g = _GLOBALS.get(type(owner), {})
            global_value = g.pop(self.varname, MISSING)
            for v in {id(v): v for v in (value, global_value) if v is not MISSING}.values():
                self._try_deallocate(v, self.deallocate_recursive)
        self.owner = None
        self.worker = None
        self._deallocated = True

    # -- pickling ------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # The owner stays: pickled with its owner it is only a back-reference,
        # and a work that forgot its owner could not clear the owner's value.
        # The worker is often a closure or bound method that cannot travel.
        state = copy(self.__dict__)
        state['worker'] = None
        return state

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else (self.name or 'memory')
        owner = type(self.owner).__qualname__ if self.owner is not None else None
        return f'{type(self).__name__}({where!r}, owner={owner})'


class PersistableContainer(Deallocatable):
    """A base for classes whose instances hold :class:`PersistedWork` and are pickled.

    Pickling (and :func:`copy.deepcopy`) leaves out the value of every
    transient work, so it is computed again (or read from its file) after
    unpickling; the other cached values travel and are used as they are.
    Unpickling makes the new instance the owner of each work.
    :meth:`deallocate` deallocates every work, and through it every cached
    value that is :class:`Deallocatable`.

    Class attributes tune pickling (each a collection of attribute names):

    - ``_PERSISTABLE_TRANSIENT_ATTRIBUTES``: pickled as ``None``;
    - ``_PERSISTABLE_REMOVE_ATTRIBUTES``: left out of the pickle;
    - ``_PERSISTABLE_PROPERTIES``: read before pickling, so their values are
      computed and travel with the instance;
    - ``_PERSISTABLE_METHODS``: called (without arguments) before pickling,
      for the same reason.

    The spellings ``_PERSITABLE_*`` are also accepted.
    """

    def _persistable_option(self, name: str) -> tuple[str, ...]:
        found: Optional[Iterable[str]] = getattr(self, '_PERSISTABLE_' + name, None)
        if found is None:
            found = getattr(self, '_PERSITABLE_' + name, ())
        return tuple(found or ())

    def __getstate__(self) -> dict[str, Any]:
        for attr in self._persistable_option('PROPERTIES'):
            getattr(self, attr)
        for attr in self._persistable_option('METHODS'):
            getattr(self, attr)()
        state = dict(self.__dict__)
        for work in _works(state):
            if work.transient:
                # Removed rather than set to None: None is a valid cached
                # value, and a missing key is what makes it recompute.
                state.pop(work.varname, None)
        for attr in self._persistable_option('TRANSIENT_ATTRIBUTES'):
            state[attr] = None
        for attr in self._persistable_option('REMOVE_ATTRIBUTES'):
            state.pop(attr, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for work in _works(state):
            work.owner = self
            if work._varname is not None:
                # Unpickled strings are not interned: re-key the value under
                # the interned key so cache hits stay an identity check.
                key = work._varname = sys.intern(work._varname)
                if key in state:
                    state[key] = state.pop(key)
        self.__dict__.update(state)

    def _clear_persistable_state(self) -> None:
        """Clear every :class:`PersistedWork` of this instance (including their files)."""
        for work in _works(self.__dict__):
            work.clear()

    def deallocate(self) -> None:
        """Deallocate every :class:`PersistedWork` this instance holds."""
        super().deallocate()
        for work in _works(self.__dict__):
            work.deallocate()


def _works(d: dict[str, Any]) -> list[PersistedWork]:
    return [v for v in d.values() if isinstance(v, PersistedWork)]


def persisted(
    name: str,
    path: Union[str, os.PathLike[str], None] = None,
    cache_global: bool = False,
    transient: bool = False,
    allocation_track: bool = True,
    mkdir: bool = False,
    deallocate_recursive: bool = False,
    recover_empty: bool = False,
    serializer: Optional[Serializer] = None,
) -> Callable[[_F], _F]:
    """Cache a method's result in the instance attribute ``name``, and optionally in a file.

    The first call runs the method; later calls return the cached value,
    ``None`` included.  If the instance already has a :class:`PersistedWork`
    in ``name`` (made in ``__init__``), its settings are used and the ones
    given here are ignored; otherwise one is created from them on first use.
    Put the decorator directly above the method, below ``@property``::

        @property
        @persisted('_count', path='count.dat', mkdir=True)
        def count(self) -> int:
            return expensive()

    The method should take no arguments besides ``self``.  Arguments given
    to a call are passed on to the call that computes the value (so a method
    taking only ``self`` raises :class:`TypeError` then), and ignored once
    the value is cached, as in zensols.
    Each decorated method of a class needs its own ``name``.

    Args:
        name: the instance attribute holding the :class:`PersistedWork`.
        path: a file to keep the value in (a ``str`` is taken as a path
            here); ``None`` keeps it in memory only.
        cache_global: share the value with every instance of the class.
        transient: leave the value out when a :class:`PersistableContainer`
            instance is pickled.
        allocation_track: accepted for zensols' argument order; it has no
            effect (stashworks keeps no allocation tracking).
        mkdir: create the file's missing parent directories.
        deallocate_recursive: see :class:`PersistedWork`.
        recover_empty: treat an empty file as no file.
        serializer: how the value is written to the file (pickle by default).

    Raises:
        PersistError: (on call) ``name`` holds something else than a
            :class:`PersistedWork`, or the instance has no ``__dict__``.
        StashCorruptError: (on call) the file cannot be read back.
        SerializationError, StashWriteError: (on call) the file cannot be
            written; the value is then not cached either.
    """
    file_path = Path(path) if path is not None else None
    key = _value_key(name)

    def decorate(method: _F) -> _F:
        def resolve(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            # The slow path: find or create the work, then let it look in the
            # class-wide cache and the file before running the method.
            try:
                d = obj.__dict__
            except AttributeError:
                raise PersistError(
                    f'@persisted({name!r}) needs instances with a __dict__; {type(obj).__qualname__} has none'
                ) from None
            work = d.get(name)
            if work is None:
                work = PersistedWork(
                    file_path if file_path is not None else name,
                    obj,
                    cache_global=cache_global,
                    transient=transient,
                    mkdir=mkdir,
                    deallocate_recursive=deallocate_recursive,
                    recover_empty=recover_empty,
                    serializer=serializer,
                )
                d[name] = work
            elif not isinstance(work, PersistedWork):
                raise PersistError(
                    f'@persisted({name!r}) on {type(obj).__qualname__}.{method.__name__}: attribute '
                    f'{name!r} holds a {type(work).__name__}, not a PersistedWork'
                )
            elif work.owner is not obj:
                if work.owner is None and not work._deallocated:
                    # Made without an owner: the instance it is found in is it.
                    work.owner = obj
                elif work.owner is not None:
                    # A shallow copy of the owner shares the work object; give
                    # the copy its own so the two never share a cache entry.
                    work = copy(work)
                    work.owner = obj
                    d[name] = work
            work._bind(key)
            if kwargs:
                return work._get(lambda: method(obj, *args, **kwargs))
            return work._get(lambda: method(obj, *args))

        # The hit path is one dict lookup; the slow call happens outside the
        # ``except`` block so an error in the method is not chained to a
        # KeyError that means nothing to the user.  Arguments are accepted
        # and, once the value is cached, ignored, as zensols does.
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return self.__dict__[key]
            except (KeyError, AttributeError):
                pass
            return resolve(self, args, kwargs)

        return cast(_F, functools.wraps(method)(wrapper))

    return decorate
