# Two entry points, each installs what it needs on a fresh clone:
#   make plan STACK=dev   the offline plan (Pulumi mocks, no cloud credentials)
#   make test             the test suite (what .ci/run runs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: plan test bench setup refresh

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

# Moves the base image's Debian snapshot, package pins (and, given REFRESH_ARGS="--base-image ...",
# its digest) together, printing the diff: tools/refresh_pins.py.
refresh: setup
	$(PY) -m tools.refresh_pins --write $(REFRESH_ARGS)
