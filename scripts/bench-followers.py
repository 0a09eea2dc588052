#!/usr/bin/env python3
"""make bench-followers: 1,000 clients follow one running job's log at once.

Starts `preftune serve` on loopback, starts a job that logs often, opens the
followers (GET /v1/fine_tuning/jobs/{id}/logs?follow=true, each its own
keep-alive connection), and for 10 s counts the lines each one receives while
reading the server's memory, threads and CPU from /proc. Then cancels the job
and checks that every stream ends. One JSON object per line on stdout.
"""
import asyncio, json, os, resource, socket, subprocess, sys, tempfile, time, urllib.request

FOLLOWERS = int(os.environ.get("FOLLOWERS", "1000"))
WINDOW = float(os.environ.get("WINDOW", "10"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def proc(pid):
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}

def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, FOLLOWERS * 2 + 100)), hard))
    binary = subprocess.check_output(["swift", "build", "-c", "release", "--show-bin-path"], text=True).strip() + "/preftune"
    data = tempfile.mkdtemp(prefix="preftune-followers-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                              stdout=open(f"{data}/serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1); break
            except OSError:
                time.sleep(0.05)
        key = open(f"{data}/admin.key").read().strip()

        def call(method, path, body=None, content_type="application/json"):
            request = urllib.request.Request(base + path, method=method, data=body,
                                             headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
            return json.load(urllib.request.urlopen(request))

        call("POST", "/v1/models", json.dumps({"id": "tiny", "config": {"sample_shape": [1, 4, 4], "hidden": 16, "depth": 1,
                                                                            "cond": {"kind": "text", "vocab": 32, "max_tokens": 4}}}).encode())
        lines = "\n".join(json.dumps({"prompt": f"p{i % 4}", "sample": [0.1 * (i % 5)] * 16}) for i in range(16)).encode()
        boundary = "preftune-bench"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.jsonl\"\r\n\r\n").encode() + lines + f"\r\n--{boundary}--\r\n".encode()
        file = call("POST", "/v1/files", body, f"multipart/form-data; boundary={boundary}")["id"]
        job = call("POST", "/v1/fine_tuning/jobs", json.dumps({"model": "tiny", "training_file": file, "method": {
            "type": "sft", "sft": {"hyperparameters": {"n_steps": 10_000_000, "batch_size": 4, "log_every": 500,
                                                        "checkpoint_every": 5_000_000}}}}).encode())["id"]
        while call("GET", f"/v1/fine_tuning/jobs/{job}")["progress"]["step"] < 1000:
            time.sleep(0.05)
        idle = proc(server.pid)

        async def follow(counts, index, ended):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /v1/fine_tuning/jobs/{job}/logs?follow=true&tail=0 HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Bearer {key}\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n")[0], head
            while True:
                size = int((await reader.readline()).strip(), 16)
                if size == 0:
                    ended[index] = True
                    break
                chunk = await reader.readexactly(size + 2)
                counts[index] += chunk.count(b"\n") - 1
            writer.close()

        async def run():
            counts, ended = [0] * FOLLOWERS, [False] * FOLLOWERS
            tasks = [asyncio.create_task(follow(counts, i, ended)) for i in range(FOLLOWERS)]
            await asyncio.sleep(2)
            start_cpu, start = proc(server.pid), time.time()
            before = list(counts)
            await asyncio.sleep(WINDOW)
            during = proc(server.pid)
            received = [c - b for c, b in zip(counts, before)]
            elapsed = time.time() - start
            call("POST", f"/v1/fine_tuning/jobs/{job}/cancel", b"{}")
            done, pending = await asyncio.wait(tasks, timeout=10)
            for task in done:
                if task.exception():
                    print("follower failed:", task.exception(), file=sys.stderr)
            return received, sum(ended), during, start_cpu, elapsed

        received, ended, during, start_cpu, elapsed = asyncio.run(run())
        steps_per_line = 500
        print(json.dumps({"name": "followers/lines_received", "value": min(received), "unit": "lines (least of any follower)",
                          "followers": FOLLOWERS, "max": max(received), "window_s": round(elapsed, 1)}))
        print(json.dumps({"name": "followers/streams_ended_with_job", "value": ended, "unit": "followers", "of": FOLLOWERS}))
        print(json.dumps({"name": "followers/server_rss", "value": round(during["rss_mb"], 1), "unit": "MB",
                          "idle_mb": round(idle["rss_mb"], 1), "per_follower_kb": round((during["rss_mb"] - idle["rss_mb"]) * 1024 / FOLLOWERS, 1)}))
        print(json.dumps({"name": "followers/server_threads", "value": during["threads"], "unit": "threads", "idle": idle["threads"]}))
        print(json.dumps({"name": "followers/server_cpu", "value": round((during["cpu_s"] - start_cpu["cpu_s"]) / elapsed, 2),
                          "unit": "cores (training included)", "note": f"one line per {steps_per_line} training steps"}))
        if min(received) == 0 or ended != FOLLOWERS:
            sys.exit("some followers got no lines or did not end with the job")
    finally:
        server.terminate(); server.wait()
        subprocess.run(["rm", "-rf", data])

main()
