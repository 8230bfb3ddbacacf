#!/usr/bin/env bash
# `./dev run`: the whole system on this machine, on a sample.
#   1. the local Apache Kafka and the topics
#   2. an engine worker (fold, table, outputs, sweeper, query API on :6066)
#   3. the sample log published (its times moved to now), and
#   4. a SIP front-end with a few simulated phones registering through Digest auth
#   5. then prints every binding as the worker's query API serves it.
# The worker and the front-end stop when this script ends; Kafka keeps running
# (`.venv/bin/regstate kafka down` stops it). KEEP=1 leaves everything running.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
LOGS=.regstate/logs
mkdir -p "$LOGS"
export REGSTATE_WEB_PORT=${REGSTATE_WEB_PORT:-6066}
SIP_PORT=${SIP_PORT:-5070}
PHONES=${PHONES:-5}

echo "== starting the local Apache Kafka (the first run downloads the jars with Maven)" >&2
REGSTATE_BOOTSTRAP_SERVERS=$("$BIN/regstate" kafka up --nodes 1)
export REGSTATE_BOOTSTRAP_SERVERS
echo "   bootstrap servers: $REGSTATE_BOOTSTRAP_SERVERS" >&2
"$BIN/regstate" topics ensure >/dev/null

pids=()
cleanup() {
  if [ -z "${KEEP:-}" ]; then
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "== starting a worker (log: $LOGS/worker.log)" >&2
"$BIN/regstate" worker >"$LOGS/worker.log" 2>&1 &
pids+=($!)
"$BIN/python" - <<PY
import sys, time, urllib.request
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        if urllib.request.urlopen("http://127.0.0.1:$REGSTATE_WEB_PORT/readyz", timeout=2).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("worker not ready after 180 s: see $LOGS/worker.log")
PY

echo "== publishing samples/sample.jsonl (times moved to now)" >&2
"$BIN/python" scripts/rebase_sample.py samples/sample.jsonl >.regstate/sample-now.jsonl
"$BIN/regstate" publish --input .regstate/sample-now.jsonl --no-progress

echo "== a SIP front-end on udp/tcp 127.0.0.1:$SIP_PORT and $PHONES simulated phones (log: $LOGS/frontend.log)" >&2
REGSTATE_NODE_ID=fe-demo REGSTATE_SIP_PORT=$SIP_PORT REGSTATE_SIP_RATE_KEY=ip_port \
  "$BIN/regstate" frontend >"$LOGS/frontend.log" 2>&1 &
pids+=($!)
"$BIN/regstate" simulate --phones "$PHONES" --server "127.0.0.1:$SIP_PORT" --prefix agent \
  --create-users --duration 3 --no-unregister >"$LOGS/simulate.log" 2>&1 || {
  echo "simulate failed: see $LOGS/simulate.log and $LOGS/frontend.log" >&2; exit 1; }

echo "== bindings, as GET /v1/aors/{aor} on the worker serves them" >&2
"$BIN/python" - "$PHONES" <<PY
import json, sys, time, urllib.error, urllib.parse, urllib.request
aors = [f"sip:{1001 + i}@pbx.example.com" for i in range(10)]
aors += [f"sip:agent{i:04d}@regstate" for i in range(int(sys.argv[1]))]
def get(aor):
    """(state, None) for a registered AOR; (None, why) from the 404 body otherwise."""
    url = "http://127.0.0.1:$REGSTATE_WEB_PORT/v1/aors/" + urllib.parse.quote(aor, safe=":@")
    try:
        return json.load(urllib.request.urlopen(url, timeout=5)), None
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None, json.load(e).get("why", "not registered")
        raise
# The phones' events travel front-end -> Kafka -> worker: wait until they show.
deadline = time.monotonic() + 60
while time.monotonic() < deadline and get(aors[-1])[0] is None:
    time.sleep(0.5)
now = time.time() * 1000
for aor in aors:
    state, why = get(aor)
    if state is None:
        print(f"{aor:36}  {why}")  # e.g. "not registered: wrong password, 3 failed attempts since 08:01"
        continue
    for c in state["contacts"]:
        src = c["source"] or {}
        print(f"{aor:36}  rings {c['uri']}  from {src.get('transport')} {src.get('ip')}:{src.get('port')}"
              f"  via {c['node']}  expires in {int((c['expires_at'] - now) / 1000)} s  health {state['health']['state']}")
PY
echo "(full JSON: curl -s http://127.0.0.1:$REGSTATE_WEB_PORT/v1/aors/sip:1001@pbx.example.com)" >&2
