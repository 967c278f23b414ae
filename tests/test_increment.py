"""IncrementKeyDirectoryStash: items numbered 1, 2, 3..."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from stashworks import IncrementKeyDirectoryStash


@pytest.fixture
def stash(tmp_path: Path) -> IncrementKeyDirectoryStash:
    return IncrementKeyDirectoryStash(tmp_path / 'stash')


def test_dump_of_a_value_alone_numbers_it_from_one(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump('first')
    stash.dump('second')
    assert sorted(stash.keys(), key=int) == ['1', '2']
    assert (stash.load('1'), stash.load('2')) == ('first', 'second')


def test_get_last_key_is_the_highest_number(stash: IncrementKeyDirectoryStash) -> None:
    for value in 'abc':
        stash.dump(value)
    assert stash.get_last_key() == '3'


def test_get_last_key_of_an_empty_stash_is_zero(stash: IncrementKeyDirectoryStash) -> None:
    assert stash.get_last_key() == '0'


def test_load_without_a_key_returns_the_last_item(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump('a')
    stash.dump('b')
    assert stash.load() == 'b'


def test_load_without_a_key_on_an_empty_stash_raises_key_error(stash: IncrementKeyDirectoryStash) -> None:
    with pytest.raises(KeyError):
        stash.load()


def test_a_none_value_alone_is_numbered(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump(None)
    assert (stash.get_last_key(), stash.load()) == ('1', None)


def test_dump_with_a_key_stores_under_that_key(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump('10', 'ten')
    stash.dump('5', None)
    assert (stash.load('5'), stash.get_last_key()) == (None, '10')


def test_numbering_continues_after_an_explicit_key(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump('x')
    stash.dump('7', 'seven')
    stash.dump('next')
    assert (stash.get_last_key(), stash.load()) == ('8', 'next')


def test_numbers_compare_as_integers_not_strings(stash: IncrementKeyDirectoryStash) -> None:
    for i in range(11):
        stash.dump(i)
    assert (stash.get_last_key(), stash.load()) == ('11', 10)


def test_numbering_continues_in_a_new_instance(tmp_path: Path) -> None:
    IncrementKeyDirectoryStash(tmp_path).dump('a')
    again = IncrementKeyDirectoryStash(tmp_path)
    again.dump('b')
    assert sorted(again.keys()) == ['1', '2']
    assert again.load() == 'b'


@pytest.mark.parametrize('key', ['name', '007', '-3', '+1', '1.0', '', '\u0661'], ids=repr)
def test_a_key_that_is_no_canonical_number_is_refused(stash: IncrementKeyDirectoryStash, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(key))):
        stash.dump(key, 1)
    assert (stash.get_last_key(), len(stash)) == ('0', 0)


def test_files_of_other_keys_in_the_folder_are_neither_listed_nor_counted(
    tmp_path: Path, stash: IncrementKeyDirectoryStash
) -> None:
    stash.dump('numbered')
    for name in ('data-name.dat', 'data-007.dat', 'data--3.dat'):
        (tmp_path / 'stash' / name).write_bytes(b'x')
    assert (stash.keys(), len(stash), stash.get_last_key()) == (['1'], 1, '1')
    assert (stash.exists('name'), stash.get('007', 'd')) == (False, 'd')


def test_deleting_the_last_item_makes_the_previous_one_last(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump('a')
    stash.dump('b')
    stash.delete('2')
    assert (stash.get_last_key(), stash.load()) == ('1', 'a')


def test_clear_restarts_numbering(stash: IncrementKeyDirectoryStash) -> None:
    stash.dump('a')
    stash.clear()
    stash.dump('b')
    assert stash.keys() == ['1']


def test_files_are_named_after_name(tmp_path: Path) -> None:
    stash = IncrementKeyDirectoryStash(tmp_path, name='run')
    stash.dump('a')
    assert os.listdir(tmp_path) == ['run-1.dat']
