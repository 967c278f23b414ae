"""Stashes that combine or reorder other stashes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .stash import DelegateStash, ReadOnlyStash, Stash

__all__ = ['SortedStash', 'UnionStash']


@dataclass(init=False, repr=False, eq=False)
class UnionStash(ReadOnlyStash):
    """A read-only view of the items of several stashes, first one wins.

    A key held by more than one stash is loaded from the first of
    ``stashes`` that has it (a stored ``None`` counts as having it).
    :meth:`keys` is the union of every stash's keys, in order of first
    appearance, without duplicates.

    Args:
        stashes: the stashes to join, highest priority first.
    """

    stashes: tuple[Stash, ...]

    def __init__(self, stashes: Sequence[Stash]) -> None:
        self.stashes = tuple(stashes)
        self.__post_init__()

    def __post_init__(self) -> None:
        """Finish initialization (also run by a dataclass subclass's constructor)."""
        super().__post_init__()
        self.stashes = tuple(self.stashes)

    def load(self, key: str) -> Any:
        """Return the item from the first stash that has it.

        Raises:
            KeyError: when no stash has ``key``.
        """
        for stash in self.stashes:
            try:
                return stash.load(key)
            except KeyError:
                continue
        raise self.missing_error(key)

    def keys(self) -> list[str]:
        # dict.fromkeys keeps the first-seen order and drops duplicates.  The
        # explicit keys() matters: iterating a stash yields (key, value).
        return list(dict.fromkeys(key for stash in self.stashes for key in stash.keys()))  # noqa: SIM118

    def exists(self, key: str) -> bool:
        return any(stash.exists(key) for stash in self.stashes)

    def __len__(self) -> int:
        return len(self.keys())

    def __repr__(self) -> str:
        return f'{type(self).__name__}({list(self.stashes)!r})'


@dataclass(init=False, repr=False, eq=False)
class SortedStash(DelegateStash):
    """Lists the keys of ``delegate`` in sorted order.

    Iteration, :meth:`~Stash.items` and :meth:`~Stash.values` follow
    :meth:`keys`, so they come out sorted too.

    Args:
        delegate: the stash whose keys are sorted.
        sort_function: a sort key function, as for :func:`sorted`
            (``int`` sorts numeric keys by value); plain string order if
            ``None``.
    """

    sort_function: Optional[Callable[[str], Any]] = None

    def __init__(self, delegate: Optional[Stash] = None, sort_function: Optional[Callable[[str], Any]] = None) -> None:
        self.delegate = delegate
        self.sort_function = sort_function
        self.__post_init__()

    def keys(self) -> list[str]:
        return sorted(super().keys(), key=self.sort_function)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(delegate={self.delegate!r}, sort_function={self.sort_function!r})'
