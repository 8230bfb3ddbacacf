#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: lint, types, unit and integration
# tests against a real Kafka that this script starts (and stops again if it
# started it). Skip the long fault/load tests locally with:
#   PYTEST_ADDOPTS="-m 'not slow'" make test
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
BIN="$VENV/bin"

echo "== ruff"
"$BIN/ruff" check .
"$BIN/ruff" format --check .
echo "== mypy"
# The product packages, the tests and the benches, in one run. bench/ has no
# __init__.py: --explicit-package-bases names its scripts bench.<name> from the
# checkout root, the name they and the tests import each other by.
"$BIN/mypy" --explicit-package-bases schemas processors streams devkafka tests bench

started_kafka=""
if [ -z "${REGSTATE_BOOTSTRAP_SERVERS:-}" ]; then
  if ! "$BIN/regstate" kafka status >/dev/null 2>&1; then
    started_kafka=1
  fi
  echo "== kafka"
  REGSTATE_BOOTSTRAP_SERVERS=$("$BIN/regstate" kafka up --nodes 1)
  export REGSTATE_BOOTSTRAP_SERVERS
  echo "bootstrap: $REGSTATE_BOOTSTRAP_SERVERS"
fi
# The SIP front-end is tested with a real SIP peer, SIPp (Debian sip-tester).
echo "== sipp"
bash scripts/sipp-install.sh
# Metrics and rules are linted with a real promtool (Debian prometheus).
echo "== promtool"
bash scripts/prometheus-tools-install.sh
# The secured local Kafka (tests/conftest.py secure_kafka) makes its CA with openssl.
echo "== openssl"
bash scripts/openssl-install.sh
started_secure_kafka=""
if ! "$BIN/regstate" kafka status --secure >/dev/null 2>&1; then
  started_secure_kafka=1  # the secure_kafka fixture may start it; stopped again below
fi
# The dialer view's Kamailio location table is tested with Debian's Kamailio 5.6
# (registrar and proxy, usrloc db_mode=3 on db_sqlite / db_mysql).
# `regstate hep` is tested behind the same Kamailio (siptrace sends HEPv3).
echo "== kamailio"
bash scripts/kamailio-install.sh

# The dialer view's MariaDB store is tested against a real MariaDB (Debian
# mariadb-server, installed on first use). REGSTATE_SKIP_MARIADB=1 skips it.
started_mariadb=""
if [ -z "${REGSTATE_SKIP_MARIADB:-}" ]; then
  echo "== mariadb"
  bash scripts/mariadb-up.sh >/dev/null && started_mariadb=1
fi
cleanup() {
  if [ -n "$started_secure_kafka" ]; then
    "$BIN/regstate" kafka down --secure >/dev/null 2>&1 || true
  fi
  if [ -n "$started_mariadb" ]; then
    bash scripts/mariadb-up.sh down >/dev/null 2>&1 || true
  fi
  if [ -n "$started_kafka" ]; then
    "$BIN/regstate" kafka down --all >/dev/null 2>&1 || "$BIN/regstate" kafka down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "== pytest"
"$BIN/python" -m pytest ${PYTEST_ARGS:-}
