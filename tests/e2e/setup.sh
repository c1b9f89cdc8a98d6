#!/usr/bin/env bash
# Install what the browser end-to-end tests need; safe to run again (a second
# run with nothing to do takes well under a second).
#
#   * Debian's chromium (only if /usr/bin/chromium is missing)
#   * the OHIF viewer the gateway serves at /viewer (viewer/install.sh: the prebuilt
#     @ohif/app bundle in viewer/node_modules)
#   * the npm packages pinned in package.json / package-lock.json: playwright-core
#     (drives chromium; it never downloads a browser) and oidc-provider (the OpenID
#     provider the sign-in tests start)
#   * with E2E_WITH_ORTHANC=1 also Orthanc and its DICOMweb plugin, a reference
#     DICOMweb server the tests can target with E2E_DICOMWEB_TARGET=orthanc
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

log() { printf '[e2e setup] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_packages=()
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
if [ "${E2E_WITH_ORTHANC:-0}" = "1" ]; then
    [ -x /usr/sbin/Orthanc ] || apt_packages+=(orthanc)
    [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || apt_packages+=(orthanc-dicomweb)
fi

if [ "${#apt_packages[@]}" -gt 0 ]; then
    log "installing Debian packages: ${apt_packages[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_packages[@]}"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    log "Node.js >= 20 is needed by playwright-core; found $(node --version)" >&2
    exit 1
fi

# npm: reinstall only when the manifest or the lock file changed
stamp="node_modules/.e2e-install-stamp"
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -f node_modules/oidc-provider/package.json ] \
    && [ -f node_modules/playwright-core/package.json ]; then
    log "npm packages up to date"
else
    log "installing npm packages (npm ci)"
    # --ignore-scripts: nothing here needs install scripts, and none may fetch a browser
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund \
        --loglevel=error
    printf '%s\n' "$want" >"$stamp"
fi

VIEWER_REQUIRED=1 bash "$here/../../viewer/install.sh"

log "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo missing)"
log "node: $(node --version); @ohif/app $(node -p 'require("../../viewer/node_modules/@ohif/app/package.json").version'); oidc-provider $(node -p 'require("./node_modules/oidc-provider/package.json").version'); playwright-core $(node -p 'require("./node_modules/playwright-core/package.json").version')"
