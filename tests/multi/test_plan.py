"""Planning keeps flat memory however long the work: spooled missing keys, a filter of seen ones.

The memory test runs the plan in a fresh interpreter and reads its own
peak (``VmHWM``) at two sizes ten times apart.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stashworks import DictionaryStash
from stashworks.errors import BatchError
from stashworks.multi.plan import KeySpool, SeenFilter, iter_pairs, plan_batch


def keys(n: int, prefix: str = 'k') -> list[str]:
    return [f'{prefix}{i:07d}' for i in range(n)]


def test_a_spool_gives_back_every_key_in_order_whatever_the_chunk_sizes(tmp_path: Path) -> None:
    work = keys(10_000)
    spool = KeySpool(work, directory=tmp_path, block=700)
    assert len(spool) == spool.remaining == 10_000
    assert list(spool) == work
    taken: list[str] = []
    sizes = [1, 5, 699, 700, 701, 3000, 2]
    while spool.remaining:
        taken.extend(spool.take(sizes[len(taken) % len(sizes)]))
    assert taken == work
    assert spool.take(10) == [] and spool.remaining == 0
    # Its file has no name: nothing is left in the folder.
    assert os.listdir(tmp_path) == []


def test_a_spool_refuses_keys_once_taking_began(tmp_path: Path) -> None:
    spool = KeySpool(keys(5), block=2)
    spool.take(1)
    with pytest.raises(Exception, match='once taking has begun'):
        spool.extend(['late'])


def test_the_seen_filter_never_forgets_and_rarely_imagines() -> None:
    seen = SeenFilter(expected=1 << 14)  # grows on the way
    added = keys(100_000)
    for start in range(0, len(added), 4096):
        seen.add(added[start : start + 4096])
    assert all(seen.maybe_seen(added))
    others = keys(100_000, prefix='other-')
    false = sum(seen.maybe_seen(others))
    assert false < 3_000, f'{false} of 100,000 keys never added were taken as seen'


@pytest.mark.parametrize('exact_limit', [10, 1_000_000])
@pytest.mark.parametrize('order', ['shuffled', 'ordered then repeated'])
def test_a_repeated_missing_key_is_planned_once_however_far_apart(exact_limit: int, order: str) -> None:
    rng = random.Random(7)
    distinct = keys(5_000)
    repeats = rng.sample(distinct, 800) + distinct[:50]
    if order == 'shuffled':
        work = distinct + repeats
        rng.shuffle(work)
    else:
        # In order for 5,000 keys (nothing remembered), then the repeats.
        work = distinct + repeats
    done = DictionaryStash()
    for key in distinct[::3]:
        done.dump(key, 1)
    plan = plan_batch(iter_pairs(work), done, DictionaryStash(), block=97, exact_limit=exact_limit)
    expected = [key for key in dict.fromkeys(work) if not done.exists(key)]
    assert list(plan.missing) == expected
    taken = plan.missing.take(len(work))
    assert taken == expected and len(plan.missing) == len(expected)
    if exact_limit > len(work):
        assert plan.total == len(distinct)


def test_failed_and_done_keys_are_left_out_and_counted() -> None:
    work = keys(1_000)
    store, failures = DictionaryStash(), DictionaryStash()
    for key in work[:300]:
        store.dump(key, 1)
    for key in work[300:400]:
        failures.dump(key, 'failed')
    plan = plan_batch(iter_pairs(work), store, failures, block=64, exact_limit=100)
    assert (plan.done_before, plan.failed_before, len(plan.missing)) == (300, 100, 600)
    assert list(plan.missing) == work[400:]


PEAK = textwrap.dedent(
    """
    import sys
    from stashworks import DictionaryStash
    from stashworks.multi.plan import iter_pairs, plan_batch

    n, ordered = int(sys.argv[1]), sys.argv[3] == 'ordered'
    # Out of order: every number once, in a scrambled order.
    work = (f'item-{i if ordered else (i * 7919) % n:09d}' for i in range(n))
    plan = plan_batch(iter_pairs(work), DictionaryStash(), DictionaryStash(), spool_dir=sys.argv[2])
    taken = 0
    while plan.missing.remaining:
        taken += len(plan.missing.take(1000))
    assert taken == n == plan.total, (taken, n, plan.total)
    status = open('/proc/self/status').read()
    print(next(int(line.split()[1]) for line in status.splitlines() if line.startswith('VmHWM:')))
    """
)


def _peak_kib(n: int, folder: Path, order: str) -> int:
    command = [sys.executable, '-c', PEAK, str(n), str(folder), order]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


@pytest.mark.skipif(not Path('/proc/self/status').exists(), reason='reads VmHWM from /proc')
@pytest.mark.parametrize('order', ['ordered', 'scrambled'])
def test_planning_ten_times_the_keys_keeps_the_same_peak_memory(tmp_path: Path, order: str) -> None:
    small, large = _peak_kib(200_000, tmp_path, order), _peak_kib(2_000_000, tmp_path, order)
    assert large <= 1.3 * small, f'{order} keys: peak {small} KiB at 200k keys, {large} KiB at 2M'
    assert os.listdir(tmp_path) == []


def test_units_are_identified_in_order_whatever_their_types() -> None:
    from pathlib import PurePosixPath

    from stashworks.multi.plan import identify

    units: list[object] = [f'u{i}' for i in range(70_000)] + [3, PurePosixPath('/a/b'), 'last']
    pairs = list(identify(units))
    assert pairs[:2] == [('u0', None), ('u1', None)] and len(pairs) == len(units)
    assert pairs[-3:] == [('3', 3), ('/a/b', PurePosixPath('/a/b')), ('last', None)]
    # A custom identity applies to str units too.
    assert list(identify(['a', 'b'], str.upper)) == [('A', 'a'), ('B', 'b')]


def test_work_of_plain_keys_is_planned_from_the_keys_and_still_iterates_as_pairs() -> None:
    work = iter_pairs(['a', 'b', 'c', 'd'])
    assert next(work) == ('a', None)  # a consumer may take pairs first
    done = DictionaryStash()
    done.dump('c', 1)
    plan = plan_batch(work, done, DictionaryStash(), block=2)
    assert (list(plan.missing), plan.payload, plan.done_before) == (['b', 'd'], None, 1)
    with pytest.raises(BatchError, match=r'work key #2 is not a str but int: 7'):
        plan_batch(iter_pairs(['x', 'y', 7]), DictionaryStash(), DictionaryStash(), block=2)  # type: ignore[list-item]
