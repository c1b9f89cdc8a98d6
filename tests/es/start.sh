#!/usr/bin/env bash
# Start a throw-away single-node Elasticsearch on 127.0.0.1 for the tests.
#
#   tests/es/start.sh [--port N] [--data DIR]
#
# Last line on stdout: the URL (http://127.0.0.1:PORT). The node's PID is in
# DIR/elasticsearch.pid, the URL in DIR/url, the logs in DIR/logs. See README.md.
#
# Environment:
#   ES_VERSION        distribution version            (default 8.19.7)
#   ES_RUN_USER       unprivileged user used when root (default esrunner)
#   ES_JAVA_HOME      JDK to run it on                 (default: the `java` on PATH)
#   ES_HEAP           heap size                        (default 512m)
#   ES_START_TIMEOUT  seconds to wait for the node     (default 120)
#   XDG_CACHE_HOME    cache root                       (default ~/.cache)
set -euo pipefail

ES_VERSION="${ES_VERSION:-8.19.7}"
ES_RUN_USER="${ES_RUN_USER:-esrunner}"
ES_HEAP="${ES_HEAP:-512m}"
ES_START_TIMEOUT="${ES_START_TIMEOUT:-120}"
ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/imaging-gateway-es"
CLUSTER=imaging-gateway-test
MARKER=.imaging-gateway-es

die() { echo "es/start.sh: $*" >&2; exit 1; }
log() { echo "es/start.sh: $*" >&2; }

PORT=""
DATA=""
AUTO_DATA=0
while [ $# -gt 0 ]; do
    case "$1" in
        --port) [ $# -ge 2 ] || die "--port needs a value"; PORT="$2"; shift 2 ;;
        --port=*) PORT="${1#*=}"; shift ;;
        --data) [ $# -ge 2 ] || die "--data needs a value"; DATA="$2"; shift 2 ;;
        --data=*) DATA="${1#*=}"; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (usage: start.sh [--port N] [--data DIR])" ;;
    esac
