"""Helpers shared by the process tests: a handle on one running `petrel serve` process and small
HTTP utilities. Imported by conftest.py and the test modules (pytest puts this directory on
sys.path because it has no __init__.py)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import requests

HTTP_TIMEOUT = 15  # seconds; every request has an explicit timeout
START_TIMEOUT = 60  # a debug build recovering a few MB of logs on a busy 2-core machine
LISTENING = re.compile(r"listening on http://([^\s:/]+|\[[^\]]+\]):(\d+)")


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """One `petrel serve` process in its own process group, with its data under `root/data`.

    The broker's working directory is `root` too, so a file written through a relative path
    (or a path that escaped the data dir) shows up in `root` where the bad-input test looks."""

    def __init__(self, binary: str, root: str, extra_args=(), data_dir: str | None = None):
        self.binary = binary
        self.root = root
        self.data_dir = data_dir or os.path.join(root, "data")
        self.log_path = os.path.join(root, "broker.log")
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.starts = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, extra_args=None) -> "Broker":
        if extra_args is not None:
            self.extra_args = list(extra_args)
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        os.makedirs(self.root, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"--- start #{self.starts + 1} ---\n".encode())
        log.flush()
        args = [self.binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", self.data_dir, *self.extra_args]
        try:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=self.root,
                start_new_session=True)  # own process group: kill9/cleanup reach every child
        finally:
            log.close()
        self.starts += 1
        lines: queue.Queue = queue.Queue()
        proc = self.proc

        def pump():
            # Keep draining stdout for the process's whole life so it can never block on a full pipe.
            for raw in iter(proc.stdout.readline, b""):
                lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"petrel-stdout-{proc.pid}").start()
        deadline = time.monotonic() + START_TIMEOUT
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill9()
                raise BrokerStartError(f"no 'listening on' line within {START_TIMEOUT}s; stdout: {seen!r}\n{self.log_tail()}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = proc.wait(timeout=10)
                raise BrokerStartError(f"petrel exited with {code} before listening; stdout: {seen!r}\n{self.log_tail()}")
            seen.append(line)
            m = LISTENING.search(line)
            if m:
                self.host = m.group(1).strip("[]")
                self.port = int(m.group(2))
                break
        if self.port == 0:
            self.port = self._discover_port()
        return self

    def _discover_port(self) -> int:
        """`--port 0` must print the port the kernel picked. A printed 0 is a broker bug; with
        PETREL_TEST_DISCOVER_PORT=1 the tests look the port up in /proc instead (for debugging only)."""
        if os.environ.get("PETREL_TEST_DISCOVER_PORT") != "1":
            self.kill9()
            raise BrokerStartError("petrel printed port 0 for --port 0 (it must print the port it bound)")
        inodes = set()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for row in f.readlines()[1:]:
                    cols = row.split()
                    if cols[3] == "0A" and cols[9] in inodes:
                        return int(cols[1].split(":")[1], 16)
        self.kill9()
        raise BrokerStartError("cannot find petrel's listening socket")

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL the whole process group (a crash: no shutdown code runs) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self._close_pipes()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM (orderly shutdown) and wait; returns the exit code. SIGKILLs after `timeout`
        and raises, so a hung shutdown fails the test instead of leaving a process behind."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"petrel did not exit within {timeout}s of SIGTERM (killed)\n{self.log_tail()}")
        self._kill_leftover_group()
        self._close_pipes()
        return code

    def restart(self, extra_args=None) -> "Broker":
        """Starts again on the same data dir (the port may change). Stops a running process first (SIGTERM)."""
        if self.is_running():
            self.terminate()
        return self.start(extra_args)

    def cleanup(self) -> None:
        self.kill9()
        self._kill_leftover_group()

    def _kill_leftover_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            try:
                self.proc.stdout.close()
            except Exception:
                pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no broker log)"
        return "--- broker log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- HTTP ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.request(method, self.url + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def raw(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> "RawResponse":
        """A request whose path goes on the wire exactly as given (no normalisation of `..` or
        percent-escapes, which `requests` would do)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.address)
            hdrs = dict(headers or {})
            if body is not None:
                hdrs.setdefault("Content-Length", str(len(body)))
            for k, v in hdrs.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            r = conn.getresponse()
            return RawResponse(r.status, dict(r.getheaders()), r.read())
        finally:
            conn.close()

    # -- conveniences used by many tests -----------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, configs: dict | None = None) -> dict:
        body = {"name": name, "partitions": partitions}
        if configs:
            body["configs"] = configs
        r = self.post("/v1/topics", json=body)
        assert r.status_code == 201, f"create {name}: {r.status_code} {r.text}"
        return r.json()

    def produce_json(self, topic: str, records: list, acks: str | None = None, **kw) -> requests.Response:
        params = {"acks": acks} if acks is not None else None
        return self.post(f"/v1/topics/{topic}/records", json={"records": records}, params=params, **kw)

    def read(self, topic: str, partition: int, offset="earliest", **params) -> dict:
        params = {"offset": offset, **params}
        r = self.get(f"/v1/topics/{topic}/partitions/{partition}/records", params=params)
        assert r.status_code == 200, f"read {topic}/{partition}@{offset}: {r.status_code} {r.text}"
        return r.json()

    def read_all(self, topic: str, partition: int) -> tuple[list, dict]:
        """Every readable record of a partition from the log start to the high watermark."""
        first = self.read(topic, partition, "earliest", max_records=10000)
        records = list(first["records"])
        last = first
        offset = first["next_offset"]
        while offset < last["high_watermark"]:
            page = self.read(topic, partition, offset, max_records=10000)
            assert page["next_offset"] > offset, f"read at {offset} made no progress: {page}"
            records.extend(page["records"])
            offset = page["next_offset"]
            last = page
        return records, last

    def offsets(self, topic: str, partition: int) -> dict:
        r = self.get(f"/v1/topics/{topic}/partitions/{partition}/offsets")
        assert r.status_code == 200, r.text
        return r.json()

    def metric(self, name: str) -> float | None:
        r = self.get("/metrics")
        assert r.status_code == 200
        for line in r.text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_parked(self, at_least: int, timeout: float = 15) -> bool:
        """Polls /metrics until `petrel_parked_requests` reaches `at_least` (True) or `timeout` (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.metric("petrel_parked_requests")
            if value is not None and value >= at_least:
                return True
            time.sleep(0.05)
        return False


class RawResponse:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status_code = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.content = body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def assert_error(resp, status: int, contains: str | None = None) -> dict:
    """The API's error contract: the status, a JSON object with an integer five-digit-ish
    `error_code` whose first three digits are the status, and a non-empty string `message`."""
    body_text = resp.text
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {body_text[:500]}"
    ctype = resp.headers.get("content-type", resp.headers.get("Content-Type", ""))
    assert "application/json" in ctype, f"error content type is {ctype!r}: {body_text[:300]}"
    try:
        body = json.loads(body_text)
    except ValueError as e:
        raise AssertionError(f"error body is not JSON ({e}): {body_text[:300]!r}")
    assert isinstance(body, dict), body
    code = body.get("error_code")
    assert isinstance(code, int) and not isinstance(code, bool), f"error_code is not an integer: {body}"
    assert str(code)[:3] == str(status), f"error_code {code} does not start with {status}: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"message missing: {body}"
    if contains is not None:
        assert contains in body["message"], f"{contains!r} not in message {body['message']!r}"
    return body


def new_root(prefix: str = "petrel-proc-") -> str:
    return tempfile.mkdtemp(prefix=prefix)


def remove_root(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)

