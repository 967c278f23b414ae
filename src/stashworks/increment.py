"""A directory stash that numbers its items itself."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Any, Optional, Union

from ._atomic import atomic_create
from .directory import DirectoryStash, _errno_name
from .errors import StashKeyError, StashWriteError
from .serial import Serializer, serialize_into
from .stash import MISSING, check_key

__all__ = ['IncrementKeyDirectoryStash']

_DEFAULT_PATTERN = '{name}.dat'


def _as_number(key: str) -> Optional[int]:
    """The number ``key`` spells in canonical form ('7', not '07' or '+7'), else ``None``."""
    if key.isascii() and key.isdigit() and (key == '0' or not key.startswith('0')):
        return int(key)
    return None


@dataclass(init=False, repr=False, eq=False)
class IncrementKeyDirectoryStash(DirectoryStash):
    """A :class:`DirectoryStash` whose items are numbered 1, 2, 3...

    ``dump(value)`` stores ``value`` under the next number (the last key
    plus one) and ``load()`` returns the last item, which makes the stash a
    simple history of results.  Files are named ``{name}-{key}.dat``.

    Keys are numbers written in canonical form (``'12'``, not ``'012'``):
    :meth:`keys` and ``len()`` count only those, as in zensols, and
    ``dump(key, value)`` refuses any other key.  The next number is read
    from the folder at every ``dump(value)``, never from a count kept in
    memory, and the new file is created without replacing an existing one:
    several stash objects, or processes, appending to one folder never
    overwrite each other's items.

    Args:
        path: the directory.
        pattern: accepted for zensols' argument order only; the file names
            always follow ``name``.
        name: the prefix of every file name.
        serializer: how values become bytes (pickle by default).
        fsync: ``fsync`` each item before it is moved into place.

    Raises:
        ValueError: a ``pattern`` other than the default (pass ``name=``).
    """

    name: str = 'data'

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        pattern: str = _DEFAULT_PATTERN,
        name: str = 'data',
        serializer: Optional[Serializer] = None,
        fsync: bool = False,
    ) -> None:
        self.path = path  # type: ignore[assignment]  # the setter makes it a Path
        self.pattern = pattern
        self.name = name
        self.serializer = serializer
        self.fsync = fsync
        self.raw_names = False
        self.case_insensitive = None
        self.__post_init__()

    def __post_init__(self) -> None:
        own = f'{self.name}-{{name}}.dat'
        if self.pattern not in (_DEFAULT_PATTERN, own):
            raise ValueError(
                f'IncrementKeyDirectoryStash names its files {own!r}: the second argument, pattern, '
                f'is not used (zensols ignores it); write IncrementKeyDirectoryStash(path, name={self.pattern!r}) '
                'to choose the prefix'
            )
        if '/' in self.name or os.sep in self.name:
            raise ValueError(f"name may not hold a '/': {self.name!r}")
        self.pattern = own
        super().__post_init__()

    def _numbers(self) -> list[int]:
        return [n for n in map(_as_number, super().keys()) if n is not None]

    def _check_number(self, key: Any, op: str) -> str:
        if _as_number(check_key(key, self)) is None:
            raise ValueError(
                f'cannot {op} {key!r} in {self!r}: its keys are numbers (1, 2, 3...); '
                'store named items in a DirectoryStash'
            )
        return key

    def get_last_key(self, inc: bool = False) -> str:
        """The highest number in the folder (``'0'`` if there is none), read afresh.

        Args:
            inc: return the number after it, the key the next
                ``dump(value)`` would take.
        """
        numbers = self._numbers()
        last = max(numbers) if numbers else 0
        return str(last + 1 if inc else last)

    def keys(self) -> list[str]:
        return [key for key in super().keys() if _as_number(key) is not None]  # noqa: SIM118 (a stash iterates pairs)

    def __len__(self) -> int:
        return len(self._numbers())

    def exists(self, key: str) -> bool:
        return isinstance(key, str) and _as_number(key) is not None and super().exists(key)

    def dump(self, key: Any, value: Any = MISSING) -> None:
        """Store ``value`` under ``key``, or ``dump(value)`` under the next number.

        Raises:
            ValueError: ``key`` is not a number in canonical form.
            SerializationError: when ``value`` cannot be serialized.
            StashWriteError: when the file cannot be written.
        """
        if value is MISSING:
            self._append(key)
            return
        super().dump(self._check_number(key, 'dump'), value)

    def _append(self, value: Any) -> str:
        number = int(self.get_last_key(inc=True))
        self._fold_mode(create=True)
        while True:
            key = str(number)
            path = self._item_path(key)
            what = f'item {key!r} for {path} in {self!r}'

            def write(fh: IO[bytes], what: str = what) -> None:
                serialize_into(self.serializer, value, fh, what)  # type: ignore[arg-type]

            try:
                atomic_create(path, write, fsync=self.fsync)
                return key
            except FileExistsError:
                # Someone else took this number in the meantime: the next one.
                number += 1
            except FileNotFoundError:
                if self.path.is_dir():
                    raise
                # The folder went away (cleared by hand): make it again.
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                err = StashWriteError(f'cannot write item {key!r} to {path} in {self!r}: {_errno_name(exc)}')
                err.errno = exc.errno
                raise err from exc

    def load(self, key: Optional[str] = None) -> Any:
        """Return the item under ``key``, or the last numbered item if ``key`` is ``None``.

        Raises:
            KeyError: when there is no such item (or no numbered item at all).
        """
        if key is None:
            numbers = self._numbers()
            if not numbers:
                raise StashKeyError(f'no numbered item to load in {self!r}')
            key = str(max(numbers))
        elif not isinstance(key, str) or _as_number(key) is None:
            raise self.missing_error(key) if isinstance(key, str) else TypeError(f'stash keys are str, not {key!r}')
        return super().load(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.load(key)
        except KeyError:
            return default

    def delete(self, key: str) -> None:
        if isinstance(key, str) and _as_number(key) is not None:
            super().delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.path}', name={self.name!r})"
