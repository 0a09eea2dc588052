#!/usr/bin/env python3
"""make probe-hostile: the hostile requests of issue 11 against a release `preftune serve` on
loopback, with an ordinary project key. After each probe: is the process alive, what is its RSS
(and its peak), how long does /healthz take. JSON lines on stdout; exit 1 if the server died or
its RSS grew by 1 GiB or more over its baseline."""
import json, os, socket, struct, subprocess, sys, tempfile, threading, time, urllib.request, urllib.error

BINARY = sys.argv[1] if len(sys.argv) > 1 else ".build/release/preftune"
data = tempfile.mkdtemp(prefix="preftune-probe-")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
BASE = f"http://127.0.0.1:{port}"
# A budget an operator of a small machine would set: no single job, sample or model may hold more.
BUDGET = "768M"
server = subprocess.Popen([BINARY, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--workers", "1", "--max-job-memory", BUDGET],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rss():
    fields = dict(line.split(":", 1) for line in open(f"/proc/{server.pid}/status") if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def call(method, path, body=None, key=None, headers=None, raw=None, content_type="application/json", timeout=60):
    request = urllib.request.Request(BASE + path, method=method, data=raw if raw is not None else (json.dumps(body).encode() if body is not None else None))
    if key: request.add_header("Authorization", f"Bearer {key}")
    if raw is not None or body is not None: request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items(): request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def upload(key, content, filename="probe.jsonl"):
    boundary = "probe-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, answer = call("POST", "/v1/files", raw=body, key=key, content_type=f"multipart/form-data; boundary={boundary}")
    return status, json.loads(answer or b"{}")


for _ in range(200):
    try:
        call("GET", "/healthz"); break
    except Exception:
        time.sleep(0.05)
key = subprocess.run([BINARY, "keys", "create", "--project", "probe", "--data-dir", data], capture_output=True, text=True).stdout.split()[-1]
baseline, _ = rss()
results = []


def report(name, status):
    alive = server.poll() is None
    started = time.time()
    healthy = False
    if alive:
        try: healthy = call("GET", "/healthz", timeout=10)[0] == 200
        except Exception: healthy = False
    now, peak = rss() if alive else (0, 0)
    line = {"name": name, "status": status, "alive": alive, "healthz_ms": round((time.time() - started) * 1000, 1),
            "healthy": healthy, "rss_mb": round(now / 2**20), "peak_rss_mb": round(peak / 2**20), "baseline_mb": round(baseline / 2**20)}
    results.append(line)
    print(json.dumps(line), flush=True)


def header_only_model(config):
    header = json.dumps({"__metadata__": {"config": json.dumps(config), "format": "pt"}}).encode()
    return struct.pack("<Q", len(header)) + header


tiny = {"sample_shape": [1, 4, 4], "hidden": 16, "depth": 1, "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}
call("POST", "/v1/models", {"id": "tiny", "config": tiny}, key=key)
lines = "\n".join(json.dumps({"prompt": f"p{i}", "sample": [0.1] * 16}) for i in range(200)).encode()
_, training = upload(key, lines)

# 1. An overflowing sample_shape, in JSON and inside a model file.
huge_shape = {"sample_shape": [4611686018427387904, 4, 4], "hidden": 8, "depth": 1}
report("1 overflowing sample_shape", call("POST", "/v1/models", {"id": "x", "config": huge_shape}, key=key)[0])
_, f = upload(key, header_only_model(huge_shape), "x.safetensors")
report("1 overflowing sample_shape in a file", call("POST", "/v1/models", {"id": "x", "file": f["id"]}, key=key)[0])
# 2. 248 bytes declaring a 686 GB model.
_, f = upload(key, header_only_model({"sample_shape": [1, 1024, 1024], "hidden": 8192, "depth": 64, "cond": {"kind": "text", "vocab": 1000000, "max_tokens": 16}}), "boom.safetensors")
report("2 small file, huge config", call("POST", "/v1/models", {"id": "boom", "file": f["id"]}, key=key)[0])
# 3. DRO with a million-trajectory buffer.
dro = {"type": "dro", "dro": {"hyperparameters": {"buffer_size": 1000000, "policy_steps": 1000}}}
report("3 dro buffer 1e6 x 1000 steps", call("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": training["id"], "method": dro}, key=key)[0])
# 4. The largest allowed model with batch 4096.
largest = {"sample_shape": [3, 32, 32], "hidden": 512, "depth": 16, "mlp_ratio": 8, "time_freq_dim": 1024, "cond": {"kind": "text", "vocab": 32768, "max_tokens": 256}}
report("4 largest model (create)", call("POST", "/v1/models", {"id": "largest", "config": largest}, key=key)[0])
report("4 largest model, batch 4096", call("POST", "/v1/fine_tuning/jobs", {"model": "largest", "training_file": training["id"],
                                                                           "method": {"type": "sft", "sft": {"hyperparameters": {"batch_size": 4096}}}}, key=key)[0])
# 5. A vector dataset whose 1 MB of lines expands to gigabytes.
call("POST", "/v1/models", {"id": "vec", "config": {"sample_shape": [1, 1, 1], "hidden": 8, "depth": 1, "cond": {"kind": "vector", "dim": 4096}}}, key=key)
_, vectors = upload(key, b'{"sample":[0]}\n' * 70000)
report("5 vector dataset, 70k lines x dim 4096", call("POST", "/v1/fine_tuning/jobs", {"model": "vec", "training_file": vectors["id"],
                                                                                      "method": {"type": "sft", "sft": {"hyperparameters": {}}}}, key=key)[0])
# 6. 810 KB of pipelined GETs that are never read.
pipelined = socket.create_connection(("127.0.0.1", port))
pipelined.setblocking(False)
payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 30000
sent = 0
deadline = time.time() + 5
while sent < len(payload) and time.time() < deadline:
    try: sent += pipelined.send(payload[sent:sent + 65536])
    except BlockingIOError: time.sleep(0.01)
time.sleep(1)
report(f"6 unread pipelined GETs ({sent} bytes accepted of {len(payload)})", None)
pipelined.close()
# 7. Webhooks to this machine.
report("7 webhook to 127.0.0.1", call("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": training["id"], "method": dro,
                                                                      "webhook_url": "http://127.0.0.1:9/x"}, key=key)[0])
# 8. 50 simultaneous requests with one Idempotency-Key.
statuses = []
def idempotent():
    statuses.append(call("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": training["id"], "method": {"type": "sft", "sft": {"hyperparameters": {"n_steps": 1}}}},
                         key=key, headers={"Idempotency-Key": "probe"}))
threads = [threading.Thread(target=idempotent) for _ in range(50)]
[t.start() for t in threads]; [t.join() for t in threads]
ids = {json.loads(body).get("id") for status, body in statuses if status == 200}
report(f"8 idempotency: {len(ids)} job(s) from 50 requests", 200 if len(ids) == 1 else 500)
# 9. Idle sockets from one address, then /healthz from another.
idle = []
for _ in range(3000):
    try: idle.append(socket.create_connection(("127.0.0.1", port), timeout=2))
    except OSError: break
other = socket.socket(); other.bind(("127.0.0.2", 0)); other.connect(("127.0.0.1", port))
other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
answer = other.recv(100)
report(f"9 {len(idle)} idle sockets; /healthz from 127.0.0.2", int(answer.split()[1]) if answer else None)
for s in idle: s.close()
other.close()
# 10. Two builds of the largest model at once: /healthz meanwhile.
slowest = [0.0]
def build(name): call("POST", "/v1/models", {"id": name, "config": largest}, key=key)
builders = [threading.Thread(target=build, args=(f"largest-{i}",)) for i in range(2)]
[t.start() for t in builders]
while any(t.is_alive() for t in builders):
    asked = time.time(); call("GET", "/healthz"); slowest[0] = max(slowest[0], time.time() - asked); time.sleep(0.02)
report(f"10 two largest-model builds: slowest /healthz {slowest[0] * 1000:.1f} ms", 200)
# 11. A long sample whose client leaves: the server's CPU use afterwards.
def cpu_seconds():
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
call("POST", "/v1/models", {"id": "mid", "config": {"sample_shape": [1, 4, 4], "hidden": 256, "depth": 4, "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}}, key=key)
body = json.dumps({"model": "mid", "prompts": ["a"], "n": 256, "steps": 1000}).encode()
leaving = socket.create_connection(("127.0.0.1", port))
leaving.sendall(f"POST /v1/samples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
time.sleep(0.7)
leaving.close()
time.sleep(0.3)
before = cpu_seconds(); time.sleep(1); after = cpu_seconds()
report(f"11 sample n 256 x 1000 steps, client left: {after - before:.2f} s of CPU in the next second", None)
report("11 sample n 256 x 1000 steps on the largest model (compute budget)",
       call("POST", "/v1/samples", {"model": "largest-0", "prompts": ["a"], "n": 256, "steps": 1000}, key=key)[0])
# 12. checkpoint_every 1 keeps only the newest checkpoints.
status, job = call("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": training["id"], "method": {"type": "sft", "sft": {"hyperparameters": {"n_steps": 30, "checkpoint_every": 1}}}}, key=key)
job_id = json.loads(job).get("id")
for _ in range(600):
    status_now = json.loads(call("GET", f"/v1/fine_tuning/jobs/{job_id}", key=key)[1]).get("status")
    if status_now in ("succeeded", "failed", "cancelled"): break
    time.sleep(0.1)
kept = len(os.listdir(f"{data}/jobs/{job_id}/checkpoints")) if job_id else -1
report(f"12 checkpoint_every 1 over 30 steps: {kept} checkpoints kept ({status_now})", status)
# 13. Cancel inside a long DRO rollout (policy_steps 1000): until the worker is free again.
call("POST", "/v1/models", {"id": "wide", "config": {"sample_shape": [1, 4, 4], "hidden": 512, "depth": 4, "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}}, key=key)
status, job = call("POST", "/v1/fine_tuning/jobs", {"model": "wide", "training_file": training["id"], "method": {"type": "dro", "dro": {"hyperparameters": {"n_steps": 5, "batch_size": 16, "policy_steps": 1000}}}}, key=key)
long_id = json.loads(job).get("id")
for _ in range(600):
    if json.loads(call("GET", f"/v1/fine_tuning/jobs/{long_id}", key=key)[1]).get("status") == "running": break
    time.sleep(0.05)
time.sleep(1)
asked = time.time()
call("POST", f"/v1/fine_tuning/jobs/{long_id}/cancel", {}, key=key)
log_path = f"{data}/jobs/{long_id}/log.txt"
while time.time() - asked < 30 and "cancelled at step" not in open(log_path).read(): time.sleep(0.005)
stopped = [line for line in open(log_path).read().splitlines() if "cancelled at step" in line]
report(f"13 cancel inside a 1000-step rollout: the trainer stopped {1000 * (time.time() - asked):.0f} ms later ({stopped[-1].split(' ', 1)[1] if stopped else 'no stop logged'})", status)
# 14. Another project's model name, and '..'.
report("14 model id '..'", call("POST", "/v1/models", {"id": "..", "config": tiny}, key=key)[0])
# 17-22. Lenient parsing, empty upload, NUL filename, n_epochs, a cursor that is not UTF-8.
def raw(request):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request); s.settimeout(5)
        return s.recv(4096)
report("17 chunk size '0 2'", int(raw(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0 2\r\n\r\n").split()[1]))
report("17 no Host", int(raw(b"GET /healthz HTTP/1.1\r\n\r\n").split()[1]))
report("19 empty upload", call("POST", "/v1/files", raw=b"", key=key, content_type="multipart/form-data; boundary=b")[0])
report("20 filename with NUL", upload(key, b"x\n", "a\x00b.jsonl")[0])
report("21 n_epochs 100000", call("POST", "/v1/fine_tuning/jobs", {"model": "tiny", "training_file": training["id"], "method": {"type": "sft", "sft": {"hyperparameters": {"n_epochs": 100000, "batch_size": 1}}}}, key=key)[0])
report("22 after=%ff%fe", call("GET", "/v1/fine_tuning/jobs?after=%ff%fe", key=key)[0])

server.terminate()
signalled = time.time()
server.wait(timeout=60)
peak = max(r["peak_rss_mb"] for r in results)
summary = {"name": "summary", "max_job_memory": BUDGET, "survived": all(r["alive"] for r in results), "baseline_mb": round(baseline / 2**20), "peak_rss_mb": peak,
           "growth_mb": peak - round(baseline / 2**20), "sigterm_exit_s": round(time.time() - signalled, 2), "exit_status": server.returncode}
print(json.dumps(summary), flush=True)
subprocess.run(["rm", "-rf", data])
sys.exit(0 if summary["survived"] and summary["growth_mb"] < 1024 else 1)
