"""The code fingerprint: what changes it and what does not.

Every case writes real module files to a temporary folder and computes the
fingerprint in a fresh interpreter (with its own ``PYTHONHASHSEED``), so
agreement means agreement across runs, not within one process.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from stashworks.multi.fingerprint import fingerprint

BASE = {
    'helpers.py': """
        FACTOR = 10

        def helper(x):
            return x * FACTOR

        class Scaler:
            def __init__(self, n):
                self.n = n

            def apply(self, x):
                return x * self.n
    """,
    'job.py': '''
        """The job module."""
        import json

        import helpers
        from helpers import Scaler, helper

        OFFSET = 5
        UNUSED = 'not read by make_item'
        TABLE = {'b': {3, 2, 'x'}, 'a': (1, 2.5)}

        def make_item(key):
            """Compute one item."""
            # a comment
            total = helper(len(key)) + OFFSET + helpers.helper(1)
            return json.dumps([total, Scaler(2).apply(3), sorted(TABLE['b'], key=str), 7])

        def make_factory(scale):
            def factory(key):
                return len(key) * scale
            return factory

        def countdown(n):
            return 0 if n <= 0 else countdown(n - 1)
    ''',
}

# name -> expression evaluated after ``import job`` in the fresh interpreter
TARGETS = {
    'item': 'job.make_item',
    'closure': 'job.make_factory(3)',
    'recursive': 'job.countdown',
}


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip(), encoding='utf-8')


def fingerprints_in_fresh_interpreter(
    folder: Path, targets: dict[str, str], seed: str = '0', setup: str = 'import job'
) -> dict[str, str]:
    script = '\n'.join(
        [
            'import json, sys',
            f'sys.path.insert(0, {str(folder)!r})',
            setup,
            'from stashworks.multi.fingerprint import fingerprint',
            f'targets = {targets!r}',
            'print(json.dumps({name: fingerprint(eval(expr)) for name, expr in targets.items()}))',
        ]
    )
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONDONTWRITEBYTECODE='1')
    out = subprocess.run(
        [sys.executable, '-c', script], env=env, cwd=folder, capture_output=True, text=True, timeout=60, check=True
    )
    return dict(json.loads(out.stdout))


def variant(tmp_path: Path, name: str, edits: dict[str, tuple[str, str]]) -> Path:
    """A copy of BASE with ``old -> new`` text replaced in the named files."""
    files = {k: textwrap.dedent(v).lstrip() for k, v in BASE.items()}
    for filename, (old, new) in edits.items():
        assert old in files[filename], f'{old!r} not in {filename}'
        files[filename] = files[filename].replace(old, new)
    folder = tmp_path / name
    write(folder, files)
    return folder


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    return fingerprints_in_fresh_interpreter(variant(tmp_path, 'base', {}), TARGETS, seed='1')


def test_two_interpreter_runs_with_other_hash_seeds_agree(tmp_path: Path, base: dict[str, str]) -> None:
    again = fingerprints_in_fresh_interpreter(variant(tmp_path, 'again', {}), TARGETS, seed='4242')
    assert again == base
    assert len(set(base.values())) == len(base)


@pytest.mark.parametrize(
    'name, edits',
    [
        ('comment', {'job.py': ('# a comment', '# another comment, longer')}),
        ('docstring', {'job.py': ('"""Compute one item."""', '"""Compute one item, documented better."""')}),
        ('line-shift', {'job.py': ('OFFSET = 5\n', '\n\n\n# new lines above\nOFFSET = 5\n')}),
        ('module-docstring', {'job.py': ('"""The job module."""', '"""The job module.\n\nMore."""')}),
        ('helper-comment', {'helpers.py': ('def helper(x):\n', '# helper below\n\ndef helper(x):\n')}),
        ('unread-global', {'job.py': ("UNUSED = 'not read by make_item'", "UNUSED = 'changed'")}),
    ],
)
def test_edits_that_do_not_change_the_computation_keep_the_fingerprint(
    tmp_path: Path, base: dict[str, str], name: str, edits: dict[str, tuple[str, str]]
) -> None:
    assert fingerprints_in_fresh_interpreter(variant(tmp_path, name, edits), TARGETS) == base


@pytest.mark.parametrize(
    'name, edits',
    [
        ('constant', {'job.py': ('Scaler(2).apply(3), sorted', 'Scaler(2).apply(4), sorted')}),
        ('literal-in-list', {'job.py': ('key=str), 7])', 'key=str), 8])')}),
        ('module-value', {'job.py': ('OFFSET = 5', 'OFFSET = 6')}),
        ('module-set-value', {'job.py': ("{3, 2, 'x'}", "{3, 2, 'y'}")}),
        ('helper-function', {'helpers.py': ('return x * FACTOR', 'return x * FACTOR + 1')}),
        ('helper-module-value', {'helpers.py': ('FACTOR = 10', 'FACTOR = 11')}),
        ('user-class-method', {'helpers.py': ('return x * self.n', 'return x * self.n - 1')}),
    ],
)
def test_edits_that_change_the_computation_change_the_fingerprint(
    tmp_path: Path, base: dict[str, str], name: str, edits: dict[str, tuple[str, str]]
) -> None:
    changed = fingerprints_in_fresh_interpreter(variant(tmp_path, name, edits), TARGETS)
    assert changed['item'] != base['item']
    # The other targets do not read what changed.
    assert changed['recursive'] == base['recursive']


def test_a_changed_closure_value_changes_the_fingerprint(tmp_path: Path) -> None:
    folder = variant(tmp_path, 'closure', {})
    fps = fingerprints_in_fresh_interpreter(
        folder, {'three': 'job.make_factory(3)', 'three-again': 'job.make_factory(3)', 'four': 'job.make_factory(4)'}
    )
    assert fps['three'] == fps['three-again']
    assert fps['three'] != fps['four']


PROCESS_STASH = """
    from stashworks import MultiProcessStash

    LIMIT = 100

    class Tokens(MultiProcessStash):
        def __init__(self, delegate, scale=1):
            super().__init__(delegate)
            self.scale = scale
            self.label = 'not read'

        def _create_data(self):
            return range(10)

        def _process(self, chunk):
            for unit in chunk:
                yield str(unit), self._tokens(unit)

        def _tokens(self, unit):
            return [unit * self.scale] * min(unit, LIMIT)
