"""analytics: time series in ClickHouse: ticks, bars, fills, PnL history, trade statistics.

Modules: `domain` (pure: events to rows, bar windows, PnL series and trade
statistics, model and strategy performance), `ports` (what the analytics
store promises), `adapters` (ClickHouse: chdb in process or a server; an
in-memory one for tests), `consumers` (the Kafka sink), `evaluator` (the
model gauges), `correlations` (instrument correlation clusters), `api` (gRPC
servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.analytics` runs it.
"""
