"""Long-poll reads: a parked read is answered by the next committed record (not by its deadline),
an unanswered wait ends with an empty list, and one produce answers many parked readers."""

from __future__ import annotations

import threading
import time

TOPIC = "lp"


def _produce(b, value: str, partition: int = 0) -> int:
    r = b.post(f"/v1/topics/{TOPIC}/records", data=value.encode(), headers={"Content-Type": "text/plain"}, params={"partition": partition})
    assert r.status_code == 200, r.text
    return r.json()["offsets"][0]["offset"]


def test_parked_read_returns_soon_after_produce(broker):
    broker.create_topic(TOPIC, partitions=2)
    _produce(broker, "old")
    result = {}

    def reader():
        t0 = time.monotonic()
        r = broker.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": "latest", "wait_ms": 5000}, timeout=30)
        result["elapsed_total"] = time.monotonic() - t0
        result["done"] = time.monotonic()
        result["response"] = r

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert broker.wait_parked(1), "the read never parked"
    produced_at = time.monotonic()
    offset = _produce(broker, "new")
    t.join(timeout=30)
    assert not t.is_alive()
    r = result["response"]
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(x["offset"], x["value"]) for x in body["records"]] == [(offset, "new")], body
    assert body["next_offset"] == offset + 1
    # Generous bound: it must be the produce that answered, not the 5 s deadline.
    assert result["done"] - produced_at < 4.0, f"answered {result['done'] - produced_at:.2f}s after the produce"


def test_parked_read_at_exact_offset_and_other_partition_does_not_wake_it(broker):
    broker.create_topic(TOPIC, partitions=2)
    result = {}

    def reader():
        result["response"] = broker.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": 0, "wait_ms": 5000}, timeout=30)
        result["done"] = time.monotonic()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert broker.wait_parked(1)
    _produce(broker, "elsewhere", partition=1)
    time.sleep(0.3)
    assert t.is_alive(), f"a record on partition 1 answered a read parked on partition 0: {result}"
    produced_at = time.monotonic()
    _produce(broker, "here", partition=0)
    t.join(timeout=30)
    body = result["response"].json()
    assert [(x["offset"], x["value"]) for x in body["records"]] == [(0, "here")], body
    assert result["done"] - produced_at < 4.0


def test_wait_without_data_returns_empty(broker):
    broker.create_topic(TOPIC, partitions=1)
    _produce(broker, "a")
    _produce(broker, "b")
    t0 = time.monotonic()
    r = broker.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": "latest", "wait_ms": 300})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["records"] == [] and body["next_offset"] == 2 and body["high_watermark"] == 2, body
    assert elapsed >= 0.25, f"a 300 ms wait answered after {elapsed:.3f}s"
    # Same with an exact offset at the end.
    r = broker.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": 2, "wait_ms": 300})
    assert r.status_code == 200 and r.json()["records"] == [] and r.json()["next_offset"] == 2, r.text
    assert broker.metric("petrel_parked_requests") == 0


def test_fifty_parked_reads_answered_by_one_produce(broker):
    broker.create_topic(TOPIC, partitions=1)
    n = 50
    results: list = [None] * n

    def reader(i):
        try:
            results[i] = broker.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": 0, "wait_ms": 20000}, timeout=40)
        except Exception as e:  # recorded and asserted below
            results[i] = e

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    assert broker.wait_parked(n, timeout=20), f"only {broker.metric('petrel_parked_requests')} of {n} reads parked"
    produced_at = time.monotonic()
    _produce(broker, "wake")
    for t in threads:
        t.join(timeout=40)
    done_at = time.monotonic()
    assert not any(t.is_alive() for t in threads)
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), f"reader {i}: {r!r}"
        assert r.status_code == 200, f"reader {i}: {r.status_code} {r.text}"
        assert [x["value"] for x in r.json()["records"]] == ["wake"], f"reader {i}: {r.text}"
    assert done_at - produced_at < 15, f"the 50 readers took {done_at - produced_at:.1f}s after the produce (wait was 20 s)"
    assert broker.metric("petrel_parked_requests") == 0
