#!/usr/bin/env bash
# Orthanc and its DICOMweb plugin (Debian), the archive the pull tests pull from; idempotent
# (a second run with nothing to do returns at once). The tests start their own Orthanc on
# free ports with a temporary configuration; the packaged service is never used.
set -euo pipefail
if [ -x /usr/sbin/Orthanc ] && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    orthanc orthanc-dicomweb
