-- Run once by the postgres image on an empty data directory (mounted into
-- /docker-entrypoint-initdb.d by compose.yaml). The same roles and databases as
-- scripts/stack.sh creates for the local stack: database saga_<svc>, owned by
-- role saga_<svc>, password saga_<svc> (development only). CREATEDB because the
-- test suite creates test_saga_<svc> for its integration tests.

CREATE ROLE saga_order LOGIN CREATEDB PASSWORD 'saga_order';
CREATE DATABASE saga_order OWNER saga_order;
REVOKE ALL ON DATABASE saga_order FROM PUBLIC;

CREATE ROLE saga_payment LOGIN CREATEDB PASSWORD 'saga_payment';
CREATE DATABASE saga_payment OWNER saga_payment;
REVOKE ALL ON DATABASE saga_payment FROM PUBLIC;

CREATE ROLE saga_inventory LOGIN CREATEDB PASSWORD 'saga_inventory';
CREATE DATABASE saga_inventory OWNER saga_inventory;
REVOKE ALL ON DATABASE saga_inventory FROM PUBLIC;

CREATE ROLE saga_shipping LOGIN CREATEDB PASSWORD 'saga_shipping';
CREATE DATABASE saga_shipping OWNER saga_shipping;
REVOKE ALL ON DATABASE saga_shipping FROM PUBLIC;
