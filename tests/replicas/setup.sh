#!/usr/bin/env bash
# nginx (Debian), the load balancer in front of the gateway replicas of tests/replicas; idempotent.
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q nginx-light >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q nginx-light >/dev/null
}
# The package starts a system nginx on port 80; the tests run their own on free ports.
$SUDO systemctl disable --now nginx >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]