"""


@pytest.mark.parametrize(
    'name, old, new, changes',
    [
        ('same', '', '', False),
        ('create-data', 'return range(10)', 'return range(20)', False),
        ('process-helper-method', '[unit * self.scale]', '[unit * self.scale + 1]', True),
        ('module-value-of-helper', 'LIMIT = 100', 'LIMIT = 50', True),
        ('process-body', 'yield str(unit), self', 'yield str(unit + 1), self', True),
    ],
)
def test_process_of_a_subclass(tmp_path: Path, name: str, old: str, new: str, changes: bool) -> None:
    targets = {'fp': "fingerprint_of(stash_mod.Tokens(DirectoryStash('out')))"}
    setup = textwrap.dedent(
        """
        import stash_mod
        from stashworks import DirectoryStash
        from stashworks.multi.fingerprint import fingerprint
        def fingerprint_of(stash):
            return fingerprint(stash._process, ignore=('_create_data',))
        """
    )
    base_dir, other_dir = tmp_path / 'base', tmp_path / name
    write(base_dir, {'stash_mod.py': PROCESS_STASH})
    text = textwrap.dedent(PROCESS_STASH)
    write(other_dir, {'stash_mod.py': text.replace(old, new) if old else text})
    before = fingerprints_in_fresh_interpreter(base_dir, targets, setup=setup)
    after = fingerprints_in_fresh_interpreter(other_dir, targets, setup=setup, seed='77')
    assert (before != after) is changes


def test_instance_state_is_configuration_not_code(tmp_path: Path) -> None:
    write(tmp_path, {'stash_mod.py': PROCESS_STASH})
    sys.path.insert(0, str(tmp_path))
    try:
        import stash_mod

        from stashworks import DirectoryStash

        def fp(stash: Any) -> str:
            return fingerprint(stash._process, ignore=('_create_data',))

        one = stash_mod.Tokens(DirectoryStash(tmp_path / 'a'), scale=1)
        two = stash_mod.Tokens(DirectoryStash(tmp_path / 'b'), scale=2)
        relabelled = stash_mod.Tokens(DirectoryStash(tmp_path / 'c'), scale=1)
        relabelled.label = 'another label'
        relabelled.workers = 7
        # Other folders, options and attribute values: the same code (a
        # value that changes results is what version= is for).
        assert fp(one) == fp(two) == fp(relabelled)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop('stash_mod', None)


def test_recursion_and_mutual_references_terminate(base: dict[str, str]) -> None:
    assert len(base['recursive']) == 16


class _Holder:
    lock = threading.Lock()

    def __call__(self, key: str) -> int:
        with self.lock:
            return len(key)


def test_an_unpicklable_value_is_named_by_its_type() -> None:
    # A lock cannot be pickled: the fingerprint falls back to its type and
    # stays the same for another lock.
    first = fingerprint(_Holder())
    _Holder.lock = threading.Lock()
    assert fingerprint(_Holder()) == first


def test_a_callable_object_counts_its_class_code_not_its_state() -> None:
    class Mul:
        def __init__(self, n: int) -> None:
            self.n = n

        def __call__(self, key: str) -> int:
            return len(key) * self.n

    class Add(Mul):
        def __call__(self, key: str) -> int:
            return len(key) + self.n

    assert fingerprint(Mul(2)) == fingerprint(Mul(3))
    assert fingerprint(Mul(2)) != fingerprint(Add(2))


def test_partial_and_lambda() -> None:
    def f(key: str, n: int) -> int:
        return len(key) * n

    assert fingerprint(functools.partial(f, n=2)) != fingerprint(functools.partial(f, n=3))
    assert fingerprint(lambda k: k + 'a') != fingerprint(lambda k: k + 'b')
    assert fingerprint(lambda k: k + 'a') == fingerprint(lambda k: k + 'a')


def test_library_functions_are_named_not_walked() -> None:
    # json.dumps is read by name (and by the package version where one
    # exists), so the walk does not descend into the standard library.
    def uses_json(key: str) -> str:
        return json.dumps(key)

    def uses_repr(key: str) -> str:
        return json.dumps(key)

    assert fingerprint(uses_json) == fingerprint(uses_repr)


def test_the_source_file_path_does_not_count(tmp_path: Path) -> None:
    one = fingerprints_in_fresh_interpreter(variant(tmp_path, 'here', {}), TARGETS)
    two = fingerprints_in_fresh_interpreter(variant(tmp_path / 'deeper' / 'path', 'there', {}), TARGETS)
    assert one == two


class Pickled:
    def __call__(self, key: str) -> str:
        return key


def test_pickling_an_instance_does_not_change_its_class_fingerprint() -> None:
    # copyreg caches __slotnames__ on a class the first time one of its
    # instances is pickled: a batch does that when it sends the factory.
    before = fingerprint(Pickled())
    pickle.dumps(Pickled())
    assert '__slotnames__' in vars(Pickled)
    assert fingerprint(Pickled()) == before


class Broken:
    """A global whose attribute lookup fails as a proxy to something closed would."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f'closed: no {name}')

    def __reduce__(self) -> Any:
        raise RuntimeError('closed')


BROKEN = Broken()


def uses_broken(key: str) -> Any:
    return BROKEN, key


def test_a_value_that_cannot_even_be_inspected_is_named_by_its_type() -> None:
    assert fingerprint(uses_broken) == fingerprint(uses_broken)
