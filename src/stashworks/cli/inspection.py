"""The commands that look at a batch's output: status, keys, show, failures, rm.

All but ``rm`` and ``failures --clear`` are read-only, and only ``show``
unpickles anything (the one item asked for).
"""

from __future__ import annotations

import argparse
import pprint
import sys
from typing import Any

from ..errors import StashCorruptError
from .common import CliError, echo, format_duration, format_time, print_json
from .layout import BatchDir, is_alive
from .loading import add_cwd_to_path

__all__ = ['cmd_status', 'cmd_keys', 'cmd_show', 'cmd_failures', 'cmd_rm']


def _missing_key(batch: BatchDir, key: str) -> CliError:
    """The error for a key with no item, saying whether it failed instead."""
    if batch.failures.exists(key):
        record = batch.failure(key)
        return CliError(
            f'no item {key!r} in {batch.path}: it failed with {record.get("error_type")}: '
            f'{_first_line(record.get("message"))} (see `stashworks failures`)'
        )
    return CliError(f'no item {key!r} in {batch.path}')


def _first_line(text: Any, width: int = 200) -> str:
    line = str(text or '').strip().splitlines()[0] if str(text or '').strip() else ''
    return line if len(line) <= width else line[: width - 3] + '...'


# -- status ----------------------------------------------------------------


def status_report(batch: BatchDir) -> dict[str, Any]:
    """The facts ``stashworks status`` shows, as a JSON-ready dict.

    ``done`` and ``failed`` are counted on disk now; everything about the
    batch itself (``total``, ``rate``...) comes from its status file,
    which may be up to about a second old.
    """
    status = batch.status()
    alive = is_alive(status) if status is not None else None
    state = status.get('state') if status is not None else None
    if state == 'running' and alive is False:
        # The batch died without writing its final status (SIGKILL, OOM).
        state = 'crashed'
    return {
        'path': str(batch.path),
        'done': len(batch.items),
        'failed': len(batch.failures),
        'state': state,
        'alive': alive,
        'batch': status,
    }


def _print_status(report: dict[str, Any]) -> None:
    done, failed, status = report['done'], report['failed'], report['batch']
    total = status.get('total') if status else None
    line = f'{report["path"]}: {done} done, {failed} failed'
    if isinstance(total, int) and total > 0:
        line += f', of {total} ({100.0 * min(done, total) / total:.1f}% done)'
    echo(line)
    if status is None:
        echo('no batch status recorded (no batch has run here)')
        return
    state, alive = report['state'], report['alive']
    where = f'pid {status.get("pid")} on {status.get("host")}'
    if alive is None:
        liveness = 'cannot tell if it runs: another host'
    else:
        liveness = 'alive' if alive else 'not running'
    echo(f'batch: {state}, {where} ({liveness})')
    echo(f'  started:     {format_time(status.get("started"))}')
    echo(f'  last update: {format_time(status.get("updated"))}')
    rate = status.get('rate')
    if isinstance(rate, (int, float)):
        echo(f'  rate:        {rate:.1f} items/s')
    if state == 'running':
        echo(f'  eta:         {format_duration(status.get("eta_seconds"))}')
    if status.get('workers') or status.get('executor'):
        echo(f'  workers:     {status.get("workers")} ({status.get("executor")})')
    if state == 'crashed':
        echo('the batch stopped without finishing; run it again to resume')
    elif state == 'interrupted':
        echo('the batch was interrupted; run it again to resume')


def cmd_status(args: argparse.Namespace) -> int:
    """``stashworks status DIR``: progress of a running or finished batch."""
    report = status_report(BatchDir(args.dir))
    if args.json:
        print_json(report)
    else:
        _print_status(report)
    return 0


# -- keys ------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    """``stashworks keys DIR``: the keys of the stored items (or of failures)."""
    batch = BatchDir(args.dir)
    keys = batch.failed_keys() if args.failed else batch.keys()
    if args.json:
        print_json(keys)
    else:
        for key in keys:
            echo(key)
    return 0


# -- show ------------------------------------------------------------------


def _render(value: Any, max_chars: int) -> str:
    text = pprint.pformat(value, width=100, sort_dicts=False)
    if max_chars and len(text) > max_chars:
        more = len(text) - max_chars
        text = f'{text[:max_chars]}\n... ({more} more characters; --max-chars 0 shows all)'
    return text


def cmd_show(args: argparse.Namespace) -> int:
    """``stashworks show DIR KEY``: one item, readable (or raw with ``--raw``)."""
    batch = BatchDir(args.dir)
    if not batch.items.exists(args.key):
        raise _missing_key(batch, args.key)
    if args.raw:
        data = batch.items.key_to_path(args.key).read_bytes()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    # Values of the job's own classes unpickle only where its code imports.
    add_cwd_to_path()
    try:
        value = batch.items.load(args.key)
    except StashCorruptError as exc:
        if isinstance(exc.__cause__, (ImportError, AttributeError)):
            # Not corrupt: the value's class lives in code not importable here.
            raise CliError(
                f'cannot unpickle item {args.key!r} in {batch.path}: {exc.__cause__} '
                f'(run `stashworks show` where its code is importable, or use --raw)'
            ) from exc
        raise
    if args.json:
        print_json({'key': args.key, 'type': f'{type(value).__module__}.{type(value).__qualname__}', 'value': value})
    else:
        echo(_render(value, args.max_chars))
    return 0


# -- failures --------------------------------------------------------------


def cmd_failures(args: argparse.Namespace) -> int:
    """``stashworks failures DIR``: the failed keys and why; ``--clear`` forgets them."""
    batch = BatchDir(args.dir)
    keys = batch.failed_keys()
    if args.clear:
        for key in keys:
            batch.failures.delete(key)
        if args.json:
            print_json({'cleared': keys})
        else:
            echo(f'cleared {len(keys)} failure record(s) in {batch.path}; the next run computes those keys again')
        return 0
    records = [batch.failure(key) for key in keys]
    if args.json:
        if not args.traceback:
            for record in records:
                record.pop('traceback', None)
        print_json(records)
        return 0
    if not records:
        echo(f'no failures recorded in {batch.path}')
        return 0
    width = min(max(len(r['key']) for r in records), 60)
    for record in records:
        echo(f'{record["key"]:<{width}}  {record.get("error_type")}: {_first_line(record.get("message"))}')
        if args.traceback and record.get('traceback'):
            for line in str(record['traceback']).rstrip().splitlines():
                echo(f'    {line}')
    echo(f'{len(records)} failure(s); run the batch again with --retry-failures to compute them again')
    return 0


# -- rm --------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    """``stashworks rm DIR KEY...``: delete items (and their failure records).

    Every key is checked first: if one is unknown nothing is deleted.
    """
    batch = BatchDir(args.dir)
    known = {key: (batch.items.exists(key), batch.failures.exists(key)) for key in args.keys}
    unknown = [key for key, (item, failure) in known.items() if not (item or failure)]
    if unknown:
        raise CliError(f'no item or failure {", ".join(map(repr, unknown))} in {batch.path}; nothing removed')
    for key, (item, failure) in known.items():
        if item:
            batch.items.delete(key)
        if failure:
            batch.failures.delete(key)
    if args.json:
        print_json({'removed': list(known)})
    else:
        echo(f'removed {len(known)} key(s) from {batch.path}; the next run computes them again')
    return 0
