-- The outbox becomes the shared shape of runtime/outbox.py (outbox_table_sql):
-- one envelope may go to both transports, so an event id is unique per
-- destination; sent rows are pruned by sent_at after the retention.
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_destination UNIQUE (event_id, destination);
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
