#!/usr/bin/env bash
# Install promtool (Debian/Ubuntu package prometheus) unless it is already on PATH.
# The tests check every process's live /metrics and the rules file with it.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  echo "promtool present: $(command -v promtool)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Only promtool is needed: the Prometheus server the package also installs is not started.
$SUDO apt-get install -y -qq --no-install-recommends prometheus
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
promtool --version 2>&1 | head -1
