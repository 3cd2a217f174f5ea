"""Identity's port implementations (services.identity.ports): `postgres`
(tenants, users, tokens, API keys, idempotency and the outbox; signing
keys), `redis` (login failures, the API key cache) and `memory` (all of
them in process, for servicer tests)."""
