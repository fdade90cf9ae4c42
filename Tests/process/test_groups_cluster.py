"""Consumer groups on a 3-broker cluster (issue #5's acceptance scenarios):

1. test_member_stops_polling_others_take_over: three members share a 6-partition RF=3 topic, each
   talking to a different broker, while a producer writes keyed records; one member stops polling and
   the other two end up owning all six partitions. Every acknowledged record is delivered to some
   member (at-least-once: nothing skipped), no record is handed to two members at one generation, every
   record comes from a partition the member owned in that poll's generation, and a member's polls of a
   partition move forward within a generation. Redeliveries across the rebalance are counted and printed.
2. test_coordinator_kill_keeps_commits: the coordinator's broker is SIGKILLed while members poll and
   commit through the other two; committed offsets (sampled over and over through every live broker,
   one request at a time) never go back, the commits made before the kill are still there, the members
   keep receiving and committing, and the restarted broker serves the group with the same answers.
3. test_uncommitted_records_go_to_the_next_owner: a member (auto_commit off) polls records, never
   commits and stops; once its session expires, the next owner receives those records again.
4. test_any_broker_routing: join through broker 1, poll through 2, commit through 3; describe, offsets,
   heartbeat and list through each broker give identical answers.

A request that lands during an election may answer 503 with 50302/50304/50305: it is retried (bounded).
No test asserts a duration; every wait is eventually-style and generous."""

from __future__ import annotations

import collections
import os
import threading
import time

import pytest
import requests

from cluster_support import UNAVAILABLE_CODES, Cluster, wait_until
from petrel_support import assert_error, new_root, remove_root

SESSION_MS = 3000


# -- helpers ---------------------------------------------------------------------------------------

def call(node, method, path, retry_for: float = 45, session=None, **kw):
    """One API call through `node`, retrying (bounded) 503s with an election code and connection
    errors; returns the last response (raises on a connection error at the deadline)."""
    kw.setdefault("timeout", 20)
    deadline = time.monotonic() + retry_for
    while True:
        try:
            r = (session or requests).request(method, node.url + path, **kw)
        except requests.RequestException:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
            continue
        if r.status_code == 503 and time.monotonic() < deadline:
            try:
                code = r.json().get("error_code")
            except ValueError:
                code = None
            if code in UNAVAILABLE_CODES:
                time.sleep(0.2)
                continue
        return r


def ok(r, what=""):
    assert 200 <= r.status_code < 300, f"{what}: {r.status_code} {r.text[:500]}"
    return r.json() if r.content else None


def tps(assignment):
    return sorted((a["topic"], a["partition"]) for a in assignment)


def join(node, group, **body):
    return ok(call(node, "POST", f"/v1/groups/{group}/members", json=body), f"join {group} via {node.node_id}")


def offsets_of(node, group, retry_for=45) -> dict:
    body = ok(call(node, "GET", f"/v1/groups/{group}/offsets", retry_for=retry_for), f"offsets via {node.node_id}")
    return {o["partition"]: o["offset"] for o in body["offsets"]}


def stable_describe(node, group) -> dict:
    """describe without what legitimately differs between two calls (idle time)."""
    d = ok(call(node, "GET", f"/v1/groups/{group}"), f"describe via {node.node_id}")
    d["members"] = [{k: v for k, v in m.items() if k != "idle_ms"} for m in d["members"]]
    return d


