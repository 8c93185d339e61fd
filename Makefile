# The two commands of the README:  `make demo`  and  `make test`.
# Both bootstrap .venv on their own (scripts/bootstrap).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap demo test lint typecheck pytest bench clean

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	$(BIN)/auditor demo

test: bootstrap lint typecheck pytest

lint:
	$(BIN)/ruff check auditor addons vhandset tests bench
	$(BIN)/ruff format --check auditor addons vhandset tests bench

typecheck:
	$(BIN)/mypy

# The suite runs one test file per worker (module fixtures stay whole), three workers on two
# cores: many end-to-end tests wait on virtual handsets and subprocesses, so a third worker
# fills those waits (6.3 minutes instead of 7.7 with two, 2026-12-06); the tests marked
# serial (they sniff loopback) run alone afterwards. JOBS=0 runs everything in one process.
JOBS ?= 3
pytest:
ifeq ($(JOBS),0)
	$(BIN)/pytest $(PYTEST_ARGS)
else
	$(BIN)/pytest -n $(JOBS) --dist loadfile -m "not serial" $(PYTEST_ARGS)
	$(BIN)/pytest -m serial $(PYTEST_ARGS)
endif

bench: bootstrap
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
