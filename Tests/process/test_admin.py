"""Topic administration over HTTP: create/describe/list/alter/delete, restart survival, Kafka's
key partitioner, timestamp lookup and size-based retention."""

from __future__ import annotations

import os
import threading
import time

import pytest

from petrel_support import assert_error


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (seed 0x9747b28c), as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length - length % 4
    rest = length % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_murmur2_matches_kafka_reference_values():
    # Values from Kafka's UtilsTest.testMurmur2.
    cases = {
        b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        bytes([ord("a"), ord("b"), ord("c")]): 479470107,
    }
    for key, expected in cases.items():
        assert murmur2(key) == expected, key


def topic_dirs(data_dir: str, name: str) -> list[str]:
    return [os.path.join(dp, d) for dp, dns, _ in os.walk(data_dir) for d in dns if d == name]


def test_topic_lifecycle(broker):
    name = "lifecycle-topic"
    r = broker.post("/v1/topics", json={"name": name, "partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "3600000"}})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == name and len(created["partitions"]) == 2
    assert created["configs"]["retention.ms"] == "3600000"
    assert r.headers.get("Location") == f"/v1/topics/{name}"

    d = broker.get(f"/v1/topics/{name}").json()
    assert [p["partition"] for p in d["partitions"]] == [0, 1]
    assert d["replication_factor"] == 1
    for p in d["partitions"]:
        assert p["leader"] == 1 and p["replicas"] == [1] and p["in_sync_replicas"] == [1]
        assert p["log_start_offset"] == p["high_watermark"] == p["log_end_offset"] == 0
    assert set(d["configs"]) == {"cleanup.policy", "max.message.bytes", "retention.bytes", "retention.ms", "segment.bytes", "segment.ms"}
    assert broker.get(f"/v1/topics/{name}/partitions/1").json()["partition"] == 1

    listed = broker.get("/v1/topics").json()["topics"]
    assert {"name": name, "partitions": 2} in listed

    # Produce something so the data has to go with the topic.
    for i in range(5):
        assert broker.post(f"/v1/topics/{name}/records", data=f"v{i}", headers={"Content-Type": "text/plain"}, params={"partition": i % 2}).status_code == 200

    # Alter configs; grow.
    r = broker.patch(f"/v1/topics/{name}", json={"configs": {"retention.bytes": "10485760"}, "partitions": 4})
    assert r.status_code == 200, r.text
    d = broker.get(f"/v1/topics/{name}").json()
    assert d["configs"]["retention.bytes"] == "10485760" and d["configs"]["retention.ms"] == "3600000"
    assert len(d["partitions"]) == 4
    assert {"name": name, "partitions": 4} in broker.get("/v1/topics").json()["topics"]
    r = broker.post(f"/v1/topics/{name}/records", data="new", headers={"Content-Type": "text/plain"}, params={"partition": 3})
    assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == 0, r.text
    # Shrinking is refused and changes nothing.
    assert_error(broker.patch(f"/v1/topics/{name}", json={"partitions": 2}), 422)
    assert len(broker.get(f"/v1/topics/{name}").json()["partitions"]) == 4
    # Growing by zero is a no-op.
    assert broker.patch(f"/v1/topics/{name}", json={"partitions": 4}).status_code == 200

    assert topic_dirs(broker.data_dir, name), "the topic has no directory in the data dir"
    r = broker.delete(f"/v1/topics/{name}")
    assert r.status_code == 204 and r.content == b"", r.text
    assert_error(broker.get(f"/v1/topics/{name}"), 404)
    assert_error(broker.get(f"/v1/topics/{name}/partitions/0/records"), 404)
    assert name not in {t["name"] for t in broker.get("/v1/topics").json()["topics"]}
    assert topic_dirs(broker.data_dir, name) == [], "the deleted topic's directory is still in the data dir"
    assert_error(broker.delete(f"/v1/topics/{name}"), 404)

    # Re-create: a new, empty log.
    broker.create_topic(name, partitions=1)
    r = broker.post(f"/v1/topics/{name}/records", data="again", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == 0, r.text
    assert [x["value"] for x in broker.read(name, 0)["records"]] == ["again"]


def test_topics_and_data_survive_restart(broker):
    broker.create_topic("keep-a", partitions=3, configs={"retention.ms": "-1", "segment.bytes": "1048576"})
    broker.create_topic("keep-b", partitions=1)
    broker.create_topic("gone", partitions=1)
    assert broker.delete("/v1/topics/gone").status_code == 204
    for i in range(30):
        assert broker.produce_json("keep-a", [{"value": f"a{i}", "partition": i % 3, "key": f"k{i}", "headers": {"n": str(i)}}]).status_code == 200
    assert broker.produce_json("keep-b", [{"value": "b0"}, {"value": None, "key": "tomb"}]).status_code == 200
    cluster_id = broker.get("/v1/cluster").json()["cluster_id"]
    before = {t: broker.get(f"/v1/topics/{t}").json() for t in ("keep-a", "keep-b")}
    reads_before = {(t, p): broker.read(t, p)["records"] for t, n in (("keep-a", 3), ("keep-b", 1)) for p in range(n)}

    assert broker.terminate() == 0
    broker.start()

    assert broker.get("/v1/cluster").json()["cluster_id"] == cluster_id
    assert sorted(t["name"] for t in broker.get("/v1/topics").json()["topics"]) == ["keep-a", "keep-b"]
    for t, d in before.items():
        after = broker.get(f"/v1/topics/{t}").json()
        assert after["configs"] == d["configs"], t
        assert [(p["log_start_offset"], p["high_watermark"], p["log_end_offset"]) for p in after["partitions"]] == \
            [(p["log_start_offset"], p["high_watermark"], p["log_end_offset"]) for p in d["partitions"]], t
    for (t, p), records in reads_before.items():
        assert broker.read(t, p)["records"] == records, (t, p)
    assert broker.read("keep-b", 0)["records"][1]["value"] is None
    # Appends continue after the recovered end.
    r = broker.produce_json("keep-a", [{"value": "after", "partition": 0}])
    assert r.json()["offsets"][0]["offset"] == 10


def test_keyed_records_use_kafka_partitioner(broker):
    partitions = 6
    broker.create_topic("keyed", partitions=partitions)
    keys = [f"key-{i}" for i in range(45)] + ["", "a", "ab", "abc", "ünïcode-ключ"]
    assert len(keys) == 50
    for k in keys:
        expected = kafka_partition(k.encode(), partitions)
        r = broker.post("/v1/topics/keyed/records", data=b"v", headers={"Content-Type": "text/plain"}, params={"key": k})
        assert r.status_code == 200, r.text
        assert r.json()["offsets"][0]["partition"] == expected, f"key {k!r}: got {r.json()}, Kafka picks {expected}"
        r = broker.produce_json("keyed", [{"key": k, "value": "w"}])
        assert r.json()["offsets"][0]["partition"] == expected, f"key {k!r} (JSON): {r.json()}"
    # The Petrel-Key header does the same.
    r = broker.post("/v1/topics/keyed/records", data=b"v", headers={"Content-Type": "text/plain", "Petrel-Key": "order-17"})
    assert r.json()["offsets"][0]["partition"] == kafka_partition(b"order-17", partitions)
    # The partitions really hold the records.
    total = sum(len(broker.read_all("keyed", p)[0]) for p in range(partitions))
    assert total == 2 * len(keys) + 1


def _lookup(broker, topic, ts):
    r = broker.get(f"/v1/topics/{topic}/partitions/0/offsets", params={"timestamp": ts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timestamp"] == ts and body["partition"] == 0, body
    return body["offset"]


def test_timestamp_lookup(broker):
    broker.create_topic("ts", partitions=1)
    for t in (1000, 2000, 3000, 4000):  # one batch per record
        r = broker.produce_json("ts", [{"value": f"v{t}", "timestamp": t}])
        assert r.status_code == 200 and r.json()["offsets"][0]["timestamp"] == t, r.text
    expected = {0: 0, 1000: 0, 1500: 1, 2000: 1, 3000: 2, 3999: 3, 4000: 3, 4001: None}
    assert {ts: _lookup(broker, "ts", ts) for ts in expected} == expected
    records = broker.read("ts", 0)["records"]
    assert [x["timestamp"] for x in records] == [1000, 2000, 3000, 4000]
    o = broker.offsets("ts", 0)
    assert (o["log_start_offset"], o["high_watermark"], o["log_end_offset"]) == (0, 4, 4)
    assert_error(broker.get("/v1/topics/ts/partitions/0/offsets", params={"timestamp": "x"}), 400)


def test_timestamp_lookup_inside_one_batch(broker):
    broker.create_topic("ts1", partitions=1)
    r = broker.produce_json("ts1", [{"value": f"v{t}", "timestamp": t} for t in (1000, 2000, 3000, 4000)])
    assert r.status_code == 200
    assert [p["timestamp"] for p in r.json()["offsets"]] == [1000, 2000, 3000, 4000]
    expected = {0: 0, 1000: 0, 1500: 1, 2000: 1, 3000: 2, 3999: 3, 4000: 3, 4001: None}
    assert {ts: _lookup(broker, "ts1", ts) for ts in expected} == expected


def test_deleting_a_topic_answers_its_parked_reads(broker):
    broker.create_topic("doomed", partitions=1)
    result = {}

    def reader():
        result["r"] = broker.get("/v1/topics/doomed/partitions/0/records", params={"offset": "latest", "wait_ms": 20000}, timeout=40)
        result["t"] = time.monotonic()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert broker.wait_parked(1)
    t0 = time.monotonic()
    assert broker.delete("/v1/topics/doomed").status_code == 204
    t.join(timeout=40)
    assert not t.is_alive()
    assert_error(result["r"], 404)
    assert result["t"] - t0 < 10, "the parked read waited for its deadline instead of being answered by the delete"
    assert broker.metric("petrel_parked_requests") == 0


def test_size_retention_moves_log_start(make_broker):
    broker = make_broker(["--retention-check-interval-ms", "200"])
    broker.create_topic("ret", partitions=1, configs={"segment.bytes": "1048576", "retention.bytes": "1048576"})
    record_bytes = 10_000
    per_request = 50
    total = 0
    n = 0
    while total < 5 * 1024 * 1024:
        records = [{"value": f"{n + i:08d}:" + "x" * record_bytes, "partition": 0} for i in range(per_request)]
        r = broker.produce_json("ret", records, acks="1")
        assert r.status_code == 200, r.text[:300]
        n += per_request
        total += per_request * record_bytes
    # Retention may already have run during the produce; poll until a pass after the last produce
    # brought the log down to about the limit (whole segments go: at most the limit plus one
    # sealed segment plus the active one stay).
    def kept(o):
        return (n - o["log_start_offset"]) * record_bytes

    deadline = time.monotonic() + 10
    o = broker.offsets("ret", 0)
    while kept(o) > 3 * 1024 * 1024 and time.monotonic() < deadline:
        time.sleep(0.2)
        o = broker.offsets("ret", 0)
    assert o["log_start_offset"] > 0, f"retention did not run within 10 s: {o}"
    assert kept(o) <= 3 * 1024 * 1024, f"retention left {kept(o)} bytes after 10 s: {o}"
    assert o["log_end_offset"] == n
    page = broker.read("ret", 0, "earliest", max_records=3)
    start = page["log_start_offset"]
    assert start >= o["log_start_offset"]
    assert [x["offset"] for x in page["records"]] == [start, start + 1, start + 2]
    assert [x["value"][:8] for x in page["records"]] == [f"{start:08d}", f"{start + 1:08d}", f"{start + 2:08d}"]
    assert_error(broker.get("/v1/topics/ret/partitions/0/records", params={"offset": 0}), 416)
    d = broker.get("/v1/topics/ret").json()["partitions"][0]
    assert d["log_start_offset"] == start and d["size_bytes"] < 4 * 1024 * 1024, d


def _fill(broker, topic, megabytes, timestamp=None):
    n = 0
    record_bytes = 10_000
    while n * record_bytes < megabytes * 1024 * 1024:
        records = [{"value": f"{n + i:08d}:" + "x" * record_bytes, "partition": 0, **({"timestamp": timestamp} if timestamp else {})}
                   for i in range(50)]
        r = broker.produce_json(topic, records, acks="1")
        assert r.status_code == 200, r.text[:300]
        n += 50
    return n


def _wait_log_start(broker, topic, timeout=10):
    deadline = time.monotonic() + timeout
    o = broker.offsets(topic, 0)
    while o["log_start_offset"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
        o = broker.offsets(topic, 0)
    return o


def test_time_retention_deletes_old_segments(make_broker):
    broker = make_broker(["--retention-check-interval-ms", "200"])
    broker.create_topic("old", partitions=1, configs={"segment.bytes": "1048576", "retention.ms": "3600000"})
    n = _fill(broker, "old", 3, timestamp=1000)  # records from 1970: every sealed segment is past retention
    o = _wait_log_start(broker, "old")
    assert o["log_start_offset"] > 0, f"time retention did not run within 10 s: {o}"
    assert o["log_end_offset"] == n
    page = broker.read("old", 0, "earliest", max_records=1)
    # Another retention pass may have run since (the first one can land mid-fill): the start only moves forward.
    assert page["records"][0]["offset"] == page["log_start_offset"] >= o["log_start_offset"]
    # retention.ms = -1 keeps everything: a second topic with old records is untouched.
    broker.create_topic("forever", partitions=1, configs={"segment.bytes": "1048576", "retention.ms": "-1"})
    _fill(broker, "forever", 3, timestamp=1000)
    time.sleep(1.0)  # several retention passes
    assert broker.offsets("forever", 0)["log_start_offset"] == 0


def test_altered_retention_applies_to_the_live_log(make_broker):
    broker = make_broker(["--retention-check-interval-ms", "200"])
    broker.create_topic("later", partitions=1, configs={"segment.bytes": "1048576"})
    n = _fill(broker, "later", 4)
    time.sleep(0.6)
    assert broker.offsets("later", 0)["log_start_offset"] == 0, "retention ran without a limit"
    r = broker.patch("/v1/topics/later", json={"configs": {"retention.bytes": "1048576"}})
    assert r.status_code == 200 and r.json()["configs"]["retention.bytes"] == "1048576", r.text
    o = _wait_log_start(broker, "later")
    assert o["log_start_offset"] > 0 and o["log_end_offset"] == n, f"the new retention.bytes was not applied: {o}"
    # And it is still the config after a restart.
    assert broker.terminate() == 0
    broker.start()
    assert broker.get("/v1/topics/later").json()["configs"]["retention.bytes"] == "1048576"
    assert broker.offsets("later", 0)["log_start_offset"] >= o["log_start_offset"]


def test_explicit_partition_beats_the_key(broker):
    broker.create_topic("both", partitions=6)
    key = "order-17"
    other = (kafka_partition(key.encode(), 6) + 1) % 6
    r = broker.produce_json("both", [{"key": key, "value": "v", "partition": other}])
    assert r.json()["offsets"][0]["partition"] == other
    r = broker.post("/v1/topics/both/records", data=b"v", headers={"Content-Type": "text/plain"}, params={"key": key, "partition": other})
    assert r.json()["offsets"][0]["partition"] == other


def test_delete_racing_a_recreate_keeps_the_new_topic(broker):
    import requests

    partitions = 50  # more partitions = a longer delete, so the race is hit within a few rounds
    broker.create_topic("phoenix", partitions=partitions)
    problem = None
    for round_ in range(30):
        created = threading.Event()
        odd: list = []

        def recreate():
            with requests.Session() as s:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    r = s.post(f"{broker.url}/v1/topics", json={"name": "phoenix", "partitions": partitions}, timeout=30)
                    if r.status_code == 201:
                        created.set()
                        return
                    if r.status_code != 409:
                        odd.append(f"{r.status_code} {r.text[:300]}")

        t = threading.Thread(target=recreate, daemon=True)
        t.start()
        time.sleep(0.002)
        assert broker.delete("/v1/topics/phoenix").status_code == 204
        t.join(timeout=60)
        if odd:
            problem = f"round {round_}: a create of the name being deleted failed with {odd[0]}"
            break
        assert created.is_set(), "the re-create never succeeded"
        r = broker.post("/v1/topics/phoenix/records", data=f"round-{round_}".encode(), headers={"Content-Type": "text/plain"}, params={"partition": 0})
        assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == 0, r.text
        missing = [p for p in range(partitions) if not os.path.isdir(os.path.join(broker.data_dir, "topics", "phoenix", str(p)))]
        if missing:
            problem = f"round {round_}: the re-created topic's directories {missing[:5]}... are gone while it is live"
            break
    assert problem is None, problem
    broker.kill9()
    broker.start()
    got = [x["value"] for x in broker.read("phoenix", 0)["records"]]
    assert got == [f"round-{round_}"], f"{problem}; after a restart partition 0 holds {got} (acked: round-{round_})"
