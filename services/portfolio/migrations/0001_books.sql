-- The portfolio's books, per tenant: cash accounts, positions, and the
-- processed fill events that make the fill consumer idempotent. Every table
-- carries tenant_id and row-level security (the policies that
-- runtime.storage.postgres.tenant_rls_sql writes), so a tenant transaction
-- sees and writes its own rows only. Amounts are unconstrained numeric: exact,
-- whatever the scale of the products of prices and quantities.

-- One cash account per tenant, created by its first fill.
CREATE TABLE accounts (
    tenant_id     text PRIMARY KEY CHECK (tenant_id <> ''),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3,5}$'),
    starting_cash numeric NOT NULL,
    cash          numeric NOT NULL,
    -- Fills applied to the tenant's books: the portfolio version.
    version       bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per tenant and symbol ever traded; flat positions stay (they keep
-- their realised PnL and fees).
CREATE TABLE positions (
    tenant_id     text NOT NULL CHECK (tenant_id <> ''),
    symbol        text NOT NULL CHECK (symbol ~ '^[A-Z0-9]{1,12}(-[A-Z0-9]{1,12})?$'),
    quantity      numeric NOT NULL,
    average_price numeric CHECK (average_price > 0),
    realized_pnl  numeric NOT NULL DEFAULT 0,
    fees_paid     numeric NOT NULL DEFAULT 0 CHECK (fees_paid >= 0),
    version       bigint NOT NULL CHECK (version > 0),
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, symbol),
    -- Flat exactly when there is no average price.
    CHECK ((quantity = 0) = (average_price IS NULL))
);

-- Fill events already applied, written in the same transaction as the
-- position and cash they changed: a redelivered event (same event id) or a
-- re-emitted fill (same execution id) finds its row and changes nothing.
CREATE TABLE processed_events (
    tenant_id    text NOT NULL CHECK (tenant_id <> ''),
    event_id     text NOT NULL,
    execution_id text NOT NULL,
    order_id     text NOT NULL,
    symbol       text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id),
    UNIQUE (tenant_id, execution_id)
);

ALTER TABLE "accounts" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "accounts" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "accounts" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

ALTER TABLE "positions" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "positions" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "positions" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

ALTER TABLE "processed_events" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "processed_events" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "processed_events" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));
