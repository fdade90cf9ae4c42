"""An N-broker Petrel cluster of real `petrel serve` processes, for the cluster process tests, the
network-namespace tests and measure_failover.py.

    cluster = Cluster(binary, root, size=3).start()   # waits for every /readyz
    cluster.node(1).url, cluster.urls
    cluster.kill(2); cluster.restart(2); cluster.stop(3); cluster.pause(1); cluster.resume(1)
    cluster.cleanup()                                   # always: SIGKILLs every process group

Each node runs `petrel serve --node-id N --host H --port P --internal-host H --internal-port I
--data-dir ROOT/nodeN/data --members 1@H:I,... --cluster-secret S` (cluster.md's CLI contract) in its
own process group with ROOT/nodeN as working directory and its stderr in ROOT/nodeN/broker.log.
Ports are picked free by the test (bound to port 0 and released) and kept across restarts, so a
restarted node has the same URL and member address. `command_prefix` (e.g. `ip netns exec ns1`) lets
the network-namespace test run each node elsewhere.

ClusterNode is a petrel_support.Broker (same HTTP helpers, kill9/terminate/log_tail); only the command
line and the restart differ."""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import secrets
import signal
import socket
import subprocess
import threading
import time

import requests

from history import OK, Op, check, classify_produce
from petrel_support import HTTP_TIMEOUT, LISTENING, START_TIMEOUT, Broker, BrokerStartError

