"""MultiProcessStash subclasses declared the zensols way, as dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

from stashworks import DirectoryStash, MultiProcessStash


@dataclass
class Lengths(MultiProcessStash):
    # A field without a default, after the base's: zensols subclasses do this.
    words: list[str]
    suffix: str = field(default='')

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prepared = True

    def _create_data(self) -> Iterable[Any]:
        return list(self.words)

    def _process(self, chunk: list[Any]) -> Iterable[tuple[str, Any]]:
        for word in chunk:
            yield word, f'{len(word)}{self.suffix}'


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError('a configuration that cannot be pickled')


@pytest.mark.timeout(120)
def test_a_zensols_dataclass_subclass_runs_its_batch(tmp_path: Path) -> None:
    stash = Lengths(
        DirectoryStash(tmp_path / 'out'),
        ['a', 'bb', 'ccc'],
        suffix='!',
        config=Unpicklable(),
        name='lengths_stash',
        chunk_size=1,
        workers=2,
    )
    assert (stash.prepared, stash.chunk_size, stash.workers, stash.name) == (True, 1, 2, 'lengths_stash')
    assert dict(stash) == {'a': '1!', 'bb': '2!', 'ccc': '3!'}
    assert stash.last_result is not None and stash.last_result.computed == 3


def test_the_zensols_fields_default_like_stashworks(tmp_path: Path) -> None:
    stash = Lengths(DirectoryStash(tmp_path / 'out'), ['a'])
    assert (stash.chunk_size, stash.workers, stash.config, stash.name) == (0, 0, None, None)
    assert stash.settings.workers == 0


def test_a_bad_zensols_field_is_refused_like_the_keyword(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='chunk_size'):
        Lengths(DirectoryStash(tmp_path / 'out'), ['a'], chunk_size=-1)
