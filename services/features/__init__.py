"""features: incremental per-symbol indicators computed from ticks.

Modules: `api` (gRPC servicer), `domain` (pure indicators), `consumer` (the tick
consumer and publishing), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.features` runs it.
"""
