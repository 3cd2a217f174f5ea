-- Roles per service (runtime/security/postgres_roles.py): these tables are
-- owned by trading_identity_owner, the service logs in as trading_identity_app
-- (not the owner, not a superuser, no BYPASSRLS) and tenant transactions run
-- as trading_identity_tenant.
--
-- The platform work 0001 names (operator listings of tenants, the API key
-- cache rebuild, the outbox relay, signing keys, seeding) runs as the login
-- role outside tenant transactions, across tenants: these policies let it,
-- and only it (the tenant role is not a member of it).
CREATE POLICY service_role ON tenants TO trading_identity_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON users TO trading_identity_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON refresh_tokens TO trading_identity_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON api_keys TO trading_identity_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON idempotency TO trading_identity_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON signing_keys TO trading_identity_app USING (true) WITH CHECK (true);
CREATE POLICY service_role ON outbox TO trading_identity_app USING (true) WITH CHECK (true);

-- login_tenant() runs as its owner, which FORCE ROW LEVEL SECURITY on tenants
-- holds to the policies too: it may read (only read) every tenant's row.
CREATE POLICY login_lookup ON tenants FOR SELECT TO trading_identity_owner USING (true);
