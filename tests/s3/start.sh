#!/usr/bin/env bash
# Start a throw-away SeaweedFS (master, volume server, filer and S3 gateway in one
# `weed server` process) on 127.0.0.1 for the tests; the binary comes from setup.sh.
#
#   tests/s3/start.sh --data DIR [--ports "MASTER VOLUME FILER S3 MASTER_GRPC VOLUME_GRPC FILER_GRPC S3_GRPC"]
#
# Default ports: 18333 18380 18388 18390 18334 18381 18389 18391. Credentials: S3_ACCESS_KEY /
# S3_SECRET_KEY (default gateway-test / gateway-test-secret). Waits until the S3 endpoint
# answers; last line on stdout: the endpoint URL. The PID is in DIR/weed.pid, logs in
# DIR/weed.log; stop it with `kill $(cat DIR/weed.pid)`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA=""
PORTS="18333 18380 18388 18390 18334 18381 18389 18391"
die() { echo "s3/start.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA="$2"; shift 2 ;;
        --ports) PORTS="$2"; shift 2 ;;
        *) die "unknown argument: $1" ;;
    esac
done
[ -n "$DATA" ] || die "--data DIR is required"
DATA="$(mkdir -p "$DATA" && cd "$DATA" && pwd)"
read -r MASTER VOLUME FILER S3 MASTER_G VOLUME_G FILER_G S3_G <<<"$PORTS"
[ -n "$S3_G" ] || die "--ports needs 8 numbers"
WEED="$(bash "$HERE/setup.sh" | tail -n 1)"
mkdir -p "$DATA/master" "$DATA/volume"
cat >"$DATA/s3.json" <<JSON
{"identities": [{"name": "gateway",
  "credentials": [{"accessKey": "${S3_ACCESS_KEY:-gateway-test}", "secretKey": "${S3_SECRET_KEY:-gateway-test-secret}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
chmod 600 "$DATA/s3.json"
# Each bucket is a collection of its own; grow one volume at a time (not 7), so that the
# tests' many small buckets fit in -volume.max. weed reads master.toml from its cwd.
cat >"$DATA/master.toml" <<TOML
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
TOML
cd "$DATA"
nohup "$WEED" server -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -dir="$DATA/volume" -master.dir="$DATA/master" -master.volumeSizeLimitMB=128 \
    -master.port="$MASTER" -master.port.grpc="$MASTER_G" \
    -volume.port="$VOLUME" -volume.port.grpc="$VOLUME_G" -volume.max=512 \
    -filer -filer.port="$FILER" -filer.port.grpc="$FILER_G" \
    -s3 -s3.port="$S3" -s3.port.grpc="$S3_G" -s3.config="$DATA/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -iam=false -master.telemetry=false -filer.localSocket="$DATA/filer.sock" \
    >"$DATA/weed.log" 2>&1 &
echo $! >"$DATA/weed.pid"
URL="http://127.0.0.1:$S3"
for _ in $(seq 1 240); do
    kill -0 "$(cat "$DATA/weed.pid")" 2>/dev/null || { tail -n 30 "$DATA/weed.log" >&2; die "weed exited"; }
    # any HTTP answer from the S3 port (403 for an anonymous listing) means it is up
    if code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/")" && [ "$code" != "000" ]; then
        echo "$URL"
        exit 0
    fi
    sleep 0.5
done
tail -n 30 "$DATA/weed.log" >&2
die "the S3 endpoint did not answer within 120 s"
