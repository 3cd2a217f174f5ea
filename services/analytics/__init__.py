"""analytics: time series in ClickHouse: ticks, bars, fills, PnL history, trade statistics.

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.analytics` runs it.
"""
