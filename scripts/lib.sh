# Shared by the scripts behind the make targets (sourced, not run).

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# True once BASE_URL/healthz answers (up to 10 s); says so and fails otherwise.
wait_healthy() {
  for _ in $(seq 100); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/healthz', timeout=2)" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no preftune server answered at $1" >&2
  return 1
}

# A field of the JSON object on stdin: `… | json_field id`.
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
