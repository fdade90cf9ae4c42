"""Consumer groups on one `petrel serve` (issue #5's acceptance tests, single node): the native
`/v1/groups` API contract — every endpoint with its status and body, the error cases with their
status and error_code, rebalances on join, leave and session expiry, manual assignment, offset
reset and delete rules, the assignors' documented spreads, committed offsets surviving a restart,
and a bad-input battery after which the broker is still up.

No test asserts a duration: waits are generous and eventually-style (wait_until), and a long-poll
that must end early is given the maximum wait_ms and a far longer client timeout."""

from __future__ import annotations

import json
import threading

import pytest

from cluster_support import wait_until
from petrel_support import assert_error

BIG_TIMEOUT = 90  # client timeout for long-polls that a rebalance must end early


# -- helpers ---------------------------------------------------------------------------------------

def join(b, group, expect=200, **body):
    r = b.post(f"/v1/groups/{group}/members", json=body)
    assert r.status_code == expect, f"join {group} {body}: {r.status_code} {r.text}"
    return r.json()


def poll(b, group, member, timeout=None, **params):
    r = b.get(f"/v1/groups/{group}/members/{member}/records", params=params,
              **({"timeout": timeout} if timeout else {}))
    assert r.status_code == 200, f"poll {group}/{member}: {r.status_code} {r.text}"
    return r.json()


def commit(b, group, offsets, member=None, generation=None, expect=200):
    body: dict = {"offsets": offsets}
    if member is not None:
        body["member_id"] = member
    if generation is not None:
        body["generation"] = generation
    r = b.post(f"/v1/groups/{group}/offsets", json=body)
    if expect != 200:
        return r
    assert r.status_code == 200, f"commit {group} {body}: {r.status_code} {r.text}"
    return r.json()


def describe(b, group):
    r = b.get(f"/v1/groups/{group}")
    assert r.status_code == 200, f"describe {group}: {r.status_code} {r.text}"
    return r.json()


def heartbeat(b, group, member):
    r = b.post(f"/v1/groups/{group}/members/{member}/heartbeat")
    assert r.status_code == 200, f"heartbeat {group}/{member}: {r.status_code} {r.text}"
    return r.json()


