"""The demo job's pieces: listing a source tree and parsing one file into a record."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from stashworks import demo


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding='utf-8')
    return root


def test_source_files_are_sorted_relative_posix_paths(tmp_path: Path) -> None:
    _tree(tmp_path, {'b.py': '', 'a/z.py': '', 'a/b.py': '', 'notes.txt': ''})
    assert demo.source_files(tmp_path) == ['a/b.py', 'a/z.py', 'b.py']


def test_source_files_limit_keeps_the_first_n_in_order(tmp_path: Path) -> None:
    _tree(tmp_path, {'c.py': '', 'a.py': '', 'b.py': ''})
    assert demo.source_files(tmp_path, limit=2) == ['a.py', 'b.py']


def test_source_files_skip_site_packages_and_caches(tmp_path: Path) -> None:
    _tree(tmp_path, {'os.py': '', 'site-packages/x.py': '', 'dist-packages/y.py': '', '__pycache__/z.py': ''})
    assert demo.source_files(tmp_path) == ['os.py']


def test_source_files_of_a_missing_folder_raise_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match='missing'):
        demo.source_files(tmp_path / 'missing')


def test_stdlib_root_holds_the_standard_library() -> None:
    assert (demo.stdlib_root() / 'json' / '__init__.py').is_file()


def test_file_record_counts_lines_tokens_definitions_and_imports(tmp_path: Path) -> None:
    source = '"""Doc."""\nimport os.path\nfrom json import dumps\nfrom . import sibling\n\n# note\nclass A:\n'
    source += '    def f(self):\n        return 1\n\nasync def g():\n    pass\n'
    _tree(tmp_path, {'m.py': source})
    record = demo.file_record(tmp_path, 'm.py')
    assert record == {
        'path': 'm.py',
        'bytes': len(source.encode()),
        'lines': 12,
        'blank_lines': 2,
        'comment_lines': 1,
        'tokens': 31,
        'functions': 2,
        'classes': 1,
        'imports': ['json', 'os'],
        'docstring': True,
    }


def test_file_record_of_a_bad_syntax_file_raises_syntax_error(tmp_path: Path) -> None:
    _tree(tmp_path, {'bad.py': 'def (:\n'})
    with pytest.raises(SyntaxError):
        demo.file_record(tmp_path, 'bad.py')


def test_file_record_of_a_bad_encoding_declaration_raises_syntax_error(tmp_path: Path) -> None:
    (tmp_path / 'enc.py').write_bytes(b'# -*- coding: no-such-codec -*-\nx = 1\n')
    with pytest.raises(SyntaxError):
        demo.file_record(tmp_path, 'enc.py')


def test_recorder_is_picklable_and_reads_from_its_root(tmp_path: Path) -> None:
    _tree(tmp_path, {'m.py': 'x = 1\n'})
    func = pickle.loads(pickle.dumps(demo.recorder(tmp_path)))
    assert func('m.py')['lines'] == 1
