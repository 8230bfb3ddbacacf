#!/usr/bin/env bash
# `make run`: start the local Kafka, create the topics, publish the sample log,
# replay it, and print where every phone rings.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
INPUT=${INPUT:-samples/sample.jsonl}

echo "== starting the local Apache Kafka (first run downloads the jars with Maven)" >&2
REGSTATE_BOOTSTRAP_SERVERS=$("$BIN/regstate" kafka up --nodes 1)
export REGSTATE_BOOTSTRAP_SERVERS
echo "   bootstrap servers: $REGSTATE_BOOTSTRAP_SERVERS" >&2

echo "== creating the topics" >&2
"$BIN/regstate" topics ensure >&2

echo "== publishing $INPUT to regstate.registrations" >&2
"$BIN/regstate" publish --input "$INPUT" >&2

echo "== bindings (replay of $INPUT)" >&2
"$BIN/regstate" replay --input "$INPUT"
