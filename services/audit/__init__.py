"""audit: the tamper-evident, hash-chained event store and event-sourced replay.

Modules: `domain` (hash chain, verifier, aggregates, replay and comparison;
pure), `storage` (the append-only PostgreSQL store), `consumer` (every Kafka
topic into the store), `live` (execution and portfolio over gRPC), `api`
(gRPC servicer), `settings`, `main` (the ServiceSpec). `python -m services.audit` runs it.
"""
