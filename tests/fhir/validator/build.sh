#!/usr/bin/env bash
# Build the HL7 FHIR validator wrapper once per version of its sources and print the jar's path.
# The jar is cached under ${XDG_CACHE_HOME:-~/.cache}/imaging-gateway-validator/<key>, where
# key is a hash of pom.xml and the Java sources, so a fresh machine builds it once (Maven
# Central is needed for that first build only) and later runs start it directly.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key="$(cd "$here" && cat pom.xml $(find src -type f | LC_ALL=C sort) | sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/imaging-gateway-validator/$key"
jar="$cache/fhir-validator.jar"
if [ ! -f "$jar" ]; then
    command -v mvn >/dev/null || { echo "build.sh: mvn (Maven) is needed to build the validator" >&2; exit 1; }
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    cp -r "$here/pom.xml" "$here/src" "$work/"
    (cd "$work" && mvn -q -B package -DskipTests >&2)
    mkdir -p "$cache"
    cp "$work/target/fhir-validator.jar" "$jar.partial"
    mv "$jar.partial" "$jar"
fi
echo "$jar"
