"""notification: per-user delivery: live streams, signed webhooks, dead letters.

Modules: `api` (gRPC servicer; Subscribe relays the tenant's NATS subjects),
`domain` (pure: what is delivered, how an event reads, who gets it),
`targets` (webhook URL policy: scheme, credentials, public addresses),
`signing` (Standard Webhooks signatures; secrets stored AES-GCM encrypted),
`delivery` (fan-out, delivery workers with tenacity retries, dead letters),
`ports` (the store, job and DLQ interfaces), `adapters` (`postgres` with RLS,
`nats` on JetStream, `memory` for tests), `settings` (env
``TRADING_NOTIFICATION__*``), `main` (the ServiceSpec).
`python -m services.notification` runs it.
"""
