-- The relationship graph of each tenant (runtime/graph/postgres.py): the
-- lineage audit keeps from the event streams (tenant -> strategy -> signal
-- -> order intent -> order -> fill, model version -> signal).
--
-- Kept beside the event store because it is derived from the same events
-- by the same consumer and, like them, only grows: the service's roles may
-- SELECT and INSERT both tables and UPDATE nodes (an upsert keeps the
-- earliest time and merges attributes), never DELETE
-- (runtime/security/postgres_roles.py).
CREATE TABLE graph_nodes (
    tenant_id text        NOT NULL CHECK (tenant_id <> ''),
    kind      text        NOT NULL CHECK (kind <> ''),
    id        text        NOT NULL CHECK (id <> ''),
    at        timestamptz NOT NULL,
    attrs     jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, kind, id)
);

CREATE TABLE graph_edges (
    tenant_id text        NOT NULL CHECK (tenant_id <> ''),
    kind      text        NOT NULL CHECK (kind <> ''),
    src_kind  text        NOT NULL,
    src_id    text        NOT NULL,
    dst_kind  text        NOT NULL,
    dst_id    text        NOT NULL,
    -- The time of the effect: a strategy's signals of a day are a range scan.
    at        timestamptz NOT NULL,
    -- Upstream steps (a fill to its order, a signal to its causes) look up
    -- by the effect: the key serves them.
    PRIMARY KEY (tenant_id, dst_kind, dst_id, kind, src_kind, src_id)
);

-- Downstream steps and the paged first hop of a subgraph (a strategy's
-- signals in a time range, in time order) look up by the cause.
CREATE INDEX graph_edges_downstream ON graph_edges (tenant_id, src_kind, src_id, at, dst_kind, dst_id);

ALTER TABLE "graph_nodes" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "graph_nodes" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "graph_nodes" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

ALTER TABLE "graph_edges" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "graph_edges" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "graph_edges" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));
