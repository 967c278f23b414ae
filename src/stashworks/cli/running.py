"""The commands that run a batch: ``stashworks run`` and ``stashworks demo``.

What they print, and where (docs/cli.md says the same):

- stdout: one summary line (``N of M done: ...``), then for ``run`` the
  failed keys; with ``--json`` one JSON document instead.  The same
  whether or not stderr is a terminal, so ``run > log.txt`` keeps it.
- stderr: the progress bar or progress lines, log messages, warnings,
  hints (``see stashworks failures ...``) and errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
from pathlib import Path
from typing import Any, Callable, Optional

from .. import BatchResult, MultiProcessFactoryStash
from ..errors import BatchError
from ..multi.workers import usable_cpus
from ..stores import open_output
from .common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    CliError,
    UsageError,
    echo,
    first_line,
    format_duration,
    note,
    plural,
    print_json,
)
from .layout import BatchDir
from .loading import add_cwd_to_path, import_function, load_keys

__all__ = ['cmd_run', 'cmd_demo', 'cmd_dask_cleanup', 'parse_workers', 'batch_options']

logger = logging.getLogger(__name__)

#: How many failures ``run`` lists before pointing to ``stashworks failures``.
MAX_LISTED_FAILURES = 20


def parse_workers(text: str) -> int | float:
    """``--workers``: ``N``, ``0`` or ``-1`` for every usable CPU, ``-N`` for all but N-1, or a fraction.

    Negative counts follow joblib's ``n_jobs``: ``-1`` is every CPU,
    ``-2`` all but one.  One that leaves no worker on this machine is a
    usage error here, before any work; more workers than CPUs is the
    batch's to warn about.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a count or a fraction,
            or a negative count leaves no CPU.
    """
    try:
        count = int(text)
    except ValueError:
        pass
    else:
        if count >= 0:
            return count
        cpus = usable_cpus()
        if cpus + 1 + count < 1:
            raise argparse.ArgumentTypeError(
                f'--workers {count} leaves no worker: there {"is" if cpus == 1 else "are"} only '
                f'{plural(cpus, "usable CPU")} (-1 means all of them, -2 all but one)'
            )
        return count
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer or a fraction, not {text!r}') from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'a fraction of the CPUs must be in (0, 1], not {text}')
    return value


def batch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of :class:`~stashworks.MultiProcessFactoryStash` that the command line sets.

    One place, so a new batch option is one ``add_argument`` in
    ``main.py`` and one line here.
    """
    options: dict[str, Any] = {
        'workers': args.workers,
        'chunk_size': args.chunk_size,
        'progress': args.progress,
        'max_retries': args.max_retries,
        'on_stale': args.on_stale,
        'retries': args.retries,
        'item_timeout': args.item_timeout,
        'memory_limit': args.memory_limit,
        'max_items_per_worker': args.max_items_per_worker,
        'start_method': args.start_method,
    }
    address = cluster_address(args)
    if args.serial:
        if address and args.scheduler:
            raise UsageError('--serial computes in this process; it cannot go with --scheduler')
        options['executor'] = 'serial'
    elif address:
        from ..multi.dask import DaskExecutor

        options['executor'] = DaskExecutor(address, scheduler_timeout=args.scheduler_timeout)
    return options


def cluster_address(args: argparse.Namespace) -> Optional[str]:
    """The Dask scheduler to run on: ``--scheduler``, else ``$DASK_SCHEDULER_ADDRESS``, else ``None``."""
    return args.scheduler or os.environ.get('DASK_SCHEDULER_ADDRESS') or None


def _show_dashboard(options: dict[str, Any]) -> None:
    """Connect to the cluster now and say where its dashboard is, before the batch starts."""
    executor: Any = options.get('executor')
    connect = getattr(executor, 'connect', None)
    if connect is None:
        return
    connect()
    link = getattr(executor, 'dashboard_link', None)
    note(f'running on the Dask cluster at {executor.address}' + (f'; dashboard: {link}' if link else ''))


def _batch(
    out: Path, func: Callable[[str], Any], keys: list[str], args: argparse.Namespace
) -> MultiProcessFactoryStash:
    """Build the batch stash: ``func`` over ``keys`` into the store of ``out`` (``--store``)."""
    if args.progress_interval is not None:
        # The batch reads the interval of its progress lines from here.
        from ..multi.display import INTERVAL_ENV

        os.environ[INTERVAL_ENV] = repr(args.progress_interval)
    try:
        # --store, or whatever kind of store the folder already holds.
        store = open_output(out, kind=args.store)
    except (BatchError, ImportError) as exc:
        raise CliError(str(exc)) from exc
    options = batch_options(args)
    _show_dashboard(options)
    return MultiProcessFactoryStash(store, func, keys=keys, **options)


