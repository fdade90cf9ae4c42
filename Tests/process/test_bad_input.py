"""Bad input gets a clear JSON error with the right status, the broker stays up, and nothing is
written outside the data dir. One broker serves the whole battery (module scope); the last test
checks it is still healthy and that the data dir's parent holds exactly what it held before."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import time

import pytest

from petrel_support import assert_error

TOPIC = "bad"
RECORDS = f"/v1/topics/{TOPIC}/records"
JSON = {"Content-Type": "application/json"}


def tree(root: str, skip: str) -> set[str]:
    """Every path under `root` except inside `skip` (the data dir)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.abspath(dirpath) == os.path.abspath(skip):
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@pytest.fixture(scope="module")
def env(module_broker):
    b = module_broker
    b.create_topic(TOPIC, partitions=2)
    for i in range(3):
        r = b.post(RECORDS, data=f"v{i}".encode(), headers={"Content-Type": "text/plain"}, params={"partition": 0})
        assert r.status_code == 200, r.text
    before = tree(b.root, b.data_dir)
    return b, before


def raw_json(b, method, path, body: bytes | str, content_type="application/json"):
    if isinstance(body, str):
        body = body.encode()
    return b.raw(method, path, body, {"Content-Type": content_type})


# (id, method, path (sent raw), content type or None, body or None, expected status)
CASES = [
    # produce bodies
    ("malformed-json", "POST", RECORDS, "application/json", '{"records":[{"value":"x"}', 400),
    ("json-trailing-garbage", "POST", RECORDS, "application/json", '{"records":[{"value":"x"}]} x', 400),
    ("json-not-object", "POST", RECORDS, "application/json", '[{"value":"x"}]', 400),
    ("json-scalar", "POST", RECORDS, "application/json", '"x"', 400),
    ("records-not-array", "POST", RECORDS, "application/json", '{"records":{"value":"x"}}', 400),
    ("records-missing", "POST", RECORDS, "application/json", '{"recs":[]}', 400),
    ("records-empty", "POST", RECORDS, "application/json", '{"records":[]}', 400),
    ("record-not-object", "POST", RECORDS, "application/json", '{"records":["x"]}', 400),
    ("record-unknown-field", "POST", RECORDS, "application/json", '{"records":[{"value":"x","colour":"red"}]}', 400),
    ("record-without-value", "POST", RECORDS, "application/json", '{"records":[{"key":"k"}]}', 400),
    ("bad-base64", "POST", RECORDS, "application/json", '{"records":[{"value_base64":"!!not base64!!"}]}', 400),
    ("bad-base64-length", "POST", RECORDS, "application/json", '{"records":[{"value_base64":"QUJDRA=X"}]}', 400),
    ("base64-not-string", "POST", RECORDS, "application/json", '{"records":[{"value_base64":12}]}', 400),
    ("negative-record-partition", "POST", RECORDS, "application/json", '{"records":[{"value":"x","partition":-1}]}', 400),
    ("string-record-partition", "POST", RECORDS, "application/json", '{"records":[{"value":"x","partition":"0"}]}', 400),
    ("negative-timestamp", "POST", RECORDS, "application/json", '{"records":[{"value":"x","timestamp":-5}]}', 400),
    ("headers-wrong-type", "POST", RECORDS, "application/json", '{"records":[{"value":"x","headers":7}]}', 400),
    ("deep-nesting", "POST", RECORDS, "application/json", '{"records":[{"value":' + "[" * 5000 + "]" * 5000 + "}]}", 400),
    ("ndjson-bad-line", "POST", RECORDS, "application/x-ndjson", '{"value":"a"}\n{"value":\n', 400),
    ("ndjson-empty", "POST", RECORDS, "application/x-ndjson", "\n\n \n", 400),
    ("media-type-xml", "POST", RECORDS, "application/xml", "<x/>", 415),
    ("media-type-image", "POST", RECORDS, "image/png", "\x89PNG", 415),
    ("create-media-type", "POST", "/v1/topics", "text/csv", "name,partitions", 415),
    ("raw-bad-partition-param", "POST", RECORDS + "?partition=x", "text/plain", "v", 400),
    ("raw-bad-timestamp-param", "POST", RECORDS + "?timestamp=yesterday", "text/plain", "v", 400),
    ("raw-bad-header-param", "POST", RECORDS + "?header=nocolon", "text/plain", "v", 400),
    # topic names in URLs (sent raw: `..` must reach the server, not be normalised away)
    ("name-dotdot-get", "GET", "/v1/topics/%2E%2E", None, None, 400),
    ("name-dotdot-produce", "POST", "/v1/topics/%2E%2E/records", "text/plain", "v", 400),
    ("name-dotdot-read", "GET", "/v1/topics/%2E%2E/partitions/0/records", None, None, 400),
    ("name-dot-delete", "DELETE", "/v1/topics/%2E", None, None, 400),
    ("name-slash", "GET", "/v1/topics/a%2Fb", None, None, 400),
    ("name-slash-dotdot", "POST", "/v1/topics/..%2F..%2Fescape/records", "text/plain", "v", 400),
    ("name-300", "GET", "/v1/topics/" + "a" * 300, None, None, 400),
    ("name-300-produce", "POST", "/v1/topics/" + "a" * 300 + "/records", "text/plain", "v", 400),
    ("name-nul", "GET", "/v1/topics/a%00b", None, None, 400),
    ("name-nul-produce", "POST", "/v1/topics/a%00b/records", "text/plain", "v", 400),
    ("name-space", "GET", "/v1/topics/a%20b", None, None, 400),
    # topic names on create
    ("create-dotdot", "POST", "/v1/topics", "application/json", '{"name":".."}', 400),
    ("create-dot", "POST", "/v1/topics", "application/json", '{"name":"."}', 400),
    ("create-slash", "POST", "/v1/topics", "application/json", '{"name":"a/b"}', 400),
    ("create-escape", "POST", "/v1/topics", "application/json", '{"name":"../../escape"}', 400),
    ("create-300", "POST", "/v1/topics", "application/json", json.dumps({"name": "a" * 300}), 400),
    ("create-nul", "POST", "/v1/topics", "application/json", '{"name":"a\\u0000b"}', 400),
    ("create-empty-name", "POST", "/v1/topics", "application/json", '{"name":""}', 400),
    ("create-name-not-string", "POST", "/v1/topics", "application/json", '{"name":5}', 400),
    ("create-no-name", "POST", "/v1/topics", "application/json", '{"partitions":1}', 400),
    ("create-internal", "POST", "/v1/topics", "application/json", '{"name":"__internal"}', 400),
    ("create-malformed", "POST", "/v1/topics", "application/json", '{"name":', 400),
    ("create-not-object", "POST", "/v1/topics", "application/json", '["x"]', 400),
    # unknown topic / partition
    ("unknown-topic-get", "GET", "/v1/topics/nope", None, None, 404),
    ("unknown-topic-produce", "POST", "/v1/topics/nope/records", "text/plain", "v", 404),
    ("unknown-topic-read", "GET", "/v1/topics/nope/partitions/0/records", None, None, 404),
    ("unknown-topic-delete", "DELETE", "/v1/topics/nope", None, None, 404),
    ("unknown-topic-patch", "PATCH", "/v1/topics/nope", "application/json", '{"partitions":3}', 404),
    ("partition-out-of-range-read", "GET", f"/v1/topics/{TOPIC}/partitions/2/records", None, None, 404),
    ("partition-out-of-range-get", "GET", f"/v1/topics/{TOPIC}/partitions/99", None, None, 404),
    ("partition-out-of-range-offsets", "GET", f"/v1/topics/{TOPIC}/partitions/2/offsets", None, None, 404),
    ("partition-out-of-range-produce", "POST", RECORDS + "?partition=2", "text/plain", "v", 404),
    ("partition-out-of-range-json", "POST", RECORDS, "application/json", '{"records":[{"value":"x","partition":7}]}', 404),
    ("partition-negative-read", "GET", f"/v1/topics/{TOPIC}/partitions/-1/records", None, None, 400),
    ("partition-not-number", "GET", f"/v1/topics/{TOPIC}/partitions/zero/records", None, None, 400),
    ("partition-overflow", "GET", f"/v1/topics/{TOPIC}/partitions/99999999999/records", None, None, 400),
    # offsets and read parameters
    ("offset-negative", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?offset=-1", None, None, 400),
    ("offset-text", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?offset=soon", None, None, 400),
    ("offset-overflow", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?offset=99999999999999999999999", None, None, 400),
    ("offset-absurd", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?offset=999999999999", None, None, 416),
    ("offset-int64-max", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?offset=9223372036854775807", None, None, 416),
    ("offset-past-end-empty-partition", "GET", f"/v1/topics/{TOPIC}/partitions/1/records?offset=1", None, None, 416),
    ("wait-negative", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?wait_ms=-1", None, None, 400),
    ("wait-huge", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?wait_ms=999999999", None, None, 400),
    ("wait-text", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?wait_ms=long", None, None, 400),
    ("max-records-zero", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?max_records=0", None, None, 400),
    ("max-bytes-negative", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?max_bytes=-10", None, None, 400),
    ("format-unknown", "GET", f"/v1/topics/{TOPIC}/partitions/0/records?format=xml", None, None, 400),
    ("timestamp-lookup-text", "GET", f"/v1/topics/{TOPIC}/partitions/0/offsets?timestamp=noon", None, None, 400),
    ("acks-2", "POST", RECORDS + "?acks=2", "text/plain", "v", 400),
    ("acks-word", "POST", RECORDS + "?acks=some", "text/plain", "v", 400),
    # methods and routes
    ("method-put-topics", "PUT", "/v1/topics", "application/json", '{"name":"x"}', 405),
    ("method-delete-cluster", "DELETE", "/v1/cluster", None, None, 405),
    ("method-post-healthz", "POST", "/healthz", "text/plain", "", 405),
    ("method-get-records-on-topic", "PUT", RECORDS, "text/plain", "v", 405),
    ("method-post-read", "POST", f"/v1/topics/{TOPIC}/partitions/0/records", "text/plain", "v", 405),
    ("unknown-path", "GET", "/v2/topics", None, None, 404),
    ("unknown-subpath", "GET", f"/v1/topics/{TOPIC}/partitions/0/nope", None, None, 404),
    ("unknown-top-level-path", "GET", "/nope", None, None, 404),  # "/" itself is the REST Proxy v2 root
    # topic administration
    ("create-bad-config-value", "POST", "/v1/topics", "application/json", '{"name":"c1","configs":{"retention.ms":"abc"}}', 422),
    ("create-unknown-config", "POST", "/v1/topics", "application/json", '{"name":"c2","configs":{"colour":"red"}}', 422),
    ("create-segment-too-small", "POST", "/v1/topics", "application/json", '{"name":"c3","configs":{"segment.bytes":"100"}}', 422),
    ("create-compact", "POST", "/v1/topics", "application/json", '{"name":"c4","configs":{"cleanup.policy":"compact"}}', 422),
    ("create-retention-below-minus-one", "POST", "/v1/topics", "application/json", '{"name":"c5","configs":{"retention.bytes":"-7"}}', 422),
    ("create-configs-wrong-type", "POST", "/v1/topics", "application/json", '{"name":"c6","configs":"retention.ms=1"}', 400),
    ("create-duplicate", "POST", "/v1/topics", "application/json", json.dumps({"name": TOPIC, "partitions": 2}), 409),
    ("create-rf-3", "POST", "/v1/topics", "application/json", '{"name":"c7","replication_factor":3}', 422),
    ("create-partitions-0", "POST", "/v1/topics", "application/json", '{"name":"c8","partitions":0}', 422),
    ("create-partitions-negative", "POST", "/v1/topics", "application/json", '{"name":"c9","partitions":-3}', 422),
    ("create-partitions-huge", "POST", "/v1/topics", "application/json", '{"name":"c10","partitions":100000000}', 422),
    ("create-partitions-text", "POST", "/v1/topics", "application/json", '{"name":"c11","partitions":"two"}', 400),
    ("patch-shrink", "PATCH", f"/v1/topics/{TOPIC}", "application/json", '{"partitions":1}', 422),
    ("patch-unknown-field", "PATCH", f"/v1/topics/{TOPIC}", "application/json", '{"replication_factor":2}', 400),
    ("patch-bad-config", "PATCH", f"/v1/topics/{TOPIC}", "application/json", '{"configs":{"segment.ms":"0"}}', 422),
]


@pytest.mark.parametrize("name,method,path,ctype,body,status", CASES, ids=[c[0] for c in CASES])
def test_bad_request(env, name, method, path, ctype, body, status):
    b, _ = env
    headers = {"Content-Type": ctype} if ctype else {}
    r = b.raw(method, path, body.encode("utf-8", "surrogateescape") if body is not None else None, headers)
    err = assert_error(r, status)
    if status == 405:
        assert r.headers.get("allow"), f"405 without an Allow header: {r.headers}"
    if name == "offset-absurd":
        # The message names the valid range: log start 0, log end 3.
        assert re.search(r"\b0\b", err["message"]) and re.search(r"\b3\b", err["message"]), err


def test_failed_creates_left_no_topic(env):
    b, _ = env
    names = {t["name"] for t in b.get("/v1/topics").json()["topics"]}
    assert names == {TOPIC}, names
    assert sorted(os.listdir(os.path.join(b.data_dir, "topics"))) == [TOPIC]


def _send_oversized(b, path: str, total: int, chunked: bool) -> tuple[int, bytes, bytes]:
    """Streams a `total`-byte body without building it in memory; stops sending as soon as the
    server answers (it may refuse after the headers). Returns (status, body)."""
    sock = socket.create_connection((b.host, b.port), timeout=30)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {b.address}", "Content-Type: text/plain", "Connection: close"]
        head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if not chunked:
            # A too large Content-Length may be refused right after the headers; give the answer a
            # moment so we do not write into a closing socket (which can turn the answer into a reset).
            select.select([sock], [], [], 10.0)
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < total:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break  # answered early
                n = min(len(chunk), total - sent)
                piece = chunk[:n]
                sock.sendall(b"%x\r\n%s\r\n" % (n, piece) if chunked else piece)
                sent += n
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed; its answer may still be readable
        data = b""
        sock.settimeout(30)
        try:
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
                if b"\r\n\r\n" in data:
                    head_part, _, rest = data.partition(b"\r\n\r\n")
                    length = [l for l in head_part.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                    if length and len(rest) >= int(length[0].split(b":")[1]):
                        break
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1."), f"no HTTP answer to an oversized body (got {data[:200]!r})"
    head_part, _, rest = data.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ")[1])
    return status, head_part, rest


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversized_body_is_413(env, chunked):
    b, _ = env
    status, head, body = _send_oversized(b, RECORDS, 16 * 1024 * 1024 + 65536, chunked)

    class R:  # adapt to assert_error
        pass

    r = R()
    r.status_code = status
    r.text = body.decode("utf-8", "replace")
    r.headers = {l.split(b":", 1)[0].decode().lower(): l.split(b":", 1)[1].decode().strip()
                 for l in head.split(b"\r\n")[1:] if b":" in l}
    if b"transfer-encoding: chunked" in head.lower():
        pytest.fail(f"413 came chunked; this test reads only Content-Length bodies: {head!r}")
    assert_error(r, 413)
    # Nothing of it was appended.
    assert b.offsets(TOPIC, 0)["log_end_offset"] == 3


def test_broker_survived_and_wrote_nothing_outside_data_dir(env):
    b, before = env
    # Let any deferred work (a late file creation) happen before looking.
    time.sleep(0.2)
    assert b.is_running(), b.log_tail()
    assert b.get("/healthz").status_code == 200
    r = b.get(f"/v1/topics/{TOPIC}/partitions/0/records", params={"offset": 0})
    assert [x["value"] for x in r.json()["records"]] == ["v0", "v1", "v2"], "earlier records changed"
    after = tree(b.root, b.data_dir)
    assert after == before, f"appeared outside the data dir: {sorted(after - before)}; vanished: {sorted(before - after)}"
    # Inside the data dir, topic directories are only the real topic.
    assert sorted(os.listdir(os.path.join(b.data_dir, "topics"))) == [TOPIC]
    for dirpath, dirnames, filenames in os.walk(b.data_dir):
        for n in dirnames + filenames:
            assert "escape" not in n and "\x00" not in n and len(n) < 250, os.path.join(dirpath, n)
