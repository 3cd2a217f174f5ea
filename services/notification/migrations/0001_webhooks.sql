-- Webhooks of each tenant and the dead letters of their deliveries.
--
-- Both tables are tenant data with row-level security (the policy text is
-- exactly runtime.storage.postgres.tenant_rls_sql(<table>)). Every access,
-- the API's and the delivery workers' alike, runs in tenant_transaction
-- (role trading_tenant) for the tenant of the call or of the event, so no
-- worker policy is needed.
--
-- Ids are UUIDv7: ordering by id is ordering by creation time (newest first
-- listings are keyset-paged on the id alone).

CREATE TABLE webhooks (
    tenant_id      text        NOT NULL,
    webhook_id     uuid        NOT NULL,
    url            text        NOT NULL CHECK (length(url) <= 2048),
    -- Empty: every event type notification delivers.
    event_types    text[]      NOT NULL DEFAULT '{}',
    description    text        NOT NULL DEFAULT '' CHECK (length(description) <= 256),
    -- The signing secret, AES-256-GCM (nonce || ciphertext, webhook id as
    -- associated data); see services/notification/signing.py.
    secret_sealed  bytea       NOT NULL,
    secret_prefix  text        NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, webhook_id)
);

CREATE TABLE dead_letters (
    tenant_id         text        NOT NULL,
    dead_letter_id    uuid        NOT NULL,
    webhook_id        uuid        NOT NULL,
    delivery_id       uuid        NOT NULL,
    url               text        NOT NULL,
    event_id          text        NOT NULL,
    event_type        text        NOT NULL,
    attempts          integer     NOT NULL CHECK (attempts >= 0),
    last_error        text        NOT NULL,
    last_http_status  integer     NOT NULL DEFAULT 0,
    first_attempt_at  timestamptz NOT NULL,
    last_attempt_at   timestamptz NOT NULL,
    dead_lettered_at  timestamptz NOT NULL,
    -- The event envelope as it was to be delivered (what a redrive sends).
    envelope          bytea       NOT NULL,
    -- Sequence of the same dead letter in the NATS DLQ stream (what
    -- `tradingctl deadletters` lists); NULL if it could not be written there.
    dlq_seq           bigint,
    PRIMARY KEY (tenant_id, dead_letter_id),
    -- DeleteWebhook drops the webhook's dead letters.
    FOREIGN KEY (tenant_id, webhook_id) REFERENCES webhooks (tenant_id, webhook_id) ON DELETE CASCADE
);

CREATE INDEX dead_letters_by_webhook ON dead_letters (tenant_id, webhook_id, dead_letter_id DESC);

ALTER TABLE "webhooks" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "webhooks" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "webhooks" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));

ALTER TABLE "dead_letters" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "dead_letters" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "dead_letters" USING ("tenant_id" = current_setting('app.tenant_id')) WITH CHECK ("tenant_id" = current_setting('app.tenant_id'));
