# Two commands matter: `make run` (set up and run the system on a sample) and
# `make test` (the whole suite, as CI runs it). Everything else helps them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
REGSTATE := $(VENV)/bin/regstate

.PHONY: run test lint typecheck unit install kafka-up kafka-down bench clean

# Python 3.12 recovers Faust tables ~4x faster than 3.11: prefer it when present.
$(PY):
	@set -e; py=""; \
	for c in python3.12 "$$(pyenv root 2>/dev/null)/versions/3.12"*/bin/python3 python3.13 python3.11 python3; do \
	  if [ -n "$$c" ] && "$$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then py="$$c"; break; fi; \
	done; \
	if [ -z "$$py" ]; then echo "regstate needs Python >= 3.11; install it and retry" >&2; exit 1; fi; \
	echo "using $$("$$py" --version) at $$py"; \
	"$$py" -m venv $(VENV)

$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	bash scripts/run-sample.sh

test: install
	bash scripts/test.sh

unit: install
	$(PY) -m pytest -q -m 'not integration' tests/unit

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy schemas processors streams

kafka-up: install
	$(REGSTATE) kafka up

kafka-down: install
	$(REGSTATE) kafka down

clean:
	-$(REGSTATE) kafka down
	rm -rf .regstate
