#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) exist: the tests and
# benchmarks start their own server in a temp dir on a free loopback port
# (tests/support/postgres.py). Installs Debian's package when run as root; otherwise says how.
# Never starts, stops or reconfigures the machine's own PostgreSQL service.
set -euo pipefail
have_server() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
      return 0
    fi
  done
  return 1
}
if have_server; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found: installing postgresql with apt-get" >&2
  apt-get update -qq
  # The package may start a system cluster on 5432; tests never use it (and this script
  # does not touch it).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  if have_server; then
    exit 0
  fi
  echo "error: apt-get installed postgresql but no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "error: the PostgreSQL server binaries are needed (initdb, pg_ctl, postgres). Install them: sudo apt-get install postgresql" >&2
exit 1
