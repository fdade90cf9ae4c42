"""The acceptance test for crash durability: SIGKILL a broker while 4 producers send acks=all
requests, restart it on the same data dir, and check the history (TESTING.md's vocabulary):

- lost write: an acknowledged record is missing;
- inconsistent offset: the record at an acknowledged offset is not the acknowledged one;
- duplicate: one value at two offsets (every value is sent exactly once, so must be 0);
- phantom: a value that was never sent is in the log;
- gap: offsets are not contiguous from the log start to the high watermark;
- the log continues: a new append lands at the old log end.

Three kill cycles in one test; the history accumulates across them."""

from __future__ import annotations

import os
import random
import threading
import time

import requests

TOPIC = "crash"
PARTITIONS = 2
THREADS = 4
CYCLES = 3


class History:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[int, int]] = {}  # value -> (partition, offset)
        self.sent: set[str] = set()  # every value ever put on the wire
        self.in_doubt: set[str] = set()  # sent, but no 200 (timeout, reset, 5xx...)
        self.failed_statuses: dict[int, int] = {}

    def ok(self, values, placements):
        with self.lock:
            for v, p in zip(values, placements):
                assert v not in self.acked, f"{v} acknowledged twice"
                self.acked[v] = (p["partition"], p["offset"])

    def unknown(self, values, status=None):
        with self.lock:
            self.in_doubt.update(values)
            if status is not None:
                self.failed_statuses[status] = self.failed_statuses.get(status, 0) + 1


def producer(url: str, thread: int, cycle: int, history: History, stop: threading.Event, rng: random.Random, acks: str = "all"):
    session = requests.Session()
    n = 0
    try:
        while not stop.is_set():
            kind = rng.randrange(4)
            if kind < 2:
                values = [f"t{thread}-c{cycle}-n{n}"]
                n += 1
                params = {"partition": str(rng.randrange(PARTITIONS))} if kind == 0 else {}
                kw = dict(data=values[0].encode(), headers={"Content-Type": "text/plain"}, params=params)
            else:
                count = rng.randint(2, 6)
                values = [f"t{thread}-c{cycle}-n{n + i}" for i in range(count)]
                n += count
                explicit = kind == 3
                records = [{"value": v, **({"partition": rng.randrange(PARTITIONS)} if explicit else {})} for v in values]
                kw = dict(json={"records": records})
            if acks != "all":
                kw["params"] = {**kw.get("params", {}), "acks": acks}
            with history.lock:
                history.sent.update(values)
            try:
                r = session.post(f"{url}/v1/topics/{TOPIC}/records", timeout=5, **kw)
            except requests.RequestException:
                history.unknown(values)
                # The broker is probably dead; don't spin on connection refused.
                time.sleep(0.05)
                continue
            if r.status_code == 200:
                placements = r.json()["offsets"]
                assert len(placements) == len(values), r.text
                assert all(isinstance(p["offset"], int) for p in placements), r.text
                history.ok(values, placements)
            else:
                history.unknown(values, r.status_code)
    finally:
        session.close()


def consumer(url: str, positions: dict, seen: dict, stop: threading.Event, problems: list):
    """Follows both partitions with long-polls from where the last cycle's consumer stopped.
    Checks as it goes that it never skips or goes back (poll skip / non-monotonic poll)."""
    session = requests.Session()
    try:
        while not stop.is_set():
            for p in range(PARTITIONS):
                try:
                    r = session.get(f"{url}/v1/topics/{TOPIC}/partitions/{p}/records",
                                    params={"offset": positions[p], "wait_ms": 200, "max_records": 1000}, timeout=5)
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
                if r.status_code != 200:
                    continue
                body = r.json()
                offsets = [x["offset"] for x in body["records"]]
                if offsets != list(range(positions[p], positions[p] + len(offsets))) or body["next_offset"] != positions[p] + len(offsets):
                    problems.append(f"partition {p}: read at {positions[p]} returned offsets {offsets[:5]}... next {body['next_offset']}")
                    return
                if body["records"] and offsets[-1] >= body["high_watermark"]:
                    problems.append(f"partition {p}: a record at or above the high watermark was returned: {body['high_watermark']}")
                for x in body["records"]:
                    seen[(p, x["offset"])] = x["value"]
                positions[p] = body["next_offset"]
    finally:
        session.close()


