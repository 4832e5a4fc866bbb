# shellcheck shell=bash
# Private PostgreSQL for the local cluster: binaries from the Debian package (installed when
# missing), a data folder of the repository, its own port on loopback, and nothing open to
# another local user: no Unix socket at all, scram-sha-256 passwords on TCP, generated once and
# kept 0600 in $DATA/secrets. The silos connect as role 'ostor', which owns the ostor database
# and nothing else; only these scripts use the superuser.
# Sourced by infra/cluster; expects OSTOR_ROOT to be the repository root.

OSTOR_PG_PORT=${OSTOR_PG_PORT:-55432}
OSTOR_PG_DB=${OSTOR_PG_DB:-ostor}
OSTOR_PG_DATA=${OSTOR_PG_DATA:-${OSTOR_DATA:-$OSTOR_ROOT/.data}/pg}
OSTOR_PG_LOG=${OSTOR_PG_LOG:-${OSTOR_DATA:-$OSTOR_ROOT/.data}/logs/postgres.log}
# Where it listens: loopback, plus the cluster's bridge when the hosts run in network namespaces.
OSTOR_PG_LISTEN=${OSTOR_PG_LISTEN:-127.0.0.1}
OSTOR_PG_SECRETS=${OSTOR_PG_SECRETS:-${OSTOR_DATA:-$OSTOR_ROOT/.data}/secrets}
OSTOR_PG_ROLE=ostor

# The silos' connection string: the password is not in it (a command line is visible to every
# local user in ps) but in a pgpass file of mode 0600 that Npgsql reads.
pg_connection_string() {
  echo "Host=${1:-127.0.0.1};Port=$OSTOR_PG_PORT;Username=$OSTOR_PG_ROLE;Database=$OSTOR_PG_DB;Passfile=$OSTOR_PG_SECRETS/pgpass;Maximum Pool Size=30"
}