class Acked:
    """Thread-safe record of acknowledged produces: (partition, offset) -> value."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records: dict[tuple[int, int], str] = {}
        self.outcomes: collections.Counter = collections.Counter()

    def add(self, placements, values):
        with self.lock:
            for o, v in zip(placements, values):
                self.records[(o["partition"], o["offset"])] = v

    def snapshot(self):
        with self.lock:
            return dict(self.records)


def keyed_producer(nodes_fn, topic, stop: threading.Event, acked: Acked, batch=5, pause=0.05):
    """Keyed batches (acks=all, one attempt each) through the live brokers in turn until `stop`."""
    s = requests.Session()
    seq = 0
    try:
        while not stop.is_set():
            nodes = nodes_fn()
            if not nodes:
                time.sleep(0.1)
                continue
            node = nodes[seq % len(nodes)]
            values = [f"v{seq + i}" for i in range(batch)]
            recs = [{"key": f"k{(seq + i) % 37}", "value": v} for i, v in enumerate(values)]
            try:
                r = s.post(f"{node.url}/v1/topics/{topic}/records", params={"acks": "all"},
                           json={"records": recs}, timeout=10)
                acked.outcomes[r.status_code] += 1
                if r.status_code == 200:
                    acked.add(r.json()["offsets"], values)
            except requests.RequestException as e:
                acked.outcomes[type(e).__name__] += 1
            seq += batch
            time.sleep(pause)
    finally:
        s.close()


class Consumer:
    """One group member polling through one broker in its own thread; every delivery is recorded as
    (member, generation, partition, offset, value) together with the poll's assignment."""

    def __init__(self, name, node, group, commit_via=None):
        self.name = name
        self.node = node
        self.group = group
        self.commit_via = commit_via  # None: auto-commit; else a broker to commit through explicitly
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.deliveries: list[tuple[str, int, int, int, str]] = []
        self.polls: list[tuple[int, list, float]] = []  # (generation, assignment, time)
        self.problems: list[str] = []
        self.commits_ok: list[tuple[float, dict]] = []  # (time the commit was sent, {partition: offset})
        self.commit_refusals = collections.Counter()
        self.gone = False
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"consumer-{name}")

    def start(self):
        self.thread.start()
        return self

    def run(self):
        s = requests.Session()
        try:
            while not self.stop.is_set():
                try:
                    r = call(self.node, "GET", f"/v1/groups/{self.group}/members/{self.name}/records",
                             retry_for=5, session=s, params={"wait_ms": 500, "max_records": 200})
                except requests.RequestException:
                    time.sleep(0.2)
                    continue
                if r.status_code == 404:
                    self.gone = True
                    return
                if r.status_code != 200:
                    self.problems.append(f"poll {r.status_code} {r.text[:200]}")
                    time.sleep(0.2)
                    continue
                page = r.json()
                gen, owned = page["generation"], tps(page["assignment"])
                with self.lock:
                    self.polls.append((gen, owned, time.monotonic()))
                    for rec in page["records"]:
                        self.deliveries.append((self.name, gen, rec["partition"], rec["offset"], rec["value"]))
                        if (rec["topic"], rec["partition"]) not in owned:
                            self.problems.append(f"record of {rec['topic']}/{rec['partition']} outside assignment {owned} at gen {gen}")
                if self.commit_via is not None and page["records"]:
                    self.commit(s, gen, page["records"])
        finally:
            s.close()

    def commit(self, s, gen, records):
        ends: dict[int, int] = {}
        for rec in records:
            ends[rec["partition"]] = max(ends.get(rec["partition"], -1), rec["offset"] + 1)
        body = {"member_id": self.name, "generation": gen,
                "offsets": [{"topic": records[0]["topic"], "partition": p, "offset": o} for p, o in sorted(ends.items())]}
        sent = time.monotonic()
        try:
            r = call(self.commit_via, "POST", f"/v1/groups/{self.group}/offsets", retry_for=10, session=s, json=body)
        except requests.RequestException as e:
            self.commit_refusals[type(e).__name__] += 1
            return
        if r.status_code == 200:
            assert r.json() == {"committed": len(ends)}, r.text
            with self.lock:
                self.commits_ok.append((sent, ends))
        else:
            code = r.json().get("error_code") if r.content else None
            self.commit_refusals[(r.status_code, code)] += 1
            if r.status_code == 409 and code == 40904:
                return  # stale generation: a rebalance happened; the next poll tells the new one
            if r.status_code == 404:
                return
            if r.status_code not in (503, 504):
                self.problems.append(f"commit {r.status_code} {r.text[:200]}")

    def halt(self):
        self.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), f"consumer {self.name} did not stop"

    def last_poll(self):
        with self.lock:
            return self.polls[-1] if self.polls else None

    def delivered(self):
        with self.lock:
            return list(self.deliveries)


