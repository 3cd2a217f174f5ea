"""audit: the tamper-evident, hash-chained event store and event-sourced replay.

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.audit` runs it.
"""
