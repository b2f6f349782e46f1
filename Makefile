# Every target bootstraps what it needs from nothing: Python 3.11+, pip and the registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: install lint docs docs-serve test test-ceph run bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict file_storage

# The documentation site in site/: fails on any broken link, anchor or API reference
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

test: lint docs
	scripts/ensure-chromium
	scripts/ensure-redis
	scripts/ensure-azurite
	$(PY) -m pytest

# The S3 tests (conformance, backend, FastAPI integration, integrity through the fault
# proxy) against a throwaway Ceph RADOS Gateway instead of moto: installs Debian's Ceph
# packages when missing (root), starts the cluster in a temp dir, always stops it
# (removes it after a pass; keeps its logs after a failure). See docs/compatibility.md.
CEPH_TESTS := tests/conformance tests/backends tests/integration \
	tests/faults/test_s3_integrity.py

test-ceph: install
	scripts/ceph-rgw.sh install
	@export CEPH_RGW_DIR="$$(mktemp -d "$${TMPDIR:-/tmp}/file-storage-ceph.XXXXXX")"; \
	trap 'status=$$?; if [ $$status -eq 0 ]; then scripts/ceph-rgw.sh clean; \
		else scripts/ceph-rgw.sh stop; echo "ceph logs kept in $$CEPH_RGW_DIR/log" >&2; fi' EXIT; \
	trap 'exit 130' INT TERM; \
	scripts/ceph-rgw.sh start && . "$$CEPH_RGW_DIR/env" && \
	$(PY) -m pytest -p no:cacheprovider -m s3 $(CEPH_TESTS)

# The example service on the embedded local backend at http://127.0.0.1:8000. It needs
# the [run] extra only (FastAPI, uvicorn), not the dev toolchain: a stamp of its own.
RUN_STAMP := $(VENV)/.installed-run

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[run]'
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(PY) -m uvicorn examples.app:app --host 127.0.0.1 --port 8000

# Benchmarks need the [bench] extra too (s3fs, obstore, psutil, profilers): a stamp of their own.
# They start a moto server on 127.0.0.1 and write benchmarks/results/latest.{md,json}.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# BENCH_ARGS: e.g. --only s3-transports --endpoint URL --server-name "Ceph RGW 16.2"
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist site *.egg-info
