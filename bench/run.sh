#!/usr/bin/env bash
# Gateway vs Orthanc DICOMweb benchmark; arguments go to bench/run.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" bench/run.py "$@"