# One password per role, made once: 32 random characters in a file only the owner reads.
pg_password() {
  local file=$OSTOR_PG_SECRETS/$1.password
  if [ ! -s "$file" ]; then
    (umask 077 && mkdir -p "$OSTOR_PG_SECRETS" && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$file.tmp" && mv "$file.tmp" "$file")
  fi
  cat "$file"
}

# pgpass lines for the silos (any host: loopback or the namespaces' bridge).
pg_write_pgpass() {
  (umask 077 && echo "*:$OSTOR_PG_PORT:$OSTOR_PG_DB:$OSTOR_PG_ROLE:$(pg_password "$OSTOR_PG_ROLE")" >"$OSTOR_PG_SECRETS/pgpass")
}

# psql as the superuser, over TCP, with its password from the environment of this one process.
pg_superuser_psql() {
  local bin; bin=$(pg_bindir)
  PGPASSWORD=$(pg_password postgres) PGOPTIONS=--client-min-messages=warning \
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$OSTOR_PG_PORT" -U postgres "$@"
}

# Client authentication: passwords (scram-sha-256) on loopback, and for the role 'ostor' alone
# on the namespaces' subnet when the hosts run there; no local (socket) line, as there is no socket.
pg_write_hba() {
  local hba=$OSTOR_PG_DATA/pg_hba.conf
  {
    echo "# Written by infra/lib/postgres.sh: passwords on TCP only; the server has no Unix socket."
    echo "host all all 127.0.0.1/32 scram-sha-256"
    echo "host all all ::1/128 scram-sha-256"
    if [ -n "${OSTOR_PG_HOSTS_SUBNET:-}" ]; then
      echo "host $OSTOR_PG_DB $OSTOR_PG_ROLE $OSTOR_PG_HOSTS_SUBNET scram-sha-256"
    fi
  } | pg_as_owner tee "$hba.new" >/dev/null
  pg_as_owner mv "$hba.new" "$hba"
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
  chmod 600 "$OSTOR_PG_LOG"
}

pg_is_running() {
  local bin; bin=$(pg_bindir) || return 1
  [ -f "$OSTOR_PG_DATA/PG_VERSION" ] && pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" status >/dev/null 2>&1
}

pg_start() {
  pg_install_if_missing
  local bin; bin=$(pg_bindir)
  pg_prepare_datadir
  local fresh=0
  if [ ! -f "$OSTOR_PG_DATA/PG_VERSION" ]; then
    echo "initializing PostgreSQL in $OSTOR_PG_DATA" >&2
    # The superuser has a password from its first moment: never a trust window.
    local pwfile; pwfile=$(mktemp)
    pg_password postgres >"$pwfile"
    [ "$(id -u)" -ne 0 ] || chown postgres "$pwfile"
    pg_as_owner "$bin/initdb" -D "$OSTOR_PG_DATA" -U postgres -A scram-sha-256 --pwfile="$pwfile" -E UTF8 --no-locale >/dev/null
    rm -f "$pwfile"
    fresh=1
  fi
  # A server from before the lockdown still has its socket in /tmp: restart it without.
  if pg_is_running && [ -S "/tmp/.s.PGSQL.$OSTOR_PG_PORT" ]; then
    pg_stop
  fi
  local trusting=0
  grep -qE '^[^#]*[[:space:]]trust([[:space:]]|$)' "$OSTOR_PG_DATA/pg_hba.conf" 2>/dev/null && trusting=1
  [ $trusting -eq 1 ] && [ $fresh -eq 0 ] && echo "locking down PostgreSQL in $OSTOR_PG_DATA (it trusted every local connection): passwords in $OSTOR_PG_SECRETS" >&2
  [ $trusting -eq 1 ] || pg_write_hba
  if pg_is_running && [ $trusting -eq 0 ]; then
    pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" reload >/dev/null
  elif ! pg_is_running; then
    # A crash leaves a stale pid file; pg_ctl start handles it when the pid is not alive.
    # unix_socket_directories empty: no socket in /tmp (or anywhere) for another user to reach.
    pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" -l "$OSTOR_PG_LOG" -w -t 60 start \
      -o "-p $OSTOR_PG_PORT -c listen_addresses=$OSTOR_PG_LISTEN -c unix_socket_directories= -c max_connections=200 -c password_encryption=scram-sha-256" >/dev/null
  fi
  if [ $trusting -eq 1 ]; then
    # A data folder from before the lockdown: set the superuser's password while trust still lets us in, then close it.
    # On standard input: a password on a command line is visible to every local user in ps.
    echo "ALTER ROLE postgres PASSWORD '$(pg_password postgres)';" \
      | PGOPTIONS=--client-min-messages=warning "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$OSTOR_PG_PORT" -U postgres -d postgres >/dev/null
    pg_write_hba
    pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" reload >/dev/null
  fi
  pg_ensure_database
}

# The role 'ostor' (no superuser, no role or database creation) owns the database and every
# table of the schema; other databases are closed to it and to everyone else's PUBLIC grant.
pg_ensure_database() {
  local password; password=$(pg_password "$OSTOR_PG_ROLE")
  pg_superuser_psql -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$OSTOR_PG_ROLE') THEN
    CREATE ROLE $OSTOR_PG_ROLE LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
  END IF;
END \$\$;
ALTER ROLE $OSTOR_PG_ROLE LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '$password';
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;
SQL
  if ! pg_superuser_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$OSTOR_PG_DB'" | grep -q 1; then
    pg_superuser_psql -d postgres -c "CREATE DATABASE \"$OSTOR_PG_DB\" OWNER $OSTOR_PG_ROLE" >/dev/null
  fi
  # A database from before the lockdown belongs to the superuser: hand it and its tables over.
  pg_superuser_psql -d "$OSTOR_PG_DB" >/dev/null <<SQL
ALTER DATABASE "$OSTOR_PG_DB" OWNER TO $OSTOR_PG_ROLE;
REVOKE ALL ON DATABASE "$OSTOR_PG_DB" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE "$OSTOR_PG_DB" TO $OSTOR_PG_ROLE;
ALTER SCHEMA public OWNER TO $OSTOR_PG_ROLE;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
DO \$\$ DECLARE object record; BEGIN
  FOR object IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'v') LOOP
    EXECUTE format('ALTER %s public.%I OWNER TO $OSTOR_PG_ROLE', CASE object.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, object.relname);
  END LOOP;
  FOR object IN SELECT p.oid::regprocedure AS signature FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO $OSTOR_PG_ROLE', object.signature);
  END LOOP;
END \$\$;
SQL
  pg_write_pgpass
  # The schema as the role that owns it, so what it creates is the role's too.
  PGPASSWORD=$password PGOPTIONS=--client-min-messages=warning "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$OSTOR_PG_PORT" -U "$OSTOR_PG_ROLE" -d "$OSTOR_PG_DB" -f "$OSTOR_ROOT/infra/sql/orleans-schema.sql" >/dev/null
}

pg_stop() {
  local bin; bin=$(pg_bindir) || return 0
  if pg_is_running; then
    pg_as_owner "$bin/pg_ctl" -D "$OSTOR_PG_DATA" -m fast -w stop >/dev/null
  fi
}
