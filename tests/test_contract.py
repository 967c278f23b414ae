"""Every stash opts into the contract suite of ``tests/contract.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contract import PersistentStashContract, ReadContract, StashContract, close
from stashworks import (
    CacheStash,
    DelegateStash,
    DictionaryStash,
    DillSerializer,
    DirectoryStash,
    FactoryStash,
    KeyLimitStash,
    OneShotFactoryStash,
    PreemptiveStash,
    PrimablePreemptiveStash,
    ShelveStash,
    SortedStash,
    Stash,
    UnionStash,
)


class TestDictionaryStash(StashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return DictionaryStash()


class TestDirectoryStash(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return DirectoryStash(tmp_path / 'stash')

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        return DirectoryStash(tmp_path / 'stash')


class TestDirectoryStashWithDill(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return DirectoryStash(tmp_path / 'stash', serializer=DillSerializer())

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        return DirectoryStash(tmp_path / 'stash', serializer=DillSerializer())


class TestShelveStash(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return ShelveStash(tmp_path / 'shelf' / 'db')

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        close(stash)
        return ShelveStash(tmp_path / 'shelf' / 'db')


class TestShelveStashWithWriteback(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return ShelveStash(tmp_path / 'db', writeback=True)

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        close(stash)
        return ShelveStash(tmp_path / 'db', writeback=True)


class TestCacheStash(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return CacheStash(delegate=DirectoryStash(tmp_path / 'stash'))

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        return CacheStash(delegate=DirectoryStash(tmp_path / 'stash'))


class TestFactoryStash(StashContract):
    # With enable_preemptive, keys() are the delegate's once it has data;
    # the empty factory contributes no keys of its own.
    def make_stash(self, tmp_path: Path) -> Stash:
        return FactoryStash(delegate=DictionaryStash(), factory=DictionaryStash(), enable_preemptive=True)


class TestDelegateStash(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return DelegateStash(DirectoryStash(tmp_path / 'stash'))

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        return DelegateStash(DirectoryStash(tmp_path / 'stash'))


class TestKeyLimitStash(StashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return KeyLimitStash(DictionaryStash(), limit=1000)


class TestSortedStash(StashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return SortedStash(DictionaryStash())


# IncrementKeyDirectoryStash holds numbered keys only (as in zensols), so
# the contract's named keys do not apply; tests/test_increment.py holds its
# contract with numbers.


class TestPreemptiveStash(StashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return PreemptiveStash(DictionaryStash())


class TestPrimablePreemptiveStash(PersistentStashContract):
    def make_stash(self, tmp_path: Path) -> Stash:
        return PrimablePreemptiveStash(DirectoryStash(tmp_path / 'stash'))

    def reopen(self, stash: Stash, tmp_path: Path) -> Stash:
        return PrimablePreemptiveStash(DirectoryStash(tmp_path / 'stash'))


class TestOneShotFactoryStash(StashContract):
    # A worker that produces nothing, so the stash starts empty.
    def make_stash(self, tmp_path: Path) -> Stash:
        return OneShotFactoryStash(worker=list, delegate=DictionaryStash())


class TestUnionStash(ReadContract):
    def make_readable(self, tmp_path: Path, items: dict[str, Any]) -> Stash:
        # Spread the items over three stashes, one key in two of them.
        keys = list(items)
        first = DictionaryStash({k: items[k] for k in keys[::2]})
        second = DirectoryStash(tmp_path / 'second')
        for k in keys[1::2]:
            second.dump(k, items[k])
        return UnionStash([first, second, DictionaryStash({keys[0]: items[keys[0]]})])


class TestFactoryStashReadingFromItsFactory(ReadContract):
    def make_readable(self, tmp_path: Path, items: dict[str, Any]) -> Stash:
        # Not preemptive: keys() stay the factory's while reads fill the delegate.
        return FactoryStash(
            delegate=DirectoryStash(tmp_path / 'stash'), factory=DictionaryStash(dict(items)), enable_preemptive=False
        )
