#!/usr/bin/env bash
# A real helm binary for tests/deploy (helm lint + helm template of deploy/helm), built
# from its Go module once per version and cached; prints the binary's path. Idempotent.
set -euo pipefail
VERSION=v3.22.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imaging-gateway-helm/$VERSION"
if [ ! -x "$CACHE/helm" ]; then
  command -v go >/dev/null || { echo "helm: Go is needed to build helm $VERSION" >&2; exit 1; }
  mkdir -p "$CACHE"
  GOBIN="$CACHE" GOFLAGS=-trimpath nice -n 10 go install "helm.sh/helm/v3/cmd/helm@$VERSION" >&2
fi
echo "$CACHE/helm"