# -- what a run says ----------------------------------------------------------


def _rate(result: BatchResult) -> str:
    count = result.computed + result.failed
    if result.elapsed <= 0 or count == 0:
        return ''
    return f' ({count / result.elapsed:.1f} items/s)'


def summary_line(result: BatchResult) -> str:
    """The one line a run prints about what it did."""
    done_now = result.done_before + result.computed
    line = (
        f'{done_now} of {result.total} done: {result.done_before} before, {result.computed} now, '
        f'{result.failed + result.failed_before} failed'
    )
    if result.interrupted:
        line += f'; interrupted with {result.missing} left'
    return f'{line}; elapsed {format_duration(result.elapsed)}{_rate(result)}'


def summary_json(result: BatchResult, out: Path, failed_keys: list[str], unrecorded: list[str]) -> dict[str, Any]:
    """The summary of a run as ``--json`` prints it."""
    return {
        'out': str(out),
        'total': result.total,
        'done': result.done_before + result.computed,
        'done_before': result.done_before,
        'computed': result.computed,
        'failed': result.failed + result.failed_before,
        'failed_now': result.failed,
        'failed_before': result.failed_before,
        'missing': result.missing,
        'interrupted': result.interrupted,
        'elapsed': round(result.elapsed, 3),
        'workers': result.workers,
        'failed_keys': failed_keys,
        'unrecorded_keys': unrecorded,
    }


def _was_sigterm(exc: BaseException) -> bool:
    # The batch turns SIGTERM into a KeyboardInterrupt that carries the
    # signal number, so the command can exit as a shell expects.
    return getattr(exc, 'signum', None) == signal.SIGTERM or 'SIGTERM' in str(exc)


def _interrupted(stash: MultiProcessFactoryStash, exc: KeyboardInterrupt, args: argparse.Namespace) -> int:
    result = stash.last_result
    if result is not None:
        result.interrupted = True
        if args.json:
            print_json(summary_json(result, Path(args.out), [], []))
        else:
            echo(summary_line(result))
    again = shlex.join(['stashworks', *getattr(args, 'argv', [args.command])])
    note(f'stopped cleanly. To resume: {again}')
    return EXIT_TERMINATED if _was_sigterm(exc) else EXIT_INTERRUPTED


def _settle(out: Path, keys: list[str]) -> tuple[list[str], list[str]]:
    """``(failed, unrecorded)``: of ``keys`` without an item, those with a failure record and the rest.

    The exit status comes from what is on disk, not from the batch's own
    count: a failure that could not be recorded must not pass for success.
    """
    try:
        batch = BatchDir(out)
    except CliError:
        return [], list(keys)
    stored = set(batch.keys())
    recorded = set(batch.failed_keys())
    failed = [key for key in keys if key not in stored and key in recorded]
    unrecorded = [key for key in keys if key not in stored and key not in recorded]
    return failed, unrecorded


def _run(stash: MultiProcessFactoryStash, args: argparse.Namespace) -> tuple[Optional[BatchResult], Optional[int]]:
    """Run the batch; ``(result, None)``, or ``(None, exit status)`` after Ctrl-C or SIGTERM."""
    try:
        result = stash.retry_failures() if args.retry_failures else stash.prime()
    except KeyboardInterrupt as exc:
        return None, _interrupted(stash, exc, args)
    return result, None


def _report_unrecorded(unrecorded: list[str], out: Path) -> None:
    if unrecorded:
        shown = ', '.join(map(repr, unrecorded[:5])) + (', ...' if len(unrecorded) > 5 else '')
        echo(
            f'stashworks: error: {plural(len(unrecorded), "key")} ({shown}) have neither an item nor a '
            f'failure record in {out}: their failure could not be recorded (see the messages above)',
            err=True,
        )


