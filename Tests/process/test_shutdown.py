"""SIGTERM is an orderly shutdown: parked long-polls get an ordinary 200 answer, producers that
got 200 (acks=all) find their records after a restart, and the process exits 0 promptly."""

from __future__ import annotations

import threading
import time

import requests

TOPIC = "sd"
READERS = 20


def test_sigterm_answers_parked_reads_and_keeps_acked_writes(broker):
    broker.create_topic(TOPIC, partitions=2)
    reads: list = [None] * READERS

    def reader(i):
        try:
            reads[i] = broker.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": "latest", "wait_ms": 30000}, timeout=60)
        except Exception as e:
            reads[i] = e

    readers = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
    for t in readers:
        t.start()
    assert broker.wait_parked(READERS, timeout=20), "the long-polls did not all park"

    # Producers write to partition 1 only, so the readers parked on partition 0 stay parked until shutdown.
    acked: dict[str, int] = {}
    in_doubt: list[str] = []
    statuses: dict = {}
    stop = threading.Event()

    def producer(k):
        session = requests.Session()
        n = 0
        while not stop.is_set():
            values = [f"p{k}-{n}-{i}" for i in range(1 + n % 3)]
            n += 1
            try:
                r = session.post(f"{broker.url}/v1/topics/{TOPIC}/records", json={"records": [{"value": v, "partition": 1} for v in values]}, timeout=15)
            except requests.RequestException as e:
                in_doubt.extend(values)
                statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
                time.sleep(0.02)
                continue
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200:
                for v, p in zip(values, r.json()["offsets"]):
                    acked[v] = p["offset"]
            else:
                in_doubt.extend(values)
        session.close()

    producers = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(2)]
    for t in producers:
        t.start()
    time.sleep(0.7)
    acked_before_term = len(acked)
    t0 = time.monotonic()
    code = broker.terminate(timeout=30)
    exit_seconds = time.monotonic() - t0
    stop.set()
    for t in producers + readers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in producers + readers)
    print(f"exit={code} after {exit_seconds:.2f}s acked={len(acked)} (before SIGTERM {acked_before_term}) in_doubt={len(in_doubt)} statuses={statuses}")
    assert code == 0, broker.log_tail()
    assert exit_seconds < 10, f"shutdown took {exit_seconds:.1f}s"
    assert acked_before_term > 0, "nothing was acknowledged before SIGTERM"

    for i, r in enumerate(reads):
        assert not isinstance(r, Exception), f"parked read {i} got no answer: {r!r}"
        assert r.status_code == 200, f"parked read {i}: {r.status_code} {r.text}"
        body = r.json()
        assert isinstance(body.get("records"), list) and body["records"] == [], f"parked read {i}: {body}"

    broker.start()
    records, last = broker.read_all(TOPIC, 1)
    by_offset = {x["offset"]: x["value"] for x in records}
    missing = [(v, o, by_offset.get(o)) for v, o in acked.items() if by_offset.get(o) != v]
    assert not missing, f"{len(missing)} acknowledged records lost or moved after SIGTERM: {missing[:10]}"
    assert [x["offset"] for x in records] == list(range(last["high_watermark"])), "offsets not contiguous"
    values = [x["value"] for x in records]
    assert len(values) == len(set(values)), "a record appears twice"
    o = broker.offsets(TOPIC, 1)
    assert o["high_watermark"] == o["log_end_offset"], f"an orderly shutdown leaves every appended record durable: {o}"
    assert broker.offsets(TOPIC, 0)["log_end_offset"] == 0


def test_sigterm_on_idle_broker_exits_zero(broker):
    broker.create_topic(TOPIC, partitions=1)
    assert broker.terminate(timeout=30) == 0, broker.log_tail()
    broker.start()
    assert broker.get(f"/v1/topics/{TOPIC}").status_code == 200