def committed(b, group, **params) -> dict:
    r = b.get(f"/v1/groups/{group}/offsets", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["group"] == group
    return {(o["topic"], o["partition"]): o["offset"] for o in body["offsets"]}


def tps(assignment) -> list[tuple[str, int]]:
    return [(a["topic"], a["partition"]) for a in assignment]


def produce(b, topic, records):
    r = b.produce_json(topic, records)
    assert r.status_code == 200, r.text
    return r.json()["offsets"]


def fill(b, topic, partitions, per_partition, prefix="v"):
    """`per_partition` records in each partition; returns {(p, offset): value}."""
    out = {}
    for p in range(partitions):
        values = [f"{prefix}-{p}-{i}" for i in range(per_partition)]
        offs = produce(b, topic, [{"value": v, "partition": p} for v in values])
        for v, o in zip(values, offs):
            assert o["partition"] == p
            out[(p, o["offset"])] = v
    return out


def drain(b, group, member, want: int, **params) -> list[dict]:
    """Polls until `want` records arrived (bounded); returns them in order of delivery."""
    got: list[dict] = []

    def enough():
        got.extend(poll(b, group, member, wait_ms=200, **params)["records"])
        return len(got) >= want
    wait_until(enough, 30, interval=0, what=f"{want} records for {member}")
    return got


def membership_shape(m: dict, group: str):
    assert set(m) >= {"group", "member_id", "generation", "assignment", "session_timeout_ms", "auto_commit"}, m
    assert m["group"] == group
    assert isinstance(m["member_id"], str) and m["member_id"]
    assert isinstance(m["generation"], int) and m["generation"] >= 1
    assert tps(m["assignment"]) == sorted(tps(m["assignment"])), "assignment must be sorted"


# -- the contract ------------------------------------------------------------------------------------

def test_join_poll_commit_describe_leave(broker):
    broker.create_topic("orders", partitions=3)
    produced = {}
    for p in range(3):
        for i, o in enumerate(produce(broker, "orders", [{"value": f"o{p}-{i}", "key": f"k{p}", "partition": p,
                                                           "headers": {"h": f"x{i}"}} for i in range(4)])):
            produced[(p, o["offset"])] = (f"o{p}-{i}", f"k{p}", f"x{i}", o["timestamp"])

    m = join(broker, "g1", topics=["orders"], client_id="cli-1", session_timeout_ms=20000,
             auto_offset_reset="earliest")
    membership_shape(m, "g1")
    assert m["generation"] == 1
    assert tps(m["assignment"]) == [("orders", 0), ("orders", 1), ("orders", 2)]
    assert m["session_timeout_ms"] == 20000 and m["auto_commit"] is True
    member = m["member_id"]

    # One poll answers the membership plus the records of every assigned partition.
    page = poll(broker, "g1", member, max_records=500)
    assert {k: page[k] for k in ("group", "member_id", "generation")} == {"group": "g1", "member_id": member, "generation": 1}
    assert tps(page["assignment"]) == tps(m["assignment"])
    seen = {}
    for rec in page["records"]:
        assert set(rec) >= {"topic", "partition", "offset", "timestamp", "key", "value", "headers"}, rec
        assert rec["topic"] == "orders"
        seen[(rec["partition"], rec["offset"])] = (rec["value"], rec["key"], rec["headers"][0]["value"], rec["timestamp"])
        assert rec["headers"] == [{"key": "h", "value": produced[(rec["partition"], rec["offset"])][2]}]
    assert seen == produced
    per_partition = {}
    for rec in page["records"]:
        per_partition.setdefault(rec["partition"], []).append(rec["offset"])
    assert all(offs == sorted(offs) for offs in per_partition.values()), "records of a partition come in order"

    # Nothing committed yet (auto-commit happens on the next poll) ...
    assert committed(broker, "g1") == {}
    # ... the next poll commits what the previous one delivered: committed = next offset to read.
    assert poll(broker, "g1", member)["records"] == []
    ends = {p: max(o for (q, o) in produced if q == p) + 1 for p in range(3)}
    assert committed(broker, "g1") == {("orders", p): ends[p] for p in range(3)}
    assert committed(broker, "g1", member_id=member) == {("orders", p): ends[p] for p in range(3)}
    assert committed(broker, "g1", topic="orders") == {("orders", p): ends[p] for p in range(3)}
    assert committed(broker, "g1", topic="orders", partition=1) == {("orders", 1): ends[1]}

    hb = heartbeat(broker, "g1", member)
    assert {k: hb[k] for k in ("group", "member_id", "generation", "session_timeout_ms", "auto_commit")} == \
        {"group": "g1", "member_id": member, "generation": 1, "session_timeout_ms": 20000, "auto_commit": True}
    assert "records" not in hb

    # Two more records in partition 2; an explicit commit with member and generation stores metadata.
    produce(broker, "orders", [{"value": "late-0", "partition": 2}, {"value": "late-1", "partition": 2}])
    got = poll(broker, "g1", member, wait_ms=5000)["records"]
    assert [r["value"] for r in got] == ["late-0", "late-1"]
    assert commit(broker, "g1", [{"topic": "orders", "partition": 2, "offset": got[-1]["offset"] + 1, "metadata": "m-1"}],
                  member=member, generation=1) == {"committed": 1}
    r = broker.get("/v1/groups/g1/offsets", params={"topic": "orders", "partition": 2})
    assert r.json() == {"group": "g1", "offsets": [{"topic": "orders", "partition": 2, "offset": got[-1]["offset"] + 1, "metadata": "m-1"}]}

    d = describe(broker, "g1")
    assert d["group"] == "g1" and d["state"] == "Stable" and d["generation"] == 1 and d["assignor"] == "sticky"
    assert d["coordinator"] == 1
    assert len(d["members"]) == 1
    dm = d["members"][0]
    assert dm["member_id"] == member and dm["client_id"] == "cli-1" and dm["topics"] == ["orders"]
    assert dm["manual"] is False and dm["session_timeout_ms"] == 20000
    assert tps(dm["assignment"]) == tps(m["assignment"])
    assert isinstance(dm["idle_ms"], int) and dm["idle_ms"] >= 0
    hws = {p: broker.offsets("orders", p)["high_watermark"] for p in range(3)}
    for part in d["partitions"]:
        p = part["partition"]
        assert part["topic"] == "orders" and part["member_id"] == member
        assert part["high_watermark"] == hws[p]
        assert part["committed_offset"] == (got[-1]["offset"] + 1 if p == 2 else ends[p])
        assert part["lag"] == part["high_watermark"] - part["committed_offset"] == 0
    assert d["total_lag"] == 0

    # Lag shows up when records arrive and nobody reads them.
    produce(broker, "orders", [{"value": f"lag-{i}", "partition": 0} for i in range(3)])
    d = describe(broker, "g1")
    assert [p["lag"] for p in d["partitions"]] == [3, 0, 0] and d["total_lag"] == 3

    r = broker.get("/v1/groups")
    assert r.status_code == 200
    assert {"group": "g1", "state": "Stable", "members": 1, "coordinator": 1} in r.json()["groups"]

    # Leave: 204, no body; the group stays (Empty, its offsets kept) and a rebalance bumped the generation.
    r = broker.delete(f"/v1/groups/g1/members/{member}")
    assert r.status_code == 204 and r.content == b""
    d = describe(broker, "g1")
    assert d["state"] == "Empty" and d["members"] == [] and d["generation"] == 2
    assert all(p["member_id"] is None for p in d["partitions"])
    assert {g["group"]: g for g in broker.get("/v1/groups").json()["groups"]}["g1"]["members"] == 0
    assert_error(broker.get(f"/v1/groups/g1/members/{member}/records"), 404)
    # A new member resumes from the committed offsets: only the 3 unread records of partition 0.
    m2 = join(broker, "g1", topics=["orders"], auto_offset_reset="earliest")
    assert m2["member_id"] != member and m2["generation"] == 3
    assert [r["value"] for r in drain(broker, "g1", m2["member_id"], 3)] == ["lag-0", "lag-1", "lag-2"]


def test_leave_commits_what_was_delivered_and_auto_commit_off(broker):
    broker.create_topic("t", partitions=2)
    fill(broker, "t", 2, 5)
    # auto_commit=false: polls never commit, leaving does not commit.
    m = join(broker, "manual-commit", topics=["t"], auto_commit=False, auto_offset_reset="earliest")
    assert m["auto_commit"] is False
    assert len(drain(broker, "manual-commit", m["member_id"], 10)) == 10
    poll(broker, "manual-commit", m["member_id"])
    assert committed(broker, "manual-commit") == {}
    # An empty commit by the member stores its positions (everything delivered so far).
    assert commit(broker, "manual-commit", [], member=m["member_id"]) == {"committed": 2}
    assert committed(broker, "manual-commit") == {("t", 0): 5, ("t", 1): 5}
    assert broker.delete(f"/v1/groups/manual-commit/members/{m['member_id']}").status_code == 204

    # auto_commit=true: leaving commits what the last poll delivered.
    a = join(broker, "auto", topics=["t"], auto_offset_reset="earliest")
    assert len(drain(broker, "auto", a["member_id"], 10)) == 10
    assert broker.delete(f"/v1/groups/auto/members/{a['member_id']}").status_code == 204
    assert committed(broker, "auto") == {("t", 0): 5, ("t", 1): 5}


def test_commit_error_cases(broker):
    broker.create_topic("t", partitions=2)
    a = join(broker, "ge", topics=["t"], member_name="a")
    b = join(broker, "ge", topics=["t"], member_name="b")
    assert a["member_id"] == "a" and b["member_id"] == "b" and b["generation"] == 2
    entry = [{"topic": "t", "partition": 0, "offset": 1}]
    owner_of_0 = "a" if ("t", 0) in tps(heartbeat(broker, "ge", "a")["assignment"]) else "b"
    other = "b" if owner_of_0 == "a" else "a"

    body = assert_error(commit(broker, "ge", entry, member=owner_of_0, generation=1, expect=409), 409)
    assert body["error_code"] == 40904  # stale generation
    body = assert_error(commit(broker, "ge", entry, expect=409), 409)
    assert body["error_code"] == 40903  # no member_id while the group has subscribed members
    body = assert_error(commit(broker, "ge", entry, member="ghost", generation=2, expect=404), 404)
    assert body["error_code"] == 40403  # unknown member
    # Without a generation, a member may only commit its own partitions.
    body = assert_error(commit(broker, "ge", entry, member=other, expect=409), 409)
    assert body["error_code"] == 40903
    body = assert_error(commit(broker, "ge", [{"topic": "t", "partition": 5, "offset": 1}], member=owner_of_0, generation=2,
                               expect=422), 422)
    assert body["error_code"] == 42201  # unknown partition
    body = assert_error(commit(broker, "ge", [{"topic": "nope", "partition": 0, "offset": 1}], member=owner_of_0, generation=2,
                               expect=422), 422)
    assert commit(broker, "ge", entry, member=owner_of_0) == {"committed": 1}
    assert commit(broker, "ge", entry, member=owner_of_0, generation=2) == {"committed": 1}
    # Unknown group: 404 40405 for describe, delete and offsets; a member of it is an unknown member.
    for r in (broker.get("/v1/groups/nogroup"), broker.delete("/v1/groups/nogroup"), broker.get("/v1/groups/nogroup/offsets")):
        assert assert_error(r, 404)["error_code"] == 40405
    assert assert_error(broker.post("/v1/groups/nogroup/members/x/heartbeat"), 404)["error_code"] == 40403
    assert assert_error(broker.get("/v1/groups/ge/members/ghost/records"), 404)["error_code"] == 40403
    assert assert_error(broker.delete("/v1/groups/ge/members/ghost"), 404)["error_code"] == 40403
    assert assert_error(broker.get("/v1/groups/ge/offsets", params={"member_id": "ghost"}), 404)["error_code"] == 40403
    # A member name that is taken: 409 (40902); another assignor than the group's: 409 (40903).
    assert assert_error(broker.post("/v1/groups/ge/members", json={"topics": ["t"], "member_name": "a"}), 409)["error_code"] == 40902
    assert assert_error(broker.post("/v1/groups/ge/members", json={"topics": ["t"], "assignor": "range"}), 409)["error_code"] == 40903
    # Nothing of that changed the group.
    d = describe(broker, "ge")
    assert d["generation"] == 2 and [m["member_id"] for m in d["members"]] == ["a", "b"]


def test_auto_offset_reset(broker):
    broker.create_topic("t", partitions=1)
    fill(broker, "t", 1, 3, prefix="old")
    e = join(broker, "early", topics=["t"], auto_offset_reset="earliest")
    assert [r["value"] for r in drain(broker, "early", e["member_id"], 3)] == ["old-0-0", "old-0-1", "old-0-2"]
    latest = join(broker, "late", topics=["t"])  # default: latest
    assert poll(broker, "late", latest["member_id"], wait_ms=100)["records"] == []
    produce(broker, "t", [{"value": "new"}])
    assert [r["value"] for r in drain(broker, "late", latest["member_id"], 1)] == ["new"]
    # none: nothing committed -> the poll is refused (409) until offsets are committed or reset.
    n = join(broker, "strict", topics=["t"], auto_offset_reset="none")
    r = broker.get(f"/v1/groups/strict/members/{n['member_id']}/records")
    assert assert_error(r, 409)["error_code"] == 40903
    assert commit(broker, "strict", [{"topic": "t", "partition": 0, "offset": 2}], member=n["member_id"]) == {"committed": 1}
    assert [r["value"] for r in drain(broker, "strict", n["member_id"], 2)] == ["old-0-2", "new"]


def test_rebalance_on_join_and_leave(broker):
    broker.create_topic("six", partitions=6)
    everything = [("six", p) for p in range(6)]
    a = join(broker, "rb", topics=["six"], member_name="a", auto_offset_reset="earliest")
    assert tps(a["assignment"]) == everything and a["generation"] == 1

    # A parks a long poll; B's join must end it early with the new generation and assignment.
    answer: dict = {}

    def long_poll():
        answer["page"] = poll(broker, "rb", "a", timeout=BIG_TIMEOUT, wait_ms=60000)
    t = threading.Thread(target=long_poll, daemon=True)
    t.start()
    assert broker.wait_parked(1, timeout=30), "A's long poll never parked"
    b = join(broker, "rb", topics=["six"], member_name="b", auto_offset_reset="earliest")
    assert b["generation"] == 2
    t.join(timeout=BIG_TIMEOUT / 2)
    assert not t.is_alive(), "a rebalance did not end A's long poll"
    page = answer["page"]
    assert page["generation"] == 2 and page["records"] == []
    mine, theirs = tps(page["assignment"]), tps(b["assignment"])
    assert len(mine) == len(theirs) == 3 and sorted(mine + theirs) == everything, (mine, theirs)
    # Sticky: A kept half of what it had; B got the rest.
    d = describe(broker, "rb")
    assert d["generation"] == 2 and {p["partition"]: p["member_id"] for p in d["partitions"]} == \
        {**{p: "a" for _, p in mine}, **{p: "b" for _, p in theirs}}

    # Records are only handed out for owned partitions.
    fill(broker, "six", 6, 2)
    got_a = drain(broker, "rb", "a", 6)
    got_b = drain(broker, "rb", "b", 6)
    assert {r["partition"] for r in got_a} == {p for _, p in mine}
    assert {r["partition"] for r in got_b} == {p for _, p in theirs}

    # B leaves: A owns everything again at the next generation (its next poll says so).
    assert broker.delete("/v1/groups/rb/members/b").status_code == 204
    page = poll(broker, "rb", "a", wait_ms=100)
    assert page["generation"] == 3 and tps(page["assignment"]) == everything
    assert describe(broker, "rb")["members"][0]["member_id"] == "a"


def test_session_expiry_rebalances(broker):
    broker.create_topic("six", partitions=6)
    a = join(broker, "exp", topics=["six"], member_name="alive")
    short = join(broker, "exp", topics=["six"], member_name="short", session_timeout_ms=1000)
    assert short["session_timeout_ms"] == 1000 and len(short["assignment"]) == 3
    assert a["generation"] == 1 and short["generation"] == 2
    # "short" never polls again; "alive" keeps polling until it owns all six partitions.
    last = {}

    def owns_all():
        last["page"] = poll(broker, "exp", "alive", wait_ms=500)
        return len(last["page"]["assignment"]) == 6
    wait_until(owns_all, 30, interval=0, what="the surviving member to own all 6 partitions")
    assert last["page"]["generation"] == 3
    assert assert_error(broker.post("/v1/groups/exp/members/short/heartbeat"), 404)["error_code"] == 40403
    d = describe(broker, "exp")
    assert [m["member_id"] for m in d["members"]] == ["alive"] and d["generation"] == 3
    # A member that keeps heart-beating (without polling) does not expire.
    hb = join(broker, "exp", topics=["six"], member_name="hb", session_timeout_ms=1000)
    gen = hb["generation"]
    for _ in range(15):
        heartbeat(broker, "exp", "hb")
        poll(broker, "exp", "alive", wait_ms=200)
    assert heartbeat(broker, "exp", "hb")["generation"] == gen


def test_manual_assignment(broker):
    broker.create_topic("t", partitions=3)
    data = fill(broker, "t", 3, 3)
    m = join(broker, "man", partitions=[{"topic": "t", "partition": 1}], auto_offset_reset="earliest", auto_commit=False)
    assert tps(m["assignment"]) == [("t", 1)]
    got = drain(broker, "man", m["member_id"], 3)
    assert [(r["partition"], r["offset"], r["value"]) for r in got] == \
        sorted((p, o, v) for (p, o), v in data.items() if p == 1)
    # A group of manual members only: commits without member_id are allowed (assign mode).
    assert commit(broker, "man", [{"topic": "t", "partition": 1, "offset": 3}]) == {"committed": 1}
    assert commit(broker, "man", [{"topic": "t", "partition": 2, "offset": 1}], member=m["member_id"],
                  generation=m["generation"]) == {"committed": 1}
    # A second manual member does not rebalance the first.
    m2 = join(broker, "man", partitions=[{"topic": "t", "partition": 0}, {"topic": "t", "partition": 2}])
    assert tps(m2["assignment"]) == [("t", 0), ("t", 2)]
    after = heartbeat(broker, "man", m["member_id"])
    assert tps(after["assignment"]) == [("t", 1)] and after["generation"] == m["generation"]
    d = describe(broker, "man")
    assert sorted(x["manual"] for x in d["members"]) == [True, True]
    # Once a subscribed member is in the group, commits from outside the membership are refused.
    join(broker, "man", topics=["t"])
    assert assert_error(commit(broker, "man", [{"topic": "t", "partition": 1, "offset": 3}], expect=409), 409)["error_code"] == 40903
    # Manual partitions must exist.
    r = broker.post("/v1/groups/man/members", json={"partitions": [{"topic": "t", "partition": 7}]})
    assert assert_error(r, 422)["error_code"] == 42201


def test_reset_and_delete_rules(broker):
    broker.create_topic("t", partitions=2)
    fill(broker, "t", 2, 4)
    m = join(broker, "rs", topics=["t"], auto_offset_reset="earliest")
    drain(broker, "rs", m["member_id"], 8)
    # While the group has members: reset and delete are refused with 409 (40903).
    r = broker.post("/v1/groups/rs/offsets/reset", json={"topics": ["t"], "to": "earliest"})
    assert assert_error(r, 409)["error_code"] == 40903
    assert assert_error(broker.delete("/v1/groups/rs"), 409)["error_code"] == 40903
    assert broker.delete(f"/v1/groups/rs/members/{m['member_id']}").status_code == 204
    assert committed(broker, "rs") == {("t", 0): 4, ("t", 1): 4}

    def reset(body):
        r = broker.post("/v1/groups/rs/offsets/reset", json=body)
        assert r.status_code == 200, r.text
        return {(o["topic"], o["partition"]): o["offset"] for o in r.json()["offsets"]}

    assert reset({"topics": ["t"], "to": "earliest"}) == {("t", 0): 0, ("t", 1): 0}
    assert committed(broker, "rs") == {("t", 0): 0, ("t", 1): 0}
    assert reset({"topics": ["t"], "to": "latest"}) == {("t", 0): 4, ("t", 1): 4}
    ts = broker.read("t", 0, 2)["records"][0]["timestamp"]
    at_ts = reset({"topics": ["t"], "timestamp": ts})
    assert at_ts[("t", 0)] <= 2  # the first offset at or after the timestamp
    assert reset({"topics": ["t"], "timestamp": 0}) == {("t", 0): 0, ("t", 1): 0}
    assert reset({"offsets": [{"topic": "t", "partition": 1, "offset": 3}]}) == {("t", 1): 3}
    assert committed(broker, "rs") == {("t", 0): 0, ("t", 1): 3}
    # A new member reads from the reset offsets.
    m2 = join(broker, "rs", topics=["t"])
    got = drain(broker, "rs", m2["member_id"], 5)
    assert sorted((r["partition"], r["offset"]) for r in got) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3)]
    assert broker.delete(f"/v1/groups/rs/members/{m2['member_id']}").status_code == 204

    # Delete: 204, then the group and its offsets are gone (404 40405), also from the list.
    r = broker.delete("/v1/groups/rs")
    assert r.status_code == 204 and r.content == b""
    assert assert_error(broker.get("/v1/groups/rs"), 404)["error_code"] == 40405
    assert assert_error(broker.get("/v1/groups/rs/offsets"), 404)["error_code"] == 40405
    assert assert_error(broker.delete("/v1/groups/rs"), 404)["error_code"] == 40405
    assert "rs" not in [g["group"] for g in broker.get("/v1/groups").json()["groups"]]
    # Reset of an unknown topic: 404.
    r = broker.post("/v1/groups/rs/offsets/reset", json={"topics": ["nope"], "to": "earliest"})
    assert assert_error(r, 404)["error_code"] == 40401
    # A re-created group starts from scratch.
    m3 = join(broker, "rs", topics=["t"], auto_offset_reset="earliest")
    assert m3["generation"] == 1
    assert len(drain(broker, "rs", m3["member_id"], 8)) == 8


