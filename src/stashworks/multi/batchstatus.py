"""The status of a batch as a typed object, read from its status file.

The file (``<out>/.stashworks/status.json``) is JSON so that any tool can
read it; :class:`BatchStatus` is what Python code gets from
:func:`~stashworks.read_status`: named, typed fields, times as aware
``datetime`` objects, and the fields a newer writer may add kept in
:attr:`BatchStatus.extra`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

__all__ = ['BatchStatus', 'parse_time']


def parse_time(value: Any) -> Optional[dt.datetime]:
    """An aware datetime from an ISO 8601 string (naive ones taken as UTC), or ``None`` if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        # fromisoformat in Python < 3.11 does not accept a trailing 'Z'.
        when = dt.datetime.fromisoformat(value.replace('Z', '+00:00'))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class BatchStatus(Mapping[str, Any]):
    """What a batch last wrote about itself.

    Code written when :func:`~stashworks.read_status` returned the file's
    ``dict`` still works: the status is also a read-only mapping of the
    file's fields as written (``status['done']``, ``set(status)``).

    Attributes:
        state: ``'running'``, ``'finished'``, ``'interrupted'`` or
            ``'crashed'`` (as written: a batch killed while running still
            says ``'running'``; ``stashworks status`` checks its process).
        pid: the process that runs (or ran) the batch.
        host: the machine it runs on.
        total: items in the whole batch.
        done_before: items complete when it started.
        done: items complete at the last update (before and now).
        failed: failures recorded at the last update.
        started: when it started (aware, UTC), if known.
        updated: when the file was last written, if known.
        rate: items per second of this run, at the last update.
        eta_seconds: seconds left at that rate (``None`` when unknown or
            not running).
        workers: how many workers run it.
        executor: a description of where it runs.
        error: for a crashed batch, the error that stopped it, if recorded.
        extra: any other field of the file, as written.
    """

    state: str
    pid: int = 0
    host: str = ''
    total: int = 0
    done_before: int = 0
    done: int = 0
    failed: int = 0
    started: Optional[dt.datetime] = None
    updated: Optional[dt.datetime] = None
    rate: float = 0.0
    eta_seconds: Optional[float] = None
    workers: int = 0
    executor: str = ''
    error: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'BatchStatus':
        """The status a status file's JSON object describes.

        A field of the wrong type reads as unknown (its default) rather
        than failing: a status file is a convenience, written by another
        process, perhaps by another version.
        """
        known = {f.name for f in fields(cls)} - {'extra'}
        return cls(
            state=str(data.get('state') or 'unknown'),
            pid=_int(data.get('pid')),
            host=str(data.get('host') or ''),
            total=_int(data.get('total')),
            done_before=_int(data.get('done_before')),
            done=_int(data.get('done')),
            failed=_int(data.get('failed')),
            started=parse_time(data.get('started')),
            updated=parse_time(data.get('updated')),
            rate=_float(data.get('rate')) or 0.0,
            eta_seconds=_float(data.get('eta_seconds')),
            workers=_int(data.get('workers')),
            executor=str(data.get('executor') or ''),
            error=str(data['error']) if data.get('error') is not None else None,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The status as the file holds it (times as ISO 8601 strings)."""
        data: dict[str, Any] = {}
        for f in fields(self):
            if f.name == 'extra':
                continue
            value = getattr(self, f.name)
            if f.name == 'error' and value is None:
                continue  # written only by a batch that crashed
            data[f.name] = value.isoformat() if isinstance(value, dt.datetime) else value
        data.update(self.extra)
        return data

    def __getitem__(self, name: str) -> Any:
        """A field as the file holds it (``status['done']``).

        Raises:
            KeyError: the file has no such field.
        """
        return self.to_dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    @property
    def settled(self) -> int:
        """Items complete or failed at the last update."""
        return self.done + self.failed
