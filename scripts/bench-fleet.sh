#!/usr/bin/env bash
# make bench-fleet: Debian's PostgreSQL in a temporary directory (installed when missing), then
# scripts/bench-fleet.py against it: claim latency, short jobs per minute with 1, 2 and 4
# workers, and GET /v1/fine_tuning/jobs/{id} on PostgreSQL against SQLite. JSON lines on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
command -v wrk >/dev/null 2>&1 || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
swift build -c release --product preftune >&2
work=$(mktemp -d)
chmod 755 "$work"
trap 'stop_postgres "$work/pg"; rm -rf "$work"' EXIT
PREFTUNE_DATABASE=$(start_postgres "$work/pg") python3 scripts/bench-fleet.py "$(swift build -c release --show-bin-path)/preftune"
