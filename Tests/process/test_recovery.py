"""Start-up recovery (README "Durability"): a torn or corrupt tail of the active segment is cut back
to the last valid batch, missing indexes are rebuilt, and the log continues from there. The files
are damaged while the broker is stopped, as a crash in the middle of a write would leave them."""

from __future__ import annotations

import glob
import os

import pytest

TOPIC = "rec"
N = 20


def fill(broker) -> None:
    broker.create_topic(TOPIC, partitions=1)
    for i in range(N):
        # One request per record, so the last record is the last batch of the file.
        r = broker.post(f"/v1/topics/{TOPIC}/records", data=f"value-{i:04d}".encode(), headers={"Content-Type": "text/plain"},
                        params={"partition": 0, "timestamp": 1000 * (i + 1)})
        assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == i, r.text
    assert broker.terminate() == 0


def segment_files(broker, suffix: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(broker.data_dir, "**", TOPIC, "0", "*" + suffix), recursive=True))
    assert files or suffix != ".log", f"no {suffix} files for {TOPIC}/0 under {broker.data_dir}"
    return files


def check_log(broker, expected_count: int) -> None:
    records, last = broker.read_all(TOPIC, 0)
    assert [(x["offset"], x["value"]) for x in records] == [(i, f"value-{i:04d}") for i in range(expected_count)]
    o = broker.offsets(TOPIC, 0)
    assert (o["log_start_offset"], o["high_watermark"], o["log_end_offset"]) == (0, expected_count, expected_count), o
    # The log continues right after the last valid record, and that survives another restart.
    r = broker.post(f"/v1/topics/{TOPIC}/records", data=b"after", headers={"Content-Type": "text/plain"}, params={"partition": 0})
    assert r.status_code == 200 and r.json()["offsets"][0]["offset"] == expected_count, r.text
    assert broker.terminate() == 0
    broker.start()
    records, _ = broker.read_all(TOPIC, 0)
    assert [x["offset"] for x in records] == list(range(expected_count + 1))
    assert records[-1]["value"] == "after"


def test_garbage_after_last_batch_is_cut(broker):
    fill(broker)
    log = segment_files(broker, ".log")[-1]
    with open(log, "ab") as f:
        f.write(bytes([0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14]) + os.urandom(29))
    broker.start()
    check_log(broker, N)


def test_torn_last_batch_is_cut(broker):
    fill(broker)
    log = segment_files(broker, ".log")[-1]
    size = os.path.getsize(log)
    os.truncate(log, size - 7)
    broker.start()
    check_log(broker, N - 1)


def test_corrupt_last_batch_is_cut(broker):
    fill(broker)
    log = segment_files(broker, ".log")[-1]
    size = os.path.getsize(log)
    with open(log, "r+b") as f:
        f.seek(size - 3)  # inside the last record's value: the batch CRC no longer matches
        b = f.read(1)
        f.seek(size - 3)
        f.write(bytes([b[0] ^ 0xFF]))
    broker.start()
    check_log(broker, N - 1)


def test_missing_indexes_are_rebuilt(broker):
    fill(broker)
    indexes = segment_files(broker, ".index") + segment_files(broker, ".timeindex")
    if not indexes:
        pytest.skip("this storage layout writes no index files")
    for path in indexes:
        os.remove(path)
    broker.start()
    for offset in (0, 7, N - 1):
        got = broker.read(TOPIC, 0, offset, max_records=1)["records"]
        assert [(x["offset"], x["value"]) for x in got] == [(offset, f"value-{offset:04d}")]
    r = broker.get(f"/v1/topics/{TOPIC}/partitions/0/offsets", params={"timestamp": 5500})
    assert r.status_code == 200 and r.json()["offset"] == 5, r.text
    check_log(broker, N)
