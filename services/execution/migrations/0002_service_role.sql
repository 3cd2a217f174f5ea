-- Roles per service (runtime/security/postgres_roles.py): these tables are
-- owned by trading_execution_owner, the service logs in as
-- trading_execution_app (not the owner, not a superuser, no BYPASSRLS) and
-- API calls run as trading_execution_tenant.
--
-- The background workers (the paper venue's matcher, the expiry sweep and
-- the outbox relay) run as the login role outside tenant transactions and
-- must see every tenant's working orders and unsent events; 0001's
-- service_worker policies name the role that ran 0001, so the login role
-- gets its own. The tenant role is not a member of it.
CREATE POLICY service_role ON orders TO trading_execution_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON executions TO trading_execution_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON outbox TO trading_execution_app USING (true) WITH CHECK (true);
