"""notification: per-user delivery: live streams, signed webhooks, dead letters.

Modules: `api` (gRPC servicer; Subscribe relays the tenant's NATS subjects),
`domain` (what is delivered and how an event reads), `targets` (webhook URL
policy: scheme, credentials, public addresses), `signing` (Standard Webhooks
signatures; secrets stored AES-GCM encrypted), `delivery` (fan-out, delivery
workers with tenacity retries, dead letters), `storage` (PostgreSQL with
RLS), `settings` (env ``TRADING_NOTIFICATION__*``), `main` (the ServiceSpec).
`python -m services.notification` runs it.
"""
