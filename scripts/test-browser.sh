#!/usr/bin/env bash
# make test-browser: the dashboard in a real headless browser (Debian's chromium).
# Starts a server with a running job that has written a checkpoint sample grid, been
# validated and graded by a reward model, loads GET / with the key in the address, and
# checks in the rendered DOM that the job's row, its loss, validation and reward curves,
# the best checkpoint's mark and the sample image are there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "preftune: installing chromium for the browser test"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  browser=$(command -v chromium)
fi
swift build -c release --product preftune >/dev/null
swift build -c release --product preftune-eval >/dev/null
bin=$(swift build -c release --show-bin-path)
data=$(mktemp -d)
port=$(free_port)
"$bin/preftune" serve --listen "127.0.0.1:$port" --data-dir "$data/server" >"$data/serve.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
wait_healthy "http://127.0.0.1:$port"
export PREFTUNE_URL="http://127.0.0.1:$port" PREFTUNE_API_KEY="$(cat "$data/server/admin.key")"

"$bin/preftune-eval" demo-data --out "$data/demo" --examples 300 >/dev/null
file=$("$bin/preftune" files upload "$data/demo/pretrain.jsonl" | cut -d' ' -f1)
"$bin/preftune" models create shapes --config @"$data/demo/config.json" >/dev/null
# A reward model (docs/training.md's format): one layer scoring a sample by its mean value.
python3 - "$data/demo/config.json" "$data/reward.safetensors" <<'PY'
import json, struct, sys
config = json.load(open(sys.argv[1]))
size = 1
for n in config["sample_shape"]: size *= n
weight, bias = [1.0 / size] * size, [0.0]
header = {"__metadata__": {"format": "preftune.reward_mlp.v1", "condition": "none"},
          "layers.0.weight": {"dtype": "F32", "shape": [1, size], "data_offsets": [0, 4 * size]},
          "layers.0.bias": {"dtype": "F32", "shape": [1], "data_offsets": [4 * size, 4 * size + 4]}}
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(sys.argv[2], "wb") as out:
    out.write(struct.pack("<Q", len(text)) + text + struct.pack("<%df" % (size + 1), *(weight + bias)))
PY
reward=$("$bin/preftune" files upload "$data/reward.safetensors" | cut -d' ' -f1)
job=$("$bin/preftune" jobs create --model shapes --training-file "$file" --validation-file "$file" --method sft \
  --hyperparameters '{"n_steps": 10000000, "batch_size": 16, "log_every": 10, "checkpoint_every": 100, "learning_rate": 0.002}' \
  --grader '{"type": "reward_model", "file": "'"$reward"'", "samples_per_prompt": 2, "steps": 10}' \
  --early-stopping '{"metric": "reward_mean", "mode": "max"}')
for _ in $(seq 300); do
  curl -sf -H "Authorization: Bearer $PREFTUNE_API_KEY" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/checkpoints" | grep -q sample_grid_url\":\"/ && break
  sleep 0.1
done

"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=8000 \
  --dump-dom "$PREFTUNE_URL/#key=$PREFTUNE_API_KEY&job=$job" >"$data/dom.html" 2>"$data/browser.log"
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --virtual-time-budget=8000 --window-size=1400,900 \
  --screenshot="${SCREENSHOT:-$data/dashboard.png}" "$PREFTUNE_URL/#key=$PREFTUNE_API_KEY&job=$job" >>"$data/browser.log" 2>&1 || true
python3 - "$data/dom.html" "$job" <<'PY'
import re, sys
dom, job = open(sys.argv[1]).read(), sys.argv[2]
checks = {
    "the job's row": re.search(r'<tr[^>]*data-job-id="%s"' % job, dom),
    "its status": re.search(r'data-job-id="%s"[^>]*data-status="running"|data-status="running"[^>]*data-job-id="%s"' % (job, job), dom),
    "a plotted loss curve": re.search(r'data-series="loss".*?<canvas[^>]*data-points="([2-9]|\d\d+)"', dom, re.S),
    "a plotted validation curve": re.search(r'data-series="val_loss"[^>]*>.*?<canvas[^>]*data-points="[1-9]', dom, re.S),
    "a plotted reward curve": re.search(r'data-series="reward_mean"[^>]*>.*?<canvas[^>]*data-points="[1-9]', dom, re.S),
    "the best checkpoint marked": re.search(r'<div id="best"[^>]*data-step="\d+"[^>]*>Best checkpoint: step \d+ \(reward_mean', dom)
        and re.search(r'class="chart selection"[^>]*data-series="reward_mean"[^>]*data-best-step="\d+"', dom),
    "the sample grid image": re.search(r'<img[^>]*src="blob:[^"]*"[^>]*data-loaded="true"|<img[^>]*data-loaded="true"[^>]*src="blob:', dom),
    "the log tail": re.search(r'<pre id="log">[^<]*step \d+/', dom),
}
failed = [name for name, found in checks.items() if not found]
for name, found in checks.items():
    print(("ok      " if found else "MISSING ") + name)
if failed:
    print(dom[:4000])
    sys.exit("the dashboard is missing: " + ", ".join(failed))
PY
curl -sf -X POST -H "Authorization: Bearer $PREFTUNE_API_KEY" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/cancel" >/dev/null
echo "dashboard: ok"
