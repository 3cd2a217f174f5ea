"""decision: the AI: model ensembles, per-tenant strategies, signals to order intents.

Modules: `domain` (pure: the ensemble's combination, strategies' rules,
the intent life cycle, the market state embedding, the analog model, drift,
walk-forward evaluation), `ports` (what the strategy and signal stores and
the instrument directory promise), `adapters` (PostgreSQL stores with RLS and
the outbox, the Redis instrument universe, in-memory ones for tests),
`engine` (the hot path: vectors -> signals -> intents -> orders, with
`book`, `lanes` and `signal_writer`), `inference` (models on their threads),
`memory` (the market memory on the vector store), `models` and `train`
(the registry and training), `api` (gRPC servicer), `main` (the ServiceSpec:
dependencies and wiring). `python -m services.decision` runs it.
"""
