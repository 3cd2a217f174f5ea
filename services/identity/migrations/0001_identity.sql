-- Identity: tenants, users, refresh tokens, API keys, signing keys, outbox.
--
-- Row-level security: every tenant table has `tenant_id text` and the policy
-- runtime.storage.postgres.tenant_rls_sql writes (ENABLE + FORCE, tenant_id =
-- current_setting('app.tenant_id')); the service reaches them through
-- tenant_transaction (SET LOCAL ROLE trading_tenant). Platform work (listing
-- every tenant for operators, the API key cache rebuild, the outbox relay,
-- signing keys, seeding) runs as the service's login role, which must bypass
-- RLS (superuser locally, a BYPASSRLS role in production).

-- One row per tenant; a tenant transaction sees only its own row.
CREATE TABLE tenants (
    tenant_id    text PRIMARY KEY,
    slug         text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$'),
    display_name text NOT NULL,
    status       text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    -- The operators' tenant: its administrators manage every tenant.
    is_platform  boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tenants_one_platform ON tenants (is_platform) WHERE is_platform;
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));

-- Login knows only the tenant's slug. Rather than running the login
-- transaction with RLS off, this one definer function (run as its owner,
-- which bypasses RLS) resolves slug -> (tenant_id, status) and nothing else;
-- the rest of Login runs in a tenant transaction of the tenant found.
CREATE FUNCTION login_tenant(p_slug text) RETURNS TABLE (tenant_id text, status text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$ SELECT t.tenant_id, t.status FROM identity.tenants t WHERE t.slug = p_slug $$;
REVOKE ALL ON FUNCTION login_tenant(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION login_tenant(text) TO trading_tenant;

CREATE TABLE users (
    user_id       text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants (tenant_id),
    -- Lower-cased; unique within the tenant.
    email         text NOT NULL,
    display_name  text NOT NULL,
    -- argon2id PHC string.
    password_hash text NOT NULL,
    roles         text[] NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ ARRAY['TRADER', 'VIEWER', 'ADMIN']),
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));

-- Refresh tokens, stored by SHA-256. A login starts a family; each refresh
-- marks the presented token rotated and issues the next one of the family
-- with the family's expiry. Presenting a rotated token again revokes the family.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    tenant_id  text NOT NULL,
    user_id    text NOT NULL REFERENCES users (user_id),
    family_id  text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (tenant_id, family_id);
CREATE INDEX refresh_tokens_user_active ON refresh_tokens (tenant_id, user_id)
    WHERE rotated_at IS NULL AND revoked_at IS NULL;
ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refresh_tokens
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));

-- API keys, stored by SHA-256 of the secret (see services/identity/apikeys.py).
CREATE TABLE api_keys (
    api_key_id    text PRIMARY KEY,
    tenant_id     text NOT NULL,
    owner_user_id text NOT NULL REFERENCES users (user_id),
    name          text NOT NULL,
    key_prefix    text NOT NULL,
    key_hash      bytea NOT NULL UNIQUE,
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz
);
-- Names are unique among a user's keys that are not revoked.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (tenant_id, owner_user_id, name) WHERE revoked_at IS NULL;
CREATE INDEX api_keys_owner ON api_keys (tenant_id, owner_user_id, api_key_id);
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));

-- Responses of mutating RPCs by (tenant, method, Idempotency-Key), so a
-- retried call gets the first call's answer. Never holds secrets.
CREATE TABLE idempotency (
    tenant_id    text NOT NULL,
    method       text NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, method, key)
);
ALTER TABLE idempotency ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON idempotency
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));

-- ES256 signing keys (services/identity/keys.py). RLS on without any policy
-- and not forced: the tenant role sees no row, the service role all.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    private_key_enc bytea NOT NULL,
    public_jwk      jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- NULL for the current key.
    retired_at      timestamptz,
    -- Retired keys are published in the JWKS until then.
    publish_until   timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((true)) WHERE retired_at IS NULL;
ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;

-- Transactional outbox: events are written in the transaction that makes the
-- change and published to Kafka by the relay (services/identity/events.py).
-- Tenant transactions may add their own tenant's events; the relay (service
-- role, RLS not forced) reads them all.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    tenant_id  text NOT NULL,
    envelope   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));
