"""decision: the AI: model ensembles, per-tenant strategies, signals to order intents.

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.decision` runs it.
"""
