"""risk: pre-trade checks, limits and the per-tenant kill switch.

Modules: `api` (gRPC servicer), `domain` (pure checks, order rate, PnL
bookkeeping), `ports` (what the state store promises), `adapters` (the Redis
state and scripts; an in-memory one for tests), `wire` (contract messages <->
domain), `events` (risk events, alerts, the automatic switch to REDUCING),
`consumers` (fills from Kafka, correlation clusters), `main` (the
ServiceSpec). `python -m services.risk` runs it.
"""
