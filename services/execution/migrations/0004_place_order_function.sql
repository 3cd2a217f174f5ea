-- PlaceOrder's write in one round trip. A tenant transaction from the client
-- is four (BEGIN; the tenant and role settings; the statement; COMMIT); this
-- function is called as one statement in autocommit and does the same inside:
-- it scopes the transaction to the tenant and switches to the pool's tenant
-- role (SET LOCAL semantics, so both end with the call's transaction), then
-- runs the placement as that role, so row-level security applies exactly as
-- in tenant_transaction (runtime/storage/postgres.py). SECURITY INVOKER (the
-- default): it can do nothing its caller could not.
--
-- The placement is one statement: the dependent inserts read the `placed` CTE,
-- so a conflict on the client order id inserts nothing at all. Returns 1 when
-- the order was placed, 0 when the tenant already has an order with this
-- client order id.
CREATE FUNCTION place_order(
    p_tenant_id text, p_order_id uuid, p_client_order_id text, p_request_hash bytea, p_symbol text,
    p_side smallint, p_type smallint, p_time_in_force smallint, p_quantity numeric, p_limit_price numeric,
    p_status smallint, p_filled_quantity numeric, p_filled_notional numeric, p_reject_reason text,
    p_cancel_reason smallint, p_status_message text, p_strategy_id text, p_venue text,
    p_venue_order_id text, p_risk_check_id text, p_expires_at timestamptz, p_created_at timestamptz,
    p_updated_at timestamptz, p_version bigint,
    p_fill_ids uuid[], p_fill_order_ids uuid[], p_fill_prices numeric[], p_fill_quantities numeric[],
    p_fill_liquidities smallint[], p_fill_fees numeric[], p_fill_fee_currencies text[],
    p_fill_venue_ids text[], p_fill_times timestamptz[],
    p_event_ids uuid[], p_event_types text[], p_destinations text[], p_partition_keys text[],
    p_envelopes bytea[]
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    placed_count integer;
BEGIN
    IF p_tenant_id IS NULL OR p_tenant_id = '' THEN
        RAISE EXCEPTION 'tenant id must not be empty' USING ERRCODE = '22023';
    END IF;
    PERFORM set_config('app.tenant_id', p_tenant_id, true),
            set_config('role', coalesce(nullif(current_setting('app.tenant_role', true), ''), 'trading_tenant'), true);
    WITH placed AS (
        INSERT INTO execution.orders (tenant_id, order_id, client_order_id, request_hash, symbol, side, type,
            time_in_force, quantity, limit_price, status, filled_quantity, filled_notional, reject_reason,
            cancel_reason, status_message, strategy_id, venue, venue_order_id, risk_check_id, expires_at,
            created_at, updated_at, version)
        VALUES (p_tenant_id, p_order_id, p_client_order_id, p_request_hash, p_symbol, p_side, p_type,
            p_time_in_force, p_quantity, p_limit_price, p_status, p_filled_quantity, p_filled_notional,
            p_reject_reason, p_cancel_reason, p_status_message, p_strategy_id, p_venue, p_venue_order_id,
            p_risk_check_id, p_expires_at, p_created_at, p_updated_at, p_version)
        ON CONFLICT ON CONSTRAINT orders_client_order_id DO NOTHING
        RETURNING tenant_id
    ), fills AS (
        INSERT INTO execution.executions (tenant_id, execution_id, order_id, price, quantity, liquidity, fee,
            fee_currency, venue_execution_id, executed_at)
        SELECT p.tenant_id, f.* FROM placed p,
            unnest(p_fill_ids, p_fill_order_ids, p_fill_prices, p_fill_quantities, p_fill_liquidities,
                   p_fill_fees, p_fill_fee_currencies, p_fill_venue_ids, p_fill_times) AS f
    ), events AS (
        INSERT INTO execution.outbox (tenant_id, event_id, event_type, destination, partition_key, envelope)
        SELECT p.tenant_id, x.* FROM placed p,
            unnest(p_event_ids, p_event_types, p_destinations, p_partition_keys, p_envelopes) AS x
    )
    SELECT count(*) INTO placed_count FROM placed;
    RETURN placed_count;
END
$$;
