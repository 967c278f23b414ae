"""The ``stashworks`` command: argument parsing, dispatch and error handling."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from ..errors import StashError
from ..stores import STORE_KINDS
from .common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from .inspection import cmd_failures, cmd_keys, cmd_rm, cmd_show, cmd_status
from .running import cmd_dask_cleanup, cmd_demo, cmd_run, parse_workers

__all__ = ['main', 'build_parser']

PROG = 'stashworks'
DEFAULT_DEMO_OUT = 'stashworks-demo'
DEFAULT_MAX_CHARS = 10_000


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage first; one line naming the
        # subcommand reads better and is easy to match in scripts.
        sub = self.prog[len(PROG) :].strip()
        where = f'{sub}: ' if sub else ''
        self.exit(EXIT_USAGE, f'{PROG}: error: {where}{message} (see `{self.prog} --help`)\n')


class _LogFormatter(logging.Formatter):
    """Log lines read like the command's own: ``stashworks: message``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            text = f'error: {text}'
        # The batch layer's summaries already start with the name.
        return text if text.startswith(f'{PROG}: ') else f'{PROG}: {text}'


def _version() -> str:
    from .. import __version__

    return __version__


def _count(text: str) -> int:
    """An integer option that cannot be negative."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer, not {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, not {value}')
    return value


def _positive(text: str) -> int:
    """An integer option that must be at least 1."""
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, not {value}')
    return value


def _seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number of seconds, not {text!r}') from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be > 0, not {text}')
    return value


def _seconds_or_zero(text: str) -> float:
    """A number of seconds >= 0."""
    if text.strip() in ('0', '0.0'):
        return 0.0
    return _seconds(text)


def _memory(text: str) -> str:
    """``--memory-limit``: checked here so a bad size is a usage error, not a failed run."""
    from ..multi.workers import parse_memory

    try:
        parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``run`` and ``demo`` that set up the batch (see ``running.batch_options``)."""
    group = parser.add_argument_group('batch options')
    group.add_argument(
        '--workers',
        '-w',
        type=parse_workers,
        default=0,
        metavar='N',
        help='worker processes: N; 0 or -1 for every usable CPU (default), -2 for all but one...; '
        'or a fraction such as 0.5',
    )
    group.add_argument('--chunk-size', type=_count, default=0, metavar='N', help='keys per chunk (default: automatic)')
    group.add_argument(
        '--retry-failures', action='store_true', help='compute the keys that failed in an earlier run again'
    )
    group.add_argument(
        '--max-retries',
        type=_count,
        default=2,
        metavar='N',
        help='times a key whose worker died is tried again before it is recorded as a failure (default 2)',
    )
    group.add_argument(
        '--on-stale',
        choices=('error', 'recompute', 'keep'),
        default='error',
        help='when the output holds items computed by another version of the code: stop before any work '
        '(error, the default), compute those units again (recompute), or keep them and record that (keep)',
    )
    group.add_argument(
        '--retries',
        type=_count,
        default=0,
        metavar='N',
        help='times an item that raised is computed again, in the same worker, before its failure is recorded '
        '(default 0)',
    )
    group.add_argument(
        '--item-timeout',
        type=_seconds,
        default=None,
        metavar='SECONDS',
        help='stop an item that runs longer than this, replace its worker and record the key as a failure '
        '(ItemTimeout); default: no limit',
    )
    cluster = parser.add_argument_group('Dask cluster')
    cluster.add_argument(
        '--scheduler',
        metavar='ADDRESS',
        default=None,
        help='run on the Dask cluster whose scheduler is at ADDRESS, such as tcp://node01:8786 '
        '(default: $DASK_SCHEDULER_ADDRESS if set, else the local process pool)',
    )
    cluster.add_argument(
        '--scheduler-timeout',
        type=float,
        default=60.0,
        metavar='SECONDS',
        help='stop the batch when the scheduler has been out of reach this long (default 60)',
    )
    group.add_argument(
        '--memory-limit',
        type=_memory,
        default=None,
        metavar='SIZE',
        help='replace a worker whose memory grows past SIZE (such as 2GB or 512MiB) after its current item',
    )
    group.add_argument(
        '--max-items-per-worker', type=_positive, default=None, metavar='N', help='replace each worker after N items'
    )
    group.add_argument(
        '--start-method',
        choices=_start_methods(),
        default=None,
        help="how worker processes start (default: the platform's)",
    )
    group.add_argument(
        '--store',
        choices=STORE_KINDS,
        default=None,
        help="how the output folder keeps the items: 'directory', a file per item, or 'lmdb', one LMDB database "
        '(for many small items; needs stashworks[lmdb]); default: the kind the folder holds, else directory',
    )
    group.add_argument(
        '--serial',
        action='store_true',
        help='compute every item in this process, one after another (for a debugger or a profiler)',
    )
    group.add_argument(
        '--progress',
        action=argparse.BooleanOptionalAction,
        default=None,
        help='show a progress bar on stderr (default: when stderr is a terminal; otherwise a progress line '
        'every --progress-interval seconds)',
    )
    group.add_argument(
        '--progress-interval',
        type=_seconds_or_zero,
        default=None,
        metavar='SECONDS',
        help='when stderr is not a terminal, seconds between two progress lines '
        '(default 30, or $STASHWORKS_PROGRESS_INTERVAL; 0 for none)',
    )
    _add_json(parser, 'print the summary as JSON, for scripts')