def check(broker, history: History, cycle: int, seen: dict | None = None) -> dict:
    """Reads every partition in full and checks the history; returns the counts."""
    log: dict[tuple[int, int], str] = {}
    where: dict[str, list[tuple[int, int]]] = {}
    ends = {}
    for p in range(PARTITIONS):
        records, last = broker.read_all(TOPIC, p)
        offsets = [r["offset"] for r in records]
        start = last["log_start_offset"]
        assert start == 0, f"partition {p}: log start offset {start}, no retention configured"
        assert offsets == list(range(start, last["high_watermark"])), (
            f"cycle {cycle} partition {p}: offsets not contiguous from {start} to the high watermark "
            f"{last['high_watermark']}: gaps at {sorted(set(range(start, last['high_watermark'])) - set(offsets))[:20]}")
        o = broker.offsets(TOPIC, p)
        assert o["high_watermark"] == o["log_end_offset"], f"after restart every recovered record is durable: {o}"
        ends[p] = o["log_end_offset"]
        for r in records:
            log[(p, r["offset"])] = r["value"]
            where.setdefault(r["value"], []).append((p, r["offset"]))

    lost = [v for v, at in history.acked.items() if v not in where]
    inconsistent = [(v, at, log.get(at)) for v, at in history.acked.items() if v in where and log.get(at) != v]
    duplicates = {v: at for v, at in where.items() if len(at) > 1}
    phantoms = [v for v in where if v not in history.sent]
    # "A record a consumer has seen survives a crash": everything read before the kill is still there.
    vanished = [(at, v, log.get(at)) for at, v in (seen or {}).items() if log.get(at) != v]
    found_in_doubt = sum(1 for v in history.in_doubt if v in where)
    counts = dict(cycle=cycle, acked=len(history.acked), in_doubt=len(history.in_doubt), found_in_doubt=found_in_doubt,
                  found=len(where), lost=len(lost), inconsistent=len(inconsistent), duplicates=len(duplicates),
                  phantoms=len(phantoms), seen_by_consumer=len(seen or {}), log_end=ends, non_200=dict(history.failed_statuses))
    print(counts)
    assert not lost, f"cycle {cycle}: {len(lost)} lost writes, e.g. {[(v, history.acked[v]) for v in lost[:10]]}"
    assert not inconsistent, f"cycle {cycle}: {len(inconsistent)} inconsistent offsets (value, acked at, found): {inconsistent[:10]}"
    assert not duplicates, f"cycle {cycle}: {len(duplicates)} duplicates: {list(duplicates.items())[:10]}"
    assert not phantoms, f"cycle {cycle}: values that were never sent: {phantoms[:10]}"
    assert not vanished, f"cycle {cycle}: records a consumer read before the crash are gone or changed: {vanished[:10]}"

    # New appends continue at the log end, durable (acks=all) and readable.
    for p in range(PARTITIONS):
        v = f"probe-c{cycle}-p{p}"
        history.sent.add(v)
        r = broker.post(f"/v1/topics/{TOPIC}/records", data=v.encode(), headers={"Content-Type": "text/plain"}, params={"partition": p})
        assert r.status_code == 200, r.text
        placement = r.json()["offsets"][0]
        assert placement == {**placement, "partition": p, "offset": ends[p]}, f"append after restart went to {placement}, log end was {ends[p]}"
        history.acked[v] = (p, ends[p])
        got = broker.read(TOPIC, p, ends[p])
        assert [x["value"] for x in got["records"]] == [v], got
    return counts


def test_kill9_loses_no_acknowledged_write(make_broker):
    rng = random.Random(20261122)
    broker = make_broker()
    broker.create_topic(TOPIC, partitions=PARTITIONS)
    history = History()
    seen: dict = {}
    positions = {p: 0 for p in range(PARTITIONS)}
    problems: list = []
    acked_before = 0
    for cycle in range(CYCLES):
        stop = threading.Event()
        threads = [
            threading.Thread(target=producer, args=(broker.url, t, cycle, history, stop, random.Random(rng.random())), daemon=True)
            for t in range(THREADS)
        ]
        threads.append(threading.Thread(target=consumer, args=(broker.url, positions, seen, stop, problems), daemon=True))
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.0, 2.0))
        broker.kill9()  # mid-stream: no shutdown code runs
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a producer thread did not stop"
        assert len(history.acked) > acked_before, f"cycle {cycle}: no produce was acknowledged before the kill"
        assert not problems, problems
        broker.start()
        counts = check(broker, history, cycle, seen)
        assert counts["seen_by_consumer"] > 0, "the consumer read nothing"
        acked_before = len(history.acked)
    print(f"acked={len(history.acked)} in_doubt={len(history.in_doubt)} sent={len(history.sent)}")


