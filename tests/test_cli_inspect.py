"""The inspecting commands (status, keys, show, failures, rm) and the error paths.

These read an output folder laid out as a batch leaves it (items, JSON
failure records, ``status.json``), written here directly, so they need no
batch to run.  Every command runs as the installed ``stashworks``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import command, error_line, stashworks
from stashworks import DirectoryStash, JsonSerializer

pytestmark = pytest.mark.timeout(60)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')


def _failure(key: str, error_type: str = 'ValueError', message: str = 'bad value') -> dict[str, Any]:
    return {
        'key': key,
        'error_type': error_type,
        'message': message,
        'traceback': f'Traceback (most recent call last):\n  File "job.py", line 3\n{error_type}: {message}\n',
        'worker': 'host:1',
        'pid': 1,
        'time': _now(),
        'attempts': 1,
    }


def _write_status(out: Path, **fields: Any) -> None:
    status = {
        'pid': os.getpid(),
        'host': socket.gethostname(),
        'state': 'finished',
        'total': 5,
        'done_before': 0,
        'done': 3,
        'failed': 1,
        'started': _now(),
        'updated': _now(),
        'rate': 12.5,
        'eta_seconds': None,
        'workers': 2,
        'executor': 'local pool (2 workers)',
    }
    status.update(fields)
    (out / '.stashworks' / 'status.json').write_text(json.dumps(status), encoding='utf-8')


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder with three items, one failure and a finished status."""
    path = tmp_path / 'out'
    items = DirectoryStash(path)
    items['a'] = {'name': 'a', 'values': [1, 2, 3]}
    items['dir/with space'] = None
    items['long'] = list(range(5000))
    failures = DirectoryStash(path / '.stashworks' / 'failures', pattern='{name}.json', serializer=JsonSerializer())
    failures['bad'] = _failure('bad')
    _write_status(path)
    return path


# -- keys ------------------------------------------------------------------


def test_keys_lists_stored_keys_sorted_one_per_line(out: Path) -> None:
    proc = stashworks('keys', out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ['a', 'dir/with space', 'long']


def test_keys_failed_lists_failed_keys(out: Path) -> None:
    assert stashworks('keys', out, '--failed').stdout.splitlines() == ['bad']


def test_keys_json_is_a_list(out: Path) -> None:
    assert json.loads(stashworks('keys', out, '--json').stdout) == ['a', 'dir/with space', 'long']


def test_keys_works_on_a_plain_directory_stash_without_batch_files(tmp_path: Path) -> None:
    DirectoryStash(tmp_path)['x'] = 1
    assert stashworks('keys', tmp_path).stdout.splitlines() == ['x']


# -- show ------------------------------------------------------------------


def test_show_renders_the_value_readably(out: Path) -> None:
    proc = stashworks('show', out, 'a')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'name': 'a', 'values': [1, 2, 3]}"


def test_show_renders_none_for_a_stored_none(out: Path) -> None:
    assert stashworks('show', out, 'dir/with space').stdout.strip() == 'None'


def test_show_cuts_a_large_value_at_max_chars(out: Path) -> None:
    proc = stashworks('show', out, 'long', '--max-chars', '100')
    first, rest = proc.stdout.split('\n... (', 1)
    assert len(first) == 100
    assert 'more characters' in rest


def test_show_max_chars_zero_shows_everything(out: Path) -> None:
    assert stashworks('show', out, 'long', '--max-chars', '0').stdout.strip().endswith('4999]')


