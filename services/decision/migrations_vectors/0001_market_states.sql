-- Decision's market memory (services/decision/memory.py): one row per market
-- state (services/decision/embedding.py, 40 dimensions, unit length) with
-- the outcome that followed it, in the payload. Needs pgvector: these
-- migrations run on settings.vectors.postgres_dsn (runtime/vectors/pgvector.py),
-- recorded as "decision.vectors".
--
-- scope: 'market' for market data (shared by every tenant), or a tenant id
-- for a tenant's own records (none today; the port allows them and the
-- policies below keep them apart).
CREATE TABLE market_states (
    scope      text NOT NULL,
    id         uuid NOT NULL,
    symbol     text NOT NULL,
    at         timestamptz NOT NULL,
    embedding  vector(40) NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (scope, id)
);
-- Retention (delete older than) and time-filtered searches.
CREATE INDEX market_states_at ON market_states (scope, at);
-- Symbol-filtered searches of a small scope, planned without the vector index.
CREATE INDEX market_states_symbol_at ON market_states (scope, symbol, at);
-- k-nearest-neighbour searches by cosine distance (the embeddings are unit
-- vectors). m 16 / ef_construction 64 are pgvector's defaults: recall and
-- latency measured in bench/results/vectors.md.
CREATE INDEX market_states_embedding ON market_states USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);

ALTER TABLE market_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE market_states FORCE ROW LEVEL SECURITY;
-- Market data: the service reads and writes it with or without a tenant.
CREATE POLICY market_data ON market_states
    USING (scope = 'market') WITH CHECK (scope = 'market');
-- A tenant's own records: only inside that tenant's transaction.
CREATE POLICY tenant_isolation ON market_states
    USING (scope = current_setting('app.tenant_id', true))
    WITH CHECK (scope = current_setting('app.tenant_id', true));
