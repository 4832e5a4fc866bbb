# shellcheck shell=bash
# Private PostgreSQL for the local cluster: binaries from the Debian package (installed when
# missing), a data folder of the repository, its own port, trust authentication on loopback only.
# Sourced by infra/cluster and .ci/run; expects OSTOR_ROOT to be the repository root.

OSTOR_PG_PORT=${OSTOR_PG_PORT:-55432}
OSTOR_PG_DB=${OSTOR_PG_DB:-ostor}
OSTOR_PG_DATA=${OSTOR_PG_DATA:-${OSTOR_DATA:-$OSTOR_ROOT/.data}/pg}
OSTOR_PG_LOG=${OSTOR_PG_LOG:-${OSTOR_DATA:-$OSTOR_ROOT/.data}/logs/postgres.log}
# Where it listens: loopback, plus the cluster's bridge when the hosts run in network namespaces.
OSTOR_PG_LISTEN=${OSTOR_PG_LISTEN:-127.0.0.1}

pg_connection_string() {
  echo "Host=${1:-127.0.0.1};Port=$OSTOR_PG_PORT;Username=postgres;Database=$OSTOR_PG_DB;Maximum Pool Size=30"
}

pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

pg_install_if_missing() {
  pg_bindir >/dev/null && return 0
  echo "PostgreSQL binaries not found; installing the Debian package 'postgresql'..." >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: PostgreSQL is missing and installing it needs root (apt-get install postgresql)" >&2
    return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bindir >/dev/null
}

# PostgreSQL refuses to run as root; as root we run it as the 'postgres' user the package creates.
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# As root, the data folder must be reachable by 'postgres'. When the repository lives somewhere
# it cannot traverse (e.g. under /root), the folder lives in /var/tmp and .data/pg links to it.
pg_prepare_datadir() {
  mkdir -p "$(dirname "$OSTOR_PG_DATA")" "$(dirname "$OSTOR_PG_LOG")"
  [ "$(id -u)" -eq 0 ] || { mkdir -p "$OSTOR_PG_DATA"; return 0; }
  if [ ! -e "$OSTOR_PG_DATA" ]; then
    mkdir -p "$OSTOR_PG_DATA"
    chown postgres:postgres "$OSTOR_PG_DATA"
    if ! runuser -u postgres -- test -w "$OSTOR_PG_DATA"; then
      rmdir "$OSTOR_PG_DATA"
      local elsewhere
      elsewhere=/var/tmp/ostor-pg-$(echo -n "$OSTOR_PG_DATA" | md5sum | cut -c1-12)
      mkdir -p "$elsewhere"
      chown postgres:postgres "$elsewhere"
      ln -s "$elsewhere" "$OSTOR_PG_DATA"
    fi
  fi
  touch "$OSTOR_PG_LOG"
  chown postgres:postgres "$OSTOR_PG_LOG"
}

pg_is_running() {
  local bin; bin=$(pg_bindir) || return 1
  [ -f "$OSTOR_PG_DATA/PG_VERSION" ] && pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" status >/dev/null 2>&1
}

pg_start() {
  pg_install_if_missing
  local bin; bin=$(pg_bindir)
  pg_prepare_datadir
  if [ ! -f "$OSTOR_PG_DATA/PG_VERSION" ]; then
    echo "initializing PostgreSQL in $OSTOR_PG_DATA" >&2
    pg_as_owner "$bin/initdb" -D "$OSTOR_PG_DATA" -U postgres -A trust -E UTF8 --no-locale >/dev/null
  fi
  # Trust for the namespaces' subnet only when the hosts run there (OSTOR_PG_TRUST_SUBNET, a CIDR).
  if [ -n "${OSTOR_PG_TRUST_SUBNET:-}" ] && ! grep -q "^host all all $OSTOR_PG_TRUST_SUBNET trust" "$OSTOR_PG_DATA/pg_hba.conf"; then
    echo "host all all $OSTOR_PG_TRUST_SUBNET trust" >>"$OSTOR_PG_DATA/pg_hba.conf"
  fi
  if ! pg_is_running; then
    # A crash leaves a stale pid file; pg_ctl start handles it when the pid is not alive.
    pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" -l "$OSTOR_PG_LOG" -w -t 60 start \
      -o "-p $OSTOR_PG_PORT -c listen_addresses=$OSTOR_PG_LISTEN -k /tmp -c max_connections=200" >/dev/null
  fi
  local psql="env PGOPTIONS=--client-min-messages=warning $bin/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p $OSTOR_PG_PORT -U postgres"
  if ! $psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$OSTOR_PG_DB'" | grep -q 1; then
    $psql -d postgres -c "CREATE DATABASE \"$OSTOR_PG_DB\"" >/dev/null
  fi
  $psql -d "$OSTOR_PG_DB" -f "$OSTOR_ROOT/infra/sql/orleans-schema.sql" >/dev/null
}

pg_stop() {
  local bin; bin=$(pg_bindir) || return 0
  if pg_is_running; then
    pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" -m fast -w stop >/dev/null
  fi
}