def test_show_raw_writes_the_stored_pickle_bytes(out: Path) -> None:
    proc = subprocess.run([*command(), 'show', str(out), 'a', '--raw'], capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert pickle.loads(proc.stdout) == {'name': 'a', 'values': [1, 2, 3]}


def test_show_json_has_key_type_and_value(out: Path) -> None:
    data = json.loads(stashworks('show', out, 'a', '--json').stdout)
    assert data == {'key': 'a', 'type': 'builtins.dict', 'value': {'name': 'a', 'values': [1, 2, 3]}}


def test_show_of_a_failed_key_says_it_failed(out: Path) -> None:
    proc = stashworks('show', out, 'bad')
    assert proc.returncode == 1
    assert "no item 'bad'" in error_line(proc)
    assert 'ValueError: bad value' in error_line(proc)


# -- failures --------------------------------------------------------------


def test_failures_lists_key_error_type_and_message(out: Path) -> None:
    proc = stashworks('failures', out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ['bad', 'ValueError:', 'bad', 'value']
    assert 'Traceback' not in proc.stdout


def test_failures_traceback_shows_each_traceback(out: Path) -> None:
    proc = stashworks('failures', out, '--traceback')
    assert 'Traceback (most recent call last):' in proc.stdout
    assert 'File "job.py", line 3' in proc.stdout


def test_failures_json_is_a_list_of_records(out: Path) -> None:
    records = json.loads(stashworks('failures', out, '--json').stdout)
    assert [(r['key'], r['error_type'], r['message']) for r in records] == [('bad', 'ValueError', 'bad value')]
    assert 'traceback' not in records[0]
    records = json.loads(stashworks('failures', out, '--json', '--traceback').stdout)
    assert records[0]['traceback'].startswith('Traceback')


def test_failures_clear_deletes_every_record_and_keeps_items(out: Path) -> None:
    proc = stashworks('failures', out, '--clear')
    assert proc.returncode == 0, proc.stderr
    assert 'cleared 1' in proc.stdout
    assert stashworks('keys', out, '--failed').stdout == ''
    assert stashworks('keys', out).stdout.splitlines() == ['a', 'dir/with space', 'long']


# -- rm --------------------------------------------------------------------


def test_rm_deletes_items_and_failure_records(out: Path) -> None:
    proc = stashworks('rm', out, 'a', 'bad')
    assert proc.returncode == 0, proc.stderr
    assert stashworks('keys', out).stdout.splitlines() == ['dir/with space', 'long']
    assert stashworks('keys', out, '--failed').stdout == ''


def test_rm_with_an_unknown_key_removes_nothing(out: Path) -> None:
    proc = stashworks('rm', out, 'a', 'nope')
    assert proc.returncode == 1
    assert "'nope'" in error_line(proc)
    assert 'a' in stashworks('keys', out).stdout.splitlines()


def test_rm_json_lists_removed_keys(out: Path) -> None:
    assert json.loads(stashworks('rm', out, 'long', '--json').stdout) == {'removed': ['long']}


# -- status ----------------------------------------------------------------


def test_status_counts_items_and_failures_on_disk(out: Path) -> None:
    proc = stashworks('status', out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f'{out}: 3 done, 1 failed, of 5: finished with 1 failure and 1 item missing'
    assert 'batch: finished' in proc.stdout


def test_status_json_has_counts_state_and_the_batch_status(out: Path) -> None:
    report = json.loads(stashworks('status', out, '--json').stdout)
    assert (report['done'], report['failed'], report['state']) == (3, 1, 'finished')
    assert report['batch']['total'] == 5


def test_status_of_a_live_running_batch_says_alive(out: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
        _write_status(out, pid=sleeper.pid, state='running', eta_seconds=4.0)
        report = json.loads(stashworks('status', out, '--json').stdout)
        assert (report['state'], report['alive']) == ('running', True)
        text = stashworks('status', out).stdout
        assert f'pid {sleeper.pid}' in text
        assert '(alive)' in text
        assert 'eta:' in text
    finally:
        sleeper.kill()
        sleeper.wait()


def test_status_of_a_running_batch_whose_process_is_gone_says_crashed(out: Path) -> None:
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    _write_status(out, pid=dead.pid, state='running')
    report = json.loads(stashworks('status', out, '--json').stdout)
    assert (report['state'], report['alive']) == ('crashed', False)
    assert 'run it again to resume' in stashworks('status', out).stdout


def test_status_of_a_batch_on_another_host_cannot_tell_liveness(out: Path) -> None:
    _write_status(out, host='elsewhere.invalid', state='running')
    report = json.loads(stashworks('status', out, '--json').stdout)
    assert (report['state'], report['alive']) == ('running', None)


def test_status_without_a_status_file_says_no_batch_ran(tmp_path: Path) -> None:
    DirectoryStash(tmp_path)['x'] = 1
    proc = stashworks('status', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'no batch status recorded' in proc.stdout


# -- errors ----------------------------------------------------------------


def _not_a_stash(tmp_path: Path) -> Path:
    (tmp_path / 'empty').mkdir()
    return tmp_path / 'empty'


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / 'file').write_text('x')
    return tmp_path / 'file'


@pytest.mark.parametrize('command', ['status', 'keys', 'failures'])
@pytest.mark.parametrize(
    ('make_dir', 'message'),
    [
        (lambda p: p / 'missing', 'no such directory'),
        (_a_file, 'not a directory'),
        (_not_a_stash, 'not a stash'),
    ],
    ids=['missing', 'file', 'not-a-stash'],
)
def test_inspecting_a_bad_directory_is_one_line_and_exit_1(
    tmp_path: Path, command: str, make_dir: Any, message: str
) -> None:
    proc = stashworks(command, make_dir(tmp_path))
    assert proc.returncode == 1
    assert message in error_line(proc)


def test_show_of_an_unknown_key_is_one_line_and_exit_1(out: Path) -> None:
    proc = stashworks('show', out, 'nope')
    assert proc.returncode == 1
    assert "no item 'nope'" in error_line(proc)


def test_show_of_a_corrupt_item_is_one_line_and_exit_1(out: Path) -> None:
    (out / 'a.dat').write_bytes(b'not a pickle')
    proc = stashworks('show', out, 'a')
    assert proc.returncode == 1
    assert "'a'" in error_line(proc)


def test_show_of_a_value_whose_class_cannot_be_imported_says_so(tmp_path: Path) -> None:
    (tmp_path / 'gone_module.py').write_text('class Point:\n    pass\n')
    code = 'import gone_module, stashworks; stashworks.DirectoryStash("out")["p"] = gone_module.Point()'
    subprocess.run([sys.executable, '-c', code], cwd=tmp_path, check=True, timeout=60)
    (tmp_path / 'gone_module.py').unlink()
    proc = stashworks('show', tmp_path / 'out', 'p', cwd=tmp_path)
    assert proc.returncode == 1
    assert "No module named 'gone_module'" in error_line(proc)
    assert 'where its code is importable' in error_line(proc)


def test_show_imports_value_classes_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / 'here_module.py').write_text('class Point:\n    def __repr__(self):\n        return "Point()"\n')
    code = 'import here_module, stashworks; stashworks.DirectoryStash("out")["p"] = here_module.Point()'
    subprocess.run([sys.executable, '-c', code], cwd=tmp_path, check=True, timeout=60)
    proc = stashworks('show', 'out', 'p', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'Point()'


def test_corrupt_status_file_is_one_line_and_exit_1(out: Path) -> None:
    (out / '.stashworks' / 'status.json').write_text('{half')
    proc = stashworks('status', out)
    assert proc.returncode == 1
    assert 'corrupt status file' in error_line(proc)


@pytest.mark.parametrize(
    'args',
    [
        [],
        ['frobnicate'],
        ['show'],
        ['rm', 'dir'],
        ['run', 'cli_jobs:square', '--out', 'x'],
        ['demo', '--workers', 'lots'],
        ['demo', '--limit', '-1'],
        ['run', 'cli_jobs:square', '--keys', 'cli_jobs:KEYS', '--out', 'x', '--chunk-size', '-3'],
    ],
    ids=[
        'no-command',
        'unknown-command',
        'show-no-args',
        'rm-no-keys',
        'run-no-keys',
        'bad-workers',
        'negative-limit',
        'negative-chunk-size',
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    proc = stashworks(*args)
    assert proc.returncode == 2
    error_line(proc)


def test_version_prints_the_package_version() -> None:
    from stashworks import __version__

    proc = stashworks('--version')
    assert proc.returncode == 0
    assert proc.stdout.strip() == f'stashworks {__version__}'
