"""What the scripts that drive a real preftune share: a free port, progress on stderr, waiting
for a server to answer, stopping a process, and an API client with the project's key."""
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base, seconds=20):
    """Until GET /healthz answers; SystemExit when it never does."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{base} did not answer /healthz within {seconds} s")


def stop(process, grace=30):
    """SIGTERM, as an operator stops the server; SIGKILL after `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()


class API:
    """The REST API as one key sees it."""

    def __init__(self, base, key):
        self.base, self.key = base, key

    def call(self, method, path, body=None, raw=False, content_type="application/json", timeout=60):
        """JSON in (a dict) or bytes; JSON out, or the bytes with raw. An HTTP error is a SystemExit naming it."""
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": "Bearer " + self.key, "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise SystemExit(f"{method} {path}: HTTP {error.code}: {error.read()[:500]!r}")
        return payload if raw else json.loads(payload)

    def upload(self, lines, filename="data.jsonl"):
        """A fine-tune file of JSON lines (strings); returns its id."""
        boundary = "preftuneharness"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + "\n".join(lines).encode() + f"\r\n--{boundary}--\r\n".encode()
        return self.call("POST", "/v1/files", body, content_type=f"multipart/form-data; boundary={boundary}")["id"]
