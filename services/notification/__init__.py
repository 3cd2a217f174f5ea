"""notification: per-user delivery: live streams, signed webhooks, dead letters.

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies and wiring).
`python -m services.notification` runs it.
"""
