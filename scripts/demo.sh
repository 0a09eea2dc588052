#!/usr/bin/env bash
# make demo: the whole service on ShapeWorld, through its API and CLI. Starts a server
# (./data/demo) unless one answers at PREFTUNE_URL, generates the demo data, creates a
# base model, pretrains it with sft, fine-tunes it with dro on expert demonstrations,
# following each job's log, and prints the reward of samples before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export PREFTUNE_URL="${PREFTUNE_URL:-http://127.0.0.1:8080}"
PRETRAIN_STEPS="${PRETRAIN_STEPS:-3000}"
DRO_STEPS="${DRO_STEPS:-200}"
swift build -c release --product preftune >/dev/null
swift build -c release --product preftune-eval >/dev/null
BIN="$(swift build -c release --show-bin-path)"
PREFTUNE="$BIN/preftune"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# One quick look: is a server already there?
healthy() { python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/healthz', timeout=2)" "$PREFTUNE_URL" 2>/dev/null; }

if healthy; then
    echo "== using the server at $PREFTUNE_URL"
    if [ -z "${PREFTUNE_API_KEY:-}" ]; then
        [ -f ./data/admin.key ] || { echo "set PREFTUNE_API_KEY for the server at $PREFTUNE_URL" >&2; exit 2; }
        export PREFTUNE_API_KEY="$(cat ./data/admin.key)"
    fi
else
    LISTEN="${PREFTUNE_URL#http://}"
    echo "== starting preftune serve on $LISTEN (data: ./data/demo)"
    "$PREFTUNE" serve --listen "$LISTEN" --data-dir ./data/demo > "$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_healthy "$PREFTUNE_URL" || { cat "$WORK/server.log"; exit 1; }
    export PREFTUNE_API_KEY="$(cat ./data/demo/admin.key)"
fi


echo "== generating ShapeWorld data"
"$BIN/preftune-eval" demo-data --out "$WORK" --examples 4000
PRETRAIN_FILE=$("$PREFTUNE" files upload "$WORK/pretrain.jsonl" | cut -d' ' -f1)
EXPERT_FILE=$("$PREFTUNE" files upload "$WORK/expert.jsonl" | cut -d' ' -f1)
BASE="shapes-$(date +%s)"
"$PREFTUNE" models create "$BASE" --config @"$WORK/config.json" --seed 7 >/dev/null
echo "   files $PRETRAIN_FILE (pretraining), $EXPERT_FILE (expert demonstrations); base model $BASE"

echo "== pretraining $BASE with sft ($PRETRAIN_STEPS steps)"
JOB=$("$PREFTUNE" jobs create --model "$BASE" --training-file "$PRETRAIN_FILE" --method sft --suffix pretrain --seed 7 \
    --hyperparameters "{\"n_steps\": $PRETRAIN_STEPS, \"batch_size\": 64, \"learning_rate\": 0.002, \"lr_scheduler\": \"cosine\", \"warmup_steps\": 100, \"prompt_dropout\": 0.1, \"log_every\": 250, \"checkpoint_every\": $PRETRAIN_STEPS}")
"$PREFTUNE" jobs logs "$JOB" -f
PRETRAINED=$("$PREFTUNE" jobs get "$JOB" | json_field fine_tuned_model)

PROMPTS=()
while read -r prompt; do PROMPTS+=(--prompt "$prompt"); done < "$WORK/prompts.txt"
sample() { "$PREFTUNE" sample --model "$1" "${PROMPTS[@]}" --n 4 --steps 20 --guidance 2 --seed 1 > "$2"; }
sample "$PRETRAINED" "$WORK/before.json"

echo "== fine-tuning $PRETRAINED with dro on expert demonstrations ($DRO_STEPS steps)"
JOB=$("$PREFTUNE" jobs create --model "$PRETRAINED" --training-file "$EXPERT_FILE" --method dro --suffix dro --seed 7 \
    --hyperparameters "{\"n_steps\": $DRO_STEPS, \"batch_size\": 32, \"learning_rate\": 0.0001, \"policy_steps\": 10, \"log_every\": 20, \"checkpoint_every\": 100}")
"$PREFTUNE" jobs logs "$JOB" -f
TUNED=$("$PREFTUNE" jobs get "$JOB" | json_field fine_tuned_model)
sample "$TUNED" "$WORK/after.json"
"$PREFTUNE" sample --model "$TUNED" --prompt "red circle left" --prompt "blue square center" --n 6 --seed 1 --guidance 2 --png ./data/demo-samples.png >/dev/null

echo "== reward of 256 samples (64 prompts × 4, the same noise), before and after dro"
echo "   before ($PRETRAINED): $("$BIN/preftune-eval" score "$WORK/before.json")"
echo "   after  ($TUNED): $("$BIN/preftune-eval" score "$WORK/after.json")"
echo "   a grid of the fine-tuned model's samples: ./data/demo-samples.png"
