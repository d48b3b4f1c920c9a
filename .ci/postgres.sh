#!/usr/bin/env bash
# Starts Debian's PostgreSQL and creates what the tests use: the seeds' role (pgusr/pgpwrd)
# and three databases: the seeds' example config, the store test, and the experiment-loop test
# (scripts' INSERTs there are claimed by whichever run listens, so it has its own).
set -euo pipefail
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q online; then
  if ! pg_lsclusters -h | grep -q .; then
    pg_createcluster "$version" main >/dev/null
  fi
  pg_ctlcluster "$version" main start
fi
psql_as_postgres() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'pgusr'")" != 1 ]; then
  psql_as_postgres -c "CREATE ROLE pgusr LOGIN PASSWORD 'pgpwrd'"
fi
for db in nextmini nextmini_test nextmini_loop; do
  if [ "$(psql_as_postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    psql_as_postgres -c "CREATE DATABASE $db OWNER pgusr"
  fi
done
