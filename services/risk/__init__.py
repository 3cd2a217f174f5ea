"""risk: pre-trade checks, limits and the per-tenant kill switch.

Modules: `api` (gRPC servicer), `domain` (pure checks and PnL bookkeeping),
`storage` (Redis state and scripts), `events` (risk events, alerts, the
automatic switch to REDUCING), `consumers` (fills from Kafka), `main` (the
ServiceSpec). `python -m services.risk` runs it.
"""
