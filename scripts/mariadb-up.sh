#!/usr/bin/env bash
# Start a private MariaDB for the dialer view's MySQL store tests; print its DSN.
#
#   scripts/mariadb-up.sh          # install (Debian mariadb-server) if missing, start, print DSN
#   scripts/mariadb-up.sh down     # stop it
#
# The server listens on 127.0.0.1:${REGSTATE_MARIADB_PORT:-3307} only, with its own
# data dir under .regstate/mariadb (never the system's instance), database
# `regstate_test`, user `regstate` (password `regstate`). Idempotent: a running
# server is reused. Needs root for apt-get the first time (CI runs as root).
# Also installs PyMySQL into .venv when missing (the store's driver).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PORT=${REGSTATE_MARIADB_PORT:-3307}
DIR=$ROOT/.regstate/mariadb
SOCK=$DIR/mysqld.sock
PIDFILE=$DIR/mysqld.pid
DSN="mysql://regstate:regstate@127.0.0.1:${PORT}/regstate_test"

if [[ "${1:-}" == "down" ]]; then
    if [[ -f $PIDFILE ]]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; fi
    exit 0
fi

if ! command -v mariadbd >/dev/null 2>&1 && [[ ! -x /usr/sbin/mariadbd ]]; then
    echo "installing mariadb-server (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends mariadb-server >&2
    # The package may start the system instance; ours is separate, stop theirs.
    (service mariadb stop || service mysql stop || true) >/dev/null 2>&1
fi
if [[ -x .venv/bin/python ]] && ! .venv/bin/python -c 'import pymysql' 2>/dev/null; then
    .venv/bin/pip install -q 'pymysql>=1.1' >&2
fi

MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
client() { mariadb --no-defaults -uroot --socket="$SOCK" "$@"; }

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "$DSN"
    exit 0
fi

mkdir -p "$DIR"
if [[ ! -d $DIR/data/mysql ]]; then
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/data" \
        --auth-root-authentication-method=socket >/dev/null
fi
"$MARIADBD" --no-defaults --user=root --datadir="$DIR/data" --socket="$SOCK" \
    --pid-file="$PIDFILE" --bind-address=127.0.0.1 --port="$PORT" \
    --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=2 \
    --log-error="$DIR/error.log" >/dev/null 2>&1 &

for _ in $(seq 1 150); do
    if client -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    sleep 0.2
done
client -e 'SELECT 1' >/dev/null || { tail -20 "$DIR/error.log" >&2; exit 1; }
client <<'SQL'
CREATE DATABASE IF NOT EXISTS regstate_test CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'regstate'@'127.0.0.1' IDENTIFIED BY 'regstate';
GRANT ALL PRIVILEGES ON *.* TO 'regstate'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
echo "$DSN"