def check_deliveries(consumers, acked: dict, label: str, forward_within_generation: bool = True):
    """At-least-once and single ownership per generation; returns the number of redeliveries."""
    all_deliveries = [d for c in consumers for d in c.delivered()]
    problems = [p for c in consumers for p in c.problems]
    assert not problems, problems[:10]
    seen: dict[tuple[int, int], set] = collections.defaultdict(set)
    by_gen: dict[tuple[int, int, int], set] = collections.defaultdict(set)
    for member, gen, p, o, v in all_deliveries:
        if (p, o) in acked:
            assert acked[(p, o)] == v, f"{label}: {p}/{o} delivered as {v!r}, acknowledged as {acked[(p, o)]!r}"
        seen[(p, o)].add(member)
        by_gen[(gen, p, o)].add(member)
    # One produce attempt per batch: a value at two offsets would be a duplicate write (history.py's word).
    places: dict[str, set] = collections.defaultdict(set)
    for _, _, p, o, v in all_deliveries:
        places[v].add((p, o))
    dup = {v: sorted(x) for v, x in places.items() if len(x) > 1}
    assert not dup, f"{label}: one record at two offsets: {list(dup.items())[:10]}"
    skipped = sorted(set(acked) - set(seen))
    assert not skipped, f"{label}: {len(skipped)} acknowledged records never delivered, e.g. {skipped[:10]}"
    double = {k: m for k, m in by_gen.items() if len(m) > 1}
    assert not double, f"{label}: delivered to two members at one generation: {list(double.items())[:10]}"
    # A member's polls of one partition move forward within a generation (no re-read, no going back).
    # Not after a coordinator failover: positions are in memory and restart from the committed offsets.
    for c in (consumers if forward_within_generation else []):
        last: dict[tuple[int, int], int] = {}
        for member, gen, p, o, v in c.delivered():
            prev = last.get((gen, p))
            assert prev is None or o > prev, f"{label}: {member} read {p}/{o} after {p}/{prev} at generation {gen}"
            last[(gen, p)] = o
    counts = collections.Counter((p, o) for _, _, p, o, _ in all_deliveries)
    redelivered = sum(n - 1 for n in counts.values() if n > 1)
    across = collections.Counter()
    for member, gen, p, o, v in all_deliveries:
        if counts[(p, o)] > 1:
            across[member] += 1
    print(f"{label}: {len(all_deliveries)} deliveries of {len(seen)} distinct records, {len(acked)} acknowledged; "
          f"{redelivered} redeliveries (across rebalances/failovers; allowed, at-least-once) by member {dict(across)}")
    return redelivered


# -- fixtures ----------------------------------------------------------------------------------------

