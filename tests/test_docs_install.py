"""Every install command in the docs works from a checkout, as the README's does.

stashworks is not on PyPI yet, so ``pip install stashworks`` fails; a page
may name it only as what the command will be once published.  (``.ci/run``
installs from the checkout the way the README says.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]

# `pip install X` up to a shell separator or a comment.
_PIP = re.compile(r"pip install\s+((?:-e\s+)?'?[^\s;&#|']+'?)")


def _installs() -> list[tuple[str, int, str, str]]:
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding='utf-8').splitlines(), 1):
            for match in _PIP.finditer(line):
                target = match.group(1).removeprefix('-e').strip().strip("'")
                found.append((page.name, number, target, line))
    return found


def test_the_docs_have_install_commands() -> None:
    pages = {page for page, *_ in _installs()}
    assert {'README.md', 'cli.md', 'cluster.md', 'quickstart.md'} <= pages


@pytest.mark.parametrize(('page', 'number', 'target', 'line'), _installs(), ids=lambda v: str(v)[:40])
def test_every_install_command_works_from_a_checkout(page: str, number: int, target: str, line: str) -> None:
    from_checkout = target == '.' or target.startswith('.[')
    if not from_checkout:
        # Only as the command for after publication, and said so on the line.
        assert 'once published' in line.lower() or 'once it is published' in line.lower(), f'{page}:{number}: {line}'
