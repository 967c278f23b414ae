"""The contract every stash keeps, as two mixins a test class opts into.

* :class:`ReadContract`: reading a stash that holds :data:`ITEMS`; for
  read-only stashes, a subclass implements :meth:`ReadContract.make_readable`.
* :class:`StashContract`: the read contract plus CRUD; a subclass
  implements :meth:`StashContract.make_stash`.
* :class:`PersistentStashContract`: CRUD plus items that outlive the stash
  object; a subclass also implements :meth:`PersistentStashContract.reopen`.

The mixins are not collected on their own (their names do not start with
``Test``); ``tests/test_contract.py`` holds the classes that opt in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stashworks import CloseableStash, Stash, StashKeyError

#: What a readable stash holds: ``None`` and falsy values are ordinary values.
ITEMS: dict[str, Any] = {
    'a': 1,
    'none': None,
    'zero': 0,
    'empty': '',
    'false': False,
    'nested': {'x': [1, 'two', (3.0, None)]},
}

#: Keys that are awkward for a file name, a DBM key or a URL; every stash
#: stores them as ordinary keys.
ODD_KEYS = ['', '.', '..', '../x', '/etc/passwd', 'a/b', ' ', '\n', '%', '%41', '~', 'é', 'e\u0301', '日本', '\x00']

NON_STR_KEYS = [1, None, b'a', ('a',), 1.5]


def close(stash: Stash) -> None:
    if isinstance(stash, CloseableStash):
        stash.close()


class ReadContract:
    """Reading a stash that holds :data:`ITEMS`."""

    def make_readable(self, tmp_path: Path, items: dict[str, Any]) -> Stash:
        """Return a stash holding exactly ``items``."""
        raise NotImplementedError

    @pytest.fixture
    def filled(self, tmp_path: Path):
        stash = self.make_readable(tmp_path, dict(ITEMS))
        yield stash
        close(stash)

    def test_load_returns_each_stored_value(self, filled: Stash) -> None:
        assert {key: filled.load(key) for key in ITEMS} == ITEMS

    def test_getitem_returns_the_stored_value(self, filled: Stash) -> None:
        assert filled['nested'] == ITEMS['nested']

    def test_load_of_a_missing_key_raises_key_error(self, filled: Stash) -> None:
        with pytest.raises(KeyError):
            filled.load('missing')

    def test_missing_key_error_is_a_stash_key_error_naming_the_key(self, filled: Stash) -> None:
        with pytest.raises(StashKeyError, match='missing'):
            filled.load('missing')

    def test_getitem_of_a_missing_key_raises_key_error(self, filled: Stash) -> None:
        with pytest.raises(KeyError):
            filled['missing']

    def test_get_of_a_missing_key_returns_the_default(self, filled: Stash) -> None:
        assert filled.get('missing', 'default') == 'default'

    def test_get_of_a_missing_key_returns_none_without_a_default(self, filled: Stash) -> None:
        assert filled.get('missing') is None

    def test_get_of_a_stored_none_returns_none_not_the_default(self, filled: Stash) -> None:
        assert filled.get('none', 'default') is None

    def test_get_of_a_stored_falsy_value_returns_it(self, filled: Stash) -> None:
        assert filled.get('zero', 'default') == 0

    def test_keys_lists_every_item_once(self, filled: Stash) -> None:
        keys = list(filled.keys())
        assert sorted(keys) == sorted(ITEMS)

    def test_len_counts_the_items(self, filled: Stash) -> None:
        assert len(filled) == len(ITEMS)

    def test_in_is_true_for_every_stored_key(self, filled: Stash) -> None:
        assert all(key in filled for key in ITEMS)

    def test_in_is_false_for_a_missing_key(self, filled: Stash) -> None:
        assert 'missing' not in filled

    @pytest.mark.parametrize('key', NON_STR_KEYS, ids=repr)
    def test_in_is_false_for_a_non_str_key(self, filled: Stash, key: Any) -> None:
        assert key not in filled

    def test_exists_is_true_for_a_stored_none(self, filled: Stash) -> None:
        assert filled.exists('none')

    def test_exists_is_false_for_a_missing_key(self, filled: Stash) -> None:
        assert not filled.exists('missing')

    def test_iteration_yields_key_value_pairs(self, filled: Stash) -> None:
        pairs = list(filled)
        assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in pairs)
        assert dict(pairs) == ITEMS
        assert len(pairs) == len(ITEMS)

    def test_items_yields_key_value_pairs(self, filled: Stash) -> None:
        assert dict(filled.items()) == ITEMS

    def test_values_follow_keys_order(self, filled: Stash) -> None:
        assert list(filled.values()) == [ITEMS[key] for key in filled.keys()]  # noqa: SIM118

    def test_a_stash_is_truthy(self, filled: Stash) -> None:
        assert filled


class StashContract(ReadContract):
    """Reading and writing (CRUD) a stash."""

    def make_stash(self, tmp_path: Path) -> Stash:
        """Return a new, empty stash."""
        raise NotImplementedError

    def make_readable(self, tmp_path: Path, items: dict[str, Any]) -> Stash:
        stash = self.make_stash(tmp_path)
        for key, value in items.items():
            stash.dump(key, value)
        return stash

    @pytest.fixture
    def stash(self, tmp_path: Path):
        stash = self.make_stash(tmp_path)
        yield stash
        close(stash)

    def test_a_new_stash_is_empty(self, stash: Stash) -> None:
        assert (list(stash.keys()), len(stash), list(stash)) == ([], 0, [])

    def test_an_empty_stash_is_truthy(self, stash: Stash) -> None:
        assert stash

    def test_dump_then_load_returns_the_value(self, stash: Stash) -> None:
        stash.dump('k', {'v': [1, 2]})
        assert stash.load('k') == {'v': [1, 2]}

    def test_setitem_then_getitem_returns_the_value(self, stash: Stash) -> None:
        stash['k'] = 'v'
        assert stash['k'] == 'v'

    def test_dump_many_stores_each_item_the_last_of_a_key_winning(self, stash: Stash) -> None:
        stash.dump_many([('a', 1), ('b', None), ('a', 3), ('c', {'v': [2]})])
        stash.flush()
        stored = list(stash.keys())
        assert {k: stash.load(k) for k in stored} == {'a': 3, 'b': None, 'c': {'v': [2]}}

    def test_dump_many_in_a_group_is_visible_after_flush(self, stash: Stash) -> None:
        stash.begin_group()
        stash.dump_many([(f'k{i}', i) for i in range(50)])
        stash.dump_many([])
        stash.flush()
        assert sorted(stash.keys()) == sorted(f'k{i}' for i in range(50))
        assert stash.load('k49') == 49

    def test_dump_replaces_the_previous_value(self, stash: Stash) -> None:
        stash.dump('k', 1)
        stash.dump('k', 2)
        assert (stash.load('k'), len(stash)) == (2, 1)

    def test_none_is_a_storable_value(self, stash: Stash) -> None:
        stash.dump('k', None)
        assert (stash.load('k'), 'k' in stash, len(stash), list(stash)) == (None, True, 1, [('k', None)])

    @pytest.mark.parametrize('value', [0, '', [], {}, False, b''], ids=repr)
    def test_falsy_values_are_stored(self, stash: Stash, value: Any) -> None:
        stash.dump('k', value)
        assert stash.load('k') == value
        assert type(stash.load('k')) is type(value)

    def test_a_missing_key_is_not_in_an_empty_stash(self, stash: Stash) -> None:
        assert ('k' in stash, stash.exists('k'), stash.get('k', 'd')) == (False, False, 'd')

    def test_load_of_a_missing_key_in_an_empty_stash_raises_key_error(self, stash: Stash) -> None:
        with pytest.raises(KeyError):
            stash.load('k')

    def test_delete_removes_the_item(self, stash: Stash) -> None:
        stash.dump('k', 1)
        stash.dump('other', 2)
        stash.delete('k')
        assert ('k' in stash, list(stash.keys()), len(stash)) == (False, ['other'], 1)

    def test_delete_of_a_missing_key_is_not_an_error(self, stash: Stash) -> None:
        stash.delete('missing')
        assert len(stash) == 0

    def test_del_removes_the_item(self, stash: Stash) -> None:
        stash['k'] = None
        del stash['k']
        assert 'k' not in stash

    def test_del_of_a_missing_key_raises_key_error(self, stash: Stash) -> None:
        with pytest.raises(KeyError):
            del stash['missing']

    def test_load_after_delete_raises_key_error(self, stash: Stash) -> None:
        stash.dump('k', 1)
        stash.delete('k')
        with pytest.raises(KeyError):
            stash.load('k')

    def test_clear_removes_every_item(self, stash: Stash) -> None:
        for i in range(5):
            stash.dump(str(i), i)
        stash.clear()
        assert (list(stash.keys()), len(stash), '0' in stash) == ([], 0, False)

    def test_clear_of_an_empty_stash_is_not_an_error(self, stash: Stash) -> None:
        stash.clear()
        assert len(stash) == 0

    def test_a_stash_is_usable_after_clear(self, stash: Stash) -> None:
        stash.dump('k', 1)
        stash.clear()
        stash.dump('k', 2)
        assert stash.load('k') == 2

    def test_keys_lists_each_key_once_after_overwrites(self, stash: Stash) -> None:
        for value in range(3):
            stash.dump('a', value)
            stash.dump('b', value)
        assert sorted(stash.keys()) == ['a', 'b']

    @pytest.mark.parametrize('key', NON_STR_KEYS, ids=repr)
    def test_dump_of_a_non_str_key_raises_type_error(self, stash: Stash, key: Any) -> None:
        with pytest.raises(TypeError):
            stash.dump(key, 1)
        assert len(stash) == 0

    def test_odd_str_keys_round_trip(self, stash: Stash) -> None:
        for i, key in enumerate(ODD_KEYS):
            stash.dump(key, i)
        assert sorted(stash.keys()) == sorted(ODD_KEYS)
        assert {key: stash.load(key) for key in ODD_KEYS} == {key: i for i, key in enumerate(ODD_KEYS)}

    def test_many_items_round_trip(self, stash: Stash) -> None:
        expected = {f'key-{i}': i * i for i in range(50)}
        for key, value in expected.items():
            stash[key] = value
        assert dict(stash) == expected


class PersistentStashContract(StashContract):
    """CRUD on a stash whose items outlive the stash object."""

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        """Return a new stash object over the storage of ``stash`` (closing it first if needed)."""
        raise NotImplementedError

    def test_items_survive_reopening(self, stash: Stash, tmp_path: Path) -> None:
        stash.dump('k', None)
        stash.dump('j', [1])
        again = self.reopen(stash, tmp_path)
        try:
            assert dict(again) == {'k': None, 'j': [1]}
        finally:
            close(again)

    def test_a_delete_survives_reopening(self, stash: Stash, tmp_path: Path) -> None:
        stash.dump('k', 1)
        stash.dump('j', 2)
        stash.delete('k')
        again = self.reopen(stash, tmp_path)
        try:
            assert list(again.keys()) == ['j']
        finally:
            close(again)
