"""DirectoryStash: safe names for any key, atomic writes, clear errors."""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import threading
import time
import unicodedata
from pathlib import Path
from typing import IO, Any

import pytest

from stashworks import (
    DillSerializer,
    DirectoryStash,
    SerializationError,
    StashCorruptError,
    StashError,
    StashWarning,
    StashWriteError,
)
from stashworks._atomic import TEMP_PREFIX, TEMP_SUFFIX

NFC_E = unicodedata.normalize('NFC', 'é')
NFD_E = unicodedata.normalize('NFD', 'é')

HOSTILE_KEYS = [
    '../x',
    '../../../../tmp/escaped',
    '/etc/passwd',
    'a/b',
    'a/../b',
    '',
    '.',
    '..',
    '...',
    '.hidden',
    NFC_E,
    NFD_E,
    'line\nbreak',
    '\r\n',
    'x' * 1000,
    'é' * 500,
    '~',
    '~key',
    '%',
    '%2F',
    '%%',
    'a.dat',
    'CON',
    ' ',
    '\x00',
    '\\',
    '*?<>|"',
    TEMP_PREFIX + 'abc' + TEMP_SUFFIX,
    '\U0001f600',
]


def all_paths(root: Path) -> set[Path]:
    return {Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.fixture
def stash(tmp_path: Path) -> DirectoryStash:
    return DirectoryStash(tmp_path / 'stash')


@pytest.mark.parametrize('key', HOSTILE_KEYS, ids=lambda k: repr(k)[:40])
def test_hostile_key_round_trips_exactly(stash: DirectoryStash, key: str) -> None:
    stash.dump(key, ('value', key))
    assert stash.keys() == [key]
    assert stash.load(key) == ('value', key)
    assert key in stash


@pytest.mark.parametrize('key', HOSTILE_KEYS, ids=lambda k: repr(k)[:40])
def test_hostile_key_creates_no_file_outside_the_directory(tmp_path: Path, stash: DirectoryStash, key: str) -> None:
    stash.dump(key, 1)
    outside = all_paths(tmp_path) - all_paths(stash.path) - {stash.path}
    assert outside == set()
    # Every file is directly in the directory: no key makes a subdirectory.
    assert all(p.parent == stash.path and p.is_file() for p in all_paths(stash.path))


def test_all_hostile_keys_coexist_as_distinct_items(stash: DirectoryStash) -> None:
    for i, key in enumerate(HOSTILE_KEYS):
        stash.dump(key, i)
    assert sorted(stash.keys()) == sorted(HOSTILE_KEYS)
    assert {key: stash.load(key) for key in HOSTILE_KEYS} == {key: i for i, key in enumerate(HOSTILE_KEYS)}


def test_nfc_and_nfd_spellings_are_different_keys(stash: DirectoryStash) -> None:
    stash.dump(NFC_E, 'nfc')
    stash.dump(NFD_E, 'nfd')
    assert (stash.load(NFC_E), stash.load(NFD_E), len(stash)) == ('nfc', 'nfd', 2)


def test_long_keys_with_a_common_prefix_stay_distinct(stash: DirectoryStash) -> None:
    a, b = 'k' * 999 + 'a', 'k' * 999 + 'b'
    stash.dump(a, 'a')
    stash.dump(b, 'b')
    assert (sorted(stash.keys()), stash.load(a), stash.load(b)) == (sorted([a, b]), 'a', 'b')


def test_deleting_a_long_key_leaves_no_file(stash: DirectoryStash) -> None:
    key = 'k' * 1000
    stash.dump(key, 1)
    stash.delete(key)
    assert (os.listdir(stash.path), stash.keys()) == ([], [])


def test_file_names_fit_common_file_system_limits(stash: DirectoryStash) -> None:
    for key in HOSTILE_KEYS:
        stash.dump(key, 1)
    assert max(len(name.encode()) for name in os.listdir(stash.path)) <= 255


def test_foreign_files_in_the_directory_are_not_keys(stash: DirectoryStash) -> None:
    stash.dump('k', 1)
    for name in ['notes.txt', 'my file.dat', '.hidden.dat', 'a%2fb.dat', 'x.dat~key']:
        (stash.path / name).write_bytes(b'junk')
    # Not keys, and not silently skipped: they may be a zensols folder's items.
    with pytest.warns(StashWarning, match='3 file'):
        assert stash.keys() == ['k']


def test_a_leftover_temp_file_is_not_a_key(stash: DirectoryStash) -> None:
    stash.dump('k', 1)
    (stash.path / f'{TEMP_PREFIX}dead-1-2{TEMP_SUFFIX}').write_bytes(b'half an item')
    assert (stash.keys(), len(stash)) == (['k'], 1)


def test_an_item_being_written_is_invisible_until_complete(stash: DirectoryStash, temp_files) -> None:
    seen: dict[str, Any] = {}

    class Spy:
        """Looks at the stash while the value is half written."""

        def dump(self, value: Any, fh: IO[bytes]) -> None:
            fh.write(b'partial')
            fh.flush()
            seen.update(temps=temp_files(stash.path), keys=stash.keys(), exists=stash.exists('new'))
            pickle.dump(value, fh)

        def load(self, fh: IO[bytes]) -> Any:
            return pickle.load(fh)

    stash.dump('old', 1)
    stash.serializer = Spy()
    stash.dump('new', 2)
    assert len(seen['temps']) == 1
    assert (seen['keys'], seen['exists']) == (['old'], False)
    assert temp_files(stash.path) == []


# -- corrupt data ---------------------------------------------------------


def corrupt_truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_empty(path: Path) -> None:
    path.write_bytes(b'')


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b'\x00this is not a pickle\xff' * 3)


