#!/usr/bin/env bash
# Install promtool (Debian/Ubuntu package prometheus) and amtool (prometheus-alertmanager)
# unless both are on PATH. The tests check every process's live /metrics and the rules
# file with promtool, and ops/alertmanager/alertmanager.yml with amtool.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1; then
  echo "promtool present: $(command -v promtool), amtool: $(command -v amtool)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Only the two check tools are used: the servers the packages also install are stopped
# where a service manager started them.
$SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager
if command -v systemctl >/dev/null 2>&1; then
  for unit in prometheus prometheus-alertmanager; do
    if systemctl is-active --quiet "$unit" 2>/dev/null; then $SUDO systemctl stop "$unit" || true; fi
  done
fi
promtool --version 2>&1 | head -1
