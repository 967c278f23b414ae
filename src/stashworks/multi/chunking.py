"""Chunk sizes: many items per chunk when they are tiny, few when slow.

A chunk is the unit of work a worker takes at a time.  Big chunks mean
little inter-process traffic per item; small chunks spread slow items
over the workers and keep them all busy near the end of the batch.  With
an automatic size, the first chunks are small; the time per item measured
from their reports then sizes later chunks to take about
:attr:`Chunker.target` seconds each, never more than a share of what is
left (``remaining / (workers * 4)``), so chunks shrink towards the end,
but not below about :attr:`Chunker.least` seconds of work: once that much
is all that is left per worker, the rest goes out as one chunk per worker.
Never more than :data:`MAX_AUTO` units: the parent holds a few chunks per
worker at once, so their size (not the batch's) bounds its memory.
Only ``2 * workers`` small chunks are cut before the first timing: an
executor with room for many chunks at once gets the share-bound size for
the rest.

A small batch (its share-bound chunks would hold at most :data:`SMALL`
units) is cut as :meth:`multiprocessing.pool.Pool.map` cuts it: chunks
of ``ceil(n / (4 * workers))`` units, no small first chunks.  Each chunk
costs a round trip and a claim; for a few hundred units per worker, the
probes and a tail shrinking chunk by chunk cost more than the timing
gains.  A timing still shrinks the chunks of slow items to about
:attr:`Chunker.target` seconds.
"""

from __future__ import annotations

import math

__all__ = ['MAX_AUTO', 'SMALL', 'Chunker']

#: The most units an automatic chunk holds (tiny items: about 1 MB of keys).
MAX_AUTO = 16_384
#: The largest chunk of a small batch, cut into four even chunks per
#: worker from the start (see the module docstring).
SMALL = 256


class Chunker:
    """Decides the size of each next chunk.

    Args:
        chunk_size: a fixed size, or ``0`` for automatic.
        workers: how many workers share the batch.
        target: seconds an automatic chunk should take.
        first: the size of chunks sent before any timing is known.
        least: seconds of work below which the tail stops shrinking
            chunks (though never beyond a share of what is left per worker).
    """

    def __init__(self, chunk_size: int, workers: int, target: float = 0.5, first: int = 2, least: float = 0.02) -> None:
        if chunk_size < 0:
            raise ValueError(f'chunk_size must be >= 0 (0 for automatic), not {chunk_size}')
        self.chunk_size = chunk_size
        self.workers = max(1, workers)
        self.target = target
        self.least = least
        self.first = first
        #: seconds per item, a moving average of what the reports said
        self.per_item: float | None = None
        self._probes = 0
        self._tail: int | None = None
        #: the even size of a small batch's chunks (0: not a small batch;
        #: ``None``: not decided before the first chunk)
        self._even: int | None = None

    @property
    def automatic(self) -> bool:
        """Whether sizes adapt to measured times."""
        return self.chunk_size == 0

    def observe(self, items: int, elapsed: float) -> None:
        """Learn from a finished chunk of ``items`` that took ``elapsed`` s."""
        if items <= 0 or elapsed < 0:
            return
        t = elapsed / items
        # Weighted towards recent chunks; the first ones pay for imports.
        self.per_item = t if self.per_item is None else 0.5 * self.per_item + 0.5 * t

    def next_size(self, remaining: int) -> int:
        """The size of the next chunk, given ``remaining`` unsent keys."""
        if remaining <= 0:
            return 0
        if not self.automatic:
            return min(self.chunk_size, remaining)
        if self._even is None:
            # Decided once, on what is missing when the batch starts.
            even = -(-remaining // (self.workers * 4))
            self._even = even if even <= SMALL else 0
        if self._even:
            size = self._even
            if self.per_item is not None and self.per_item > 0:
                size = min(size, max(1, int(self.target / self.per_item)))
            return min(size, remaining)
        bound = max(1, min(MAX_AUTO, remaining // (self.workers * 4)))
        if self.per_item is None:
            if self._probes >= 2 * self.workers:
                return bound
            self._probes += 1
            return min(self.first, bound)
        if self.per_item <= 0:
            return bound
        wanted = int(self.target / self.per_item)
        # Shrinking the tail balances the workers' last chunks; once a
        # share-bound chunk takes under ``least`` seconds that gains nothing
        # and costs a round trip per chunk.  Each worker still gets a share.
        least = math.ceil(self.least / self.per_item)
        if remaining <= least * self.workers:
            # The tail: what is left, split once into one chunk per worker
            # (not halved again and again down to single keys).
            if self._tail is None:
                self._tail = -(-remaining // self.workers)
            return max(1, min(self._tail, remaining, MAX_AUTO))
        return max(1, min(wanted, max(bound, least), MAX_AUTO))