@pytest.mark.parametrize('corrupt', [corrupt_truncated, corrupt_empty, corrupt_garbage])
@pytest.mark.parametrize('serializer', [None, DillSerializer()], ids=['pickle', 'dill'])
def test_corrupt_file_raises_stash_corrupt_error_naming_key_and_path(
    tmp_path: Path, corrupt: Any, serializer: Any
) -> None:
    stash = DirectoryStash(tmp_path / 'stash', serializer=serializer)
    stash.dump('the/key', list(range(10_000)))
    path = stash.key_to_path('the/key')
    corrupt(path)
    with pytest.raises(StashCorruptError) as info:
        stash.load('the/key')
    message = str(info.value)
    assert "'the/key'" in message and str(path) in message
    assert info.value.__cause__ is not None
    assert isinstance(info.value, StashError) and isinstance(info.value, ValueError)
    assert not isinstance(info.value, KeyError)


def test_a_corrupt_item_still_counts_as_existing(stash: DirectoryStash) -> None:
    stash.dump('k', 1)
    corrupt_empty(stash.key_to_path('k'))
    assert ('k' in stash, stash.keys(), len(stash)) == (True, ['k'], 1)


def test_get_does_not_hide_a_corrupt_item(stash: DirectoryStash) -> None:
    stash.dump('k', 1)
    corrupt_garbage(stash.key_to_path('k'))
    with pytest.raises(StashCorruptError):
        stash.get('k', 'default')


# -- failed writes --------------------------------------------------------


def test_unpicklable_value_raises_naming_key_and_path_and_keeps_old_value(stash: DirectoryStash, temp_files) -> None:
    stash.dump('k', 'old')
    with pytest.raises(SerializationError) as info:
        stash.dump('k', threading.Lock())
    assert "'k'" in str(info.value) and str(stash.key_to_path('k')) in str(info.value)
    assert info.value.__cause__ is not None
    assert stash.load('k') == 'old'
    assert temp_files(stash.path) == []


def test_unpicklable_value_for_a_new_key_leaves_no_item(stash: DirectoryStash, temp_files) -> None:
    stash.dump('other', 1)
    with pytest.raises(SerializationError):
        stash.dump('k', lambda: None)
    assert (stash.keys(), temp_files(stash.path)) == (['other'], [])


def test_full_disk_on_replace_raises_naming_key_and_path_and_keeps_old_value(
    stash: DirectoryStash, temp_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    stash.dump('k', 'old')

    def no_space(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'replace', no_space)
    with pytest.raises(StashWriteError) as info:
        stash.dump('k', 'new')
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)
    assert "'k'" in str(info.value) and str(stash.key_to_path('k')) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert stash.load('k') == 'old'
    assert temp_files(stash.path) == []


def _write_in_read_only_directory(stash: DirectoryStash) -> tuple[str, str, int]:
    try:
        stash.dump('k', 'new')
    except StashWriteError as exc:
        return 'StashWriteError', str(exc), exc.errno or 0
    except Exception as exc:
        return type(exc).__name__, str(exc), 0
    return 'no error', '', 0


