"""DirectoryStash's listing: the fast path for plain names lists exactly what the name-by-name path does."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashworks import DirectoryStash

#: Pieces of keys most likely to confuse a listing: dots, escapes,
#: long-key and temp-file marks, upper case, a character to escape.
PIECES = ['a', 'Z', '0', '.', '-', '_', '%', '%41', '%2E', '~', '~key', 'é', ' ', 'p-', 'x', '.dat', '.~sw-', '.tmp']
PATTERNS = ['{name}.dat', 'p-{name}.dat', '{name}', '.{name}.dat', 'x{name}', '{name}.dat.dat', '{name}x', '{name}.d~t']

stems = st.lists(st.sampled_from(PIECES), max_size=3).map(''.join)


def _reference(stash: DirectoryStash) -> list[str]:
    # The name-by-name path: every name matched, sliced and decoded on its own.
    return [key for _, key in stash._iter_names()]


def _check_listing(root: Path, pattern: str, fold: bool, files: list[str], folders: Sequence[str] = ()) -> None:
    for name in files:
        (root / name).write_bytes(b'')
    for name in folders:
        if name not in files:
            (root / name).mkdir()  # a folder named like an item is no item
    stash = DirectoryStash(root, pattern, case_insensitive=fold)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        expected = _reference(stash)
        assert stash.keys() == expected, files
        assert len(stash) == len(expected), files


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=st.sampled_from(PATTERNS),
    fold=st.booleans(),
    fitted=st.lists(stems, max_size=8),
    other=st.lists(stems, max_size=2),
    folders=st.lists(stems, max_size=2),
)
def test_keys_and_len_agree_with_the_name_by_name_listing(
    pattern: str, fold: bool, fitted: list[str], other: list[str], folders: list[str]
) -> None:
    # Mostly names made by the pattern (with any stem), a few made by another.
    files = {pattern.replace('{name}', stem) for stem in fitted}
    files |= {PATTERNS[len(stem) % len(PATTERNS)].replace('{name}', stem) for stem in other}
    files -= {'', '.', '..'}
    root = Path(tempfile.mkdtemp(prefix='sw-listing-'))
    try:
        _check_listing(root, pattern, fold, sorted(files), sorted({f'{stem}.dat' for stem in folders if stem}))
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize('pattern', PATTERNS)
@pytest.mark.parametrize('fold', [False, True])
@pytest.mark.parametrize('odd', ['', '.a', 'a b', 'é', '%41', 'A', '~' + '0' * 64, 'a.dat', '.~sw-1.tmp', '-'])
def test_one_odd_name_among_plain_ones_is_listed_as_the_name_by_name_path_lists_it(
    tmp_path: Path, pattern: str, fold: bool, odd: str
) -> None:
    plain = [pattern.replace('{name}', stem) for stem in ('a', 'b0', 'c.d')]
    weird = [pattern.replace('{name}', odd), odd, odd + '.dat', 'p-' + odd, 'x' + odd]
    files = sorted({*plain, *weird} - {'', '.', '..'})
    _check_listing(tmp_path, pattern, fold, files)
    # The folder's order is the file system's: each odd name first, in the
    # middle and last, through the same two paths as keys() takes.
    stash = DirectoryStash(tmp_path, pattern, case_insensitive=fold)
    for name in sorted(set(weird) - set(plain) - {'', '.', '..'}):
        for at in range(len(plain) + 1):
            names = [*plain[:at], name, *plain[at:]]
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                expected = [key for _, key in stash._iter_names(names)]
            fast = stash._plain_stems(names)
            if fast is not None:
                text, sep, count, _ = fast
                assert (text.split(sep)[:-1] if count else []) == expected, names


def test_a_listing_of_plain_names_with_a_temp_file_and_a_folder_lists_the_items_in_order(tmp_path: Path) -> None:
    stash: DirectoryStash[int] = DirectoryStash(tmp_path)
    for n in range(50):
        stash.dump(f'unit-{n:03d}.0', n)
    (tmp_path / '.~sw-abandoned1.tmp').write_bytes(b'')
    (tmp_path / 'sub.dat').mkdir()
    listed = [name[: -len('.dat')] for name in os.listdir(tmp_path) if name.endswith('.dat') and name != 'sub.dat']
    assert stash.keys() == listed
    assert sorted(stash.keys()) == [f'unit-{n:03d}.0' for n in range(50)]
    assert len(stash) == 50