UNAVAILABLE_CODES = {50302, 50304, 50305}  # not ready, not leader / no leader, not enough in-sync replicas
READY_TIMEOUT = 90  # seconds: a debug build, an election and the metadata catch-up on a busy 2-core box
LEADER_TIMEOUT = 60


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago (all held open together while picking, so
    they are distinct; another process may still take one before the broker binds it — rare)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` passes (AssertionError).
    Exceptions from the predicate count as "not yet" (a broker restarting refuses connections)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - any failure is "not yet"
            last_error = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" +
                                 (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


class ClusterNode(Broker):
    def __init__(self, binary: str, root: str, node_id: int, host: str, port: int, internal_host: str,
                 internal_port: int, members: str, secret: str, command_prefix=(), extra_args=(), env=None):
        super().__init__(binary, root, extra_args, data_dir=os.path.join(root, "data"))
        self.node_id = node_id
        self.host = host
        self.port = port
        self.internal_host = internal_host
        self.internal_port = internal_port
        self.members = members
        self.secret = secret
        self.command_prefix = list(command_prefix)
        self.env = env
        self.paused = False

    def command(self) -> list[str]:
        return [*self.command_prefix, self.binary, "serve",
                "--node-id", str(self.node_id),
                "--host", self.host, "--port", str(self.port),
                "--internal-host", self.internal_host, "--internal-port", str(self.internal_port),
                "--data-dir", self.data_dir,
                "--members", self.members,
                "--cluster-secret", self.secret,
                *self.extra_args]

    def start(self, extra_args=None) -> "ClusterNode":
        """Starts the process and waits for its `listening on` line (not for readiness: a node is only
        ready once a metadata leader exists, which needs a majority of the nodes up)."""
        if extra_args is not None:
            self.extra_args = list(extra_args)
        assert not self.is_running(), f"node {self.node_id} already running"
        os.makedirs(self.root, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"--- start #{self.starts + 1}: {' '.join(self.command())} ---\n".encode())
        log.flush()
        env = None if self.env is None else {**os.environ, **self.env}
        try:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=self.root, env=env, start_new_session=True)
        finally:
            log.close()
        self.starts += 1
        self.paused = False
        lines: queue.Queue = queue.Queue()
        proc = self.proc

        def pump():
            # Drain stdout for the process's whole life so it can never block on a full pipe.
            for raw in iter(proc.stdout.readline, b""):
                lines.put(raw.decode("utf-8", "replace"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"petrel-{self.node_id}-stdout-{proc.pid}").start()
        deadline = time.monotonic() + START_TIMEOUT
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill9()
                raise BrokerStartError(f"node {self.node_id}: no 'listening on' line within {START_TIMEOUT}s; "
                                       f"stdout: {seen!r}\n{self.log_tail()}")
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = proc.wait(timeout=10)
                raise BrokerStartError(f"node {self.node_id}: petrel exited with {code} before listening; "
                                       f"stdout: {seen!r}\n{self.log_tail()}")
            seen.append(line)
            m = LISTENING.search(line)
            if m:
                port = int(m.group(2))
                if port != self.port:
                    self.kill9()
                    raise BrokerStartError(f"node {self.node_id} listens on {port}, asked for {self.port}")
                return self

    def restart(self, extra_args=None) -> "ClusterNode":
        """SIGTERM (if running) and start again on the same data dir and ports."""
        if self.is_running():
            self.resume()
            self.terminate()
        return self.start(extra_args)

    def pause(self) -> None:
        """SIGSTOP the process group: the process keeps its sockets but answers nothing."""
        assert self.is_running()
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True
        # The signal is delivered asynchronously: return only once the process is really stopped.
        wait_until(lambda: self._state() in ("T", "t", None), 10, interval=0.01,
                   what=f"node {self.node_id} to stop on SIGSTOP")

    def _state(self) -> str | None:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            return None

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 30) -> int:
        """Orderly shutdown (SIGTERM), continuing a paused process first so it can see the signal."""
        self.resume()
        return self.terminate(timeout)

    def kill9(self) -> None:
        super().kill9()
        self.paused = False

    def is_ready(self, timeout: float = 2) -> bool:
        if not self.is_running() or self.paused:
            return False
        try:
            return self.get("/readyz", timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "ClusterNode":
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if not self.is_running():
                raise BrokerStartError(f"node {self.node_id} exited while waiting for /readyz\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise BrokerStartError(f"node {self.node_id} not ready within {timeout}s\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def read_local(self, topic: str, partition: int, timeout: float = HTTP_TIMEOUT) -> tuple[list, dict] | None:
        """This node's own copy of a partition (`?local=true`: no forwarding), from its log start to its
        high watermark: (records, last page). None when the node has no replica (404/503)."""
        records: list = []
        offset = "earliest"
        while True:
            r = self.get(f"/v1/topics/{topic}/partitions/{partition}/records",
                         params={"offset": offset, "max_records": 10000, "local": "true"}, timeout=timeout)
            if r.status_code in (404, 503):
                return None
            assert r.status_code == 200, f"node {self.node_id} local read {topic}/{partition}@{offset}: {r.status_code} {r.text[:300]}"
            page = r.json()
            if offset == "earliest":
                first = page
            records.extend(page["records"])
            if page["next_offset"] >= page["high_watermark"] or not page["records"]:
                page = dict(page, log_start_offset=first["log_start_offset"])
                return records, page
            offset = page["next_offset"]


class Cluster:
    """`size` nodes with ids 1..size. `hosts[i]` is node i+1's address (default 127.0.0.1 for all, with
    distinct free ports); `command_prefixes[i]` a command prefix (network namespaces)."""

    def __init__(self, binary: str, root: str, size: int = 3, secret: str | None = None, extra_args=(),
                 hosts: list[str] | None = None, ports: list[tuple[int, int]] | None = None,
                 command_prefixes: list[list[str]] | None = None, env=None):
        self.binary = binary
        self.root = root
        self.size = size
        self.secret = secret or secrets.token_hex(16)
        hosts = hosts or ["127.0.0.1"] * size
        if ports is None:
            picked = free_ports(2 * size)
            ports = [(picked[2 * i], picked[2 * i + 1]) for i in range(size)]
        self.members = ",".join(f"{i + 1}@{hosts[i]}:{ports[i][1]}" for i in range(size))
        self.nodes: dict[int, ClusterNode] = {}
        for i in range(size):
            node_id = i + 1
            self.nodes[node_id] = ClusterNode(
                binary, os.path.join(root, f"node{node_id}"), node_id, hosts[i], ports[i][0], hosts[i], ports[i][1],
                self.members, self.secret, command_prefix=(command_prefixes or [[]] * size)[i],
                extra_args=extra_args, env=env)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> "Cluster":
        try:
            for node in self.nodes.values():
                node.start()
            if wait:
                self.wait_ready(timeout=timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ready(self, ids=None, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for i in ids or self.nodes:
            self.nodes[i].wait_ready(timeout=max(1.0, deadline - time.monotonic()))

    def node(self, node_id: int) -> ClusterNode:
        return self.nodes[node_id]

    __getitem__ = node

    @property
    def urls(self) -> dict[int, str]:
        return {i: n.url for i, n in self.nodes.items()}

    def kill(self, node_id: int) -> None:
        """SIGKILL (a crash) and reap."""
        self.nodes[node_id].kill9()

    def stop(self, node_id: int) -> int:
        return self.nodes[node_id].stop()

    def restart(self, node_id: int, wait: bool = True, timeout: float = READY_TIMEOUT) -> ClusterNode:
        node = self.nodes[node_id]
        node.restart()
        if wait:
            node.wait_ready(timeout)
        return node

    def pause(self, node_id: int) -> None:
        self.nodes[node_id].pause()

    def resume(self, node_id: int) -> None:
        self.nodes[node_id].resume()

    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n.is_running() and not n.paused]

    def any_node(self, exclude=()) -> ClusterNode:
        for n in self.running():
            if n.node_id not in exclude:
                return n
        raise AssertionError(f"no running node outside {exclude}")

    def cleanup(self) -> None:
        """SIGKILLs every node's process group; safe to call twice and after failures."""
        for node in self.nodes.values():
            try:
                node.cleanup()
            except Exception:  # noqa: BLE001 - keep killing the others
                pass

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"[node {i} {n.url} internal {n.internal_host}:{n.internal_port}]\n{n.log_tail(lines)}"
                         for i, n in self.nodes.items())

    # -- cluster-level helpers ----------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int | None = 3, via: int = 1,
                     configs: dict | None = None) -> dict:
        body: dict = {"name": name, "partitions": partitions}
        if replication_factor is not None:
            body["replication_factor"] = replication_factor
        if configs:
            body["configs"] = configs
        r = self.nodes[via].post("/v1/topics", json=body)
        assert r.status_code == 201, f"create {name} via node {via}: {r.status_code} {r.text}"
        return r.json()

    def describe(self, topic: str, via: int | None = None) -> dict:
        node = self.nodes[via] if via is not None else self.any_node()
        r = node.get(f"/v1/topics/{topic}")
        assert r.status_code == 200, f"describe {topic} via node {node.node_id}: {r.status_code} {r.text}"
        return r.json()

    def leader_of(self, topic: str, partition: int = 0, exclude=(), timeout: float = LEADER_TIMEOUT) -> int:
        """The partition's leader as a running node reports it, waiting until there is one that is running
        and not in `exclude` (e.g. the node just killed, which others may still name for a moment)."""
        def probe():
            for node in self.running():
                try:
                    desc = node.get(f"/v1/topics/{topic}", timeout=3).json()
                    leader = desc["partitions"][partition]["leader"]
                except (requests.RequestException, ValueError, KeyError, IndexError, TypeError):
                    continue
                if isinstance(leader, int) and leader in self.nodes and leader not in exclude \
                        and self.nodes[leader].is_running() and not self.nodes[leader].paused:
                    return leader
            return None
        return wait_until(probe, timeout, what=f"a leader for {topic}/{partition} outside {list(exclude)}")

    def wait_leaders(self, topic: str, partitions: int, timeout: float = LEADER_TIMEOUT) -> dict[int, int]:
        return {p: self.leader_of(topic, p, timeout=timeout) for p in range(partitions)}

    def read_local_all(self, topic: str, partitions: int) -> tuple[dict, dict, dict]:
        """Every running node's own copy of every partition, for history.check:
        (reads {node: {p: [(offset, value)]}}, high watermarks, log starts)."""
        reads: dict = {}
        hws: dict = {}
        starts: dict = {}
        for node in self.running():
            reads[node.node_id], hws[node.node_id], starts[node.node_id] = {}, {}, {}
            for p in range(partitions):
                got = node.read_local(topic, p)
                if got is None:
                    continue
                records, last = got
                reads[node.node_id][p] = [(r["offset"], r.get("value")) for r in records]
                hws[node.node_id][p] = last["high_watermark"]
                starts[node.node_id][p] = last["log_start_offset"]
        return reads, hws, starts

    def wait_replicas_converged(self, topic: str, partitions: int, at_least: dict[int, int] | None = None,
                                timeout: float = 60) -> None:
        """Waits until every running node's local high watermark of every partition is the same (and at
        least `at_least[p]`): the restarted followers caught up."""
        def converged():
            for p in range(partitions):
                marks = set()
                for node in self.running():
                    r = node.get(f"/v1/topics/{topic}/partitions/{p}/records",
                                 params={"offset": "latest", "local": "true", "max_records": 1}, timeout=3)
                    if r.status_code != 200:
                        return False
                    marks.add(r.json()["high_watermark"])
                if len(marks) != 1:
                    return False
                if at_least and marks.pop() < at_least.get(p, 0):
                    return False
            return True
        wait_until(converged, timeout, interval=0.25, what=f"replicas of {topic} to converge")


def produce_one(node: Broker, topic: str, value: str, partition: int | None = None, acks: str = "all",
                timeout: float = 10, session: requests.Session | None = None):
    """One JSON produce of one record. Returns (status or None, body or None, elapsed seconds, error)."""
    rec: dict = {"value": value}
    if partition is not None:
        rec["partition"] = partition
    t0 = time.monotonic()
    try:
        r = (session or requests).post(f"{node.url}/v1/topics/{topic}/records", params={"acks": acks},
                                       json={"records": [rec]}, timeout=timeout)
    except requests.RequestException as e:
        return None, None, time.monotonic() - t0, e
    try:
        body = r.json()
    except ValueError:
        body = None
    return r.status_code, body, time.monotonic() - t0, None


# -- histories (history.py) under load ----------------------------------------------------------------

class Recorder:
    """Thread-safe list of ops plus when each request started, for "did produce resume" checks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops: list[Op] = []
        self.started: list[float] = []
        self.finished: list[float] = []
        self.statuses: collections.Counter = collections.Counter()

    def add(self, op: Op, started: float, status_key) -> None:
        finished = time.monotonic()
        with self.lock:
            self.ops.append(op)
            self.started.append(started)
            self.finished.append(finished)
            self.statuses[status_key] += 1

    def acks_started_after(self, t: float, partition: int | None = None) -> int:
        with self.lock:
            return sum(1 for op, s in zip(self.ops, self.started)
                       if op.outcome == OK and s > t and (partition is None or op.partition == partition))

    def max_acked(self) -> dict[int, int]:
        with self.lock:
            out: dict[int, int] = {}
            for op in self.ops:
                if op.outcome == OK:
                    out[op.partition] = max(out.get(op.partition, -1), op.offset)
            return out


def send(recorder: Recorder, node, topic: str, value: str, partition: int, session=None, timeout: float = 10):
    """One single-attempt acks=all produce, recorded. Returns (op, HTTP status or None, JSON body or None)."""
    started = time.monotonic()
    status, body, _, error = produce_one(node, topic, value, partition=partition, acks="all", timeout=timeout,
                                         session=session)
    outcome, p, o = classify_produce(status, body)
    code = body.get("error_code") if isinstance(body, dict) else None
    key = status if status is not None else type(error).__name__
    op = Op(value, outcome, p, o, attempts=1,
            note=f"via node {node.node_id}: {status if status is not None else repr(error)[:80]} {code or ''}".strip())
    recorder.add(op, started, (key, code))
    return op, status, body


def producer(cluster, topic: str, partitions: int, thread: int, stop: threading.Event, recorder: Recorder,
             timeout: float = 10):
    """Sends unique values `t<thread>-<seq>` one at a time (acks=all, one attempt each) to partition
    seq % partitions through the running nodes in turn, until `stop` is set."""
    session = requests.Session()  # no retries: requests' default adapter makes exactly one attempt
    seq = 0
    try:
        while not stop.is_set():
            running = cluster.running()
            if not running:
                time.sleep(0.05)
                continue
            node = running[(thread + seq) % len(running)]
            op, _, _ = send(recorder, node, topic, f"t{thread}-{seq}", seq % partitions, session=session,
                            timeout=timeout)
            seq += 1
            if op.outcome != OK:
                time.sleep(0.05)  # no tight loop against a broker that is electing
    finally:
        session.close()


def check_all_copies(cluster, topic: str, partitions: int, recorder: Recorder):
    """After the faults: all brokers ready, replicas caught up, every copy read, the history checked."""
    cluster.wait_ready()
    cluster.wait_replicas_converged(topic, partitions, at_least={p: o + 1 for p, o in recorder.max_acked().items()},
                                    timeout=90)
    reads, hws, starts = cluster.read_local_all(topic, partitions)
    assert sorted(reads) == sorted(cluster.nodes), f"local reads from {sorted(reads)}"
    for node_id, parts in reads.items():
        assert sorted(parts) == list(range(partitions)), f"node {node_id} has replicas of {sorted(parts)}"
    result = check(recorder.ops, reads, high_watermarks=hws, log_starts=starts)
    print(result.summary())
    print("outcomes:", dict(recorder.statuses))
    for kind in ("lost", "unseen", "inconsistent", "duplicate", "aborted_read", "divergence"):
        assert result.counts[kind] == 0, f"{kind}: {result.counts[kind]}\n{result.summary()}"
    assert result.counts["unexpected"] == 0, result.summary()
    # Every replica holds every acknowledged record (they converged on one high watermark above them all).
    return result
