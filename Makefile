# Toolchain entry points. Everything runs from the project venv (.venv),
# which `make venv` creates with $(PY) and the pinned deps in pyproject.toml.

PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TEST_JOBS ?= 4
PYTEST := $(VPY) -m pytest -q -rs -n $(TEST_JOBS) --dist loadscope
FIRMWARE_OUT := build/firmware

.PHONY: all venv mpylibs build test screenshots demo bench torture hostile clean distclean

all: build

# Re-installs only when pyproject.toml changes (or the venv is missing).
# The demo and the builds need only the package; `make test` adds the test
# tools (pytest, Playwright, schemathesis) on top.
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(VPY) -m pip install -e '.[test]'
	touch $@

# Third-party MicroPython modules (umqtt) from mpylibs.lock into build/mpylib.
mpylibs: $(STAMP)
	$(VPY) -m kiosk_host.mpylibs --dest build/mpylib --cache build/cache

# Flash tree: compiled firmware, lib/, boards/, manifest.json.
build: $(STAMP) mpylibs
	$(VPY) -m kiosk_host.build --out $(FIRMWARE_OUT)

# Every test. MicroPython tests run the compiled tree, as a board does;
# KIOSK_FIRMWARE_DIR=firmware runs them against the sources instead.
test: $(TEST_STAMP) mpylibs build
	$(PYTEST) tests

# The dashboard's screenshots in docs/img (docs/dashboard.md), from the
# browser test; an ordinary `make test` keeps its copies in build/img.
screenshots: $(TEST_STAMP) mpylibs build
	KIOSK_SCREENSHOTS=docs $(PYTEST) tests/test_dashboard_ops.py

demo: $(STAMP) mpylibs build
	$(VENV)/bin/kiosk-bridge demo $(DEMO_ARGS)

# Every benchmark; writes docs/benchmarks.md (figures, commands, machine, date).
bench: $(TEST_STAMP) mpylibs build
	$(VPY) benchmarks/run_all.py

# Long fault-injection runs: 500 power cuts, 100 broker/bridge/network
# outages, 50 custody faults (ack floods, corrupt records, wiped journals,
# full flash, cuts in the recovery boot) and 72 power cuts during firmware
# updates on emulated kiosks behind a real bridge; prints every count.
# Short versions of all but the update cuts run in `make test`
# (tests/test_torture.py).
TORTURE_ARGS ?= --cuts 500 --outages 100 --custody 50 --ota-cuts 72 --kiosks 4 --seed 1
torture: $(TEST_STAMP) mpylibs build
	$(VPY) benchmarks/torture.py $(TORTURE_ARGS)

# Hostile input at the kiosk: generated bad commands straight to
# kiosk/<id>/cmd; counts per category, crashes and actuations.
HOSTILE_ARGS ?= --count 10000 --seed 1
hostile: $(TEST_STAMP) mpylibs build
	$(VPY) benchmarks/hostile_run.py $(HOSTILE_ARGS)

clean:
	rm -rf build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
