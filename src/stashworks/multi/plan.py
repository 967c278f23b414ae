"""Planning: which work units of a batch are still missing.

:func:`plan_batch` streams the work once, in blocks, and asks each store
which of a block's units it already holds.  A store answers through an
``exists_many(keys)`` method when it has one (an LMDB store can merge a
sorted block with its cursor); otherwise the default here lists the store
once and answers from that set, nothing unpickled.  docs/engine.md
describes the hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice, repeat
from operator import is_not, itemgetter
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ..errors import BatchError
from ..stash import Stash

__all__ = ['BLOCK', 'Membership', 'Plan', 'iter_pairs', 'plan_batch']

#: Units asked about at once.
BLOCK = 65_536


class Membership:
    """Which of some keys a store holds, asked block by block during one plan.

    Uses the store's own ``exists_many(keys) -> Sequence[bool]`` when it
    defines one; else lists the store once, on the first question.

    Args:
        store: the store asked.
    """

    def __init__(self, store: Stash) -> None:
        self.store = store
        hook: Optional[Callable[[Sequence[str]], Sequence[bool]]] = getattr(store, 'exists_many', None)
        self._hook = hook if callable(hook) else None
        self._listing: Optional[set[str]] = None

    def __call__(self, keys: Sequence[str]) -> Sequence[bool]:
        """For each of ``keys``, in order, whether the store holds it."""
        if self._hook is not None:
            answer = self._hook(keys)
            if len(answer) != len(keys):
                raise BatchError(f'{self.store!r}.exists_many answered {len(answer)} times for {len(keys)} keys')
            return answer
        if self._listing is None:
            self._listing = set(self.store.keys())
        listing = self._listing
        return [key in listing for key in keys]


@dataclass
class Plan:
    """What a batch has to do.

    Attributes:
        missing: the units to compute, in work order, each once.
        payload: the unit objects of ``missing`` by identity, when units
            are not their identities (else ``None``).
        done_before: units already complete.
        failed_before: units skipped because a failure was recorded.
    """

    missing: list[str]
    payload: Optional[dict[str, Any]]
    done_before: int
    failed_before: int

    @property
    def total(self) -> int:
        """Units in the whole batch."""
        return self.done_before + self.failed_before + len(self.missing)


def iter_pairs(keys: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """``(key, None)`` for each key: work whose keys are the units."""
    return zip(keys, repeat(None))


def plan_batch(
    work: Iterable[tuple[str, Any]], delegate: Stash, failures: Stash, skip_failed: bool = True, block: int = BLOCK
) -> Plan:
    """Split the work into missing units and units already settled.

    Args:
        work: ``(identity, unit)`` pairs, streamed once; ``unit`` is
            ``None`` when the identity is the unit.
        delegate: the store of items; a unit it holds is done.
        failures: the failure records; a unit with one is skipped.
        skip_failed: leave units with a recorded failure out.
        block: units asked about at once.

    Raises:
        BatchError: an identity is not a ``str`` (the message shows it).
    """
    stored, failed = Membership(delegate), Membership(failures)
    missing: list[str] = []
    seen: set[str] = set()
    payload: Optional[dict[str, Any]] = None
    done_before = failed_before = 0
    counted = 0
    pairs = iter(work)
    while True:
        batch = list(islice(pairs, block))
        if not batch:
            break
        ids = list(map(itemgetter(0), batch))
        # One pass in C for the usual case; the slow one names the culprit.
        if set(map(type, ids)) != {str} and not all(isinstance(key, str) for key in ids):
            n, key = next((n, k) for n, k in enumerate(ids, counted) if not isinstance(k, str))
            raise BatchError(f'work key #{n} is not a str but {type(key).__name__}: {key!r}')
        counted += len(ids)
        open_ids = []
        for key, present in zip(ids, stored(ids), strict=True):
            if key in seen:
                continue  # counted once even if the work repeats it
            seen.add(key)
            if present:
                done_before += 1
            else:
                open_ids.append(key)
        recorded = failed(open_ids) if skip_failed and open_ids else [False] * len(open_ids)
        # Identity only: a unit's own __eq__ may not answer a bool.
        units = dict(batch) if any(map(is_not, map(itemgetter(1), batch), repeat(None))) else None
        for key, has_failed in zip(open_ids, recorded, strict=True):
            if has_failed:
                failed_before += 1
                continue
            missing.append(key)
            if units is not None and units.get(key) is not None:
                if payload is None:
                    payload = {}
                payload[key] = units[key]
    return Plan(missing, payload, done_before, failed_before)
