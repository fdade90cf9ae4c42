"""Runs every curl command of README.md's ```sh blocks, as written, against one started broker.

Only `localhost:8082` is rewritten to the test broker's address. Each command must exit 0 and
print JSON, Prometheus text, nothing (DELETE), or — when it asks for a stream with an Accept
header — well-formed SSE / NDJSON carrying exactly `stream_limit` consecutive records; a command with a trailing `# 4xx` comment must print a JSON
error whose error_code starts with that status; every other JSON answer must not be an error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
MIN_CURL_LINES = 10
EXPECTED_STATUS = re.compile(r"#\s*(\d{3})\b[^'\"]*$")
PROMETHEUS_LINE = re.compile(
    r"^(#\s+(HELP|TYPE)\s+\S+.*|#.*|[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})?\s+[-+0-9.eE]+(Inf|NaN)?(\s+\d+)?)$")


def readme_curl_commands(text: str) -> list[str]:
    """curl lines of ```sh blocks: continuation lines (ending in `\\`) joined; lines that start with
    `curl ` or pipe into curl (`printf ... | curl ...`)."""
    commands = []
    # ```sh cluster blocks are the 3-node session: test_readme_cluster.py runs those.
    for block in re.findall(r"^```sh(?! cluster)[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        joined: list[str] = []
        pending = ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            joined.append(pending + line)
            pending = ""
        if pending:
            joined.append(pending)
        for line in joined:
            s = line.strip()
            if s.startswith("curl ") or re.search(r"\|\s*curl\s", s):
                commands.append(s)
    return commands


def check_sse(text: str, where: str) -> list[dict]:
    """Server-Sent Events: blank lines, `: comments` and `field: value` lines; each `data:` is JSON.
    Returns the data of the `record` events."""
    records = []
    event = {}
    for line in text.split("\n") + [""]:
        line = line.rstrip("\r")
        if line == "":
            if event.get("event", "message") == "record" and "data" in event:
                records.append(event["data"])
            event = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        assert field in ("event", "data", "id", "retry"), f"not an SSE line: {line!r}; {where}"
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            try:
                event["data"] = json.loads(value)
            except ValueError:
                raise AssertionError(f"SSE data is not JSON: {value[:200]!r}; {where}")
        else:
            event[field] = value
    return records


def check_ndjson(text: str, where: str) -> list[dict]:
    """One JSON read result per line; returns all their records."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"NDJSON line is not JSON: {line[:200]!r}; {where}")
        assert isinstance(obj, dict) and "error_code" not in obj, f"NDJSON line is an error: {line[:200]}; {where}"
        records.extend(obj.get("records", []))
    return records


def is_prometheus(text: str) -> bool:
    lines = [l for l in text.splitlines() if l.strip()]
    return bool(lines) and all(PROMETHEUS_LINE.match(l) for l in lines) and any(not l.startswith("#") for l in lines)


def test_readme_has_enough_curl_lines():
    with open(README, encoding="utf-8") as f:
        commands = readme_curl_commands(f.read())
    assert len(commands) >= MIN_CURL_LINES, f"README.md has only {len(commands)} curl commands: {commands}"


def test_readme_curl_session(broker):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    with open(README, encoding="utf-8") as f:
        commands = readme_curl_commands(f.read())
    assert len(commands) >= MIN_CURL_LINES, f"README.md has only {len(commands)} curl commands"
    deleted_topics = []
    for i, command in enumerate(commands):
        assert "localhost:8082" in command, f"curl line {i} does not talk to localhost:8082: {command}"
        rewritten = command.replace("localhost:8082", broker.address)
        proc = subprocess.run(["bash", "-c", rewritten], capture_output=True, timeout=30)
        out = proc.stdout.decode("utf-8", "replace")
        where = f"README curl line {i}: {command}\noutput: {out[:1000]!r}\nstderr: {proc.stderr[:500]!r}"
        assert proc.returncode == 0, f"exit status {proc.returncode}; {where}"
        expected = EXPECTED_STATUS.search(command)
        if out.strip() == "":
            # Only 204s have no body: DELETEs, and REST Proxy v2 consumer calls that answer 204.
            if "/consumers/" in command or (re.search(r"-X\s+DELETE\b", command) and "/v1/groups/" in command):
                continue
            assert re.search(r"-X\s+DELETE\b", command), f"empty output; {where}"
            m = re.search(r"/v1/topics/([A-Za-z0-9._-]+)", command)
            assert m, where
            deleted_topics.append(m.group(1))
            gone = broker.get(f"/v1/topics/{m.group(1)}")
            assert gone.status_code == 404, f"topic still there after DELETE ({gone.status_code}); {where}"
            continue
        streamed = None
        if "text/event-stream" in command:
            assert expected is None, where
            streamed = check_sse(out, where)
        elif re.search(r"Accept:\s*application/x-ndjson", command):
            assert expected is None, where
            streamed = check_ndjson(out, where)
        if streamed is not None:
            limit = re.search(r"stream_limit=(\d+)", command)
            assert streamed, f"the stream delivered no records; {where}"
            if limit:
                assert len(streamed) == int(limit.group(1)), f"{len(streamed)} records for stream_limit={limit.group(1)}; {where}"
            offsets = [r["offset"] for r in streamed]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"stream offsets {offsets}; {where}"
            start = re.search(r"offset=(\d+)", command)
            if start:
                assert offsets[0] == int(start.group(1)), f"stream started at {offsets[0]}; {where}"
            continue
        try:
            body = json.loads(out)
        except ValueError:
            assert expected is None, f"expected a JSON error {expected.group(1)}; {where}"
            assert is_prometheus(out), f"output is neither JSON nor Prometheus text; {where}"
            continue
        if expected:
            status = expected.group(1)
            assert isinstance(body, dict) and isinstance(body.get("error_code"), int), f"expected a JSON error; {where}"
            assert str(body["error_code"])[:3] == status, f"error_code {body['error_code']} is not a {status}; {where}"
            assert isinstance(body.get("message"), str) and body["message"], where
        else:
            assert not (isinstance(body, dict) and "error_code" in body), f"unexpected error answer; {where}"
    assert deleted_topics, "the README session never deleted a topic (expected the DELETE example)"


def readme_python_blocks(text: str) -> list[str]:
    return [b for b in re.findall(r"^```python[^\n]*\n(.*?)^```", text, flags=re.S | re.M) if "127.0.0.1:8082" in b]


def test_readme_python_examples(broker):
    """The README's Python examples (WebSocket produce and consume) run as written against a broker
    that has the `orders` topic the curl session creates."""
    with open(README, encoding="utf-8") as f:
        blocks = readme_python_blocks(f.read())
    if not blocks:
        pytest.skip("README has no Python example that talks to the broker")
    imports = set(re.findall(r"^\s*import ([\w, ]+)", "\n".join(blocks), flags=re.M))
    for name in {n.strip() for line in imports for n in line.split(",")}:
        try:
            __import__(name)
        except ImportError:
            pytest.skip(f"the README's Python example needs {name} (pip install {name})")
    broker.create_topic("orders", partitions=3)
    for i, block in enumerate(blocks):
        code = block.replace("127.0.0.1:8082", broker.address).replace("localhost:8082", broker.address)
        p = subprocess.run(["python3", "-c", code], capture_output=True, timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        assert p.returncode == 0, f"README Python block {i} failed ({p.returncode}): {p.stderr.decode()[-800:]}\n{block}"
        assert out.strip(), f"README Python block {i} printed nothing"
        assert "error" not in out.lower(), f"README Python block {i} printed an error: {out[:800]}"
    # The WebSocket example produced m0..m2 to partition 0 and read them back.
    values = [x["value"] for x in broker.read("orders", 0)["records"]]
    if any("m0" in b for b in blocks):
        assert values[:3] == ["m0", "m1", "m2"], values
    # The group WebSocket example read them as member of `billing`, committed and left by closing.
    if any("/v1/groups/billing/ws" in b for b in blocks):
        for _ in range(50):  # the leave follows the close by a moment
            d = broker.get("/v1/groups/billing").json()
            if d["members"] == []:
                break
            time.sleep(0.1)
        assert d["members"] == [], d
        committed = {(p["topic"], p["partition"]): p["committed_offset"] for p in d["partitions"]}
        assert committed.get(("orders", 0)) == 3, d
