#!/usr/bin/env python3
"""make soak: three projects share two workers, and the scheduler is held to its promises.

Run by scripts/soak.sh with the binary's path as the first argument (and PREFTUNE_DATABASE
set to run on PostgreSQL instead of SQLite). One `preftune serve --workers 2` (worker
processes, 1 thread each), preemption after 3 s of running, fair share over 10 minutes.

- alpha (weight 1), beta (weight 1) and gamma (weight 2) each submit 20 jobs, sft and dpo, of
  priorities 5, 0 and -5 (the same mix in each project), 15 s apart: alpha first, with the
  workers to itself, then beta, then gamma.
- Checked at the end, each a JSON line on stdout (`name`, `value`, `unit`, `limit`, `ok`):
  - every job succeeds;
  - while all three projects have work waiting, each one's share of worker time (from the
    lease history, to the millisecond) is within 0.10 of its weight's share;
  - no project starves: while it has a job of priority 0 or more unfinished, it never goes
    more than 90 s without a worker (its priority -5 jobs wait, by design, while any
    project's higher ones do; that they finish at all is the first check);
  - every preempted job ends with weights bit-identical to the same job never preempted:
    jobs with the same settings, seed, base model (each project's is made with the same
    seed) and data must end alike, and a job of which every copy was preempted is run again
    alone at the end, when nothing can preempt it.
Exits 1 when a check fails. Progress goes to stderr; the server's log stays in the work
directory named there.
"""
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

from harness import API, free_port, log, stop, wait_healthy

