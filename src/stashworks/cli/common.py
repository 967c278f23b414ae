"""What every ``stashworks`` command shares: its error and its output helpers."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any, Optional

from .._text import a_or_an, first_line, plural
from ..errors import StashError
from ..multi.batchstatus import parse_time

__all__ = [
    'CliError',
    'UsageError',
    'print_json',
    'format_duration',
    'parse_time',
    'format_time',
    'echo',
    'note',
    'warn',
    'plural',
    'a_or_an',
    'first_line',
]

#: Exit status of a command that failed (not a usage error).
EXIT_FAILURE = 1
#: Exit status of a command used wrongly (argparse uses the same).
EXIT_USAGE = 2
#: Exit status after Ctrl-C, as a shell reports a process killed by SIGINT.
EXIT_INTERRUPTED = 130
#: Exit status after SIGTERM, as a shell reports a process killed by it.
EXIT_TERMINATED = 143


class CliError(StashError):
    """A command cannot do what it was asked; its message is shown as is.

    Attributes:
        exit_code: the process exit status to use.
    """

    exit_code = EXIT_FAILURE


class UsageError(CliError, ValueError):
    """A command line that cannot be right (a malformed argument)."""

    exit_code = EXIT_USAGE


def echo(text: str = '', err: bool = False) -> None:
    """Print one line to stdout (or stderr with ``err``) and flush it.

    stdout carries what a command produces (a summary, keys, records, an
    item), so it pipes cleanly; everything else goes to stderr (see
    :func:`note`).  Flushing matters: another process (a test, a pipe)
    reads these lines while a long batch is still running.
    """
    stream = sys.stderr if err else sys.stdout
    print(text, file=stream, flush=True)


def note(text: str) -> None:
    """A hint, footer or header for the person at the terminal: on stderr."""
    echo(text, err=True)


def warn(text: str) -> None:
    """A warning line on stderr: ``stashworks: warning: ...``."""
    echo(f'stashworks: warning: {text}', err=True)


def _json_default(value: Any) -> Any:
    # Sets and other containers become lists; anything else its repr, so
    # --json never fails on a value JSON cannot hold.
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.decode('utf-8', 'backslashreplace')
    return repr(value)


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as indented JSON, one document per command."""
    echo(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


def format_duration(seconds: Optional[float]) -> str:
    """A short human duration: ``'0.4s'``, ``'12s'``, ``'3m 05s'``, ``'2h 01m'``."""
    if seconds is None:
        return '?'
    if seconds < 10:
        return f'{seconds:.1f}s'
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f'{hours}h {minutes:02d}m'
    if minutes:
        return f'{minutes}m {secs:02d}s'
    return f'{secs}s'


def format_time(text: Any) -> str:
    """An ISO 8601 time as ``'2026-01-31 12:00:00 UTC (5s ago)'``, or ``'?'``."""
    when = parse_time(text)
    if when is None:
        return '?'
    ago = (dt.datetime.now(dt.timezone.utc) - when).total_seconds()
    stamp = when.astimezone(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')
    return f'{stamp} ({format_duration(max(ago, 0.0))} ago)'
