#!/usr/bin/env bash
# make soak: three projects, 60 jobs of mixed priorities, two worker processes (scripts/soak.py).
# SQLite by default; SOAK_DATABASE=postgres runs it on Debian's PostgreSQL in a temporary directory.
# JSON lines on stdout, one per check; exit 1 when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
swift build -c release --product preftune >&2
binary="$(swift build -c release --show-bin-path)/preftune"
if [ "${SOAK_DATABASE:-sqlite}" = postgres ]; then
    work=$(mktemp -d)
    chmod 755 "$work"
    trap 'stop_postgres "$work/pg"; rm -rf "$work"' EXIT
    PREFTUNE_DATABASE=$(start_postgres "$work/pg") python3 scripts/soak.py "$binary"
else
    python3 scripts/soak.py "$binary"
fi
