"""Explicit release of resources held by long-lived objects.

Reference cycles and large buffers (arrays, tensors, open handles) can
outlive their use for a long time when left to the garbage collector.  A
class that extends :class:`Deallocatable` gives its users one method,
:meth:`~Deallocatable.deallocate`, to let such resources go now, and can be
used as a context manager that does so on exit.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar, Union

__all__ = ['Deallocatable', 'dealloc']

logger = logging.getLogger(__name__)

_D = TypeVar('_D', bound='Deallocatable')
_T = TypeVar('_T')


class Deallocatable:
    """An object that can release its resources on request.

    Subclasses override :meth:`deallocate`, free what they hold and call
    ``super().deallocate()``.  The helpers :meth:`_try_deallocate`,
    :meth:`_deallocate_attribute` and :meth:`_deallocate_attributes` free
    nested objects (attributes, or the items of lists, tuples, sets and
    dict values) that are themselves :class:`Deallocatable`.

    The class keeps no state of its own, so it mixes into any hierarchy,
    including classes with ``__slots__``.

    Example::

        with Model.load(path) as model:
            model.predict(batch)
        # model.deallocate() has run here, even if predict raised
    """

    # No instance state here, so subclasses may use ``__slots__``.
    __slots__ = ()

    def deallocate(self) -> None:
        """Release the resources this instance holds.

        Calling it again must be harmless; after it, the instance should not
        be used.
        """
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('deallocating %s at 0x%x', type(self).__qualname__, id(self))

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deallocate()

    @staticmethod
    def _try_deallocate(obj: Any, recursive: bool = False) -> bool:
        """Deallocate ``obj`` if it is :class:`Deallocatable`.

        Args:
            obj: any object.
            recursive: also walk lists, tuples, sets, frozensets and dict
                values (nested to any depth) and deallocate what they hold.

        Returns:
            whether ``obj`` (or, with ``recursive``, a container it is) was
            handled.
        """
        return _try_deallocate(obj, recursive, set())

    def _deallocate_attribute(self, attrib: str, recursive: bool = False) -> bool:
        """Deallocate the attribute ``attrib`` if it exists, then delete it.

        Deleting the attribute drops this instance's reference, so the
        object can be collected even if something else forgot to release it.

        Returns:
            whether the attribute's value was deallocated.
        """
        try:
            value = getattr(self, attrib)
        except AttributeError:
            return False
        done = self._try_deallocate(value, recursive)
        delattr(self, attrib)
        return done

    def _deallocate_attributes(self, attribs: Iterable[str], recursive: bool = False) -> int:
        """Apply :meth:`_deallocate_attribute` to each name in ``attribs``.

        Returns:
            how many of the values were deallocated.
        """
        return sum(self._deallocate_attribute(a, recursive) for a in attribs)


def _try_deallocate(obj: Any, recursive: bool, seen: set[int]) -> bool:
    # ``seen`` holds the ids of containers already walked, so a list that
    # (indirectly) contains itself does not recurse forever.
    if isinstance(obj, Deallocatable):
        obj.deallocate()
        return True
    if not recursive or not isinstance(obj, (list, tuple, set, frozenset, dict)):
        return False
    if id(obj) in seen:
        return True
    seen.add(id(obj))
    items = obj.values() if isinstance(obj, dict) else obj
    # A snapshot: deallocating an item may remove it from the container.
    for item in tuple(items):
        _try_deallocate(item, True, seen)
    return True


@contextmanager
def dealloc(inst: Union[_T, Callable[[], _T]]) -> Iterator[_T]:
    """Use an object in a ``with`` block and deallocate it on exit.

    ``inst`` is either the object or a callable that creates it (any
    callable that is not itself :class:`Deallocatable`, so a factory can be
    passed without calling it first).  On exit, :meth:`Deallocatable.deallocate`
    is called if the object is deallocatable, even when the block raised.

    Example::

        with dealloc(lambda: Vectorizer(path)) as vec:
            features = vec.transform(rows)
    """
    obj: Any = inst() if callable(inst) and not isinstance(inst, Deallocatable) else inst
    try:
        yield obj
    finally:
        Deallocatable._try_deallocate(obj)
