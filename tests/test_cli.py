"""The ``stashworks`` command running batches: ``demo``, ``run``, and ``status`` of a live batch.

Every test runs the installed command in a subprocess, on real files,
with real worker processes and real signals, each under a timeout.  The
functions ``run`` imports live in ``tests/cli_jobs.py``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from cli_helpers import error_line, start_stashworks, stashworks
from stashworks import DirectoryStash, demo

pytestmark = pytest.mark.timeout(90)

#: Small and parallel: fast on a 2-core machine, still two real workers.
FAST = ('--workers', '2', '--no-progress')


def _keys_file(tmp_path: Path, keys: list[str]) -> Path:
    path = tmp_path / 'keys.txt'
    path.write_text(''.join(f'{k}\n' for k in keys), encoding='utf-8')
    return path


def _mtimes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in path.glob('*.dat')}


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = 'condition') -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


# -- demo ------------------------------------------------------------------


def test_demo_stores_one_record_per_stdlib_file_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / 'demo'
    proc = stashworks('demo', '--out', out, '--limit', '6', *FAST)
    assert proc.returncode == 0, proc.stderr
    assert '6 of 6 done: 0 before, 6 now, 0 failed' in proc.stdout
    assert 'items/s' in proc.stdout
    first = demo.source_files(demo.stdlib_root(), 6)
    assert sorted(DirectoryStash(out).keys()) == first
    assert DirectoryStash(out)[first[0]]['path'] == first[0]


def test_demo_second_run_computes_nothing_and_says_all_done(tmp_path: Path) -> None:
    out = tmp_path / 'demo'
    assert stashworks('demo', '--out', out, '--limit', '4', *FAST).returncode == 0
    before = _mtimes(out)
    proc = stashworks('demo', '--out', out, '--limit', '4', *FAST)
    assert proc.returncode == 0, proc.stderr
    assert 'all 4 items already done' in proc.stdout
    assert 'nothing to compute' in proc.stdout
    assert _mtimes(out) == before


def test_demo_records_files_that_do_not_parse_as_failures_and_exits_0(tmp_path: Path) -> None:
    source = tmp_path / 'src'
    source.mkdir()
    (source / 'good.py').write_text('x = 1\n')
    (source / 'bad.py').write_text('def (:\n')
    out = tmp_path / 'demo'
    proc = stashworks('demo', '--source', source, '--out', out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert '1 file did not parse' in proc.stderr
    assert 'exit status is 0' in proc.stderr
    records = json.loads(stashworks('failures', out, '--json').stdout)
    assert [(r['key'], r['error_type']) for r in records] == [('bad.py', 'SyntaxError')]


def test_demo_writes_to_stashworks_demo_in_the_current_folder_by_default(tmp_path: Path) -> None:
    proc = stashworks('demo', '--limit', '2', *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(DirectoryStash(tmp_path / 'stashworks-demo')) == 2


def test_demo_progress_bar_goes_to_stderr_when_asked(tmp_path: Path) -> None:
    proc = stashworks('demo', '--out', tmp_path / 'demo', '--limit', '3', '--workers', '2', '--progress')
    assert proc.returncode == 0, proc.stderr
    assert '3/3' in proc.stderr
    assert '3/3' not in proc.stdout


def test_demo_with_a_progress_bar_prints_its_summary_once(tmp_path: Path) -> None:
    proc = stashworks('demo', '--out', tmp_path / 'demo', '--limit', '3', '--workers', '2', '--progress')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('3 of 3 done: 0 before, 3 now, 0 failed') == 1, proc.stdout
    # The bar closes without a summary of its own under it.
    assert 'computed now' not in proc.stderr, proc.stderr


# -- run -------------------------------------------------------------------


def test_run_stores_every_value_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    proc = stashworks('run', 'cli_jobs:square', '--keys', _keys_file(tmp_path, ['2', '3']), '--out', out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert dict(DirectoryStash(out).items()) == {'2': 4, '3': 9}


def test_run_exits_1_and_lists_the_failed_keys(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [str(i) for i in range(6)])
    proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', tmp_path / 'out', *FAST)
    assert proc.returncode == 1, proc.stderr
    assert '3 keys failed:' in proc.stdout
    for key in ('1', '3', '5'):
        assert f'  {key}: ValueError: odd key {key}' in proc.stdout
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['0', '2', '4']


def test_run_again_with_failures_left_still_exits_1(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['0', '1'])
    stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', tmp_path / 'out', *FAST)
    proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', tmp_path / 'out', *FAST)
    assert proc.returncode == 1
    assert '1 key failed:' in proc.stdout


def test_run_retry_failures_computes_the_failed_keys_again(tmp_path: Path) -> None:
    keys, out = _keys_file(tmp_path, ['0', '1', '2', '3']), tmp_path / 'out'
    assert stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', out, *FAST).returncode == 1
    # The fixed function is another version of the code: keep what the
    # first one stored, compute only the failed keys again.
    proc = stashworks(
        'run', 'cli_jobs:square', '--keys', keys, '--out', out, '--retry-failures', '--on-stale', 'keep', *FAST
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dict(DirectoryStash(out).items()) == {'0': 0, '1': 1, '2': 2, '3': 9}
    assert stashworks('keys', out, '--failed').stdout == ''


def test_run_reads_keys_from_stdin(tmp_path: Path) -> None:
    proc = stashworks('run', 'cli_jobs:square', '--keys', '-', '--out', tmp_path / 'out', *FAST, input='4\n\n5\n')
    assert proc.returncode == 0, proc.stderr
    assert dict(DirectoryStash(tmp_path / 'out').items()) == {'4': 16, '5': 25}


@pytest.mark.parametrize('source', ['cli_jobs:KEYS', 'cli_jobs:numbers'])
def test_run_reads_keys_from_a_module_iterable_or_function(tmp_path: Path, source: str) -> None:
    proc = stashworks('run', 'cli_jobs:square', '--keys', source, '--out', tmp_path / 'out', *FAST)
    assert proc.returncode == 0, proc.stderr
    assert len(DirectoryStash(tmp_path / 'out')) == 10


def test_run_imports_the_function_from_the_current_folder(tmp_path: Path) -> None:
    (tmp_path / 'localjob.py').write_text('def double(key):\n    return key * 2\n')
    proc = stashworks(
        'run', 'localjob:double', '--keys', _keys_file(tmp_path, ['ab']), '--out', 'out', *FAST, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert DirectoryStash(tmp_path / 'out')['ab'] == 'abab'


@pytest.mark.parametrize(
    ('function', 'keys', 'message'),
    [
        ('no_such_module:f', 'cli_jobs:KEYS', "no module named 'no_such_module'"),
        ('cli_jobs:no_such_function', 'cli_jobs:KEYS', "has no attribute 'no_such_function'"),
        ('cli_jobs:KEYS', 'cli_jobs:KEYS', 'not a function'),
        ('raising_module:f', 'cli_jobs:KEYS', "error while importing 'raising_module': RuntimeError: boom"),
        ('cli_jobs:square', 'missing-keys.txt', 'no such key file'),
        ('cli_jobs:square', 'cli_jobs:not_strings', 'not a str'),
        ('cli_jobs:square', 'cli_jobs:KEYS', 'not a directory'),
    ],
    ids=['no-module', 'no-function', 'not-callable', 'module-raises', 'no-key-file', 'non-str-keys', 'out-is-a-file'],
)
def test_run_errors_are_one_line_and_exit_1(tmp_path: Path, function: str, keys: str, message: str) -> None:
    (tmp_path / 'raising_module.py').write_text('raise RuntimeError("boom")\n')
    (tmp_path / 'a-file').write_text('')
    out = tmp_path / ('a-file' if message == 'not a directory' else 'out')
    proc = stashworks('run', function, '--keys', keys, '--out', out, *FAST, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in error_line(proc)


def test_run_with_a_malformed_function_is_a_usage_error(tmp_path: Path) -> None:
    proc = stashworks('run', 'not a spec', '--keys', 'cli_jobs:KEYS', '--out', tmp_path / 'out', *FAST)
    assert proc.returncode == 2
    assert 'expected MODULE:NAME' in error_line(proc)


# -- watching a live batch, and Ctrl-C ---------------------------------------


def test_status_follows_a_running_batch_then_sees_it_finished(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    keys = _keys_file(tmp_path, [f'k{i:02d}' for i in range(60)])
    proc = start_stashworks('run', 'cli_jobs:logged_slow', '--keys', keys, '--out', out, *FAST, CLI_JOBS_DELAY='0.1')
    try:
        status_file = out / '.stashworks' / 'status.json'
        # While it runs, `status` counts what the batch's status file says
        # (rewritten about once a second), not every file in the folder.
        _wait_for(
            lambda: status_file.exists() and json.loads(status_file.read_text(encoding='utf-8'))['done'] >= 2,
            what='a running batch',
        )
        running = json.loads(stashworks('status', out, '--json').stdout)
        assert (running['state'], running['alive'], running['batch']['pid']) == ('running', True, proc.pid)
        assert running['batch']['total'] == 60
        assert 2 <= running['done'] < 60
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.communicate()
    finished = json.loads(stashworks('status', out, '--json').stdout)
    assert (finished['state'], finished['alive'], finished['done']) == ('finished', False, 60)
    text = stashworks('status', out).stdout
    assert 'batch: finished' in text
    assert '(not running)' in text


def test_ctrl_c_stops_run_with_130_and_a_rerun_resumes_without_recomputing(tmp_path: Path) -> None:
    out, log = tmp_path / 'out', tmp_path / 'calls.log'
    keys = [f'k{i:02d}' for i in range(30)]
    args = ('run', 'cli_jobs:logged_slow', '--keys', _keys_file(tmp_path, keys), '--out', out, *FAST)
    proc = start_stashworks(*args, CLI_JOBS_DELAY='0.2', CLI_JOBS_LOG=str(log))
    try:
        _wait_for(lambda: len(DirectoryStash(out)) >= 4, what='some items')
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert 'resume' in stderr
    assert 'Traceback' not in stderr
    done_at_stop = set(DirectoryStash(out).keys())
    assert 4 <= len(done_at_stop) < 30
    rerun = stashworks(*args, CLI_JOBS_DELAY='0', CLI_JOBS_LOG=str(log))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert set(DirectoryStash(out).keys()) == set(keys)
    calls = Counter(log.read_text().split())
    assert {key: calls[key] for key in done_at_stop} == dict.fromkeys(done_at_stop, 1)


def test_ctrl_c_with_a_progress_bar_says_what_was_done_once(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    keys = _keys_file(tmp_path, [f'k{i:02d}' for i in range(30)])
    args = ('run', 'cli_jobs:logged_slow', '--keys', keys, '--out', out, '--workers', '2', '--progress')
    proc = start_stashworks(*args, CLI_JOBS_DELAY='0.2')
    try:
        _wait_for(lambda: len(DirectoryStash(out)) >= 2, what='some items')
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert (stdout + stderr).count('interrupted with') == 1, stdout + stderr
    assert stdout.startswith('2 of 30 done') or ' of 30 done' in stdout, stdout
    assert stderr.count('To resume:') == 1, stderr


def test_sigterm_stops_run_with_143_keeping_completed_items(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    keys = _keys_file(tmp_path, [f'k{i:02d}' for i in range(30)])
    proc = start_stashworks('run', 'cli_jobs:logged_slow', '--keys', keys, '--out', out, *FAST, CLI_JOBS_DELAY='0.2')
    try:
        _wait_for(lambda: len(DirectoryStash(out)) >= 2, what='some items')
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr  # 128 + SIGTERM, as a shell reports it
    assert 'To resume: stashworks run cli_jobs:logged_slow' in stderr
    assert json.loads(stashworks('status', out, '--json').stdout)['state'] == 'interrupted'
