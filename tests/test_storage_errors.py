"""Storage gives one answer, and every error it raises is a StashError naming key, path and stash."""

from __future__ import annotations

import dbm
import errno
import os
import pickle
import shelve
from pathlib import Path
from typing import IO, Any

import pytest

from stashworks import (
    DirectoryStash,
    IncrementKeyDirectoryStash,
    ShelveStash,
    StashCorruptError,
    StashError,
    StashKeyError,
    StashReadError,
    StashWriteError,
)
from stashworks.directory import probe_case_insensitive

needs_permissions = pytest.mark.skipif(
    hasattr(os, 'geteuid') and os.geteuid() == 0, reason='root ignores permission bits'
)


def answers(stash: DirectoryStash, key: str) -> tuple[Any, ...]:
    try:
        loaded: Any = stash.load(key)
    except KeyError:
        loaded = 'missing'
    listed = key in list(stash.keys())
    return listed, len(stash), stash.exists(key), key in stash, loaded, stash.get(key, 'default')


# -- one answer: folders and dangling links named like items ------------------------


def test_a_folder_named_like_an_item_is_no_item_to_any_method(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('real', 1)
    (tmp_path / 's' / 'ghost.dat').mkdir()
    assert answers(stash, 'ghost') == (False, 1, False, False, 'missing', 'default')


def test_a_dangling_link_named_like_an_item_is_no_item_to_any_method(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('real', 1)
    os.symlink(tmp_path / 'nowhere', tmp_path / 's' / 'ghost.dat')
    assert answers(stash, 'ghost') == (False, 1, False, False, 'missing', 'default')


def test_a_link_to_an_item_file_is_an_item_to_every_method(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('real', 1)
    os.symlink(tmp_path / 's' / 'real.dat', tmp_path / 's' / 'alias.dat')
    assert answers(stash, 'alias') == (True, 2, True, True, 1, 1)


def test_a_folder_named_like_an_encoded_key_is_no_item(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('a b', 1)
    (tmp_path / 's' / 'c%20d.dat').mkdir()
    assert answers(stash, 'c d') == (False, 1, False, False, 'missing', 'default')


def test_deleting_or_clearing_leaves_a_folder_named_like_an_item_alone(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('real', 1)
    (tmp_path / 's' / 'ghost.dat').mkdir()
    stash.delete('ghost')
    stash.clear()
    assert (tmp_path / 's' / 'ghost.dat').is_dir() and len(stash) == 0


def test_writing_over_a_folder_named_like_an_item_is_a_write_error(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    (tmp_path / 's').mkdir()
    (tmp_path / 's' / 'ghost.dat').mkdir()
    with pytest.raises(StashWriteError, match='ghost'):
        stash.dump('ghost', 1)


# -- two IncrementKeyDirectoryStash objects on one folder ------------------------------


def test_two_increment_stashes_used_one_after_the_other_never_overwrite(tmp_path: Path) -> None:
    first = IncrementKeyDirectoryStash(tmp_path / 's')
    second = IncrementKeyDirectoryStash(tmp_path / 's')
    first.dump('a')
    second.dump('b')
    first.dump('c')
    second.dump('d')
    assert dict(IncrementKeyDirectoryStash(tmp_path / 's')) == {'1': 'a', '2': 'b', '3': 'c', '4': 'd'}


def test_increment_dump_never_replaces_a_file_that_appears_under_its_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stash = IncrementKeyDirectoryStash(tmp_path / 's')
    stash.dump('a')
    # Another process writes number 2 between the listing and the write.
    real = IncrementKeyDirectoryStash.get_last_key

    def racing(self: IncrementKeyDirectoryStash, inc: bool = False) -> str:
        answer = real(self, inc)
        IncrementKeyDirectoryStash(tmp_path / 's').dump('2', 'theirs')
        return answer

    monkeypatch.setattr(IncrementKeyDirectoryStash, 'get_last_key', racing)
    stash.dump('mine')
    monkeypatch.undo()
    assert dict(stash) == {'1': 'a', '2': 'theirs', '3': 'mine'}


# -- raw OS errors become stash errors -----------------------------------------------


def check_names(exc: BaseException, *parts: str) -> None:
    message = str(exc)
    for part in parts:
        assert part in message, (part, message)


def test_load_of_an_unreadable_item_is_a_read_error_naming_key_path_and_stash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('k', 1)
    real_open = open

    def denied(path: Any, *args: Any, **kwargs: Any) -> IO[Any]:
        if str(path).endswith('k.dat'):
            raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr('builtins.open', denied)
    with pytest.raises(StashReadError) as info:
        stash.load('k')
    assert isinstance(info.value, (StashError, OSError))
    check_names(info.value, "'k'", str(tmp_path / 's' / 'k.dat'), 'DirectoryStash', 'Permission denied')


def test_delete_that_the_folder_refuses_is_a_write_error_naming_key_path_and_stash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('k', 1)

    def denied(path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, 'Permission denied', str(path))

    monkeypatch.setattr(os, 'unlink', denied)
    with pytest.raises(StashWriteError) as info:
        stash.delete('k')
    check_names(info.value, "'k'", str(tmp_path / 's' / 'k.dat'), 'DirectoryStash')
    monkeypatch.undo()
    assert stash.load('k') == 1


@needs_permissions
def test_a_folder_that_cannot_be_listed_is_a_read_error_naming_it(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('k', 1)
    os.chmod(tmp_path / 's', 0)
    try:
        with pytest.raises(StashReadError, match=str(tmp_path / 's')):
            stash.keys()
    finally:
        os.chmod(tmp_path / 's', 0o755)


def test_a_path_that_is_a_file_is_a_read_error_on_listing(tmp_path: Path) -> None:
    (tmp_path / 'file').write_bytes(b'')
    stash = DirectoryStash(tmp_path / 'file')
    with pytest.raises(StashReadError, match='file'):
        stash.keys()
    with pytest.raises(StashReadError):
        len(stash)


def test_a_serializers_own_value_error_is_a_corrupt_error_naming_the_key(tmp_path: Path) -> None:
    class Picky:
        def dump(self, value: Any, fh: IO[bytes]) -> None:
            pickle.dump(value, fh)

        def load(self, fh: IO[bytes]) -> Any:
            raise ValueError('not my format')

    stash = DirectoryStash(tmp_path / 's', serializer=Picky())
    stash.dump('k', 1)
    with pytest.raises(StashCorruptError) as info:
        stash.load('k')
    check_names(info.value, "'k'", 'k.dat', 'not my format')


def test_a_shelf_file_that_is_no_database_is_a_corrupt_error_naming_the_path(tmp_path: Path) -> None:
    ShelveStash(tmp_path / 'db').dump('a', 1)
    real = ShelveStash(tmp_path / 'db').real_path
    for path in tmp_path.iterdir():
        path.write_bytes(b'garbage, not a database ' * 10)
    stash = ShelveStash(tmp_path / 'db', flag='r')
    with pytest.raises(StashError) as info:
        stash.load('a')
    assert not isinstance(info.value, KeyError) or isinstance(info.value, StashKeyError)
    check_names(info.value, str(tmp_path / 'db'))
    assert real.parent == tmp_path


def test_a_shelf_dbm_error_on_open_is_a_stash_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise dbm.error[0]('db type could not be determined')

    monkeypatch.setattr(shelve, 'open', broken)
    with pytest.raises(StashCorruptError) as info:
        ShelveStash(tmp_path / 'db').load('a')
    check_names(info.value, "'a'", str(tmp_path / 'db'), 'ShelveStash')


def test_a_shelf_os_error_while_writing_is_a_write_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stash = ShelveStash(tmp_path / 'db', auto_close=False)
    stash.dump('a', 1)
    shelf = stash.shelf

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(type(shelf), '__setitem__', full)
    with pytest.raises(StashWriteError) as info:
        stash.dump('b', 2)
    check_names(info.value, "'b'", str(tmp_path / 'db'), 'ShelveStash', 'No space left')


@needs_permissions
def test_a_shelf_that_cannot_be_opened_is_a_read_error(tmp_path: Path) -> None:
    ShelveStash(tmp_path / 'db').dump('a', 1)
    os.chmod(tmp_path, 0)
    try:
        with pytest.raises(StashReadError, match=str(tmp_path)):
            ShelveStash(tmp_path / 'db', flag='r').load('a')
    finally:
        os.chmod(tmp_path, 0o755)


# -- case-insensitive file systems --------------------------------------------------


def test_the_probe_on_this_file_system_answers_and_leaves_nothing(tmp_path: Path) -> None:
    assert probe_case_insensitive(tmp_path) in (True, False)
    assert probe_case_insensitive(tmp_path / 'missing') is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('forced', ['argument', 'probe'])
def test_keys_differing_only_in_case_stay_two_items_when_the_folder_folds_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forced: str
) -> None:
    if forced == 'probe':
        monkeypatch.setattr('stashworks.directory.probe_case_insensitive', lambda folder: True)
        stash = DirectoryStash(tmp_path / 's')
    else:
        stash = DirectoryStash(tmp_path / 's', case_insensitive=True)
    keys = ['a', 'A', 'Key', 'KEY', 'key', 'É', 'é', 'x' * 300, 'X' * 300]
    for i, key in enumerate(keys):
        stash.dump(key, i)
    names = [p.name for p in (tmp_path / 's').iterdir()]
    # What a case-insensitive file system would see: still one file per key.
    assert len({name.casefold() for name in names}) == len(names)
    again = DirectoryStash(tmp_path / 's', case_insensitive=True)
    assert sorted(again.keys()) == sorted(keys)
    assert {key: again.load(key) for key in keys} == {key: i for i, key in enumerate(keys)}
    assert len(again) == len(keys) and all(again.exists(k) for k in keys)


def test_a_case_folding_stash_reads_its_plain_lower_case_keys_on_the_fast_path(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 's', case_insensitive=True)
    stash.dump('abc', 1)
    assert (tmp_path / 's' / 'abc.dat').exists()
    stash.dump('Abc', 2)
    assert (tmp_path / 's' / '%41bc.dat').exists()
    assert sorted(stash.keys()) == ['Abc', 'abc']


def test_the_case_mode_is_found_once_and_travels_with_the_stash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def probe(folder: Any) -> bool:
        calls.append(str(folder))
        return True

    monkeypatch.setattr('stashworks.directory.probe_case_insensitive', probe)
    stash = DirectoryStash(tmp_path / 's')
    stash.dump('A', 1)
    stash.dump('B', 2)
    stash.keys()
    copy = pickle.loads(pickle.dumps(stash))
    assert (copy.load('A'), len(calls)) == (1, 1)


def test_a_persisted_file_that_cannot_be_opened_is_a_read_error_naming_it(tmp_path: Path) -> None:
    from stashworks import persisted

    (tmp_path / 'value.dat').mkdir()  # a folder where the file should be

    class Owner:
        @persisted('_v', tmp_path / 'value.dat')
        def v(self) -> int:
            return 1

    with pytest.raises(StashReadError, match=r'value\.dat'):
        Owner().v()


# -- real mounts (root only; skipped with the reason elsewhere) -----------------------


def test_on_a_read_only_mount_reads_work_and_writes_are_write_errors(tmp_path: Path) -> None:
    from mounts import _mount, tmpfs

    with tmpfs(tmp_path / 'm') as folder:
        DirectoryStash(folder).dump('k', 1)
        IncrementKeyDirectoryStash(folder).dump('first')
        _mount('-o', 'remount,ro', str(folder))
        stash = DirectoryStash(folder)  # its case probe cannot write here
        assert (sorted(stash.keys()), stash.load('k')) == (['data-1', 'k'], 1)
        with pytest.raises(StashWriteError) as info:
            stash.delete('k')
        check_names(info.value, "'k'", str(folder / 'k.dat'), 'DirectoryStash')
        with pytest.raises(StashWriteError, match="'j'"):
            stash.dump('j', 2)
        with pytest.raises(StashWriteError, match="'2'"):
            IncrementKeyDirectoryStash(folder).dump('second')
        assert stash.load('k') == 1


def test_on_a_full_disk_an_increment_dump_is_a_write_error_and_leaves_no_item(tmp_path: Path) -> None:
    from mounts import fill_disk, tmpfs

    with tmpfs(tmp_path / 'm', '256k') as folder:
        stash = IncrementKeyDirectoryStash(folder)
        stash.dump('first')
        filler = fill_disk(folder)
        with pytest.raises(StashWriteError, match="'2'"):
            stash.dump(b'x' * 100_000)
        filler.unlink()
        assert (stash.keys(), [p.name for p in folder.iterdir()]) == (['1'], ['data-1.dat'])
