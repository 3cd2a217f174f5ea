-- Strategies of each tenant (RLS by tenant_id).
CREATE TABLE strategies (
    tenant_id         text NOT NULL,
    strategy_id       text NOT NULL CHECK (strategy_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    symbols           text[] NOT NULL,
    enabled           boolean NOT NULL,
    max_position      numeric(38, 12) NOT NULL CHECK (max_position > 0),
    fixed_quantity    numeric(38, 12) NOT NULL CHECK (fixed_quantity > 0),
    model_ids         text[] NOT NULL,
    signal_threshold  double precision NOT NULL CHECK (signal_threshold > 0 AND signal_threshold <= 1),
    cooldown_ms       bigint NOT NULL DEFAULT 0 CHECK (cooldown_ms >= 0),
    version           bigint NOT NULL CHECK (version >= 1),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    updated_by        text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, strategy_id)
);
CREATE INDEX strategies_symbols ON strategies USING gin (symbols);

-- Tenants that have strategies: the directory the feature-vector consumer
-- walks (one tenant transaction each), since RLS hides other tenants' rows.
-- Holds no tenant data beyond the id.
CREATE TABLE strategy_tenants (
    tenant_id   text PRIMARY KEY,
    first_seen  timestamptz NOT NULL DEFAULT now()
);

-- Each strategy's own signed position per symbol, from the fills of the IOC
-- orders it placed, and when it last created an intent (cooldown).
CREATE TABLE positions (
    tenant_id       text NOT NULL,
    strategy_id     text NOT NULL,
    symbol          text NOT NULL,
    quantity        numeric(38, 12) NOT NULL DEFAULT 0,
    last_intent_at  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, strategy_id, symbol)
);

-- Every signal (HOLD included), kept signal_retention_hours. vector_key is
-- derived from (tenant, strategy, feature vector): a vector seen again finds
-- its signal instead of making a second one (and a second order).
CREATE TABLE signals (
    tenant_id        text NOT NULL,
    signal_id        uuid NOT NULL,
    vector_key       text NOT NULL,
    strategy_id      text NOT NULL,
    symbol           text NOT NULL,
    direction        smallint NOT NULL,
    generated_at     timestamptz NOT NULL,
    client_order_id  text NOT NULL DEFAULT '',
    order_id         text,
    order_error      text,
    side             smallint NOT NULL DEFAULT 0,
    quantity         numeric(38, 12),
    payload          bytea NOT NULL,
    PRIMARY KEY (tenant_id, signal_id),
    UNIQUE (tenant_id, vector_key)
);
CREATE INDEX signals_newest ON signals (tenant_id, generated_at DESC, signal_id DESC);
CREATE INDEX signals_pending ON signals (tenant_id, generated_at) WHERE client_order_id <> '' AND order_id IS NULL AND order_error IS NULL;

ALTER TABLE strategies ENABLE ROW LEVEL SECURITY;
ALTER TABLE strategies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON strategies USING (tenant_id = current_setting('app.tenant_id')) WITH CHECK (tenant_id = current_setting('app.tenant_id'));
ALTER TABLE positions ENABLE ROW LEVEL SECURITY;
ALTER TABLE positions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON positions USING (tenant_id = current_setting('app.tenant_id')) WITH CHECK (tenant_id = current_setting('app.tenant_id'));
ALTER TABLE signals ENABLE ROW LEVEL SECURITY;
ALTER TABLE signals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON signals USING (tenant_id = current_setting('app.tenant_id')) WITH CHECK (tenant_id = current_setting('app.tenant_id'));
