"""The Kafka REST Proxy v2 dialect against a real `petrel serve`: Confluent's documented curl examples
step by step (produce binary and JSON, topic metadata, partitions, offsets, brokers), the Strimzi
bridge's variants (text format, headers, timestamps, async, POST /admin/topics, also on a 3-node
cluster), and bad input, each answer checked for status, error_code and the v2 media type.

Consumer instances (/consumers/...) are not served yet; nothing here touches them."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from cluster_support import wait_until

V2 = "application/vnd.kafka.v2+json"
BINARY = "application/vnd.kafka.binary.v2+json"
JSON = "application/vnd.kafka.json.v2+json"
TEXT = "application/vnd.kafka.text.v2+json"
# What Confluent's docs send as Accept on every example.
ACCEPT = {"Accept": "application/vnd.kafka.v2+json, application/vnd.kafka+json, application/json"}


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def v2_ok(r, status: int = 200):
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    if status != 204:
        assert r.headers.get("Content-Type") == V2, r.headers
        return r.json()
    assert r.content == b"", r.content
    return None


def v2_error(r, status: int, code: int, contains: str | None = None) -> dict:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    assert r.headers.get("Content-Type") == V2, r.headers
    body = r.json()
    assert body.get("error_code") == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    if contains:
        assert contains in body["message"], body
    return body


def produce(b, path: str, content_type: str, body, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return b.post(path, data=data, headers={"Content-Type": content_type, **ACCEPT}, **kw)


def read_v1(b, topic: str, partition: int, fmt: str = "text") -> list[dict]:
    return b.read(topic, partition, "earliest", format=fmt)["records"]


def admin_create(b, name: str, partitions: int | None = None, replication_factor: int | None = None):
    body: dict = {"topic_name": name}
    if partitions is not None:
        body["partitions_count"] = partitions
    if replication_factor is not None:
        body["replication_factor"] = replication_factor
    return b.post("/admin/topics", data=json.dumps(body), headers={"Content-Type": V2})


@pytest.fixture(scope="module")
def b(module_broker):
    return module_broker


# -- Confluent's documented examples ----------------------------------------------------------------

def test_root_and_brokers(b):
    assert v2_ok(b.get("/")) == {}
    assert v2_ok(b.get("/brokers")) == {"brokers": [1]}


def test_confluent_binary_produce_then_metadata(b):
    b.create_topic("test", partitions=2)
    # "Produce a message using binary embedded data with value "Kafka" to the topic test"
    out = v2_ok(produce(b, "/topics/test", BINARY, {"records": [{"value": "S2Fma2E="}]}))
    assert out["key_schema_id"] is None and out["value_schema_id"] is None
    assert len(out["offsets"]) == 1
    first = out["offsets"][0]
    assert first["offset"] == 0 and first["partition"] in (0, 1) and first["error_code"] is None and first["error"] is None

    # The API reference's topic produce: a keyed record, one to partition 1, one spread.
    out = v2_ok(produce(b, "/topics/test", BINARY, {"records": [
        {"key": "a2V5", "value": "Y29uZmx1ZW50"}, {"value": "a2Fma2E=", "partition": 1}, {"value": "bG9ncw=="}]}))
    assert [o["error_code"] for o in out["offsets"]] == [None, None, None]
    assert out["offsets"][1]["partition"] == 1

    # ... and the partition produce.
    out = v2_ok(produce(b, "/topics/test/partitions/1", BINARY, {"records": [
        {"key": "a2V5", "value": "Y29uZmx1ZW50"}, {"value": "a2Fma2E="}]}))
    assert [o["partition"] for o in out["offsets"]] == [1, 1]
    last = out["offsets"][1]["offset"]

    # The bytes arrived as sent.
    by_offset = {r["offset"]: r for r in read_v1(b, "test", 1, "binary")}
    assert base64.b64decode(by_offset[last]["value_base64"]) == b"kafka"
    assert base64.b64decode(by_offset[last - 1]["key_base64"]) == b"key"
    assert base64.b64decode(by_offset[last - 1]["value_base64"]) == b"confluent"

    # "Get a list of topics", "Get info about one topic"
    topics = v2_ok(b.get("/topics"))
    assert "test" in topics and topics == sorted(topics) and not any(t.startswith("__") for t in topics), topics
    info = v2_ok(b.get("/topics/test"))
    assert info["name"] == "test"
    assert isinstance(info["configs"], dict) and info["configs"]["cleanup.policy"] == "delete"
    assert info["partitions"] == [
        {"partition": 0, "leader": 1, "replicas": [{"broker": 1, "leader": True, "in_sync": True}]},
        {"partition": 1, "leader": 1, "replicas": [{"broker": 1, "leader": True, "in_sync": True}]},
    ]
    assert v2_ok(b.get("/topics/test/partitions")) == info["partitions"]
    assert v2_ok(b.get("/topics/test/partitions/1")) == info["partitions"][1]

    # Offsets: beginning = log start, end = high watermark (what /v1 calls them).
    native = b.offsets("test", 1)
    assert v2_ok(b.get("/topics/test/partitions/1/offsets")) == {
        "beginning_offset": native["log_start_offset"], "end_offset": native["high_watermark"]}
    assert native["high_watermark"] == last + 1


def test_confluent_json_produce(b):
    b.create_topic("jsontest", partitions=2)
    # "Produce a message using JSON with value '{ "foo": "bar" }' to the topic jsontest"
    out = v2_ok(produce(b, "/topics/jsontest", JSON, {"records": [{"value": {"foo": "bar"}}]}))
    assert out["offsets"][0]["error_code"] is None
    # The API reference's JSON produce: any JSON value, keys too.
    out = v2_ok(produce(b, "/topics/jsontest/partitions/0", JSON,
                        '{"records":[{"key":"somekey","value":{"foo":"bar"}},{"value":["foo","bar"]},{"value":53.5}]}'))
    assert [o["partition"] for o in out["offsets"]] == [0, 0, 0]
    records = {r["offset"]: r for r in read_v1(b, "jsontest", 0, "json")}
    o = out["offsets"][0]["offset"]
    assert records[o]["key"] == "somekey" and records[o]["value"] == {"foo": "bar"}
    assert records[o + 1]["value"] == ["foo", "bar"] and records[o + 1]["key"] is None
    assert records[o + 2]["value"] == 53.5
    # Stored as its JSON text: a JSON string keeps its quotes (as Confluent's JSON serializer writes).
    assert read_v1(b, "jsontest", 0, "text")[-3]["key"] == '"somekey"'
    # Plain application/json is taken as the JSON format.
    out = v2_ok(produce(b, "/topics/jsontest/partitions/1", "application/json", {"records": [{"value": {"n": 1}}]}))
    assert read_v1(b, "jsontest", 1, "json")[-1]["value"] == {"n": 1}


def test_answers_in_plain_json_when_asked(b):
    r = b.get("/brokers", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json", r.headers


def test_get_with_a_json_body_and_content_type(b):
    b.create_topic("getbody")
    r = b.get("/topics/getbody/partitions", data='{"partitions":[{"topic":"getbody","partition":0}]}',
              headers={"Content-Type": V2})
    assert [p["partition"] for p in v2_ok(r)] == [0]
    assert v2_ok(b.get("/", data="{}", headers={"Content-Type": V2})) == {}


# -- Strimzi bridge variants ------------------------------------------------------------------------

def test_strimzi_admin_create_then_text_produce_with_headers(b):
    created = v2_ok(admin_create(b, "bridge-quickstart-topic", partitions=3), 201)
    assert created["name"] == "bridge-quickstart-topic" and len(created["partitions"]) == 3
    assert v2_ok(b.get("/topics/bridge-quickstart-topic")) == created
    # The same topic as /v1 sees it.
    assert b.get("/v1/topics/bridge-quickstart-topic").json()["partitions"][2]["partition"] == 2

    # The quickstart's JSON produce.
    out = v2_ok(produce(b, "/topics/bridge-quickstart-topic", JSON, {"records": [
        {"key": "my-key", "value": "sales-lead-0001"}, {"value": "sales-lead-0002", "partition": 2}, {"value": "sales-lead-0003"}]}))
    assert len(out["offsets"]) == 3 and out["offsets"][1]["partition"] == 2

    # Text format with headers (base64 values) and a timestamp.
    out = v2_ok(produce(b, "/topics/bridge-quickstart-topic/partitions/0", TEXT, {"records": [
        {"key": "k1", "value": "plain text", "headers": [{"key": "trace", "value": b64("abc")}], "timestamp": 1700000000000}]}))
    offset = out["offsets"][0]["offset"]
    rec = [r for r in read_v1(b, "bridge-quickstart-topic", 0) if r["offset"] == offset][0]
    assert rec["key"] == "k1" and rec["value"] == "plain text"
    assert rec["headers"] == [{"key": "trace", "value": "abc"}]
    assert rec["timestamp"] == 1700000000000


def test_strimzi_async_produce_is_204_and_lands(b):
    v2_ok(admin_create(b, "async-topic"), 201)
    before = b.offsets("async-topic", 0)["log_end_offset"]
    r = produce(b, "/topics/async-topic", TEXT, {"records": [{"value": "fire"}, {"value": "forget"}]}, params={"async": "true"})
    v2_ok(r, 204)
    wait_until(lambda: b.offsets("async-topic", 0)["high_watermark"] >= before + 2, 10, what="async records committed")
    assert [r["value"] for r in read_v1(b, "async-topic", 0)][-2:] == ["fire", "forget"]
    # Async is still validated: nothing is written when a record cannot be.
    v2_error(produce(b, "/topics/async-topic", TEXT, {"records": [{"value": "x"}, {"value": "y", "partition": 4}]},
                     params={"async": "true"}), 404, 40402)
    v2_error(produce(b, "/topics/async-topic", BINARY, {"records": [{"value": "%%"}]}, params={"async": "true"}), 422, 42203)
    v2_error(produce(b, "/topics/nope", TEXT, {"records": [{"value": "x"}]}, params={"async": "true"}), 404, 40401)
    assert b.offsets("async-topic", 0)["log_end_offset"] == before + 2


def test_strimzi_admin_errors(b):
    v2_ok(admin_create(b, "dup"), 201)
    v2_error(admin_create(b, "dup"), 409, 40901)
    v2_error(b.post("/admin/topics", data='{"partitions_count":1}', headers={"Content-Type": V2}), 400, 40001, "topic_name")
    v2_error(b.post("/admin/topics", data='{"topic_name":', headers={"Content-Type": V2}), 400, 40001)
    v2_error(b.post("/admin/topics", data='{"topic_name":"x","colour":1}', headers={"Content-Type": V2}), 400, 40001)
    v2_error(admin_create(b, "zero", partitions=0), 422, 42204)
    v2_error(admin_create(b, "rf3", replication_factor=3), 422, 42204)
    v2_error(admin_create(b, "bad/name"), 400, 40002)
    v2_error(b.post("/admin/topics", data="topic_name=x", headers={"Content-Type": "text/plain"}), 415, 41501)
    assert b.get("/topics/zero").status_code == 404 and b.get("/topics/rf3").status_code == 404


# -- bad input --------------------------------------------------------------------------------------

def test_per_record_failures_sit_inside_the_200(b):
    b.create_topic("perrecord", partitions=2)
    out = v2_ok(produce(b, "/topics/perrecord", BINARY, {"records": [
        {"value": b64("ok-1"), "partition": 0}, {"value": b64("lost"), "partition": 7}, {"value": b64("ok-2"), "partition": 1}]}))
    ok1, bad, ok2 = out["offsets"]
    assert ok1["error_code"] is None and ok1["partition"] == 0 and ok1["offset"] is not None
    assert bad["error_code"] == 40402 and bad["offset"] is None and bad["partition"] == 7 and "partition 7" in bad["error"]
    assert ok2["error_code"] is None and ok2["partition"] == 1
    # Every record failing is still a 200 with one entry each, and nothing written.
    out = v2_ok(produce(b, "/topics/perrecord", JSON, {"records": [{"value": 1, "partition": 5}, {"value": 2, "partition": 6}]}))
    assert [o["error_code"] for o in out["offsets"]] == [40402, 40402]
    assert b.offsets("perrecord", 0)["log_end_offset"] == 1 and b.offsets("perrecord", 1)["log_end_offset"] == 1


@pytest.mark.parametrize("content_type,body,status,code", [
    ("text/plain", '{"records":[{"value":"x"}]}', 415, 41501),
    ("application/x-www-form-urlencoded", '{"records":[{"value":"x"}]}', 415, 41501),  # curl -d without -H
    ("application/vnd.kafka.binary.v1+json", '{"records":[{"value":"eA=="}]}', 415, 41501),
    ("application/vnd.kafka.avro.v2+json", '{"value_schema":"\\"string\\"","records":[{"value":"x"}]}', 415, 41501),
    ("application/vnd.kafka.jsonschema.v2+json", '{"records":[{"value":"x"}]}', 415, 41501),
    ("application/vnd.kafka.protobuf.v2+json", '{"records":[{"value":"x"}]}', 415, 41501),
    (BINARY, '{"records":[{"value":"not base64!"}]}', 422, 42203),
    (BINARY, '{"records":[{"key":"*","value":"eA=="}]}', 422, 42203),
    (BINARY, '{"records":[{"value":42}]}', 422, 42203),
    (TEXT, '{"records":[{"value":{"not":"text"}}]}', 422, 42203),
    (TEXT, '{"records":[{"value":"v","headers":[{"key":"h","value":"%%"}]}]}', 422, 42203),
    (JSON, '{"records":[{"value":1,"vaule":2}]}', 422, 42203),
    (JSON, '{"records":[{"value":1,"partition":-1}]}', 422, 42203),
    (JSON, '{"records":[{"value":', 400, 40001),
    (JSON, '{"records":[]}', 400, 40001),
    (JSON, '["records"]', 400, 40001),
    (JSON, '', 400, 40001),
])
def test_bad_produce_requests(b, content_type, body, status, code):
    topic = "bad-" + hashlib.sha1(f"{content_type} {body}".encode()).hexdigest()[:12]
    b.create_topic(topic)
    before = v2_ok(b.get(f"/topics/{topic}/partitions/0/offsets"))
    err = v2_error(produce(b, f"/topics/{topic}", content_type, body), status, code)
    if "avro" in content_type or "jsonschema" in content_type or "protobuf" in content_type:
        assert "schema registry" in err["message"], err
    assert v2_ok(b.get(f"/topics/{topic}/partitions/0/offsets")) == before


def test_unknown_topic_and_partition(b):
    b.create_topic("known", partitions=2)
    for path in ("/topics/nope", "/topics/nope/partitions", "/topics/nope/partitions/0", "/topics/nope/partitions/0/offsets"):
        v2_error(b.get(path), 404, 40401, "nope")
    v2_error(produce(b, "/topics/nope", BINARY, {"records": [{"value": "eA=="}]}), 404, 40401)
    v2_error(produce(b, "/topics/nope/partitions/0", BINARY, {"records": [{"value": "eA=="}]}), 404, 40401)
    for path in ("/topics/known/partitions/2", "/topics/known/partitions/2/offsets"):
        v2_error(b.get(path), 404, 40402, "partition 2")
    v2_error(produce(b, "/topics/known/partitions/2", BINARY, {"records": [{"value": "eA=="}]}), 404, 40402)
    v2_error(b.get("/topics/known/partitions/x"), 400, 40001)
    v2_error(produce(b, "/topics/known/partitions/0", JSON, {"records": [{"value": 1, "partition": 1}]}), 422, 42203)
    # Another method on a v2 path: 405 with Allow, as everywhere.
    r = b.delete("/topics/known")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST", (r.status_code, r.headers)


# -- a cluster --------------------------------------------------------------------------------------

def test_cluster_admin_create_and_produce_through_any_broker(make_cluster):
    cluster = make_cluster(3)
    one, two, three = cluster.node(1), cluster.node(2), cluster.node(3)
    assert v2_ok(two.get("/brokers")) == {"brokers": [1, 2, 3]}
    created = v2_ok(admin_create(one, "replicated", partitions=2, replication_factor=3), 201)
    assert [sorted(r["broker"] for r in p["replicas"]) for p in created["partitions"]] == [[1, 2, 3], [1, 2, 3]]

    def described():
        r = three.get("/topics/replicated")
        if r.status_code != 200:
            return None
        parts = r.json()["partitions"]
        ok = len(parts) == 2 and all(
            sum(x["leader"] for x in p["replicas"]) == 1 and any(x["in_sync"] for x in p["replicas"]) for p in parts)
        return parts if ok else None

    parts = wait_until(described, 30, what="leaders for the replicated topic")
    for p in parts:
        assert p["leader"] in [x["broker"] for x in p["replicas"] if x["leader"]], p

    out = v2_ok(produce(two, "/topics/replicated/partitions/1", TEXT, {"records": [{"value": "a"}, {"value": "b"}]}))
    first, second = (o["offset"] for o in out["offsets"])
    assert second == first + 1 and all(o["error_code"] is None for o in out["offsets"]), out
    # A replicated log may start with a control record, so offsets need not start at 0; and a broker
    # that does not lead the partition learns the high watermark a moment later.
    offsets = wait_until(lambda: (lambda o: o if o["end_offset"] == second + 1 else None)(
        v2_ok(three.get("/topics/replicated/partitions/1/offsets"))), 15, what="the high watermark on node 3")
    assert offsets["beginning_offset"] == three.offsets("replicated", 1)["log_start_offset"]
    v2_error(admin_create(three, "replicated"), 409, 40901)
    # The same create path as /v1/topics: the same refusal.
    native = three.post("/v1/topics", json={"name": "too-many-replicas", "replication_factor": 5})
    assert native.status_code == 422, native.text
    v2_error(admin_create(three, "too-many-replicas", replication_factor=5), 422, native.json()["error_code"], "replication factor")
