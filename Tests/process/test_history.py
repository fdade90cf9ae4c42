"""Unit tests of the history checker (history.py) on synthetic histories: a clean history passes, and
each anomaly is detected on its own (the other counts stay 0, so one bug cannot hide behind another).
Needs no broker."""

from __future__ import annotations

import pytest

from history import ANOMALIES, FAIL, INFO, OK, Op, check, classify_produce


def acked(values, partition=0, start=0):
    return [Op(v, OK, partition, start + i) for i, v in enumerate(values)]


def log(values, start=0):
    return [(start + i, v) for i, v in enumerate(values)]


def only(result, kind, n):
    """`kind` was found `n` times and every other anomaly 0 times."""
    expected = {k: 0 for k in ANOMALIES}
    expected[kind] = n
    got = {k: result.counts[k] for k in ANOMALIES}
    assert got == expected, result.summary()
    assert not result.valid
    assert len(result.examples[kind]) == min(n, 10)


def test_clean_history_passes():
    values = [f"v{i}" for i in range(20)]
    ops = acked(values[:10], 0) + acked(values[10:], 1)
    ops.append(Op("maybe", INFO))  # an unknown write that never landed
    ops.append(Op("maybe2", INFO))  # an unknown write that did land (allowed)
    ops.append(Op("rejected", FAIL))
    p0 = log(values[:10])
    p1 = log(values[10:] + ["maybe2"])
    reads = {b: {0: p0, 1: p1} for b in (1, 2, 3)}
    r = check(ops, reads)
    assert r.valid, r.summary()
    assert all(c == 0 for c in r.counts.values()), r.summary()
    assert r.stats["ok"] == 20 and r.stats["info"] == 2 and r.stats["fail"] == 1
    assert r.stats["info_seen"] == 1
    assert r.stats["records_read"] == 3 * 21


def test_lagging_replica_is_not_an_anomaly():
    # A follower that has only a prefix of the log (below its own high watermark) is behind, not wrong.
    values = [f"v{i}" for i in range(10)]
    reads = {1: {0: log(values)}, 2: {0: log(values[:4])}, 3: {0: log(values[:7])}}
    r = check(acked(values), reads)
    assert r.valid, r.summary()


def test_lost_write_detected():
    values = ["a", "b", "c", "d"]
    # "b" was acknowledged at offset 1, yet every copy has offset 2 and 3 and no "b" (a hole).
    copy = [(0, "a"), (2, "c"), (3, "d")]
    r = check(acked(values), {1: {0: copy}, 2: {0: copy}})
    only(r, "lost", 1)
    assert r.examples["lost"][0]["value"] == "b"
    assert r.examples["lost"][0]["missing_in"] == ["1", "2"]


def test_lost_write_on_one_replica_only():
    # One replica truncated an acknowledged record and appended past it: lost there, and the copies
    # diverge; at offset 1 two values also exist (inconsistent). A leader that overwrote a committed
    # record shows all three; the per-kind assertions below check each is reported.
    values = ["a", "b", "c"]
    good = log(values)
    bad = [(0, "a"), (1, "x"), (2, "c")]
    ops = acked(values) + [Op("x", INFO)]
    r = check(ops, {1: {0: good}, 2: {0: bad}})
    assert r.counts["lost"] == 1 and r.examples["lost"][0]["missing_in"] == ["2"]
    assert r.counts["inconsistent"] == 1
    assert r.counts["divergence"] == 1
    assert r.counts["duplicate"] == 0 and r.counts["aborted_read"] == 0 and r.counts["unseen"] == 0


def test_unseen_detected():
    # Acknowledged at offset 3 but nobody read that far: unseen (not lost: nothing higher was read).
    values = ["a", "b", "c", "d"]
    reads = {b: {0: log(values[:3])} for b in (1, 2)}
    r = check(acked(values), reads)
    only(r, "unseen", 1)
    assert r.examples["unseen"][0]["value"] == "d"


def test_unseen_when_partition_missing_everywhere():
    r = check(acked(["a"], partition=4), {1: {0: []}})
    only(r, "unseen", 1)


def test_inconsistent_across_replicas():
    # Offset 1 holds "b" on one replica and "x" on another; "x" was an unknown write.
    ops = acked(["a", "b"]) + [Op("x", INFO)]
    r = check(ops, {1: {0: log(["a", "b"])}, 2: {0: log(["a", "x"])}}, replicas=[1])
    # replicas=[1]: the divergence check has one replica only, so only the inconsistency shows; and
    # "b" is held by source 1, and source 2 read no offset above 1, so it is not lost.
    only(r, "inconsistent", 1)
    assert r.examples["inconsistent"][0]["offset"] == 1
    assert set(r.examples["inconsistent"][0]["values"]) == {"b", "x"}


def test_inconsistent_within_one_source():
    # One source read two values at one offset (e.g. two reads of the same broker over time).
    ops = [Op("a", INFO), Op("b", INFO)]
    r = check(ops, {1: {0: [(0, "a"), (0, "b")]}})
    only(r, "inconsistent", 1)


def test_inconsistent_with_acknowledgement():
    # The producer was told offset 0, but the value is read at offset 1 (and offset 0 was never read).
    ops = [Op("a", OK, 0, 0)]
    r = check(ops, {1: {0: [(1, "a")]}})
    only(r, "inconsistent", 1)
    assert r.examples["inconsistent"][0]["acked_at"] == (0, 0)


