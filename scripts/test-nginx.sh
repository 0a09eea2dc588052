#!/usr/bin/env bash
# make test-nginx: Debian's nginx on loopback with deploy/nginx/preftune-locations.conf
# in front of a real `preftune serve`; checks that log following streams through it
# line by line (plain and SSE), that uploads pass, and that /metrics is served.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "preftune: installing nginx for the proxy test"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
swift build -c release --product preftune >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
api_port=$(free_port); proxy_port=$(free_port)
"$bin/preftune" serve --listen "127.0.0.1:$api_port" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
server=$!
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log $work/nginx/logs/access.log;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream preftune { server 127.0.0.1:$api_port; keepalive 16; }
    server {
        listen 127.0.0.1:$proxy_port;
        include $PWD/deploy/nginx/preftune-locations.conf;
    }
}
CONF
"$nginx" -t -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx-t.log" || { cat "$work/nginx-t.log"; exit 1; }
"$nginx" -c "$work/nginx/nginx.conf" -p "$work/nginx" -g "daemon off;" 2>>"$work/nginx/logs/error.log" &
proxy=$!
trap 'kill $proxy 2>/dev/null; kill -TERM $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
wait_healthy "http://127.0.0.1:$proxy_port"

export PREFTUNE_URL="http://127.0.0.1:$proxy_port" PREFTUNE_API_KEY="$(cat "$work/data/admin.key")"
python3 -c 'import json; print("\n".join(json.dumps({"prompt": "p%d" % (i % 4), "sample": [0.1 * (i % 5)] * 16}) for i in range(16)))' >"$work/train.jsonl"
file=$("$bin/preftune" files upload "$work/train.jsonl" | cut -d' ' -f1)
"$bin/preftune" models create tiny --config '{"sample_shape": [1, 4, 4], "hidden": 16, "depth": 1, "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}' >/dev/null
job=$("$bin/preftune" jobs create --model tiny --training-file "$file" --method sft \
  --hyperparameters '{"n_steps": 10000000, "batch_size": 4, "log_every": 2000, "checkpoint_every": 5000000}')
auth=(-H "Authorization: Bearer $PREFTUNE_API_KEY")

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
curl -sN --max-time 30 "${auth[@]}" -H "Accept: text/event-stream" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/logs" >"$work/end.txt" &
follower=$!
sleep 1
"$bin/preftune" jobs cancel "$job" >/dev/null
wait $follower
grep -q '^event: end' "$work/end.txt" || { echo "the SSE stream did not end with the job"; exit 1; }

metrics=$(curl -s "$PREFTUNE_URL/metrics")
echo "$metrics" | grep -q '^preftune_jobs{status="cancelled"} 1' || { echo "/metrics did not pass: $(echo "$metrics" | head -12)"; exit 1; }
echo "nginx: ok"
