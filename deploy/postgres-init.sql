-- Run once by the postgres image on an empty data directory (mounted into
-- /docker-entrypoint-initdb.d by compose.yaml). The same roles and databases as
-- scripts/stack.sh creates for the local stack: database saga_<svc>, owned by
-- role saga_<svc>, password saga_<svc> (development only). CREATEDB because the
-- test suite creates test_saga_<svc> for its integration tests.
--
-- One row per service (the list of common/services.py); psql's \gexec runs each
-- generated statement in turn, outside a transaction as CREATE DATABASE needs.
-- tests/e2e/test_deploy.py runs this file against a throwaway PostgreSQL.

SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', 'saga_' || service, 'saga_' || service),
       format('CREATE DATABASE %I OWNER %I', 'saga_' || service, 'saga_' || service),
       format('REVOKE ALL ON DATABASE %I FROM PUBLIC', 'saga_' || service)
FROM unnest(ARRAY['order', 'payment', 'inventory', 'shipping']) AS service
\gexec
