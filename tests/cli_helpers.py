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
