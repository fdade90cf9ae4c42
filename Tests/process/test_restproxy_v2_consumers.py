"""REST Proxy v2 consumer instances, as Confluent's and Strimzi's documented sessions drive them.

Each test follows a documented curl session step by step (create an instance, subscribe or assign,
fetch records with the Accept header of the instance's format, commit, read committed offsets, seek,
delete), asserting status codes, media types and bodies as the peers document them. Records are
produced through the native API so these tests depend only on the consumer side."""

from __future__ import annotations

import base64

from petrel_support import assert_error

V2 = "application/vnd.kafka.v2+json"
BINARY = "application/vnd.kafka.binary.v2+json"
JSON = "application/vnd.kafka.json.v2+json"
TEXT = "application/vnd.kafka.text.v2+json"


def records_until(b, path, accept, count, params=None, attempts=20):
    """Fetches until `count` records arrived (a fetch answers as soon as some are there)."""
    got = []
    for _ in range(attempts):
        r = b.get(path, headers={"Accept": accept}, params=params or {"timeout": 500})
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == accept
        got += r.json()
        if len(got) >= count:
            return got
    raise AssertionError(f"only {len(got)} of {count} records arrived: {got}")


def test_confluent_binary_consumer_session(broker):
    b = broker
    b.create_topic("binarytest")
    assert b.produce_json("binarytest", [{"value": "Kafka"}]).status_code == 200
    # Create a consumer for binary data, starting at the beginning of the topic's log.
    r = b.post("/consumers/my_binary_consumer", headers={"Content-Type": V2},
               data='{"name": "my_consumer_instance", "format": "binary", "auto.offset.reset": "earliest"}')
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == V2
    created = r.json()
    assert created["instance_id"] == "my_consumer_instance"
    assert created["base_uri"].startswith("http://") and created["base_uri"].endswith("/consumers/my_binary_consumer/instances/my_consumer_instance")
    base = "/consumers/my_binary_consumer/instances/my_consumer_instance"
    r = b.post(base + "/subscription", headers={"Content-Type": V2}, data='{"topics":["binarytest"]}')
    assert r.status_code == 204, r.text
    assert b.get(base + "/subscription", headers={"Content-Type": V2}).json() == {"topics": ["binarytest"]}
    got = records_until(b, base + "/records", BINARY, 1)
    assert got[0]["topic"] == "binarytest" and got[0]["partition"] == 0 and got[0]["offset"] == 0
    assert base64.b64decode(got[0]["value"]) == b"Kafka" and got[0]["key"] is None
    # Confluent: the committed offset is the last one consumed; reading it back gives offset + 1.
    r = b.post(base + "/offsets", headers={"Content-Type": V2}, data='{"offsets":[{"topic":"binarytest","partition":0,"offset":0}]}')
    assert r.status_code == 200 and r.json() == []
    r = b.get(base + "/offsets", headers={"Content-Type": V2}, data='{"partitions":[{"topic":"binarytest","partition":0}]}')
    assert r.status_code == 200
    assert r.json()["offsets"] == [{"topic": "binarytest", "partition": 0, "offset": 1, "metadata": ""}]
    # Finally, close the consumer with a DELETE.
    r = b.delete(base, headers={"Content-Type": V2})
    assert r.status_code == 204
    e = assert_error(b.delete(base, headers={"Content-Type": V2}), 404)
    assert e["error_code"] == 40403


def test_confluent_json_consumer_session_and_accept_mismatch(broker):
    b = broker
    b.create_topic("jsontest")
    b.produce_json("jsontest", [{"value": {"foo": "bar"}}, {"value": [1, 2]}])
    r = b.post("/consumers/my_json_consumer", headers={"Content-Type": V2},
               data='{"name": "my_consumer_instance", "format": "json", "auto.offset.reset": "earliest"}')
    assert r.status_code == 200, r.text
    base = "/consumers/my_json_consumer/instances/my_consumer_instance"
    assert b.post(base + "/subscription", headers={"Content-Type": V2}, data='{"topics":["jsontest"]}').status_code == 204
    # Accept must match the instance's format.
    e = assert_error(b.get(base + "/records", headers={"Accept": BINARY}), 406)
    assert e["error_code"] == 40601
    got = records_until(b, base + "/records", JSON, 2)
    assert [g["value"] for g in got] == [{"foo": "bar"}, [1, 2]]
    # An empty commit stores everything delivered.
    assert b.post(base + "/offsets", headers={"Content-Type": V2}).status_code == 200
    r = b.get(base + "/offsets", headers={"Content-Type": V2}, data='{"partitions":[{"topic":"jsontest","partition":0}]}')
    assert r.json()["offsets"][0]["offset"] == 2
    # A second instance with the same name is refused.
    e = assert_error(b.post("/consumers/my_json_consumer", headers={"Content-Type": V2}, data='{"name": "my_consumer_instance", "format": "json"}'), 409)
    assert e["error_code"] == 40902
    assert b.delete(base).status_code == 204


