"""Notification's port implementations (services.notification.ports): `postgres`
(webhooks and dead letters under row-level security), `nats` (delivery jobs
and the platform DLQ stream on JetStream) and `memory` (the same behaviour in
process, for servicer tests)."""
