"""LmdbStash: the stash contract, a dict model, keys of any length, groups, growth, errors."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

pytest.importorskip('lmdb')

from contract import PersistentStashContract, close
from stashworks import (
    DillSerializer,
    JsonSerializer,
    LmdbStash,
    SerializationError,
    Stash,
    StashClosedError,
    StashCorruptError,
    StashError,
    StashWriteError,
)
from stashworks.lmdbstash import DATA_FILE, LOCK_FILE
from test_properties import STATEFUL, StashAgainstDict, keys, values


class TestLmdbStash(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return LmdbStash(tmp_path / 'db')

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        close(stash)
        return LmdbStash(tmp_path / 'db')


class TestLmdbStashOpenTwice(PersistentStashContract):
    # A second stash on the same folder in one process, the first still open.
    def make_stash(self, tmp_path: Path) -> Stash:
        return LmdbStash(tmp_path / 'db')

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        return LmdbStash(tmp_path / 'db')


class TestLmdbStashInAGroup(PersistentStashContract):
    # Every contract test again, with the writes buffered in a group.
    def make_stash(self, tmp_path: Path) -> Stash:
        stash = LmdbStash(tmp_path / 'db', group_items=3)
        stash.begin_group()
        return stash

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        stash.flush()
        return LmdbStash(tmp_path / 'db')


class TestLmdbStashWithDill(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return LmdbStash(tmp_path / 'db', serializer=DillSerializer(), map_size=1 << 16)

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        close(stash)
        return LmdbStash(tmp_path / 'db', serializer=DillSerializer())


# -- a dict model ------------------------------------------------------------------------------------


class LmdbAgainstDict(StashAgainstDict):
    def make_stash(self, path: Path) -> Stash:
        # A tiny map, so that growing it is part of the run.
        return LmdbStash(path, map_size=1 << 15)


class LmdbGroupsAgainstDict(StashAgainstDict):
    """Groups open and close at random; after a flush a second stash on the folder sees it all."""

    def make_stash(self, path: Path) -> Stash:
        self.other = LmdbStash(path)
        return LmdbStash(path, map_size=1 << 15, group_items=4)

    def teardown(self) -> None:
        self.other.close()
        super().teardown()

    @rule()
    def begin_group(self) -> None:
        self.stash.begin_group()

    @rule()
    def flush(self) -> None:
        self.stash.flush()
        assert dict(self.other.items()) == self.model


TestLmdbAgainstDict = LmdbAgainstDict.TestCase
TestLmdbAgainstDict.settings = STATEFUL
TestLmdbGroupsAgainstDict = LmdbGroupsAgainstDict.TestCase
TestLmdbGroupsAgainstDict.settings = STATEFUL


class LmdbPicklingAgainstDict(RuleBasedStateMachine):
    """A pickled copy reads what the original wrote, and the other way round."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix='sw-lmdb-'))
        self.a = LmdbStash(self.dir / 'db')
        self.b: LmdbStash = pickle.loads(pickle.dumps(self.a))
        self.model: dict[str, Any] = {}

    def teardown(self) -> None:
        self.a.close()
        self.b.close()
        shutil.rmtree(self.dir)

    @rule(key=keys, value=values, first=st.booleans())
    def dump(self, key: str, value: Any, first: bool) -> None:
        (self.a if first else self.b).dump(key, value)
        self.model[key] = value

    @invariant()
    def both_see_everything(self) -> None:
        assert dict(self.a.items()) == self.model == dict(self.b.items())


TestLmdbPicklingAgainstDict = LmdbPicklingAgainstDict.TestCase
TestLmdbPicklingAgainstDict.settings = settings(max_examples=20, stateful_step_count=20, deadline=None)


# -- keys -------------------------------------------------------------------------------------------------

any_key = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=700)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=any_key, value=values)
def test_any_key_round_trips(tmp_path: Path, key: str, value: Any) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        stash.clear()
        stash.dump(key, value)
        assert (stash.keys(), stash.load(key), len(stash), key in stash) == ([key], value, 1, True)


