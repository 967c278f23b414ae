"""``stashworks run`` and ``demo`` tell the truth about what is on disk.

The exit status comes from the items and failure records on disk, not
from the batch's own count; an output folder that cannot be written is
refused at once, in one line; ``--item-timeout`` ends a hung key.  Real
commands in subprocesses, real mounts (skipped with the reason where
they cannot be made).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cli_helpers import stashworks
from mounts import read_only_folder, tmpfs
from stashworks import DirectoryStash

pytestmark = pytest.mark.timeout(120)

FAST = ('--workers', '2', '--no-progress')


def _keys_file(tmp_path: Path, keys: list[str]) -> Path:
    path = tmp_path / 'keys.txt'
    path.write_text(''.join(f'{k}\n' for k in keys), encoding='utf-8')
    return path


def test_run_is_not_successful_when_failures_could_not_be_recorded_on_a_full_disk(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [str(i) for i in range(6)])
    with tmpfs(tmp_path / 'disk', '256k') as disk:
        out = disk / 'out'
        proc = stashworks(
            'run',
            'reliability_cli_jobs:fill_disk_then_fail',
            '--keys',
            keys,
            '--out',
            out,
            '--workers',
            '1',
            '--no-progress',
            RELIABILITY_FILLER=str(disk / 'filler'),
        )
        on_disk = len(DirectoryStash(out).keys())
    assert on_disk < 6
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert 'Traceback' not in proc.stderr


def test_run_is_not_successful_when_the_failure_folder_is_read_only(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [str(i) for i in range(6)])
    out = tmp_path / 'out'
    with read_only_folder(out / '.stashworks' / 'failures'):
        proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', out, *FAST)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert 'Traceback' not in proc.stderr


def test_run_refuses_an_output_folder_it_cannot_write_in_one_line(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [f'key{i}' for i in range(300)])
    with read_only_folder(tmp_path / 'ro') as ro:
        proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', ro, *FAST)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert 'Traceback' not in proc.stderr
    # One error, not one per key (300 of them).
    errors = [line for line in proc.stderr.splitlines() if line.startswith('stashworks: error')]
    assert len(errors) == 1, proc.stderr
    assert len(proc.stderr.splitlines()) < 5, proc.stderr
    line = errors[0]
    assert str(ro) in line
    assert 'Read-only file system' in line or 'Permission denied' in line
    assert 'key1' not in proc.stdout + proc.stderr


def test_demo_refuses_an_output_folder_it_cannot_write_and_does_not_call_it_expected(tmp_path: Path) -> None:
    with read_only_folder(tmp_path / 'ro') as ro:
        proc = stashworks('demo', '--out', ro, '--limit', '40', *FAST)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert 'Traceback' not in proc.stderr
    # The demo names its source first; then one error, not one per file.
    errors = [line for line in proc.stderr.splitlines() if line.startswith('stashworks: error')]
    assert len(errors) == 1, proc.stderr
    assert str(ro) in errors[0]
    assert 'expected' not in proc.stdout + proc.stderr


def test_run_item_timeout_records_a_hung_key_and_finishes(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [str(i) for i in range(8)])
    out = tmp_path / 'out'
    started = time.monotonic()
    proc = stashworks(
        'run',
        'reliability_cli_jobs:hang_on_3',
        '--keys',
        keys,
        '--out',
        out,
        '--item-timeout',
        '2',
        *FAST,
        timeout=90,
    )
    assert time.monotonic() - started < 60
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert sorted(DirectoryStash(out).keys()) == ['0', '1', '2', '4', '5', '6', '7']
    listed = [line for line in proc.stdout.splitlines() if line.strip().startswith('3:')]
    assert listed and 'Timeout' in listed[0] and '2' in listed[0], proc.stdout
