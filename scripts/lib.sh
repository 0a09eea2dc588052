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

# Debian's PostgreSQL in DIR (initdb as the `postgres` user when run as root), listening on a
# Unix socket in DIR only; installs the server when missing. Prints a libpq URL for database
# `preftune`. Stop it with `stop_postgres DIR`.
start_postgres() {
  local dir=$1 bin
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "preftune: installing postgresql" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  mkdir -p "$dir"
  local run=()
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U preftune --auth=trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-k $dir -c listen_addresses=''" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; return 1; }
  "$bin/psql" -h "$dir" -U preftune -d postgres -q -c "CREATE DATABASE preftune" >/dev/null
  echo "postgresql://preftune@/preftune?host=$dir"
}

stop_postgres() {
  local dir=$1 bin run=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ "$(id -u)" -eq 0 ] && run=(runuser -u postgres --)
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian's nginx (nginx-light, installed when missing); sets $nginx to its path.
ensure_nginx() {
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "preftune: installing nginx for the proxy test" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
  fi
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
}

# Starts nginx from DIR (its prefix: config, logs, temporary files) on loopback PORT, with
# UPSTREAM (a file defining `upstream preftune`) and the server-level files after it included;
# access log lines "METHOD URI STATUS UPSTREAM_ADDRESS". Sets $proxy to its pid.
start_nginx() {
  local dir=$1 port=$2 upstream=$3; shift 3
  local includes=""
  for file in "$@"; do includes+="        include $file;"$'\n'; done
  mkdir -p "$dir/logs"
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
    log_format upstream '\$request_method \$uri \$status \$upstream_addr';
    access_log $dir/logs/access.log upstream;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $upstream;
    server {
        listen 127.0.0.1:$port;
$includes    }
}
CONF
  "$nginx" -t -c "$dir/nginx.conf" -p "$dir" 2>"$dir/check.log" || { cat "$dir/check.log" >&2; return 1; }
  "$nginx" -c "$dir/nginx.conf" -p "$dir" -g "daemon off;" 2>>"$dir/logs/error.log" &
  proxy=$!
}

# Through the proxy at URL, with BIN's client and the admin key of DATA: a tiny model, a
# training file (in WORK) and a job that trains until cancelled. Exports PREFTUNE_URL and
# PREFTUNE_API_KEY; sets $job and $auth (curl's header arguments).
start_endless_job() {
  local bin=$1 url=$2 data=$3 work=$4 file
  export PREFTUNE_URL="$url" PREFTUNE_API_KEY="$(cat "$data/admin.key")"
  python3 -c 'import json; print("\n".join(json.dumps({"prompt": "p%d" % (i % 4), "sample": [0.1 * (i % 5)] * 16}) for i in range(16)))' >"$work/train.jsonl"
  file=$("$bin/preftune" files upload "$work/train.jsonl" | cut -d' ' -f1)
  "$bin/preftune" models create tiny --config '{"sample_shape": [1, 4, 4], "hidden": 16, "depth": 1, "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}' >/dev/null
  job=$("$bin/preftune" jobs create --model tiny --training-file "$file" --method sft \
    --hyperparameters '{"n_steps": 10000000, "batch_size": 4, "log_every": 2000, "checkpoint_every": 5000000}')
  auth=(-H "Authorization: Bearer $PREFTUNE_API_KEY")
}

# Follows $job's log (SSE) through $PREFTUNE_URL, cancels the job, and checks that the follow
# ends with it. Fails with a message otherwise.
cancel_ends_follow() {
  local bin=$1 work=$2 follower
  curl -sN --max-time 30 "${auth[@]}" -H "Accept: text/event-stream" "$PREFTUNE_URL/v1/fine_tuning/jobs/$job/logs" >"$work/end.txt" &
  follower=$!
  sleep 1
  "$bin/preftune" jobs cancel "$job" >/dev/null
  wait $follower
  grep -q '^event: end' "$work/end.txt" || { echo "the SSE stream did not end with the job" >&2; return 1; }
}
