"""Runs README.md's 3-node session (the ```sh cluster block) as written, against a cluster started by
Deploy/cluster-local.sh in a temp directory on free ports.

`localhost:808N` becomes the script's node N-8081 on the chosen port base. `Deploy/cluster-local.sh`
lines run the script (start, kill, join, stop); curl lines must print JSON that is not an error, or
nothing for a DELETE. As the README says, a request that lands during an election or while a move is
under way may answer 503 (or 409 for unregistering a broker that still hosts replicas): such a line
is retried for up to 60 s."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")
RETRYABLE = {409, 503}


def cluster_block(text: str) -> list[str]:
    blocks = re.findall(r"^```sh cluster\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) == 1, "README.md must have exactly one ```sh cluster block"
    return [line.strip() for line in blocks[0].splitlines() if line.strip() and not line.strip().startswith("#")]


def free_base(span: int = 8) -> int:
    """A base port with `span` free ports at base.. and base+1000.. (the script's internal ports)."""
    for base in range(21000, 60000, 97):
        ok = True
        for port in list(range(base, base + span)) + list(range(base + 1000, base + 1000 + span)):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def test_readme_cluster_session(tmp_path, petrel_bin):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with open(README, encoding="utf-8") as f:
        lines = cluster_block(f.read())
    assert any(l.startswith("curl ") for l in lines)
    base = free_base()
    env = {**os.environ, "PETREL_BIN": petrel_bin, "PETREL_BASE_PORT": str(base),
           "PETREL_CLUSTER_DIR": str(tmp_path / "data-cluster"), "PETREL_START_TIMEOUT": "60"}

    def rewrite(line: str) -> str:
        line = re.sub(r"localhost:(808\d)", lambda m: f"127.0.0.1:{base + int(m.group(1)) - 8082}", line)
        return line.replace("Deploy/cluster-local.sh", os.path.join(ROOT, "Deploy", "cluster-local.sh"))

    try:
        for i, line in enumerate(lines):
            command = rewrite(line)
            if "cluster-local.sh" in line:
                # PETREL_BIN=... in the README line is the reader's; the test's binary wins.
                command = re.sub(r"^PETREL_BIN=\S+\s+", "", command)
                proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, timeout=120)
                assert proc.returncode == 0, f"README cluster line {i}: {line}\n{proc.stdout.decode()}\n{proc.stderr.decode()}"
                continue
            assert line.startswith("curl "), f"unexpected line in the cluster session: {line}"
            deadline = time.monotonic() + 60
            while True:
                proc = subprocess.run(["bash", "-c", command + " -w '\\n%{http_code}'"], capture_output=True, timeout=60)
                out, _, code = proc.stdout.decode("utf-8", "replace").rpartition("\n")
                status = int(code) if code.isdigit() else 0
                if status in RETRYABLE and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                break
            where = f"README cluster line {i}: {line}\nstatus {status}, output: {out[:800]!r}"
            assert proc.returncode == 0 and 200 <= status < 300, where
            if out.strip() == "":
                assert re.search(r"-X\s+DELETE\b", line), where
                continue
            body = json.loads(out)
            assert not (isinstance(body, dict) and "error_code" in body), where
            if "/v1/topics/orders" in line and "records" not in line and "replicas" not in line and "-d" not in line:
                parts = body["partitions"]
                assert len(parts) == 3, where
                for p in parts:
                    # Three distinct brokers; more while a move runs (adding + removing).
                    assert len(set(p["replicas"])) == len(p["replicas"]) >= 3, where
                    assert p["leader"] in p["replicas"] or p["leader"] == -1, where
    finally:
        subprocess.run(["bash", "-c", os.path.join(ROOT, "Deploy", "cluster-local.sh") + " stop"], cwd=tmp_path, env=env,
                       capture_output=True, timeout=60)
        run = tmp_path / "data-cluster" / "run"
        if run.exists():
            for f in run.iterdir():
                try:
                    os.kill(int(f.read_text().strip()), signal.SIGKILL)
                except (ValueError, ProcessLookupError, PermissionError):
                    pass