def test_inconsistent_acknowledged_in_another_partition():
    ops = [Op("a", OK, 1, 0)]
    r = check(ops, {1: {0: [(0, "a")], 1: []}})
    only(r, "inconsistent", 1)


def test_duplicate_detected_for_single_attempt():
    ops = acked(["a", "b"]) + [Op("c", INFO)]
    copy = log(["a", "b", "c", "c"])
    r = check(ops, {1: {0: copy}, 2: {0: copy}})
    only(r, "duplicate", 1)
    assert r.examples["duplicate"][0]["at"] == [(0, 2), (0, 3)]


def test_duplicate_across_partitions():
    ops = [Op("a", INFO)]
    r = check(ops, {1: {0: [(0, "a")], 1: [(0, "a")]}})
    only(r, "duplicate", 1)


def test_retried_send_may_land_twice():
    ops = acked(["a"]) + [Op("c", INFO, attempts=2)]
    copy = log(["a", "c", "c"])
    r = check(ops, {1: {0: copy}})
    assert r.valid, r.summary()


def test_aborted_read_detected():
    ops = acked(["a"]) + [Op("nope", FAIL, note="HTTP 404")]
    r = check(ops, {1: {0: log(["a", "nope"])}})
    only(r, "aborted_read", 1)
    assert r.examples["aborted_read"][0]["note"] == "HTTP 404"


def test_divergence_below_high_watermark():
    # Two replicas disagree at offset 2 about unknown writes: divergence (and an inconsistency).
    ops = acked(["a", "b"]) + [Op("x", INFO), Op("y", INFO)]
    r = check(ops, {1: {0: log(["a", "b", "x"])}, 2: {0: log(["a", "b", "y"])}})
    assert r.counts["divergence"] == 1
    assert r.examples["divergence"][0]["offset"] == 2
    assert r.counts["lost"] == 0 and r.counts["duplicate"] == 0 and r.counts["unseen"] == 0


def test_divergence_hole_in_one_replica():
    # Replica 2 claims a high watermark of 3 but has no record at offset 1: it differs from replica 1.
    ops = [Op("a", INFO), Op("b", INFO), Op("c", INFO)]
    reads = {1: {0: log(["a", "b", "c"])}, 2: {0: [(0, "a"), (2, "c")]}}
    r = check(ops, reads, high_watermarks={1: {0: 3}, 2: {0: 3}})
    only(r, "divergence", 1)
    assert r.examples["divergence"][0]["replicas"] == {"1": "b", "2": None}


def test_divergence_only_below_lowest_high_watermark():
    # Above replica 2's high watermark (2) the copies may differ: replica 2 has not committed there.
    ops = [Op(v, INFO) for v in ("a", "b", "c")]
    reads = {1: {0: log(["a", "b", "c"])}, 2: {0: log(["a", "b"])}}
    r = check(ops, reads, high_watermarks={1: {0: 3}, 2: {0: 2}})
    assert r.valid, r.summary()


def test_divergence_respects_log_start():
    ops = [Op(v, INFO) for v in ("a", "b", "c")]
    reads = {1: {0: log(["b", "c"], start=1)}, 2: {0: log(["a", "b", "c"])}}
    r = check(ops, reads, log_starts={1: {0: 1}})
    assert r.valid, r.summary()


def test_non_replica_sources_are_not_compared():
    # A consumer that read only part of the log is not a replica.
    values = ["a", "b", "c"]
    reads = {1: {0: log(values)}, "consumer": {0: log(values[1:], start=1)}}
    r = check(acked(values), reads, replicas=[1])
    assert r.valid, r.summary()


def test_unexpected_value_is_reported_but_not_an_anomaly():
    r = check(acked(["a"]), {1: {0: log(["a", "ghost"])}})
    assert r.counts["unexpected"] == 1
    assert r.valid


def test_examples_are_capped():
    values = [f"v{i}" for i in range(30)]
    r = check(acked(values, start=1), {1: {0: [(0, "q"), (100, "z")]}}, max_examples=5)
    assert r.counts["lost"] == 30
    assert len(r.examples["lost"]) == 5


def test_values_must_be_unique():
    with pytest.raises(ValueError):
        check([Op("a", INFO), Op("a", OK, 0, 0)], {})


def test_ok_needs_a_place():
    with pytest.raises(ValueError):
        Op("a", OK)
    with pytest.raises(ValueError):
        Op("a", "maybe")


@pytest.mark.parametrize("status,body,expected", [
    (200, {"offsets": [{"partition": 2, "offset": 7, "timestamp": 1}]}, (OK, 2, 7)),
    (202, {"offsets": [{"partition": 0, "offset": None, "timestamp": 1}]}, (INFO, None, None)),
    (200, {"nonsense": True}, (INFO, None, None)),
    (404, {"error_code": 40402, "message": "no partition"}, (FAIL, None, None)),
    (400, None, (FAIL, None, None)),
    (503, {"error_code": 50304, "message": "no leader"}, (INFO, None, None)),
    (500, None, (INFO, None, None)),
    (None, None, (INFO, None, None)),
])
def test_classify_produce(status, body, expected):
    assert classify_produce(status, body) == expected
