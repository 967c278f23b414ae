"""The driver's own modules, found in a pickled job and installed where they are missing."""

from __future__ import annotations

import json
import pickle
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import dill
import pytest

from stashworks.multi.shipping import ModuleInstaller, find_modules


@pytest.fixture
def driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder on this process's path with a module, a helper it imports, and a package."""
    tag = uuid.uuid4().hex[:8]
    folder = tmp_path / 'driver'
    (folder / f'pkg_{tag}').mkdir(parents=True)
    (folder / f'helper_{tag}.py').write_text('def double(key):\n    return key * 2\n')
    (folder / f'mod_{tag}.py').write_text(
        f'import helper_{tag}\n\ndef compute(key):\n    return helper_{tag}.double(key)\n'
    )
    (folder / f'pkg_{tag}' / '__init__.py').write_text('from .sub import name\n')
    (folder / f'pkg_{tag}' / 'sub.py').write_text('def name(key):\n    return key.upper()\n')
    monkeypatch.syspath_prepend(str(folder))
    try:
        yield folder, tag
    finally:
        for name in list(sys.modules):
            if name.endswith(tag) or f'{tag}.' in name:
                del sys.modules[name]


def _import(name: str) -> Any:
    return __import__(name, fromlist=['_'])


def test_the_modules_a_job_names_and_the_modules_they_use_are_found(driver: tuple[Path, str]) -> None:
    _, tag = driver
    mod, pkg = _import(f'mod_{tag}'), _import(f'pkg_{tag}')
    job = dill.dumps((mod.compute, pkg.name, json.dumps), recurse=True)

    found = {m.name: dict(m.files) for m in find_modules(job)}

    assert set(found) == {f'mod_{tag}', f'helper_{tag}', f'pkg_{tag}'}
    assert set(found[f'pkg_{tag}']) == {f'pkg_{tag}/__init__.py', f'pkg_{tag}/sub.py'}
    assert found[f'helper_{tag}'][f'helper_{tag}.py'].startswith(b'def double')


def test_libraries_and_stashworks_are_never_shipped() -> None:
    import stashworks

    job = pickle.dumps((json.dumps, stashworks.DirectoryStash, pytest.fixture))

    assert find_modules(job) == ()


def test_the_installer_adds_only_missing_modules_and_removes_them_again(
    driver: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, tag = driver
    mod = _import(f'mod_{tag}')
    shipped = find_modules(dill.dumps(mod.compute))
    # Now be a worker that has the helper but not the module itself.
    for name in (f'mod_{tag}', f'helper_{tag}'):
        sys.modules.pop(name, None)
    sys.path.remove(str(folder))
    elsewhere = tmp_path / 'worker-has'
    elsewhere.mkdir()
    (elsewhere / f'helper_{tag}.py').write_text('def double(key):\n    return "own copy"\n')
    monkeypatch.syspath_prepend(str(elsewhere))
    installer = ModuleInstaller(shipped, tmp_path / 'scratch')

    installer.install()
    try:
        assert installer.installed == [f'mod_{tag}']
        assert _import(f'mod_{tag}').compute('k') == 'own copy'
    finally:
        installer.uninstall()

    assert f'mod_{tag}' not in sys.modules
    assert not any('stashworks-modules-' in p for p in sys.path)
    assert not (tmp_path / 'scratch').exists() or not any((tmp_path / 'scratch').iterdir())
