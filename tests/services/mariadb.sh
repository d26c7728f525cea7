#!/usr/bin/env bash
# Provisions a throwaway MariaDB server (Debian's `mariadb-server` package)
# for the MySQL/MariaDB side of Lianqin's `sql` connector tests — no docker.
#
# Usage: tests/services/mariadb.sh {start|stop|restart|status|env|clean|logs}
#
#   start    install mariadb-server if missing (apt-get, as root), create a
#            data dir under the state dir with mariadb-install-db, start
#            mariadbd on 127.0.0.1 only (its own socket, pid file and log;
#            `--user=root` when run as root), wait until it answers, and
#            create the `lianqin` database and the `lianqin` user (password
#            auth). A no-op when it is already running.
#   stop     shut the server down. Data is kept.
#   restart  stop, then start.
#   status   exit 0 and print `running ...` when up, else exit 1.
#   env      print `LIANQIN_MYSQL_URL=mysql://lianqin:<password>@127.0.0.1:<port>/lianqin`
#            (use: export $(tests/services/mariadb.sh env)).
#   clean    stop and wipe the state dir.
#   logs     print the tail of the server log.
#
# Environment:
#   LIANQIN_MYSQL_PORT        port on 127.0.0.1 (default 13306)
#   LIANQIN_MYSQL_STATE_DIR   server dir (default /tmp/lianqin-mariadb-<port>)
#   LIANQIN_MYSQL_PASSWORD    password of the `lianqin` user (default lianqin-test)
#   LIANQIN_MYSQL_START_TIMEOUT  seconds to wait for the server (default 30)

set -euo pipefail

PORT="${LIANQIN_MYSQL_PORT:-13306}"
STATE="${LIANQIN_MYSQL_STATE_DIR:-/tmp/lianqin-mariadb-$PORT}"
PASSWORD="${LIANQIN_MYSQL_PASSWORD:-lianqin-test}"
START_TIMEOUT="${LIANQIN_MYSQL_START_TIMEOUT:-30}"
DATA="$STATE/data"
LOGFILE="$STATE/server.log"
SOCKET="$STATE/mysqld.sock"
PIDFILE="$STATE/mysqld.pid"

log() { printf 'mariadb.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_server() {
    local c
    for c in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd 2>/dev/null || true)"; do
        [[ -n "$c" && -x "$c" ]] && { printf '%s' "$c"; return 0; }
    done
    return 1
}

ensure_installed() {
    if find_server >/dev/null && command -v mariadb-install-db >/dev/null 2>&1 \
        && command -v mariadb >/dev/null 2>&1; then
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "MariaDB server not found; install it with: sudo apt-get install -y mariadb-server"
    command -v apt-get >/dev/null || die "MariaDB server not found and apt-get is not available"
    log "installing mariadb-server (apt-get)..."
    # The package may try to start its own server on 3306 (policy-rc.d
    # permitting); the tests do not use it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >&2 \
        || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
             DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >&2; }
    find_server >/dev/null || die "mariadbd still not found after apt-get install"
}

# The OS user that owns the server and may connect over the socket as the
# MariaDB administrator (unix_socket auth): root when run as root.
os_user() { id -un; }

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# Administrator client over the server's own socket.
admin_sql() {
    mariadb --no-defaults --protocol=socket --socket="$SOCKET" -u "$(os_user)" -N -B -e "$1"
}

is_running() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    mariadb-admin --no-defaults --protocol=socket --socket="$SOCKET" -u "$(os_user)" ping >/dev/null 2>&1
}

init_datadir() {
    mkdir -p "$STATE"
    log "mariadb-install-db $DATA"
    local userarg=()
    [[ "$(id -u)" == 0 ]] && userarg=(--user=root)
    mariadb-install-db --no-defaults --datadir="$DATA" "${userarg[@]}" \
        --auth-root-authentication-method=socket --auth-root-socket-user="$(os_user)" \
        --skip-test-db --skip-name-resolve >"$STATE/install-db.log" 2>&1 \
        || { cat "$STATE/install-db.log" >&2; rm -rf "$DATA"; die "mariadb-install-db failed"; }
}

cmd_start() {
    ensure_installed
    local server
    server="$(find_server)"
    if is_running; then
        log "already running (port $PORT)"
    else
        if port_open; then
            die "port $PORT is already taken by another process"
        fi
        [[ -f "$DATA/mysql/user.frm" || -f "$DATA/mysql/global_priv.frm" ]] || init_datadir
        rm -f "$PIDFILE" "$SOCKET"
        local userarg=()
        [[ "$(id -u)" == 0 ]] && userarg=(--user=root)
        # Loopback only; a test server: no durability, small buffers.
        # The subshell itself must not keep the caller's stdout/stderr open
        # (a caller capturing our output would wait for the server to exit).
        (cd / && exec setsid "$server" --no-defaults --datadir="$DATA" "${userarg[@]}" \
            --bind-address=127.0.0.1 --port="$PORT" --socket="$SOCKET" --pid-file="$PIDFILE" \
            --log-error="$LOGFILE" --skip-name-resolve --skip-log-bin \
            --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
            --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
            --innodb-flush-log-at-trx-commit=0 --sync-binlog=0 --max-connections=50) \
            </dev/null >/dev/null 2>&1 &
        local waited=0
        until mariadb-admin --no-defaults --protocol=socket --socket="$SOCKET" -u "$(os_user)" ping >/dev/null 2>&1; do
            if (( waited >= START_TIMEOUT * 10 )); then
                tail -n 30 "$LOGFILE" >&2 2>/dev/null || true
                die "server did not answer within ${START_TIMEOUT}s (see $LOGFILE)"
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
        # The test database and user (password auth over TCP); the password
        # is (re)set on every start so that LIANQIN_MYSQL_PASSWORD wins.
        local pw="${PASSWORD//\\/\\\\}"
        pw="${pw//\'/\\\'}"
        admin_sql "CREATE DATABASE IF NOT EXISTS lianqin CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
                   CREATE USER IF NOT EXISTS 'lianqin'@'%' IDENTIFIED BY '$pw';
                   ALTER USER 'lianqin'@'%' IDENTIFIED BY '$pw';
                   GRANT ALL PRIVILEGES ON lianqin.* TO 'lianqin'@'%';
                   FLUSH PRIVILEGES;" \
            || die "creating the lianqin database and user failed"
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
    if ! is_running; then
        log "not running"
        return 0
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    mariadb-admin --no-defaults --protocol=socket --socket="$SOCKET" -u "$(os_user)" shutdown >/dev/null 2>&1 \
        || kill "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if (( waited >= START_TIMEOUT * 10 )); then
            log "server $pid did not stop; killing it"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
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
    env) printf 'LIANQIN_MYSQL_URL=mysql://lianqin:%s@127.0.0.1:%s/lianqin\n' "$PASSWORD" "$PORT" ;;
    clean) cmd_stop; rm -rf "$STATE"; log "removed $STATE" ;;
    logs) tail -n "${2:-100}" "$LOGFILE" 2>/dev/null || log "no log at $LOGFILE" ;;
    *) printf 'usage: %s {start|stop|restart|status|env|clean|logs}\n' "$0" >&2; exit 2 ;;
esac
