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
	$(BIN)/ruff check auditor addons tests bench
	$(BIN)/ruff format --check auditor addons tests bench

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest $(PYTEST_ARGS)

bench: bootstrap
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
