"""WebSocket streams through the Python `websockets` library (issue #6), on one broker per module:

- 100,000 produce messages over `/v1/topics/{t}/ws`, pipelined, every ack's partition and offset
  checked (each partition's offsets are exactly 0..n-1);
- those records consumed by a group member over `/v1/groups/{g}/ws` with credit (never more
  records than granted), the connection killed mid-stream (no close frame), and a new member
  resuming from the committed offsets: nothing lost;
- two WebSocket members sharing a topic: when one drops, the other is told at once (a `rebalance`
  with every partition) and reads the rest; no record lost;
- hostile clients on the group socket: unmasked frames, lying lengths, oversize and binary messages
  each get their close code and the member leaves the group; clients that never read (with credit,
  or flooding pings) leave the broker's memory bounded, and it keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time

import pytest
import websockets


PRODUCE_MESSAGES = 100_000
PARTITIONS = 4
TOPIC = "wsg"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ws_url(b) -> str:
    return f"ws://{b.address}"


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def produce_pipelined(b, topic, count, partitions, window=900):
    """`count` produce messages of one record each (partition i % partitions), at most `window` in
    flight; returns {message id: (partition, offset)} from the acks."""
    acks: dict[int, tuple[int, int]] = {}
    slots = asyncio.Semaphore(window)
    async with websockets.connect(f"{ws_url(b)}/v1/topics/{topic}/ws", max_size=1 << 20) as ws:
        async def send():
            for i in range(count):
                await slots.acquire()
                # acks=1 (the leader appended it) keeps 100,000 round trips quick on a debug build;
                # every 1,000th waits for the fsync (acks=all) so both answers are exercised.
                acks = '"all"' if i % 1000 == 0 else '"1"'
                await ws.send('{"type":"produce","id":%d,"acks":%s,"records":[{"value":"m%d","partition":%d}]}' % (i, acks, i, i % partitions))

        async def receive():
            while len(acks) < count:
                a = json.loads(await ws.recv())
                assert a["type"] == "ack", a
                assert a["id"] not in acks, f"two answers for {a['id']}"
                [placement] = a["offsets"]
                assert placement["partition"] == a["id"] % partitions, a
                acks[a["id"]] = (placement["partition"], placement["offset"])
                slots.release()

        await asyncio.gather(send(), receive())
    return acks


@pytest.fixture(scope="module")
def wsb(module_broker):
    """The module's broker, with TOPIC holding PRODUCE_MESSAGES records produced over WebSocket."""
    b = module_broker
    b.create_topic(TOPIC, partitions=PARTITIONS)
    started = time.monotonic()
    b.acks = run(produce_pipelined(b, TOPIC, PRODUCE_MESSAGES, PARTITIONS))
    print(f"produced {PRODUCE_MESSAGES} messages over one socket in {time.monotonic() - started:.1f} s")
    return b


