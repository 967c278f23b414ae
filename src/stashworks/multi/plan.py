"""Planning: which work units of a batch are still missing.

:func:`plan_batch` streams the work once, in blocks, and asks each store
which of a block's units it already holds.  A store answers through an
``exists_many(keys)`` method when it has one (an LMDB store can merge a
sorted block with its cursor); otherwise the default here lists the store
once and answers from that set, nothing unpickled.  docs/engine.md
describes the hook.

Planning keeps little in memory however long the work is: the missing
units go to a :class:`KeySpool` (blocks beyond the first are pickled to an
unnamed temporary file), and units already seen are remembered exactly for
the first :data:`BLOCK` of them; beyond that, nothing while the work comes
in increasing order (no unit can repeat), else the missing ones in a
:class:`SeenFilter` of two bytes a unit.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from itertools import chain, compress, filterfalse, islice, repeat
from operator import is_not, itemgetter, lt
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from ..errors import BatchError
from ..stash import Stash

__all__ = [
    'BLOCK',
    'KeyPairs',
    'KeySpool',
    'Membership',
    'Plan',
    'SeenFilter',
    'identify',
    'iter_pairs',
    'plan_batch',
]

#: Units asked about at once, and the size of a spooled block.
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
        listing = self._listed()
        if not listing:
            return [False] * len(keys)
        return list(map(listing.__contains__, keys))

    def absent(self, keys: list[str]) -> list[str]:
        """The keys of ``keys`` the store does not hold, in order."""
        if self._hook is not None:
            held = self(keys)
            return [key for key, there in zip(keys, held, strict=True) if not there] if any(held) else keys
        listing = self._listed()
        # One pass in C: the planner's hot loop for a listed store.
        return list(filterfalse(listing.__contains__, keys)) if listing else keys

    def _listed(self) -> set[str]:
        if self._listing is None:
            self._listing = set(self.store.keys())
        return self._listing


class KeySpool:
    """Units in work order, appended once, then taken from the front.

    The first :data:`BLOCK` units stay in memory; beyond that, every full
    block is pickled to an unnamed temporary file (nothing is left behind,
    whatever ends the process) and read back one block at a time, so ten
    million keys cost a block of memory, not ten million strings.

    Args:
        units: units to start with.
        directory: where the temporary file goes (a folder of the output
            keeps the keys off a memory-backed ``/tmp``); ``None`` or a
            missing folder: the system's temporary folder.
        block: units per spooled block.
    """

    def __init__(
        self,
        units: Iterable[str] = (),
        directory: Union[str, 'os.PathLike[str]', None] = None,
        block: int = BLOCK,
    ) -> None:
        self.block = max(1, block)
        self.directory = directory
        self._file: Optional[IO[bytes]] = None
        #: spooled blocks: (file offset, number of units)
        self._spooled: list[tuple[int, int]] = []
        self._tail: list[str] = []
        self._count = 0
        #: positions (in append order) left out: later repeats of a unit
        self._dropped: set[int] = set()
        # Reading: the next spooled block to read, and units read but not taken.
        self._next_block = 0
        self._head: list[str] = []
        self._pos = 0  # units of _head already taken
        self._taken = 0
        self.extend(units)

    # -- writing -------------------------------------------------------------

    def extend(self, units: Iterable[str]) -> None:
        """Append ``units`` (only before the first :meth:`take`)."""
        if self._taken or self._next_block:
            raise BatchError('units cannot be added to a KeySpool once taking has begun')
        tail = self._tail
        before = len(tail)
        tail.extend(units)
        self._count += len(tail) - before
        while len(tail) >= 2 * self.block:
            # The first block stays in memory until a second is full: a
            # small batch never touches a file.
            self._spool(tail[: self.block])
            del tail[: self.block]

    def _spool(self, units: list[str]) -> None:
        if self._file is None:
            where = self.directory if self.directory is not None and Path(self.directory).is_dir() else None
            # Kept open across calls and closed by take/close: no with-block fits.
            try:
                self._file = tempfile.TemporaryFile(dir=where)  # noqa: SIM115
            except OSError:
                self._file = tempfile.TemporaryFile()  # noqa: SIM115
        self._file.seek(0, os.SEEK_END)
        offset = self._file.tell()
        pickle.dump(units, self._file, pickle.HIGHEST_PROTOCOL)
        self._spooled.append((offset, len(units)))

    def drop(self, positions: Iterable[int]) -> None:
        """Leave out the units at these append positions."""
        self._dropped.update(positions)

    # -- reading -------------------------------------------------------------

    def __len__(self) -> int:
        """Units in the spool, taken or not."""
        return self._count - len(self._dropped)

    @property
    def remaining(self) -> int:
        """Units not taken yet."""
        return len(self) - self._taken

    def blocks(self) -> Iterator[tuple[int, list[str]]]:
        """``(position of its first unit, units)`` for each block, dropped ones included."""
        start = 0
        for offset, count in self._spooled:
            yield start, self._read(offset)
            start += count
        yield start, list(self._tail)

    def _read(self, offset: int) -> list[str]:
        assert self._file is not None
        self._file.seek(offset)
        units: list[str] = pickle.load(self._file)
        return units

    def _kept(self, start: int, units: list[str]) -> list[str]:
        if not self._dropped:
            return units
        dropped = self._dropped
        return [unit for n, unit in enumerate(units, start) if n not in dropped]

    def __iter__(self) -> Iterator[str]:
        """Every unit in order, taken or not (taking is not affected)."""
        for start, units in self.blocks():
            yield from self._kept(start, units)

    def take(self, size: int) -> list[str]:
        """The next ``size`` units (fewer at the end)."""
        out: list[str] = []
        while len(out) < size:
            if self._pos >= len(self._head) and not self._refill():
                break
            end = self._pos + size - len(out)
            out.extend(self._head[self._pos : end])
            self._pos = min(end, len(self._head))
        self._taken += len(out)
        return out

    def _refill(self) -> bool:
        start = sum(count for _, count in self._spooled[: self._next_block])
        if self._next_block < len(self._spooled):
            offset, _ = self._spooled[self._next_block]
            self._head = self._kept(start, self._read(offset))
        elif self._next_block == len(self._spooled):
            self._head = self._kept(start, self._tail)
        else:
            return False
        self._pos = 0
        self._next_block += 1
        if self._next_block > len(self._spooled) and self._file is not None:
            self._file.close()
            self._file = None
        return bool(self._head) or self._refill()

    def close(self) -> None:
        """Remove the temporary file now (it also goes with the process)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __repr__(self) -> str:
        return f'KeySpool({len(self)} units, {self.remaining} not taken)'


