#!/usr/bin/env bash
# Install SIPp (Debian/Ubuntu package sip-tester) unless `sipp` is already on PATH.
# Used by CI before the test suite; the SIPp tests skip when it is missing locally.
set -euo pipefail
if command -v sipp >/dev/null 2>&1; then
  echo "sipp present: $(command -v sipp)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq sip-tester
sipp -v 2>/dev/null | grep -m1 -o 'SIPp v[^ ]*' || true
