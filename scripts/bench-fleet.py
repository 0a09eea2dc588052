#!/usr/bin/env python3
"""make bench-fleet: a fleet on this machine, measured. JSON lines on stdout, like make bench.

Run by scripts/bench-fleet.sh, which starts PostgreSQL and passes its URL in PREFTUNE_DATABASE
and the binary's path as the first argument. In one run:
- claim latency: from POST /v1/fine_tuning/jobs returning to a worker's claim (the lease
  history's millisecond clock), with idle workers waiting; this includes file validation and
  the LISTEN/NOTIFY wake-up;
- short jobs per minute with 1, 2 and 4 worker processes (1 thread each) on PostgreSQL;
- GET /v1/fine_tuning/jobs/{id} requests per second (wrk, 2 threads, 64 connections) on an
  API node on PostgreSQL against one on SQLite, alternately, medians of three.
Progress goes to stderr.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from harness import API, free_port, log, stop, wait_healthy

BINARY = sys.argv[1]
DATABASE = os.environ["PREFTUNE_DATABASE"]
PSQL_HOST = re.search(r"host=([^&]+)", DATABASE).group(1)
WORK = tempfile.mkdtemp(prefix="preftune-bench-fleet-")
CHILDREN = []


def emit(record):
    print(json.dumps(record), flush=True)


def spawn(arguments, name, database=True):
    environment = dict(os.environ)
    if not database:
        environment.pop("PREFTUNE_DATABASE", None)
    output = open(os.path.join(WORK, name + ".log"), "w")
    process = subprocess.Popen([BINARY] + arguments, stdout=output, stderr=output, env=environment)
    CHILDREN.append(process)
    return process


class Node(API):
    """An API node (`serve --workers 0`) and its admin key."""

    def __init__(self, data, database=True):
        self.port = free_port()
        self.data = data
        self.process = spawn(["serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", data, "--workers", "0", "--quota-jobs", "1000"],
                             f"node-{self.port}", database)
        base = f"http://127.0.0.1:{self.port}"
        wait_healthy(base)
        super().__init__(base, open(os.path.join(data, "admin.key")).read().strip())

    def fixtures(self):
        model = self.call("POST", "/v1/models", {"id": "tiny", "seed": 1, "config": {
            "sample_shape": [1, 4, 4], "hidden": 16, "depth": 1, "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}})["id"]
        return model, self.upload([json.dumps({"prompt": f"p{i % 4}", "sample": [0.1 * (i % 5)] * 16}) for i in range(16)])

    def submit(self, model, file, steps=50):
        return self.call("POST", "/v1/fine_tuning/jobs", {
            "model": model, "training_file": file,
            "method": {"type": "sft", "sft": {"hyperparameters": {"n_steps": steps, "batch_size": 4, "log_every": 10,
                                                                   "checkpoint_every": 1_000_000}}}})["id"]

    def status(self, job):
        return self.call("GET", f"/v1/fine_tuning/jobs/{job}")["status"]


def psql(query):
    result = subprocess.run(["psql", "-h", PSQL_HOST, "-U", "preftune", "-d", "preftune", "-At", "-c", query],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def wait_all(node, jobs, timeout=600):
    deadline = time.time() + timeout
    pending = set(jobs)
    while pending:
        if time.time() > deadline:
            raise SystemExit(f"jobs did not finish: {sorted(pending)[:3]}")
        for job in list(pending):
            status = node.status(job)
            if status in ("succeeded", "failed", "cancelled"):
                if status != "succeeded":
                    raise SystemExit(f"{job} ended {status}")
                pending.discard(job)
        time.sleep(0.02)


def workers(count):
    return [spawn(["worker", "--data-dir", os.path.join(WORK, "fleet"), "--threads-per-job", "1", "--lease-seconds", "10"],
                  f"worker-{count}-{i}") for i in range(count)]


def wrk(url, key):
    output = subprocess.run(["wrk", "-t2", "-c64", "-d5s", "-H", f"Authorization: Bearer {key}", url],
                            capture_output=True, text=True, check=True).stdout
    log(output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def main():
    machine = {"cores": os.cpu_count(), "postgres": psql("SHOW server_version")}
    fleet = Node(os.path.join(WORK, "fleet"))
    model, file = fleet.fixtures()

    # Claim latency: 2 idle workers; 20 jobs one after another, each left to finish.
    idle = workers(2)
    time.sleep(1.5)
    latencies = []
    for _ in range(20):
        submitted = time.time() * 1000
        job = fleet.submit(model, file, steps=10)
        wait_all(fleet, [job])
        claimed = float(psql(f"SELECT MIN(claimed_at_ms) FROM lease_history WHERE job_id = '{job}'"))
        latencies.append(claimed - submitted)
    for process in idle:
        stop(process)
    latencies.sort()
    emit({"name": "fleet/claim_latency_p50", "value": round(statistics.median(latencies), 1), "unit": "ms",
          "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1), "runs": len(latencies),
          "measures": "POST returned to the worker's claim (file validation and NOTIFY wake-up included)", **machine})

    # Short jobs per minute: 16 sft jobs of 3,000 steps (about a third of a second each), submitted at once.
    for count in (1, 2, 4):
        started = workers(count)
        time.sleep(1.0)
        begin = time.time()
        jobs = [fleet.submit(model, file, steps=3000) for _ in range(16)]
        wait_all(fleet, jobs)
        elapsed = time.time() - begin
        for process in started:
            stop(process)
        emit({"name": f"fleet/short_jobs_per_minute_{count}_workers", "value": round(len(jobs) * 60 / elapsed, 1), "unit": "jobs/min",
              "jobs": len(jobs), "steps_per_job": 3000, "seconds": round(elapsed, 2), **machine})

    # GET a job: PostgreSQL node against an SQLite node, same body shape, in this run.
    single = Node(os.path.join(WORK, "single"), database=False)
    single_model, single_file = single.fixtures()
    single_job = single.submit(single_model, single_file)
    fleet_job = jobs[0]
    urls = {"postgres": (f"{fleet.base}/v1/fine_tuning/jobs/{fleet_job}", fleet.key),
            "sqlite": (f"{single.base}/v1/fine_tuning/jobs/{single_job}", single.key)}
    for url, key in urls.values():
        subprocess.run(["wrk", "-t2", "-c64", "-d2s", "-H", f"Authorization: Bearer {key}", url], capture_output=True, check=True)
    rates = {"postgres": [], "sqlite": []}
    for _ in range(3):
        for engine, (url, key) in urls.items():
            rates[engine].append(wrk(url, key))
    medians = {engine: statistics.median(values) for engine, values in rates.items()}
    for engine in ("postgres", "sqlite"):
        emit({"name": f"fleet/get_job_{engine}", "value": round(medians[engine], 1), "unit": "requests/s", "connections": 64,
              "runs": rates[engine], **machine})
    emit({"name": "fleet/get_job_postgres_vs_sqlite", "value": round(medians["postgres"] / medians["sqlite"], 3), "unit": "ratio", **machine})


try:
    main()
finally:
    for child in CHILDREN:
        stop(child)
    subprocess.run(["rm", "-rf", WORK])
