"""features: incremental per-symbol indicators computed from ticks.

Modules: `api` (gRPC servicer), `domain` (pure ticks, indicators, vectors and
the engine), `ports` (the vector store, the instrument universe, the
publishers), `adapters` (Redis ones; in-memory ones for tests), `consumer`
(the tick consumer and publishing), `main` (the ServiceSpec: dependencies
and wiring). `python -m services.features` runs it.
"""
