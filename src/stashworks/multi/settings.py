"""The options of a batch: one validated, frozen :class:`BatchSettings`.

The batch stashes take every option as a typed keyword argument and
build one of these; nothing else holds a copy.  Options are described in
docs/batch.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .executor import Executor
from .guard import check_item_timeout
from .progress import EventHook
from .workers import check_workers, parse_memory

__all__ = ['BatchSettings', 'EXECUTOR_NAMES']

#: The executors that can be named instead of given.
EXECUTOR_NAMES = ('local', 'serial')


@dataclass(frozen=True)
class BatchSettings:
    """How a batch runs; see :class:`~stashworks.MultiProcessStash` for each option.

    Raises:
        ValueError: an option is out of range (the message names it).
    """

    workers: Union[int, float] = 0
    chunk_size: int = 0
    executor: Union[Executor, str, None] = None
    progress: Optional[bool] = None
    on_event: Optional[EventHook] = None
    max_retries: int = 2
    retries: int = 0
    memory_limit: Union[int, str, None] = None
    max_items_per_worker: Optional[int] = None
    start_method: Optional[str] = None
    state_dir: Union[str, 'os.PathLike[str]', None] = None
    item_timeout: Optional[float] = None

    def __post_init__(self) -> None:
        check_workers(self.workers)
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 0:
            raise ValueError(f'chunk_size must be an int >= 0 (0 for automatic), not {self.chunk_size!r}')
        if self.max_retries < 0:
            raise ValueError(f'max_retries must be >= 0, not {self.max_retries}')
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f'retries must be an int >= 0, not {self.retries!r}')
        if self.max_items_per_worker is not None and self.max_items_per_worker < 1:
            raise ValueError(f'max_items_per_worker must be >= 1, not {self.max_items_per_worker}')
        if isinstance(self.executor, str) and self.executor not in EXECUTOR_NAMES:
            raise ValueError(f"executor must be an Executor, 'local' or 'serial', not {self.executor!r}")
        # Normalised once here, so every reader sees bytes and a Path.
        object.__setattr__(self, 'memory_limit', parse_memory(self.memory_limit))
        if self.state_dir is not None:
            object.__setattr__(self, 'state_dir', Path(self.state_dir))
        object.__setattr__(self, 'item_timeout', check_item_timeout(self.item_timeout))

    @property
    def memory_bytes(self) -> Optional[int]:
        """``memory_limit`` in bytes."""
        limit = self.memory_limit
        return limit if isinstance(limit, int) else None

    @property
    def state_path(self) -> Optional[Path]:
        """``state_dir`` as a :class:`~pathlib.Path`."""
        return self.state_dir if isinstance(self.state_dir, Path) else None
