"""Count the lines, words and definitions of every ``.py`` file of the standard library.

A real, resumable preprocessing batch: each file is one item, computed in
parallel by worker processes and stored in a directory, one file per item.
Press Ctrl-C part-way and run it again: it computes only the files that
are still missing.  Files that cannot be read as UTF-8 (the standard
library ships a few on purpose) are recorded as failures, not crashes::

    python examples/resume_stdlib.py /tmp/stdlib-counts
    python examples/resume_stdlib.py /tmp/stdlib-counts --limit 200 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import sysconfig
import time
from pathlib import Path
from typing import Optional

from stashworks import DirectoryStash, MultiProcessFactoryStash


def stdlib_root() -> Path:
    """Where this Python's standard library lives."""
    return Path(sysconfig.get_paths()['stdlib'])


def source_keys(root: Path, limit: Optional[int] = None) -> list[str]:
    """The ``.py`` files under ``root`` (site-packages left out), as relative paths."""
    keys = sorted(str(p.relative_to(root)) for p in root.rglob('*.py') if 'site-packages' not in p.parts)
    return keys[:limit] if limit is not None else keys


class CountSource:
    """Computes one item: the counts of one source file.

    Args:
        root: the directory the keys are relative to.
        slow: extra seconds per file (to watch the progress bar, or to
            interrupt a short run part-way).
    """

    def __init__(self, root: Path, slow: float = 0.0) -> None:
        self.root = root
        self.slow = slow

    def __call__(self, key: str) -> dict[str, int]:
        # A file that is not UTF-8 raises here: the batch records the
        # failure and goes on.
        text = (self.root / key).read_bytes().decode('utf-8')
        if self.slow:
            time.sleep(self.slow)
        lines = text.splitlines()
        stripped = [line.lstrip() for line in lines]
        return {
            'lines': len(lines),
            'words': len(text.split()),
            'defs': sum(1 for line in stripped if line.startswith(('def ', 'async def '))),
            'classes': sum(1 for line in stripped if line.startswith('class ')),
        }


def main(argv: Optional[list[str]] = None) -> int:
    """Run the batch; 0 when it finished, 130 when it was interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', help='the directory for the results')
    parser.add_argument('--limit', type=int, default=None, help='only the first N files')
    parser.add_argument('--workers', type=float, default=0, help='0: every CPU, -1: all but one, 0.5: half')
    parser.add_argument('--slow', type=float, default=0.0, help='extra seconds per file')
    parser.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    args = parser.parse_args(argv)
    # Warnings (a worker that died, how to resume) show; the bar and its summary say the rest.
    logging.basicConfig(level=logging.WARNING, format='%(message)s')

    root = stdlib_root()
    workers = int(args.workers) if args.workers.is_integer() else args.workers
    stash = MultiProcessFactoryStash(
        DirectoryStash(args.out),
        factory=CountSource(root, args.slow),
        keys=source_keys(root, args.limit),
        workers=workers,
        progress=args.progress,
    )
    try:
        result = stash.prime()
    except KeyboardInterrupt:
        print(f'interrupted; run the same command again to resume: {stash.last_result}', file=sys.stderr)
        return 130
    print(f'batch: {result}')
    totals = {'lines': 0, 'words': 0, 'defs': 0, 'classes': 0}
    for _, counts in stash:
        for name, value in counts.items():
            totals[name] += value
    print(f'{len(stash)} files: ' + ', '.join(f'{value} {name}' for name, value in totals.items()))
    failures = stash.failures
    if len(failures):
        print(f'{len(failures)} files could not be read (see {args.out}/.stashworks/failures):')
        for key in sorted(failures.keys())[:5]:
            print(f'  {failures[key]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
