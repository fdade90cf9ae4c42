"""`petrel serve` start-up and signals: a taken port or an unusable data dir is a clear failure
(exit status != 0), SIGINT is as orderly as SIGTERM, settings come from the environment when no
flag is given, and admin changes that were answered survive a kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest
import requests

from petrel_support import LISTENING, Broker, BrokerStartError, new_root, remove_root


def run_serve(petrel_bin: str, args: list[str], env_extra: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Runs `petrel serve` expecting it to exit by itself (a start-up failure)."""
    root = new_root()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
        env.update(env_extra or {})
        proc = subprocess.Popen([petrel_bin, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"petrel serve {args} did not exit within {timeout}s; stdout {out[-300:]!r}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        remove_root(root)


def test_port_in_use_fails_clearly(broker, petrel_bin):
    root = new_root()
    try:
        p = run_serve(petrel_bin, ["--port", str(broker.port), "--data-dir", os.path.join(root, "data")])
    finally:
        remove_root(root)
    assert p.returncode != 0
    assert not LISTENING.search(p.stdout.decode()), p.stdout
    assert str(broker.port) in p.stderr.decode(), p.stderr[-500:]
    assert broker.get("/healthz").status_code == 200


def test_data_dir_that_is_a_file_fails_clearly(petrel_bin):
    root = new_root()
    try:
        path = os.path.join(root, "not-a-dir")
        with open(path, "w") as f:
            f.write("x")
        p = run_serve(petrel_bin, ["--port", "0", "--data-dir", path])
        assert p.returncode != 0
        assert not LISTENING.search(p.stdout.decode()), p.stdout
        with open(path) as f:
            assert f.read() == "x", "the broker changed a file it was wrongly given as data dir"
    finally:
        remove_root(root)


def test_bad_flag_values_fail(petrel_bin):
    root = new_root()
    try:
        data = os.path.join(root, "never-created")
        for args in (["--port", "70000"], ["--port", "x"], ["--log-level", "loud"], ["--no-such-flag"]):
            p = run_serve(petrel_bin, [*args, "--data-dir", data])
            assert p.returncode != 0, args
            assert not LISTENING.search(p.stdout.decode()), args
            assert not os.path.exists(data), f"{args}: the data dir was created although the flags are invalid"
    finally:
        remove_root(root)


def test_environment_settings(petrel_bin):
    root = new_root()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
    env.update(PETREL_PORT="0", PETREL_DATA_DIR=os.path.join(root, "envdata"), PETREL_HOST="127.0.0.1")
    proc = subprocess.Popen([petrel_bin, "serve"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=root, env=env, start_new_session=True)
    try:
        line = ""
        timer = threading.Timer(60, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            line = proc.stdout.readline().decode()
        finally:
            timer.cancel()
        m = LISTENING.search(line)
        assert m, f"no listening line: {line!r}"
        url = f"http://{m.group(1)}:{m.group(2)}"
        r = requests.post(url + "/v1/topics", json={"name": "env"}, timeout=15)
        assert r.status_code == 201, r.text
        assert os.path.isdir(os.path.join(root, "envdata")), "PETREL_DATA_DIR was not used"
        assert not os.path.exists(os.path.join(root, "data")), "the default ./data was used despite PETREL_DATA_DIR"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        proc.stdout.close()
        remove_root(root)


def test_sigint_is_an_orderly_shutdown(broker):
    broker.create_topic("si", partitions=1)
    assert broker.post("/v1/topics/si/records", data=b"x", headers={"Content-Type": "text/plain"}).status_code == 200
    broker.proc.send_signal(signal.SIGINT)
    assert broker.proc.wait(timeout=30) == 0, broker.log_tail()
    broker.kill9()  # reap / close pipes
    broker.start()
    assert [x["value"] for x in broker.read("si", 0)["records"]] == ["x"]


def test_admin_changes_survive_kill9(broker):
    broker.create_topic("made", partitions=2, configs={"retention.ms": "123456"})
    broker.create_topic("grown", partitions=1)
    broker.create_topic("removed", partitions=1)
    assert broker.post("/v1/topics/removed/records", data=b"x", headers={"Content-Type": "text/plain"}).status_code == 200
    assert broker.patch("/v1/topics/grown", json={"partitions": 3, "configs": {"retention.bytes": "99999999"}}).status_code == 200
    assert broker.delete("/v1/topics/removed").status_code == 204
    broker.kill9()
    broker.start()
    made = broker.get("/v1/topics/made").json()
    assert len(made["partitions"]) == 2 and made["configs"]["retention.ms"] == "123456"
    grown = broker.get("/v1/topics/grown").json()
    assert len(grown["partitions"]) == 3 and grown["configs"]["retention.bytes"] == "99999999"
    assert broker.get("/v1/topics/removed").status_code == 404
    assert sorted(t["name"] for t in broker.get("/v1/topics").json()["topics"]) == ["grown", "made"]
    assert not any("removed" in dirs for _, dirs, _ in os.walk(broker.data_dir)), "the deleted topic's files came back"


def test_concurrent_creates_of_one_name(broker):
    statuses = []
    barrier = threading.Barrier(8)

    def create():
        barrier.wait(timeout=30)
        statuses.append(broker.post("/v1/topics", json={"name": "race", "partitions": 2}).status_code)

    threads = [threading.Thread(target=create, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(statuses) == [201] + [409] * 7, statuses
    r = broker.post("/v1/topics/race/records", data=b"x", headers={"Content-Type": "text/plain"}, params={"partition": 1})
    assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == 0


def test_second_broker_on_the_same_data_dir_is_refused(broker, petrel_bin):
    broker.create_topic("owned", partitions=1)
    r = broker.post("/v1/topics/owned/records", data=b"acked", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
    intruder = Broker(petrel_bin, broker.root)
    try:
        started = True
        try:
            intruder.start()
        except BrokerStartError:
            started = False
        assert not started, f"a second broker started on {broker.data_dir} (it listens on {intruder.url})"
        assert intruder.proc.returncode != 0
    finally:
        intruder.cleanup()
    assert [x["value"] for x in broker.read("owned", 0)["records"]] == ["acked"]
