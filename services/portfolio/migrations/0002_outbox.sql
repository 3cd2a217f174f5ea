-- The transactional outbox (runtime/outbox.py; this text is outbox_table_sql()).
-- One row per event envelope and destination, written in the transaction of
-- the change it reports; the relay publishes rows in id order (one key after
-- another) and sets sent_at.
CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    tenant_id      text        NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    destination    text        NOT NULL CHECK (destination IN ('kafka', 'nats')),
    -- Rows with the same key are published one after another, in id order.
    partition_key  text        NOT NULL,
    envelope       bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    -- Set for a row that can never be published (no route, invalid subject).
    failed_at      timestamptz,
    last_error     text        NOT NULL DEFAULT '',
    -- One envelope may go to both transports, once each.
    CONSTRAINT outbox_event_destination UNIQUE (event_id, destination)
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON outbox
    USING (tenant_id = current_setting('app.tenant_id'))
    WITH CHECK (tenant_id = current_setting('app.tenant_id'));
CREATE POLICY service_role ON outbox TO "trading_portfolio_app" USING (true) WITH CHECK (true);
