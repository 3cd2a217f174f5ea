"""execution: the order state machine, idempotent placement, the paper venue, the outbox.

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.execution` runs it.
"""
