"""pgvector's binary format as the adapter writes and reads it: a 2-byte
dimension, 2 unused bytes, big-endian float32s; a query argument wrapped so
asyncpg does not read it as a nested array."""

from __future__ import annotations

import struct

import pytest

from runtime.vectors.pgvector import Embedding, decode_vector, encode_vector
from runtime.vectors.port import check_scope, check_vector


def test_vectors_round_trip_in_pgvector_binary_format() -> None:
    values = [0.5, -1.25, 3.0]
    data = encode_vector(values)
    assert data == struct.pack(">HH3f", 3, 0, *values)
    assert encode_vector(Embedding(values)) == data
    assert decode_vector(data) == values


def test_scopes_and_vectors_are_checked() -> None:
    assert check_scope("market") == "market"
    assert check_scope("0190f1a2-0000-7000-8000-000000000001")
    for bad in ("", "a b", "x" * 65, "t'; --"):
        with pytest.raises(ValueError):
            check_scope(bad)
    assert check_vector([1, 2], 2) == [1.0, 2.0]
    with pytest.raises(ValueError, match="dimensions"):
        check_vector([1.0], 2)
    with pytest.raises(ValueError, match="NaN"):
        check_vector([float("inf"), 0.0], 2)
