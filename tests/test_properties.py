"""Property tests: stashes behave like a ``dict`` over random operations and keys."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from stashworks import CloseableStash, DictionaryStash, DirectoryStash, ShelveStash, Stash
from stashworks._atomic import is_temp_name
from stashworks.directory import decode_name, encode_key

SPECIAL_KEYS = ['', '.', '..', '/', '../x', 'a/b', '~', '%', '%2F', 'é', 'e\u0301', '\n', ' ', 'x' * 300]

#: Any text, plus the keys most likely to break a file name.
keys = st.one_of(st.sampled_from(SPECIAL_KEYS), st.text(max_size=20), st.text(max_size=300))
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.lists(st.integers(), max_size=3),
)

STATEFUL = settings(max_examples=60, stateful_step_count=40, deadline=None)


class StashAgainstDict(RuleBasedStateMachine):
    """Applies the same operations to a stash and to a ``dict`` and compares."""

    def make_stash(self, path: Path) -> Stash:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix='sw-prop-'))
        self.stash = self.make_stash(self.dir / 'stash')
        self.model: dict[str, Any] = {}

    def teardown(self) -> None:
        if isinstance(self.stash, CloseableStash):
            self.stash.close()
        shutil.rmtree(self.dir)

    known = Bundle('known')

    @initialize()
    def start_empty(self) -> None:
        assert len(self.stash) == 0

    @rule(target=known, key=keys, value=values)
    def dump(self, key: str, value: Any) -> str:
        self.stash.dump(key, value)
        self.model[key] = value
        return key

    @rule(pairs=st.lists(st.tuples(keys, values), max_size=6))
    def dump_many(self, pairs: list[tuple[str, Any]]) -> None:
        self.stash.dump_many(pairs)
        self.model.update(pairs)

    @rule(key=known, value=values)
    def overwrite(self, key: str, value: Any) -> None:
        self.stash[key] = value
        self.model[key] = value

    @rule(key=st.one_of(known, keys))
    def load(self, key: str) -> None:
        if key in self.model:
            assert self.stash.load(key) == self.model[key]
        else:
            with pytest.raises(KeyError):
                self.stash.load(key)

    @rule(key=st.one_of(known, keys))
    def get(self, key: str) -> None:
        assert self.stash.get(key, MISSING_DEFAULT) == self.model.get(key, MISSING_DEFAULT)

    @rule(key=st.one_of(known, keys))
    def delete(self, key: str) -> None:
        self.stash.delete(key)
        self.model.pop(key, None)

    @rule(key=st.one_of(known, keys))
    def del_item(self, key: str) -> None:
        if key in self.model:
            del self.stash[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.stash[key]

    @rule()
    def clear(self) -> None:
        self.stash.clear()
        self.model.clear()

    @invariant()
    def same_keys(self) -> None:
        assert sorted(self.stash.keys()) == sorted(self.model)

    @invariant()
    def same_length(self) -> None:
        assert len(self.stash) == len(self.model)

    @invariant()
    def same_membership(self) -> None:
        assert all(key in self.stash for key in self.model)


MISSING_DEFAULT = object()


class DirectoryAgainstDict(StashAgainstDict):
    def make_stash(self, path: Path) -> Stash:
        return DirectoryStash(path)

    @invariant()
    def no_temp_files_and_nothing_outside(self) -> None:
        assert [p.name for p in self.dir.iterdir()] in ([], ['stash'])
        path = self.dir / 'stash'
        if path.is_dir():
            assert not any(is_temp_name(p.name) for p in path.iterdir())


class DictionaryAgainstDict(StashAgainstDict):
    def make_stash(self, path: Path) -> Stash:
        return DictionaryStash()


class ShelveAgainstDict(StashAgainstDict):
    def make_stash(self, path: Path) -> Stash:
        return ShelveStash(path)


TestDirectoryAgainstDict = DirectoryAgainstDict.TestCase
TestDirectoryAgainstDict.settings = STATEFUL
TestDictionaryAgainstDict = DictionaryAgainstDict.TestCase
TestDictionaryAgainstDict.settings = STATEFUL
TestShelveAgainstDict = ShelveAgainstDict.TestCase
TestShelveAgainstDict.settings = STATEFUL


# -- key encoding ----------------------------------------------------------

#: Every code point, lone surrogates included.
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_encoded_key_decodes_back_exactly(key: str) -> None:
    assert decode_name(encode_key(key)) == key


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_encoded_key_is_a_safe_file_name(key: str) -> None:
    name = encode_key(key)
    assert '/' not in name and '\x00' not in name
    assert not name.startswith('.') and name not in ('', '.', '..')
    assert not is_temp_name(name) and not is_temp_name(name + '.dat')


@settings(max_examples=300, deadline=None)
@given(any_text, any_text)
def test_different_keys_encode_differently(a: str, b: str) -> None:
    if a != b:
        assert encode_key(a) != encode_key(b)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=400), value=values)
def test_any_key_round_trips_through_a_directory(tmp_path: Path, key: str, value: Any) -> None:
    stash = DirectoryStash(tmp_path / 'stash')
    stash.clear()
    stash.dump(key, value)
    assert (stash.keys(), stash.load(key)) == ([key], value)


# -- case-folding file systems ---------------------------------------------


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_a_folded_key_decodes_back_exactly(key: str) -> None:
    assert decode_name(encode_key(key, fold=True), fold=True) == key


@settings(max_examples=300, deadline=None)
@given(any_text, any_text)
def test_different_keys_stay_different_names_when_case_is_ignored(a: str, b: str) -> None:
    # What a case-insensitive file system compares: the names with case folded.
    if a != b:
        assert encode_key(a, fold=True).casefold() != encode_key(b, fold=True).casefold()


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_a_folded_name_has_no_upper_case_letter_outside_escapes(key: str) -> None:
    first, *escaped = encode_key(key, fold=True).split('%')
    plain = first + ''.join(part[2:] for part in escaped)
    assert plain == plain.lower()
