"""identity: tenants, users, roles, API keys, login and JWT issuing (JWKS).

Modules: `api` (gRPC servicer), `main` (the ServiceSpec: dependencies, wiring,
start-up), `settings` (env TRADING_IDENTITY__*), `domain` (pure: roles ->
scopes, argon2id passwords, refresh token format), `ports` (the store,
signing keys, login failures, API key cache), `adapters` (`postgres`: RLS,
the outbox, signing keys; `redis`: login failures, API key cache; `memory`:
all in process, for tests), `keys` (ES256 signing key ring, rotation;
`python -m services.identity.keys rotate`), `seed` (platform and demo tenants).
For the gateway: `tokens` (offline JWT verification against the JWKS) and
`apikeys` (API key verification from the Redis cache identity maintains).
`python -m services.identity` runs it.
"""
