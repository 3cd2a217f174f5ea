-- The events already turned into delivery jobs, by event id: a redelivered or
-- re-published event (at-least-once from every outbox) makes no second set of
-- jobs, also after JetStream's two-minute duplicate window. Rows older than
-- the retention (7 days, the jobs stream's) are pruned by the fan-out.
CREATE TABLE fanned_out (
    tenant_id      text        NOT NULL,
    event_id       text        NOT NULL,
    fanned_out_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX fanned_out_age ON fanned_out (tenant_id, fanned_out_at);

ALTER TABLE "fanned_out" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "fanned_out" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "fanned_out" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));
