"""zensols code and zensols folders work unchanged, or fail with a clear error.

Each test writes the zensols form (constructor order, defaults, the
dataclass subclass form, a folder of raw-named files) and checks that
stashworks does what zensols does, or refuses loudly saying what to write.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pytest

from stashworks import (
    CacheStash,
    CloseableStash,
    DelegateStash,
    DictionaryStash,
    DirectoryStash,
    FactoryStash,
    IncrementKeyDirectoryStash,
    KeyLimitStash,
    OneShotFactoryStash,
    PreemptiveStash,
    PrimablePreemptiveStash,
    PrimeableStash,
    ReadOnlyStash,
    ShelveStash,
    SortedStash,
    Stash,
    StashWarning,
    UnionStash,
    persisted,
)

# -- the silent cases --------------------------------------------------------


def pairs() -> Iterable[tuple[str, int]]:
    return [('a', 1), ('b', 2)]


def test_one_shot_takes_the_delegate_first_and_the_worker_as_an_attribute(tmp_path: Path) -> None:
    stash = OneShotFactoryStash(DirectoryStash(tmp_path / 'out'))
    stash.worker = pairs
    assert dict(stash) == {'a': 1, 'b': 2}
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a.dat', 'b.dat']


def test_one_shot_refuses_a_stash_as_its_worker_saying_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r'delegate.*worker='):
        OneShotFactoryStash(worker=DirectoryStash(tmp_path / 'out'))


def test_one_shot_refuses_a_worker_in_the_delegate_place_saying_what_to_write() -> None:
    with pytest.raises(TypeError, match='worker='):
        OneShotFactoryStash(pairs)  # type: ignore[arg-type]


def test_one_shot_without_a_worker_raises_a_clear_error_on_use() -> None:
    stash = OneShotFactoryStash(DictionaryStash())
    with pytest.raises(TypeError, match='worker'):
        stash.keys()


def test_cache_stash_second_argument_is_the_cache_stash() -> None:
    cache = DictionaryStash()
    stash = CacheStash(DictionaryStash({'k': 1}), cache)
    assert stash.load('k') == 1
    assert cache.data == {'k': 1}


def test_cache_stash_default_cache_is_a_dictionary_stash() -> None:
    assert isinstance(CacheStash(DictionaryStash()).cache_stash, DictionaryStash)


def test_cache_stash_with_a_cache_on_disk_serves_hits_from_it(tmp_path: Path) -> None:
    source = DictionaryStash({'k': None})
    cache = DirectoryStash(tmp_path / 'cache')
    stash = CacheStash(source, cache)
    assert stash.load('k') is None
    source.delete('k')
    assert (stash.load('k'), cache.load('k')) == (None, None)


def test_cache_stash_refuses_a_bool_where_the_cache_goes() -> None:
    with pytest.raises(TypeError, match='read_only=True'):
        CacheStash(DictionaryStash(), True)  # type: ignore[arg-type]


def test_key_limit_stash_is_unlimited_by_default() -> None:
    stash = KeyLimitStash(DictionaryStash({str(i): i for i in range(25)}))
    assert (len(stash), stash.limit) == (25, sys.maxsize)


def test_factory_stash_is_preemptive_by_default() -> None:
    stash = FactoryStash(DictionaryStash({'done': 1}), DictionaryStash({'a': 2, 'b': 3}))
    assert stash.enable_preemptive is True
    assert list(stash.keys()) == ['done']


def test_factory_stash_takes_zensols_dump_factory_nones() -> None:
    delegate = DictionaryStash()
    stash = FactoryStash(delegate, DictionaryStash({'n': None}), dump_factory_nones=False)
    assert stash.load('n') is None
    assert not delegate.exists('n')


class Owner:
    def __init__(self) -> None:
        self.calls = 0

    @persisted('_x')
    def x(self) -> int:
        self.calls += 1
        return 42


def test_a_persisted_method_ignores_arguments_once_cached() -> None:
    owner = Owner()
    assert owner.x() == 42
    assert (owner.x(5), owner.x(5, y=1), owner.calls) == (42, 42, 1)


# -- raw names: a zensols cache folder as it is ---------------------------------

ZENSOLS_KEYS = ['plain', 'with space', 'a:b', 'über', '.hidden', '100%', 'x.y']


def write_zensols_folder(folder: Path, pattern: str = '{name}.dat') -> dict[str, Any]:
    # What zensols' DirectoryStash leaves: pattern.format(name=key), pickled.
    folder.mkdir(parents=True)
    items = {key: {'key': key, 'n': i} for i, key in enumerate(ZENSOLS_KEYS)}
    items['none'] = None
    for key, value in items.items():
        (folder / pattern.format(name=key)).write_bytes(pickle.dumps(value))
    return items


def test_raw_names_reads_a_zensols_folder_as_it_is(tmp_path: Path) -> None:
    items = write_zensols_folder(tmp_path / 'z')
    stash = DirectoryStash(tmp_path / 'z', raw_names=True)
    assert sorted(stash.keys()) == sorted(items)
    assert len(stash) == len(items)
    assert {key: stash.load(key) for key in items} == items
    assert all(stash.exists(key) for key in items)


def test_raw_names_with_a_custom_pattern(tmp_path: Path) -> None:
    items = write_zensols_folder(tmp_path / 'z', pattern='doc-{name}.pkl')
    stash = DirectoryStash(tmp_path / 'z', 'doc-{name}.pkl', raw_names=True)
    assert dict(stash) == items


def test_raw_names_writes_what_zensols_reads(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 'z', raw_names=True)
    stash.dump('with space', 1)
    stash.dump('.hidden', 2)
    assert pickle.loads((tmp_path / 'z' / 'with space.dat').read_bytes()) == 1
    assert pickle.loads((tmp_path / 'z' / '.hidden.dat').read_bytes()) == 2
    assert sorted(stash.keys()) == ['.hidden', 'with space']


@pytest.mark.parametrize('key', ['a/b', '/etc/passwd', 'nul\x00', '.', '..', 'x' * 300, '\udc00\ud800'], ids=repr)
def test_raw_names_refuses_a_key_that_is_no_safe_file_name(tmp_path: Path, key: str) -> None:
    stash = DirectoryStash(tmp_path / 'z', raw_names=True)
    with pytest.raises(ValueError, match='raw_names'):
        stash.dump(key, 1)
    assert not (tmp_path / 'z').exists() or list((tmp_path / 'z').iterdir()) == []


def test_a_zensols_folder_opened_without_raw_names_warns_pointing_at_raw_names(tmp_path: Path) -> None:
    write_zensols_folder(tmp_path / 'z')
    stash = DirectoryStash(tmp_path / 'z')
    with pytest.warns(StashWarning, match='raw_names=True'):
        keys = stash.keys()
    assert 'plain' in keys


def test_a_zensols_folder_with_only_hidden_looking_keys_still_warns(tmp_path: Path) -> None:
    (tmp_path / 'z').mkdir()
    (tmp_path / 'z' / 'plain.dat').write_bytes(pickle.dumps(1))
    (tmp_path / 'z' / '.hidden.dat').write_bytes(pickle.dumps(2))
    with pytest.warns(StashWarning, match='raw_names=True'):
        assert len(DirectoryStash(tmp_path / 'z')) == 1


def test_a_folder_of_stashworks_names_does_not_warn(tmp_path: Path) -> None:
    stash = DirectoryStash(tmp_path / 'z')
    for key in ZENSOLS_KEYS:
        stash.dump(key, key)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert sorted(DirectoryStash(tmp_path / 'z').keys()) == sorted(ZENSOLS_KEYS)


# -- loud but missing ---------------------------------------------------------


def test_key_groups_cuts_the_keys_in_lists_of_n() -> None:
    stash = DictionaryStash({str(i): i for i in range(7)})
    assert list(stash.key_groups(3)) == [['0', '1', '2'], ['3', '4', '5'], ['6']]


def test_key_groups_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match='n must be'):
        list(DictionaryStash().key_groups(0))


def test_shelve_stash_takes_zensols_arguments_and_defaults(tmp_path: Path) -> None:
    stash = ShelveStash(tmp_path / 'db', True, False)
    assert (stash.writeback, stash.auto_close) == (True, False)
    default = ShelveStash(tmp_path / 'db2')
    assert (default.writeback, default.auto_close) == (True, True)


def test_shelve_stash_with_auto_close_releases_the_database_after_each_call(tmp_path: Path) -> None:
    stash = ShelveStash(tmp_path / 'db', auto_close=True)
    stash.dump('a', 1)
    assert stash._shelf is None
    # Another object sees the write at once: the first one closed the file.
    assert ShelveStash(tmp_path / 'db').load('a') == 1
    assert stash.load('a') == 1 and not stash.closed


def test_shelve_stash_refuses_a_flag_where_auto_close_goes(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match='flag='):
        ShelveStash(tmp_path / 'db', False, 'r')  # type: ignore[arg-type]


def test_shelve_get_extension_names_what_the_backend_adds(tmp_path: Path) -> None:
    ext = ShelveStash.get_extension()
    with ShelveStash(tmp_path / 'db') as stash:
        stash.dump('a', 1)
        assert stash.real_path.exists()
    assert ext is None or stash.real_path.name == f'db.{ext}'


def test_increment_get_last_key_of_an_empty_stash_is_zero(tmp_path: Path) -> None:
    stash = IncrementKeyDirectoryStash(tmp_path / 's')
    assert stash.get_last_key() == '0'
    assert stash.get_last_key(inc=True) == '1'


def test_increment_keys_list_only_numbered_items(tmp_path: Path) -> None:
    stash = IncrementKeyDirectoryStash(tmp_path / 's')
    stash.dump('first')
    (tmp_path / 's' / 'data-notes.dat').write_bytes(pickle.dumps('stray'))
    assert (list(stash.keys()), len(stash), stash.exists('notes')) == (['1'], 1, False)


def test_increment_refuses_a_key_that_is_no_number(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='DirectoryStash'):
        IncrementKeyDirectoryStash(tmp_path / 's').dump('name', 1)


def test_increment_takes_zensols_argument_order(tmp_path: Path) -> None:
    stash = IncrementKeyDirectoryStash(tmp_path / 's', '{name}.dat', 'run')
    stash.dump(1)
    assert [p.name for p in (tmp_path / 's').iterdir()] == ['run-1.dat']


def test_increment_refuses_a_pattern_saying_to_pass_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='name='):
        IncrementKeyDirectoryStash(tmp_path / 's', 'run')


# -- the dataclass subclass form ------------------------------------------------


@dataclass
class Squares(ReadOnlyStash):
    n: int
    offset: int = 0

    def load(self, key: str) -> Any:
        if not self.exists(key):
            raise self.missing_error(key)
        return int(key) ** 2 + self.offset

    def keys(self) -> Iterable[str]:
        return [str(i) for i in range(self.n)]

    def exists(self, key: str) -> bool:
        return key in self.keys()


@dataclass
class Plain(Stash):
    data: dict[str, Any] = field(default_factory=dict)

    def load(self, key: str) -> Any:
        return self.data[key]

    def dump(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self) -> Iterable[str]:
        return list(self.data)


@dataclass
class Closeable(CloseableStash, Plain):
    pass


@dataclass
class Tagged(DelegateStash):
    tag: str

    def load(self, key: str) -> Any:
        return (self.tag, super().load(key))


@dataclass
class Limited(KeyLimitStash):
    extra: int = 0


@dataclass
class Pre(PreemptiveStash):
    extra: int = 0


@dataclass
class Prime(PrimeableStash):
    primed: int = 0

    def prime(self) -> None:
        self.primed += 1


@dataclass
class PrimePre(PrimablePreemptiveStash):
    extra: int = 0


@dataclass
class Fac(FactoryStash):
    extra: int = 0


@dataclass
class OneShot(OneShotFactoryStash):
    n: int = 3

    @property
    def worker(self) -> Callable[[], Iterable[tuple[str, int]]]:
        return lambda: [(str(i), i) for i in range(self.n)]


@dataclass
class Sorted(SortedStash):
    extra: int = 0


@dataclass
class Dict(DictionaryStash):
    extra: int = 0


@dataclass
class Cache(CacheStash):
    extra: int = 0


@dataclass
class Directory(DirectoryStash):
    extra: int = 0


@dataclass
class Increment(IncrementKeyDirectoryStash):
    extra: int = 0


@dataclass
class Union(UnionStash):
    extra: int = 0


@dataclass
class Shelf(ShelveStash):
    extra: int = 0


def test_dataclass_read_only_stash_with_fields() -> None:
    stash = Squares(3, offset=1)
    assert (dict(stash), stash.n) == ({'0': 1, '1': 2, '2': 5}, 3)


def test_dataclass_stash_and_closeable_stash() -> None:
    stash = Closeable()
    stash.dump('a', 1)
    assert dict(Plain({'a': 1})) == dict(stash) == {'a': 1}
    stash.close()
    assert stash.closed


def test_dataclass_delegate_stash_takes_the_delegate_first() -> None:
    stash = Tagged(DictionaryStash({'k': 1}), 't')
    assert stash.load('k') == ('t', 1)


def test_dataclass_key_limit_stash_defaults_to_unlimited() -> None:
    stash = Limited(DictionaryStash({str(i): i for i in range(20)}), extra=1)
    assert (len(stash), stash.limit, stash.extra) == (20, sys.maxsize, 1)
    assert len(Limited(DictionaryStash({'a': 1, 'b': 2}), 1)) == 1


def test_dataclass_preemptive_stashes() -> None:
    pre = Pre(DictionaryStash({'a': 1}), 5)
    assert (pre.has_data, pre.extra) == (True, 5)
    prime = Prime(delegate=DictionaryStash({'a': 1}))
    assert prime.load('a') == 1 and prime.primed == 1
    assert PrimePre(DictionaryStash()).has_data is False


def test_dataclass_factory_stash_takes_zensols_fields() -> None:
    stash = Fac(DictionaryStash(), Squares(4), True, True, False, extra=2)
    assert (stash.load('3'), stash.enable_preemptive, stash.extra) == (9, True, 2)


def test_dataclass_one_shot_with_a_worker_property(tmp_path: Path) -> None:
    stash = OneShot(DirectoryStash(tmp_path / 'o'), n=2)
    assert dict(stash) == {'0': 0, '1': 1}


def test_dataclass_sorted_dictionary_and_union_stashes() -> None:
    assert list(Sorted(DictionaryStash({'b': 1, 'a': 2}), None).keys()) == ['a', 'b']
    d = Dict()
    d.dump('a', 1)
    assert (dict(d), d.extra) == ({'a': 1}, 0)
    assert dict(Union((DictionaryStash({'a': 1}), DictionaryStash({'b': 2})))) == {'a': 1, 'b': 2}


def test_dataclass_cache_stash_takes_the_cache_second() -> None:
    cache = DictionaryStash()
    stash = Cache(DictionaryStash({'k': 1}), cache, extra=3)
    assert stash.load('k') == 1 and cache.data == {'k': 1}


def test_dataclass_directory_stashes(tmp_path: Path) -> None:
    stash = Directory(tmp_path / 'd', 'x-{name}.pkl', extra=1)
    stash.dump('a', 1)
    assert [p.name for p in (tmp_path / 'd').iterdir()] == ['x-a.pkl']
    inc = Increment(tmp_path / 'i')
    inc.dump('v')
    assert (inc.get_last_key(), inc.load()) == ('1', 'v')


def test_dataclass_shelve_stash(tmp_path: Path) -> None:
    stash = Shelf(tmp_path / 'db', False, True, extra=1)
    stash.dump('a', 1)
    assert dict(stash) == {'a': 1}
    stash.close()


def test_zensols_dataclass_subclass_repr_and_equality_follow_its_fields() -> None:
    a, b = Squares(2), Squares(2)
    assert a == b and 'n=2' in repr(a)


def test_one_shot_subclass_worker_default_is_an_optional_attribute() -> None:
    stash: Optional[OneShotFactoryStash] = OneShotFactoryStash(DictionaryStash(), worker=pairs)
    assert dict(stash) == {'a': 1, 'b': 2}


@dataclass
class Checked(ReadOnlyStash):
    n: int

    def __post_init__(self) -> None:
        # zensols code calls the base's __post_init__ in its own.
        super().__post_init__()
        self.keys_seen = [str(i) for i in range(self.n)]

    def load(self, key: str) -> Any:
        return key

    def keys(self) -> Iterable[str]:
        return self.keys_seen


def test_a_subclass_post_init_may_call_the_bases() -> None:
    assert dict(Checked(2)) == {'0': '0', '1': '1'}


@dataclass
class Primed(PrimeableStash):
    n: int
    primes: int = 0

    def prime(self) -> None:
        self.primes += 1

    def load(self, key: str) -> Any:
        self.prime()
        return int(key)

    def keys(self) -> Iterable[str]:
        self.prime()
        return [str(i) for i in range(self.n)]


def test_a_dataclass_primeable_stash_takes_no_delegate_first_as_in_zensols() -> None:
    stash = Primed(3)
    assert (stash.n, stash.delegate, list(stash.keys())) == (3, None, ['0', '1', '2'])


def test_persisted_takes_allocation_track_in_zensols_position(tmp_path: Path) -> None:
    class Owner:
        @persisted('_v', tmp_path / 'sub' / 'v.dat', False, False, True, True)
        def v(self) -> int:
            return 7

    assert Owner().v() == 7
    assert (tmp_path / 'sub' / 'v.dat').exists()


class Ready(PrimeableStash):
    def __init__(self, delegate: Stash) -> None:
        super().__init__(delegate)
        self.primed = 0

    def prime(self) -> None:
        self.primed += 1
        super().prime()


def test_super_prime_primes_a_primeable_delegate_as_in_zensols() -> None:
    inner = Ready(DictionaryStash({'a': 1}))
    outer = Ready(inner)
    outer.prime()
    assert (outer.primed, inner.primed) == (1, 1)
