#!/bin/sh
# Run once by the postgres image, when it creates the database (an empty data volume): a role
# for the gateway that is not a superuser, and a schema of its own that it owns, so that it can
# create its tables there at its first start. It needs nothing else: advisory locks and
# LISTEN/NOTIFY take no privilege. The DSN's search_path=webhookgw picks the schema.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$GATEWAY_DB_PASSWORD" <<'SQL'
CREATE ROLE gateway LOGIN PASSWORD :'password';
CREATE SCHEMA webhookgw AUTHORIZATION gateway;
SQL
