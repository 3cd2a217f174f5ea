"""The local broker's retention rule (tools.kafka_retention.deletable): old
batches that every committing group has read go, nothing else does."""

from __future__ import annotations

from tools.kafka_retention import StoredBatch, deletable

NOW = 10_000.0


def _batches(*bases: int, age_s: float = 600.0) -> list[StoredBatch]:
    return [StoredBatch(b, NOW - age_s, f"{b:020}.batch") for b in bases]


def _bases(batches: list[StoredBatch]) -> list[int]:
    return [b.base_offset for b in batches]


def test_batches_every_group_has_read_past_go_and_the_newest_stays() -> None:
    batches = _batches(0, 3, 7, 12)
    # Two groups: the slower one (offset 7) has read batches 0 and 3 whole.
    assert _bases(deletable(batches, [9, 7], now_s=NOW, retention_s=60)) == [0, 3]
    # Everything read: all but the newest batch go (tansu's fetch keeps finding its end).
    assert _bases(deletable(batches, [20], now_s=NOW, retention_s=60)) == [0, 3, 7]


def test_a_batch_a_group_is_inside_of_is_kept() -> None:
    # Offset 5 is inside batch 3 (records 3..6): batch 3 and later are unread in part.
    assert _bases(deletable(_batches(0, 3, 7), [5], now_s=NOW, retention_s=60)) == [0]


def test_young_batches_are_kept_even_when_read() -> None:
    batches = [*_batches(0, 3), *_batches(7, 12, age_s=10)]
    assert _bases(deletable(batches, [20], now_s=NOW, retention_s=60)) == [0, 3]
    assert deletable(batches, [20], now_s=NOW, retention_s=3600) == []


def test_a_partition_no_group_commits_on_is_kept_whole() -> None:
    # Dead letters are read from the beginning by whoever looks: never swept.
    assert deletable(_batches(0, 1, 2), [], now_s=NOW, retention_s=0) == []


def test_the_order_the_listing_gives_does_not_matter() -> None:
    shuffled = _batches(7, 0, 12, 3)
    assert _bases(deletable(shuffled, [12], now_s=NOW, retention_s=60)) == [0, 3, 7]