def test_kill9_during_admin_churn_and_retention(make_broker):
    """Topics created, grown and deleted, and segments removed by retention, while the broker is
    killed: it must start again, every listed topic must be usable, every acknowledged create is
    there and every acknowledged delete stays deleted, and acked records of a stable topic survive."""
    broker = make_broker(["--retention-check-interval-ms", "50"])
    broker.create_topic("stable", partitions=1, configs={"segment.bytes": "1048576", "retention.bytes": "2097152"})
    rng = random.Random(7)
    for cycle in range(2):
        stop = threading.Event()
        created: set[str] = set()
        deleted: set[str] = set()
        delete_sent: set[str] = set()
        acked: dict[int, str] = {}

        def churn():
            s = requests.Session()
            i = 0
            while not stop.is_set():
                name = f"churn-{cycle}-{i}"
                i += 1
                try:
                    r = s.post(f"{broker.url}/v1/topics", json={"name": name, "partitions": 2}, timeout=5)
                    if r.status_code != 201:
                        continue
                    created.add(name)
                    s.post(f"{broker.url}/v1/topics/{name}/records", data=b"x", headers={"Content-Type": "text/plain"}, timeout=5)
                    if i % 2:
                        s.patch(f"{broker.url}/v1/topics/{name}", json={"partitions": 3}, timeout=5)
                    if i % 3:
                        delete_sent.add(name)
                        if s.delete(f"{broker.url}/v1/topics/{name}", timeout=5).status_code == 204:
                            deleted.add(name)
                except requests.RequestException:
                    time.sleep(0.05)

        def produce():
            s = requests.Session()
            n = 0
            while not stop.is_set():
                value = f"c{cycle}-{n}-" + "p" * 20000
                n += 1
                try:
                    r = s.post(f"{broker.url}/v1/topics/stable/records", data=value.encode(), headers={"Content-Type": "text/plain"}, timeout=5)
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    acked[r.json()["offsets"][0]["offset"]] = value

        threads = [threading.Thread(target=churn, daemon=True), threading.Thread(target=produce, daemon=True)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.0, 2.0))
        broker.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        broker.start()
        listed = {t["name"] for t in broker.get("/v1/topics").json()["topics"]}
        print(f"cycle {cycle}: created={len(created)} deleted={len(deleted)} listed={len(listed)} acked={len(acked)}")
        assert created, "no topic was created before the kill"
        assert created - delete_sent <= listed, f"acknowledged creates missing after restart: {sorted(created - delete_sent - listed)}"
        assert not (deleted & listed), f"acknowledged deletes came back: {sorted(deleted & listed)}"
        for name in listed:
            d = broker.get(f"/v1/topics/{name}")
            assert d.status_code == 200, d.text
            for p in d.json()["partitions"]:
                assert broker.get(f"/v1/topics/{name}/partitions/{p['partition']}/records").status_code == 200
        on_disk = set(os.listdir(os.path.join(broker.data_dir, "topics")))
        assert on_disk == listed, f"topic directories without a topic: {sorted(on_disk - listed)}; topics without files: {sorted(listed - on_disk)}"
        records, last = broker.read_all("stable", 0)
        start = last["log_start_offset"]
        have = {x["offset"]: x["value"] for x in records}
        assert [x["offset"] for x in records] == list(range(start, last["high_watermark"]))
        wrong = [o for o, v in acked.items() if o >= start and have.get(o) != v]
        assert not wrong, f"acknowledged records above the log start lost or changed: {wrong[:10]}"
        # Clean up this cycle's topics so the next cycle starts small.
        for name in listed - {"stable"}:
            assert broker.delete(f"/v1/topics/{name}").status_code == 204


def test_kill9_keeps_acks1_writes(make_broker):
    """acks=1 answers after the append to the page cache: a process crash (not a power cut) keeps
    those records too. (The record becomes visible to readers only once it is fsynced, which
    recovery does on start.)"""
    broker = make_broker()
    broker.create_topic(TOPIC, partitions=PARTITIONS)
    history = History()
    stop = threading.Event()
    threads = [threading.Thread(target=producer, args=(broker.url, t, 0, history, stop, random.Random(t), "1"), daemon=True)
               for t in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    broker.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert history.acked, "nothing acknowledged"
    broker.start()
    check(broker, history, 0)
