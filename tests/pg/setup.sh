#!/usr/bin/env bash
# The PostgreSQL server binaries the shared-database tests start a throwaway cluster with
# (Debian package `postgresql`; the tests run initdb/pg_ctl themselves, the packaged
# cluster is not used). Idempotent: does nothing when a server is already installed.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || [ -n "${PG_BIN:-}" ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# the package's own cluster is not needed: do not let the install start it
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
