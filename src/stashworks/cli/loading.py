"""Load what ``stashworks run`` is given: the function and the keys."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

from .common import CliError, UsageError, a_or_an

__all__ = ['add_cwd_to_path', 'import_object', 'load_keys']

# 'package.module:name.attr' -- what `python -m`-style tools accept.
_SPEC = re.compile(r'(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\Z')


def add_cwd_to_path() -> None:
    """Make the current directory importable here and in worker processes.

    ``python -m`` puts the current directory first on :data:`sys.path`;
    the console script does not, so do it here.  ``PYTHONPATH`` carries
    it to workers started with ``spawn`` or ``forkserver``, which do not
    inherit :data:`sys.path`.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    paths = os.environ.get('PYTHONPATH', '')
    if cwd not in paths.split(os.pathsep):
        os.environ['PYTHONPATH'] = cwd + (os.pathsep + paths if paths else '')


def is_spec(text: str) -> bool:
    """Whether ``text`` reads as ``MODULE:NAME``."""
    return _SPEC.match(text) is not None


def import_object(spec: str) -> Any:
    """Import ``MODULE:NAME`` (``NAME`` may be dotted) and return the object.

    Raises:
        UsageError: ``spec`` is not of the form ``MODULE:NAME``.
        CliError: the module cannot be imported (or raises while it is),
            or has no such name.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise UsageError(f'expected MODULE:NAME (such as mypkg.jobs:compute), not {spec!r}')
    module_name, attr = match.group('module'), match.group('attr')
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(
                f'cannot import {module_name!r}: no module named {exc.name!r} (searched from {os.getcwd()})'
            ) from exc
        raise CliError(f'error while importing {module_name!r}: {type(exc).__name__}: {exc}') from exc
    except Exception as exc:
        # The module's own code raised; name it, the user fixes it there.
        raise CliError(f'error while importing {module_name!r}: {type(exc).__name__}: {exc}') from exc
    for part in attr.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise CliError(f'{module_name!r} has no attribute {attr!r}') from exc
    return obj


def import_function(spec: str) -> Callable[[str], Any]:
    """Import ``MODULE:FUNCTION`` and check that it is callable.

    Raises:
        UsageError: ``spec`` is malformed.
        CliError: it cannot be imported, or is not callable.
    """
    func = import_object(spec)
    if not callable(func):
        raise CliError(f'{spec} is {a_or_an(type(func).__name__)}, not a function')
    return func


def _lines(text: str) -> Iterable[str]:
    # Surrounding whitespace is dropped and blank lines skipped: a key
    # file written by hand or by `ls` must not yield '' or 'key '.
    # splitlines() also ends lines at '\r\n' (a file from Windows).
    for line in text.splitlines():
        key = line.strip()
        if key:
            yield key


def load_keys(source: str) -> list[str]:
    """The keys named by ``source``, in order, without duplicates.

    ``source`` is ``-`` (one key per line on stdin), a text file (one key
    per line, UTF-8), or ``MODULE:NAME`` naming an iterable of ``str``
    (or a function returning one).

    Raises:
        CliError: the file cannot be read, the object cannot be imported,
            or it yields something that is not a ``str``.
    """
    # 'utf-8-sig': a byte order mark (Notepad writes one) is not part of
    # the first key.
    if source == '-':
        try:
            keys: Iterable[Any] = list(_lines(sys.stdin.buffer.read().decode('utf-8-sig')))
        except UnicodeDecodeError as exc:
            raise CliError(f'cannot read keys from stdin: not UTF-8: {exc}') from exc
    elif os.path.exists(source) or not is_spec(source):
        path = Path(source)
        try:
            keys = list(_lines(path.read_text(encoding='utf-8-sig')))
        except FileNotFoundError as exc:
            raise CliError(f'no such key file: {path}') from exc
        except IsADirectoryError as exc:
            raise CliError(f'key source is a directory, not a file: {path}') from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f'cannot read key file {path}: {exc}') from exc
    else:
        obj = import_object(source)
        try:
            keys = obj() if callable(obj) else obj
            keys = list(keys)
        except TypeError as exc:
            raise CliError(f'{source} is not an iterable of keys: {exc}') from exc
        except Exception as exc:
            raise CliError(f'{source} raised while listing keys: {type(exc).__name__}: {exc}') from exc
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise CliError(f'key #{i} from {source} is {a_or_an(type(key).__name__)}, not a str: {key!r}')
    return list(dict.fromkeys(keys))
