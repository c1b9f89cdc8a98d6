#!/usr/bin/env bash
# Install the OHIF viewer the gateway serves at /viewer: the prebuilt @ohif/app bundle pinned
# in package.json / package-lock.json, into viewer/node_modules. Safe to run again (nothing
# to do: well under a second). Without Node.js 20+ it says how to get it and exits 0 (the
# gateway runs without the viewer); VIEWER_REQUIRED=1 makes that an error.
#
# @ohif/app's own npm dependencies are source-build inputs the prebuilt dist/ does not use
# (some are not even published for the pinned release); "overrides" in package.json maps
# them to the empty package in ./vendor-stub, so only the bundle is downloaded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
log() { printf '[viewer] %s\n' "$*"; }

missing() {
    log "$1"
    log "the gateway runs without it; /viewer explains how to install it. To install: get"
    log "Node.js 20 or later (https://nodejs.org, or 'apt-get install nodejs npm'), then run"
    log "'make viewer' (or point GATEWAY_VIEWER__DIST at an @ohif/app dist folder)."
    if [ "${VIEWER_REQUIRED:-0}" = "1" ]; then exit 1; fi
    exit 0
}

command -v node >/dev/null 2>&1 || missing "Node.js is not installed: the OHIF viewer is not installed"
command -v npm >/dev/null 2>&1 || missing "npm is not installed: the OHIF viewer is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || missing "Node.js $(node --version) is too old (20 or later): the OHIF viewer is not installed"

stamp="node_modules/.viewer-install-stamp"
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f node_modules/@ohif/app/dist/index.html ]; then
    exit 0
fi
log "installing the OHIF viewer (npm ci, about 60 MB to download once)"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
printf '%s\n' "$want" >"$stamp"
log "OHIF viewer $(node -p 'require("./node_modules/@ohif/app/package.json").version') installed; served at /viewer"