def test_read_only_directory_raises_naming_key_and_path_and_keeps_old_value(temp_files) -> None:
    # root writes anywhere, so as root the write runs in a child that has
    # dropped to an unprivileged user; the directory is under a fresh
    # world-traversable temp dir so that user can reach it.
    base = Path(tempfile.mkdtemp(prefix='sw-ro-'))
    try:
        base.chmod(0o755)
        stash = DirectoryStash(base / 'stash')
        stash.dump('k', 'old')
        if os.geteuid() == 0:
            outcome = _run_as_nobody(lambda: _write_in_read_only_directory(stash))
        else:
            stash.path.chmod(0o555)
            try:
                outcome = _write_in_read_only_directory(stash)
            finally:
                stash.path.chmod(0o755)
        kind, message, code = outcome
        assert kind == 'StashWriteError'
        assert code == errno.EACCES
        assert "'k'" in message and str(stash.key_to_path('k')) in message
        assert stash.load('k') == 'old'
        assert temp_files(stash.path) == []
    finally:
        for p in sorted(all_paths(base), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        base.rmdir()


def _run_as_nobody(work: Any) -> Any:
    """Run ``work()`` in a forked child as user/group 65534; return its result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            data = pickle.dumps(work())
        except BaseException as exc:
            data = pickle.dumps(('child failed', repr(exc), 0))
        with os.fdopen(write_fd, 'wb') as fh:
            fh.write(data)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, 'rb') as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


# -- what never deserializes ---------------------------------------------


def test_keys_len_exists_and_in_never_deserialize(tmp_path: Path, counting_serializer) -> None:
    stash = DirectoryStash(tmp_path / 'stash', serializer=counting_serializer)
    for key in ['a', 'b/c', 'x' * 1000, '']:
        stash.dump(key, key)
    stash.keys()
    len(stash)
    stash.exists('a')
    stash.exists('missing')
    _ = 'x' * 1000 in stash
    del stash['a']
    stash.delete('b/c')
    stash.clear()
    assert counting_serializer.loads == 0


def test_load_deserializes_exactly_once(tmp_path: Path, counting_serializer) -> None:
    stash = DirectoryStash(tmp_path / 'stash', serializer=counting_serializer)
    stash.dump('a', 1)
    stash.load('a')
    assert counting_serializer.loads == 1


# -- serializers ---------------------------------------------------------


def test_dill_serializer_stores_a_lambda(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 'stash', serializer=DillSerializer())
    stash.dump('f', lambda x: x + 1)
    assert DirectoryStash(tmp_path / 'stash', serializer=DillSerializer()).load('f')(1) == 2


def test_dill_serializer_stores_a_closure(tmp_path: Path) -> None:
    offset = 10

    def add(x: int) -> int:
        return x + offset

    stash = DirectoryStash(tmp_path / 'stash', serializer=DillSerializer())
    stash.dump('f', add)
    assert stash.load('f')(1) == 11


def test_the_directory_is_created_on_first_write(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 'a' / 'b')
    assert (stash.keys(), len(stash), 'k' in stash, tmp_path.joinpath('a').exists()) == ([], 0, False, False)
    stash.dump('k', 1)
    assert stash.load('k') == 1


def test_a_pattern_without_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='name'):
        DirectoryStash(tmp_path, pattern='item.dat')


def test_a_pattern_with_a_slash_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DirectoryStash(tmp_path, pattern='sub/{name}.dat')


def test_a_custom_pattern_names_the_files(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path, pattern='item-{name}.pkl')
    stash.dump('k', 1)
    assert os.listdir(tmp_path) == ['item-k.pkl']


def test_a_hidden_folder_and_temp_files_among_the_items_are_neither_keys_nor_counted(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path)
    for key in ('a', 'b.c', 'é'):
        stash[key] = 1
    (tmp_path / '.stashworks').mkdir()
    (tmp_path / '.~sw-0123456789ab-1-0.tmp').write_bytes(b'half')

    assert sorted(stash.keys()) == ['a', 'b.c', 'é']
    assert len(stash) == 3
    del stash['é']
    assert sorted(stash.keys()) == ['a', 'b.c']
    assert len(stash) == 2


def test_remove_stale_temp_files_removes_only_old_temp_files(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path)
    stash['keep'] = 1
    old = tmp_path / '.~sw-0123456789ab-1-0.tmp'
    fresh = tmp_path / '.~sw-0123456789ab-1-1.tmp'
    old.write_bytes(b'abandoned')
    fresh.write_bytes(b'being written')
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))

    assert stash.remove_stale_temp_files(min_age=3600) == 1

    assert not old.exists()
    assert fresh.exists()
    assert stash['keep'] == 1


def test_a_listing_with_no_hidden_file_spares_the_sweep_a_second_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch lists its folder to plan, then sweeps temp files: a listing
    # moments ago with no hidden name in it shows there is nothing to sweep.
    stash = DirectoryStash(tmp_path)
    stash['a'] = 1
    assert stash.keys() == ['a']
    listed: list[object] = []
    real_scandir = os.scandir

    def counting_scandir(path: Any) -> Any:
        listed.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, 'scandir', counting_scandir)
    assert stash.remove_stale_temp_files() == 0
    assert listed == []


def test_a_listing_that_saw_a_temp_file_still_sweeps_it(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path)
    stash['keep'] = 1
    old = tmp_path / '.~sw-0123456789ab-1-0.tmp'
    old.write_bytes(b'abandoned')
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert stash.keys() == ['keep'] and len(stash) == 1
    assert stash.remove_stale_temp_files(min_age=3600) == 1
    assert not old.exists()
