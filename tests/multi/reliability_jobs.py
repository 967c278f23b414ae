"""Factories that misbehave the way real jobs do, for the reliability tests.

Importable by worker processes (fork and spawn).  Each call of a factory
that takes ``markers`` leaves a file ``<key>.<pid>.<random>`` there first,
so :func:`batch_jobs.computations` counts how often each key was computed.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from stashworks import MultiProcessStash


def _mark(markers: Optional[str], key: str) -> None:
    if markers is not None:
        Path(markers, f'{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}').touch()


class Hang:
    """``'value-<key>'``, but the keys in ``hang`` sleep for an hour (a hung job)."""

    def __init__(self, markers: Optional[Path], hang: tuple[str, ...] = (), sleep: float = 0.0) -> None:
        self.markers = None if markers is None else str(markers)
        self.hang = set(hang)
        self.sleep = sleep

    def __call__(self, key: str) -> str:
        _mark(self.markers, key)
        if key in self.hang:
            time.sleep(3600)
        if self.sleep:
            time.sleep(self.sleep)
        return f'value-{key}'


class ForkHelperThenDie:
    """On ``fork_on`` the worker forks a helper that sleeps; on ``die_on`` it SIGKILLs itself.

    The helper's pid goes to ``<pids>/<pid>.helper`` so the test can end it.
    The helper is a plain ``os.fork()`` child: it inherits every file
    descriptor of the worker, pipe ends included.
    """

    def __init__(self, pids: Path, fork_on: str, die_on: str, helper_sleep: float = 60.0) -> None:
        self.pids = str(pids)
        self.fork_on = fork_on
        self.die_on = die_on
        self.helper_sleep = helper_sleep

    def __call__(self, key: str) -> str:
        if key == self.fork_on:
            pid = os.fork()
            if pid == 0:  # the helper
                try:
                    time.sleep(self.helper_sleep)
                finally:
                    os._exit(0)
            Path(self.pids, f'{pid}.helper').touch()
        if key == self.die_on:
            os.kill(os.getpid(), signal.SIGKILL)
        return f'value-{key}'


class CustomBase(BaseException):
    """A job's own BaseException subclass."""


class BadStr(Exception):
    """An exception whose message cannot be made into text."""

    def __str__(self) -> str:
        raise RuntimeError('__str__ of BadStr is broken')


def _raise(kind: str, key: str) -> None:
    if kind == 'SystemExit':
        raise SystemExit(4)
    if kind == 'KeyboardInterrupt':
        raise KeyboardInterrupt(f'job interrupted itself on {key}')
    if kind == 'GeneratorExit':
        raise GeneratorExit(f'generator exit on {key}')
    if kind == 'CustomBase':
        raise CustomBase(f'custom base exception on {key}')
    if kind == 'BadStr':
        raise BadStr()
    raise AssertionError(f'unknown kind {kind}')


class RaisesBase:
    """``'value-<key>'``, but ``key`` raises the exception named by ``kind``."""

    def __init__(self, markers: Optional[Path], key: str, kind: str) -> None:
        self.markers = None if markers is None else str(markers)
        self.key = key
        self.kind = kind

    def __call__(self, key: str) -> str:
        _mark(self.markers, key)
        if key == self.key:
            _raise(self.kind, key)
        return f'value-{key}'


class BadMessage:
    """Fails on ``key`` with a message holding a lone surrogate (as from a non-UTF-8 file name)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, key: str) -> str:
        if key == self.key:
            raise ValueError('cannot read caf\udce9.txt')
        return f'value-{key}'


class Chdir:
    """Changes the working directory to ``elsewhere`` on every call; fails on ``fail``."""

    def __init__(self, elsewhere: Path, fail: tuple[str, ...] = ()) -> None:
        self.elsewhere = str(elsewhere)
        self.fail = set(fail)

    def __call__(self, key: str) -> str:
        os.chdir(self.elsewhere)
        if key in self.fail:
            raise ValueError(f'cannot compute {key}')
        return f'value-{key}'


def identity(key: str) -> Any:
    """``'value-<key>'``."""
    return f'value-{key}'


class RaisesInProcess(MultiProcessStash):
    """The subclass form: ``_process`` raises the exception named by ``kind`` on unit ``key``."""

    def __init__(self, delegate: Any, units: list[str], key: str, kind: str, **options: Any) -> None:
        super().__init__(delegate, **options)
        self.units = list(units)
        self.key = key
        self.kind = kind

    def _create_data(self) -> list[str]:
        return self.units

    def _process(self, chunk: list[Any]) -> Iterator[tuple[str, Any]]:
        for unit in chunk:
            if unit == self.key:
                _raise(self.kind, unit)
            yield unit, f'value-{unit}'