def _binary():
    path = os.environ.get("PETREL_BIN", "")
    if not (path and os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip("PETREL_BIN is not set to the petrel executable")
    return path


@pytest.fixture(scope="module")
def shared_cluster(request):
    """One 3-broker cluster for the tests that kill nothing (each uses its own topic and group)."""
    root = new_root("petrel-groups-cluster-")
    cluster = Cluster(_binary(), root, size=3)
    failed_before = request.session.testsfailed
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()
        if request.session.testsfailed > failed_before:
            print("\n" + cluster.log_tails(60))
        remove_root(root)


# -- 1 ------------------------------------------------------------------------------------------------

def test_member_stops_polling_others_take_over(shared_cluster):
    cluster = shared_cluster
    topic, group = "shared-events", "share"
    cluster.create_topic(topic, partitions=6, replication_factor=3, via=1)
    cluster.wait_leaders(topic, 6)
    acked = Acked()
    stop_producing = threading.Event()
    producer = threading.Thread(target=keyed_producer, args=(cluster.running, topic, stop_producing, acked), daemon=True)
    producer.start()
    consumers = []
    try:
        for i, name in enumerate(["m1", "m2", "m3"]):
            node = cluster.node(i + 1)
            m = join(node, group, topics=[topic], member_name=name, session_timeout_ms=SESSION_MS, auto_offset_reset="earliest")
            assert m["member_id"] == name
            consumers.append(Consumer(name, node, group).start())
        m1, m2, m3 = consumers

        def all_sharing():
            polls = [c.last_poll() for c in consumers]
            if any(p is None for p in polls) or len({p[0] for p in polls}) != 1:
                return False
            return all(len(p[1]) == 2 for p in polls) and all(c.delivered() for c in consumers)
        wait_until(all_sharing, 60, interval=0.2, what="three members with two partitions each, all receiving")
        gen_before = m1.last_poll()[0]

        m3.halt()  # m3 stops polling (its process "hangs"): no leave, no heartbeat
        print(f"m3 stopped at generation {gen_before} owning {m3.last_poll()[1]}")

        def survivors_own_all():
            a, b = m1.last_poll(), m2.last_poll()
            return a[0] == b[0] > gen_before and sorted(a[1] + b[1]) == [(topic, p) for p in range(6)]
        wait_until(survivors_own_all, 30, interval=0.2, what="m1 and m2 to own all 6 partitions after m3's session expired")
        print(f"after expiry: generation {m1.last_poll()[0]}, m1 {m1.last_poll()[1]}, m2 {m2.last_poll()[1]}")
        time.sleep(1.5)  # keep producing into the new assignment for a while
    finally:
        stop_producing.set()
        producer.join(timeout=30)
    assert not producer.is_alive()
    final = acked.snapshot()
    assert len(final) >= 50, f"too few acknowledged records: {len(final)} {dict(acked.outcomes)}"

    def everything_delivered():
        seen = {(p, o) for c in (m1, m2) for _, _, p, o, _ in c.delivered()} | {(p, o) for _, _, p, o, _ in m3.delivered()}
        return set(final) <= seen
    try:
        wait_until(everything_delivered, 60, interval=0.3, what="every acknowledged record to be delivered")
    finally:
        m1.halt()
        m2.halt()

    check_deliveries(consumers, final, "member stops")
    r = call(cluster.node(2), "POST", f"/v1/groups/{group}/members/m3/heartbeat")
    assert assert_error(r, 404)["error_code"] == 40403
    d = stable_describe(cluster.node(3), group)
    assert [m["member_id"] for m in d["members"]] == ["m1", "m2"]
    owners = {p["partition"]: p["member_id"] for p in d["partitions"] if p["topic"] == topic}
    assert sorted(owners) == list(range(6)) and set(owners.values()) == {"m1", "m2"}, d["partitions"]


# -- 2 ------------------------------------------------------------------------------------------------

def test_coordinator_kill_keeps_commits(make_cluster):
    cluster = make_cluster(3)
    topic, group = "kc", "kg"
    cluster.create_topic(topic, partitions=3, replication_factor=3, via=1)
    cluster.wait_leaders(topic, 3)
    join(cluster.node(1), group, topics=[topic], member_name="c1", session_timeout_ms=15000,
         auto_offset_reset="earliest", auto_commit=False)
    coordinator = ok(call(cluster.node(2), "GET", f"/v1/groups/{group}"))["coordinator"]
    assert coordinator in (1, 2, 3)
    x, y = [cluster.node(i) for i in (1, 2, 3) if i != coordinator]
    join(y, group, topics=[topic], member_name="c2", session_timeout_ms=15000, auto_offset_reset="earliest", auto_commit=False)
    print(f"coordinator of {group}: node {coordinator}; members poll through {x.node_id} and {y.node_id}")

    acked = Acked()
    stop_producing = threading.Event()
    producer = threading.Thread(target=keyed_producer, args=(lambda: [x, y], topic, stop_producing, acked), daemon=True)
    # Each member polls through one survivor-to-be and commits through the other.
    c1 = Consumer("c1", x, group, commit_via=y)
    c2 = Consumer("c2", y, group, commit_via=x)

    samples: list[tuple[int, dict]] = []
    regressions: list[str] = []
    stop_sampling = threading.Event()

    def sampler():
        """Sequential reads of the committed offsets through every live broker: each read starts after
        the previous one answered, so a later answer must never show a smaller offset."""
        high: dict[int, int] = {}
        s = requests.Session()
        i = 0
        while not stop_sampling.is_set():
            live = [n for n in cluster.running()]
            if not live:
                time.sleep(0.1)
                continue
            node = live[i % len(live)]
            i += 1
            try:
                r = s.get(f"{node.url}/v1/groups/{group}/offsets", timeout=10)
            except requests.RequestException:
                continue
            if r.status_code != 200:
                continue
            got = {o["partition"]: o["offset"] for o in r.json()["offsets"] if o["offset"] is not None}
            for p, o in got.items():
                if o < high.get(p, -1):
                    regressions.append(f"partition {p}: {o} via node {node.node_id} after {high[p]}")
                high[p] = max(high.get(p, -1), o)
            for p in high:
                if p not in got:
                    regressions.append(f"partition {p}: committed offset vanished via node {node.node_id} (was {high[p]})")
            samples.append((node.node_id, got))
            time.sleep(0.05)
        s.close()

    sampling = threading.Thread(target=sampler, daemon=True)
    threads_started = False
    try:
        producer.start()
        c1.start()
        c2.start()
        sampling.start()
        threads_started = True

        def committing():
            return len(c1.commits_ok) >= 3 and len(c2.commits_ok) >= 3 and len(offsets_of(x, group)) == 3
        wait_until(committing, 60, interval=0.2, what="both members committing on all 3 partitions")
        before_kill = offsets_of(x, group)
        killed_at = time.monotonic()
        cluster.kill(coordinator)
        print(f"killed node {coordinator} (coordinator) with committed offsets {before_kill}")

        # The commits made before the kill are still there (via both survivors, once a new coordinator answers).
        for node in (x, y):
            after = offsets_of(node, group, retry_for=60)
            assert all(after.get(p, -1) >= o for p, o in before_kill.items()), f"via {node.node_id}: {after} < {before_kill}"

        # The group carries on: both members receive records and commit again after the kill.
        def carrying_on():
            return all(any(t > killed_at for t, _ in c.commits_ok) for c in (c1, c2))
        wait_until(carrying_on, 60, interval=0.2, what="commits through the survivors after the kill")
        time.sleep(1.0)

        cluster.restart(coordinator)  # waits for /readyz
        back = cluster.node(coordinator)
        restarted_at = time.monotonic()
        wait_until(lambda: all(any(t > restarted_at for t, _ in c.commits_ok) for c in (c1, c2)), 60, interval=0.2,
                   what="commits after the restart")
        # The restarted broker answers for the group (forwarded to whoever coordinates now).
        d = stable_describe(back, group)
        assert sorted(m["member_id"] for m in d["members"]) == ["c1", "c2"]
        assert set(offsets_of(back, group)) == {0, 1, 2}
    finally:
        stop_producing.set()
        if threads_started:
            producer.join(timeout=30)

    final_acked = acked.snapshot()
    print(f"produce outcomes: {dict(acked.outcomes)}")
    try:
        def drained():
            seen = {(p, o) for c in (c1, c2) for _, _, p, o, _ in c.delivered()}
            return set(final_acked) <= seen
        wait_until(drained, 60, interval=0.3, what="every acknowledged record delivered")
        # Let the last commits land, then stop.
        target = {p: max(o for (q, o) in final_acked if q == p) + 1 for p in range(3) if any(q == p for q, _ in final_acked)}
        wait_until(lambda: all(offsets_of(x, group).get(p, -1) >= o for p, o in target.items()), 30,
                   interval=0.3, what="the final commits")
    finally:
        c1.halt()
        c2.halt()
        stop_sampling.set()
        sampling.join(timeout=30)

    assert not regressions, f"committed offsets went back: {regressions[:10]}"
    by_node = collections.Counter(n for n, _ in samples)
    print(f"{len(samples)} offset samples by node {dict(by_node)}; commit refusals c1 {dict(c1.commit_refusals)} c2 {dict(c2.commit_refusals)}")
    assert set(by_node) == {1, 2, 3}, f"the restarted broker was never sampled: {dict(by_node)}"
    check_deliveries([c1, c2], final_acked, "coordinator kill", forward_within_generation=False)
    # Every broker, the restarted one included, gives the same answers now that nothing moves.
    views = {n.node_id: (stable_describe(n, group), offsets_of(n, group)) for n in cluster.nodes.values()}
    first = views[x.node_id]
    for node_id, view in views.items():
        assert view == first, f"node {node_id} answers {view}, node {x.node_id} {first}"


# -- 3 ------------------------------------------------------------------------------------------------

def test_uncommitted_records_go_to_the_next_owner(shared_cluster):
    cluster = shared_cluster
    topic, group = "crash", "crashers"
    cluster.create_topic(topic, partitions=1, replication_factor=3, via=2)
    cluster.wait_leaders(topic, 1)
    r = ok(call(cluster.node(3), "POST", f"/v1/topics/{topic}/records", params={"acks": "all"},
                json={"records": [{"value": f"c{i}"} for i in range(10)]}))
    produced = {o["offset"]: f"c{i}" for i, o in enumerate(r["offsets"])}

    a = join(cluster.node(1), group, topics=[topic], member_name="a", session_timeout_ms=SESSION_MS,
             auto_offset_reset="earliest", auto_commit=False)
    assert tps(a["assignment"]) == [(topic, 0)]
    b = join(cluster.node(2), group, topics=[topic], member_name="b", session_timeout_ms=SESSION_MS,
             auto_offset_reset="earliest", auto_commit=False)
    assert b["assignment"] == []
    # "a" polls some records and crashes before committing (it never polls or commits again).
    got_a = []

    def a_got_some():
        page = ok(call(cluster.node(1), "GET", f"/v1/groups/{group}/members/a/records", params={"wait_ms": 500, "max_records": 4}))
        got_a.extend((x["offset"], x["value"]) for x in page["records"])
        return got_a
    wait_until(a_got_some, 30, interval=0, what="a's first records")
    assert all(produced[o] == v for o, v in got_a)
    # "b" keeps polling through another broker until it owns the partition and has those records.
    got_b = []

    def b_has_them():
        page = ok(call(cluster.node(2), "GET", f"/v1/groups/{group}/members/b/records", params={"wait_ms": 500}))
        got_b.extend((x["offset"], x["value"]) for x in page["records"])
        return {o for o, _ in got_a} <= {o for o, _ in got_b}
    wait_until(b_has_them, 30, interval=0, what="the next owner to receive a's uncommitted records again")
    assert got_b[:len(got_a)] == got_a, (got_a, got_b)
    assert ok(call(cluster.node(3), "GET", f"/v1/groups/{group}/offsets"))["offsets"] == []
    assert assert_error(call(cluster.node(3), "POST", f"/v1/groups/{group}/members/a/heartbeat"), 404)["error_code"] == 40403
    assert [m["member_id"] for m in stable_describe(cluster.node(1), group)["members"]] == ["b"]


# -- 4 ------------------------------------------------------------------------------------------------

def test_any_broker_routing(shared_cluster):
    cluster = shared_cluster
    topic, group = "routed", "router"
    cluster.create_topic(topic, partitions=2, replication_factor=3, via=3)
    cluster.wait_leaders(topic, 2)
    ok(call(cluster.node(1), "POST", f"/v1/topics/{topic}/records", params={"acks": "all"},
            json={"records": [{"value": f"r{i}", "partition": i % 2} for i in range(6)]}))
    n1, n2, n3 = (cluster.node(i) for i in (1, 2, 3))

    m = join(n1, group, topics=[topic], member_name="rm", auto_offset_reset="earliest", auto_commit=False, client_id="router")
    assert m["generation"] == 1 and tps(m["assignment"]) == [(topic, 0), (topic, 1)]
    got = []

    def polled_all():
        page = ok(call(n2, "GET", f"/v1/groups/{group}/members/rm/records", params={"wait_ms": 500}))
        assert page["member_id"] == "rm" and page["generation"] == 1
        got.extend(page["records"])
        return len(got) >= 6
    wait_until(polled_all, 30, interval=0, what="6 records polled through broker 2")
    assert sorted(x["value"] for x in got) == [f"r{i}" for i in range(6)]
    ends = {p: max(x["offset"] for x in got if x["partition"] == p) + 1 for p in (0, 1)}
    c = ok(call(n3, "POST", f"/v1/groups/{group}/offsets", json={
        "member_id": "rm", "generation": 1,
        "offsets": [{"topic": topic, "partition": p, "offset": o, "metadata": f"via3-{p}"} for p, o in ends.items()]}))
    assert c == {"committed": 2}

    describes = {n.node_id: stable_describe(n, group) for n in (n1, n2, n3)}
    assert describes[1] == describes[2] == describes[3], describes
    d = describes[1]
    assert d["coordinator"] in (1, 2, 3) and d["generation"] == 1 and d["state"] == "Stable"
    assert [(x["member_id"], x["client_id"]) for x in d["members"]] == [("rm", "router")]
    assert {x["partition"]: (x["member_id"], x["committed_offset"], x["lag"]) for x in d["partitions"]} == \
        {p: ("rm", o, 0) for p, o in ends.items()}
    offsets = {n.node_id: ok(call(n, "GET", f"/v1/groups/{group}/offsets")) for n in (n1, n2, n3)}
    assert offsets[1] == offsets[2] == offsets[3] == {"group": group, "offsets": [
        {"topic": topic, "partition": p, "offset": ends[p], "metadata": f"via3-{p}"} for p in (0, 1)]}
    beats = {n.node_id: ok(call(n, "POST", f"/v1/groups/{group}/members/rm/heartbeat")) for n in (n1, n2, n3)}
    assert beats[1] == beats[2] == beats[3] and beats[1]["generation"] == 1
    lists = {n.node_id: [g for g in ok(call(n, "GET", "/v1/groups"))["groups"] if g["group"] == group] for n in (n1, n2, n3)}
    assert lists[1] == lists[2] == lists[3] == [{"group": group, "state": "Stable", "members": 1, "coordinator": d["coordinator"]}]
    # Errors are forwarded as they are, too.
    for n in (n1, n2, n3):
        r = call(n, "POST", f"/v1/groups/{group}/offsets", json={"member_id": "rm", "generation": 0,
                                                                  "offsets": [{"topic": topic, "partition": 0, "offset": 1}]})
        assert assert_error(r, 409)["error_code"] == 40904
    # Leave through broker 2; every broker sees the group empty.
    r = call(n2, "DELETE", f"/v1/groups/{group}/members/rm")
    assert r.status_code == 204, r.text
    for n in (n1, n2, n3):
        d = stable_describe(n, group)
        assert d["state"] == "Empty" and d["members"] == [] and d["generation"] == 2


# -- 5 ------------------------------------------------------------------------------------------------

def test_deposed_coordinator_serves_no_stale_offsets(make_cluster):
    cluster = make_cluster(3)
    cluster.create_topic("dp", partitions=1, replication_factor=3, via=1)
    cluster.wait_leaders("dp", 1)
    ok(call(cluster.node(1), "POST", "/v1/topics/dp/records", json={"records": [{"value": str(i)} for i in range(100)]}))
    group = "deposed"
    entry = lambda o: {"offsets": [{"topic": "dp", "partition": 0, "offset": o}]}  # noqa: E731
    ok(call(cluster.node(1), "POST", f"/v1/groups/{group}/offsets", json=entry(10)))
    old = ok(call(cluster.node(1), "GET", f"/v1/groups/{group}"))["coordinator"]
    x, y = [cluster.node(i) for i in (1, 2, 3) if i != old]
    cluster.pause(old)
    try:
        # Another broker takes over and acknowledges a newer commit.
        assert ok(call(x, "POST", f"/v1/groups/{group}/offsets", retry_for=90, json=entry(50))) == {"committed": 1}
        assert offsets_of(y, group) == {0: 50}
        # Reads that reach the old coordinator while it is stopped are answered once it runs again.
        answers: list = []

        def ask():
            try:
                answers.append(requests.get(f"{cluster.node(old).url}/v1/groups/{group}/offsets", timeout=30))
            except requests.RequestException as e:
                answers.append(e)
        askers = [threading.Thread(target=ask, daemon=True) for _ in range(3)]
        for t in askers:
            t.start()
        time.sleep(0.5)
    finally:
        cluster.resume(old)
    for t in askers:
        t.join(timeout=40)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        ask()
        time.sleep(0.1)
    seen = []
    for r in answers:
        if isinstance(r, requests.Response) and r.status_code == 200:
            seen.append({o["partition"]: o["offset"] for o in r.json()["offsets"]}.get(0))
    print(f"offsets answered by the old coordinator (node {old}) after SIGCONT: {seen}")
    assert seen and all(o == 50 for o in seen), f"committed offset 50 was acknowledged; node {old} answered {seen}"
