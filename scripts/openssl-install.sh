#!/usr/bin/env bash
# Install openssl unless it is on PATH: `regstate kafka up --secure` (the secured
# local Kafka of the security tests) makes its CA and node certificate with it.
set -euo pipefail
if command -v openssl >/dev/null 2>&1; then
  echo "openssl present: $(openssl version)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openssl
openssl version
