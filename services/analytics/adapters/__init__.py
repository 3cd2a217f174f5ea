"""Analytics' adapters of its store (services/analytics/ports.py):
:mod:`.clickhouse` (chdb in process or a ClickHouse server) and :mod:`.memory`."""
