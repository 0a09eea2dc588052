# preftune — build, test and benchmark. Every target installs missing system
# packages first (scripts/ensure-deps.sh; apt-get, with sudo when not root).
SWIFT ?= swift
# Tests run optimised: the numerics are many times slower in a debug build.
TEST_FLAGS = -c release -Xswiftc -enable-testing
# oneDNN's OpenMP threads sleep when idle instead of spinning (docs/numerics.md): test threads
# that each start a team would otherwise spin on cores the rest of the suite needs.
export OMP_WAIT_POLICY ?= passive

.PHONY: all deps build test test-browser test-nginx test-nginx-fleet soak bench-fleet bench bench-pytorch bench-ratios bench-api bench-followers probe-hostile eval eval-bf16 demo run clean

all: build

deps:
	@scripts/ensure-deps.sh

build: deps
	$(SWIFT) build -c release

test:
	@scripts/ensure-deps.sh python
	$(SWIFT) build $(TEST_FLAGS) --build-tests
	$(SWIFT) test $(TEST_FLAGS) --skip-build

# The dashboard (GET /) in headless chromium against a server with a running job.
test-browser: deps
	@scripts/test-browser.sh

# deploy/nginx in front of a real server (Debian's nginx on loopback): log following streams through.
test-nginx: deps
	@scripts/test-nginx.sh

# deploy/nginx/preftune-fleet.conf balancing two API nodes and a worker on a real PostgreSQL
# (installs Debian's nginx-light and postgresql when missing): a node killed mid-run.
test-nginx-fleet: deps
	@scripts/test-nginx-fleet.sh

# JSON lines on stdout, one measurement per line: {"name", "value", "unit", …}.
bench: deps
	$(SWIFT) build -c release --product preftune-bench
	$(SWIFT) run -c release --skip-build preftune-bench

# SPEC §7's PyTorch baselines measured on this machine, by a transcription of resmlp checked against
# the golden forward (needs torch: pip install torch --index-url https://download.pytorch.org/whl/cpu).
bench-pytorch:
	@python3 scripts/bench-pytorch.py

# The same ratios taken without the machine's drift: each measurement timed between two of PyTorch's
# (ROUNDS=3, BENCH_CONFIGS=bench-m), each ratio per round and its median (JSON lines; needs torch).
bench-ratios:
	$(SWIFT) build -c release --product preftune-bench
	@python3 scripts/bench-ratios.py

# wrk against a real server on loopback and nginx serving the same body: GET /v1/fine_tuning/jobs/{id}, keep-alive, 64 connections.
bench-api: deps
	@scripts/bench-api.sh

# Three projects share two worker processes: 60 jobs of mixed priorities all finish, each project's
# share of worker time is within 0.10 of its weight's, none starves, preempted jobs end bit-identical
# (JSON lines; SOAK_DATABASE=postgres for PostgreSQL).
soak: deps
	@scripts/soak.sh

# A fleet on this machine on a real PostgreSQL (JSON lines): claim latency, short jobs per minute with
# 1, 2 and 4 workers, and GET /v1/fine_tuning/jobs/{id} on PostgreSQL against SQLite in the same run.
bench-fleet: deps
	@scripts/bench-fleet.sh

# 1,000 clients following one running job's log: lines received, server memory, threads and CPU (JSON lines).
bench-followers: deps
	$(SWIFT) build -c release --product preftune
	@scripts/bench-followers.py

# Issue 11's hostile requests against a release server: alive, RSS and /healthz after each (JSON lines).
probe-hostile: deps
	$(SWIFT) build -c release --product preftune
	@python3 scripts/probe-hostile.py .build/release/preftune

# The five objectives compared on the ShapeWorld demo with their defaults, 3 job seeds each (about 10 minutes): a markdown table, mean ± sd.
eval: deps
	$(SWIFT) build -c release --product preftune-eval
	$(SWIFT) run -c release --skip-build preftune-eval

# The same in fp32 and in bf16 side by side (fine-tuning and sampling in bf16, same seeds), with each
# method's reward difference: issue 14 asks for every method within 0.01 of fp32.
eval-bf16: deps
	$(SWIFT) build -c release --product preftune-eval
	$(SWIFT) run -c release --skip-build preftune-eval --precision both

# The service end to end on ShapeWorld (a few minutes): starts a server unless one answers at
# PREFTUNE_URL, pretrains a base with sft, fine-tunes it with dro, prints the reward before and after.
demo: deps
	@scripts/demo.sh

# The API on 127.0.0.1:8080 with ./data (the first start writes ./data/admin.key).
run: deps
	$(SWIFT) build -c release --product preftune
	$(SWIFT) run -c release --skip-build preftune serve --listen 127.0.0.1:8080 --data-dir ./data

clean:
	rm -rf .build
