"""Network-partition tests: each broker in its own Linux network namespace, joined by a bridge in a
"switch" namespace; the test process reaches every namespace through one more veth from the host into
the bridge, so a cut between brokers does not cut the client off. Cuts are iptables DROP rules inside
a broker's namespace (both directions); healing is `iptables -F` (TESTING.md lists what works here).

- test_namespace_plumbing: a `python3 -m http.server` in each namespace; every namespace reaches every
  other and the host reaches all; isolating one namespace cuts exactly its links; healing restores
  them. Needs no broker: it proves the plumbing the cluster test relies on.
- test_isolated_leader: a 3-broker cluster, the leader of a partition isolated from both peers: the
  majority elects a new leader and keeps acknowledging acks=all writes; the old leader acknowledges
  none (503 or no answer) and its high watermark does not move; after healing, every broker's copy is
  read and the history checker finds nothing lost, inconsistent, duplicated or diverging.

Root, `ip` and `iptables` are required (else skipped, with the reason). Every namespace, veth and
process is removed at the end, even on failure (try/finally, and an atexit hook for interpreter exit)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from cluster_support import UNAVAILABLE_CODES, Cluster, Recorder, check_all_copies, send, wait_until
from history import OK
from petrel_support import new_root, remove_root


def _missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 iptables)"
    return None


def run(*cmd, check=True, timeout=20) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


_LIVE: list["Netns"] = []


@atexit.register
def _cleanup_at_exit() -> None:
    for net in list(_LIVE):
        net.cleanup()


class Netns:
    """`size` namespaces `<tag>-n1..` with addresses 10.213.X.1.., a switch namespace `<tag>-sw` with
    bridge br0, and a host veth `<tag>h` at 10.213.X.254. `tag` and X derive from the pid so parallel
    runs do not collide; X skips subnets the host already uses."""

    def __init__(self, size: int):
        self.size = size
        pid = os.getpid()
        self.tag = f"pt{pid % 100000}"
        used = run("ip", "-4", "-o", "addr", "show").stdout + run("ip", "-4", "route", "show").stdout
        third = pid % 250
        while f"10.213.{third}." in used:
            third = (third + 1) % 250
        self.subnet = f"10.213.{third}"
        self.switch = f"{self.tag}-sw"
        self.names = [f"{self.tag}-n{i + 1}" for i in range(size)]
        self.ips = [f"{self.subnet}.{i + 1}" for i in range(size)]
        self.host_ip = f"{self.subnet}.254"
        self.host_if = f"{self.tag}h"
        self.processes: list[subprocess.Popen] = []
        self.created: list[str] = []
        self.host_link = False

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    def ns(self, i: int, *cmd, check=True, timeout=20) -> subprocess.CompletedProcess:
        return run(*self.exec_prefix(i), *cmd, check=check, timeout=timeout)

    def create(self) -> "Netns":
        _LIVE.append(self)
        try:
            for name in (self.switch, *self.names):
                run("ip", "netns", "add", name)
                self.created.append(name)
            sw = ["ip", "netns", "exec", self.switch]
            run(*sw, "ip", "link", "add", "br0", "type", "bridge")
            run(*sw, "ip", "link", "set", "br0", "up")
            for i, name in enumerate(self.names):
                port = f"p{i + 1}"
                # The veth is created inside the switch namespace with its peer placed straight into the
                # node's namespace (nothing appears in the host's namespace).
                run(*sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
                run(*sw, "ip", "link", "set", port, "master", "br0")
                run(*sw, "ip", "link", "set", port, "up")
                self.ns(i, "ip", "addr", "add", f"{self.ips[i]}/24", "dev", "eth0")
                self.ns(i, "ip", "link", "set", "eth0", "up")
                self.ns(i, "ip", "link", "set", "lo", "up")
            # The test's own door into the bridge.
            run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "ph", "netns", self.switch)
            self.host_link = True
            run(*sw, "ip", "link", "set", "ph", "master", "br0")
            run(*sw, "ip", "link", "set", "ph", "up")
            run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            run("ip", "link", "set", self.host_if, "up")
        except BaseException:
            self.cleanup()
            raise
        return self

    def spawn(self, i: int, *cmd) -> subprocess.Popen:
        p = subprocess.Popen([*self.exec_prefix(i), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(p)
        return p

    # -- cuts --------------------------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        """Drops everything between node i and every other node, both directions (the host still reaches it)."""
        for j, ip in enumerate(self.ips):
            if j != i:
                self.ns(i, "iptables", "-A", "INPUT", "-s", ip, "-j", "DROP")
                self.ns(i, "iptables", "-A", "OUTPUT", "-d", ip, "-j", "DROP")

    def heal(self) -> None:
        for i in range(self.size):
            self.ns(i, "iptables", "-F")

    # -- cleanup -----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        for p in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(timeout=10)
        self.processes.clear()
        for name in reversed(self.created):
            # Any process the test started there is dead by now, so the namespace really goes away.
            run("ip", "netns", "del", name, check=False)
        self.created.clear()
        if self.host_link:
            # Normally gone with the switch namespace (its peer lived there); make sure.
            run("ip", "link", "del", self.host_if, check=False)
            self.host_link = False
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)


@pytest.fixture
def netns():
    reason = _missing_requirements()
    if reason:
        pytest.skip(reason)
    nets: list[Netns] = []

    def make(size: int = 3) -> Netns:
        net = Netns(size).create()
        nets.append(net)
        return net

    try:
        yield make
    finally:
        for net in nets:
            net.cleanup()


def fetch_from(net: Netns, i: int, url: str) -> bool:
    """Whether namespace i can GET `url` within 2 s."""
    code = f"import urllib.request,sys; urllib.request.urlopen({url!r}, timeout=2).read(); sys.exit(0)"
    return net.ns(i, sys.executable, "-c", code, check=False, timeout=15).returncode == 0


def fetch_from_host(url: str) -> bool:
    import urllib.request
    try:
        urllib.request.urlopen(url, timeout=2).read()
        return True
    except OSError:
        return False


def test_namespace_plumbing(netns):
    net = netns(3)
    port = 8000
    for i in range(3):
        net.spawn(i, sys.executable, "-m", "http.server", str(port), "--bind", net.ips[i], "--directory", "/")
    urls = [f"http://{ip}:{port}/" for ip in net.ips]
    for i in range(3):
        wait_until(lambda: fetch_from_host(urls[i]), 20, what=f"http.server in {net.names[i]} from the host")

    def matrix():
        return {(i, j): fetch_from(net, i, urls[j]) for i in range(3) for j in range(3) if i != j}

    assert all(matrix().values()), matrix()

    net.isolate(0)
    got = matrix()
    assert got == {(0, 1): False, (0, 2): False, (1, 0): False, (2, 0): False, (1, 2): True, (2, 1): True}, got
    assert fetch_from_host(urls[0]), "the host must still reach an isolated node"

    net.heal()
    assert all(matrix().values()), matrix()

    names = list(net.created)
    net.cleanup()
    listed = run("ip", "netns", "list").stdout
    assert not any(n in listed for n in names), listed
    assert net.host_if not in run("ip", "-o", "link", "show").stdout


def test_isolated_leader(netns, petrel_bin):
    net = netns(3)
    root = new_root("petrel-netns-")
    cluster = Cluster(petrel_bin, root, size=3, hosts=net.ips, ports=[(8082, 9082)] * 3,
                      command_prefixes=[net.exec_prefix(i) for i in range(3)])
    topic = "split"
    recorder = Recorder()
    try:
        cluster.start()
        cluster.create_topic(topic, partitions=1, replication_factor=3, via=1)
        old = cluster.leader_of(topic, 0)
        majority = [i for i in (1, 2, 3) if i != old]
        for k in range(10):
            op, _, _ = send(recorder, cluster.node(majority[k % 2]), topic, f"before-{k}", 0)
            assert op.outcome == OK, op
        hw_before = cluster.node(old).read_local(topic, 0)[1]["high_watermark"]

        net.isolate(old - 1)
        print(f"isolated node {old}, the leader")

        # The majority elects a leader among themselves...
        new = wait_until(lambda: next((n for n in majority if leader_seen_by(cluster, n, topic) in majority), None),
                         60, what="a new leader elected by the majority")
        print(f"new leader reported by node {new}")
        # ...and keeps acknowledging acks=all writes (bounded wait for the first, then a run of them).
        counter = iter(range(1_000_000))
        wait_until(lambda: send(recorder, cluster.node(majority[0]), topic, f"major-{next(counter)}", 0,
                                timeout=10)[0].outcome == OK,
                   60, interval=0.2, what="the majority to acknowledge a write")
        acked_during = 0
        for k in range(20):
            op, _, _ = send(recorder, cluster.node(majority[k % 2]), topic, f"during-{k}", 0, timeout=30)
            acked_during += op.outcome == OK
        assert acked_during >= 15, f"only {acked_during}/20 writes acknowledged by the majority: {dict(recorder.statuses)}"

        # The old leader acknowledges nothing: a JSON 503 or no answer at all.
        for k in range(3):
            op, status, body = send(recorder, cluster.node(old), topic, f"old-{k}", 0, timeout=20)
            assert op.outcome != OK, f"the isolated old leader acknowledged an acks=all write: {op}"
            if status is not None:
                assert status == 503 and isinstance(body, dict) and body.get("error_code") in UNAVAILABLE_CODES, \
                    f"{status} {body}"
        got = cluster.node(old).read_local(topic, 0)
        if got is not None:
            records, last = got
            assert not any(str(r.get("value", "")).startswith("old-") for r in records), records
            assert last["high_watermark"] == hw_before, last  # it cannot commit without a majority

        net.heal()
        print("healed")
        check_all_copies(cluster, topic, 1, recorder)
    finally:
        cluster.cleanup()
        net.cleanup()
        remove_root(root)


def leader_seen_by(cluster, node_id: int, topic: str):
    try:
        r = cluster.node(node_id).get(f"/v1/topics/{topic}", timeout=3)
        return r.json()["partitions"][0]["leader"] if r.status_code == 200 else None
    except Exception:  # noqa: BLE001 - "not yet"
        return None
