"""Batch events and the progress bar that shows them.

Every batch emits :class:`BatchEvent` s in the parent process: one at the
start, one per item (as soon as the engine hears of it), one per chunk
sent or finished, one per worker death, and one at the end.  Item events
are made only when an ``on_event`` hook is set; the tqdm bar counts items
in batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ['BatchEvent', 'EventHook']

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchEvent:
    """Something that happened in a batch.

    Attributes:
        kind: ``'start'``, ``'submit'`` (a chunk was sent), ``'item'``,
            ``'chunk'`` (a chunk finished), ``'lost'`` (a worker died with
            a chunk), ``'finish'`` or ``'interrupted'``.
        total: items in the whole batch.
        done: items complete, before this run and now.
        failed: failures recorded, before this run and now.
        key: the item (``'item'``), or the culprit of a ``'lost'`` chunk.
        ok: for ``'item'``: written (``True``) or failed (``False``).
        chunk_id: the chunk concerned, if any.
        size: the chunk's number of keys (``'submit'``, ``'chunk'``).
        message: a human explanation (why a chunk was lost...).
        result: the :class:`~stashworks.multi.BatchResult` (``'finish'``,
            ``'interrupted'``).
    """

    kind: str
    total: int = 0
    done: int = 0
    failed: int = 0
    key: Optional[str] = None
    ok: Optional[bool] = None
    chunk_id: Optional[int] = None
    size: int = 0
    message: str = ''
    result: Any = None


EventHook = Callable[[BatchEvent], None]
