"""The seed's ``SomeClass`` example (``seed_example.txt``) runs and prints what the seed shows."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

SEED_EXAMPLE = Path(__file__).with_name('seed_example.txt')


def _example_source(test: doctest.DocTest) -> str:
    """The imports and the class of the example: everything before the first instance is made."""
    lines = []
    for example in test.examples:
        if example.source.startswith('inst = '):
            break
        lines.append(example.source)
    return '\n'.join(lines)


def test_seed_example_prints_what_the_seed_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = SEED_EXAMPLE.read_text()
    test = doctest.DocTestParser().get_doctest(text, {'__name__': 'example'}, 'seed_example', str(SEED_EXAMPLE), 0)
    # The seed's working directory holds the example's own source file.
    (tmp_path / 'example.py').write_text(_example_source(test))
    monkeypatch.chdir(tmp_path)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.REPORT_UDIFF)
    runner.run(test, out=report.append)
    assert runner.tries == 13  # every line of the seed session ran
    assert runner.failures == 0, ''.join(report)
