#!/usr/bin/env bash
# make bench-api: wrk against a real `preftune serve` on loopback, for
# GET /v1/fine_tuning/jobs/{id}: the most requests per second with keep-alive and
# 64 connections, beside Debian's nginx serving the same body from a file in the same
# run (the ratio is issue 12's target, >= 0.4), then the latency under a light load
# while a job trains on every core. Prints one JSON object per line, like make bench.
# Stops the servers when done.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if ! command -v wrk >/dev/null 2>&1; then
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
swift build -c release --product preftune >&2
binary=$(swift build -c release --show-bin-path)/preftune
data=$(mktemp -d)
port=$(free_port)
"$binary" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$data/serve.log" 2>&1 &
server=$!
proxy=""
trap 'kill -TERM $server $proxy 2>/dev/null; wait $server $proxy 2>/dev/null; rm -rf "$data"' EXIT
wait_healthy "http://127.0.0.1:$port"
key=$(cat "$data/admin.key")
base="http://127.0.0.1:$port/v1"
auth=(-H "Authorization: Bearer $key")

curl -sf "${auth[@]}" -H "Content-Type: application/json" -d \
  '{"id":"bench-base","config":{"sample_shape":[1,4,4],"hidden":16,"depth":1,"cond":{"kind":"text","vocab":32,"max_tokens":4}}}' \
  "$base/models" >/dev/null
python3 -c 'import json; print("\n".join(json.dumps({"prompt": "p%d" % i, "sample": [0.0] * 16}) for i in range(32)))' >"$data/train.jsonl"
file=$(curl -sf "${auth[@]}" -F purpose=fine-tune -F "file=@$data/train.jsonl" "$base/files" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
job=$(curl -sf "${auth[@]}" -H "Content-Type: application/json" \
  -d "{\"model\":\"bench-base\",\"training_file\":\"$file\",\"method\":{\"type\":\"sft\"}}" "$base/fine_tuning/jobs" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

progress() { curl -sf "${auth[@]}" "$base/fine_tuning/jobs/$1" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["status"], j["progress"]["step"])'; }
until [ "$(progress "$job" | cut -d' ' -f1)" = succeeded ]; do sleep 0.2; done

# wrk's summary as one JSON line.
report() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, re, sys
name, connections, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def milliseconds(value):
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
percentiles = {p: milliseconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"name": name, "value": round(rate, 1), "unit": "requests/s", "connections": connections,
                  "p50_ms": percentiles.get("50"), "p99_ms": percentiles.get("99"),
                  "non_2xx": int(errors.group(1)) if errors else 0}))
PY
}

# 1. Throughput: nothing training, 64 keep-alive connections as fast as they go, against
#    preftune and against nginx serving the same body (a file, as it would a cached answer),
#    alternately. A 2 s warm-up each, then three 5 s runs of each; medians are reported.
mkdir -p "$data/static/v1/fine_tuning/jobs" "$data/nginx"
curl -sf "${auth[@]}" "$base/fine_tuning/jobs/$job" >"$data/static/v1/fine_tuning/jobs/$job"
# nginx's workers run as another user when started as root: they must be able to read the body.
chmod a+x "$data"; chmod -R a+rX "$data/static"
nginx_port=$(free_port)
cat >"$data/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $data/nginx/nginx.pid;
error_log $data/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $data/nginx/body;
    default_type application/json;
    server { listen 127.0.0.1:$nginx_port; root $data/static; }
}
CONF
"$nginx" -c "$data/nginx/nginx.conf" -p "$data/nginx" -g "daemon off;" 2>>"$data/nginx/error.log" &
proxy=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$nginx_port/v1/fine_tuning/jobs/$job" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$nginx_port/v1/fine_tuning/jobs/$job" >/dev/null || { echo "nginx does not serve the body" >&2; exit 1; }
preftune_url="$base/fine_tuning/jobs/$job"
nginx_url="http://127.0.0.1:$nginx_port/v1/fine_tuning/jobs/$job"
wrk -t2 -c64 -d2s -H "Authorization: Bearer $key" "$preftune_url" >/dev/null
wrk -t2 -c64 -d2s "$nginx_url" >/dev/null
runs=(); nginx_runs=()
for i in 1 2 3; do
  output=$(wrk -t2 -c64 -d5s --latency -H "Authorization: Bearer $key" "$preftune_url")
  echo "$output" >&2
  runs+=("$(report api/get_job 64 "$output")")
  output=$(wrk -t2 -c64 -d5s --latency "$nginx_url")
  echo "$output" >&2
  nginx_runs+=("$(report api/get_job_nginx_same_body 64 "$output")")
done
median() {
  python3 -c '
import json, sys
runs = sorted((json.loads(line) for line in sys.stdin), key=lambda r: r["value"])
median = runs[1]
median["runs"] = [r["value"] for r in runs]
print(json.dumps(median))'
}
ours=$(printf '%s\n' "${runs[@]}" | median)
theirs=$(printf '%s\n' "${nginx_runs[@]}" | median)
echo "$ours" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["target"]=30000; print(json.dumps(r))'
echo "$theirs"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(json.dumps({"name": "api/get_job_vs_nginx", "value": round(a["value"] / b["value"], 3), "unit": "ratio", "preftune": a["value"], "nginx": b["value"], "target": 0.4}))' "$ours" "$theirs"

# 2. Latency while a job trains on every core: a light load (4 connections, each waiting
#    10 ms between requests, about 300 requests/s) on the running job. Target p99 < 20 ms.
curl -sf "${auth[@]}" -H "Content-Type: application/json" -d \
  '{"id":"bench-large","config":{"sample_shape":[3,16,16],"hidden":512,"depth":6,"cond":{"kind":"text","vocab":512,"max_tokens":16}}}' \
  "$base/models" >/dev/null
python3 -c 'import json, random; random.seed(1); print("\n".join(json.dumps({"prompt": "shape %d" % i, "sample": [round(random.uniform(-1, 1), 3) for _ in range(768)]}) for i in range(256)))' >"$data/large.jsonl"
large_file=$(curl -sf "${auth[@]}" -F purpose=fine-tune -F "file=@$data/large.jsonl" "$base/files" | json_field id)
training=$(curl -sf "${auth[@]}" -H "Content-Type: application/json" \
  -d "{\"model\":\"bench-large\",\"training_file\":\"$large_file\",\"method\":{\"type\":\"dro\",\"dro\":{\"hyperparameters\":{\"n_steps\":100000,\"batch_size\":64,\"log_every\":1}}}}" \
  "$base/fine_tuning/jobs" | json_field id)
until [ "$(progress "$training" | cut -d' ' -f2)" -gt 2 ]; do sleep 0.2; done
before=$(progress "$training" | cut -d' ' -f2)
cat >"$data/paced.lua" <<'LUA'
function delay() return 10 end
LUA
output=$(wrk -t1 -c4 -d10s --latency -s "$data/paced.lua" -H "Authorization: Bearer $key" "$base/fine_tuning/jobs/$training")
echo "$output" >&2
after=$(progress "$training")
echo "training job: step $before before, $after after" >&2
[ "$(echo "$after" | cut -d' ' -f1)" = running ] || { echo "the job was not training throughout" >&2; exit 1; }
report api/get_job_while_training 4 "$output" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); r['training_steps_during'] = $(echo "$after" | cut -d' ' -f2) - $before; r['target_p99_ms'] = 20; print(json.dumps(r))"
