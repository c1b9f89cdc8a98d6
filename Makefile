# Two commands: `make run` (serve on http://127.0.0.1:8080 with the viewer at /viewer when
# Node.js is present; DEMO=1 loads a sample cohort and turns on the development login)
# and `make test` (install test dependencies, lint, type-check, run the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# `make run` installs the runtime dependencies only; `make test` adds the test tools.
# PYTHONWARNINGS=ignore: setuptools' notices about editable installs are not for operators.
RUN_STAMP := $(VENV)/.runtime-$(SUM)
STAMP := $(VENV)/.installed-$(SUM)

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS=ignore $(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e .
	rm -f $(VENV)/.runtime-*
	touch $@

$(STAMP): $(RUN_STAMP)
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

.PHONY: run viewer lint typecheck e2e-setup dimse-setup pull-setup otel-setup fhir-validator openapi test unit fuzz fuzz-api bench clean

# DEMO=1 also turns on the development login (any user name, no password) for the viewer;
# it needs GATEWAY_ENVIRONMENT=development and is refused in production.
DEMO_ENV := GATEWAY_DIMSE__PORT=$${GATEWAY_DIMSE__PORT:-11112} \
	GATEWAY_ENVIRONMENT=$${GATEWAY_ENVIRONMENT:-development} \
	GATEWAY_AUTH__DEV_LOGIN=$${GATEWAY_AUTH__DEV_LOGIN:-true}

run: $(RUN_STAMP) viewer
	$(if $(DEMO),$(DEMO_ENV),) $(VENV)/bin/imaging-gateway serve $(if $(DEMO),--demo,)

lint: $(STAMP)
	$(VENV)/bin/ruff check server tests $(wildcard bench)
	$(VENV)/bin/ruff format --check server tests $(wildcard bench)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The OHIF viewer served at /viewer (prebuilt @ohif/app from npm); needs Node.js 20+, and
# says how to get it otherwise (the gateway runs without the viewer).
viewer:
	bash viewer/install.sh

e2e-setup:
	bash tests/e2e/setup.sh

# dcmtk (echoscu, storescu, storescp, findscu, movescu, getscu) for tests/dimse; idempotent.
dimse-setup:
	bash tests/dimse/setup.sh

# Orthanc + its DICOMweb plugin (Debian), the archive tests/pull pulls from; idempotent.
pull-setup:
	bash tests/pull/setup.sh

# PostgreSQL server binaries (Debian) for the shared-database tests, which start a
# throwaway cluster of their own; idempotent.
pg-setup:
	bash tests/pg/setup.sh

# nginx (Debian), the load balancer in front of the replicas of tests/replicas; idempotent.
replicas-setup:
	bash tests/replicas/setup.sh

# A real helm binary (built from its Go module once per version, cached in
# ~/.cache/imaging-gateway-helm) for tests/deploy: helm lint + helm template of deploy/helm.
deploy-setup:
	bash tests/deploy/helm.sh >/dev/null

# The HL7 FHIR validator (HAPI FHIR, Maven, system JDK 17), built once per version of its
# sources and cached in ~/.cache/imaging-gateway-validator; the FHIR tests start it.
fhir-validator:
	bash tests/fhir/validator/build.sh

# SeaweedFS (a real S3 server) for the S3 blob store tests, built from its Go module once per
# version (15-20 minutes on 2 cores) and cached in ~/.cache/imaging-gateway-seaweedfs; idempotent.
s3-setup:
	bash tests/s3/setup.sh >/dev/null

# A minimal OpenTelemetry Collector (OTLP receiver + file exporter) for tests/otel, built from
# its Go modules once per version and cached in ~/.cache/imaging-gateway-otel; idempotent.
otel-setup:
	bash tests/otel/setup.sh >/dev/null

openapi: $(STAMP)
	$(PY) -m server.openapi_export openapi/openapi.json

# The whole suite on SQLite and the API suites again on Elasticsearch (ES_URL, or one node
# started on loopback by tests/es/start.sh), both passes at once (TEST_JOBS=1: one after the
# other); see tests/run_passes.py.
test: $(STAMP) e2e-setup dimse-setup pull-setup pg-setup replicas-setup deploy-setup s3-setup otel-setup fhir-validator lint typecheck
	$(PY) -m server.openapi_export --check openapi/openapi.json
	$(PY) -m tests.run_passes

unit: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

# Longer byte-level fuzzing (atheris) of DICOM part parsing and multipart framing;
# `make test` runs each target for 12 s (tests/fuzz/test_fuzz.py).
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s --timeout=0 tests/fuzz

# A longer schemathesis pass than the one in `make test` (25 examples per operation).
fuzz-api: $(STAMP)
	SCHEMATHESIS_MAX_EXAMPLES=$(or $(EXAMPLES),1000) $(PY) -m pytest -q tests/test_schemathesis.py

bench: $(STAMP)
	bash bench/run.sh

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
