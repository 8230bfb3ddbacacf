#!/usr/bin/env bash
# Create .venv with the newest suitable Python and install regstate with its dev
# extras. Re-runs only when pyproject.toml changed. Needs: Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
stamp="$VENV/.installed"

pick_python() {
  # Python 3.12 replays Faust tables about 4x faster than 3.11: prefer it.
  local root c
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for c in python3.12 "$root"/versions/3.12*/bin/python3 python3.13 "$root"/versions/3.13*/bin/python3 python3.11 python3; do
    if [ -n "$c" ] && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python) || { echo "regstate needs Python >= 3.11 (3.12 preferred); install it and retry" >&2; exit 1; }
  echo "creating $VENV with $("$py" --version 2>&1) ($py)" >&2
  "$py" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing regstate and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]' >&2
  touch "$stamp"
fi
# The checkout's own development packages (devkafka: the local Kafka harness;
# tests; bench) are not part of the wheel; a .pth makes them importable here.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" >"$site/regstate-checkout.pth"
