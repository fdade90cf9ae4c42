"""Process test: a real `petrel serve`, driven over WebSocket with the `websockets` library.

Produces 10,000 records with acks=all over one socket (pipelined, a bounded window in flight), then
consumes them with credit and checks that every record arrives exactly once, in order.

The binary is $PETREL_BIN, else .build/debug/petrel (run `swift build --product petrel` first).
"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest
import requests
import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("PETREL_BIN", os.path.join(ROOT, ".build", "debug", "petrel"))
RECORDS = 10_000


@pytest.fixture
def broker():
    if not os.path.exists(BINARY):
        pytest.skip(f"{BINARY} not built (swift build --product petrel)")
    data = tempfile.mkdtemp(prefix="petrel-ws-")
    process = subprocess.Popen(
        [BINARY, "serve", "--port", "0", "--data-dir", data],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for _ in range(50):
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("listening on "):
                url = line.split("listening on ", 1)[1].strip()
                break
        assert url, "petrel did not report its address"
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data, ignore_errors=True)


async def produce_all(ws_url, count, window=200, batch=10):
    """Sends `count` records in requests of `batch`, at most `window` requests in flight."""
    acked = {}
    async with websockets.connect(f"{ws_url}/v1/topics/ws-test/ws", max_size=16 << 20) as socket:
        sent = 0
        in_flight = 0
        next_id = 0
        while sent < count or in_flight:
            while sent < count and in_flight < window:
                records = [{"value": f"record-{sent + i}"} for i in range(min(batch, count - sent))]
                await socket.send(json.dumps({"type": "produce", "id": str(next_id), "acks": "all", "records": records}))
                acked[str(next_id)] = None
                next_id += 1
                sent += len(records)
                in_flight += 1
            answer = json.loads(await socket.recv())
            assert answer["type"] == "ack", answer
            assert acked[answer["id"]] is None, f"two answers for {answer['id']}"
            acked[answer["id"]] = [o["offset"] for o in answer["offsets"]]
            in_flight -= 1
    offsets = sorted(o for placements in acked.values() for o in placements)
    assert offsets == list(range(count)), "every record acknowledged once, at offsets 0..count-1"


async def consume_all(ws_url, count, credit=700):
    values = []
    async with websockets.connect(f"{ws_url}/v1/topics/ws-test/partitions/0/ws?offset=0", max_size=16 << 20) as socket:
        granted = credit
        await socket.send(json.dumps({"type": "credit", "records": credit}))
        expected_next = 0
        while len(values) < count:
            message = json.loads(await asyncio.wait_for(socket.recv(), timeout=30))
            assert message["type"] == "records", message
            for record in message["records"]:
                assert record["offset"] == expected_next, "in order, none skipped or repeated"
                expected_next += 1
                values.append(record["value"])
            assert len(values) <= granted, "the server never sends beyond the credit"
            assert message["next_offset"] == expected_next
            if granted - len(values) < credit // 2:
                await socket.send(json.dumps({"type": "credit", "records": credit}))
                granted += credit
    return values


def test_produce_then_consume_over_websocket(broker):
    created = requests.post(f"{broker}/v1/topics", json={"name": "ws-test", "partitions": 1}, timeout=10)
    assert created.status_code == 201, created.text
    ws_url = broker.replace("http://", "ws://", 1)
    asyncio.run(produce_all(ws_url, RECORDS))
    values = asyncio.run(consume_all(ws_url, RECORDS))
    assert values == [f"record-{i}" for i in range(RECORDS)]


def test_bad_messages_get_errors_and_the_socket_stays_open(broker):
    requests.post(f"{broker}/v1/topics", json={"name": "ws-test", "partitions": 1}, timeout=10)
    ws_url = broker.replace("http://", "ws://", 1)

    async def run():
        async with websockets.connect(f"{ws_url}/v1/topics/ws-test/ws") as socket:
            await socket.send("not json")
            error = json.loads(await socket.recv())
            assert error["type"] == "error" and error["error_code"] == 40001
            await socket.send(json.dumps({"type": "produce", "id": 7, "records": [{"value": "ok"}]}))
            ack = json.loads(await socket.recv())
            assert ack == {"type": "ack", "id": 7, "offsets": [{"partition": 0, "offset": 0}]}

    asyncio.run(run())
