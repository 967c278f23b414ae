"""Real mounts for fault tests: a small tmpfs, a read-only folder, a full disk.

Mounting needs root (CI runs the tests as root); elsewhere the tests that
need a mount are skipped with the reason.  Every mount is undone when its
context ends, even if the test fails.
"""

from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ['tmpfs', 'read_only_folder', 'fill_disk', 'is_root']


def is_root() -> bool:
    """Whether this process runs as root (permission bits do not stop it)."""
    return hasattr(os, 'geteuid') and os.geteuid() == 0


def _mount(*args: str) -> None:
    done = subprocess.run(['mount', *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f'cannot mount ({" ".join(args)}): {done.stderr.strip() or done.returncode}')


def _umount(path: Path) -> None:
    done = subprocess.run(['umount', str(path)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        # A process still inside it (a worker being reaped): detach it now,
        # the kernel frees it when the last user leaves.
        subprocess.run(['umount', '-l', str(path)], capture_output=True, text=True, timeout=30)


@contextmanager
def tmpfs(path: Path, size: str = '1m') -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` (created) for the context; skips unless root."""
    if not is_root():
        pytest.skip('mounting a tmpfs needs root (CI runs the tests as root)')
    path.mkdir(parents=True, exist_ok=True)
    _mount('-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """An existing, empty folder this process cannot write to.

    As root (whom permission bits do not stop) it is a read-only tmpfs
    mount; otherwise a folder with mode 0o555.
    """
    if is_root():
        with tmpfs(path, '1m'):
            _mount('-o', 'remount,ro', str(path))
            yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


def fill_disk(path: Path) -> Path:
    """Fill the file system of ``path`` with a file ``path/filler`` until it is full."""
    filler = path / 'filler'
    block = b'\0' * 65536
    with open(filler, 'wb', buffering=0) as fh:
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # The last partial block, byte-sized steps down to nothing left.
        for size in (4096, 512, 1):
            try:
                while True:
                    fh.write(b'\0' * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler
