"""``stashworks keys/show/status --raw-names`` read a zensols folder as it is."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from cli_helpers import stashworks


@pytest.fixture
def zensols_folder(tmp_path: Path) -> Path:
    # Files as zensols' DirectoryStash writes them: the raw key in '{name}.dat'.
    folder = tmp_path / 'z'
    folder.mkdir()
    for key, value in {'my doc': 1, 'a:b': 2, 'über': 3, '.hidden': 4, 'plain': 5}.items():
        (folder / f'{key}.dat').write_bytes(pickle.dumps(value))
    return folder


def test_keys_with_raw_names_lists_every_zensols_key(zensols_folder: Path) -> None:
    done = stashworks('keys', zensols_folder, '--raw-names', '--json')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sorted(['my doc', 'a:b', 'über', '.hidden', 'plain'])


def test_keys_without_raw_names_warns_pointing_at_it(zensols_folder: Path) -> None:
    done = stashworks('keys', zensols_folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ['plain']
    assert 'raw_names' in done.stderr


def test_show_with_raw_names_reads_a_key_with_a_space(zensols_folder: Path) -> None:
    done = stashworks('show', zensols_folder, 'my doc', '--raw-names')
    assert done.returncode == 0, done.stderr
    assert '1' in done.stdout


def test_status_with_raw_names_counts_every_item(zensols_folder: Path) -> None:
    done = stashworks('status', zensols_folder, '--raw-names', '--json')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)['done'] == 5
