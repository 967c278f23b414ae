"""A batch run as its own process, for the tests that signal or kill it.

Usage: ``python batch_parent.py OUT MARKERS N SLEEP START_METHOD``.  Prints
``READY <pid>`` once the stash is built; exits 0 when the batch finished
and 130 after a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_jobs import Work, keys

from stashworks import DirectoryStash, MultiProcessFactoryStash


def main() -> int:
    out, markers, n, sleep, method = sys.argv[1:6]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stash = MultiProcessFactoryStash(
        DirectoryStash(out),
        factory=Work(Path(markers), sleep=float(sleep)),
        keys=keys(int(n)),
        workers=2,
        chunk_size=3,
        start_method=method,
        progress=False,
    )
    print(f'READY {os.getpid()}', flush=True)
    try:
        result = stash.prime()
    except KeyboardInterrupt:
        print('INTERRUPTED', flush=True)
        return 130
    print(f'DONE {result.computed} {result.failed}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
