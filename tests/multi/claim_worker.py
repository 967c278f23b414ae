"""A process that shares a pool of chunks with others through claims.

Run as ``python claim_worker.py <root> <name> [options]``.  The pool is
``--chunks`` chunks of ``--size`` keys, ``c<i>-<j>``.  Each key this
process computes leaves a marker ``<root>/markers/<key>.<pid>`` (so a key
computed twice has two) and a result ``<root>/done/<key>``.  At the end it
writes ``<root>/<name>.json``: what it computed, what it found done by
others, and when it claimed each chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'src'))

from stashworks.multi.claims import ClaimBook


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('root')
    ap.add_argument('name')
    ap.add_argument('--chunks', type=int, default=20)
    ap.add_argument('--size', type=int, default=5)
    ap.add_argument('--item-time', type=float, default=0.002)
    ap.add_argument('--heartbeat', type=float, default=0.2)
    ap.add_argument('--expiry', type=float, default=2.0)
    ap.add_argument('--hang-after', type=int, default=-1, help='claim this many chunks, then stop computing')
    ap.add_argument('--start-at', type=float, default=0.0, help='wait until this epoch time before claiming')
    args = ap.parse_args()

    root = Path(args.root)
    markers, done = root / 'markers', root / 'done'
    markers.mkdir(parents=True, exist_ok=True)
    done.mkdir(parents=True, exist_ok=True)

    def settled(key: str) -> bool | None:
        return True if (done / key).exists() else None

    book = ClaimBook(root / 'state', settled, heartbeat=args.heartbeat, expiry=args.expiry)
    book.open()
    (root / f'{args.name}.ready').write_text(book.run_id)
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    pool = [[f'c{i}-{j}' for j in range(args.size)] for i in range(args.chunks)]
    computed: list[str] = []
    others: list[str] = []
    claimed_at: dict[str, float] = {}
    deferred: list[str] = []
    made = 0

    def compute(keys: list[str]) -> None:
        for key in keys:
            (markers / f'{key}.{os.getpid()}').touch()
            time.sleep(args.item_time)
            (done / key).write_text('x')
            computed.append(key)
        book.settle(keys)

    # What is done is listed after open(), as the batch engine does.
    finished = set(os.listdir(done))
    others.extend(k for chunk in pool for k in chunk if k in finished)
    todo = [c for c in ([k for k in chunk if k not in finished] for chunk in pool) if c]
    while todo or deferred:
        if todo:
            chunk = todo.pop(0)
        else:
            polled = book.poll(deferred)
            others.extend(polled.done_elsewhere)
            deferred = polled.deferred
            chunk = polled.keys
            if not chunk:
                time.sleep(0.05)
                continue
        got = book.claim(chunk)
        others.extend(got.done_elsewhere)
        deferred.extend(got.deferred)
        if got.keys:
            made += 1
            for key in got.keys:
                claimed_at[key] = time.time()
            if made == args.hang_after:
                (root / f'{args.name}.holding').write_text(json.dumps(got.keys))
                while True:
                    time.sleep(1)
            compute(got.keys)
    book.close('finished')
    (root / f'{args.name}.json').write_text(
        json.dumps({'run': book.run_id, 'computed': computed, 'others': others, 'claimed_at': claimed_at})
    )


if __name__ == '__main__':
    main()
