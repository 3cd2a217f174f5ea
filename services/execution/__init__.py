"""execution: the order state machine, idempotent placement, the paper venue, the outbox.

Modules: `domain` (pure order logic: the transition table, matching, time in
force), `wire` (the contract's protobuf forms of domain values), `outbox`
(what an order change puts into the outbox), `venue` (the paper venue and its
matcher), `storage` (PostgreSQL), `api` (gRPC servicer), `main` (the
ServiceSpec: dependencies and wiring). `python -m services.execution` runs it.
"""