def final_assignment(b, group, members) -> dict[str, list]:
    return {m: tps(heartbeat(b, group, m)["assignment"]) for m in members}


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "sticky"])
def test_assignor_spreads(broker, assignor):
    """Two topics of 3 partitions (x, y), members named a, b (c joins later)."""
    broker.create_topic("x", partitions=3)
    broker.create_topic("y", partitions=3)
    group = f"as-{assignor}"
    for name in ("a", "b"):
        join(broker, group, topics=["x", "y"], member_name=name, assignor=assignor)
    assert describe(broker, group)["assignor"] == assignor
    got = final_assignment(broker, group, ["a", "b"])
    if assignor == "range":
        # Kafka's RangeAssignor: per topic, consecutive ranges; the first member takes the extra one.
        assert got == {"a": [("x", 0), ("x", 1), ("y", 0), ("y", 1)], "b": [("x", 2), ("y", 2)]}
    elif assignor == "roundrobin":
        # Kafka's RoundRobinAssignor: (topic, partition) order dealt over a, b, a, b, ...
        assert got == {"a": [("x", 0), ("x", 2), ("y", 1)], "b": [("x", 1), ("y", 0), ("y", 2)]}
    else:
        assert len(got["a"]) == len(got["b"]) == 3 and sorted(got["a"] + got["b"]) == [(t, p) for t in "xy" for p in range(3)]
    join(broker, group, topics=["x", "y"], member_name="c", assignor=assignor)
    after = final_assignment(broker, group, ["a", "b", "c"])
    every = sorted(tp for v in after.values() for tp in v)
    assert every == [(t, p) for t in "xy" for p in range(3)], f"each partition exactly once: {after}"
    if assignor == "range":
        assert after == {"a": [("x", 0), ("y", 0)], "b": [("x", 1), ("y", 1)], "c": [("x", 2), ("y", 2)]}
    elif assignor == "roundrobin":
        assert after == {"a": [("x", 0), ("y", 0)], "b": [("x", 1), ("y", 1)], "c": [("x", 2), ("y", 2)]}
    else:
        # Sticky: balanced, and only what the newcomer needs moved (a and b keep subsets of theirs).
        assert [len(after[m]) for m in "abc"] == [2, 2, 2], after
        assert set(after["a"]) <= set(got["a"]) and set(after["b"]) <= set(got["b"]), (got, after)


