"""Group member streams through real clients (issue #6): SSE with `curl -N` and with `requests`
streaming, NDJSON with `requests` — records arrive as they are produced; an SSE stream dropped
mid-way resumes with `Last-Event-ID` (the cursor `topic/partition/offset,...`) with no record lost
or repeated; `max_uncommitted` pauses a stream until the client commits."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
import requests

TOPIC = "gs"


def join(b, group, **body):
    r = b.post(f"/v1/groups/{group}/members", json={"topics": [TOPIC], "auto_offset_reset": "earliest", **body})
    assert r.status_code == 200, r.text
    return r.json()


def produce(b, values, partitions=3):
    r = b.produce_json(TOPIC, [{"value": v, "partition": i % partitions} for i, v in enumerate(values)])
    assert r.status_code == 200, r.text
    return r.json()["offsets"]


def stream(b, group, member, kind, headers=None, **params):
    accept = "text/event-stream" if kind == "sse" else "application/x-ndjson"
    return requests.get(f"{b.url}/v1/groups/{group}/members/{member}/records", params=params,
                        headers={"Accept": accept, **(headers or {})}, stream=True, timeout=(10, 30))


def sse_events(response):
    """(event dict) per SSE event; comments as {"comment": text}."""
    event: dict = {}
    while True:
        raw = response.raw.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            assert field in ("id", "event", "data", "retry"), line
            event[field] = value[1:] if value.startswith(" ") else value


def cursor(text):
    return {(t, int(p)): int(o) for t, p, o in (e.split("/") for e in text.split(","))}


def later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.start()
    return t


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_sse_with_curl_shows_records_as_they_arrive(broker):
    broker.create_topic(TOPIC, partitions=3)
    m = join(broker, "curl-g")
    # curl -N prints events as they come; the stream ends after 6 records (stream_limit).
    url = f"{broker.url}/v1/groups/curl-g/members/{m['member_id']}/records?stream_limit=6&batch_flush_timeout=1"
    curl = subprocess.Popen(["curl", "-sN", "-H", "Accept: text/event-stream", url], stdout=subprocess.PIPE, text=True)
    try:
        seen = []
        produce(broker, ["a0", "a1", "a2"])  # before and after the stream opened
        timer = later(1.0, lambda: produce(broker, ["b0", "b1", "b2"]))
        for line in curl.stdout:
            if line.startswith("data: "):
                data = json.loads(line[6:])
                if "value" in data:
                    seen.append(data["value"])
        timer.join()
        assert curl.wait(timeout=20) == 0
        assert sorted(seen) == ["a0", "a1", "a2", "b0", "b1", "b2"], seen
    finally:
        curl.kill()
        curl.wait()


def test_sse_resume_with_last_event_id_loses_and_repeats_nothing(broker):
    broker.create_topic(TOPIC, partitions=3)
    m = join(broker, "resume-g")
    produce(broker, [f"v{i}" for i in range(300)])
    got: list[tuple[str, int, int]] = []
    last_id = None
    # Read part of the stream, then drop the connection in the middle of it.
    r = stream(broker, "resume-g", m["member_id"], "sse", max_records=40)
    for e in sse_events(r):
        if e.get("event") == "record":
            d = json.loads(e["data"])
            got.append((d["topic"], d["partition"], d["offset"]))
            last_id = e["id"]
            # The cursor names the next offset of this record's partition.
            assert cursor(last_id)[(d["topic"], d["partition"])] == d["offset"] + 1
            if len(got) == 95:
                break
    r.close()  # dropped: the server may have polled (and sent) more than we read
    time.sleep(0.3)
    produce(broker, [f"w{i}" for i in range(60)])  # more while disconnected
    r = stream(broker, "resume-g", m["member_id"], "sse", headers={"Last-Event-ID": last_id}, stream_limit=360 - 95)
    for e in sse_events(r):
        if e.get("event") == "record":
            d = json.loads(e["data"])
            got.append((d["topic"], d["partition"], d["offset"]))
    r.close()
    assert len(got) == len(set(got)), "a record was repeated"
    per_partition = {}
    for t, p, o in got:
        per_partition.setdefault(p, []).append(o)
    for p, offsets in per_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {p}: {offsets[:10]}..."
    assert len(got) == 360


def test_ndjson_with_requests_delivers_live_polls(broker):
    broker.create_topic(TOPIC, partitions=3)
    m = join(broker, "nd-g")
    r = stream(broker, "nd-g", m["member_id"], "ndjson", stream_limit=90, batch_flush_timeout=1)
    timers = [later(0.3 * (k + 1), lambda k=k: produce(broker, [f"n{k}-{i}" for i in range(30)])) for k in range(3)]
    values = []
    lines = 0
    for line in r.iter_lines():
        if not line:
            continue
        body = json.loads(line)
        assert body["member_id"] == m["member_id"] and "generation" in body, body
        values += [x["value"] for x in body["records"]]
        lines += 1
    for t in timers:
        t.join()
    assert sorted(values) == sorted(f"n{k}-{i}" for k in range(3) for i in range(30))
    assert lines >= 3, "records came in several polls as they were produced"


def test_max_uncommitted_pauses_the_stream_until_a_commit(broker):
    broker.create_topic(TOPIC, partitions=3)
    m = join(broker, "mu-g", auto_commit=False)
    produce(broker, [f"u{i}" for i in range(30)])
    r = stream(broker, "mu-g", m["member_id"], "sse", max_uncommitted=10, stream_limit=30, batch_flush_timeout=1)
    records = 0
    paused_at = None
    committed = False
    for e in sse_events(r):
        if e.get("event") == "record":
            records += 1
            assert records <= 10 or committed, "records beyond max_uncommitted before any commit"
        elif "paused" in e.get("comment", ""):
            assert records == 10, e
            if paused_at is None:
                paused_at = time.monotonic()
            elif time.monotonic() - paused_at > 1.5 and not committed:
                # Still paused after a while: commit everything delivered; the stream goes on.
                c = broker.post("/v1/groups/mu-g/offsets", json={"member_id": m["member_id"]})
                assert c.status_code == 200 and c.json()["committed"] >= 1, c.text
                committed = True
        if records == 20:
            break
    r.close()
    assert paused_at is not None and committed and records == 20
