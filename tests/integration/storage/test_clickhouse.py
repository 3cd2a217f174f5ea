"""ClickHouse adapter on the embedded chdb engine (the session's temp dir)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from runtime.config import ClickHouseSettings, Settings
from runtime.storage.clickhouse import ClickHouseClient, ConnectClickHouse, create_clickhouse


async def test_mergetree_with_decimal_datetime64_lowcardinality(
    clickhouse: ConnectClickHouse, unique_id: str
) -> None:
    port: ClickHouseClient = clickhouse  # the adapter satisfies the port
    assert await port.ping()
    table = f"ticks_{unique_id}"
    await port.command(
        f"""CREATE TABLE {table} (
            tenant_id LowCardinality(String),
            symbol    LowCardinality(String),
            ts        DateTime64(6, 'UTC'),
            price     Decimal(18, 8),
            qty       Decimal(18, 8)
        ) ENGINE = MergeTree ORDER BY (tenant_id, symbol, ts)"""
    )
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0, 123456)
    rows = [
        ["t1", "BTC-USD", t0, Decimal("64000.12345678"), Decimal("0.5")],
        ["t1", "BTC-USD", t0 + dt.timedelta(seconds=1), Decimal("64001.00000001"), Decimal("1.25")],
        ["t1", "ETH-USD", t0, Decimal("3000"), Decimal("2")],
        ["t2", "BTC-USD", t0, Decimal("1"), Decimal("1")],
    ]
    written = await port.insert(table, rows, ["tenant_id", "symbol", "ts", "price", "qty"])
    assert written == 4
    assert await port.insert(table, [], ["tenant_id"]) == 0

    result = await port.query(
        f"SELECT symbol, ts, price, sum(toDecimal128(price, 8) * qty) OVER (PARTITION BY symbol) AS notional"
        f" FROM {table} WHERE tenant_id = {{tenant:String}} AND symbol = {{symbol:String}} ORDER BY ts",
        {"tenant": "t1", "symbol": "BTC-USD"},
    )
    assert result.columns == ("symbol", "ts", "price", "notional")
    assert [r[1] for r in result.rows] == [t0, t0 + dt.timedelta(seconds=1)]  # microseconds kept
    assert [r[2] for r in result.rows] == [Decimal("64000.12345678"), Decimal("64001.00000001")]
    assert all(isinstance(r[2], Decimal) for r in result.rows)
    # Decimal128 arithmetic is exact: no binary float anywhere.
    assert result.rows[0][3] == Decimal("64000.12345678") * Decimal("0.5") + Decimal(
        "64001.00000001"
    ) * Decimal("1.25")
    assert result.dicts()[0]["symbol"] == "BTC-USD"

    counts = await port.query(f"SELECT tenant_id, count() FROM {table} GROUP BY tenant_id ORDER BY tenant_id")
    assert counts.rows == [("t1", 3), ("t2", 1)]
    types = await port.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
        {"t": table},
    )
    assert dict(types.rows)["symbol"] == "LowCardinality(String)"
    await port.command(f"DROP TABLE {table}")


async def test_data_lives_in_the_configured_database_and_dir(
    clickhouse: ConnectClickHouse, infra_settings: Settings
) -> None:
    assert clickhouse.database == infra_settings.clickhouse.database
    current = await clickhouse.query("SELECT currentDatabase()")
    assert current.rows == [(infra_settings.clickhouse.database,)]
    assert any(infra_settings.clickhouse.chdb_path.iterdir())


async def test_second_chdb_path_in_one_process_is_refused(
    clickhouse: ConnectClickHouse, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="one engine path per process"):
        await create_clickhouse(ClickHouseSettings(chdb_path=tmp_path / "other"))
