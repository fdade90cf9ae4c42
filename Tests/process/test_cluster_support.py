"""Self-test of the cluster harness (cluster_support.py) and of the deploy script's plumbing against a
stand-in broker: a small Python program that speaks cluster.md's CLI contract (`serve --node-id ...
--members ... --cluster-secret ...`, prints `listening on`, binds the public and internal ports, answers
/readyz and /v1/cluster) but replicates nothing. It proves start, readiness, kill, stop, restart,
pause/resume and cleanup work before the real cluster runtime exists. Needs no PETREL_BIN."""

from __future__ import annotations

import os
import socket
import stat
import sys
import textwrap

import pytest
import requests

from cluster_support import Cluster, free_ports, wait_until
from petrel_support import new_root, remove_root

FAKE = textwrap.dedent('''\
    #!PYTHON
    """A stand-in for `petrel serve` in cluster mode: the CLI contract and two endpoints, nothing else."""
    import argparse, http.server, json, os, socket, sys, threading

    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    for flag in ("node-id", "host", "port", "internal-host", "internal-port", "data-dir", "members",
                 "cluster-secret", "rack", "config", "advertised-host"):
        ap.add_argument("--" + flag)
    a = ap.parse_args()
    a.cluster_secret = a.cluster_secret or os.environ.get("PETREL_CLUSTER_SECRET")
    assert a.cmd == "serve" and a.members and a.cluster_secret, "cluster mode needs --members and --cluster-secret"
    os.makedirs(a.data_dir, exist_ok=True)
    with open(os.path.join(a.data_dir, "starts"), "a") as f:
        f.write("start\\n")
    internal = socket.socket()
    internal.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    internal.bind((a.internal_host, int(a.internal_port)))
    internal.listen()
    members = [m.split("@") for m in a.members.split(",")]

    def public_port(addr):
        # The stand-in cannot know a peer's public port; FAKE_PORT_OFFSET (internal - public) tells it.
        offset = os.environ.get("FAKE_PORT_OFFSET")
        return int(addr.rsplit(":", 1)[1]) - int(offset) if offset else None

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
        def answer(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def do_GET(self):
            if self.path == "/readyz":
                self.answer(200, {"status": "ready"})
            elif self.path == "/v1/cluster":
                self.answer(200, {"cluster_id": "fake", "controller": 1, "version": "0", "topics": 0, "partitions": 0,
                                  "brokers": [{"id": int(i), "host": addr.rsplit(":", 1)[0], "port": public_port(addr),
                                               "rack": None, "alive": True} for i, addr in members],
                                  "me": int(a.node_id), "pid": os.getpid()})
            else:
                self.answer(404, {"error_code": 40404, "message": "no such route"})

    server = http.server.ThreadingHTTPServer((a.host, int(a.port)), H)
    print(f"listening on http://{a.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    ''').replace("PYTHON", sys.executable)


@pytest.fixture
def fake_bin():
    root = new_root("petrel-fake-")
    path = os.path.join(root, "petrel")
    with open(path, "w") as f:
        f.write(FAKE)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    yield path
    remove_root(root)


def info(node) -> dict:
    return node.get("/v1/cluster", timeout=2).json()


def test_free_ports_are_distinct():
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(p > 0 for p in ports)


def test_harness_lifecycle(fake_bin):
    root = new_root("petrel-harness-")
    cluster = Cluster(fake_bin, root, size=3)
    pids = []
    try:
        cluster.start()
        assert sorted(cluster.urls) == [1, 2, 3]
        assert len({n.port for n in cluster.nodes.values()} | {n.internal_port for n in cluster.nodes.values()}) == 6
        for i, node in cluster.nodes.items():
            body = info(node)
            assert body["me"] == i
            assert [b["id"] for b in body["brokers"]] == [1, 2, 3]
            assert node.data_dir.startswith(root) and os.path.isdir(node.data_dir)
            pids.append(node.pid)
        assert cluster.members.count("@127.0.0.1:") == 3

        # kill: the process is gone and reaped; restart: same URL, same data dir, new process.
        old = cluster.node(2).pid
        cluster.kill(2)
        assert not cluster.node(2).is_running()
        with pytest.raises(requests.RequestException):
            cluster.node(2).get("/readyz", timeout=2)
        assert [n.node_id for n in cluster.running()] == [1, 3]
        cluster.restart(2)
        assert cluster.node(2).pid != old and info(cluster.node(2))["me"] == 2
        with open(os.path.join(cluster.node(2).data_dir, "starts")) as f:
            assert f.read().count("start") == 2

        # pause: the process is stopped (state T) and answers nothing; resume: answers again.
        cluster.pause(3)
        with open(f"/proc/{cluster.node(3).pid}/stat") as f:
            assert f.read().split(") ", 1)[1][0] == "T"
        assert not cluster.node(3).is_ready(timeout=1)
        assert cluster.any_node(exclude=(1,)).node_id == 2  # paused nodes are not "running"
        cluster.resume(3)
        cluster.node(3).wait_ready(10)

        # stop: orderly SIGTERM, also from a paused state; restart after a stop.
        cluster.pause(1)
        cluster.stop(1)
        assert not cluster.node(1).is_running()
        cluster.restart(1)
        assert info(cluster.node(1))["me"] == 1
        pids += [n.pid for n in cluster.nodes.values()]
    finally:
        cluster.cleanup()
        remove_root(root)
    for pid in pids:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ", 1)[1][0] == "Z",
                   10, what=f"process {pid} gone")


def test_cleanup_kills_everything_even_when_paused(fake_bin):
    root = new_root("petrel-harness-")
    cluster = Cluster(fake_bin, root, size=3)
    try:
        cluster.start()
        cluster.pause(1)
        cluster.pause(2)
        pids = [n.pid for n in cluster.nodes.values()]
    finally:
        cluster.cleanup()
        remove_root(root)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by kill9's wait


def test_start_failure_cleans_up(fake_bin):
    # A node that cannot start (its public port is already taken) fails the start and kills the others.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    root = new_root("petrel-harness-")
    port = blocker.getsockname()[1]
    picked = free_ports(6)
    ports = [(picked[i], picked[i + 3]) for i in range(3)]
    ports[2] = (port, ports[2][1])
    cluster = Cluster(fake_bin, root, size=3, ports=ports)
    try:
        with pytest.raises(Exception):
            cluster.start()
        assert cluster.running() == []
    finally:
        cluster.cleanup()
        blocker.close()
        remove_root(root)
