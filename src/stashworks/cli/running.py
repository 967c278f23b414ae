"""The commands that run a batch: ``stashworks run`` and ``stashworks demo``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from .. import BatchResult, MultiProcessFactoryStash
from ..directory import DirectoryStash
from .common import EXIT_FAILURE, EXIT_INTERRUPTED, CliError, echo, format_duration
from .layout import BatchDir
from .loading import add_cwd_to_path, import_function, load_keys

__all__ = ['cmd_run', 'cmd_demo', 'parse_workers']

logger = logging.getLogger(__name__)

#: How many failures ``run`` lists before pointing to ``stashworks failures``.
MAX_LISTED_FAILURES = 20


def parse_workers(text: str) -> int | float:
    """``--workers``: an int (``0`` all CPUs, ``-n`` all but n) or a fraction in (0, 1].

    Raises:
        argparse.ArgumentTypeError: ``text`` is neither.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer or a fraction, not {text!r}') from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'a fraction of the CPUs must be in (0, 1], not {text}')
    return value


def _batch(
    out: Path, func: Callable[[str], Any], keys: list[str], args: argparse.Namespace
) -> MultiProcessFactoryStash:
    """Build the batch stash: ``func`` over ``keys`` into ``DirectoryStash(out)``."""
    return MultiProcessFactoryStash(
        DirectoryStash(out),
        func,
        keys=keys,
        workers=args.workers,
        chunk_size=args.chunk_size,
        progress=args.progress,
    )


def _execute(stash: MultiProcessFactoryStash, retry_failures: bool) -> BatchResult:
    """Run the batch (after forgetting its failures, with ``retry_failures``).

    Raises:
        KeyboardInterrupt: Ctrl-C or SIGTERM, once the batch has stopped.
    """
    return stash.retry_failures() if retry_failures else stash.prime()


def _rate(result: BatchResult) -> str:
    count = result.computed + result.failed
    if result.elapsed <= 0 or count == 0:
        return ''
    return f' ({count / result.elapsed:.1f} items/s)'


def _summary(result: BatchResult) -> str:
    done_now = result.done_before + result.computed
    return (
        f'{done_now} of {result.total} done: {result.done_before} before, {result.computed} now, '
        f'{result.failed + result.failed_before} failed; elapsed {format_duration(result.elapsed)}{_rate(result)}'
    )


def _echo_summary(result: BatchResult, args: argparse.Namespace) -> None:
    # With a progress bar, the batch itself prints its summary under the
    # bar; a second one here would only repeat it.
    bar_shown = sys.stderr.isatty() if args.progress is None else args.progress
    if not bar_shown:
        echo(_summary(result))


def _all_done_before(result: BatchResult) -> bool:
    return not (result.computed or result.failed or result.interrupted)


def _interrupted(args: argparse.Namespace) -> int:
    # The batch has already logged what it did; say how to go on.
    again = shlex.join(['stashworks', *getattr(args, 'argv', [args.command])])
    echo(f'stopped cleanly. To resume: {again}', err=True)
    return EXIT_INTERRUPTED


def _failed_keys(out: Path, keys: list[str]) -> list[str]:
    try:
        failed = set(BatchDir(out).failed_keys())
    except CliError:
        return []
    return [key for key in keys if key in failed]


def cmd_run(args: argparse.Namespace) -> int:
    """``stashworks run MODULE:FUNCTION --keys SOURCE --out DIR``.

    Returns 0 when every key is done, 1 when some failed (listed), and
    130 after Ctrl-C once the batch has stopped.
    """
    add_cwd_to_path()
    func = import_function(args.function)
    keys = load_keys(args.keys)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f'not a directory: {out}')
    stash = _batch(out, func, keys, args)
    try:
        result = _execute(stash, args.retry_failures)
    except KeyboardInterrupt:
        return _interrupted(args)
    if _all_done_before(result) and not result.failed_before:
        echo(f'all {result.total} keys already done in {out}; nothing to compute')
        return 0
    _echo_summary(result, args)
    failed = _failed_keys(out, keys)
    if not failed:
        return 0
    batch = BatchDir(out)
    echo(f'{len(failed)} key(s) failed:')
    for key in failed[:MAX_LISTED_FAILURES]:
        record = batch.failure(key)
        message = str(record.get('message') or '').strip().splitlines()
        echo(f'  {key}: {record.get("error_type")}: {message[0] if message else ""}')
    if len(failed) > MAX_LISTED_FAILURES:
        echo(f'  ... and {len(failed) - MAX_LISTED_FAILURES} more')
    echo(f'see `stashworks failures {out} --traceback`; `--retry-failures` computes them again')
    return EXIT_FAILURE


def cmd_demo(args: argparse.Namespace) -> int:
    """``stashworks demo``: a record for every ``.py`` file of the standard library.

    The exit status is 0 even though some files fail: the standard
    library ships files that do not parse on purpose, and recording them
    as failures is the demo working, not the demo failing.  It is 130
    after Ctrl-C.
    """
    from .. import demo

    root = Path(args.source) if args.source else demo.stdlib_root()
    try:
        keys = demo.source_files(root, args.limit)
    except NotADirectoryError as exc:
        raise CliError(str(exc)) from exc
    out = Path(args.out)
    echo(f'stashworks demo: {len(keys)} .py files of {root} -> {out}')
    stash = _batch(out, demo.recorder(root), keys, args)
    try:
        result = _execute(stash, args.retry_failures)
    except KeyboardInterrupt:
        return _interrupted(args)
    failed = result.failed + result.failed_before
    if _all_done_before(result):
        echo(
            f'all {result.total} items already done ({result.done_before} stored, {failed} failed); nothing to compute'
        )
    else:
        _echo_summary(result, args)
    if failed:
        why = (
            'the standard library ships broken files on purpose (bad-syntax and bad-encoding test data), '
            'so these are expected'
            if args.source is None
            else 'they are recorded as failures'
        )
        echo(f'{failed} file(s) did not parse: {why}, and the exit status is 0; see `stashworks failures {out}`')
    example = keys[0] if keys else 'KEY'
    echo(f'look inside: stashworks status {out}; stashworks keys {out}; stashworks show {out} {example}')
    return 0
