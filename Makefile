# Two entry points, each installs what it needs on a fresh clone:
#   make plan STACK=dev   the offline plan (Pulumi mocks, no cloud credentials)
#   make test             the test suite (what .ci/run runs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: plan test bench setup

# pip's output goes to a log, shown only when the install fails.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	mkdir -p build
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt > build/pip-install.log 2>&1 \
		|| { cat build/pip-install.log; exit 1; }
	touch $@

setup: $(VENV)/.installed

plan: setup
	$(PY) -m tools.plan --stack $(STACK)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) -m tools.bench

# Mutation testing (not part of `make test`; tens of minutes): docs/mutation.md. SAMPLE=K runs every K-th mutant.
SAMPLE ?= 1
.venv-mutate/.installed: requirements.txt requirements-dev.txt requirements-mutate.txt
	$(PYTHON) -m venv .venv-mutate
	mkdir -p build
	.venv-mutate/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt > build/pip-mutate.log 2>&1 \
		&& .venv-mutate/bin/pip install --quiet --disable-pip-version-check --no-deps -r requirements-mutate.txt \
		>> build/pip-mutate.log 2>&1 || { cat build/pip-mutate.log; exit 1; }
	touch $@

.PHONY: mutate
mutate: .venv-mutate/.installed
	.venv-mutate/bin/python -m tools.mutate --sample $(SAMPLE)
