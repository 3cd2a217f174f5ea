"""docs/settings.md is generated from the settings tree and kept fresh."""

from __future__ import annotations

from pathlib import Path

from runtime.config import all_settings
from tools import settings_doc


def test_the_committed_document_is_fresh() -> None:
    assert settings_doc.is_fresh(), "docs/settings.md is stale: run ./dev gen"


def test_every_setting_has_its_row() -> None:
    rows = {
        line.split("`")[1] for line in settings_doc.render().splitlines() if line.startswith("| `TRADING_")
    }
    assert rows == {s.env for s in all_settings()}


def test_a_stale_document_is_found_and_rewritten(tmp_path: Path) -> None:
    doc = tmp_path / "settings.md"
    assert not settings_doc.is_fresh(doc)  # missing
    doc.write_text(settings_doc.render().replace("POSTGRES__DSN", "POSTGRES_DSN"))  # a name gone stale
    assert not settings_doc.is_fresh(doc)
    assert settings_doc.write(doc) and settings_doc.is_fresh(doc)
    assert not settings_doc.write(doc)  # unchanged the second time


def test_a_row_shows_type_bounds_default_and_description() -> None:
    row = next(
        line
        for line in settings_doc.render().splitlines()
        if line.startswith("| `TRADING_DECISION__TRAIN__SEED`")
    )
    assert row == (
        "| `TRADING_DECISION__TRAIN__SEED` | int | `7` | The regime generator's seed (the live feed with"
        " TRADING_MARKETDATA__FEED_SEED set to the same value quotes the same paths; its default, 42, is"
        " another). |"
    )
    bounded = next(
        line for line in settings_doc.render().splitlines() if "`TRADING_GATEWAY__CORS_ORIGINS`" in line
    )
    assert "| list[str], comma-separated | `[]` |" in bounded
    lease = next(
        line for line in settings_doc.render().splitlines() if "`TRADING_MARKETDATA__LEASE_POLL_S`" in line
    )
    assert "| float, > 0 | `0.25` |" in lease
