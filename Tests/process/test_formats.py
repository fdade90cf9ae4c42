"""Produce body forms and read formats round-trip: raw text and bytes, query-parameter key and
headers, JSON values stored verbatim, base64, NDJSON, tombstones, header forms, acks."""

from __future__ import annotations

import base64

TOPIC = "fmt"
RECORDS = f"/v1/topics/{TOPIC}/records"


def produce_raw(b, body: bytes, content_type: str, **params):
    r = b.post(RECORDS, data=body, headers={"Content-Type": content_type}, params={"partition": 0, **params})
    assert r.status_code == 200, r.text
    return r.json()["offsets"][0]["offset"]


def read_one(b, offset: int, fmt: str | None = None) -> dict:
    params = {"max_records": 1}
    if fmt:
        params["format"] = fmt
    body = b.read(TOPIC, 0, offset, **params)
    assert len(body["records"]) == 1 and body["records"][0]["offset"] == offset, body
    return body["records"][0]


def read_raw_text(b, offset: int, fmt: str) -> str:
    r = b.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": offset, "max_records": 1, "format": fmt})
    assert r.status_code == 200, r.text
    return r.text


def test_text_and_binary_bodies(broker):
    broker.create_topic(TOPIC)
    o = produce_raw(broker, "héllo wörld\n".encode(), "text/plain; charset=utf-8")
    rec = read_one(broker, o)
    assert rec["value"] == "héllo wörld\n" and rec["key"] is None and rec["headers"] == []

    payload = bytes(range(256)) * 4
    o = produce_raw(broker, payload, "application/octet-stream")
    rec = read_one(broker, o, "binary")
    assert base64.b64decode(rec["value_base64"]) == payload
    assert "value" not in rec
    # format=text falls back to base64 for bytes that are not UTF-8.
    rec = read_one(broker, o, "text")
    assert base64.b64decode(rec["value_base64"]) == payload

    # Empty body: an empty (not null) value.
    o = produce_raw(broker, b"", "application/octet-stream")
    assert read_one(broker, o)["value"] == ""
    # curl's default form type is a raw body too.
    o = produce_raw(broker, b"a=b&c=d", "application/x-www-form-urlencoded")
    assert read_one(broker, o)["value"] == "a=b&c=d"
    # format=binary encodes text as well.
    rec = read_one(broker, o, "binary")
    assert base64.b64decode(rec["value_base64"]) == b"a=b&c=d"


