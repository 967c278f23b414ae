"""A stash kept in memory, in a plain ``dict``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from .stash import MISSING, Stash, check_key

__all__ = ['DictionaryStash']


@dataclass(init=False, repr=False, eq=False)
class DictionaryStash(Stash):
    """A stash backed by a ``dict``: fast, private to the process, gone on exit.

    It is the default cache of :class:`~stashworks.CacheStash` and a handy
    delegate in tests.

    Args:
        data: the dict to use (and share with the caller); a new one by
            default.
    """

    data: dict[str, Any] = field(default_factory=dict)

    def __init__(self, data: Optional[dict[str, Any]] = None) -> None:
        self.data = {} if data is None else data

    def load(self, key: str) -> Any:
        """Return the value under ``key``.

        Raises:
            KeyError: (a :class:`~stashworks.errors.StashKeyError`) when
                ``key`` is not in the stash.
            TypeError: when ``key`` is not a ``str``.
        """
        value = self.data.get(check_key(key, self), MISSING)
        if value is MISSING:
            raise self.missing_error(key)
        return value

    # Overridden: one dict lookup instead of load + KeyError.
    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def dump(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``.

        Raises:
            TypeError: when ``key`` is not a ``str``.
        """
        self.data[check_key(key, self)] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self) -> list[str]:
        # A copy, so callers may write while they iterate.
        return list(self.data)

    # The rest are overridden because a dict answers them directly.
    def exists(self, key: str) -> bool:
        return key in self.data

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(list(self.data.items()))

    def clear(self) -> None:
        self.data.clear()

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(<{len(self.data)} items>)'
