"""On the local pool's pipes, each settled unit travels once.

A worker sends the units it settled in ``items`` messages while a chunk
runs, and the chunk's ``end`` message carries only the units it had not
sent yet; the engine counts each unit once.  These tests read every
message the parent receives.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from batch_jobs import Work, keys

from stashworks import DirectoryStash, MultiProcessFactoryStash
from stashworks.multi import pool as pool_module

pytestmark = pytest.mark.timeout(60)


def _record_messages(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    handle = pool_module.LocalPoolExecutor._handle

    def recording(self: Any, w: Any, msg: Any) -> None:
        if msg[0] in ('items', 'end') and isinstance(msg[2], slice):
            # A run of the chunk's own units, sent as where they are in it.
            msg = (*msg[:2], pool_module.LocalPoolExecutor._units_of(w, msg[1], msg[2]), *msg[3:])
        seen.append(msg)
        handle(self, w, msg)

    monkeypatch.setattr(pool_module.LocalPoolExecutor, '_handle', recording)
    return seen


def _units_on_the_wire(messages: list[Any]) -> Counter[str]:
    sent: Counter[str] = Counter()
    for msg in messages:
        if msg[0] in ('items', 'end'):
            sent.update(msg[2])
            sent.update(msg[3])
    return sent


@pytest.mark.parametrize('sleep', [0.0, 0.01], ids=['tiny-items', 'items-over-several-flushes'])
def test_each_unit_crosses_the_pipe_once_and_is_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleep: float
) -> None:
    messages = _record_messages(monkeypatch)
    n = 300 if sleep == 0.0 else 60
    stash = MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=Work(sleep=sleep, fail=('k005',)),
        keys=keys(n),
        workers=2,
        chunk_size=20,
        start_method='fork',
        progress=False,
    )
    result = stash.prime()

    sent = _units_on_the_wire(messages)
    assert sorted(sent) == keys(n)
    assert set(sent.values()) == {1}
    assert (result.computed, result.failed) == (n - 1, 1)
    # Each chunk's end came after the items of that chunk that went ahead.
    assert sum(1 for m in messages if m[0] == 'end') == result.chunks


def test_a_chunk_end_message_carries_only_what_was_not_sent_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _record_messages(monkeypatch)
    # 0.05 s items in one chunk of 10: several flushes (every 0.1 s) before its end.
    MultiProcessFactoryStash(
        DirectoryStash(tmp_path / 'out'),
        factory=Work(sleep=0.05),
        keys=keys(10),
        workers=1,
        chunk_size=10,
        start_method='fork',
        progress=False,
    ).prime()

    items = [m for m in messages if m[0] == 'items']
    (end,) = [m for m in messages if m[0] == 'end']
    assert items, 'no unit was sent while the chunk ran'
    ahead = [u for m in items for u in m[2]]
    assert len(end[2]) == 10 - len(ahead) < 10
    assert sorted(ahead + list(end[2])) == keys(10)
