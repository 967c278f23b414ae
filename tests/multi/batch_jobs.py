"""Factories for the batch tests; importable by worker processes.

Each :class:`Work` call leaves a marker file ``<key>.<pid>.<n>`` in its
``markers`` directory (when given) before doing anything else, so a test
can count how many times each key was computed, and by which process.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Optional


class Work:
    """A factory ``f(key) -> 'value-<key>'`` that can misbehave on given keys.

    Args:
        markers: a directory for marker files, or ``None``.
        sleep: seconds each item takes.
        fail: keys that raise ``ValueError``.
        sigkill: keys on which the worker SIGKILLs itself.
        segfault: keys on which the worker segfaults.
        exit3: keys on which the worker calls ``os._exit(3)``.
        unpicklable: keys whose value cannot be pickled.
    """

    def __init__(
        self,
        markers: Optional[Path] = None,
        sleep: float = 0.0,
        fail: tuple[str, ...] = (),
        sigkill: tuple[str, ...] = (),
        segfault: tuple[str, ...] = (),
        exit3: tuple[str, ...] = (),
        unpicklable: tuple[str, ...] = (),
    ) -> None:
        self.markers = None if markers is None else str(markers)
        self.sleep = sleep
        self.fail = set(fail)
        self.sigkill = set(sigkill)
        self.segfault = set(segfault)
        self.exit3 = set(exit3)
        self.unpicklable = set(unpicklable)

    def __call__(self, key: str) -> Any:
        if self.markers is not None:
            Path(self.markers, f'{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}').touch()
        if key in self.sigkill:
            os.kill(os.getpid(), signal.SIGKILL)
        if key in self.segfault:
            faulthandler.disable()  # keep the test output quiet
            faulthandler._sigsegv()
        if key in self.exit3:
            os._exit(3)
        if key in self.fail:
            raise ValueError(f'cannot compute {key}')
        if self.sleep:
            time.sleep(self.sleep)
        if key in self.unpicklable:
            return threading.Lock()
        return f'value-{key}'


def computations(markers: Path) -> Counter[str]:
    """How many times each key was computed, from the marker files."""
    return Counter(p.name.rsplit('.', 2)[0] for p in markers.iterdir())


def mark_unit(markers: Path, uid: str) -> None:
    """Count one computation of the unit ``uid`` (a marker file ``<uid>.<random>``)."""
    (markers / f'{uid.replace("/", "_")}.{uuid.uuid4().hex}').touch()


def unit_computations(markers: Path) -> Counter[str]:
    """How many times each unit was computed, from the markers of :func:`mark_unit` (or alike)."""
    return Counter(p.name.rsplit('.', 1)[0] for p in markers.iterdir())


def pids_by_key(markers: Path) -> dict[str, set[int]]:
    """The processes that computed each key."""
    out: dict[str, set[int]] = {}
    for p in markers.iterdir():
        key, pid, _ = p.name.rsplit('.', 2)
        out.setdefault(key, set()).add(int(pid))
    return out


class CountsUnpickling:
    """A factory that leaves a file each time it is unpickled (in a worker)."""

    def __init__(self, directory: Path) -> None:
        self.directory = str(directory)

    def __getstate__(self) -> dict[str, Any]:
        return {'directory': self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.directory = state['directory']
        Path(self.directory, f'unpickled.{os.getpid()}.{uuid.uuid4().hex[:8]}').touch()

    def __call__(self, key: str) -> str:
        return key.upper()


def keys(n: int) -> list[str]:
    """``n`` keys that sort in creation order."""
    return [f'k{i:03d}' for i in range(n)]


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class FailsToLoad:
    """A factory that cannot be unpickled (in a worker, say)."""

    def __call__(self, key: str) -> str:
        return key

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise RuntimeError('this factory cannot be loaded here')
