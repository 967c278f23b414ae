"""stores: the kind of an output folder, found from what is on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stashworks import BatchError, DirectoryStash, LmdbStash
from stashworks.stores import open_output, store_kind


def test_an_empty_or_missing_folder_is_no_kind_yet(tmp_path: Path) -> None:
    assert (store_kind(tmp_path), store_kind(tmp_path / 'missing')) == (None, None)


def test_an_lmdb_output_is_found_and_opened_as_one(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'out') as stash:
        stash['k'] = 1
    (tmp_path / 'out' / '.stashworks').mkdir()
    assert store_kind(tmp_path / 'out') == 'lmdb'
    found = open_output(tmp_path / 'out')
    assert isinstance(found, LmdbStash)
    assert found['k'] == 1
    found.close()


def test_a_directory_output_is_found_and_opened_as_one(tmp_path: Path) -> None:
    DirectoryStash(tmp_path / 'out').dump('k', 1)
    assert store_kind(tmp_path / 'out') == 'directory'
    found = open_output(tmp_path / 'out')
    assert isinstance(found, DirectoryStash) and found['k'] == 1


def test_a_new_folder_is_a_directory_unless_asked_for_lmdb(tmp_path: Path) -> None:
    assert isinstance(open_output(tmp_path / 'a'), DirectoryStash)
    stash = open_output(tmp_path / 'b', kind='lmdb')
    assert isinstance(stash, LmdbStash)
    stash.close()


def test_asking_for_the_other_kind_than_the_folder_holds_is_refused(tmp_path: Path) -> None:
    DirectoryStash(tmp_path / 'out').dump('k', 1)
    with pytest.raises(BatchError, match=r'already holds a directory store.*--store directory'):
        open_output(tmp_path / 'out', kind='lmdb')


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="unknown kind of store 'sqlite'"):
        open_output(tmp_path, kind='sqlite')


def test_finding_the_kind_needs_no_lmdb(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'out') as stash:
        stash['k'] = 1
    code = (
        "import sys; sys.modules['lmdb'] = None\n"
        'from stashworks.stores import store_kind, open_output\n'
        f'print(store_kind({str(tmp_path / "out")!r}))\n'
        f'open_output({str(tmp_path / "out")!r})\n'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == 'lmdb'
    assert "pip install 'stashworks[lmdb]'" in out.stderr


def test_an_lmdb_stash_is_found_as_local_only_through_wrappers(tmp_path: Path) -> None:
    from stashworks import CacheStash
    from stashworks.stores import local_only_store

    lmdb_stash = LmdbStash(tmp_path / 'db')
    assert local_only_store(CacheStash(delegate=lmdb_stash)) is lmdb_stash
    assert local_only_store(DirectoryStash(tmp_path / 'dir')) is None
    assert local_only_store(None) is None


def test_the_machine_id_is_the_same_in_a_child_process() -> None:
    from stashworks.stores import machine_id

    code = 'from stashworks.stores import machine_id; print(machine_id())'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == machine_id() != ''
