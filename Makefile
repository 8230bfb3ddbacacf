# Conveniences over ./dev, for those who type make.
.PHONY: run test setup lint typecheck unit fast bench
run:
	./dev run
test:
	./dev test
setup:
	./dev setup
unit: setup
	.venv/bin/python -m pytest -q tests/unit
fast: setup
	PYTEST_ADDOPTS="-m 'not slow'" bash scripts/test.sh
lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
typecheck: setup
	.venv/bin/mypy --explicit-package-bases schemas processors streams devkafka tests bench
bench: setup
	.venv/bin/python bench/fold_bench.py
