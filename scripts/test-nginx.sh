#!/usr/bin/env bash
# make test-nginx: Debian's nginx on loopback with deploy/nginx/preftune-locations.conf
# in front of a real `preftune serve`; checks that log following streams through it
# line by line (plain and SSE), that uploads pass, and that /metrics is served.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_nginx
swift build -c release --product preftune >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
api_port=$(free_port); proxy_port=$(free_port)
"$bin/preftune" serve --listen "127.0.0.1:$api_port" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
server=$!
mkdir -p "$work/nginx"
echo "upstream preftune { server 127.0.0.1:$api_port; keepalive 16; }" >"$work/nginx/upstream.conf"
start_nginx "$work/nginx" "$proxy_port" "$work/nginx/upstream.conf" "$PWD/deploy/nginx/preftune-locations.conf"
trap 'kill $proxy 2>/dev/null; kill -TERM $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
wait_healthy "http://127.0.0.1:$proxy_port"

start_endless_job "$bin" "http://127.0.0.1:$proxy_port" "$work/data" "$work"

# Through the proxy, lines must arrive while the job runs: with buffering on, a 3-second
# read of a follow that never ends would get nothing.
curl -sN --max-time 3 "${auth[@]}" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/logs?follow=true&tail=0" >"$work/plain.txt" || true
curl -sN --max-time 3 "${auth[@]}" -H "Accept: text/event-stream" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/logs" >"$work/sse.txt" || true
plain=$(grep -c ' step ' "$work/plain.txt" || true)
sse=$(grep -c '^id: ' "$work/sse.txt" || true)
echo "through nginx in 3 s: $plain plain lines, $sse SSE events"
[ "$plain" -ge 2 ] || { echo "log following did not stream through nginx"; cat "$work/nginx/logs/error.log"; exit 1; }
[ "$sse" -ge 2 ] || { echo "SSE did not stream through nginx"; exit 1; }

# A follow ends with the job, through the proxy too.
cancel_ends_follow "$bin" "$work"

metrics=$(curl -s "$PREFTUNE_URL/metrics")
echo "$metrics" | grep -q '^preftune_jobs{status="cancelled"} 1' || { echo "/metrics did not pass: $(echo "$metrics" | head -12)"; exit 1; }
echo "nginx: ok"
