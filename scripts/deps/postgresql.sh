#!/usr/bin/env bash
# PostgreSQL 15: the tests start throwaway clusters (initdb in a temp dir) to run the API
# suite against PostgreSQL as well as SQLite. Does nothing when it is present.
set -euo pipefail
[ -x /usr/lib/postgresql/15/bin/initdb ] && exit 0
[ "$(id -u)" = 0 ] || { echo "install postgresql-15 (apt-get install postgresql-15)" >&2; exit 1; }
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15
