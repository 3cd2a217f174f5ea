"""identity: tenants, users, roles, API keys, login and JWT issuing (JWKS).

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies, wiring,
start-up), `settings` (env TRADING_IDENTITY__*), `domain` (roles -> scopes,
argon2id passwords, refresh token format), `storage` (PostgreSQL, RLS),
`keys` (ES256 signing key ring, rotation; `python -m services.identity.keys
rotate`), `events` (events into the shared outbox), `seed` (platform and demo tenants).
For the gateway: `tokens` (offline JWT verification against the JWKS) and
`apikeys` (API key verification from the Redis cache identity maintains).
`python -m services.identity` runs it.
"""
