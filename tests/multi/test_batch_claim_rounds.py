"""The chunks a batch sends at once share one claim; each key is claimed once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from batch_jobs import Work, keys

from stashworks import DirectoryStash, MultiProcessFactoryStash

pytestmark = pytest.mark.timeout(120)


def test_the_chunks_sent_at_once_share_one_claim_and_every_key_is_claimed_once(tmp_path: Path) -> None:
    out = tmp_path / 'out'
    names = keys(400)  # a small batch: eight chunks of 50 for two workers
    stash = MultiProcessFactoryStash(DirectoryStash(out), factory=Work(), keys=names, workers=2, progress=False)
    result = stash.prime()
    assert (result.computed, result.chunks, result.workers) == (400, 8, 2)

    claims = [json.loads(p.read_text()) for p in (out / '.stashworks' / 'claims').glob('*.json')]
    claimed = Counter(k for c in claims for k in c['keys'])
    assert claimed == Counter(names)
    assert all(c['released'] for c in claims)
    # The first four chunks (two per worker) went out under one claim.
    assert len(claims) < result.chunks
    assert max(len(c['keys']) for c in claims) == 200
