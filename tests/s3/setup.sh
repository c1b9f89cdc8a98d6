#!/usr/bin/env bash
# Build SeaweedFS (a real distributed object store with an S3 gateway) once per version and
# cache the `weed` binary under ~/.cache/imaging-gateway-seaweedfs/<version>/weed; idempotent
# (a second run with the binary in place returns at once). Last line on stdout: the binary.
#
# `go install` refuses the module (its go.mod has replace directives), so the module is
# downloaded into the module cache and its `weed` folder built there. About 15-20 minutes
# on 2 cores the first time; the tests start it with tests/s3/start.sh.
#
# Environment:
#   SEAWEEDFS_VERSION  Go module version (default: a pinned pseudo-version)
#   XDG_CACHE_HOME     cache root        (default ~/.cache)
set -euo pipefail
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imaging-gateway-seaweedfs/$SEAWEEDFS_VERSION"
BIN="$CACHE/weed"
log() { echo "s3/setup.sh: $*" >&2; }
if [ -x "$BIN" ] && "$BIN" version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi
command -v go >/dev/null 2>&1 || { log "Go is needed to build SeaweedFS (apt-get install golang-go, or go.dev/dl)"; exit 1; }
MOD="github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION"
log "downloading $MOD"
DIR="$(GOFLAGS=-mod=mod go mod download -json "$MOD" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -n "$DIR" ] && [ -d "$DIR/weed" ] || { log "module download failed ($MOD)"; exit 1; }
mkdir -p "$CACHE"
log "building $DIR/weed (15-20 minutes on 2 cores the first time)"
# The module cache is read-only; build from it with a writable GOCACHE and the output outside.
( cd "$DIR" && GOFLAGS=-buildvcs=false nice -n 10 go build -trimpath -o "$BIN.partial" ./weed )
mv "$BIN.partial" "$BIN"
"$BIN" version >&2
echo "$BIN"
