"""Streaming reads (README "Streams"): SSE and chunked NDJSON on the read path — live delivery,
`id:` = offset and Last-Event-ID resume, catch-up of a long log in order, keep-alives,
stream_limit / stream_timeout, errors before the stream starts, topic deletion and SIGTERM."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from petrel_support import assert_error

TOPIC = "st"


def produce(b, values, partition=0):
    r = b.produce_json(TOPIC, [{"value": v, "partition": partition} for v in values])
    assert r.status_code == 200, r.text
    return [p["offset"] for p in r.json()["offsets"]]


def open_stream(b, kind: str, headers=None, **params) -> requests.Response:
    accept = "text/event-stream" if kind == "sse" else "application/x-ndjson"
    r = requests.get(f"{b.url}/v1/topics/{TOPIC}/partitions/0/records", params=params,
                     headers={"Accept": accept, **(headers or {})}, stream=True, timeout=(10, 30))
    return r


class SSE:
    """Incremental SSE parser over a streaming response."""

    def __init__(self, response: requests.Response):
        self.r = response
        self.comments: list[str] = []

    def events(self):
        event: dict = {}
        while True:
            raw = self.r.raw.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if event:
                    yield event
                event = {}
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                field, _, value = line.partition(":")
                assert field in ("id", "event", "data", "retry"), line
                event[field] = value[1:] if value.startswith(" ") else value


def record_events(sse: SSE):
    for e in sse.events():
        if e.get("event") == "record":
            data = json.loads(e["data"])
            assert int(e["id"]) == data["offset"], e
            yield data
        else:
            assert set(e) <= {"retry"} or e.get("event") == "error", e
            if e.get("event") == "error":
                yield {"error": json.loads(e["data"])}


def test_sse_delivers_live_records_and_stops_at_stream_limit(broker):
    broker.create_topic(TOPIC)
    produce(broker, ["before"])
    r = open_stream(broker, "sse", offset="latest", stream_limit=4, stream_timeout=60)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text if not r.ok else r.headers
    got = []
    events = record_events(SSE(r))

    def feed():
        for i in range(4):
            time.sleep(0.2)
            produce(broker, [f"live-{i}"])

    t0 = time.monotonic()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    for data in events:
        got.append(data)
    elapsed = time.monotonic() - t0
    feeder.join(timeout=30)
    r.close()
    assert [(d["offset"], d["value"]) for d in got] == [(i + 1, f"live-{i}") for i in range(4)], got
    assert elapsed < 30, f"the stream did not end at stream_limit (took {elapsed:.1f}s)"


def test_sse_last_event_id_resumes_after_it(broker):
    broker.create_topic(TOPIC)
    produce(broker, [f"v{i}" for i in range(10)])
    r = open_stream(broker, "sse", headers={"Last-Event-ID": "4"}, stream_limit=3, stream_timeout=20)
    got = list(record_events(SSE(r)))
    assert [d["offset"] for d in got] == [5, 6, 7], got
    assert_error(open_stream(broker, "sse", headers={"Last-Event-ID": "four"}), 400)


def test_ndjson_catches_up_a_long_log_in_order(broker):
    broker.create_topic(TOPIC)
    total = 0
    for k in range(6):
        total += len(produce(broker, [f"r{k * 500 + i}-" + "z" * 200 for i in range(500)]))
    r = open_stream(broker, "ndjson", offset="earliest", stream_limit=total, stream_timeout=60, batch_limit=700)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    offsets = []
    lines = 0
    for line in r.iter_lines():
        if not line:
            continue
        body = json.loads(line)
        lines += 1
        assert "error_code" not in body, body
        assert len(body["records"]) <= 700
        offsets.extend(x["offset"] for x in body["records"])
        if body["records"]:
            assert body["next_offset"] == body["records"][-1]["offset"] + 1
            assert all(x["value"].startswith(f"r{x['offset']}-") for x in body["records"])
    r.close()
    assert offsets == list(range(total)), f"{len(offsets)} records, first gap near {next((i for i, o in enumerate(offsets) if o != i), None)}"
    assert lines >= total // 700


def test_keep_alives_and_stream_timeout(broker):
    broker.create_topic(TOPIC)
    produce(broker, ["x"])
    t0 = time.monotonic()
    r = open_stream(broker, "sse", offset="latest", batch_flush_timeout=1, stream_timeout=3)
    sse = SSE(r)
    records = list(record_events(sse))
    elapsed = time.monotonic() - t0
    assert records == []
    assert any(c.startswith(": keep-alive") for c in sse.comments), sse.comments
    assert 2.5 <= elapsed < 20, f"a 3 s stream_timeout ended after {elapsed:.1f}s"

    r = open_stream(broker, "ndjson", offset="latest", batch_flush_timeout=1, stream_timeout=3)
    lines = [json.loads(l) for l in r.iter_lines() if l]
    assert lines and all(l["records"] == [] and l["next_offset"] == 1 for l in lines), lines


def test_stream_errors_before_the_stream_starts(broker):
    broker.create_topic(TOPIC)
    produce(broker, ["a", "b"])
    assert_error(open_stream(broker, "sse", offset=99), 416)
    assert_error(open_stream(broker, "ndjson", stream_timeout=-1), 400)
    assert_error(open_stream(broker, "ndjson", stream_limit="many"), 400)
    assert_error(open_stream(broker, "sse", batch_flush_timeout=0), 400)
    r = requests.get(f"{broker.url}/v1/topics/nope/partitions/0/records", headers={"Accept": "text/event-stream"}, timeout=15)
    assert_error(r, 404)


def test_deleting_the_topic_ends_its_streams(broker):
    broker.create_topic(TOPIC)
    r = open_stream(broker, "sse", offset="latest", stream_timeout=60)
    result = {}

    def consume():
        result["events"] = list(record_events(SSE(r)))
        result["t"] = time.monotonic()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    assert broker.delete(f"/v1/topics/{TOPIC}").status_code == 204
    t.join(timeout=40)
    assert not t.is_alive(), "the stream of a deleted topic did not end"
    assert result["t"] - t0 < 20
    errors = [e["error"] for e in result["events"] if "error" in e]
    assert errors and str(errors[0]["error_code"]).startswith("404"), result["events"]


def test_sigterm_ends_open_streams_and_exits_zero(broker):
    broker.create_topic(TOPIC)
    streams = [open_stream(broker, kind, offset="latest", stream_timeout=120) for kind in ("sse", "ndjson", "sse")]
    for s in streams:
        assert s.status_code == 200
    ended = []

    def drain(s):
        try:
            for _ in s.iter_content(chunk_size=None):
                pass
            ended.append("clean")
        except requests.RequestException as e:
            ended.append(type(e).__name__)

    threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in streams]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    code = broker.terminate(timeout=30)
    took = time.monotonic() - t0
    for t in threads:
        t.join(timeout=30)
    assert code == 0, broker.log_tail()
    assert took < 10, f"shutdown with open streams took {took:.1f}s"
    assert len(ended) == 3, ended
    print(f"streams ended: {ended}, shutdown took {took:.2f}s")


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_slow_stream_clients_hold_bounded_memory(broker):
    """README: a client that stops reading holds at most one 4 MiB stream buffer. Six streams that
    never read, over a 20 MB log, must not make the broker buffer the log for each of them
    (that would be 120 MB or more; the bound allows 8 MiB per stream plus 32 MiB)."""
    broker.create_topic(TOPIC)
    chunk = "w" * 10_000
    for k in range(20):
        r = broker.produce_json(TOPIC, [{"value": chunk, "partition": 0} for _ in range(100)])
        assert r.status_code == 200, r.text[:200]
    assert broker.offsets(TOPIC, 0)["high_watermark"] == 2000
    baseline = _rss_bytes(broker.pid)
    streams = [open_stream(broker, "sse" if i % 2 else "ndjson", offset="earliest", stream_timeout=120) for i in range(6)]
    try:
        for s in streams:
            assert s.status_code == 200
        time.sleep(2)  # let the broker fill whatever it is going to fill
        assert broker.get("/healthz").status_code == 200
        assert broker.read(TOPIC, 0, 0, max_records=1)["records"]
        grown = _rss_bytes(broker.pid) - baseline
        print(f"RSS grew {grown / 2**20:.1f} MiB with 6 stalled streams over a {20 * 100 * 10_000 / 2**20:.0f} MiB log")
        assert grown < 6 * 8 * 2**20 + 32 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB for 6 stalled streams"
        for s in streams[1:]:
            s.close()
        # A stalled stream still delivers everything, in order, once its client reads.
        count = 0
        for line in streams[0].iter_lines(chunk_size=1 << 16):
            if line:
                body = json.loads(line)
                assert [x["offset"] for x in body["records"]] == list(range(count, count + len(body["records"])))
                count += len(body["records"])
                if count >= 2000:
                    break
        assert count == 2000
    finally:
        for s in streams:
            s.close()


@pytest.mark.parametrize("kind", ["ndjson", "sse"])
def test_format_json_streams_keep_framing_for_multiline_values(broker, kind):
    broker.create_topic(TOPIC)
    body = b'{"records":[{"value": {\n  "a": 1,\n  "b": [2,\r\n 3]\n}, "partition": 0}, {"value": "plain", "partition": 0}]}'
    r = broker.post(f"/v1/topics/{TOPIC}/records", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    r = open_stream(broker, kind, offset=0, stream_limit=2, stream_timeout=10, format="json")
    if kind == "ndjson":
        records = []
        for line in r.iter_lines():
            if line:
                records.extend(json.loads(line)["records"])  # every line must be a whole JSON document
    else:
        records = [d for d in record_events(SSE(r))]
    assert [x["value"] for x in records] == [{"a": 1, "b": [2, 3]}, "plain"], records
