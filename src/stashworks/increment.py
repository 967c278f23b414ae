"""A directory stash that numbers its items itself."""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from .directory import DirectoryStash
from .errors import StashKeyError
from .serial import Serializer
from .stash import MISSING

__all__ = ['IncrementKeyDirectoryStash']


def _as_number(key: str) -> Optional[int]:
    """The number ``key`` spells in canonical form ('7', not '07' or '+7'), else ``None``."""
    if key.isascii() and key.isdigit() and (key == '0' or not key.startswith('0')):
        return int(key)
    return None


class IncrementKeyDirectoryStash(DirectoryStash):
    """A :class:`DirectoryStash` whose items are numbered 1, 2, 3...

    ``dump(value)`` stores ``value`` under the next number (the last key
    plus one) and ``load()`` returns the last item, which makes the stash a
    simple history of results.  Files are named ``{name}-{key}.dat``.

    The usual two-argument ``dump(key, value)`` and ``load(key)`` still
    work with any ``str`` key; only keys that are non-negative integers in
    canonical form (``'12'``, not ``'012'``) count as numbers.

    The last number is remembered after the first listing; several
    processes appending to one directory at the same time may pick the
    same number.

    Args:
        path: the directory.
        name: the prefix of every file name.
        serializer: how values become bytes (pickle by default).
        fsync: ``fsync`` each item before it replaces the old one.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        name: str = 'data',
        serializer: Optional[Serializer] = None,
        fsync: bool = False,
    ) -> None:
        super().__init__(path, pattern=f'{name}-{{name}}.dat', serializer=serializer, fsync=fsync)
        self.name = name
        self._last: Optional[int] = None

    def _last_number(self) -> Optional[int]:
        if self._last is None:
            numbers = [n for n in map(_as_number, self.keys()) if n is not None]
            self._last = max(numbers) if numbers else None
        return self._last

    def get_last_key(self) -> Optional[str]:
        """The highest numbered key, or ``None`` if there is none."""
        last = self._last_number()
        return None if last is None else str(last)

    def dump(self, key: Any, value: Any = MISSING) -> None:
        """Store ``value`` under ``key``, or ``dump(value)`` under the next number.

        Raises:
            TypeError: when ``key`` (in the two-argument form) is not a ``str``.
            SerializationError: when ``value`` cannot be serialized.
            StashWriteError: when the file cannot be written.
        """
        if value is MISSING:
            key, value = str((self._last_number() or 0) + 1), key
        super().dump(key, value)
        number = _as_number(key)
        # A None _last is listed afresh next time, and the listing sees this key.
        if number is not None and self._last is not None and number > self._last:
            self._last = number

    def load(self, key: Optional[str] = None) -> Any:
        """Return the item under ``key``, or the last numbered item if ``key`` is ``None``.

        Raises:
            KeyError: when there is no such item (or no numbered item at all).
        """
        if key is None:
            last = self.get_last_key()
            if last is None:
                raise StashKeyError(f'no numbered item to load in {self!r}')
            key = last
        return super().load(key)

    def delete(self, key: str) -> None:
        super().delete(key)
        self._last = None

    def clear(self) -> None:
        super().clear()
        self._last = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}', name={self.name!r})"