def test_strimzi_text_consumer_assign_seek_commit(broker):
    b = broker
    b.create_topic("strimzi", partitions=2)
    b.produce_json("strimzi", [{"value": "a", "partition": 0}, {"value": "b", "partition": 0}, {"value": "c", "partition": 1}])
    r = b.post("/consumers/bridge-group", headers={"Content-Type": V2},
               json={"name": "c1", "format": "text", "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "fetch.min.bytes": 1, "consumer.request.timeout.ms": 500})
    assert r.status_code == 200, r.text
    base = "/consumers/bridge-group/instances/c1"
    r = b.post(base + "/assignments", headers={"Content-Type": V2}, json={"partitions": [{"topic": "strimzi", "partition": 0}]})
    assert r.status_code == 204
    assert b.get(base + "/assignments").json() == {"partitions": [{"topic": "strimzi", "partition": 0}]}
    # Subscription and assignment are mutually exclusive (40903).
    e = assert_error(b.post(base + "/subscription", headers={"Content-Type": V2}, json={"topics": ["strimzi"]}), 409)
    assert e["error_code"] == 40903
    got = records_until(b, base + "/records", TEXT, 2)
    assert [(g["partition"], g["offset"], g["value"]) for g in got] == [(0, 0, "a"), (0, 1, "b")]
    assert "timestamp" in got[0] and got[0]["headers"] == []
    # Strimzi stores the offset as given and answers 204.
    r = b.post(base + "/offsets", headers={"Content-Type": V2}, json={"offsets": [{"topic": "strimzi", "partition": 0, "offset": 1}]})
    assert r.status_code == 204
    r = b.get(base + "/offsets", headers={"Content-Type": V2}, json={"partitions": [{"topic": "strimzi", "partition": 0}, {"topic": "strimzi", "partition": 1}]})
    assert [o["offset"] for o in r.json()["offsets"]] == [1, -1]
    # Seek back to the beginning and read again; then to an explicit offset.
    assert b.post(base + "/positions/beginning", headers={"Content-Type": V2}, json={"partitions": [{"topic": "strimzi", "partition": 0}]}).status_code == 204
    assert [g["value"] for g in records_until(b, base + "/records", TEXT, 2)] == ["a", "b"]
    assert b.post(base + "/positions", headers={"Content-Type": V2}, json={"offsets": [{"topic": "strimzi", "partition": 0, "offset": 1}]}).status_code == 204
    assert [g["value"] for g in records_until(b, base + "/records", TEXT, 1)] == ["b"]
    assert b.post(base + "/positions/end", headers={"Content-Type": V2}, json={"partitions": [{"topic": "strimzi", "partition": 0}]}).status_code == 204
    r = b.get(base + "/records", headers={"Accept": TEXT}, params={"timeout": 200})
    assert r.status_code == 200 and r.json() == []
    # Seeking a partition the instance does not hold is refused.
    e = assert_error(b.post(base + "/positions", headers={"Content-Type": V2}, json={"offsets": [{"topic": "strimzi", "partition": 1, "offset": 0}]}), 409)
    assert e["error_code"] == 40903
    assert b.delete(base).status_code == 204


def test_two_instances_share_a_subscription_and_the_group_shows_them(broker):
    b = broker
    b.create_topic("shared", partitions=4)
    b.produce_json("shared", [{"value": f"v{i}", "partition": i % 4} for i in range(8)])
    for name in ("i1", "i2"):
        r = b.post("/consumers/sharing", headers={"Content-Type": V2}, json={"name": name, "format": "text", "auto.offset.reset": "earliest"})
        assert r.status_code == 200, r.text
        assert b.post(f"/consumers/sharing/instances/{name}/subscription", headers={"Content-Type": V2}, json={"topics": ["shared"]}).status_code == 204
    a1 = b.get("/consumers/sharing/instances/i1/assignments").json()["partitions"]
    a2 = b.get("/consumers/sharing/instances/i2/assignments").json()["partitions"]
    assert len(a1) == 2 and len(a2) == 2 and not {(p["topic"], p["partition"]) for p in a1} & {(p["topic"], p["partition"]) for p in a2}
    seen = records_until(b, "/consumers/sharing/instances/i1/records", TEXT, 4) + records_until(b, "/consumers/sharing/instances/i2/records", TEXT, 4)
    assert sorted(g["value"] for g in seen) == sorted(f"v{i}" for i in range(8))
    group = b.get("/v1/groups/sharing").json()
    assert sorted(m["member_id"] for m in group["members"]) == ["i1", "i2"]
    # Deleting one instance gives the other every partition.
    assert b.delete("/consumers/sharing/instances/i1").status_code == 204
    assert len(b.get("/consumers/sharing/instances/i2/assignments").json()["partitions"]) == 4


def test_v2_consumer_bad_input(broker):
    b = broker
    b.create_topic("bad")
    for body, status, code in [
        ('{"format": "avro"}', 422, None),
        ('{"format": "xml"}', 422, None),
        ('{"name": "../x"}', 400, 40001),
        ('{"auto.offset.reset": "sometimes"}', 422, None),
        ('not json', 400, 40001),
        ('[1,2]', 400, 40001),
    ]:
        e = assert_error(b.post("/consumers/g", headers={"Content-Type": V2}, data=body), status)
        if code:
            assert e["error_code"] == code, body
    e = assert_error(b.post("/consumers/g", headers={"Content-Type": "text/xml"}, data="{}"), 415)
    assert b.post("/consumers/g", headers={"Content-Type": V2}, json={"name": "ok"}).status_code == 200
    base = "/consumers/g/instances/ok"
    assert assert_error(b.post(base + "/subscription", headers={"Content-Type": V2}, json={"topics": []}), 400)
    assert assert_error(b.post(base + "/subscription", headers={"Content-Type": V2}, json={"topic_pattern": "("}), 422)
    assert assert_error(b.post(base + "/assignments", headers={"Content-Type": V2}, json={"partitions": [{"topic": "bad"}]}), 400)
    assert assert_error(b.post(base + "/offsets", headers={"Content-Type": V2}, json={"offsets": [{"topic": "bad", "partition": 0, "offset": -5}]}), 400)
    assert assert_error(b.get("/consumers/g/instances/nobody/records", headers={"Accept": BINARY}), 404)["error_code"] == 40403
    assert b.get("/healthz").status_code == 200
