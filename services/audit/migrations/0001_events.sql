-- The audit store: every event of the platform, append-only, one hash chain
-- per tenant (platform-wide events such as market data ticks, whose envelope
-- has no tenant, form the chain of tenant_id '').
--
-- Record n of a chain stores
--   hash(n) = SHA-256(prev_hash(n) || uint64_be(sequence(n)) || envelope_bytes(n))
-- with prev_hash(n) = hash(n - 1) and prev_hash(1) = 32 zero bytes (see
-- proto/trading/audit/v1/types.proto). Every other column except recorded_at
-- is derived from envelope_bytes, and VerifyChain checks that too.
--
-- Append-only three times over:
-- - the service writes as the role trading_audit, which the service grants
--   SELECT and INSERT on this table and nothing else (services/audit/storage.py,
--   at every start, because the migration runner grants the generic tenant
--   role every right on the schema and the service revokes UPDATE, DELETE and
--   TRUNCATE again);
-- - the triggers below refuse UPDATE, DELETE and TRUNCATE for everyone, the
--   owner included (only a superuser can switch them off);
-- - whatever a superuser does anyway breaks the hash chain, which VerifyChain
--   detects and names.
CREATE TABLE events (
    tenant_id      text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    event_id       text        NOT NULL CHECK (event_id <> ''),
    event_type     text        NOT NULL CHECK (event_type <> ''),
    correlation_id text        NOT NULL,
    causation_id   text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    producer       text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The serialized EventEnvelope that was hashed.
    envelope_bytes bytea       NOT NULL,
    -- The same envelope decoded (proto3 JSON), for ad-hoc SQL by auditors.
    envelope_json  jsonb       NOT NULL,
    prev_hash      bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash           bytea       NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (tenant_id, sequence),
    -- Each event is stored once, whatever the number of deliveries.
    UNIQUE (event_id)
);

-- QueryEvents filters, each ending in sequence (the order of the results and
-- the keyset of the page tokens).
CREATE INDEX events_by_correlation ON events (tenant_id, correlation_id, sequence);
CREATE INDEX events_by_aggregate ON events (tenant_id, aggregate_type, aggregate_id, sequence);
CREATE INDEX events_by_type ON events (tenant_id, event_type, sequence);
CREATE INDEX events_by_time ON events (tenant_id, occurred_at);

ALTER TABLE "events" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "events" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "events" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