@pytest.mark.parametrize('size', [510, 511, 512, 1000, 100_000])
def test_keys_at_and_past_lmdbs_key_limit_round_trip(tmp_path: Path, size: int) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        long = 'é' * (size // 2) + 'x' * (size % 2)  # size UTF-8 bytes
        other = long[:-1] + 'y'
        stash[long] = 1
        stash[other] = 2
        assert sorted(stash.keys()) == sorted([long, other])
        assert (stash[long], stash[other], len(stash)) == (1, 2, 2)
        del stash[long]
        assert (long in stash, stash.keys(), dict(stash)) == (False, [other], {other: 2})


def test_keys_are_listed_in_sorted_order(tmp_path: Path) -> None:
    wanted = ['b', 'a', 'é', '\x00', 'ab', 'A', '日本', 'z' * 600, '']
    with LmdbStash(tmp_path / 'db') as stash:
        for key in wanted:
            stash[key] = key
        short = [k for k in list(stash.keys()) if 0 < len(k.encode()) <= 511]
        assert short == sorted(k for k in wanted if 0 < len(k.encode()) <= 511)
        assert sorted(stash.keys()) == sorted(wanted)


def test_lone_surrogates_round_trip(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        stash['\ud800x'] = 1
        assert (stash.keys(), stash['\ud800x']) == (['\ud800x'], 1)


@pytest.mark.parametrize('grouped', [True, False], ids=['group', 'no-group'])
def test_dump_many_takes_any_key_as_dump_does(tmp_path: Path, grouped: bool) -> None:
    items = [('plain', 1), ('x' * 1000, 2), ('\ud800x', 3), ('', 4), ('é', None), ('plain', 5)]
    with LmdbStash(tmp_path / 'db') as writer, LmdbStash(tmp_path / 'db') as reader:
        if grouped:
            writer.begin_group()
        writer.dump_many(items)
        writer.flush()
        assert dict(reader.items()) == {'plain': 5, 'x' * 1000: 2, '\ud800x': 3, '': 4, 'é': None}


def test_dump_many_names_the_key_whose_value_cannot_be_pickled(tmp_path: Path) -> None:
    import threading

    with LmdbStash(tmp_path / 'db') as stash:
        stash.begin_group()
        with pytest.raises(SerializationError, match="'bad'"):
            stash.dump_many([('good', 1), ('bad', threading.Lock()), ('after', 2)])
        with pytest.raises(TypeError):
            stash.dump_many([('good', 1), (7, 2)])  # type: ignore[list-item]
        stash.flush()
        assert 'bad' not in stash and 7 not in stash


# -- groups -----------------------------------------------------------------------------------------------


def test_a_group_is_invisible_to_another_stash_until_flush(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as writer, LmdbStash(tmp_path / 'db') as reader:
        writer.begin_group()
        for i in range(100):
            writer.dump(f'k{i}', i)
        writer.delete('k0')
        assert (len(reader), reader.get('k5'), writer['k5'], 'k0' in writer) == (0, None, 5, False)
        writer.flush()
        assert (len(reader), reader['k5'], 'k0' in reader) == (99, 5, False)


def test_a_group_commits_every_group_items(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', group_items=10) as writer, LmdbStash(tmp_path / 'db') as reader:
        writer.begin_group()
        for i in range(25):
            writer.dump(f'k{i:02d}', i)
        assert len(reader) == 20
        writer.flush()
        assert len(reader) == 25


def test_a_group_commits_when_its_buffer_holds_group_bytes(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', group_bytes=10_000) as writer, LmdbStash(tmp_path / 'db') as reader:
        writer.begin_group()
        for i in range(5):
            writer.dump(f'k{i}', b'x' * 4000)
        assert len(reader) in (3, 4)


def test_flush_ends_the_group(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as writer, LmdbStash(tmp_path / 'db') as reader:
        writer.begin_group()
        writer.flush()
        writer.dump('k', 1)
        assert reader['k'] == 1


def test_close_commits_a_group(tmp_path: Path) -> None:
    stash = LmdbStash(tmp_path / 'db')
    stash.begin_group()
    stash.dump('k', 1)
    stash.close()
    with LmdbStash(tmp_path / 'db') as again:
        assert again['k'] == 1


def test_keys_and_len_include_buffered_writes(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        stash.dump('old', 0)
        stash.begin_group()
        stash.dump('new', 1)
        stash.delete('old')
        assert (stash.keys(), len(stash), dict(stash)) == (['new'], 1, {'new': 1})


# -- growth ------------------------------------------------------------------------------------------------


def test_the_map_grows_from_a_tiny_size_one_transaction_per_item(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', map_size=1 << 14) as stash:
        for i in range(300):
            stash.dump(f'k{i}', os.urandom(1000))
        assert len(stash) == 300


def test_the_map_grows_for_one_big_group(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', map_size=1 << 14, group_items=100_000) as stash:
        stash.begin_group()
        expected = {f'k{i}': i.to_bytes(4, 'big') * 100 for i in range(5000)}
        for key, value in expected.items():
            stash.dump(key, value)
        stash.flush()
        assert dict(stash) == expected


def test_the_map_grows_for_one_value_larger_than_it(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', map_size=1 << 14) as stash:
        stash['big'] = b'x' * (8 << 20)
        assert len(stash['big']) == 8 << 20


def test_a_stash_opened_with_a_smaller_map_reads_a_grown_database(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', map_size=1 << 30) as stash:
        stash['big'] = b'x' * (20 << 20)
    with LmdbStash(tmp_path / 'db', map_size=1 << 14) as again:
        assert len(again['big']) == 20 << 20


# -- missing keys ------------------------------------------------------------------------------------------


def test_missing_keys_are_those_without_an_item_in_order(tmp_path: Path) -> None:
    wanted = [f'k{i}' for i in range(25_000)] + ['', 'x' * 600, '\ud800']
    with LmdbStash(tmp_path / 'db') as stash:
        for key in wanted[::3]:
            stash.dump(key, None)
        assert list(stash.missing_keys(iter(wanted))) == [k for i, k in enumerate(wanted) if i % 3]


def test_missing_keys_streams_its_input(tmp_path: Path) -> None:
    taken = []

    def source() -> Iterator[str]:
        for i in range(1_000_000):
            taken.append(i)
            yield f'k{i}'

    with LmdbStash(tmp_path / 'db') as stash:
        first = next(iter(stash.missing_keys(source())))
        assert first == 'k0'
        assert len(taken) <= 20_000


# -- errors and life cycle -------------------------------------------------------------------------------


def test_an_unpicklable_value_names_key_path_and_stash_and_keeps_the_old_value(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        stash['k'] = 1
        with pytest.raises(SerializationError, match=r"'k'.*db.*LmdbStash"):
            stash['k'] = lambda: 0
        assert stash['k'] == 1


def test_a_value_json_cannot_hold_is_a_serialization_error(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db', serializer=JsonSerializer()) as stash:
        with pytest.raises(SerializationError, match="'k'"):
            stash['k'] = {1, 2}
        stash['j'] = {'a': [1]}
        assert stash['j'] == {'a': [1]}


def test_garbage_under_a_key_is_a_corrupt_error_naming_it(tmp_path: Path) -> None:
    import lmdb

    with LmdbStash(tmp_path / 'db') as stash:
        stash['k'] = 1
    env = lmdb.open(str(tmp_path / 'db'))
    with env.begin(write=True) as txn:
        txn.put(b'k', b'not a pickle')
    env.close()
    with LmdbStash(tmp_path / 'db') as stash:
        with pytest.raises(StashCorruptError, match=r"'k'.*db"):
            stash.load('k')
        assert stash.keys() == ['k']


def test_a_file_that_is_no_database_is_a_corrupt_error(tmp_path: Path) -> None:
    (tmp_path / 'db').mkdir()
    (tmp_path / 'db' / DATA_FILE).write_bytes(b'garbage' * 2000)
    stash = LmdbStash(tmp_path / 'db')
    with pytest.raises(StashCorruptError, match='not an LMDB database'):
        stash.load('k')


def test_a_path_that_is_a_file_is_a_write_error(tmp_path: Path) -> None:
    (tmp_path / 'db').write_text('x')
    with pytest.raises(StashWriteError, match='not a folder'):
        LmdbStash(tmp_path / 'db').dump('k', 1)


def test_errors_belong_to_the_stash_error_tree() -> None:
    assert issubclass(StashWriteError, StashError) and issubclass(StashCorruptError, StashError)


@pytest.mark.parametrize(
    'use',
    [
        lambda s: s.load('k'),
        lambda s: s.dump('k', 1),
        lambda s: s.delete('k'),
        lambda s: s.keys(),
        lambda s: len(s),
        lambda s: s.exists('k'),
        lambda s: list(s.items()),
        lambda s: s.clear(),
        lambda s: s.begin_group(),
        lambda s: s.flush(),
        lambda s: list(s.missing_keys(['k'])),
        lambda s: s.__enter__(),
    ],
)
def test_every_use_after_close_is_refused(tmp_path: Path, use: Any) -> None:
    stash = LmdbStash(tmp_path / 'db')
    stash['k'] = 1
    stash.close()
    stash.close()  # a second close does nothing
    with pytest.raises(StashClosedError, match='closed'):
        use(stash)


def test_a_stash_never_opened_closes(tmp_path: Path) -> None:
    stash = LmdbStash(tmp_path / 'db')
    stash.close()
    assert not (tmp_path / 'db').exists()
    with pytest.raises(StashClosedError):
        stash.keys()


def test_the_folder_holds_the_database_files(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'out' / 'db') as stash:
        stash['k'] = 1
    assert sorted(os.listdir(tmp_path / 'out' / 'db')) == sorted([DATA_FILE, LOCK_FILE])


def test_the_last_close_releases_the_environment_so_it_can_be_deleted_and_made_again(tmp_path: Path) -> None:
    first = LmdbStash(tmp_path / 'db')
    second = LmdbStash(tmp_path / 'db')
    first['k'] = 1
    second['j'] = 2
    first.close()
    assert second.keys() == ['j', 'k']
    second.close()
    shutil.rmtree(tmp_path / 'db')
    with LmdbStash(tmp_path / 'db') as again:
        assert len(again) == 0


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='map_size'):
        LmdbStash(tmp_path, map_size=0)
    with pytest.raises(ValueError, match='group_items'):
        LmdbStash(tmp_path, group_items=0)


def test_without_lmdb_the_import_error_names_the_extra(tmp_path: Path) -> None:
    code = (
        'import sys\n'
        "sys.modules['lmdb'] = None\n"
        'import stashworks\n'
        "print('imported', len(stashworks.__all__))\n"
        'try:\n'
        '    stashworks.LmdbStash\n'
        'except ImportError as exc:\n'
        "    print('error:', exc)\n"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, check=True)
    assert 'imported' in out.stdout
    assert "error: LmdbStash needs the optional lmdb package; install it with: pip install 'stashworks[lmdb]'" in (
        out.stdout
    )


def test_exists_many_answers_for_each_key_in_order(tmp_path: Path) -> None:
    wanted = [f'k{i}' for i in range(25_000)] + ['', 'x' * 600, '\ud800', 'k3']
    with LmdbStash(tmp_path / 'db') as stash:
        stash.begin_group()
        for key in wanted[::3]:
            stash.dump(key, None)
        # Buffered items count: the group is committed first.
        assert stash.exists_many(wanted) == [key in set(wanted[::3]) for key in wanted]
        assert stash.exists_many([]) == []


def test_load_bytes_gives_the_serialized_value(tmp_path: Path) -> None:
    with LmdbStash(tmp_path / 'db') as stash:
        stash['k'] = {'a': 1}
        stash['x' * 600] = [2]
        assert pickle.loads(stash.load_bytes('k')) == {'a': 1}
        assert pickle.loads(stash.load_bytes('x' * 600)) == [2]
        with pytest.raises(KeyError, match='missing'):
            stash.load_bytes('missing')


def test_opening_while_another_process_grows_the_map_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LMDB's open begins a transaction; a writer growing the map at that moment makes it fail with MAP_RESIZED."""
    import lmdb

    import stashworks.lmdbstash as module

    real_open = lmdb.open
    calls: list[str] = []

    def open_racing_a_writer(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        if len(calls) == 1:
            raise lmdb.MapResizedError('mdb_txn_begin: MDB_MAP_RESIZED: the map grew')
        return real_open(*args, **kwargs)

    monkeypatch.setattr(module.lmdb, 'open', open_racing_a_writer)
    with LmdbStash(tmp_path / 'db') as stash:
        stash['k'] = 1
        assert stash['k'] == 1
    assert len(calls) == 2


def test_opening_the_database_while_another_process_grows_the_map_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race one transaction later: the open succeeded, opening its main database meets MAP_RESIZED."""
    import lmdb

    import stashworks.lmdbstash as module

    real_open = lmdb.open
    raised: list[int] = []

    class RacedEnvironment:
        def __init__(self, env: Any) -> None:
            self._env = env

        def open_db(self, *args: Any, **kwargs: Any) -> Any:
            if not raised:
                raised.append(1)
                raise lmdb.MapResizedError('mdb_txn_begin: MDB_MAP_RESIZED: the map grew')
            return self._env.open_db(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._env, name)

    monkeypatch.setattr(module.lmdb, 'open', lambda *a, **k: RacedEnvironment(real_open(*a, **k)))
    with LmdbStash(tmp_path / 'db') as stash:
        stash['k'] = 1
        assert stash['k'] == 1
    assert raised == [1]
