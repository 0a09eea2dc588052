#!/usr/bin/env bash
# make bench-api: wrk against a real `preftune serve` on loopback, for
# GET /v1/fine_tuning/jobs/{id} with keep-alive and 64 connections. Prints one
# JSON object per line, like make bench. Stops the server when done.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
swift build -c release --product preftune >&2
binary=$(swift build -c release --show-bin-path)/preftune
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$binary" serve --listen "127.0.0.1:$port" --data-dir "$data" >"$data/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
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

output=$(wrk -t2 -c64 -d10s --latency -H "Authorization: Bearer $key" "$base/fine_tuning/jobs/$job")
echo "$output" >&2
python3 - "$output" <<'PY'
import json, re, sys
text = sys.argv[1]
def milliseconds(value):
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
percentiles = {p: milliseconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"name": "api/get_job", "value": round(rate, 1), "unit": "requests/s", "connections": 64, "threads": 2,
                  "p50_ms": percentiles.get("50"), "p99_ms": percentiles.get("99"),
                  "non_2xx": int(errors.group(1)) if errors else 0}))
PY
