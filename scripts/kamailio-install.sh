#!/usr/bin/env bash
# Install Kamailio with its SQLite and MySQL database modules (Debian/Ubuntu packages
# kamailio, kamailio-sqlite-modules, kamailio-mysql-modules) unless present. The dialer
# view's Kamailio tests run the real registrar and proxy (usrloc db_mode=3) with them.
# The package's own service is not needed: the tests start private instances.
# The HEP tests (tests/integration/test_hep_kamailio.py) use siptrace, registrar, auth,
# uac and rtimer, all in the kamailio package.
set -euo pipefail
have() { compgen -G "/usr/lib/*/kamailio/modules/$1" >/dev/null; }
if command -v kamailio >/dev/null 2>&1 && have db_sqlite.so && have db_mysql.so; then
  echo "kamailio present: $(kamailio -v 2>/dev/null | head -1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends kamailio kamailio-sqlite-modules kamailio-mysql-modules
# Keep the system instance off: nothing should answer on 5060 behind the tests' back.
($SUDO service kamailio stop || true) >/dev/null 2>&1
kamailio -v | head -1
