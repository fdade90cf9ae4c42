"""Power cut (TESTING.md, layer 5): the data dir lives on a loop-mounted ext4 image. While
producers (acks=all) and a consumer run, the broker is frozen (SIGSTOP) and the image file is
copied: the copy holds what reached the "disk", not what sat only in the page cache — as after a
power failure. The broker is killed, the copy mounted in the original's place, a broker started on
it, and the history checked: every acks=all record that was answered, and every record a consumer
read, must be there at its offset (a kill -9 test cannot see a missing fsync; this one can).

Needs root, mkfs.ext4 and loop devices; skipped otherwise. Every mount is undone at the end."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

from petrel_support import Broker, new_root, remove_root
from test_crash_durability import PARTITIONS, THREADS, TOPIC, History, check, consumer, producer


def _run(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=60)


def _umount(path: str) -> None:
    if os.path.ismount(path):
        r = subprocess.run(["umount", path], capture_output=True, timeout=60)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=60)


@pytest.fixture
def loop_disk():
    """Yields (image path, mount point) of a fresh, mounted ext4 image; unmounts and removes all."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not shutil.which("mount"):
        pytest.skip("needs root, mkfs.ext4 and mount (loop devices)")
    root = new_root("petrel-powercut-")
    image = os.path.join(root, "disk.img")
    mnt = os.path.join(root, "mnt")
    os.mkdir(mnt)
    try:
        with open(image, "wb") as f:
            f.truncate(256 * 1024 * 1024)
        try:
            _run("mkfs.ext4", "-q", "-F", image)
            _run("mount", "-o", "loop", image, mnt)
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot make and loop-mount an ext4 image here: {e.stderr.decode()[-200:]}")
        yield root, image, mnt
    finally:
        _umount(mnt)
        remove_root(root)


def test_power_cut_loses_no_acknowledged_or_consumed_record(loop_disk, petrel_bin):
    root, image, mnt = loop_disk
    broker = Broker(petrel_bin, root, data_dir=os.path.join(mnt, "data"))
    try:
        broker.start()
        broker.create_topic(TOPIC, partitions=PARTITIONS)
        history = History()
        acks1 = History()  # acks=1 traffic: not promised to survive, but it must not corrupt anything
        seen: dict = {}
        problems: list = []
        stop = threading.Event()
        threads = [threading.Thread(target=producer, args=(broker.url, t, 0, history, stop, random.Random(t)), daemon=True)
                   for t in range(THREADS)]
        threads.append(threading.Thread(target=producer, args=(broker.url, 99, 0, acks1, stop, random.Random(99), "1"), daemon=True))
        threads.append(threading.Thread(target=consumer, args=(broker.url, {p: 0 for p in range(PARTITIONS)}, seen, stop, problems), daemon=True))
        for t in threads:
            t.start()
        time.sleep(1.5)

        os.kill(broker.pid, signal.SIGSTOP)  # freeze: nothing more reaches the disk or a client
        time.sleep(0.3)  # let the client threads finish handling answers that left before the freeze
        with history.lock:
            acked_at_cut = dict(history.acked)
        seen_at_cut = dict(seen)
        snapshot = os.path.join(root, "after-power-cut.img")
        _run("cp", "--sparse=always", image, snapshot)
        broker.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not problems, problems
        assert acked_at_cut, "nothing was acknowledged before the power cut"

        _umount(mnt)
        _run("mount", "-o", "loop", snapshot, mnt)  # the "rebooted" disk, at the same path
        broker.start()
        history.sent |= acks1.sent
        history.in_doubt |= acks1.sent
        history.acked = acked_at_cut
        counts = check(broker, history, 0, seen_at_cut)
        print(f"power cut: acked={len(acked_at_cut)} consumed={len(seen_at_cut)} acks1_sent={len(acks1.sent)} {counts}")
    except BaseException:
        print(broker.log_tail())
        raise
    finally:
        broker.cleanup()
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.wait(timeout=30)


def test_sigterm_makes_acks1_writes_durable(loop_disk, petrel_bin):
    """README: SIGTERM makes every appended record durable before the process exits. acks=1 records
    are answered before their fsync; after an orderly stop a power cut must not lose any of them."""
    root, image, mnt = loop_disk
    broker = Broker(petrel_bin, root, data_dir=os.path.join(mnt, "data"))
    try:
        broker.start()
        broker.create_topic(TOPIC, partitions=PARTITIONS)
        history = History()
        stop = threading.Event()
        threads = [threading.Thread(target=producer, args=(broker.url, t, 0, history, stop, random.Random(t), "1"), daemon=True)
                   for t in range(THREADS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert broker.terminate(timeout=30) == 0, broker.log_tail()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert history.acked, "nothing was acknowledged before SIGTERM"
        snapshot = os.path.join(root, "after-power-cut.img")
        _run("cp", "--sparse=always", image, snapshot)  # no sync: only what the broker made durable
        _umount(mnt)
        _run("mount", "-o", "loop", snapshot, mnt)
        broker.start()
        counts = check(broker, history, 0)
        print(f"SIGTERM then power cut: {counts}")
    except BaseException:
        print(broker.log_tail())
        raise
    finally:
        broker.cleanup()
