"""Worker counts, memory sizes and chunk sizes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stashworks.multi import parse_memory, resolve_workers, usable_cpus
from stashworks.multi.chunking import SMALL, Chunker


@pytest.mark.parametrize(
    ('setting', 'expected'),
    [(0, 8), (3, 3), (-1, 8), (-2, 7), (-8, 1), (0.5, 4), (0.01, 1), (1.0, 8), (2.0, 2)],
)
def test_workers_setting_resolves_against_usable_cpus(setting: float, expected: int) -> None:
    assert resolve_workers(setting, cpus=8) == expected


@pytest.mark.parametrize('setting', [1.5, -0.5, 'two', True])
def test_bad_workers_setting_is_refused(setting: object) -> None:
    with pytest.raises(ValueError):
        resolve_workers(setting, cpus=8)  # type: ignore[arg-type]


def test_never_more_workers_than_chunks() -> None:
    assert resolve_workers(0, jobs=3, cpus=8) == 3
    assert resolve_workers(0, jobs=0, cpus=8) == 1


def test_memory_per_worker_caps_the_count() -> None:
    gb = 1000**3
    assert resolve_workers(0, cpus=8, memory_per_worker=2 * gb, available_memory=5 * gb) == 2
    assert resolve_workers(0, cpus=8, memory_per_worker=9 * gb, available_memory=5 * gb) == 1


def test_usable_cpus_follow_the_affinity_mask() -> None:
    if not hasattr(__import__('os'), 'sched_setaffinity'):
        pytest.skip('no CPU affinity on this platform')
    code = (
        'import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); '
        'from stashworks.multi import usable_cpus, resolve_workers; print(usable_cpus(), resolve_workers(0))'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.split() == ['1', '1']
    assert usable_cpus() >= 1


@pytest.mark.parametrize(
    ('text', 'size'),
    [('512MB', 512 * 1000**2), ('2GB', 2 * 1000**3), ('1.5GiB', int(1.5 * 1024**3)), ('100', 100), (4096, 4096)],
)
def test_memory_sizes(text: object, size: int) -> None:
    assert parse_memory(text) == size  # type: ignore[arg-type]


@pytest.mark.parametrize('text', ['lots', '2 parsecs', '-1', 0])
def test_bad_memory_sizes_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_memory(text)  # type: ignore[arg-type]


def test_fixed_chunk_size() -> None:
    chunker = Chunker(5, workers=2)
    assert [chunker.next_size(r) for r in (12, 7, 2, 0)] == [5, 5, 2, 0]


def test_auto_chunks_start_small() -> None:
    assert Chunker(0, workers=2).next_size(10_000) == 2


def test_auto_chunks_are_bounded_by_what_is_left() -> None:
    chunker = Chunker(0, workers=2)
    chunker.observe(items=10, elapsed=0.001)  # 0.1 ms an item: 20 ms is 200 items
    assert chunker.next_size(10_000) == 10_000 // 8


def test_auto_chunks_of_tiny_items_hold_at_least_20_ms_of_work() -> None:
    chunker = Chunker(0, workers=2)
    chunker.observe(items=10, elapsed=0.0001)  # 10 us an item: 20 ms is 2,000 items
    assert chunker.next_size(10_000) == 2_000


def test_the_tail_of_tiny_items_is_split_once_into_a_chunk_per_worker() -> None:
    chunker = Chunker(0, workers=2)
    chunker.observe(items=10, elapsed=0.0001)
    sizes, remaining = [], 3_001
    while remaining:
        size = chunker.next_size(remaining)
        sizes.append(size)
        remaining -= size
    assert sizes == [1_501, 1_500]


def test_auto_chunks_of_tiny_items_stay_the_same_size_however_big_the_batch() -> None:
    # The parent holds a few chunks per worker at once: their size, not the
    # batch's, must bound what it holds.
    sizes = []
    for remaining in (1_000_000, 10_000_000, 100_000_000):
        chunker = Chunker(0, workers=2)
        chunker.observe(items=100_000, elapsed=0.05)  # half a microsecond an item
        sizes.append(chunker.next_size(remaining))
    assert sizes[0] == sizes[1] == sizes[2] <= 16_384


def test_auto_chunks_of_slow_items_take_about_half_a_second() -> None:
    chunker = Chunker(0, workers=2)
    chunker.observe(items=2, elapsed=0.2)
    assert chunker.next_size(10_000) == 5
    chunker = Chunker(0, workers=2)
    chunker.observe(items=1, elapsed=3.0)
    assert chunker.next_size(10_000) == 1


def test_a_small_batch_is_cut_into_four_even_chunks_per_worker_from_the_start() -> None:
    # Like multiprocessing.Pool.map: no probes of two units first.
    chunker = Chunker(0, workers=2)
    sizes, remaining = [], 1_000
    while remaining:
        size = chunker.next_size(remaining)
        sizes.append(size)
        remaining -= size
    assert sizes == [125] * 8


def test_a_small_batch_of_slow_items_gets_chunks_of_about_half_a_second_once_timed() -> None:
    chunker = Chunker(0, workers=2)
    assert chunker.next_size(1_000) == 125
    chunker.observe(items=125, elapsed=2.5)  # 20 ms an item: half a second is 25 items
    assert chunker.next_size(875) == 25


def test_a_batch_just_too_big_to_be_small_starts_with_probes() -> None:
    chunker = Chunker(0, workers=2)
    assert chunker.next_size(8 * SMALL + 1) == 2
    assert Chunker(0, workers=2).next_size(8 * SMALL) == SMALL
