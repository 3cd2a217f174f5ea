"""execution: the order state machine, idempotent placement, the paper venue, the outbox.

Modules: `domain` (pure order logic: the transition table, matching, time in
force), `wire` (the contract's protobuf forms of domain values), `ports`
(what the servicer and the matcher depend on: OrderStore, MarketQuotes,
PreTradeRisk, Venue), `adapters` (PostgreSQL orders, Redis quotes, risk over
gRPC, in-memory orders and quotes), `outbox` (what an order change puts into
the outbox), `metrics`, `venue` (the paper venue and its matcher), `api`
(gRPC servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.execution` runs it.
"""