def test_groups_and_offsets_survive_restarts(broker):
    broker.create_topic("t", partitions=2)
    fill(broker, "t", 2, 5)
    m = join(broker, "dur", topics=["t"], member_name="m1", auto_offset_reset="earliest", auto_commit=False)
    join(broker, "other", partitions=[{"topic": "t", "partition": 0}])
    drain(broker, "dur", "m1", 10)
    assert commit(broker, "dur", [{"topic": "t", "partition": 0, "offset": 3, "metadata": "keep"},
                                  {"topic": "t", "partition": 1, "offset": 5}], member="m1", generation=1) == {"committed": 2}
    before = describe(broker, "dur")

    for how in ("sigterm", "sigkill"):
        if how == "sigterm":
            broker.restart()
        else:
            broker.kill9()
            broker.start()
        d = describe(broker, "dur")
        strip = lambda desc: {**desc, "members": [{k: v for k, v in x.items() if k != "idle_ms"} for x in desc["members"]]}
        assert strip(d) == strip(before), f"after {how}"
        r = broker.get("/v1/groups/dur/offsets")
        assert r.json()["offsets"] == [{"topic": "t", "partition": 0, "offset": 3, "metadata": "keep"},
                                       {"topic": "t", "partition": 1, "offset": 5, "metadata": ""}]
        assert {g["group"] for g in broker.get("/v1/groups").json()["groups"]} >= {"dur", "other"}
        # The member is still there (membership is durable); its uncommitted progress is not: it
        # resumes from the committed offsets, so partition 0's offsets 3 and 4 come again.
        got = drain(broker, "dur", "m1", 2)
        assert sorted((r["partition"], r["offset"]) for r in got) == [(0, 3), (0, 4)], how
    assert m["member_id"] == "m1"


