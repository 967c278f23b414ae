"""The demo job: a small record for every ``.py`` file of a source tree.

``stashworks demo`` runs it over the running interpreter's standard
library, a corpus every Python installation has: a few thousand files,
each parsed with :mod:`tokenize` and :mod:`ast` into a record of counts
(lines, tokens, functions, classes, imports...).  The standard library
ships some files that do not parse on purpose (bad-syntax and
bad-encoding test data); those raise, and a batch records them as
failures.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import sysconfig
import token
import tokenize
from functools import partial
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ['stdlib_root', 'source_files', 'file_record', 'recorder']

logger = logging.getLogger(__name__)

#: Directories never descended into: installed third-party packages are
#: not the standard library, and caches hold no sources.
SKIP_DIRS = frozenset({'site-packages', 'dist-packages', '__pycache__'})

# Tokens that carry no code of their own: layout and bookkeeping.
_LAYOUT_TOKENS = frozenset(
    {token.ENCODING, token.ENDMARKER, token.NEWLINE, token.NL, token.INDENT, token.DEDENT, token.COMMENT}
)

PathLike = Union[str, 'os.PathLike[str]']


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()['stdlib'])


def source_files(root: PathLike, limit: int | None = None) -> list[str]:
    """The ``.py`` files under ``root``, as sorted ``/``-separated relative paths.

    The order is stable (sorted by path), so ``limit`` always picks the same
    files.  Directories named in :data:`SKIP_DIRS` are skipped.

    Args:
        root: the tree to list.
        limit: keep only the first ``limit`` files.

    Raises:
        NotADirectoryError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f'not a directory: {root}')
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in files if name.endswith('.py'))
    found.sort()
    return found if limit is None else found[:limit]


def _imports(tree: ast.AST) -> list[str]:
    """The top-level names of every module imported anywhere in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        # A relative import ('from . import x') names a sibling, not a module.
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return sorted(names)


def file_record(root: PathLike, key: str) -> dict[str, Any]:
    """Parse the file ``root/key`` and return its record.

    The record is a plain ``dict`` (readable without stashworks):
    ``path``, ``bytes``, ``lines``, ``blank_lines``, ``comment_lines``,
    ``tokens`` (code tokens, without layout and comments), ``functions``
    (including methods and ``async def``), ``classes``, ``imports``
    (sorted top-level module names) and ``docstring`` (whether the module
    has one).

    Raises:
        OSError: the file cannot be read.
        SyntaxError: the file does not parse, or declares a bad encoding.
        tokenize.TokenError: the file ends inside a statement.
    """
    path = Path(root) / key
    data = path.read_bytes()
    # Both work on bytes so each honours the file's encoding declaration.
    # The parser goes first: its SyntaxError names the file and line.
    tree = ast.parse(data, filename=str(path))
    tokens = list(tokenize.tokenize(io.BytesIO(data).readline))
    lines = data.splitlines()
    functions = classes = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions += 1
        elif isinstance(node, ast.ClassDef):
            classes += 1
    return {
        'path': key,
        'bytes': len(data),
        'lines': len(lines),
        'blank_lines': sum(1 for line in lines if not line.strip()),
        'comment_lines': len({tok.start[0] for tok in tokens if tok.type == token.COMMENT}),
        'tokens': sum(1 for tok in tokens if tok.type not in _LAYOUT_TOKENS),
        'functions': functions,
        'classes': classes,
        'imports': _imports(tree),
        'docstring': ast.get_docstring(tree) is not None,
    }


def recorder(root: PathLike) -> Callable[[str], dict[str, Any]]:
    """A picklable ``f(key) -> record`` for the files under ``root``."""
    return partial(file_record, str(root))
