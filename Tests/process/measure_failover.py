#!/usr/bin/env python3
"""Measures how long acks=all produce stops after the partition leader is SIGKILLed (issue #4's
failover figure; target: median <= 5 s, max <= 10 s). A measurement, not a test.

Usage:
    PETREL_BIN=.build/debug/petrel python3 Tests/process/measure_failover.py [--kills 10] [--threads 4]
        [--timeout 3] [--settle 2] [--keep]

It starts 3 brokers on 127.0.0.1 (free ports, data in a temp dir, removed unless --keep), creates a
topic with 1 partition and replication factor 3, and runs `--threads` producer threads, each sending
one record at a time with acks=all (client timeout `--timeout` s) to the running brokers in turn. Then,
`--kills` times: wait `--settle` s of steady produce, find the leader, SIGKILL it, and record the time
from the kill to the first acknowledgement of a request *sent after* the kill (a request in flight at
the kill could have been committed before it); restart the killed broker and wait for its /readyz.
Prints one line per kill, then the median and the max. Use a release build for figures you quote
(`swift build -c release --product petrel`), and quote the machine and date with them.

Exit status 0 after all kills, 1 if produce did not resume within 60 s after a kill."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_support import Cluster, Recorder, producer, wait_until  # noqa: E402
from history import OK  # noqa: E402

TOPIC = "failover"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("PETREL_BIN", ".build/debug/petrel"), help="petrel binary (default $PETREL_BIN)")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=3.0, help="client timeout per produce request, seconds")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds of steady produce before each kill")
    ap.add_argument("--keep", action="store_true", help="keep the data and logs (path printed)")
    args = ap.parse_args()
    if not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        print(f"no executable petrel at {args.bin!r}: set PETREL_BIN or --bin", file=sys.stderr)
        return 2

    root = tempfile.mkdtemp(prefix="petrel-failover-")
    cluster = Cluster(args.bin, root, size=3)
    recorder = Recorder()
    stop = threading.Event()
    workers: list[threading.Thread] = []
    gaps: list[float] = []
    status = 0
    try:
        cluster.start()
        cluster.create_topic(TOPIC, partitions=1, replication_factor=3, via=1)
        cluster.leader_of(TOPIC, 0)
        print(f"3 brokers up: {cluster.urls}; {args.threads} producers, acks=all, timeout {args.timeout}s", flush=True)
        workers = [threading.Thread(target=producer, args=(cluster, TOPIC, 1, t, stop, recorder, args.timeout),
                                    daemon=True) for t in range(args.threads)]
        for w in workers:
            w.start()
        wait_until(lambda: recorder.acks_started_after(0) > 0, 60, what="first acknowledgement")
        for k in range(args.kills):
            time.sleep(args.settle)
            leader = cluster.leader_of(TOPIC, 0)
            killed_at = time.monotonic()
            cluster.kill(leader)
            first = _first_ack_after(recorder, killed_at, deadline=killed_at + 60)
            if first is None:
                print(f"kill {k + 1}: node {leader}: produce did NOT resume within 60 s", flush=True)
                status = 1
                break
            gap = first - killed_at
            gaps.append(gap)
            print(f"kill {k + 1}: node {leader} (leader) -> next acknowledged produce after {gap:.3f} s", flush=True)
            cluster.restart(leader)  # waits for /readyz
        if gaps:
            print(f"kills: {len(gaps)}  median: {statistics.median(gaps):.3f} s  max: {max(gaps):.3f} s  "
                  f"min: {min(gaps):.3f} s", flush=True)
        print(f"requests: {dict(recorder.statuses)}", flush=True)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=args.timeout + 5)
        cluster.cleanup()
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return status


def _first_ack_after(recorder: Recorder, t: float, deadline: float) -> float | None:
    """When the first acknowledgement of a request started after `t` arrived (monotonic), or None."""
    while time.monotonic() < deadline:
        with recorder.lock:
            done = [end for op, start, end in zip(recorder.ops, recorder.started, recorder.finished)
                    if op.outcome == OK and start > t]
        if done:
            return min(done)
        time.sleep(0.005)
    return None


if __name__ == "__main__":
    sys.exit(main())