class SeenFilter:
    """Which keys were added before, in two bytes per key.

    A Bloom filter: a key's ``hash`` sets two bits of a bit array of 16
    bits per expected key, and an array four times bigger is added when
    one fills.
    "Not added" is certain; "added" is wrong for well under one key in a
    hundred, which the planner then checks exactly.

    Args:
        expected: keys the first array is sized for.
    """

    BITS_PER_KEY = 16

    def __init__(self, expected: int = 1 << 21) -> None:
        self._arrays: list[tuple[bytearray, int, int]] = []  # (bits, mask, capacity)
        self._count = 0
        self._grow(expected)

    def _grow(self, expected: int) -> None:
        bits = 1 << max(16, (expected * self.BITS_PER_KEY - 1).bit_length())
        self._arrays.append((bytearray(bits >> 3), bits - 1, bits // self.BITS_PER_KEY))
        self._count = 0

    def maybe_seen(self, keys: Sequence[str]) -> list[bool]:
        """For each key, whether it may have been added (``False`` is certain)."""
        hashes = list(map(hash, keys))
        answer: Optional[list[bool]] = None
        for table, mask, _ in self._arrays:
            found = [
                bool(table[(h & mask) >> 3] >> (h & 7) & 1 and table[((h >> 32) & mask) >> 3] >> ((h >> 32) & 7) & 1)
                for h in hashes
            ]
            answer = found if answer is None else [x or y for x, y in zip(answer, found, strict=True)]
        assert answer is not None
        return answer

    def add(self, keys: Sequence[str]) -> None:
        """Remember ``keys``."""
        table, mask, capacity = self._arrays[-1]
        for h in map(hash, keys):
            a = h & mask
            b = (h >> 32) & mask
            table[a >> 3] |= 1 << (a & 7)
            table[b >> 3] |= 1 << (b & 7)
        self._count += len(keys)
        if self._count >= capacity:
            self._grow(capacity * 4)


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

    missing: KeySpool
    payload: Optional[dict[str, Any]]
    done_before: int
    failed_before: int

    def __post_init__(self) -> None:
        if not isinstance(self.missing, KeySpool):
            self.missing = KeySpool(self.missing)

    @property
    def total(self) -> int:
        """Units in the whole batch."""
        return self.done_before + self.failed_before + len(self.missing)


class KeyPairs(Iterator[tuple[str, Any]]):
    """``(key, None)`` for each key: work whose keys are the units.

    :func:`plan_batch` takes the keys themselves from it, a block at a
    time, without a pair per key.

    Args:
        keys: the keys, each a unit.
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = iter(keys)
        self._pairs = zip(self.keys, repeat(None))

    def __next__(self) -> tuple[str, Any]:
        return next(self._pairs)


def iter_pairs(keys: Iterable[str]) -> KeyPairs:
    """``(key, None)`` for each key: work whose keys are the units."""
    return KeyPairs(keys)


def identify(units: Iterable[Any], ident: Optional[Callable[[Any], str]] = None) -> Iterator[tuple[str, Any]]:
    """``(identity, unit)`` for each unit, ``unit`` ``None`` when it is its own identity.

    Args:
        units: the work units.
        ident: a unit's identity; ``None``: the default, by which a
            ``str`` unit is its own identity, so a block of plain ``str``
            units passes through in C, without a Python step per unit.
    """
    from .units import unit_id

    call = unit_id if ident is None else ident

    def pairs(block: list[Any]) -> Iterable[tuple[str, Any]]:
        if ident is None and set(map(type, block)) == {str}:
            return zip(block, repeat(None))
        out = []
        for unit in block:
            uid = call(unit)
            out.append((uid, None if unit is uid else unit))
        return out

    source = iter(units)
    blocks = iter(lambda: list(islice(source, BLOCK)), [])
    return chain.from_iterable(map(pairs, blocks))


class _Seen:
    """The units a plan met: all of them exactly up to a limit, then the missing ones.

    Beyond ``exact_limit`` units, only missing units matter for computing
    each unit once.  While the work comes in strictly increasing order (a
    numbered range, a sorted listing) no unit can repeat and nothing is
    kept.  Otherwise the missing units go to a :class:`SeenFilter` (seeded
    from the spool when the order first breaks), and a missing unit it may
    have seen is a suspect, whose repeats :func:`_drop_repeats` takes out
    of the spool at the end.  A unit done or failed before is not
    remembered there, so a repeat of it is counted again.

    Args:
        exact_limit: units remembered exactly.
        spool: where the missing units go (read back to seed the filter).
    """

    def __init__(self, exact_limit: int, spool: KeySpool) -> None:
        self.exact: Optional[set[str]] = set()
        self.exact_limit = exact_limit
        self.spool = spool
        self.filter: Optional[SeenFilter] = None
        self.suspects: set[str] = set()
        #: whether every unit since the exact set was dropped came after
        #: the one before it (and the first after every unit met before)
        self.ordered = True
        self._last: Optional[str] = None

    def _in_order(self, ids: list[str]) -> bool:
        if self.ordered:
            first_after = self._last is None or self._last < ids[0]
            self.ordered = first_after and all(map(lt, ids, islice(ids, 1, None)))
            self._last = ids[-1]
        return self.ordered

    def first_times(self, ids: list[str]) -> list[str]:
        """The units of ``ids`` not met before (as far as known), each once."""
        if self.exact is None:
            if self._in_order(ids):
                return ids
            if self.filter is None:
                # The order broke: the missing units so far are the ones a
                # unit from now on may repeat.
                self.filter = SeenFilter()
                for _, units in self.spool.blocks():
                    self.filter.add(units)
            return ids if len(set(ids)) == len(ids) else list(dict.fromkeys(ids))
        exact = self.exact
        block = set(ids)
        if len(block) == len(ids) and exact.isdisjoint(block):
            if exact:
                exact |= block
            else:
                self.exact = exact = block
            fresh = ids
        else:
            fresh = []
            for key in ids:
                if key not in exact:
                    exact.add(key)
                    fresh.append(key)
        if len(exact) > self.exact_limit:
            # From now on only the order can tell that no unit repeats:
            # each later unit must come after every unit met so far.
            self._last = max(exact)
            self.exact = None
        return fresh

    def missing(self, keys: list[str]) -> None:
        """Note units found missing (after :meth:`first_times`)."""
        if self.filter is None or not keys:
            return
        flagged = self.filter.maybe_seen(keys)
        if any(flagged):
            self.suspects.update(compress(keys, flagged))
        self.filter.add(keys)


def _drop_repeats(spool: KeySpool, suspects: set[str]) -> int:
    """Leave later repeats of ``suspects`` out of ``spool``; returns how many."""
    first: set[str] = set()
    repeats: list[int] = []
    for start, units in spool.blocks():
        hits = suspects.intersection(units)
        if not hits:
            continue
        for n, unit in enumerate(units, start):
            if unit in hits:
                if unit in first:
                    repeats.append(n)
                else:
                    first.add(unit)
    spool.drop(repeats)
    return len(repeats)


def plan_batch(
    work: Iterable[tuple[str, Any]],
    delegate: Stash,
    failures: Stash,
    skip_failed: bool = True,
    block: int = BLOCK,
    spool_dir: Union[str, 'os.PathLike[str]', None] = None,
    exact_limit: int = BLOCK,
) -> Plan:
    """Split the work into missing units and units already settled.

    Memory stays flat with the length of the work: missing units are
    spooled (:class:`KeySpool`) and units are remembered exactly only up
    to ``exact_limit`` of them (then, unless the work comes in increasing
    order, only the missing ones, in a :class:`SeenFilter`).  A unit that the work repeats is computed once
    and counted once, except that beyond ``exact_limit`` units, a repeat
    of a unit done or failed before this run is counted again among
    those settled before.

    Args:
        work: ``(identity, unit)`` pairs, streamed once; ``unit`` is
            ``None`` when the identity is the unit.
        delegate: the store of items; a unit it holds is done.
        failures: the failure records; a unit with one is skipped.
        skip_failed: leave units with a recorded failure out.
        block: units asked about at once.
        spool_dir: where missing units beyond a block are spooled.
        exact_limit: units remembered exactly.

    Raises:
        BatchError: an identity is not a ``str`` (the message shows it).
    """
    stored, failed = Membership(delegate), Membership(failures)
    missing = KeySpool(directory=spool_dir, block=block)
    seen = _Seen(exact_limit, missing)
    payload: Optional[dict[str, Any]] = None
    done_before = failed_before = 0
    counted = 0
    pairs = iter(work)
    # Work of plain keys: blocks of keys, no pair per key, no payload.
    keys_only = pairs.keys if isinstance(pairs, KeyPairs) else None
    while True:
        batch: Optional[list[tuple[str, Any]]] = None
        if keys_only is not None:
            ids = list(islice(keys_only, block))
            if not ids:
                break
        else:
            batch = list(islice(pairs, block))
            if not batch:
                break
            ids = list(map(itemgetter(0), batch))
        # One pass in C for the usual case (join takes only str); the slow
        # one names the culprit.
        try:
            ''.join(ids)
        except TypeError:
            n, key = next((n, k) for n, k in enumerate(ids, counted) if not isinstance(k, str))
            raise BatchError(f'work key #{n} is not a str but {type(key).__name__}: {key!r}') from None
        counted += len(ids)
        fresh = seen.first_times(ids)
        open_ids = stored.absent(fresh)
        done_before += len(fresh) - len(open_ids)
        if skip_failed and open_ids:
            unrecorded = failed.absent(open_ids)
            failed_before += len(open_ids) - len(unrecorded)
            open_ids = unrecorded
        missing.extend(open_ids)
        seen.missing(open_ids)
        if batch is not None and any(map(is_not, map(itemgetter(1), batch), repeat(None))):
            # Identity only: a unit's own __eq__ may not answer a bool.
            units = dict(batch)
            for key in open_ids:
                unit = units.get(key)
                if unit is not None:
                    if payload is None:
                        payload = {}
                    payload[key] = unit
    if seen.suspects:
        # A missing unit the filter flagged may repeat one spooled before.
        _drop_repeats(missing, seen.suspects)
    return Plan(missing, payload, done_before, failed_before)
