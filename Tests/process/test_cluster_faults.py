"""Fault tests on a 3-broker cluster on 127.0.0.1, judged by the history checker (history.py):

- test_leader_kills: three producer threads send unique values with acks=all, one attempt each, through
  the running brokers in turn, while the leader of a partition is SIGKILLed and restarted, several
  cycles (a different partition each time). Then every broker's own copy of every partition is read
  in full (`?local=true`) and the checker must find 0 lost, 0 unseen, 0 inconsistent offsets, 0
  duplicates, 0 aborted reads and replicas identical below the lowest high watermark. Produce must
  resume after every kill (bounded wait, not a timing assertion).
- test_cut_off_leader: both followers of a partition are SIGSTOPped; its leader must not acknowledge
  an acks=all write (503 JSON or no answer), and its high watermark must not move; after SIGCONT the
  cluster accepts writes again and the checker finds nothing wrong.

HTTP outcomes are classified honestly (history.classify_produce): 2xx with an offset = ok, 4xx = fail,
anything else (timeouts, resets, 5xx) = info (may or may not have been written)."""

from __future__ import annotations

import threading
import time

from cluster_support import UNAVAILABLE_CODES, Recorder, check_all_copies, producer, send, wait_until
from history import OK


def test_leader_kills(make_cluster):
    topic, partitions, threads, cycles = "chaos", 3, 3, 4
    cluster = make_cluster(3)
    cluster.create_topic(topic, partitions=partitions, replication_factor=3, via=1)
    cluster.wait_leaders(topic, partitions)

    recorder = Recorder()
    stop = threading.Event()
    workers = [threading.Thread(target=producer, args=(cluster, topic, partitions, t, stop, recorder),
                                name=f"producer-{t}", daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: recorder.acks_started_after(0) >= 20, 60, what="first acknowledgements")
        for cycle in range(cycles):
            partition = cycle % partitions
            victim = cluster.leader_of(topic, partition)
            killed_at = time.monotonic()
            cluster.kill(victim)
            print(f"cycle {cycle}: killed node {victim}, leader of {topic}/{partition}")
            # The survivors elect a leader and acknowledge writes to that partition again.
            wait_until(lambda: recorder.acks_started_after(killed_at, partition) >= 5, 90, interval=0.1,
                       what=f"acks=all produce to {topic}/{partition} to resume after killing node {victim}")
            print(f"cycle {cycle}: produce resumed {time.monotonic() - killed_at:.1f}s after the kill")
            time.sleep(1.0)  # keep writing with one broker down
            cluster.restart(victim)  # waits for its /readyz
            restarted_at = time.monotonic()
            wait_until(lambda: recorder.acks_started_after(restarted_at) > 0, 60,
                       what="produce with all three brokers up")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert not any(w.is_alive() for w in workers), "a producer thread did not stop"

    result = check_all_copies(cluster, topic, partitions, recorder)
    assert result.stats["ok"] >= 50, result.summary()


def test_cut_off_leader(make_cluster):
    topic = "cutoff"
    cluster = make_cluster(3)
    cluster.create_topic(topic, partitions=1, replication_factor=3, via=2)
    leader = cluster.leader_of(topic, 0)
    followers = [i for i in (1, 2, 3) if i != leader]
    recorder = Recorder()
    for i in range(10):
        op, _, _ = send(recorder, cluster.node(followers[i % 2]), topic, f"before-{i}", 0)
        assert op.outcome == OK, op
    # The leader's own high watermark once both followers have acknowledged everything so far.
    cluster.wait_replicas_converged(topic, 1, at_least={0: 10})
    hw_before = cluster.node(leader).read_local(topic, 0)[1]["high_watermark"]
    assert hw_before >= 10  # 10 records (offsets need not be dense: a leader's no-op entry takes one)

    for f in followers:
        cluster.pause(f)
    try:
        for i in range(3):
            op, status, body = send(recorder, cluster.node(leader), topic, f"cut-{i}", 0, timeout=20)
            assert op.outcome != OK, f"the cut-off leader acknowledged an acks=all write: {op}"
            if status is not None:
                # It answered (rather than the client giving up): a JSON 503 with a cluster error code.
                assert status == 503 and isinstance(body, dict) and body.get("error_code") in UNAVAILABLE_CODES, \
                    f"{status} {body}"
        # Nothing became readable on the leader: its high watermark did not move.
        got = cluster.node(leader).read_local(topic, 0)
        if got is not None:
            records, last = got
            assert last["high_watermark"] == hw_before, last
            assert not any(str(r.get("value", "")).startswith("cut-") for r in records), records
    finally:
        for f in followers:
            cluster.resume(f)

    cluster.wait_ready()

    def accepted():
        return send(recorder, cluster.any_node(), topic, f"after-{len(recorder.ops)}", 0, timeout=15)[0].outcome == OK
    wait_until(accepted, 60, interval=0.5, what="acks=all produce after the followers came back")
    check_all_copies(cluster, topic, 1, recorder)
