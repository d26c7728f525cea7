#!/usr/bin/env bash
# Runs every Lianqin test, provisioning what the tests need:
#   * a real single-node Apache Kafka 4.x broker (KRaft, via Maven + Java 17)
#   * Debian's mosquitto MQTT broker (installed with apt-get when missing)
#   * a throwaway PostgreSQL cluster (Debian's postgresql, initdb/pg_ctl under /tmp)
#   * a throwaway MariaDB server (Debian's mariadb-server, under /tmp, port 13306)
#   * psql and Python psycopg (clients of `lianqin serve`; installed when missing)
#   * fonts-droid-fallback and poppler-utils (report PDFs; installed when missing)
#   * Debian's chromium and Playwright for Python (web console browser tests;
#     installed when missing; Playwright drives /usr/bin/chromium, it downloads
#     no browser)
#   * cargo fmt --check and cargo clippy -D warnings before any test runs
# Usage: tests/run.sh [extra cargo test args]
# Env:   CARGO_TARGET_DIR  (default: ./target)   LIANQIN_SKIP_SERVICES=1 to skip services
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> building workspace (tests and the lianqin binary)"
cargo build --workspace --tests --bins --quiet

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

SERVICES_STARTED=()
cleanup() {
  for s in "${SERVICES_STARTED[@]:-}"; do
    [ -n "$s" ] && bash "$ROOT/tests/services/$s.sh" stop >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

if [ "${LIANQIN_SKIP_SERVICES:-0}" != "1" ]; then
  if [ -x "$ROOT/tests/services/kafka.sh" ] || [ -f "$ROOT/tests/services/kafka.sh" ]; then
    echo "==> starting Apache Kafka (tests/services/kafka.sh)"
    bash "$ROOT/tests/services/kafka.sh" start
    SERVICES_STARTED+=(kafka)
    eval "$(bash "$ROOT/tests/services/kafka.sh" env)"
    export LIANQIN_KAFKA_BROKERS
    export LIANQIN_KAFKA_SCRIPT="$ROOT/tests/services/kafka.sh"
  fi
  echo "==> starting Mosquitto (tests/services/mosquitto.sh)"
  bash "$ROOT/tests/services/mosquitto.sh" start
  SERVICES_STARTED+=(mosquitto)
  eval "$(bash "$ROOT/tests/services/mosquitto.sh" env)"
  export LIANQIN_MQTT_BROKER
  echo "==> starting PostgreSQL (tests/services/postgres.sh)"
  bash "$ROOT/tests/services/postgres.sh" start
  SERVICES_STARTED+=(postgres)
  eval "$(bash "$ROOT/tests/services/postgres.sh" env)"
  export LIANQIN_PG_URL
  echo "==> starting MariaDB (tests/services/mariadb.sh)"
  bash "$ROOT/tests/services/mariadb.sh" start
  SERVICES_STARTED+=(mariadb)
  eval "$(bash "$ROOT/tests/services/mariadb.sh" env)"
  export LIANQIN_MYSQL_URL
fi

# Postgres clients for tests/it/pgwire.rs: psql (postgresql-client) and
# Python's psycopg 3; installed only when missing.
if ! command -v psql >/dev/null 2>&1; then
  echo "==> installing postgresql-client (psql)"
  apt-get install -y -qq postgresql-client >/dev/null
fi
if ! python3 -c 'import psycopg' >/dev/null 2>&1; then
  echo "==> installing psycopg (pip)"
  python3 -m pip install --quiet "psycopg[binary]"
fi

# Encryption at rest (tests/it/at_rest.rs): DuckDB reads the data dir's
# Parquet files as an outside reader would; installed only when missing.
if ! python3 -c 'import duckdb' >/dev/null 2>&1; then
  echo "==> installing duckdb (pip)"
  python3 -m pip install --quiet duckdb
fi

# Reports (tests/it/report.rs): a CJK TrueType font for the PDF and
# poppler-utils (pdftotext, pdftoppm) to read it back; installed only when missing.
if [ ! -f /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf ] || ! command -v pdftotext >/dev/null 2>&1; then
  echo "==> installing fonts-droid-fallback and poppler-utils"
  apt-get install -y -qq fonts-droid-fallback poppler-utils >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq fonts-droid-fallback poppler-utils >/dev/null; }
fi

# Web console (tests/it/console.rs): Debian's Chromium, driven by Playwright
# for Python with executable_path; installed only when missing.
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing chromium"
  apt-get install -y -qq chromium >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
fi
if ! python3 -c 'import playwright.sync_api' >/dev/null 2>&1; then
  echo "==> installing playwright (pip; no browser download)"
  python3 -m pip install --quiet playwright
fi

echo "==> cargo test --workspace"
cargo test --workspace --no-fail-fast "$@"