def cmd_run(args: argparse.Namespace) -> int:
    """``stashworks run MODULE:FUNCTION --keys SOURCE --out DIR``.

    Returns 0 when every key has its item, 1 when some have not (listed),
    130 after Ctrl-C and 143 after SIGTERM once the batch has stopped.
    """
    add_cwd_to_path()
    func = import_function(args.function)
    keys = load_keys(args.keys)
    if args.limit is not None:
        keys = keys[: args.limit]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f'not a directory: {out}')
    if not keys:
        # Nothing to do is not an error, and no folder is made for it.
        if args.json:
            print_json(summary_json(BatchResult(), out, [], []))
        else:
            echo(f'no keys in {args.keys}: nothing to do')
        return 0
    stash = _batch(out, func, keys, args)
    result, stopped = _run(stash, args)
    if result is None:
        assert stopped is not None
        return stopped
    failed, unrecorded = _settle(out, keys)
    if args.json:
        print_json(summary_json(result, out, failed, unrecorded))
    elif not (result.computed or result.failed or failed or unrecorded):
        echo(f'all {plural(result.total, "key")} already done in {out}; nothing to compute')
    else:
        echo(summary_line(result))
        if failed:
            _list_failures(out, failed)
    _report_unrecorded(unrecorded, out)
    if failed:
        note(f'see `stashworks failures {out} --traceback`; `--retry-failures` computes them again')
    return EXIT_FAILURE if failed or unrecorded else 0


def _list_failures(out: Path, failed: list[str]) -> None:
    batch = BatchDir(out)
    echo(f'{plural(len(failed), "key")} failed:')
    for key in failed[:MAX_LISTED_FAILURES]:
        try:
            record = batch.failure(key)
        except Exception as exc:
            echo(f'  {key}: (unreadable failure record: {first_line(exc)})')
            continue
        echo(f'  {key}: {record.get("error_type")}: {first_line(record.get("message"))}')
    if len(failed) > MAX_LISTED_FAILURES:
        echo(f'  ... and {len(failed) - MAX_LISTED_FAILURES} more')


def cmd_dask_cleanup(args: argparse.Namespace) -> int:
    """``stashworks dask-cleanup``: remove the jobs of killed drivers from a Dask cluster.

    Returns 0, whether or not there was anything to remove.
    """
    address = cluster_address(args)
    if not address:
        raise UsageError('which cluster? pass --scheduler ADDRESS or set DASK_SCHEDULER_ADDRESS')
    from ..multi.dask import ClusterError, remove_orphaned_jobs

    try:
        import distributed

        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            removed = remove_orphaned_jobs(client)
    except ImportError as exc:
        raise CliError(f"the Dask extra is not installed: pip install 'stashworks[dask]' ({exc})") from exc
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f'cannot connect to the Dask scheduler at {address}: {exc}') from exc
    if removed:
        echo(f'removed {plural(len(removed), "batch job")} whose driver is gone: {", ".join(removed)}')
    else:
        echo(f'no batch job whose driver is gone on {address}')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``stashworks demo``: a record for every ``.py`` file of the standard library.

    The exit status is 0 even though some files fail: the standard
    library ships files that do not parse on purpose, and recording them
    as failures is the demo working, not the demo failing.  It is 1 if a
    failure could not be recorded, 130 after Ctrl-C and 143 after SIGTERM.
    """
    from .. import demo

    root = Path(args.source) if args.source else demo.stdlib_root()
    try:
        keys = demo.source_files(root, args.limit)
    except NotADirectoryError as exc:
        raise CliError(str(exc)) from exc
    out = Path(args.out)
    if not keys:
        if args.json:
            print_json(summary_json(BatchResult(), out, [], []))
        else:
            echo(f'no .py files under {root}: nothing to do')
        return 0
    note(f'stashworks demo: {plural(len(keys), ".py file")} of {root} -> {out}')
    stash = _batch(out, demo.recorder(root), keys, args)
    result, stopped = _run(stash, args)
    if result is None:
        assert stopped is not None
        return stopped
    failed_keys, unrecorded = _settle(out, keys)
    failed = len(failed_keys)
    if args.json:
        print_json(summary_json(result, out, failed_keys, unrecorded))
    elif not (result.computed or result.failed or result.interrupted):
        echo(
            f'all {result.total} items already done ({result.done_before} stored, {failed} failed); nothing to compute'
        )
    else:
        echo(summary_line(result))
    _report_unrecorded(unrecorded, out)
    if failed:
        why = (
            'the standard library ships broken files on purpose (bad-syntax and bad-encoding test data), '
            'so these are expected'
            if args.source is None
            else 'they are recorded as failures'
        )
        verb = 'file did' if failed == 1 else 'files did'
        note(f'{failed} {verb} not parse: {why}, and the exit status is 0; see `stashworks failures {out}`')
    note(f'look inside: stashworks status {out}; stashworks keys {out}; stashworks show {out} {keys[0]}')
    return EXIT_FAILURE if unrecorded else 0