# -- bad input ----------------------------------------------------------------------------------------

LONG = "g" * 250
BAD_REQUESTS = [
    # (method, path, body (dict/list -> JSON, str -> raw with JSON content type), status, error_code)
    ("POST", "/v1/groups/bad/members", '{"topics":["t"]', 400, 40001),
    ("POST", "/v1/groups/bad/members", "[1]", 400, 40001),
    ("POST", "/v1/groups/bad/members", "", 400, 40001),
    ("POST", "/v1/groups/bad/members", "\x00\xff", 400, 40001),
    ("POST", "/v1/groups/bad/members", {}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": []}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": "t"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": [1]}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": [None]}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["../etc"]}, 400, 40002),
    ("POST", "/v1/groups/bad/members", {"topics": ["a" * 300]}, 400, 40002),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "session_timeout_ms": 999}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "session_timeout_ms": 3600001}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "session_timeout_ms": "5000"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "session_timeout_ms": 1e300}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "auto_offset_reset": "middle"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "auto_commit": "yes"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "assignor": "fancy"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "member_name": "a/b"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "member_name": ""}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "member_name": 5}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "member_name": LONG}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "client_id": 5}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "client_id": "c" * 300}, 422, 42201),
    ("POST", "/v1/groups/bad/members", {"topics": ["t"], "partitions": [{"topic": "t", "partition": 0}]}, 409, 40903),
    ("POST", "/v1/groups/bad/members", {"partitions": "x"}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"partitions": [{"topic": "t"}]}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"partitions": [{"topic": "t", "partition": -1}]}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"partitions": [{"topic": "t", "partition": 2 ** 40}]}, 400, 40001),
    ("POST", "/v1/groups/bad/members", {"partitions": [{"topic": "t", "partition": 9}]}, 422, 42201),
    ("POST", "/v1/groups/bad/members", {"topics": [f"t{i}" for i in range(101)]}, 422, 42201),
    ("POST", "/v1/groups/bad/members", {"partitions": [{"topic": "t", "partition": i} for i in range(10001)]}, 422, 42201),
    ("POST", "/v1/groups/a%2Fb/members", {"topics": ["t"]}, 400, 40001),
    ("POST", "/v1/groups/a..b%00/members", {"topics": ["t"]}, 400, 40001),
    ("POST", f"/v1/groups/{LONG}/members", {"topics": ["t"]}, 400, 40001),
    ("GET", f"/v1/groups/{LONG}", None, 400, 40001),
    ("DELETE", "/v1/groups/a%20b", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/a%20b/records", None, 400, 40001),
    ("GET", f"/v1/groups/bad/members/{LONG}/records", None, 400, 40001),
    ("DELETE", "/v1/groups/bad/members/a%2Fb", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/nobody/records", None, 404, 40403),
    ("GET", "/v1/groups/bad/members/nobody/records?wait_ms=-1", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/nobody/records?wait_ms=abc", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/nobody/records?wait_ms=99999999999999999999", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/nobody/records?max_records=0", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/nobody/records?max_bytes=-5", None, 400, 40001),
    ("GET", "/v1/groups/bad/members/nobody/records?format=xml", None, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", "not json", 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": []}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": {}}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": -1}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": "1"}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": 1.5}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": 1, "metadata": 7}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": 1, "metadata": "m" * 5000}]}, 422, 42201),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 0, "offset": 1}] * 2}, 422, 42201),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": 7, "offset": 1}]}, 422, 42201),
    ("POST", "/v1/groups/bad/offsets", {"offsets": [{"topic": "t", "partition": i, "offset": 1} for i in range(10001)]}, 422, 42201),
    ("POST", "/v1/groups/bad/offsets", {"member_id": 5, "offsets": [{"topic": "t", "partition": 0, "offset": 1}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"member_id": "a b", "offsets": [{"topic": "t", "partition": 0, "offset": 1}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"member_id": "m", "generation": "1", "offsets": []}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"member_id": "m", "generation": 2 ** 33, "offsets": []}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets", {"member_id": "nobody", "offsets": [{"topic": "t", "partition": 0, "offset": 1}]}, 404, 40405),
    ("GET", "/v1/groups/bad/offsets?member_id=a%2Fb", None, 400, 40001),
    ("GET", "/v1/groups/bad/offsets?topic=..", None, 400, 40002),
    ("GET", "/v1/groups/bad/offsets?topic=nope", None, 404, 40401),
    ("GET", "/v1/groups/bad/offsets?topic=t&partition=x", None, 400, 40001),
    ("GET", "/v1/groups/bad/offsets?topic=t&partition=-1", None, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", "[]", 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"topics": ["t"]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"topics": ["t"], "to": "middle"}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"topics": ["t"], "timestamp": "x"}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"topics": "t", "to": "earliest"}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"topics": ["nope"], "to": "earliest"}, 404, 40401),
    ("POST", "/v1/groups/bad/offsets/reset", {"offsets": []}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"offsets": [{"topic": "t", "partition": 0, "offset": -3}]}, 400, 40001),
    ("POST", "/v1/groups/bad/offsets/reset", {"offsets": [{"topic": "t", "partition": 5, "offset": 3}]}, 422, 42201),
    ("PATCH", "/v1/groups/bad", None, 405, 40501),
    ("PUT", "/v1/groups/bad/members", None, 405, 40501),
    ("GET", "/v1/groups/bad/members/x/heartbeat", None, 405, 40501),
]


@pytest.fixture(scope="module")
def bad_broker(module_broker):
    module_broker.create_topic("t", partitions=2)
    return module_broker


@pytest.mark.parametrize("method,path,body,status,code", BAD_REQUESTS,
                         ids=[f"{i:02d}-{m}-{p[:40]}" for i, (m, p, *_) in enumerate(BAD_REQUESTS)])
def test_bad_group_input(bad_broker, method, path, body, status, code):
    if body is None:
        raw = None
    elif isinstance(body, str):
        raw = body.encode("latin-1")
    else:
        raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if raw is not None else {}
    r = bad_broker.raw(method, path, raw, headers)
    got = assert_error(r, status)
    assert got["error_code"] == code, got
    assert bad_broker.get("/healthz").status_code == 200
    # Bad input left no group behind.
    assert "bad" not in [g["group"] for g in bad_broker.get("/v1/groups").json()["groups"]]


def test_group_body_media_type_and_size(bad_broker):
    r = bad_broker.post("/v1/groups/bad/members", data=b'{"topics":["t"]}', headers={"Content-Type": "text/plain"})
    assert assert_error(r, 415)["error_code"] == 41501
    r = bad_broker.post("/v1/groups/bad/offsets", data=b'{"offsets":[]}', headers={"Content-Type": "application/xml"})
    assert_error(r, 415)
    huge = b'{"topics":["' + b"t" * (64 << 20) + b'"]}'
    try:
        r = bad_broker.post("/v1/groups/bad/members", data=huge, headers={"Content-Type": "application/json"}, timeout=60)
    except Exception:  # noqa: BLE001 - the broker may close the connection while we still send
        r = None
    if r is not None:
        assert_error(r, 413)
    assert bad_broker.get("/healthz").status_code == 200
    assert "bad" not in [g["group"] for g in bad_broker.get("/v1/groups").json()["groups"]]


def test_dot_segment_ids_are_refused(bad_broker):
    for path in ("/v1/groups/%2e%2e", "/v1/groups/./offsets", "/v1/groups/bad/members/%2e%2e/heartbeat"):
        r = bad_broker.raw("GET" if "heartbeat" not in path else "POST", path)
        assert_error(r, 400)
    r = bad_broker.post("/v1/groups/dots/members", json={"topics": ["t"], "member_name": ".."})
    assert_error(r, 400)


def test_subscription_follows_topic_creation_and_growth(broker):
    # Subscribing to a topic that does not exist yet is allowed (Kafka too): nothing is assigned ...
    m = join(broker, "later", topics=["future"], auto_offset_reset="earliest")
    assert m["assignment"] == []
    broker.create_topic("future", partitions=2)
    produce(broker, "future", [{"value": "f0", "partition": 0}, {"value": "f1", "partition": 1}])
    # ... until the topic exists: the coordinator notices and rebalances.
    last = {}

    def assigned(n):
        last["page"] = poll(broker, "later", m["member_id"], wait_ms=300)
        last.setdefault("records", []).extend(last["page"]["records"])
        return len(last["page"]["assignment"]) == n
    wait_until(lambda: assigned(2), 30, interval=0, what="the new topic's partitions to be assigned")
    assert last["page"]["generation"] > m["generation"]
    # Growing the topic adds its new partitions to the assignment too.
    r = broker.patch("/v1/topics/future", json={"partitions": 3})
    assert r.status_code == 200, r.text
    wait_until(lambda: assigned(3), 30, interval=0, what="the grown topic's new partition to be assigned")
    produce(broker, "future", [{"value": "f2", "partition": 2}])
    wait_until(lambda: assigned(3) and {"f0", "f1", "f2"} <= {x["value"] for x in last["records"]}, 30, interval=0,
               what="records of every partition")


def test_leave_ends_a_parked_poll(broker):
    broker.create_topic("t", partitions=1)
    m = join(broker, "lp", topics=["t"])
    answer = {}

    def long_poll():
        answer["r"] = broker.get(f"/v1/groups/lp/members/{m['member_id']}/records", params={"wait_ms": 60000},
                                 timeout=BIG_TIMEOUT)
    t = threading.Thread(target=long_poll, daemon=True)
    t.start()
    assert broker.wait_parked(1, timeout=30), "the long poll never parked"
    assert broker.delete(f"/v1/groups/lp/members/{m['member_id']}").status_code == 204
    t.join(timeout=BIG_TIMEOUT / 2)
    assert not t.is_alive(), "leaving did not end the member's parked poll"
    assert assert_error(answer["r"], 404)["error_code"] == 40403
    # A group exists while it has members or committed offsets: this one had neither left.
    assert assert_error(broker.get("/v1/groups/lp"), 404)["error_code"] == 40405
