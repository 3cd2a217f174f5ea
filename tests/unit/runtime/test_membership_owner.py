"""Rendezvous assignment of keys to replicas (runtime.membership.owner)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from runtime.membership import owner

SYMBOLS = [f"SYM{i}-USD" for i in range(400)]


def test_no_members_no_owner() -> None:
    assert owner("BTC-USD", []) is None


def test_every_replica_computes_the_same_owner_whatever_the_order() -> None:
    members = ["decision-1", "decision-2", "decision-3"]
    for symbol in SYMBOLS[:50]:
        assert owner(symbol, members) == owner(symbol, list(reversed(members)))


def test_keys_spread_evenly() -> None:
    members = ["decision-1", "decision-2", "decision-3", "decision-4"]
    counts = Counter(owner(s, members) for s in SYMBOLS)
    assert set(counts) == set(members)
    assert min(counts.values()) > len(SYMBOLS) / len(members) * 0.7


@given(st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=6, unique=True), st.data())
def test_a_member_leaving_moves_only_its_own_keys(members: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != gone]
    for symbol in SYMBOLS[:60]:
        before = owner(symbol, members)
        after = owner(symbol, rest)
        if before != gone:
            assert after == before
        else:
            assert after in rest
