"""Layer 2: factory, one-shot, cache, union and sorted stashes; ShelveStash lifecycle."""

from __future__ import annotations

import pickle
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stashworks import (
    CacheStash,
    DictionaryStash,
    DirectoryStash,
    FactoryStash,
    OneShotFactoryStash,
    ReadOnlyStash,
    SerializationError,
    ShelveStash,
    SortedStash,
    StashClosedError,
    StashKeyError,
    StashReadOnlyError,
    UnionStash,
)


class CountingDict(DictionaryStash):
    """A dictionary stash that counts the loads it serves, per key."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        super().__init__(data)
        self.loads: Counter[str] = Counter()

    def load(self, key: str) -> Any:
        self.loads[key] += 1
        return super().load(key)


class Squares(ReadOnlyStash):
    """A factory: the keys '0'..'n-1', each creating its square (and '7' creating None)."""

    def __init__(self, n: int = 10) -> None:
        self.n = n
        self.created: Counter[str] = Counter()

    def load(self, key: str) -> Any:
        if key not in self.keys():
            raise StashKeyError(key)
        self.created[key] += 1
        return None if key == '7' else int(key) ** 2

    def keys(self) -> list[str]:
        return [str(i) for i in range(self.n)]


# -- FactoryStash ---------------------------------------------------------


def test_factory_creates_a_missing_item_and_stores_it_in_the_delegate() -> None:
    delegate = DictionaryStash()
    stash = FactoryStash(delegate=delegate, factory=Squares())
    assert stash.load('3') == 9
    assert delegate.data == {'3': 9}


def test_factory_is_called_once_per_key() -> None:
    factory = Squares()
    stash = FactoryStash(delegate=DictionaryStash(), factory=factory)
    for _ in range(3):
        stash.load('3')
        stash['4']
    assert factory.created == {'3': 1, '4': 1}


def test_factory_is_called_once_for_a_key_whose_value_is_none(tmp_path: Path) -> None:
    factory = Squares()
    stash = FactoryStash(delegate=DirectoryStash(tmp_path), factory=factory)
    assert [stash.load('7') for _ in range(3)] == [None, None, None]
    assert factory.created['7'] == 1


def test_an_item_in_the_delegate_wins_over_the_factory() -> None:
    factory = Squares()
    stash = FactoryStash(delegate=DictionaryStash({'3': 'stored'}), factory=factory)
    assert stash.load('3') == 'stored'
    assert factory.created['3'] == 0


def test_a_key_neither_has_raises_key_error_and_stores_nothing() -> None:
    delegate = DictionaryStash()
    stash = FactoryStash(delegate=delegate, factory=Squares())
    with pytest.raises(KeyError, match='nope'):
        stash.load('nope')
    assert delegate.data == {}


def test_factory_get_creates_the_item() -> None:
    delegate = DictionaryStash()
    stash = FactoryStash(delegate=delegate, factory=Squares())
    assert stash.get('2', 'default') == 4
    assert delegate.data == {'2': 4}


def test_factory_get_of_a_missing_key_returns_the_default() -> None:
    stash = FactoryStash(delegate=DictionaryStash(), factory=Squares())
    assert stash.get('nope', 'default') == 'default'


def test_factory_keys_are_the_factorys_keys_when_not_preemptive() -> None:
    stash = FactoryStash(delegate=DictionaryStash({'x': 1}), factory=Squares(3), enable_preemptive=False)
    assert (list(stash.keys()), len(stash)) == (['0', '1', '2'], 3)


def test_preemptive_factory_keys_are_the_delegates_once_it_has_data() -> None:
    stash = FactoryStash(delegate=DictionaryStash({'x': 1}), factory=Squares(3), enable_preemptive=True)
    assert (list(stash.keys()), len(stash)) == (['x'], 1)


def test_preemptive_factory_keys_are_the_factorys_while_the_delegate_is_empty() -> None:
    stash = FactoryStash(delegate=DictionaryStash(), factory=Squares(3), enable_preemptive=True)
    assert list(stash.keys()) == ['0', '1', '2']


def test_factory_exists_in_delegate_or_factory() -> None:
    stash = FactoryStash(delegate=DictionaryStash({'x': 1}), factory=Squares(3))
    assert ('x' in stash, '2' in stash, 'nope' in stash) == (True, True, False)


def test_iterating_a_factory_stash_creates_every_item() -> None:
    delegate = DictionaryStash()
    stash = FactoryStash(delegate=delegate, factory=Squares(3))
    assert dict(stash) == {'0': 0, '1': 1, '2': 4}
    assert delegate.data == {'0': 0, '1': 1, '2': 4}


def test_factory_stores_created_items_on_disk(tmp_path: Path) -> None:
    stash = FactoryStash(delegate=DirectoryStash(tmp_path), factory=Squares())
    stash.load('5')
    assert DirectoryStash(tmp_path).load('5') == 25


def test_factory_writes_act_on_the_delegate_only() -> None:
    delegate = DictionaryStash()
    factory = Squares(3)
    stash = FactoryStash(delegate=delegate, factory=factory)
    stash.load('2')
    stash.clear()
    assert (delegate.data, factory.keys(), '2' in stash) == ({}, ['0', '1', '2'], True)
    assert stash.load('2') == 4
    assert factory.created['2'] == 2


# -- OneShotFactoryStash --------------------------------------------------


def test_one_shot_fills_the_delegate_from_a_callable_on_first_use() -> None:
    calls = []

    def worker() -> list[tuple[str, int]]:
        calls.append(1)
        return [('a', 1), ('b', None)]

    stash = OneShotFactoryStash(DictionaryStash(), worker=worker)
    assert calls == []
    assert (dict(stash), len(stash), stash.load('b')) == ({'a': 1, 'b': None}, 2, None)
    assert calls == [1]


def test_one_shot_accepts_an_iterable_worker() -> None:
    stash = OneShotFactoryStash(DictionaryStash(), worker=iter([('a', 1)]))
    assert stash.load('a') == 1


def test_one_shot_does_not_run_the_worker_when_the_delegate_has_data(tmp_path: Path) -> None:
    DirectoryStash(tmp_path).dump('old', 0)

    def worker() -> list[tuple[str, int]]:
        raise AssertionError('worker ran')

    stash = OneShotFactoryStash(DirectoryStash(tmp_path), worker=worker)
    assert list(stash.keys()) == ['old']


def test_one_shot_runs_an_empty_worker_once() -> None:
    calls = []

    def worker() -> list[tuple[str, int]]:
        calls.append(1)
        return []

    stash = OneShotFactoryStash(DictionaryStash(), worker=worker)
    for _ in range(3):
        assert len(stash) == 0
    assert calls == [1]


def test_one_shot_primes_before_a_write() -> None:
    stash = OneShotFactoryStash(DictionaryStash(), worker=lambda: [('a', 1)])
    stash.dump('b', 2)
    assert dict(stash) == {'a': 1, 'b': 2}


def test_a_failing_worker_leaves_the_delegate_empty_and_runs_again_next_time() -> None:
    attempts = []

    def worker() -> Any:
        attempts.append(1)
        yield 'a', 1
        if len(attempts) == 1:
            raise RuntimeError('worker failed')
        yield 'b', 2

    delegate = DictionaryStash()
    stash = OneShotFactoryStash(delegate, worker=worker)
    with pytest.raises(RuntimeError):
        stash.keys()
    assert delegate.data == {}
    assert dict(stash) == {'a': 1, 'b': 2}


def test_one_shot_refills_after_clear() -> None:
    stash = OneShotFactoryStash(DictionaryStash(), worker=lambda: [('a', 1)])
    stash.load('a')
    stash.clear()
    assert list(stash.keys()) == ['a']


# -- CacheStash -----------------------------------------------------------


def test_cache_loads_from_the_delegate_once() -> None:
    delegate = CountingDict({'a': 1})
    stash = CacheStash(delegate=delegate)
    assert [stash.load('a') for _ in range(3)] == [1, 1, 1]
    assert delegate.loads['a'] == 1


def test_a_cached_none_is_a_hit() -> None:
    delegate = CountingDict({'a': None})
    stash = CacheStash(delegate=delegate)
    assert [stash.get('a', 'default') for _ in range(3)] == [None, None, None]
    assert delegate.loads['a'] == 1
    assert stash.cache_stash.data == {'a': None}


def test_a_missing_key_is_not_cached() -> None:
    delegate = CountingDict()
    stash = CacheStash(delegate=delegate)
    for _ in range(2):
        with pytest.raises(KeyError):
            stash.load('a')
    delegate.dump('a', 1)
    assert stash.load('a') == 1
    assert stash.cache_stash.data == {'a': 1}


def test_cache_dump_writes_through_to_the_delegate_and_the_cache() -> None:
    delegate = CountingDict()
    stash = CacheStash(delegate=delegate)
    stash.dump('a', 2)
    assert (delegate.data, stash.cache_stash.data, stash.load('a'), delegate.loads['a']) == ({'a': 2}, {'a': 2}, 2, 0)


def test_cache_delete_removes_from_both() -> None:
    delegate = CountingDict({'a': 1})
    stash = CacheStash(delegate=delegate)
    stash.load('a')
    del stash['a']
    assert (delegate.data, stash.cache_stash.data, 'a' in stash) == ({}, {}, False)


def test_cache_clear_empties_both() -> None:
    delegate = CountingDict({'a': 1, 'b': 2})
    stash = CacheStash(delegate=delegate)
    stash.load('a')
    stash.clear()
    assert (delegate.data, stash.cache_stash.data, len(stash)) == ({}, {}, 0)


def test_a_failed_dump_leaves_cache_and_delegate_with_the_old_value(tmp_path: Path) -> None:
    delegate = DirectoryStash(tmp_path)
    stash = CacheStash(delegate=delegate)
    stash.dump('a', 'old')
    with pytest.raises(SerializationError):
        stash.dump('a', threading.Lock())
    assert (stash.load('a'), delegate.load('a'), stash.cache_stash.data) == ('old', 'old', {'a': 'old'})


def test_a_read_only_cache_refuses_writes_and_leaves_the_delegate_alone() -> None:
    delegate = DictionaryStash({'a': 1})
    stash = CacheStash(delegate=delegate, read_only=True)
    stash.load('a')
    for write in (lambda: stash.dump('a', 2), lambda: stash.delete('a'), stash.clear):
        with pytest.raises(StashReadOnlyError):
            write()
    assert (delegate.data, stash.load('a')) == ({'a': 1}, 1)


def test_evict_drops_cached_items_but_keeps_them_in_the_delegate() -> None:
    delegate = CountingDict({'a': 1, 'b': 2})
    stash = CacheStash(delegate=delegate, read_only=True)
    stash.load('a')
    stash.load('b')
    stash.evict('a')
    assert stash.cache_stash.data == {'b': 2}
    stash.evict()
    assert stash.cache_stash.data == {}
    assert (stash.load('a'), delegate.loads['a']) == (1, 2)


# -- UnionStash ------------------------------------------------------------


def test_union_loads_from_the_first_stash_that_has_the_key() -> None:
    stash = UnionStash([DictionaryStash({'a': 1}), DictionaryStash({'a': 2, 'b': 3})])
    assert (stash.load('a'), stash.load('b')) == (1, 3)


def test_a_stored_none_in_an_earlier_stash_wins() -> None:
    stash = UnionStash([DictionaryStash({'a': None}), DictionaryStash({'a': 2})])
    assert stash.get('a', 'default') is None


def test_union_keys_are_the_ordered_union_without_duplicates() -> None:
    stash = UnionStash([DictionaryStash({'b': 1, 'a': 1}), DictionaryStash({'a': 2, 'c': 3, 'b': 4})])
    assert (stash.keys(), len(stash)) == (['b', 'a', 'c'], 3)


def test_union_missing_key_raises_key_error() -> None:
    stash = UnionStash([DictionaryStash({'a': 1}), DictionaryStash()])
    with pytest.raises(KeyError):
        stash.load('z')


def test_union_is_read_only() -> None:
    first = DictionaryStash({'a': 1})
    stash = UnionStash([first])
    for write in (lambda: stash.dump('a', 2), lambda: stash.delete('a'), stash.clear):
        with pytest.raises(StashReadOnlyError):
            write()
    with pytest.raises(StashReadOnlyError):
        stash['b'] = 1
    assert first.data == {'a': 1}


def test_union_sees_later_changes_in_its_stashes() -> None:
    second = DictionaryStash()
    stash = UnionStash([DictionaryStash(), second])
    second.dump('late', 1)
    assert stash.load('late') == 1


# -- SortedStash ------------------------------------------------------------


def test_sorted_keys_are_in_string_order_by_default() -> None:
    stash = SortedStash(DictionaryStash({'b': 0, '10': 0, 'a': 0, '9': 0}))
    assert stash.keys() == ['10', '9', 'a', 'b']


def test_sort_function_orders_keys_numerically() -> None:
    stash = SortedStash(DictionaryStash({'10': 0, '9': 0, '100': 0}), sort_function=int)
    assert stash.keys() == ['9', '10', '100']


def test_sorted_iteration_and_values_follow_the_sorted_keys() -> None:
    stash = SortedStash(DictionaryStash({'c': 3, 'a': 1, 'b': 2}))
    assert (list(stash), list(stash.values())) == ([('a', 1), ('b', 2), ('c', 3)], [1, 2, 3])


def test_sorted_writes_go_to_the_delegate() -> None:
    delegate = DictionaryStash()
    stash = SortedStash(delegate)
    stash.dump('b', 1)
    assert delegate.data == {'b': 1}


# -- ShelveStash lifecycle -------------------------------------------------

USES_AFTER_CLOSE = {
    'load': lambda s: s.load('a'),
    'getitem': lambda s: s['a'],
    'get': lambda s: s.get('a'),
    'dump': lambda s: s.dump('b', 1),
    'setitem': lambda s: s.__setitem__('b', 1),
    'delete': lambda s: s.delete('a'),
    'delitem': lambda s: s.__delitem__('a'),
    'keys': lambda s: s.keys(),
    'len': len,
    'in': lambda s: 'a' in s,
    'exists': lambda s: s.exists('a'),
    'iter': list,
    'values': lambda s: list(s.values()),
    'clear': lambda s: s.clear(),
    'sync': lambda s: s.sync(),
    'with': lambda s: s.__enter__(),
}


@pytest.mark.parametrize('use', USES_AFTER_CLOSE.values(), ids=USES_AFTER_CLOSE.keys())
def test_shelve_refuses_any_use_after_close_naming_the_path(tmp_path: Path, use: Any) -> None:
    stash = ShelveStash(tmp_path / 'db')
    stash.dump('a', 1)
    stash.close()
    with pytest.raises(StashClosedError, match=str(tmp_path / 'db')):
        use(stash)


def test_shelve_refuses_use_after_close_even_if_never_opened(tmp_path: Path) -> None:
    stash = ShelveStash(tmp_path / 'db')
    stash.close()
    with pytest.raises(StashClosedError):
        stash.keys()


def test_shelve_close_twice_is_harmless(tmp_path: Path) -> None:
    stash = ShelveStash(tmp_path / 'db')
    stash.dump('a', 1)
    stash.close()
    stash.close()
    assert stash.closed


def test_shelve_as_a_context_manager_closes_and_persists(tmp_path: Path) -> None:
    with ShelveStash(tmp_path / 'db') as stash:
        stash.dump('a', None)
    assert stash.closed
    with ShelveStash(tmp_path / 'db') as again:
        assert dict(again) == {'a': None}


def test_shelve_opens_lazily(tmp_path: Path) -> None:
    stash = ShelveStash(tmp_path / 'sub' / 'db')
    assert not (tmp_path / 'sub').exists()
    stash.dump('a', 1)
    assert any((tmp_path / 'sub').iterdir())
    stash.close()


def test_shelve_writeback_saves_in_place_mutation(tmp_path: Path) -> None:
    with ShelveStash(tmp_path / 'db', writeback=True, auto_close=False) as stash:
        stash.dump('a', [])
        stash.load('a').append(1)
    with ShelveStash(tmp_path / 'db') as again:
        assert again.load('a') == [1]


def test_shelve_unpicklable_value_keeps_the_old_one(tmp_path: Path) -> None:
    with ShelveStash(tmp_path / 'db', writeback=True) as stash:
        stash.dump('a', 'old')
        with pytest.raises(SerializationError, match="'a'"):
            stash.dump('a', threading.Lock())
        assert stash.load('a') == 'old'
    with ShelveStash(tmp_path / 'db') as again:
        assert again.load('a') == 'old'


def test_shelve_read_only_flag_refuses_writes(tmp_path: Path) -> None:
    with ShelveStash(tmp_path / 'db') as stash:
        stash.dump('a', 1)
    with ShelveStash(tmp_path / 'db', flag='r') as ro:
        assert ro.load('a') == 1
        for write in (lambda: ro.dump('b', 2), lambda: ro.delete('a'), ro.clear):
            with pytest.raises(StashReadOnlyError, match='db'):
                write()
        assert dict(ro) == {'a': 1}


def test_a_writable_shelf_refuses_to_be_pickled(tmp_path: Path) -> None:
    with ShelveStash(tmp_path / 'db') as stash:
        stash.dump('a', 1)
        with pytest.raises(TypeError, match=str(tmp_path / 'db')):
            pickle.dumps(stash)


def test_a_read_only_shelf_pickles_and_reopens(tmp_path: Path) -> None:
    with ShelveStash(tmp_path / 'db') as stash:
        stash.dump('a', 1)
    with ShelveStash(tmp_path / 'db', flag='r') as ro:
        ro.keys()
        copy = pickle.loads(pickle.dumps(ro))
    assert copy.load('a') == 1
    copy.close()
