#!/usr/bin/env bash
# make test-nginx-fleet: deploy/nginx/preftune-fleet.conf's balancing, live. Two API nodes
# and a worker share a real PostgreSQL (Debian's, initdb into a temporary directory) and one
# data directory; Debian's nginx on loopback balances the nodes. Checks that requests reach
# both nodes, that a log followed through the proxy streams while the worker trains, that
# with one node killed every request still succeeds, and that a cancel through the proxy
# ends the follow.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_nginx
swift build -c release --product preftune >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stop_postgres "$work/pg"
  rm -rf "$work"
}
trap cleanup EXIT
database=$(start_postgres "$work/pg")
export PREFTUNE_DATABASE="$database"
node1=$(free_port); node2=$(free_port); proxy_port=$(free_port)
"$bin/preftune" serve --listen "127.0.0.1:$node1" --data-dir "$work/data" --workers 0 >"$work/node1.log" 2>&1 &
first=$!; pids+=($first)
wait_healthy "http://127.0.0.1:$node1"
"$bin/preftune" serve --listen "127.0.0.1:$node2" --data-dir "$work/data" --workers 0 >"$work/node2.log" 2>&1 &
pids+=($!)
"$bin/preftune" worker --data-dir "$work/data" --threads-per-job 1 >"$work/worker.log" 2>&1 &
pids+=($!)
wait_healthy "http://127.0.0.1:$node2"

# The deployed file's upstream, pointed at the two nodes here; its server block as deployed
# but for TLS (the test speaks plain HTTP on loopback).
mkdir -p "$work/nginx"
sed -e "s/server 10.0.0.11:8080/server 127.0.0.1:$node1/" -e "s/server 10.0.0.12:8080/server 127.0.0.1:$node2/" \
  -n -e '/^upstream preftune {/,/^}/p' deploy/nginx/preftune-fleet.conf >"$work/nginx/upstream.conf"
grep -q "127.0.0.1:$node1" "$work/nginx/upstream.conf" && grep -q "127.0.0.1:$node2" "$work/nginx/upstream.conf" \
  || { echo "deploy/nginx/preftune-fleet.conf's upstream did not take the test's nodes"; cat "$work/nginx/upstream.conf"; exit 1; }
start_nginx "$work/nginx" "$proxy_port" "$work/nginx/upstream.conf" \
  "$PWD/deploy/nginx/preftune-fleet-balancing.conf" "$PWD/deploy/nginx/preftune-locations.conf"
pids+=($proxy)
wait_healthy "http://127.0.0.1:$proxy_port"

start_endless_job "$bin" "http://127.0.0.1:$proxy_port" "$work/data" "$work"
for _ in $(seq 20); do curl -sf "${auth[@]}" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job" >/dev/null; done
for node in "$node1" "$node2"; do
  grep -q "127.0.0.1:$node\$" "$work/nginx/logs/access.log" || { echo "no request reached the node on port $node"; exit 1; }
done

# The worker trains on its own; lines reach a follower on whichever node nginx picks.
curl -sN --max-time 3 "${auth[@]}" -H "Accept: text/event-stream" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/logs" >"$work/sse.txt" || true
sse=$(grep -c '^id: ' "$work/sse.txt" || true)
echo "through nginx to two nodes in 3 s: $sse SSE events"
[ "$sse" -ge 2 ] || { echo "SSE did not stream through nginx from the fleet"; cat "$work/worker.log"; exit 1; }

# One node dies: nginx takes it out, and every request still succeeds.
kill -9 "$first"
failed=0
for _ in $(seq 40); do curl -sf -o /dev/null "${auth[@]}" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job" || failed=$((failed + 1)); done
echo "with one node killed: $failed of 40 requests failed"
[ "$failed" -eq 0 ] || { cat "$work/nginx/logs/error.log"; exit 1; }

# A cancel through the proxy reaches the worker and ends a follow on the surviving node.
cancel_ends_follow "$bin" "$work"
echo "nginx fleet: ok"
