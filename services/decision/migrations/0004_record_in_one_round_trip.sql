-- The hot path's writes in one round trip each (services/decision/adapters/postgres.py):
-- a tenant transaction is BEGIN, set_config, the statements, COMMIT (four
-- round trips at least); these functions set the tenant (app.tenant_id) and
-- the connection's tenant role the way runtime.storage.postgres.tenant_transaction
-- does, then write, all in the one statement that calls them (autocommit: the
-- settings end with it). Invoker rights: row-level security applies as in a
-- tenant transaction. Every name is schema-qualified (no search_path reliance).

-- Records a batch of one tenant's signals: inserts those whose vector key is
-- new (the first of a batch's copies; e_signal names each event's signal by
-- its 1-based position in the batch), reserves the cooldown of the new ones
-- with an intent (the position's last intent time: the newest of the batch per
-- strategy and symbol), writes the outbox rows of the new ones, and answers,
-- per vector key, whether it was inserted and, when it was recorded before
-- with an intent still pending and created after p_retry_after, that intent
-- (domain.intent_may_retry).
CREATE FUNCTION decision.record_signals(
    p_tenant text,
    p_signal_id uuid[],
    p_vector_key text[],
    p_strategy_id text[],
    p_symbol text[],
    p_direction smallint[],
    p_generated_at timestamptz[],
    p_client_order_id text[],
    p_side smallint[],
    p_quantity numeric[],
    p_payload bytea[],
    e_signal integer[],
    e_event_id uuid[],
    e_event_type text[],
    e_destination text[],
    e_partition_key text[],
    e_envelope bytea[],
    p_retry_after timestamptz
) RETURNS TABLE (
    vector_key text,
    inserted boolean,
    signal_id text,
    strategy_id text,
    symbol text,
    client_order_id text,
    side smallint,
    quantity numeric,
    payload bytea
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_catalog.set_config('app.tenant_id', p_tenant, true),
        pg_catalog.set_config(
            'role',
            coalesce(nullif(pg_catalog.current_setting('app.tenant_role', true), ''), 'trading_tenant'),
            true
        );
    RETURN QUERY
    WITH batch AS (
        SELECT b.*, row_number() OVER () AS n
        FROM unnest(p_signal_id, p_vector_key, p_strategy_id, p_symbol, p_direction, p_generated_at,
                    p_client_order_id, p_side, p_quantity, p_payload)
            AS b(signal_id, vector_key, strategy_id, symbol, direction, generated_at, client_order_id,
                 side, quantity, payload)
    ),
    firsts AS (
        SELECT DISTINCT ON (b.vector_key) b.* FROM batch b ORDER BY b.vector_key, b.n
    ),
    ins AS (
        INSERT INTO decision.signals AS s (tenant_id, signal_id, vector_key, strategy_id, symbol, direction,
            generated_at, client_order_id, side, quantity, payload)
        SELECT p_tenant, f.signal_id, f.vector_key, f.strategy_id, f.symbol, f.direction, f.generated_at,
            f.client_order_id, f.side, f.quantity, f.payload
        FROM firsts f ORDER BY f.n
        ON CONFLICT (tenant_id, vector_key) DO NOTHING
        RETURNING s.vector_key, s.strategy_id, s.symbol, s.generated_at, s.client_order_id, s.quantity
    ),
    reserved AS (
        INSERT INTO decision.positions AS p (tenant_id, strategy_id, symbol, last_intent_at)
        SELECT p_tenant, i.strategy_id, i.symbol, max(i.generated_at) FROM ins i
        WHERE i.client_order_id <> '' AND i.quantity IS NOT NULL
        GROUP BY i.strategy_id, i.symbol
        ON CONFLICT (tenant_id, strategy_id, symbol)
        DO UPDATE SET last_intent_at = EXCLUDED.last_intent_at, updated_at = now()
    ),
    events AS (
        INSERT INTO decision.outbox (tenant_id, event_id, event_type, destination, partition_key, envelope)
        SELECT p_tenant, e.event_id, e.event_type, e.destination, e.partition_key, e.envelope
        FROM unnest(e_signal, e_event_id, e_event_type, e_destination, e_partition_key, e_envelope)
            WITH ORDINALITY AS e(signal, event_id, event_type, destination, partition_key, envelope, n)
        JOIN firsts f ON f.n = e.signal
        JOIN ins i ON i.vector_key = f.vector_key
        ORDER BY e.n
    )
    SELECT f.vector_key, (i.vector_key IS NOT NULL), s.signal_id::text, s.strategy_id, s.symbol,
        s.client_order_id, s.side, s.quantity, s.payload
    FROM firsts f
    LEFT JOIN ins i ON i.vector_key = f.vector_key
    -- Recorded before (not by this statement, whose rows it cannot see): a pending intent to retry?
    LEFT JOIN decision.signals s ON i.vector_key IS NULL AND s.tenant_id = p_tenant
        AND s.vector_key = f.vector_key AND s.client_order_id <> '' AND s.order_id IS NULL
        AND s.order_error IS NULL AND s.intent_expired_at IS NULL AND s.quantity IS NOT NULL
        AND s.generated_at > p_retry_after
    ORDER BY f.n;
END
$$;

-- Records the answers of a batch of one tenant's placements: each pending
-- intent gets its order id (and its fill moves the strategy's position) or
-- its refusal, once (guarded by "still pending"); answers the signal ids
-- whose order id this call recorded.
CREATE FUNCTION decision.record_answers(
    p_tenant text,
    p_signal_id uuid[],
    p_order_id text[],
    p_error text[],
    p_strategy_id text[],
    p_symbol text[],
    p_signed_fill numeric[]
) RETURNS SETOF text LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_catalog.set_config('app.tenant_id', p_tenant, true),
        pg_catalog.set_config(
            'role',
            coalesce(nullif(pg_catalog.current_setting('app.tenant_role', true), ''), 'trading_tenant'),
            true
        );
    RETURN QUERY
    WITH answers AS (
        SELECT DISTINCT ON (a.signal_id) a.*
        FROM unnest(p_signal_id, p_order_id, p_error, p_strategy_id, p_symbol, p_signed_fill)
            AS a(signal_id, order_id, error, strategy_id, symbol, signed_fill)
        ORDER BY a.signal_id
    ),
    answered AS (
        UPDATE decision.signals AS s SET order_id = a.order_id, order_error = a.error
        FROM answers a
        WHERE s.tenant_id = p_tenant AND s.signal_id = a.signal_id
            AND s.client_order_id <> '' AND s.order_id IS NULL AND s.order_error IS NULL
            AND s.intent_expired_at IS NULL
        RETURNING s.signal_id, a.order_id, a.strategy_id, a.symbol, a.signed_fill
    ),
    moved AS (
        INSERT INTO decision.positions AS p (tenant_id, strategy_id, symbol, quantity)
        SELECT p_tenant, x.strategy_id, x.symbol, sum(x.signed_fill) FROM answered x
        WHERE x.order_id IS NOT NULL AND x.signed_fill <> 0
        GROUP BY x.strategy_id, x.symbol
        ON CONFLICT (tenant_id, strategy_id, symbol)
        DO UPDATE SET quantity = p.quantity + EXCLUDED.quantity, updated_at = now()
    )
    SELECT x.signal_id::text FROM answered x WHERE x.order_id IS NOT NULL;
END
$$;