done
if [ -n "$PORT" ]; then
    [[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] \
        || die "--port must be a number in 1..65535, not '$PORT'"
fi

health() {  # $1 = url; succeeds once the cluster is at least yellow
    curl -fsS --max-time 5 "$1/_cluster/health?wait_for_status=yellow&timeout=3s" 2>/dev/null \
        | grep -Eq '"status":"(green|yellow)"'
}

port_busy() {  # $1 = port; succeeds if something listens on 127.0.0.1:$1 (or on all addresses)
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# ---------------------------------------------------------------- prerequisites
command -v curl >/dev/null 2>&1 || die "curl not found"
command -v unzip >/dev/null 2>&1 || command -v jar >/dev/null 2>&1 || die "neither unzip nor jar found"
if [ -z "${ES_JAVA_HOME:-}" ]; then
    JAVA_BIN="$(command -v java 2>/dev/null)" || die "java not found (install a JDK 17+ or set ES_JAVA_HOME)"
    ES_JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVA_BIN")")")"
fi
[ -x "$ES_JAVA_HOME/bin/java" ] || die "no java at $ES_JAVA_HOME/bin/java"

# ------------------------------------------------------ data dir; reuse if alive
if [ -n "$DATA" ]; then
    mkdir -p "$DATA"
    DATA="$(cd "$DATA" && pwd -P)"
    if [ -f "$DATA/elasticsearch.pid" ] && [ -f "$DATA/url" ]; then
        old_pid="$(cat "$DATA/elasticsearch.pid" 2>/dev/null || true)"
        old_url="$(cat "$DATA/url" 2>/dev/null || true)"
        if [ -n "$old_pid" ] && kill -0 "$old_pid" 2>/dev/null && health "$old_url"; then
            if [ -z "$PORT" ] || [ "$old_url" = "http://127.0.0.1:$PORT" ]; then
                log "already running (pid $old_pid)"
                echo "$old_url"
                exit 0
            fi
            die "an Elasticsearch (pid $old_pid, $old_url) already runs from $DATA; stop it first"
        fi
    fi
    if [ -n "$(ls -A "$DATA")" ] && [ ! -e "$DATA/$MARKER" ]; then
        die "$DATA is not empty and was not made by this script; refusing to wipe it"
    fi
    find "$DATA" -mindepth 1 -delete
else
    AUTO_DATA=1
    DATA="$(mktemp -d "${TMPDIR:-/tmp}/imaging-gateway-es.XXXXXX")"
    # a temporary data dir is removed again if the start fails
    trap 'rc=$?; [ $rc -eq 0 ] || rm -rf "$DATA"; exit $rc' EXIT
fi
touch "$DATA/$MARKER"

# ------------------------------------------------- fetch and unpack (cached, locked)
mkdir -p "$CACHE"
ZIP="$CACHE/elasticsearch-${ES_VERSION}.zip"
HOME_CACHED="$CACHE/elasticsearch-${ES_VERSION}"
(
    flock 9
    if [ ! -s "$ZIP" ]; then
        command -v mvn >/dev/null 2>&1 || die "mvn not found (needed once to fetch $ARTIFACT)"
        log "fetching $ARTIFACT with Maven"
        mvn -B -Dstyle.color=never dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$CACHE" \
            -Dmdep.useBaseVersion=true >"$CACHE/mvn.log" 2>&1 \
            || { tail -n 30 "$CACHE/mvn.log" >&2; die "Maven could not fetch $ARTIFACT"; }
        [ -s "$ZIP" ] || die "Maven ran but $ZIP is missing"
    fi
    if [ ! -e "$HOME_CACHED/.unpacked" ]; then
        log "unpacking $ZIP"
        tmp="$(mktemp -d "$CACHE/unpack.XXXXXX")"
        if command -v unzip >/dev/null 2>&1; then
            unzip -q "$ZIP" -d "$tmp" || { rm -rf "$tmp"; die "cannot unpack $ZIP"; }
        else
            (cd "$tmp" && jar xf "$ZIP") || { rm -rf "$tmp"; die "cannot unpack $ZIP"; }
        fi
        chmod -R u+rwX,go+rX "$tmp"
        chmod +x "$tmp/elasticsearch-${ES_VERSION}/bin/"*
        rm -rf "$HOME_CACHED"
        mv "$tmp/elasticsearch-${ES_VERSION}" "$HOME_CACHED"
        rm -rf "$tmp"
        touch "$HOME_CACHED/.unpacked"
    fi
) 9>"$CACHE/.lock"

# ------------------------------------------------------------- who runs it
as_runner() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
    command -v runuser >/dev/null 2>&1 || die "runuser not found"
    if ! id -u "$ES_RUN_USER" >/dev/null 2>&1; then
        log "creating system user $ES_RUN_USER"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            "$ES_RUN_USER" 2>/dev/null || id -u "$ES_RUN_USER" >/dev/null 2>&1 \
            || die "cannot create user $ES_RUN_USER"
    fi
    as_runner() { runuser -u "$ES_RUN_USER" -- "$@"; }
    chown "$ES_RUN_USER:" "$DATA"
    if [ "$AUTO_DATA" = 1 ] && ! as_runner test -w "$DATA" && [ "$(dirname "$DATA")" != /tmp ]; then
        rm -rf "$DATA"  # e.g. a private TMPDIR: fall back to /tmp
        DATA="$(mktemp -d /tmp/imaging-gateway-es.XXXXXX)"
        touch "$DATA/$MARKER"
        chown "$ES_RUN_USER:" "$DATA"
    fi
    as_runner test -w "$DATA" \
        || die "$ES_RUN_USER cannot write $DATA (a parent directory is not searchable); use another --data"
fi

# The cache usually lives under root's private home: give the runner a private
# hard-linked (or copied) tree if it cannot read the cached one.
ES_HOME="$HOME_CACHED"
if ! as_runner test -r "$ES_HOME/lib/elasticsearch-${ES_VERSION}.jar"; then
    cp -al "$HOME_CACHED" "$DATA/home" 2>/dev/null || cp -a "$HOME_CACHED" "$DATA/home" \
        || die "cannot copy the distribution into $DATA"
    chmod -R go+rX "$DATA/home"
    ES_HOME="$DATA/home"
fi

# ------------------------------------------------------------- configuration
if [ -n "$PORT" ]; then
    port_busy "$PORT" && die "port $PORT is already in use"
    HTTP_PORT="$PORT"
else
    HTTP_PORT=0  # the node picks a free port and writes it to logs/http.ports
fi
mkdir -p "$DATA/data" "$DATA/logs" "$DATA/tmp" "$DATA/config"
cp -r "$ES_HOME/config/." "$DATA/config/"
{
    echo "cluster.name: $CLUSTER"
    echo "node.name: node-0"
    echo "discovery.type: single-node"
    echo "network.host: 127.0.0.1"
    echo "http.port: $HTTP_PORT"
    echo "transport.port: 0"
    echo "node.portsfile: true"
    echo "path.data: $DATA/data"
    echo "path.logs: $DATA/logs"
    echo "cluster.routing.allocation.disk.threshold_enabled: false"
    echo "action.destructive_requires_name: false"
    if [ -d "$ES_HOME/modules/x-pack-security" ]; then
        echo "xpack.security.enabled: false"
    fi
} >"$DATA/config/elasticsearch.yml"
if [ "$(id -u)" -eq 0 ]; then
    chown -R "$ES_RUN_USER:" "$DATA/data" "$DATA/logs" "$DATA/tmp" "$DATA/config"
fi

# ------------------------------------------------------------------ start
log_tail() {
    {
        echo "---- elasticsearch output ----"
        tail -n 40 "$DATA/logs/startup.out" 2>/dev/null || true
        echo "---- $DATA/logs/$CLUSTER.log (tail) ----"
        tail -n 60 "$DATA/logs/$CLUSTER.log" 2>/dev/null || true
    } >&2
}
fail() {
    log "$*"
    log_tail
    if [ -f "$DATA/elasticsearch.pid" ]; then
        kill "$(cat "$DATA/elasticsearch.pid")" 2>/dev/null || true
    fi
    exit 1
}

started=$(date +%s)
# -d: the launcher returns once the node has started (or failed); -p: pid file.
(
    cd "$DATA/logs"
    as_runner env -i PATH="/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 \
        ES_JAVA_HOME="$ES_JAVA_HOME" ES_PATH_CONF="$DATA/config" ES_TMPDIR="$DATA/tmp" \
        ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP -XX:-HeapDumpOnOutOfMemoryError" \
        "$ES_HOME/bin/elasticsearch" -d -p "$DATA/elasticsearch.pid" \
        >"$DATA/logs/startup.out" 2>&1 </dev/null
) || fail "Elasticsearch failed to start"

deadline=$((started + ES_START_TIMEOUT))
while [ ! -s "$DATA/logs/http.ports" ]; do
    [ -s "$DATA/elasticsearch.pid" ] && ! kill -0 "$(cat "$DATA/elasticsearch.pid")" 2>/dev/null \
        && fail "Elasticsearch exited during startup"
    [ "$(date +%s)" -lt "$deadline" ] || fail "no HTTP port after ${ES_START_TIMEOUT}s"
    sleep 0.2
done
bound="$(grep -m1 -E '^127\.0\.0\.1:[0-9]+$' "$DATA/logs/http.ports" || head -n1 "$DATA/logs/http.ports")"
URL="http://127.0.0.1:${bound##*:}"
until health "$URL"; do
    kill -0 "$(cat "$DATA/elasticsearch.pid" 2>/dev/null || echo 0)" 2>/dev/null \
        || fail "Elasticsearch exited during startup"
    [ "$(date +%s)" -lt "$deadline" ] || fail "cluster not yellow after ${ES_START_TIMEOUT}s at $URL"
    sleep 0.3
done

echo "$URL" >"$DATA/url"
log "pid $(cat "$DATA/elasticsearch.pid"), data $DATA, up in $(($(date +%s) - started))s"
echo "$URL"
