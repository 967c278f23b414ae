"""The commands that look at a batch's output: status, keys, show, failures, rm.

All but ``rm`` and ``failures --clear`` are read-only, and only ``show``
unpickles anything (the one item asked for).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pprint
import sys
import time
from typing import Any, Optional

from ..errors import StashCorruptError
from ..multi.runs import runs_summary
from ..multi.units import read_census
from .common import CliError, echo, first_line, format_duration, format_time, note, parse_time, plural, print_json
from .layout import BatchDir, is_alive
from .loading import add_cwd_to_path

__all__ = ['cmd_status', 'cmd_keys', 'cmd_show', 'cmd_failures', 'cmd_rm']


def _missing_key(batch: BatchDir, key: str) -> CliError:
    """The error for a key with no item, saying whether it failed instead."""
    if batch.failures.exists(key):
        record = batch.failure(key)
        return CliError(
            f'no item {key!r} in {batch.path}: it failed with {record.get("error_type")}: '
            f'{first_line(record.get("message"))} (see `stashworks failures`)'
        )
    return CliError(f'no item {key!r} in {batch.path}')


# -- status ----------------------------------------------------------------


def _rate_and_eta(
    status: Optional[dict[str, Any]], state: Optional[str], done: int, failed: int
) -> tuple[Optional[float], Optional[float]]:
    """Items per second and seconds left, as of now.

    While the batch runs both are worked out here from the items on disk
    and the batch's start time, so they exist from the first item on
    (the status file's own figures lag by up to a second, and start at 0).
    """
    if status is None:
        return None, None
    recorded = status.get('rate')
    rate = float(recorded) if isinstance(recorded, (int, float)) and recorded > 0 else None
    if state != 'running':
        return rate, None
    started = parse_time(status.get('started'))
    before = status.get('done_before')
    if started is not None and isinstance(before, int):
        elapsed = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
        new = done - before
        if elapsed > 0 and new > 0:
            rate = new / elapsed
    total = status.get('total')
    if rate is None or not isinstance(total, int):
        return rate, None
    return rate, max(0, total - done - failed) / rate


def status_report(batch: BatchDir) -> dict[str, Any]:
    """The facts ``stashworks status`` shows, as a JSON-ready dict.

    ``done`` and ``failed`` are counted on disk now, and so are ``rate``
    and ``eta_seconds`` while the batch runs; everything else about the
    batch (``total``, ``workers``...) comes from its status file, which
    may be up to about a second old.
    """
    status = batch.status()
    alive = is_alive(status) if status is not None else None
    state = status.get('state') if status is not None else None
    gone = state == 'running' and alive is False
    if gone:
        # The batch died without writing its final status (SIGKILL, OOM).
        state = 'crashed'
    done, failed = len(batch.items), len(batch.failures)
    # The census of the batch's own units (written by its last prime()):
    # the folder may hold other files, which are not the batch's to count.
    units = read_census(batch.path)
    if units is not None:
        if state == 'running' and status is not None:
            done, failed = int(status.get('done') or 0), int(status.get('failed') or 0)
        else:
            done, failed = int(units.get('done_units', done)), int(units.get('failed_units', failed))
    rate, eta = _rate_and_eta(status, state, done, failed)
    # Several runs may share the folder (each has a record in runs/): the
    # batch runs while any of them beats, at their combined rate.
    shared = runs_summary(batch.path, done, failed)
    combined = shared['combined']
    if combined['beating']:
        state, alive, gone = 'running', True, False
        if combined['beating'] > 1:
            rate, eta = combined['rate'], combined['eta_seconds']
    return {
        **shared,
        'path': str(batch.path),
        'done': done,
        'failed': failed,
        'state': state,
        'alive': alive,
        # Why it crashed: killed from outside (its process vanished) or
        # stopped by an error it recorded.
        'killed': gone,
        'error': status.get('error') if status is not None and not gone else None,
        'rate': None if rate is None else round(rate, 3),
        'eta_seconds': None if eta is None else round(eta, 1),
        'batch': status,
        'units': units,
    }


def _headline(report: dict[str, Any]) -> str:
    done, failed, status = report['done'], report['failed'], report['batch']
    line = f'{report["path"]}: {done} done, {failed} failed'
    total = status.get('total') if status else None
    if not isinstance(total, int) or total <= 0:
        return line
    line += f', of {total}'
    if report['state'] == 'finished':
        # A finished batch is not "99.5% done": what is left failed (or
        # was deleted since).
        left = [plural(failed, 'failure')] if failed else []
        missing = total - done - failed
        if missing > 0:
            left.append(f'{plural(missing, "item")} missing')
        return line + (f': finished with {" and ".join(left)}' if left else ': finished, every item done')
    return line + f' ({100.0 * min(done + failed, total) / total:.1f}% settled)'


def _print_status(report: dict[str, Any]) -> None:
    status = report['batch']
    echo(_headline(report))
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
    units = report.get('units')
    if units:
        echo(
            f'  units:       {units.get("done_units")} done ({units.get("done_items")} items), '
            f'{units.get("stale_units")} stale ({units.get("stale_items")} items), '
            f'{units.get("failed_units")} failed, {units.get("missing_units")} missing'
            + (f', {units.get("kept_units")} kept from other versions' if units.get('kept_units') else '')
        )
    echo(f'  started:     {format_time(status.get("started"))}')
    echo(f'  last update: {format_time(status.get("updated"))}')
    if report['rate'] is not None:
        echo(f'  rate:        {report["rate"]:.1f} items/s')
    if state == 'running':
        eta = report['eta_seconds']
        echo(f'  eta:         {format_duration(eta) if eta is not None else "not known before the first item"}')
    workers = status.get('workers')
    if isinstance(workers, int) and workers:
        echo(f'  workers:     {plural(workers, "worker")}')
    if status.get('executor'):
        echo(f'  executor:    {status.get("executor")}')
    if status.get('dashboard'):
        echo(f'  dashboard: {status.get("dashboard")}')
    _print_runs(report)
    if report['killed']:
        echo("the batch's process is gone but it never finished (killed?); run it again to resume")
    elif state == 'crashed':
        # A batch stopped by an error (a job that cannot be sent, a full
        # disk...) stops the same way when run again as it is.
        error = report['error']
        cause = f': {first_line(error, 500)}' if error else ' (its output says which)'
        echo(f'the batch stopped on an error{cause}; fix the cause before running it again')
    elif state == 'interrupted':
        echo('the batch was interrupted; run it again to resume')


def _print_runs(report: dict[str, Any]) -> None:
    """One line per run when several runs share the folder (or one died holding claims)."""
    runs = report.get('runs') or []
    if len(runs) < 2 and not any(r['state'] in ('expiring', 'dead') for r in runs):
        return
    echo(f'runs: {plural(report["combined"]["live_runs"], "live run")} of {len(runs)} recorded')
    for run in runs:
        line = f'  {run["run"]}: {run["state"]}, pid {run["pid"]} on {run["host"]}'
        if run['state'] in ('live', 'expiring'):
            line += f', {plural(run["workers"] or 0, "worker")}, {float(run["rate"] or 0):.1f} items/s'
            line += f', {plural(run["claims"], "claim")} ({run["claimed_keys"]} keys)'
        if run['state'] == 'expiring':
            line += f'; silent for {run["heartbeat_age"]:.0f}s, its claims expire in {run["expires_in"]:.0f}s'
        echo(line)


def _ended(report: dict[str, Any]) -> bool:
    return report['state'] != 'running' or report['alive'] is False


def cmd_status(args: argparse.Namespace) -> int:
    """``stashworks status DIR``: progress of a running or finished batch (``--watch``: until it ends)."""
    batch = BatchDir(args.dir, raw_names=args.raw_names)
    clear = args.watch and not args.json and sys.stdout.isatty()
    while True:
        report = status_report(batch)
        if clear:
            # Redraw in place at a terminal; a pipe or a log gets every refresh.
            sys.stdout.write('\x1b[H\x1b[2J')
        if args.json and args.watch:
            # One document per line, so a reader can take each refresh as it comes.
            echo(json.dumps(report, ensure_ascii=False, default=repr))
        elif args.json:
            print_json(report)
        else:
            _print_status(report)
        if not args.watch or _ended(report):
            return 0
        if not clear and not args.json:
            echo()
        time.sleep(args.interval)


# -- keys ------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    """``stashworks keys DIR``: the keys of the stored items (or of failures)."""
    batch = BatchDir(args.dir, raw_names=args.raw_names)
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
    batch = BatchDir(args.dir, raw_names=args.raw_names)
    if not batch.items.exists(args.key):
        raise _missing_key(batch, args.key)
    if args.raw:
        if sys.stdout.isatty():
            # Pickle bytes on a terminal are noise at best and can leave
            # it in a strange state; a file or a pipe is what --raw is for.
            raise CliError(
                f'refusing to write the pickle bytes of {args.key!r} to a terminal; redirect stdout, '
                f'such as: stashworks show {batch.path} {args.key} --raw > item.pickle'
            )
        data = batch.raw_item(args.key)
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
            echo(
                f'cleared {plural(len(keys), "failure record")} in {batch.path}; the next run computes those keys again'
            )
        return 0
    records: list[dict[str, Any]] = []
    unreadable: list[str] = []
    for key in keys:
        # One malformed record must not hide the others.
        try:
            records.append(batch.failure(key))
        except Exception as exc:
            unreadable.append(key)
            where = batch.failures.path
            note(f'stashworks: error: cannot read the failure record of {key!r} in {where}: {first_line(exc)}')
    if args.json:
        if not args.traceback:
            for record in records:
                record.pop('traceback', None)
        print_json(records)
        return 1 if unreadable else 0
    if not records and not unreadable:
        note(f'no failures recorded in {batch.path}')
        return 0
    width = min(max((len(r['key']) for r in records), default=0), 60)
    for record in records:
        echo(f'{record["key"]:<{width}}  {record.get("error_type")}: {first_line(record.get("message"))}')
        if args.traceback and record.get('traceback'):
            for line in str(record['traceback']).rstrip().splitlines():
                echo(f'    {line}')
    note(f'{plural(len(keys), "failure")}; run the batch again with --retry-failures to compute them again')
    return 1 if unreadable else 0


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
        echo(f'removed {plural(len(known), "key")} from {batch.path}; the next run computes them again')
    return 0
