-- The outbox becomes the shared shape of runtime/outbox.py (outbox_table_sql):
-- rows are kept with sent_at instead of deleted, carry their event id, type,
-- destination and ordering key, and a row that can never be published is set
-- aside (failed_at). Rows still unsent from the old relay keep their envelope
-- (the truth consumers dedupe on); their event_id column gets a fresh uuid
-- only because the old table did not store it.
ALTER TABLE outbox
    ADD COLUMN event_id      uuid,
    ADD COLUMN event_type    text        NOT NULL DEFAULT '',
    ADD COLUMN destination   text        NOT NULL DEFAULT 'kafka' CHECK (destination IN ('kafka', 'nats')),
    ADD COLUMN partition_key text,
    ADD COLUMN sent_at       timestamptz,
    ADD COLUMN failed_at     timestamptz,
    ADD COLUMN last_error    text        NOT NULL DEFAULT '';
UPDATE outbox SET event_id = gen_random_uuid(), partition_key = tenant_id;
ALTER TABLE outbox
    ALTER COLUMN event_id SET NOT NULL,
    ALTER COLUMN partition_key SET NOT NULL,
    ALTER COLUMN event_type DROP DEFAULT,
    ALTER COLUMN destination DROP DEFAULT,
    ADD CONSTRAINT outbox_event_destination UNIQUE (event_id, destination);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
-- The relay runs as trading_identity_app, which 0002's service_role policy lets see every row.
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