def test_key_header_timestamp_query_params(broker):
    broker.create_topic(TOPIC)
    r = broker.post(RECORDS + "?partition=0&key=k%201&header=trace:abc&header=h2:x:y&header=empty:&timestamp=1234567",
                    data=b"v", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    rec = read_one(broker, r.json()["offsets"][0]["offset"])
    assert rec["key"] == "k 1"
    assert rec["timestamp"] == 1234567
    assert rec["headers"] == [{"key": "trace", "value": "abc"}, {"key": "h2", "value": "x:y"}, {"key": "empty", "value": ""}]
    rec = read_one(broker, 0, "binary")
    assert base64.b64decode(rec["key_base64"]) == b"k 1"
    assert [base64.b64decode(h["value_base64"]) for h in rec["headers"]] == [b"abc", b"x:y", b""]


def test_json_values_stored_verbatim(broker):
    broker.create_topic(TOPIC)
    body = b'{"records":[{"value": {"a": 1.50}, "partition": 0}, {"value": [1, 2.0e3, true, null], "partition": 0},' \
           b' {"value": "just text", "partition": 0}, {"value": 12.50, "partition": 0}, {"value": "{\\"s\\":1}", "partition": 0}]}'
    r = broker.post(RECORDS, data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    offsets = [p["offset"] for p in r.json()["offsets"]]
    assert offsets == list(range(offsets[0], offsets[0] + 5))
    o = offsets[0]
    # format=text: the exact JSON text as a string.
    assert read_one(broker, o)["value"] == '{"a": 1.50}'
    assert read_one(broker, o + 1)["value"] == "[1, 2.0e3, true, null]"
    assert read_one(broker, o + 2)["value"] == "just text"
    assert read_one(broker, o + 3)["value"] == "12.50"
    assert read_one(broker, o + 4)["value"] == '{"s":1}'
    # format=json: embedded as the same JSON text, byte for byte (1.50 stays 1.50).
    text = read_raw_text(broker, o, "json")
    assert '"value":{"a": 1.50}' in text, text
    assert '"value":[1, 2.0e3, true, null]' in read_raw_text(broker, o + 1, "json")
    assert '"value":"just text"' in read_raw_text(broker, o + 2, "json")
    assert '"value":12.50' in read_raw_text(broker, o + 3, "json")
    assert read_one(broker, o + 4, "json")["value"] == {"s": 1}


def test_base64_fields(broker):
    broker.create_topic(TOPIC)
    raw = bytes([0, 255, 1, 254, 0x80])
    r = broker.produce_json(TOPIC, [
        {"value_base64": base64.b64encode(raw).decode(), "key_base64": base64.b64encode(b"\xffkey").decode(), "partition": 0},
        {"value_base64": "aGk", "partition": 0},  # unpadded
    ])
    assert r.status_code == 200, r.text
    o = r.json()["offsets"][0]["offset"]
    rec = read_one(broker, o, "binary")
    assert base64.b64decode(rec["value_base64"]) == raw and base64.b64decode(rec["key_base64"]) == b"\xffkey"
    rec = read_one(broker, o, "text")
    assert "value_base64" in rec and "key_base64" in rec
    assert read_one(broker, o + 1)["value"] == "hi"


def test_ndjson_blank_lines_and_crlf(broker):
    broker.create_topic(TOPIC)
    body = b'{"value":"a","partition":0}\r\n\r\n{"value":"b","partition":0}\r\n\n   \n\t\n{"value":"c","key":"k","partition":0}'
    r = broker.post(RECORDS, data=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert [p["offset"] for p in r.json()["offsets"]] == [0, 1, 2]
    records = broker.read(TOPIC, 0)["records"]
    assert [(x["value"], x["key"]) for x in records] == [("a", None), ("b", None), ("c", "k")]
    # A trailing newline is fine too.
    r = broker.post(RECORDS, data=b'{"value":"d","partition":0}\n', headers={"Content-Type": "application/x-ndjson; charset=utf-8"})
    assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == 3, r.text


def test_null_value_is_a_tombstone(broker):
    broker.create_topic(TOPIC)
    r = broker.produce_json(TOPIC, [{"key": "user-1", "value": None, "partition": 0}, {"key": "user-2", "value": "", "partition": 0}])
    assert r.status_code == 200, r.text
    records = broker.read(TOPIC, 0)["records"]
    assert records[0]["value"] is None and records[0]["key"] == "user-1"
    assert records[1]["value"] == ""
    for fmt in ("json", "binary"):
        rec = read_one(broker, 0, fmt)
        assert rec["value"] is None and "value_base64" not in rec, (fmt, rec)


def test_header_forms(broker):
    broker.create_topic(TOPIC)
    r = broker.produce_json(TOPIC, [
        {"value": "obj", "headers": {"source": "web", "n": "1"}, "partition": 0},
        {"value": "arr", "headers": [{"key": "source", "value": "app"}, {"key": "source", "value": "dup"},
                                     {"key": "bin", "value_base64": base64.b64encode(b"\x00\xff").decode()},
                                     {"key": "none", "value": None}], "partition": 0},
    ])
    assert r.status_code == 200, r.text
    obj = read_one(broker, 0)
    assert obj["headers"] == [{"key": "source", "value": "web"}, {"key": "n", "value": "1"}]
    arr = read_one(broker, 1)
    assert arr["headers"][:2] == [{"key": "source", "value": "app"}, {"key": "source", "value": "dup"}]
    assert arr["headers"][2]["key"] == "bin" and base64.b64decode(arr["headers"][2]["value_base64"]) == b"\x00\xff"
    assert arr["headers"][3] == {"key": "none", "value": None}


def test_acks_levels(broker):
    broker.create_topic(TOPIC)
    r = broker.post(RECORDS, data=b"zero", headers={"Content-Type": "text/plain"}, params={"partition": 0, "acks": "0"})
    assert r.status_code == 202 and r.json()["offsets"][0]["offset"] is None, r.text
    r = broker.post(RECORDS, data=b"one", headers={"Content-Type": "text/plain"}, params={"partition": 0, "acks": "1"})
    assert r.status_code == 200 and isinstance(r.json()["offsets"][0]["offset"], int), r.text
    r = broker.post(RECORDS, data=b"all", headers={"Content-Type": "text/plain"}, params={"partition": 0, "acks": "all"})
    assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == 2, r.text
    assert [x["value"] for x in broker.read(TOPIC, 0)["records"]] == ["zero", "one", "all"]


def test_sticky_partitioner_keeps_a_request_together(broker):
    broker.create_topic(TOPIC, partitions=3)
    seen = set()
    order = []
    for i in range(6):
        r = broker.produce_json(TOPIC, [{"value": f"r{i}-{j}"} for j in range(4)])
        parts = {p["partition"] for p in r.json()["offsets"]}
        assert len(parts) == 1, f"one keyless request went to several partitions: {r.json()}"
        offs = [p["offset"] for p in r.json()["offsets"]]
        assert offs == list(range(offs[0], offs[0] + 4))
        seen |= parts
        order.append(parts.pop())
    # Round-robin across requests: six sequential requests visit each of the three partitions twice, in turn.
    assert sorted(order) == [0, 0, 1, 1, 2, 2] and all((b - a) % 3 == 1 for a, b in zip(order, order[1:])), order
    assert sum(len(broker.read(TOPIC, p)["records"]) for p in range(3)) == 24


def test_read_limits_page_through_the_log(broker):
    broker.create_topic(TOPIC)
    r = broker.produce_json(TOPIC, [{"value": f"r{i}", "partition": 0} for i in range(10)])
    assert r.status_code == 200
    page = broker.read(TOPIC, 0, 3, max_records=2)
    assert [x["offset"] for x in page["records"]] == [3, 4] and page["next_offset"] == 5, page
    assert page["high_watermark"] == 10 and page["log_start_offset"] == 0
    # A tiny max_bytes still makes progress (at least one record, as Kafka returns at least one batch).
    page = broker.read(TOPIC, 0, 5, max_bytes=1)
    assert page["records"] and page["records"][0]["offset"] == 5 and page["next_offset"] == 5 + len(page["records"]), page
    # At the end: nothing, and next_offset stays.
    page = broker.read(TOPIC, 0, 10)
    assert page["records"] == [] and page["next_offset"] == 10
    page = broker.read(TOPIC, 0, "latest")
    assert page["records"] == [] and page["next_offset"] == 10


def test_large_request_is_split_into_batches_in_order(broker):
    broker.create_topic(TOPIC)
    big = [{"value": f"{i:02d}" + "b" * 600_000, "partition": 0} for i in range(3)]  # > max.message.bytes together
    small = [{"value": f"s{i}", "partition": 0} for i in range(5)]
    r = broker.produce_json(TOPIC, big + small)
    assert r.status_code == 200, r.text[:300]
    assert [p["offset"] for p in r.json()["offsets"]] == list(range(8))
    records, _ = broker.read_all(TOPIC, 0)
    assert [x["value"][:2] for x in records[:3]] == ["00", "01", "02"]
    assert all(len(x["value"]) == 600_002 for x in records[:3])
    assert [x["value"] for x in records[3:]] == [f"s{i}" for i in range(5)]


def test_max_message_bytes_is_enforced(broker):
    broker.create_topic(TOPIC, configs={"max.message.bytes": "2048"})
    r = broker.post(RECORDS, data=b"z" * 4096, headers={"Content-Type": "application/octet-stream"}, params={"partition": 0})
    assert r.status_code == 413, r.text
    assert r.json()["error_code"] // 100 == 413
    r = broker.produce_json(TOPIC, [{"value": "q" * 500, "partition": 0} for _ in range(10)])  # split at 2 KiB
    assert r.status_code == 200 and [p["offset"] for p in r.json()["offsets"]] == list(range(10)), r.text
    assert broker.offsets(TOPIC, 0)["log_end_offset"] == 10