def test_100k_pipelined_produce_acks_have_the_right_partitions_and_offsets(wsb):
    by_partition: dict[int, list[int]] = {}
    for i, (p, o) in wsb.acks.items():
        by_partition.setdefault(p, []).append(o)
    assert sorted(by_partition) == list(range(PARTITIONS))
    for p, offsets in by_partition.items():
        assert sorted(offsets) == list(range(PRODUCE_MESSAGES // PARTITIONS)), f"partition {p}"
    # Each partition's acks follow the order the messages were sent in (one socket, one queue).
    for p in range(PARTITIONS):
        ids = sorted(i for i, (q, _) in wsb.acks.items() if q == p)
        assert [wsb.acks[i][1] for i in ids] == list(range(len(ids)))
    for p in range(PARTITIONS):
        assert wsb.offsets(TOPIC, p)["high_watermark"] == PRODUCE_MESSAGES // PARTITIONS


class Member:
    """One group member over a socket, counting credit."""

    def __init__(self, ws):
        self.ws = ws
        self.granted = 0
        self.received = 0
        self.generation = None
        self.assignment: list = []
        self.rebalances: list = []
        self.records: list[tuple[int, int, str]] = []  # (partition, offset, value)

    @classmethod
    async def join(cls, b, group, credit=0, **body):
        ws = await websockets.connect(f"{ws_url(b)}/v1/groups/{group}/ws", max_size=16 << 20)
        m = cls(ws)
        await ws.send(json.dumps({"type": "join", "topics": [body.pop("topic", TOPIC)], "auto_offset_reset": "earliest",
                                  "auto_commit": False, **body}))
        joined = json.loads(await ws.recv())
        assert joined["type"] == "joined", joined
        m.member_id = joined["member_id"]
        m.generation = joined["generation"]
        m.assignment = joined["assignment"]
        if credit:
            await m.grant(credit)
        return m

    async def grant(self, n):
        self.granted += n
        await self.ws.send(json.dumps({"type": "credit", "records": n}))

    async def next(self, timeout=20):
        """The next message; records are counted against credit."""
        msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if msg["type"] == "records":
            self.received += len(msg["records"])
            assert self.received <= self.granted, f"{self.received} records sent for {self.granted} granted"
            assert msg["generation"] == self.generation, (msg["generation"], self.generation)
            self.records += [(r["partition"], r["offset"], r["value"]) for r in msg["records"]]
        elif msg["type"] == "rebalance":
            self.generation = msg["generation"]
            self.assignment = msg["assignment"]
            self.rebalances.append(msg)
        else:
            assert msg["type"] == "committed", msg
        return msg

    def positions(self, records=None):
        """Next offset per partition after the records processed."""
        out: dict[int, int] = {}
        for p, o, _ in records if records is not None else self.records:
            out[p] = max(out.get(p, 0), o + 1)
        return out

    async def commit(self, positions, topic=TOPIC):
        await self.ws.send(json.dumps({"type": "commit", "id": "c", "generation": self.generation,
                                       "offsets": [{"topic": topic, "partition": p, "offset": o} for p, o in positions.items()]}))
        while True:
            msg = await self.next()
            if msg["type"] == "committed":
                return msg

    def kill(self):
        """Drop the TCP connection without a close frame."""
        self.ws.transport.abort()


def test_consume_with_credit_kill_mid_stream_and_resume_from_the_committed_offsets(wsb):
    async def scenario():
        total = PRODUCE_MESSAGES
        first = await Member.join(wsb, "wsc", credit=3000)
        assert len(first.assignment) == PARTITIONS
        # Read with a moving window of credit: 1,000 more whenever 1,000 were taken.
        # Credit first, then wait: commit() below reads records without granting any, so the
        # window may be used up exactly when it returns.
        while first.received < 50_000:
            while first.granted - first.received < 2000:
                await first.grant(1000)
            await first.next()
        processed = list(first.records)
        committed = first.positions(processed)
        await first.commit(committed)
        # A few thousand more arrive (not committed), then the connection dies mid-stream.
        while first.received < 55_000:
            while first.granted - first.received < 2000:
                await first.grant(1000)
            await first.next()
        first.kill()

        second = await Member.join(wsb, "wsc", credit=total)
        seen = {(p, o) for p, o, _ in processed}
        while len(seen) < total:
            msg = await second.next()
            if msg["type"] == "records":
                seen.update((r["partition"], r["offset"]) for r in msg["records"])
        await second.ws.close()
        return processed, committed, second

    processed, committed, second = run(scenario())
    # The second member started exactly at the committed offsets (the socket's leave made it the
    # only member; the killed member's uncommitted records are read again, none skipped).
    firsts: dict[int, int] = {}
    for p, o, _ in second.records:
        firsts.setdefault(p, o)
    for p, o in committed.items():
        assert firsts.get(p, o) == o, f"partition {p} resumed at {firsts.get(p)}, committed {o}"
    seen = {(p, o) for p, o, _ in processed} | {(p, o) for p, o, _ in second.records}
    assert seen == {(p, o) for p in range(PARTITIONS) for o in range(PRODUCE_MESSAGES // PARTITIONS)}
    assert len(second.records) == len({(p, o) for p, o, _ in second.records}), "one member read a record twice"
    values = {v for _, _, v in processed} | {v for _, _, v in second.records}
    assert len(values) == PRODUCE_MESSAGES


def test_two_websocket_members_rebalance_when_one_disconnects(wsb):
    topic, partitions, per_partition = "wsr", 6, 300
    wsb.create_topic(topic, partitions=partitions)
    for p in range(partitions):
        r = wsb.produce_json(topic, [{"value": f"r{p}-{i}", "partition": p} for i in range(per_partition)])
        assert r.status_code == 200

    async def scenario():
        a = await Member.join(wsb, "wsr-g", topic=topic, session_timeout_ms=60_000)
        b = await Member.join(wsb, "wsr-g", topic=topic, session_timeout_ms=60_000)
        while len(a.assignment) != partitions // 2:  # a hears of b's join (a heartbeat: no credit yet)
            await a.next()
        assert len(b.assignment) == partitions // 2
        assert {(x["topic"], x["partition"]) for x in a.assignment}.isdisjoint({(x["topic"], x["partition"]) for x in b.assignment})
        # Both read and commit in steps of 50; b dies holding 50 records it did not commit.
        for m in (a, b):
            await m.grant(300)
        while b.received < 300:
            await b.next()
        await b.commit(b.positions(b.records[:250]), topic=topic)
        b_processed = b.records[:250]
        b.kill()
        dropped_at = time.monotonic()
        while len(a.assignment) != partitions:
            await a.next()
            if a.granted - a.received < 100:
                await a.grant(100)
        noticed_after = time.monotonic() - dropped_at
        assert a.rebalances[-1]["assignment"] == a.assignment
        await a.grant(partitions * per_partition)
        everything = {(p, o) for p in range(partitions) for o in range(per_partition)}
        while {(p, o) for p, o, _ in a.records} | {(p, o) for p, o, _ in b_processed} != everything:
            await a.next()
        await a.ws.close()
        return a, b_processed, noticed_after

    a, b_processed, noticed_after = run(scenario())
    # At once: the socket's close is a leave, not a session expiry (60 s here).
    assert noticed_after < 20, f"the rebalance came {noticed_after:.1f} s after the drop"
    # a read b's uncommitted tail again, from b's committed offsets on.
    b_next = {}
    for p, o, _ in b_processed:
        b_next[p] = max(b_next.get(p, 0), o + 1)
    after_rebalance = {}
    for p, o, _ in a.records:
        if p in b_next:
            after_rebalance.setdefault(p, o)
    for p, o in b_next.items():
        assert after_rebalance.get(p) == o, f"partition {p}: a started at {after_rebalance.get(p)}, b committed {o}"
    assert wait_no_members(wsb, "wsr-g")


# -- hostile clients on the group socket ---------------------------------------------------------

def frame(opcode: int, payload: bytes, *, fin=True, mask=True, length=None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawSocket:
    def __init__(self, b, path, rcvbuf=None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(15)
        self.s.connect((b.host, b.port))
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: {b.address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            assert chunk, "closed during the handshake"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, data: bytes):
        self.s.sendall(data)

    def send_json(self, obj):
        self.send(frame(1, json.dumps(obj).encode()))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def read_frame(self):
        self._need(2)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        at = 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return op, payload

    def close_code(self):
        """Reads until the server's close frame; its code (None if the connection just ended)."""
        try:
            while True:
                op, payload = self.read_frame()
                if op == 8:
                    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (EOFError, ConnectionResetError):
            return None

    def close(self):
        self.s.close()


def wait_no_members(b, group, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = b.get(f"/v1/groups/{group}")
        # A group left with no members and no committed offsets is gone (404).
        if r.status_code == 404 or (r.status_code == 200 and r.json()["members"] == []):
            return True
        time.sleep(0.1)
    return False


HOSTILE = {
    "unmasked frame": (lambda: frame(1, b'{"type":"credit","records":1}', mask=False), 1002),
    "64-bit length with the top bit set": (lambda: bytes([0x81, 0xFF]) + struct.pack(">Q", 1 << 63) + b"\0\0\0\0", 1002),
    "length claiming 2 GiB": (lambda: bytes([0x81, 0xFF]) + struct.pack(">Q", 2 << 30) + b"\0\0\0\0" + b"x" * 100, 1009),
    "non-minimal length encoding": (lambda: bytes([0x81, 0xFE, 0x00, 0x05]) + b"\0\0\0\0" + b"hello", 1002),
    "oversize message": (lambda: frame(1, b" " * (2 << 20)), 1009),
    "oversize fragmented message": (lambda: frame(1, b" " * (400 << 10), fin=False) + frame(0, b" " * (400 << 10), fin=False)
                                    + frame(0, b" " * (400 << 10)), 1009),
    "binary message": (lambda: frame(2, b"\x00\x01"), 1003),
    "control frame longer than 125 bytes": (lambda: frame(9, b"p" * 126), 1002),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_frames_on_the_group_socket_get_their_close_code(wsb, case):
    make, expected = HOSTILE[case]
    group = "hostile-" + case.replace(" ", "-")
    s = RawSocket(wsb, f"/v1/groups/{group}/ws")
    try:
        s.send_json({"type": "join", "topics": [TOPIC]})
        op, payload = s.read_frame()
        assert op == 1 and json.loads(payload)["type"] == "joined"
        try:
            s.send(make())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before a large frame is fully sent
        assert s.close_code() == expected, case
    finally:
        s.close()
    assert wsb.get("/healthz").status_code == 200
    assert wait_no_members(wsb, group), "the member did not leave with its socket"


def test_bad_messages_are_errors_and_a_silent_socket_is_closed(wsb):
    s = RawSocket(wsb, "/v1/groups/quiet-g/ws")
    try:
        for bad, code in [("not json", 40001), ('{"type":"nonsense"}', 40001), ('{"type":"credit","records":-1}', 40001),
                          ('{"type":"commit","offsets":[]}', 40903), ('{"type":"join","topics":"x"}', 40001)]:
            s.send(frame(1, bad.encode()))
            op, payload = s.read_frame()
            assert op == 1 and json.loads(payload)["error_code"] == code, (bad, payload)
        # No join within 10 s: closed with 1008.
        assert s.close_code() == 1008
    finally:
        s.close()


def test_clients_that_never_read_leave_memory_bounded(wsb):
    """Six group sockets grant unlimited credit over a ~30 MB log and never read; two more flood
    pings without reading the pongs. Buffering the log per socket would be 200 MB and more; the
    bound allows 8 MiB per socket plus 48 MiB."""
    topic = "wsbig"
    wsb.create_topic(topic, partitions=2)
    chunk = "w" * 10_000
    for k in range(30):
        r = wsb.produce_json(topic, [{"value": chunk, "partition": k % 2} for _ in range(100)])
        assert r.status_code == 200
    baseline = rss_bytes(wsb.pid)
    stalled = []
    for i in range(6):
        s = RawSocket(wsb, f"/v1/groups/stall-{i}/ws", rcvbuf=4096)
        s.send_json({"type": "join", "topics": [topic], "auto_offset_reset": "earliest"})
        s.send_json({"type": "credit", "records": 1 << 30})
        stalled.append(s)
    flooders = []
    for i in range(2):
        s = RawSocket(wsb, f"/v1/groups/flood-{i}/ws", rcvbuf=4096)
        s.send_json({"type": "join", "topics": [topic]})
        s.s.settimeout(0.5)
        flooders.append(s)
    try:
        pings = frame(9, b"p" * 125) * 2000
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and flooders:
            for s in list(flooders):
                try:
                    s.send(pings)
                except (socket.timeout, BrokenPipeError, ConnectionResetError):
                    flooders.remove(s)  # the kernel stopped taking them: the server stopped reading or closed
        time.sleep(1)
        grown = rss_bytes(wsb.pid) - baseline
        print(f"RSS grew {grown / 2**20:.1f} MiB with 6 stalled group sockets and 2 ping flooders")
        assert grown < 8 * 8 * 2**20 + 48 * 2**20, f"RSS grew by {grown / 2**20:.0f} MiB"
        assert wsb.get("/healthz").status_code == 200
        assert wsb.read(topic, 0, 0, max_records=1)["records"]
        # The flooders were closed (1008 server-side): their members left.
        assert wait_no_members(wsb, "flood-0") and wait_no_members(wsb, "flood-1")
        # A stalled socket still delivers in order once its client reads.
        s = stalled[0]
        s.s.settimeout(15)
        op, payload = s.read_frame()
        assert json.loads(payload)["type"] == "joined"
        offsets = {0: 0, 1: 0}
        while sum(offsets.values()) < 3000:
            op, payload = s.read_frame()
            msg = json.loads(payload)
            assert msg["type"] == "records", msg
            for r in msg["records"]:
                assert r["offset"] == offsets[r["partition"]]
                offsets[r["partition"]] += 1
    finally:
        for s in stalled + flooders:
            s.close()
    for i in range(6):
        assert wait_no_members(wsb, f"stall-{i}")


def test_sigterm_closes_group_sockets_with_1001_and_exits_zero(broker):
    broker.create_topic("bye", partitions=2)
    sockets = []
    for i in range(3):
        s = RawSocket(broker, "/v1/groups/bye-g/ws")
        s.send_json({"type": "join", "topics": ["bye"]})
        s.send_json({"type": "credit", "records": 100})  # a poll is parked on each
        sockets.append(s)
    for s in sockets:
        op, payload = s.read_frame()
        assert json.loads(payload)["type"] == "joined"
    time.sleep(0.3)
    code = broker.terminate()
    try:
        for s in sockets:
            assert s.close_code() == 1001
    finally:
        for s in sockets:
            s.close()
    assert code == 0