def _add_limit(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument('--limit', '-n', type=_count, default=None, metavar='N', help=help)


def _add_raw_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--raw-names',
        action='store_true',
        help='file names are the keys as they are (a folder written by zensols), not encoded keys',
    )


def _add_json(parser: argparse.ArgumentParser, help: str = 'print JSON, for scripts') -> None:
    parser.add_argument('--json', action='store_true', help=help)


def _global_options(default: object) -> _Parser:
    """The options accepted before the command and after it (``stashworks status DIR --verbose``)."""
    parent = _Parser(add_help=False)
    parent.add_argument(
        '--verbose', '-v', action='store_true', default=default, help='log more, and show tracebacks of errors'
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, one subcommand per action."""
    # After the command, a global option's default must not undo one
    # given before it: SUPPRESS leaves the value set by the main parser.
    after = [_global_options(argparse.SUPPRESS)]
    parser = _Parser(
        prog=PROG,
        parents=[_global_options(False)],
        description='Parallel, resumable batch processing into a folder of items, and tools to inspect it.',
        epilog='Run `stashworks demo` to see it work on the Python standard library.',
    )
    parser.add_argument('--version', action='version', version=f'%(prog)s {_version()}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser(
        'demo', parents=after, help='parse every .py file of the standard library in parallel, resumably'
    )
    demo.add_argument(
        '--out', '-o', default=DEFAULT_DEMO_OUT, metavar='DIR', help=f'output folder (default: ./{DEFAULT_DEMO_OUT})'
    )
    _add_limit(demo, 'only the first N files (sorted by path)')
    demo.add_argument('--source', metavar='DIR', help='parse this tree instead of the standard library')
    _add_batch_options(demo)
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser('run', parents=after, help='run MODULE:FUNCTION over keys, one stored item per key')
    run.add_argument(
        'function', metavar='MODULE:FUNCTION', help='an importable f(key) -> value (the current folder is importable)'
    )
    run.add_argument(
        '--keys',
        '-k',
        required=True,
        metavar='SOURCE',
        help='a text file with one key per line, - for stdin, or MODULE:ITERABLE',
    )
    run.add_argument('--out', '-o', required=True, metavar='DIR', help='the output folder (created if missing)')
    _add_limit(run, 'only the first N keys, in the order given')
    _add_batch_options(run)
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        'status', parents=after, help="a batch's progress: done, failed, rate, ETA, whether it runs"
    )
    status.add_argument('dir', metavar='DIR')
    status.add_argument(
        '--watch', action='store_true', help='show the status again every few seconds until the batch ends'
    )
    status.add_argument(
        '--interval',
        type=_seconds,
        default=2.0,
        metavar='SECONDS',
        help='seconds between two refreshes with --watch (default 2)',
    )
    _add_raw_names(status)
    _add_json(status)
    status.set_defaults(func=cmd_status)

    keys = sub.add_parser('keys', parents=after, help='list the keys of the stored items')
    keys.add_argument('dir', metavar='DIR')
    keys.add_argument('--failed', action='store_true', help='list the failed keys instead')
    _add_raw_names(keys)
    _add_json(keys)
    keys.set_defaults(func=cmd_keys)

    show = sub.add_parser(
        'show',
        parents=after,
        help='show one stored item',
        description='Show one stored item.  Items are pickles, and unpickling runs code: show only items of an '
        'output folder you trust.  With STASHWORKS_SIGNING_KEY (or STASHWORKS_SIGNING_KEY_FILE) set, an item '
        'without a valid signature is refused before anything is unpickled.',
    )
    show.add_argument('dir', metavar='DIR')
    show.add_argument('key', metavar='KEY')
    show.add_argument(
        '--raw',
        action='store_true',
        help='write the stored bytes (a pickle) to stdout, which must not be a terminal (redirect it to a file)',
    )
    show.add_argument(
        '--max-chars',
        type=_count,
        default=DEFAULT_MAX_CHARS,
        metavar='N',
        help=f'cut the rendering after N characters (default {DEFAULT_MAX_CHARS}, 0 for no limit)',
    )
    _add_raw_names(show)
    _add_json(show)
    show.set_defaults(func=cmd_show)

    failures = sub.add_parser('failures', parents=after, help='list the failed keys: error type and message')
    failures.add_argument('dir', metavar='DIR')
    failures.add_argument('--traceback', '-t', action='store_true', help="also show each failure's traceback")
    failures.add_argument('--clear', action='store_true', help='delete every failure record (the keys run again)')
    _add_json(failures)
    failures.set_defaults(func=cmd_failures)

    rm = sub.add_parser(
        'rm', parents=after, help='delete items (and their failure records) so the next run computes them again'
    )
    rm.add_argument('dir', metavar='DIR')
    rm.add_argument('keys', nargs='+', metavar='KEY')
    _add_json(rm)
    rm.set_defaults(func=cmd_rm)

    cleanup = sub.add_parser(
        'dask-cleanup',
        parents=after,
        help='remove from a Dask cluster the batch jobs whose driver is gone (killed) and still loaded on its workers',
    )
    cleanup.add_argument(
        '--scheduler',
        metavar='ADDRESS',
        default=None,
        help="the cluster's scheduler (default: $DASK_SCHEDULER_ADDRESS)",
    )
    cleanup.set_defaults(func=cmd_dask_cleanup)
    return parser


def _fail(message: str, code: int) -> int:
    # One line, whatever the message holds: scripts grep for it.
    print(f'{PROG}: error: {" ".join(message.split())}', file=sys.stderr, flush=True)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter())
    # The command prints its own summary line on stdout; the batch's
    # logged one would say it a second time.
    handler.addFilter(lambda record: not getattr(record, 'stashworks_summary', False))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted', file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `stashworks keys DIR | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0
    except CliError as exc:
        if args.verbose:
            traceback.print_exc()
        return _fail(str(exc), exc.exit_code)
    except (StashError, OSError) as exc:
        if args.verbose:
            traceback.print_exc()
        return _fail(f'{exc}' if isinstance(exc, StashError) else f'{type(exc).__name__}: {exc}', EXIT_FAILURE)
    except Exception as exc:
        # A bug (ours or in a batch option's validation): still one line,
        # with the way to see more.
        if args.verbose:
            traceback.print_exc()
            return _fail(f'{type(exc).__name__}: {exc}', EXIT_FAILURE)
        return _fail(f'{type(exc).__name__}: {exc} (--verbose shows the traceback)', EXIT_FAILURE)
