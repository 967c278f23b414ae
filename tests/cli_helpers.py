"""Run the installed ``stashworks`` command in a subprocess, for the CLI tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

#: The folder of the test helper modules that ``stashworks run`` imports.
TESTS_DIR = Path(__file__).resolve().parent


def command() -> list[str]:
    """The ``stashworks`` console script beside this interpreter (or on PATH), else ``python -m``."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get('PATH', '')])
    exe = shutil.which('stashworks', path=search)
    return [exe] if exe else [sys.executable, '-m', 'stashworks']


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for the command: ``tests/`` importable, no colour, plus ``extra``."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in [str(TESTS_DIR), env.get('PYTHONPATH', '')] if p)
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra)
    return env


def stashworks(
    *args: Any, input: Optional[str] = None, cwd: Optional[Path] = None, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``stashworks ARGS...`` to completion and return what it did."""
    return subprocess.run(
        [*command(), *map(str, args)],
        input=input,
        capture_output=True,
        text=True,
        cwd=cwd or TESTS_DIR,
        env=cli_env(**env),
        timeout=timeout,
    )


def start_stashworks(*args: Any, cwd: Optional[Path] = None, **env: str) -> subprocess.Popen[str]:
    """Start ``stashworks ARGS...`` in its own session (so it can get a Ctrl-C of its own)."""
    return subprocess.Popen(
        [*command(), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd or TESTS_DIR,
        env=cli_env(**env),
        start_new_session=True,
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command's only stderr line; fails the test if there are more, or a traceback."""
    lines = proc.stderr.splitlines()
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('stashworks: error: '), lines[0]
    return lines[0]


def stashworks_tty(
    *args: Any, stdout_tty: bool = False, stderr_tty: bool = True, timeout: float = 60, **env: str
) -> tuple[int, str, str]:
    """Run ``stashworks ARGS...`` with stdout and/or stderr on a pseudo-terminal.

    Returns:
        ``(exit status, stdout, stderr)``; a stream on the terminal is
        read from the terminal (with ``\\r\\n`` line ends, as a terminal
        shows them).
    """
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide; tqdm would draw nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 120, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [*command(), *map(str, args)],
            stdout=slave if stdout_tty else subprocess.PIPE,
            stderr=slave if stderr_tty else subprocess.PIPE,
            cwd=TESTS_DIR,
            env=cli_env(**{'COLUMNS': '120', **env}),
        )
        os.close(slave)
        slave = -1
        out, err = proc.communicate(timeout=timeout)
        reader.join(timeout=10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    tty_text = b''.join(chunks).decode('utf-8', 'replace')
    stdout = tty_text if stdout_tty else out.decode('utf-8', 'replace')
    stderr = tty_text if stderr_tty else err.decode('utf-8', 'replace')
    return proc.returncode, stdout, stderr
