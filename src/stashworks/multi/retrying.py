"""Retries of an item that raised: the factory called again, in the same worker.

``retries=N`` on a batch stash wraps its factory in :class:`Retrying`: an
item whose computation raises an :class:`Exception` (a network share that
hiccups, a service that times out) is computed again, up to ``N`` more
times, before its failure is recorded.  The record's ``attempts`` then
counts every call.  A worker's death is not an exception here: that is
``max_retries``, handled by the batch.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ['Retrying', 'with_retries']

logger = logging.getLogger(__name__)


class Retrying:
    """``func(unit)``, called again up to ``retries`` times while it raises an ``Exception``.

    The last exception propagates, with a ``stashworks_tries`` attribute
    saying how many calls were made (read by the failure record).

    Args:
        func: computes one item from its unit.
        retries: how many more calls after the first, ``>= 1``.
    """

    def __init__(self, func: Callable[[Any], Any], retries: int) -> None:
        if retries < 1:
            raise ValueError(f'retries must be >= 1 to wrap a function, not {retries!r}')
        self.func = func
        self.retries = retries

    @property
    def __wrapped__(self) -> Callable[[Any], Any]:
        # What names the work (a task's name, a log line): the user's function.
        return self.func

    def __call__(self, unit: Any) -> Any:
        for tried in range(1, self.retries + 1):
            try:
                return self.func(unit)
            except Exception as exc:
                logger.info(
                    'unit %r raised %s: %s; computing it again (retry %d of %d)',
                    unit,
                    type(exc).__name__,
                    exc,
                    tried,
                    self.retries,
                )
        try:
            return self.func(unit)
        except Exception as exc:
            try:
                exc.stashworks_tries = self.retries + 1  # type: ignore[attr-defined]
            except AttributeError:  # an exception with __slots__: its record says 1
                pass
            raise

    def __repr__(self) -> str:
        return f'Retrying({self.func!r}, retries={self.retries})'


def with_retries(func: Callable[[Any], Any], retries: int) -> Callable[[Any], Any]:
    """``func`` itself for ``retries == 0``, else a :class:`Retrying` around it."""
    return Retrying(func, retries) if retries > 0 else func
