-- The read-only role for `tidegate serve --store`, the CLI's --store and Grafana (docs/fleet.md).
--
--   psql -d tidegate -v reader=tidegate_reader -v owner=tidegate -f deploy/postgresql/reader-role.sql
--   psql -d tidegate -c '\password tidegate_reader'     # asks; sends only the SCRAM verifier
--
-- reader: the role to create (or update); owner: the role the gateways and forwarders write
-- as, which owns the schema's tables (its future tables, from later migrations, become
-- readable too). Run it as the owner or a superuser, after the schema exists (the first
-- gateway or forwarder to connect creates it). Running it again changes nothing.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', :'reader')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \gexec

GRANT CONNECT ON DATABASE :"DBNAME" TO :"reader";
GRANT USAGE ON SCHEMA tidegate TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA tidegate TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA tidegate GRANT SELECT ON TABLES TO :"reader";

-- Belt and braces: even a table granted to it by mistake later stays read-only through this
-- role, and a runaway query ends.
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = '60s';
