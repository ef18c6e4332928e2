# The two commands of the README: `make demo` (a live local rollout) and `make test` (everything CI runs).
# Both bootstrap a virtualenv in .venv from pyproject.toml; the control-plane binaries are built from the
# pinned Go modules under integ/gomod and cached under ~/.cache/brupop-integ (see integ/build.py).

# The interpreter of the image and of CI (DESIGN.md, "Python 3.12"); override with PYTHON=...
PYTHON ?= $(shell .ci/find-python 3.12)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint type unit integration controlplane demo manifests clean

test: lint type unit integration

VERSION_OF = -c 'import sys; print(*sys.version_info[:2])'

$(STAMP): pyproject.toml
	@test "$$($(BIN)/python $(VERSION_OF) 2>/dev/null)" = "$$($(PYTHON) $(VERSION_OF))" \
		|| { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check brupop integ tests benchmarks
	$(BIN)/ruff format --check brupop integ tests benchmarks

type: $(STAMP)
	$(BIN)/mypy brupop integ benchmarks

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q -n 2 --cov=brupop/models --cov=brupop/policy --cov-report=term
	@echo "Coverage of the pure core (brupop/models, brupop/policy), must be >= 95%:"
	$(BIN)/coverage report --include='brupop/models/*,brupop/policy/*' --fail-under=95 --skip-covered

controlplane: $(STAMP)
	$(BIN)/python -m integ build

integration: controlplane
	$(BIN)/pytest tests/integ -q

demo: controlplane
	$(BIN)/python -m integ demo $(ARGS)

# The CRD chart's CRD from the models, then the one-file manifest from the charts (needs helm: controlplane).
manifests: controlplane
	$(BIN)/python -m brupop.manifests
	$(BIN)/python -m integ.helm manifest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
