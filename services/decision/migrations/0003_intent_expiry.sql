-- Order intents expire (trading.decision.v1.IntentStatus EXPIRED): an intent
-- whose PlaceOrder never got an answer is given up after the intent
-- time-to-live instead of staying pending forever. The row is the state:
-- pending = client_order_id <> '' AND order_id, order_error and
-- intent_expired_at all NULL. (Numbered 0003: 0002 is left to the service
-- role / outbox migrations other services have at that number.)
ALTER TABLE signals ADD COLUMN intent_expired_at timestamptz;
DROP INDEX signals_pending;
CREATE INDEX signals_pending ON signals (tenant_id, generated_at)
    WHERE client_order_id <> '' AND order_id IS NULL AND order_error IS NULL AND intent_expired_at IS NULL;