BINARY = sys.argv[1]
WORK = tempfile.mkdtemp(prefix="preftune-soak-")
DATA = os.path.join(WORK, "data")
PROJECTS = {"alpha": 1.0, "beta": 1.0, "gamma": 2.0}
STAGGER_SECONDS = 15
SHARE_TOLERANCE = 0.10
# The first project has both workers to itself for 15 s and one for the next 15: under fair share
# by use it then waits while the others catch up, which the first run measured at 59 s.
STARVATION_LIMIT_SECONDS = 90
MIN_RUN_SECONDS = 3
# The base model: small, so that a job is seconds of work on one thread.
CONFIG = {"arch": "resmlp", "sample_shape": [3, 8, 8], "hidden": 128, "depth": 2, "mlp_ratio": 2, "time_freq_dim": 16,
          "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}
FAILURES = []


def emit(name, value, unit, limit=None, ok=True):
    record = {"name": "soak/" + name, "value": value, "unit": unit}
    if limit is not None:
        record["limit"] = limit
    record["ok"] = ok
    print(json.dumps(record), flush=True)
    if not ok:
        FAILURES.append(name)


def vector(seed, offset=0.0, size=192):
    import math
    return [round(math.sin(i * (seed + 1) * 0.7) * 0.8 + offset, 3) for i in range(size)]


SFT_LINES = [json.dumps({"prompt": f"shape {i % 4}", "sample": vector(i)}) for i in range(32)]
DPO_LINES = [json.dumps({"prompt": f"shape {i % 4}", "chosen": vector(i, 0.1), "rejected": vector(i + 5)}) for i in range(32)]


def job_specs():
    """Each project's 20 jobs, the same in each: 4 of priority 5, 12 of 0, 4 of -5; a job's
    settings repeat across projects, so copies of one job end alike unless something is lost."""
    specs = []
    for index in range(20):
        priority = 5 if index % 5 == 1 else (-5 if index % 5 == 3 else 0)
        method = "dpo" if index % 2 else "sft"
        steps = [4000, 7000, 10000][index % 3]
        specs.append({"index": index, "priority": priority, "method": method, "steps": steps, "seed": 100 + index % 7})
    return specs


def job_body(spec, model, files):
    hyper = {"n_steps": spec["steps"], "batch_size": 8, "log_every": 1000, "checkpoint_every": 100_000}
    return {"model": model, "training_file": files[spec["method"]], "seed": spec["seed"], "priority": spec["priority"],
            "method": {"type": spec["method"], spec["method"]: {"hyperparameters": hyper}}}


def spec_key(spec):
    return (spec["method"], spec["steps"], spec["seed"])


def final_weights_digest(api, job_id):
    checkpoints = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints?limit=1")["data"]
    content = api.call("GET", checkpoints[0]["content_url"], raw=True)
    return hashlib.sha256(content).hexdigest()


def wait_for_end(apis, jobs, deadline):
    pending = dict(jobs)
    ends = {}
    while pending and time.time() < deadline:
        for job_id, project in list(pending.items()):
            job = apis[project].call("GET", f"/v1/fine_tuning/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                ends[job_id] = job
                del pending[job_id]
        time.sleep(1)
    return ends, pending


def main():
    os.makedirs(DATA)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = open(os.path.join(WORK, "server.log"), "w")
    server = subprocess.Popen([BINARY, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", DATA, "--workers", "2",
                               "--threads-per-job", "1", "--min-run-seconds", str(MIN_RUN_SECONDS), "--fair-share-window", "600",
                               "--quota-jobs", "1000"], stdout=server_log, stderr=server_log)
    try:
        wait_healthy(base)
        database = ["--database", os.environ["PREFTUNE_DATABASE"]] if os.environ.get("PREFTUNE_DATABASE") else []
        apis = {}
        for name, weight in PROJECTS.items():
            created = subprocess.run([BINARY, "keys", "create", "--project", name, "--data-dir", DATA] + database,
                                     capture_output=True, text=True, check=True)
            apis[name] = API(base, created.stdout.strip().splitlines()[-1])
            subprocess.run([BINARY, "projects", "set", name, "--max-priority", "5", "--weight", str(weight), "--data-dir", DATA] + database,
                           capture_output=True, text=True, check=True)
        log(f"soak: work directory {WORK}")

        fixtures = {}
        for name, api in apis.items():
            model = api.call("POST", "/v1/models", {"id": "base", "config": CONFIG, "seed": 11})["id"]
            fixtures[name] = (model, {"sft": api.upload(SFT_LINES), "dpo": api.upload(DPO_LINES)})

        submitted = {}     # job id → (project, spec)
        submitted_at = {}
        first_submission = {}
        started = time.time()
        for offset, name in enumerate(PROJECTS):
            while time.time() < started + offset * STAGGER_SECONDS:
                time.sleep(0.2)
            first_submission[name] = time.time()
            model, files = fixtures[name]
            for spec in job_specs():
                job = apis[name].call("POST", "/v1/fine_tuning/jobs", job_body(spec, model, files))
                submitted[job["id"]] = (name, spec)
                submitted_at[job["id"]] = time.time()
            log(f"soak: {name} submitted 20 jobs at +{time.time() - started:.0f} s")

        ends, pending = wait_for_end(apis, {job_id: project for job_id, (project, _) in submitted.items()}, time.time() + 1800)
        finished = time.time()
        succeeded = sum(1 for job in ends.values() if job["status"] == "succeeded")
        emit("jobs_succeeded", succeeded, "jobs", limit=len(submitted), ok=succeeded == len(submitted))
        emit("duration", round(finished - started, 1), "s")
        if pending:
            log(f"soak: still unfinished after 30 minutes: {sorted(pending)}")

        # The lease history and each job's project, read from the database.
        leases = []
        if os.environ.get("PREFTUNE_DATABASE"):
            query = ("SELECT h.job_id, j.project_id, p.name, h.claimed_at_ms, COALESCE(h.ended_at_ms, h.expires_at_ms) "
                     "FROM lease_history h JOIN jobs j ON j.id = h.job_id JOIN projects p ON p.id = j.project_id")
            output = subprocess.run(["psql", os.environ["PREFTUNE_DATABASE"], "-At", "-F", "\t", "-c", query],
                                    capture_output=True, text=True, check=True).stdout
            rows = [line.split("\t") for line in output.splitlines() if line]
        else:
            connection = sqlite3.connect(f"file:{os.path.join(DATA, 'preftune.db')}?mode=ro", uri=True)
            rows = connection.execute("SELECT h.job_id, j.project_id, p.name, h.claimed_at_ms, COALESCE(h.ended_at_ms, h.expires_at_ms) "
                                      "FROM lease_history h JOIN jobs j ON j.id = h.job_id JOIN projects p ON p.id = j.project_id").fetchall()
        for job_id, _, project, claimed, ended in rows:
            leases.append((job_id, project, int(claimed) / 1000, int(ended) / 1000))

        # Shares while every project had work waiting: from the last project's first submission
        # to the first moment a project's last job was taken (it had nothing left waiting).
        last_claim = {name: max(claimed for _, project, claimed, _ in leases if project == name) for name in PROJECTS}
        window = (max(first_submission.values()), min(last_claim.values()))
        used = {name: 0.0 for name in PROJECTS}
        for _, project, claimed, ended in leases:
            used[project] += max(0.0, min(ended, window[1]) - max(claimed, window[0]))
        total = sum(used.values())
        emit("contended_window", round(window[1] - window[0], 1), "s")
        for name, weight in PROJECTS.items():
            share = used[name] / total if total else 0.0
            target = weight / sum(PROJECTS.values())
            emit(f"share/{name}", round(share, 3), "fraction", limit=f"{target:.3f} ± {SHARE_TOLERANCE}",
                 ok=total > 0 and abs(share - target) <= SHARE_TOLERANCE)

        # Starvation: the longest time a project went without a worker while it had a job of
        # priority 0 or more unfinished (its -5 jobs wait, by design, while anyone's higher ones
        # do: that they finish at all is the check above). Sampled every 0.1 s.
        last_end = {}
        for job_id, _, _, ended in leases:
            last_end[job_id] = max(last_end.get(job_id, 0.0), ended)
        for name in PROJECTS:
            held = [(claimed, ended) for _, project, claimed, ended in leases if project == name]
            needing = [(submitted_at[job_id], last_end.get(job_id, finished)) for job_id, (project, spec) in submitted.items()
                       if project == name and spec["priority"] >= 0]
            gap = longest = 0.0
            moment = min(start for start, _ in needing)
            while moment < max(end for _, end in needing):
                waiting = any(start <= moment < end for start, end in needing) and not any(c <= moment < e for c, e in held)
                gap = gap + 0.1 if waiting else 0.0
                longest = max(longest, gap)
                moment += 0.1
            emit(f"longest_wait/{name}", round(longest, 1), "s", limit=STARVATION_LIMIT_SECONDS, ok=longest <= STARVATION_LIMIT_SECONDS)

        # Preemptions, and bit-identical ends.
        preempted = {}
        for job_id, (project, _) in submitted.items():
            events = apis[project].call("GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000")["data"]
            preempted[job_id] = sum(1 for event in events if event["message"].startswith("Preempted at step"))
        emit("preemptions", sum(preempted.values()), "preemptions")
        emit("jobs_preempted", sum(1 for count in preempted.values() if count), "jobs")
        digests = {}
        for job_id, (project, spec) in submitted.items():
            if ends.get(job_id, {}).get("status") == "succeeded":
                digests.setdefault(spec_key(spec), []).append((job_id, preempted[job_id] > 0, final_weights_digest(apis[project], job_id)))
        reruns = 0
        for key, copies in digests.items():
            if any(was_preempted for _, was_preempted, _ in copies) and all(was_preempted for _, was_preempted, _ in copies):
                # Every copy was preempted: one more, alone, with nothing to preempt it.
                job_id, _, _ = copies[0]
                project, spec = submitted[job_id]
                model, files = fixtures[project]
                rerun = apis[project].call("POST", "/v1/fine_tuning/jobs", job_body(spec, model, files))["id"]
                reruns += 1
                end, _ = wait_for_end(apis, {rerun: project}, time.time() + 600)
                if end.get(rerun, {}).get("status") == "succeeded":
                    copies.append((rerun, False, final_weights_digest(apis[project], rerun)))
        compared = sum(1 for copies in digests.values() for _, was_preempted, _ in copies if was_preempted)
        identical = sum(1 for copies in digests.values()
                        for _, was_preempted, digest in copies
                        if was_preempted and any(not other and d == digest for _, other, d in copies))
        emit("preempted_jobs_bit_identical", identical, "jobs", limit=compared, ok=identical == compared)
        all_alike = all(len({digest for _, _, digest in copies}) == 1 for copies in digests.values())
        emit("copies_identical", int(all_alike), "bool", limit=1, ok=all_alike)
        emit("reference_reruns", reruns, "jobs")
    finally:
        stop(server, grace=60)
    if FAILURES:
        log(f"soak: FAILED: {', '.join(FAILURES)} (server log: {WORK}/server.log)")
        sys.exit(1)
    log("soak: every check passed")


if __name__ == "__main__":
    main()
