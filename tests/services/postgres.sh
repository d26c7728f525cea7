#!/usr/bin/env bash
# Provisions a throwaway PostgreSQL cluster (Debian's `postgresql` package)
# for Lianqin's `sql` connector tests — no docker.
#
# Usage: tests/services/postgres.sh {start|stop|restart|status|env|clean|logs}
#
#   start    install postgresql if missing (apt-get, as root), create a
#            cluster under the state dir with initdb (owned by the
#            `postgres` OS user when run as root), password auth, listening
#            on 127.0.0.1 only, and start it with pg_ctl. A no-op when it is
#            already running.
#   stop     stop the cluster (pg_ctl stop -m fast). Data is kept.
#   restart  stop, then start.
#   status   exit 0 and print `running ...` when up, else exit 1.
#   env      print `LIANQIN_PG_URL=postgres://lianqin:<password>@127.0.0.1:<port>/lianqin`
#            (use: export $(tests/services/postgres.sh env)).
#   clean    stop and wipe the state dir.
#   logs     print the tail of the server log.
#
# Environment:
#   LIANQIN_PG_PORT        port on 127.0.0.1 (default 15432)
#   LIANQIN_PG_STATE_DIR   cluster dir (default /tmp/lianqin-pg-<port>)
#   LIANQIN_PG_PASSWORD    password of the `lianqin` role (default lianqin-test)
#   LIANQIN_PG_START_TIMEOUT  seconds to wait for the server (default 30)

set -euo pipefail

PORT="${LIANQIN_PG_PORT:-15432}"
STATE="${LIANQIN_PG_STATE_DIR:-/tmp/lianqin-pg-$PORT}"
PASSWORD="${LIANQIN_PG_PASSWORD:-lianqin-test}"
START_TIMEOUT="${LIANQIN_PG_START_TIMEOUT:-30}"
DATA="$STATE/data"
LOGFILE="$STATE/server.log"
SOCKDIR="$STATE/sock"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/pg_ctl" && -x "$d/initdb" ]] && { printf '%s' "$d"; return 0; }
    done
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    return 1
}

ensure_installed() {
    if find_bindir >/dev/null; then
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL server not found; install it with: sudo apt-get install -y postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL server not found and apt-get is not available"
    log "installing postgresql (apt-get)..."
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # The package may create and start its own cluster (15/main on 5432); the
    # tests do not use it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    find_bindir >/dev/null || die "pg_ctl still not found after apt-get install"
}

# Runs a command as the cluster owner: `postgres` when we are root
# (PostgreSQL refuses to run as root), else the current user.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
        # runuser needs no password; run from / so that a working directory
        # the postgres user cannot enter (e.g. under /root) does not matter.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

is_running() {
    local bin
    bin="$(find_bindir)" || return 1
    [[ -f "$DATA/PG_VERSION" ]] || return 1
    as_owner "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

init_cluster() {
    local bin="$1"
    mkdir -p "$STATE" "$SOCKDIR"
    if [[ "$(id -u)" == 0 ]]; then
        as_owner true
        chown -R postgres: "$STATE"
    fi
    local pwfile="$STATE/.pw"
    printf '%s\n' "$PASSWORD" >"$pwfile"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$pwfile"
    chmod 600 "$pwfile"
    log "initdb $DATA"
    as_owner "$bin/initdb" -D "$DATA" -U lianqin --pwfile="$pwfile" -A scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 \
        || as_owner "$bin/initdb" -D "$DATA" -U lianqin --pwfile="$pwfile" -A scram-sha-256 \
            -E UTF8 --locale=C >"$STATE/initdb.log" 2>&1 \
        || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
    cat >>"$DATA/postgresql.conf" <<EOF
# tests/services/postgres.sh — test server, loopback only.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKDIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
shared_buffers = 32MB
timezone = 'UTC'
EOF
    cat >"$DATA/pg_hba.conf" <<EOF
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
EOF
}

cmd_start() {
    ensure_installed
    local bin
    bin="$(find_bindir)"
    if is_running; then
        log "already running (port $PORT)"
    else
        if port_open; then
            die "port $PORT is already taken by another process"
        fi
        [[ -f "$DATA/PG_VERSION" ]] || init_cluster "$bin"
        [[ "$(id -u)" == 0 ]] && chown -R postgres: "$STATE"
        as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOGFILE" -w -t "$START_TIMEOUT" start >/dev/null \
            || { tail -n 30 "$LOGFILE" >&2 2>/dev/null || true; die "server failed to start (see $LOGFILE)"; }
        # The test database.
        if ! PGPASSWORD="$PASSWORD" psql -h 127.0.0.1 -p "$PORT" -U lianqin -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = 'lianqin'" | grep -q 1; then
            PGPASSWORD="$PASSWORD" psql -h 127.0.0.1 -p "$PORT" -U lianqin -d postgres -qc "CREATE DATABASE lianqin" >/dev/null
        fi
    fi
    local waited=0
    until port_open; do
        (( waited >= START_TIMEOUT * 10 )) && die "server not listening on 127.0.0.1:$PORT after ${START_TIMEOUT}s"
        sleep 0.1
        waited=$((waited + 1))
    done
    log "ready on 127.0.0.1:$PORT (state $STATE)"
}

cmd_stop() {
    local bin
    if ! is_running; then
        log "not running"
        return 0
    fi
    bin="$(find_bindir)"
    as_owner "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || log "pg_ctl stop failed"
    log "stopped"
}

cmd_status() {
    if is_running && port_open; then
        printf 'running port=127.0.0.1:%s state=%s\n' "$PORT" "$STATE"
    else
        printf 'stopped\n'
        return 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    env) printf 'LIANQIN_PG_URL=postgres://lianqin:%s@127.0.0.1:%s/lianqin\n' "$PASSWORD" "$PORT" ;;
    clean) cmd_stop; rm -rf "$STATE"; log "removed $STATE" ;;
    logs) tail -n "${2:-100}" "$LOGFILE" 2>/dev/null || log "no log at $LOGFILE" ;;
    *) printf 'usage: %s {start|stop|restart|status|env|clean|logs}\n' "$0" >&2; exit 2 ;;
esac
