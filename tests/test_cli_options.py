"""What a new user meets on the command line: streams, wording, options, exit statuses.

Every test runs the installed ``stashworks`` command in a subprocess, on
real files and real worker processes; where a terminal matters, on a real
pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from cli_helpers import TESTS_DIR, cli_env, command, error_line, start_stashworks, stashworks, stashworks_tty
from stashworks import DirectoryStash
from stashworks.multi import usable_cpus

pytestmark = pytest.mark.timeout(120)

FAST = ('--workers', '2', '--no-progress')


def _keys_file(tmp_path: Path, keys: list[str], name: str = 'keys.txt') -> Path:
    path = tmp_path / name
    path.write_text(''.join(f'{k}\n' for k in keys), encoding='utf-8')
    return path


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = 'condition') -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.05)


def _status_file(out: Path) -> dict[str, object]:
    data = json.loads((out / '.stashworks' / 'status.json').read_text(encoding='utf-8'))
    assert isinstance(data, dict)
    return data


# -- where the output goes ---------------------------------------------------


def test_run_prints_its_summary_on_stdout_when_stderr_is_a_terminal(tmp_path: Path) -> None:
    # `stashworks run ... > log.txt` at a terminal: the bar on the terminal,
    # the summary in the log.
    keys = _keys_file(tmp_path, ['1', '2', '3'])
    code, stdout, stderr = stashworks_tty(
        'run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'out', '-w', '2'
    )
    assert code == 0, stderr
    assert '3/3' in stderr  # the bar is on the terminal
    assert stdout.startswith('3 of 3 done: 0 before, 3 now, 0 failed'), stdout


def test_run_summary_is_the_same_line_with_and_without_a_terminal(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['1', '2'])
    _, tty_out, _ = stashworks_tty('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'a', '-w', '2')
    piped = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'b', '-w', '2')
    assert piped.returncode == 0, piped.stderr

    def shape(text: str) -> str:
        return text.splitlines()[0].split(';')[0]

    assert shape(tty_out) == shape(piped.stdout) == '2 of 2 done: 0 before, 2 now, 0 failed'


def test_run_hints_go_to_stderr_and_stdout_holds_the_summary_and_failed_keys(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['0', '1', '2'])
    proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', tmp_path / 'out', *FAST)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        proc.stdout.splitlines()[0],
        '1 key failed:',
        '  1: ValueError: odd key 1',
    ]
    assert proc.stdout.startswith('2 of 3 done: 0 before, 2 now, 1 failed')
    assert 'stashworks failures' in proc.stderr
    assert 'stashworks failures' not in proc.stdout


def test_demo_hints_go_to_stderr(tmp_path: Path) -> None:
    source = tmp_path / 'src'
    source.mkdir()
    (source / 'good.py').write_text('x = 1\n')
    (source / 'bad.py').write_text('def (:\n')
    proc = stashworks('demo', '--source', source, '--out', tmp_path / 'demo', *FAST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith('1 of 2 done: 0 before, 1 now, 1 failed')
    assert len(proc.stdout.splitlines()) == 1, proc.stdout
    assert 'look inside' in proc.stderr
    assert '1 file did not parse' in proc.stderr


def test_run_json_prints_the_summary_as_one_json_document(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['0', '1', '2', '3'])
    proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', tmp_path / 'out', *FAST, '--json')
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary['total'] == 4
    assert (summary['done'], summary['computed'], summary['failed']) == (2, 2, 2)
    assert summary['failed_keys'] == ['1', '3']
    assert summary['interrupted'] is False
    assert summary['out'] == str(tmp_path / 'out')


# -- wording -------------------------------------------------------------------


def test_a_single_failure_is_one_key_not_key_s(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['0', '1'])
    proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', tmp_path / 'out', *FAST)
    both = proc.stdout + proc.stderr
    assert '1 key failed:' in both
    assert '(s)' not in both
    cleared = stashworks('failures', tmp_path / 'out', '--clear')
    assert 'cleared 1 failure record in' in cleared.stdout + cleared.stderr


def test_non_str_keys_are_named_with_the_right_article(tmp_path: Path) -> None:
    proc = stashworks('run', 'cli_jobs:square', '--keys', 'cli_jobs:not_strings', '--out', tmp_path / 'out', *FAST)
    assert 'is an int, not a str' in error_line(proc)


def test_run_cuts_a_huge_failure_message_like_failures_does(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['k'])
    proc = stashworks('run', 'cli_jobs:huge_message', '--keys', keys, '--out', tmp_path / 'out', *FAST)
    assert proc.returncode == 1
    line = next(line for line in proc.stdout.splitlines() if line.startswith('  k: '))
    assert len(line) < 300
    assert line.endswith('...')
    listed = stashworks('failures', tmp_path / 'out')
    assert listed.stdout.splitlines()[0].endswith(line[len('  k: ') :])


# -- keys ----------------------------------------------------------------------


def test_an_empty_key_list_says_so_exits_0_and_creates_nothing(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [])
    out = tmp_path / 'out'
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert 'no keys' in proc.stdout + proc.stderr
    assert 'stashworks status' not in proc.stdout + proc.stderr
    assert not out.exists()


def test_demo_of_an_empty_tree_suggests_no_command_on_a_folder_never_created(tmp_path: Path) -> None:
    (tmp_path / 'empty').mkdir()
    out = tmp_path / 'demo'
    proc = stashworks('demo', '--source', tmp_path / 'empty', '--out', out, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert 'no .py files' in proc.stdout + proc.stderr
    assert 'stashworks status' not in proc.stdout + proc.stderr
    assert not out.exists()


def test_a_bom_and_crlf_line_ends_are_not_part_of_the_keys(tmp_path: Path) -> None:
    keys = tmp_path / 'keys.txt'
    keys.write_bytes(b'\xef\xbb\xbfalpha\r\nbeta\r\n')
    proc = stashworks('run', 'cli_jobs:slow', '--keys', keys, '--out', tmp_path / 'out', *FAST, CLI_JOBS_DELAY='0')
    assert proc.returncode == 0, proc.stderr
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['alpha', 'beta']


def test_a_bom_on_stdin_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*command(), 'run', 'cli_jobs:slow', '--keys', '-', '--out', str(tmp_path / 'o'), *FAST],
        input=b'\xef\xbb\xbfalpha\r\nbeta\r\n',
        capture_output=True,
        env=cli_env(CLI_JOBS_DELAY='0'),
        cwd=TESTS_DIR,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(DirectoryStash(tmp_path / 'o').keys()) == ['alpha', 'beta']


def test_run_limit_computes_only_the_first_n_keys(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['5', '3', '9', '1'])
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'out', *FAST, '--limit', '2')
    assert proc.returncode == 0, proc.stderr
    assert sorted(DirectoryStash(tmp_path / 'out').keys()) == ['3', '5']
    assert proc.stdout.startswith('2 of 2 done')


# -- batch options -------------------------------------------------------------


def test_serial_runs_every_item_in_the_command_process(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['a', 'b', 'c'])
    proc = start_stashworks('run', 'cli_jobs:pid', '--keys', keys, '--out', tmp_path / 'out', '--serial')
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert set(DirectoryStash(tmp_path / 'out').values()) == {proc.pid}


def test_max_items_per_worker_replaces_each_worker_after_n_items(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['a', 'b', 'c', 'd'])
    proc = stashworks(
        'run', 'cli_jobs:pid', '--keys', keys, '--out', tmp_path / 'out', '-w', '1', '--no-progress',
        '--max-items-per-worker', '1', '--chunk-size', '1',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(set(DirectoryStash(tmp_path / 'out').values())) == 4


@pytest.mark.parametrize('method', ['fork', 'spawn'])
def test_start_method_is_used_by_the_pool(tmp_path: Path, method: str) -> None:
    keys = _keys_file(tmp_path, ['a'])
    out = tmp_path / 'out'
    proc = stashworks('run', 'cli_jobs:square', '--keys', _keys_file(tmp_path, ['4']), '--out', out, *FAST,
                      '--start-method', method)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert method in str(_status_file(out)['executor'])
    assert keys.exists()


def test_max_retries_0_records_a_dying_key_after_one_attempt(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['die'])
    out = tmp_path / 'out'
    proc = stashworks('run', 'cli_jobs:die_on_die', '--keys', keys, '--out', out, *FAST, '--max-retries', '0')
    assert proc.returncode == 1, proc.stderr
    record = json.loads(stashworks('failures', out, '--json').stdout)[0]
    assert (record['key'], record['error_type'], record['attempts']) == ('die', 'WorkerDied', 1)


def test_memory_limit_takes_a_size_and_refuses_nonsense(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['2'])
    good = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'a', *FAST, '--memory-limit', '4GB')
    assert good.returncode == 0, good.stderr
    bad = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'b', *FAST, '--memory-limit', 'lots')
    assert bad.returncode == 2
    assert '--memory-limit' in error_line(bad)


def test_demo_takes_the_batch_options_too(tmp_path: Path) -> None:
    proc = stashworks(
        'demo', '--out', tmp_path / 'demo', '--limit', '2', '--no-progress', '--serial', '--max-retries', '1',
        '--json',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)['computed'] == 2


# -- --workers -------------------------------------------------------------------


def test_workers_minus_1_means_every_cpu(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [str(i) for i in range(8)])
    out = tmp_path / 'out'
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', out, '-w', '-1', '--chunk-size', '1')
    assert proc.returncode == 0, proc.stderr
    assert _status_file(out)['workers'] == min(8, usable_cpus())


def test_workers_below_minus_the_cpus_is_refused_with_the_reason(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['1'])
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'out', '-w', '-100')
    assert proc.returncode == 2
    line = error_line(proc)
    assert '--workers -100' in line
    assert f'{usable_cpus()} usable CPU' in line
    assert not (tmp_path / 'out').exists()


def test_more_workers_than_cpus_is_warned_about_with_the_reason(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, ['1', '2', '3'])
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'out', '-w', '100', '--no-progress')
    assert proc.returncode == 0, proc.stderr
    assert f'workers=100 is more than the {usable_cpus()} usable CPU' in proc.stderr
    assert 'take turns' in proc.stderr


# -- global options, signals ------------------------------------------------------


def test_verbose_is_accepted_after_the_command(tmp_path: Path) -> None:
    proc = stashworks('status', tmp_path / 'nowhere', '--verbose')
    assert proc.returncode == 1
    assert 'no such directory' in proc.stderr
    assert 'unrecognized arguments' not in proc.stderr


def test_sigterm_exits_143_and_ctrl_c_130(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [f'k{i:02d}' for i in range(40)])
    for sig, expected in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        out = tmp_path / f'out{expected}'
        proc = start_stashworks('run', 'cli_jobs:slow', '--keys', keys, '--out', out, *FAST, CLI_JOBS_DELAY='0.2')
        try:
            _wait_for(lambda out=out: len(DirectoryStash(out)) >= 2, what='some items')  # type: ignore[misc]
            os.killpg(proc.pid, sig)
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == expected, stderr
        assert 'To resume' in stderr


# -- show --raw, failures, status ---------------------------------------------------


def _small_batch(tmp_path: Path) -> Path:
    out = tmp_path / 'out'
    keys = _keys_file(tmp_path, ['0', '1', '2', '3'])
    stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', out, *FAST)
    return out


def test_show_raw_refuses_to_write_pickle_bytes_to_a_terminal(tmp_path: Path) -> None:
    out = _small_batch(tmp_path)
    code, stdout, stderr = stashworks_tty('show', out, '0', '--raw', stdout_tty=True, stderr_tty=False)
    assert code == 1
    assert stdout.strip() == ''
    assert 'terminal' in stderr
    assert len(stderr.splitlines()) == 1


def test_failures_shows_every_good_record_when_one_is_malformed(tmp_path: Path) -> None:
    out = _small_batch(tmp_path)
    (out / '.stashworks' / 'failures' / '1.json').write_text('{not json', encoding='utf-8')
    proc = stashworks('failures', out)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ['3  ValueError: odd key 3']
    assert "'1'" in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_failures_footer_goes_to_stderr(tmp_path: Path) -> None:
    out = _small_batch(tmp_path)
    proc = stashworks('failures', out)
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 2
    assert '--retry-failures' in proc.stderr


def test_status_of_a_finished_batch_with_failures_says_so_not_a_percentage(tmp_path: Path) -> None:
    out = _small_batch(tmp_path)
    text = stashworks('status', out).stdout
    assert 'finished with 2 failures' in text
    assert '% done' not in text
    assert '1 workers' not in text


def test_status_of_a_young_batch_has_a_rate_and_an_eta(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    keys = _keys_file(tmp_path, [f'k{i:03d}' for i in range(200)])
    proc = start_stashworks('run', 'cli_jobs:slow', '--keys', keys, '--out', out, *FAST, CLI_JOBS_DELAY='0.05')
    try:
        status_file = out / '.stashworks' / 'status.json'
        # The first rewrite of the status file after some items (about a second in).
        _wait_for(lambda: status_file.exists() and json.loads(status_file.read_text(encoding='utf-8'))['done'] >= 2)
        report = json.loads(stashworks('status', out, '--json').stdout)
        text = stashworks('status', out).stdout
    finally:
        proc.kill()
        proc.communicate()
    assert report['state'] == 'running'
    assert report['rate'] > 0
    assert report['eta_seconds'] is not None and report['eta_seconds'] > 0
    assert 'eta:         ?' not in text
    assert 'rate:        0.0' not in text


def test_status_after_a_batch_stopped_by_an_error_does_not_advise_running_it_again(tmp_path: Path) -> None:
    out = _small_batch(tmp_path)
    status = _status_file(out)
    status.update(state='crashed', error='BatchError: the job cannot be sent to the workers')
    (out / '.stashworks' / 'status.json').write_text(json.dumps(status), encoding='utf-8')
    text = stashworks('status', out).stdout
    assert 'run it again to resume' not in text
    assert 'BatchError: the job cannot be sent to the workers' in text


def test_status_of_a_killed_batch_advises_running_it_again(tmp_path: Path) -> None:
    out = _small_batch(tmp_path)
    status = _status_file(out)
    status.update(state='running', pid=2**22 + 7, host=socket.gethostname())
    (out / '.stashworks' / 'status.json').write_text(json.dumps(status), encoding='utf-8')
    text = stashworks('status', out).stdout
    assert 'run it again to resume' in text


def test_status_watch_refreshes_until_the_batch_ends(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    keys = _keys_file(tmp_path, [f'k{i:02d}' for i in range(30)])
    proc = start_stashworks('run', 'cli_jobs:slow', '--keys', keys, '--out', out, *FAST, CLI_JOBS_DELAY='0.1')
    try:
        _wait_for(lambda: (out / '.stashworks' / 'status.json').exists(), what='a status file')
        watch = stashworks('status', out, '--watch', '--interval', '0.3', timeout=90)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.count('batch: running') >= 2
    states = [line for line in watch.stdout.splitlines() if line.startswith('batch: ')]
    assert states[-1].startswith('batch: finished'), watch.stdout


def test_run_without_a_terminal_writes_a_progress_line_every_interval(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, [f'k{i:02d}' for i in range(24)])
    proc = stashworks(
        'run', 'cli_jobs:slow', '--keys', keys, '--out', tmp_path / 'out', '-w', '2', '--progress-interval', '0.5',
        CLI_JOBS_DELAY='0.15',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith('stashworks: items ')]
    assert len(lines) >= 2, proc.stderr
    assert all('/24 (' in line for line in lines), lines
    assert proc.stdout.startswith('24 of 24 done')
