-- Orders, their executions (fills) and the transactional outbox of execution.
--
-- Every table is tenant data with row-level security (the policy text is
-- exactly runtime.storage.postgres.tenant_rls_sql(<table>); a unit test pins
-- it). API calls run in tenant_transaction (role trading_tenant), so they see
-- and write only their tenant's rows. The service's own background workers
-- (the paper venue's matcher and the outbox relay) must see every tenant's
-- working orders and unsent events: the `service_worker` policies grant that
-- to the role that owns the schema (the login role that ran these
-- migrations), and never to trading_tenant.
--
-- Enums are stored as the contract's numbers (smallint), decimals as exact
-- numeric (no precision cap: filled_notional is an exact sum of products).

CREATE TABLE orders (
    tenant_id        text        NOT NULL,
    order_id         uuid        NOT NULL,
    client_order_id  text        NOT NULL,
    -- sha256 of the PlaceOrder request, to tell a retry from a reused id.
    request_hash     bytea       NOT NULL,
    symbol           text        NOT NULL,
    side             smallint    NOT NULL CHECK (side IN (1, 2)),
    type             smallint    NOT NULL CHECK (type IN (1, 2)),
    time_in_force    smallint    NOT NULL CHECK (time_in_force BETWEEN 1 AND 4),
    quantity         numeric     NOT NULL CHECK (quantity > 0),
    limit_price      numeric     CHECK (limit_price > 0),
    status           smallint    NOT NULL CHECK (status BETWEEN 1 AND 8),
    filled_quantity  numeric     NOT NULL DEFAULT 0,
    filled_notional  numeric     NOT NULL DEFAULT 0,
    reject_reason    text        NOT NULL DEFAULT '',
    cancel_reason    smallint    NOT NULL DEFAULT 0,
    status_message   text        NOT NULL DEFAULT '',
    strategy_id      text        NOT NULL DEFAULT '',
    venue            text        NOT NULL DEFAULT '',
    venue_order_id   text        NOT NULL DEFAULT '',
    risk_check_id    text        NOT NULL DEFAULT '',
    -- End of the trading day for DAY orders; NULL for the others.
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    version          bigint      NOT NULL CHECK (version >= 1),
    PRIMARY KEY (tenant_id, order_id),
    -- The idempotency key of PlaceOrder: concurrent duplicates race on it.
    CONSTRAINT orders_client_order_id UNIQUE (tenant_id, client_order_id),
    CHECK (filled_quantity >= 0 AND filled_quantity <= quantity)
);

-- ListOrders: newest first, keyset-paged.
CREATE INDEX orders_listing ON orders (tenant_id, created_at DESC, order_id DESC);
-- The matcher: working orders of one symbol (ACCEPTED, PARTIALLY_FILLED).
CREATE INDEX orders_working ON orders (symbol) WHERE status IN (2, 3);
-- The expiry sweep: open DAY orders by session end.
CREATE INDEX orders_expiring ON orders (expires_at) WHERE expires_at IS NOT NULL AND status IN (2, 3, 5);

CREATE TABLE executions (
    tenant_id           text        NOT NULL,
    execution_id        uuid        PRIMARY KEY,
    order_id            uuid        NOT NULL,
    price               numeric     NOT NULL CHECK (price > 0),
    quantity            numeric     NOT NULL CHECK (quantity > 0),
    liquidity           smallint    NOT NULL CHECK (liquidity BETWEEN 0 AND 2),
    fee                 numeric     NOT NULL DEFAULT 0,
    fee_currency        text        NOT NULL DEFAULT '',
    venue_execution_id  text        NOT NULL DEFAULT '',
    executed_at         timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, order_id)
);

CREATE INDEX executions_order ON executions (tenant_id, order_id);

-- One row per event envelope to publish. Written in the same transaction as
-- the order change it reports; the relay publishes rows in id order and sets
-- sent_at. Rows of one order are written under that order's row lock, so
-- their ids follow the order's versions.
CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    tenant_id      text        NOT NULL,
    event_id       uuid        NOT NULL UNIQUE,
    event_type     text        NOT NULL,
    destination    text        NOT NULL CHECK (destination IN ('kafka', 'nats')),
    -- The order id: rows with the same key are published one after another.
    partition_key  text        NOT NULL,
    envelope       bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    -- Set for a row that can never be published (e.g. an invalid subject).
    failed_at      timestamptz,
    last_error     text        NOT NULL DEFAULT ''
);

CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;

ALTER TABLE "orders" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "orders" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "orders" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

ALTER TABLE "executions" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "executions" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "executions" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

ALTER TABLE "outbox" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "outbox" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "outbox" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

-- The background workers run as the schema owner (outside tenant_transaction).
CREATE POLICY service_worker ON orders TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY service_worker ON executions TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE POLICY service_worker ON outbox TO CURRENT_USER USING (true) WITH CHECK (true);
