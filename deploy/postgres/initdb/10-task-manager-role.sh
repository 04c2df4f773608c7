#!/usr/bin/env bash
# The task manager's database role, least privilege. The postgres image runs this once, as
# its superuser, when the data volume is first initialised (/docker-entrypoint-initdb.d).
#
# The role may log in and owns its database and that database's `public` schema, so it can
# run its own migrations (they create tables, indexes, functions and triggers; no
# extensions). It is not SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS, and
# other roles may not connect to its database.
#
# Reads MANAGER_DB_POSTGRES_USER (default service_task_manager), MANAGER_DB_POSTGRES_NAME
# (default tasks) and MANAGER_DB_POSTGRES_PASSWORD (required); the password reaches psql
# through the environment (\getenv), never on a command line.
set -euo pipefail

: "${MANAGER_DB_POSTGRES_PASSWORD:?set MANAGER_DB_POSTGRES_PASSWORD for the task manager role}"
export MANAGER_DB_POSTGRES_USER="${MANAGER_DB_POSTGRES_USER:-service_task_manager}"
export MANAGER_DB_POSTGRES_NAME="${MANAGER_DB_POSTGRES_NAME:-tasks}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" <<'SQL'
\getenv role MANAGER_DB_POSTGRES_USER
\getenv database MANAGER_DB_POSTGRES_NAME
\getenv password MANAGER_DB_POSTGRES_PASSWORD
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
\connect :"database"
-- PostgreSQL 15 gives `public` to the database owner already; older servers to the superuser.
ALTER SCHEMA public OWNER TO :"role";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
