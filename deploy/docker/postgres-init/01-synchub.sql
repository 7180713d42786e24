-- Run once by the postgres image (docker-entrypoint-initdb.d) on an empty data directory, as the
-- superuser: database `synchub` and, per service, a LOGIN role owning a schema of the same name
-- with its search_path set to it. Same layout as hub_devstack.provision.provision_service (used
-- by `make up` and the tests): a service can create and use tables only in its own schema, and
-- nobody may create objects in `public`.
--
-- The passwords are for the local docker-compose stack only; they appear in the HUB_DB__URL of
-- each service in docker-compose.yml (tests/test_deploy_config.py checks that they agree).

\set ON_ERROR_STOP on

CREATE DATABASE synchub;

CREATE ROLE "identity" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'identity-dev-password';
CREATE ROLE "linking" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'linking-dev-password';
CREATE ROLE "tasks" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'tasks-dev-password';
CREATE ROLE "notifications" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'notifications-dev-password';

ALTER ROLE "identity" SET search_path = "identity";
ALTER ROLE "linking" SET search_path = "linking";
ALTER ROLE "tasks" SET search_path = "tasks";
ALTER ROLE "notifications" SET search_path = "notifications";

GRANT CONNECT, TEMPORARY ON DATABASE synchub TO "identity", "linking", "tasks", "notifications";

\connect synchub

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA "identity" AUTHORIZATION "identity";
CREATE SCHEMA "linking" AUTHORIZATION "linking";
CREATE SCHEMA "tasks" AUTHORIZATION "tasks";
CREATE SCHEMA "notifications" AUTHORIZATION "notifications";
