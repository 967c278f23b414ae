"""Batch events and the progress bar that shows them.

Every batch emits :class:`BatchEvent` s in the parent process: one at the
start, one per item (as soon as the engine hears of it), one per chunk
sent or finished, one per worker death, and one at the end.  Item events
are made only when an ``on_event`` hook is set; the tqdm bar counts items
in batches.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ['BatchEvent', 'EventHook', 'ProgressBar']

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


class ProgressBar:
    """A tqdm bar on stderr whose start is the work already done.

    Args:
        total: items in the whole batch.
        initial: items already settled (complete or failed before).
        failed: failures recorded before this run.
        enabled: ``None`` shows it when stderr is a terminal.
        desc: the bar's label.
    """

    def __init__(self, total: int, initial: int, failed: int, enabled: Optional[bool], desc: str = 'items') -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.failed = failed
        self._bar: Any = None
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit='item',
                file=sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
            )
            self._bar.set_postfix(failed=failed, refresh=False)

    def advance_many(self, done: int, failed: int) -> None:
        """``done`` more items written and ``failed`` more failed.

        One call per batch of items, not per item: tqdm's bookkeeping per
        call is not free, and with tiny items the parent's time competes
        with the workers'.
        """
        if self._bar is None:
            return
        if failed:
            self.failed += failed
            self._bar.set_postfix(failed=self.failed, refresh=False)
        if done or failed:
            self._bar.update(done + failed)

    def close(self, summary: str = '') -> None:
        """Close the bar, then print ``summary`` under it."""
        if self._bar is None:
            return
        self._bar.close()
        self._bar = None
        if summary:
            sys.stderr.write(summary + '\n')
            sys.stderr.flush()
