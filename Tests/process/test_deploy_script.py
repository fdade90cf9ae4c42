"""Deploy/cluster-local.sh, run as a user would: `start` in a fresh working directory (PETREL_BIN, and a
free port range through PETREL_BASE_PORT / PETREL_INTERNAL_BASE_PORT), `/v1/cluster` through every node
shows the 3 brokers, `kill 2` and `start 2` bring one node down and back, `status` reports, `stop` ends
every process. Whatever happens, every pid the script recorded is SIGKILLed at the end."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess

import pytest
import requests

from cluster_support import wait_until
from petrel_support import new_root, remove_root

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Deploy", "cluster-local.sh")


def free_range() -> int:
    """A base port B with B..B+2 and B+1000..B+1002 all free right now."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        socks = []
        try:
            for p in (*range(base, base + 3), *range(base + 1000, base + 1003)):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@pytest.fixture
def workdir():
    root = new_root("petrel-deploy-")
    try:
        yield root
    finally:
        run_dir = os.path.join(root, "data-cluster", "run")
        if os.path.isdir(run_dir):
            for name in os.listdir(run_dir):
                try:
                    os.kill(int(open(os.path.join(run_dir, name)).read().strip()), signal.SIGKILL)
                except (ValueError, OSError):
                    pass
        remove_root(root)


def script(workdir, env, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], cwd=workdir, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def three_alive(url):
    r = requests.get(url + "/v1/cluster", timeout=5)
    if r.status_code != 200:
        return None
    body = r.json()
    return body if sorted(b["id"] for b in body["brokers"]) == [1, 2, 3] and all(b["alive"] for b in body["brokers"]) else None


def test_cluster_local_script(petrel_bin, workdir):
    base = free_range()
    env = {**os.environ, "PETREL_BIN": petrel_bin, "PETREL_BASE_PORT": str(base),
           "PETREL_INTERNAL_BASE_PORT": str(base + 1000)}
    env.pop("PETREL_CLUSTER_SECRET", None)
    urls = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    pids = []
    try:
        r = script(workdir, env, "start")
        assert r.returncode == 0, r.stdout
        for n in (1, 2, 3):
            assert f"node {n} ready" in r.stdout, r.stdout
            assert os.path.isdir(os.path.join(workdir, "data-cluster", str(n)))
            assert os.path.isfile(os.path.join(workdir, "data-cluster", "logs", f"{n}.log"))
            pids.append(int(open(os.path.join(workdir, "data-cluster", "run", f"{n}.pid")).read()))
        secret_file = os.path.join(workdir, "data-cluster", "secret")
        assert os.stat(secret_file).st_mode & 0o077 == 0, "the generated secret must be private"
        for url in urls:
            body = wait_until(lambda: three_alive(url), 30, what=f"3 alive brokers at {url}/v1/cluster")
            assert sorted(b["port"] for b in body["brokers"]) == [base, base + 1, base + 2], body

        # Starting again is harmless: running nodes are left alone.
        r = script(workdir, env, "start")
        assert r.returncode == 0 and r.stdout.count("already running") == 3, r.stdout

        # Crash one node and bring it back.
        r = script(workdir, env, "kill", "2")
        assert r.returncode == 0, r.stdout
        wait_until(lambda: not os.path.exists(f"/proc/{pids[1]}") or _zombie(pids[1]), 10, what="node 2 gone")
        r = script(workdir, env, "start", "2")
        assert r.returncode == 0 and "node 2 ready" in r.stdout, r.stdout
        pids.append(int(open(os.path.join(workdir, "data-cluster", "run", "2.pid")).read()))

        r = script(workdir, env, "status")
        assert r.returncode == 0, r.stdout
        assert r.stdout.count(", ready,") == 3, r.stdout

        r = script(workdir, env, "stop")
        assert r.returncode == 0, r.stdout
        for n in (1, 2, 3):
            assert f"node {n} stopped" in r.stdout, r.stdout
        for pid in pids:
            wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 10, what=f"pid {pid} gone")
        for url in urls:
            with pytest.raises(requests.ConnectionError):
                requests.get(url + "/readyz", timeout=2)
        assert os.listdir(os.path.join(workdir, "data-cluster", "run")) == []
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_usage_and_bad_node(workdir):
    r = script(workdir, dict(os.environ), timeout=30)
    assert r.returncode == 2 and "Usage:" in r.stdout, r.stdout
    r = script(workdir, dict(os.environ), "kill", "12", timeout=30)
    assert r.returncode == 1 and "no node '12'" in r.stdout, r.stdout
    r = script(workdir, dict(os.environ), "join", "2", timeout=30)
    assert r.returncode == 1 and "initial member" in r.stdout, r.stdout


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] == "Z"
    except OSError:
        return True
