"""audit: the tamper-evident, hash-chained event store and event-sourced replay.

Modules: `domain` (pure: hash chain, verifier, aggregates, replay and
comparison, the lineage projection), `ports` (the event store and live state
interfaces), `adapters` (`postgres`: the append-only PostgreSQL store;
`memory`: both ports in process, for tests), `consumer` (every Kafka topic
into the store, the lineage graph's consumer), `live` (execution and
portfolio over gRPC), `api` (gRPC servicer), `settings`, `main` (the
ServiceSpec). The lineage graph is runtime.graph's port. `python -m services.audit` runs it.
"""
