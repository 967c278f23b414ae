"""The package has no import cycle, and no import is hidden to pretend otherwise.

Every import counts here, also one under ``if TYPE_CHECKING:`` and one
inside a function: if turning them all into plain top-level imports makes
no cycle, none of them hides one.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / 'src'
PACKAGE = 'stashworks'


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports, anywhere in it."""
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[: len(base) - (node.level - 1)]
                prefix = '.'.join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ''
            # ``from . import x`` may import the submodule x.
            targets = [prefix] + [f'{prefix}.{alias.name}' for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted((SRC / PACKAGE).rglob('*.py'))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, as a list of modules, or ``[]``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_package_has_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle == [], 'import cycle: ' + ' -> '.join(cycle)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': set()}) == []


def test_no_module_of_the_batch_layer_imports_under_type_checking() -> None:
    for path in sorted((SRC / PACKAGE / 'multi').glob('*.py')):
        assert 'TYPE_CHECKING' not in path.read_text(encoding='utf-8'), path.name


def test_the_wire_and_layout_modules_are_leaves_of_the_batch_layer() -> None:
    graph = _graph()
    for leaf in ('wire', 'layout'):
        inside = {m for m in graph[f'{PACKAGE}.multi.{leaf}'] if m.startswith(f'{PACKAGE}.multi')}
        assert inside == set(), (leaf, inside)


def test_the_job_module_does_not_import_the_stashes() -> None:
    assert f'{PACKAGE}.multi.stash' not in _graph()[f'{PACKAGE}.multi.job']
