"""The ``stashworks`` command on an LMDB output folder, through the installed command."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('lmdb')

from cli_helpers import error_line, stashworks
from stashworks import LmdbStash

FAST = ('--workers', '2', '--no-progress')
pytestmark = pytest.mark.timeout(120)


def keys_file(tmp_path: Path, keys: list[str]) -> Path:
    path = tmp_path / 'keys.txt'
    path.write_text(''.join(f'{k}\n' for k in keys), encoding='utf-8')
    return path


@pytest.fixture
def lmdb_out(tmp_path: Path) -> Path:
    """An LMDB output folder: squares of 0..19, odd keys failed."""
    out = tmp_path / 'out'
    keys = keys_file(tmp_path, [str(i) for i in range(20)])
    proc = stashworks('run', 'cli_jobs:fail_on_odd', '--keys', keys, '--out', out, '--store', 'lmdb', *FAST)
    assert proc.returncode == 1, proc.stderr  # the odd keys failed
    return out


def test_run_with_store_lmdb_writes_an_lmdb_database(lmdb_out: Path) -> None:
    assert (lmdb_out / 'data.mdb').is_file()
    assert not list(lmdb_out.glob('*.dat'))
    with LmdbStash(lmdb_out) as stash:
        assert dict(stash) == {str(i): i for i in range(0, 20, 2)}


def test_failure_records_and_status_live_in_the_state_folder_as_for_a_directory(lmdb_out: Path) -> None:
    assert sorted(p.stem for p in (lmdb_out / '.stashworks' / 'failures').glob('*.json')) == sorted(
        str(i) for i in range(1, 20, 2)
    )
    assert (lmdb_out / '.stashworks' / 'status.json').is_file()


def test_status_finds_the_lmdb_store_without_a_flag(lmdb_out: Path) -> None:
    report = json.loads(stashworks('status', lmdb_out, '--json').stdout)
    assert (report['done'], report['failed'], report['state']) == (10, 10, 'finished')


def test_keys_lists_the_lmdb_items(lmdb_out: Path) -> None:
    assert json.loads(stashworks('keys', lmdb_out, '--json').stdout) == sorted(str(i) for i in range(0, 20, 2))
    assert json.loads(stashworks('keys', lmdb_out, '--failed', '--json').stdout) == sorted(
        str(i) for i in range(1, 20, 2)
    )


def test_show_reads_one_lmdb_item_and_its_raw_bytes(lmdb_out: Path) -> None:
    assert stashworks('show', lmdb_out, '6').stdout.strip() == '6'
    raw = subprocess.run(
        [*_command(), 'show', str(lmdb_out), '6', '--raw'], capture_output=True, check=True, timeout=60
    ).stdout
    assert pickle.loads(raw) == 6


def _command() -> list[str]:
    from cli_helpers import command

    return command()


def test_failures_lists_the_failed_keys(lmdb_out: Path) -> None:
    proc = stashworks('failures', lmdb_out, '--json')
    assert sorted(r['key'] for r in json.loads(proc.stdout)) == sorted(str(i) for i in range(1, 20, 2))


def test_rm_deletes_lmdb_items_and_the_next_run_computes_them_again(lmdb_out: Path, tmp_path: Path) -> None:
    assert stashworks('rm', lmdb_out, '4', '5').returncode == 0
    with LmdbStash(lmdb_out) as stash:
        assert ('4' in stash, len(stash)) == (False, 9)
    # No --store: the folder's own kind is used, and it stays LMDB.
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys_file(tmp_path, ['4']), '--out', lmdb_out, *FAST)
    assert proc.returncode == 0, proc.stderr
    with LmdbStash(lmdb_out) as stash:
        assert stash['4'] == 16
    assert not list(lmdb_out.glob('*.dat'))


def test_asking_for_lmdb_in_a_directory_output_is_one_clear_error(tmp_path: Path) -> None:
    keys = keys_file(tmp_path, ['2'])
    assert stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'out', *FAST).returncode == 0
    proc = stashworks('run', 'cli_jobs:square', '--keys', keys, '--out', tmp_path / 'out', '--store', 'lmdb', *FAST)
    assert proc.returncode != 0
    assert 'already holds a directory store' in error_line(proc)


def test_demo_with_store_lmdb(tmp_path: Path) -> None:
    out = tmp_path / 'demo'
    proc = stashworks('demo', '--out', out, '--limit', '30', '--store', 'lmdb', *FAST)
    assert proc.returncode == 0, proc.stderr
    assert (out / 'data.mdb').is_file()
    report = json.loads(stashworks('status', out, '--json').stdout)
    assert report['done'] + report['failed'] == 30
    assert report['done'] > 0


def test_without_lmdb_an_lmdb_output_is_one_clear_error(lmdb_out: Path, tmp_path: Path) -> None:
    # A sitecustomize that hides the lmdb package from the command.
    hide = tmp_path / 'hide'
    hide.mkdir()
    (hide / 'sitecustomize.py').write_text("import sys\nsys.modules['lmdb'] = None\n", encoding='utf-8')
    from cli_helpers import TESTS_DIR

    proc = stashworks('keys', lmdb_out, PYTHONPATH=f'{hide}:{TESTS_DIR}')
    assert proc.returncode != 0
    assert "pip install 'stashworks[lmdb]'" in error_line(proc)


def test_the_store_option_is_documented_in_help() -> None:
    proc = subprocess.run([sys.executable, '-m', 'stashworks', 'run', '--help'], capture_output=True, text=True)
    assert '--store {directory,lmdb}' in proc.stdout
