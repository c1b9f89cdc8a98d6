#!/usr/bin/env bash
# dcmtk (echoscu, storescu, storescp, findscu, movescu, getscu) for the DIMSE tests; idempotent.
set -euo pipefail
if command -v storescu >/dev/null && command -v getscu >/dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends dcmtk
