#!/usr/bin/env bash
# Build a minimal OpenTelemetry Collector (the collector's own OTLP receiver + the contrib
# file exporter, assembled in tests/otel/collector as the collector builder would) once per
# version and cache it under ~/.cache/imaging-gateway-otel/<version>/otelcol; idempotent (a
# second run with the binary in place returns at once). Last line on stdout: the binary.
#
# Modules come from the Go module proxy, pinned by tests/otel/collector/go.sum. The first
# build costs about 3 CPU minutes with the downloads (450 MB of module cache, a 48 MB
# binary); tests/otel starts the binary.
#
# Environment:
#   XDG_CACHE_HOME  cache root (default ~/.cache)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION="0.161.0-$(cat "$HERE/collector/go.mod" "$HERE/collector/main.go" | cksum | cut -d' ' -f1)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imaging-gateway-otel/$VERSION"
BIN="$CACHE/otelcol"
log() { echo "otel/setup.sh: $*" >&2; }
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null 2>&1 || { log "Go is needed to build the collector (apt-get install golang-go, or go.dev/dl)"; exit 1; }
mkdir -p "$CACHE"
log "building the OpenTelemetry Collector (OTLP receiver + file exporter) into $BIN"
( cd "$HERE/collector" && GOFLAGS="-mod=mod -buildvcs=false" nice -n 10 go build -trimpath -o "$BIN.partial" . )
mv "$BIN.partial" "$BIN"
"$BIN" --version >&2
echo "$BIN"
