"""The `petrel` command line as the README shows it: every `petrel ...` line of the ```sh block
under "The command line" runs, as written (with `petrel` → $PETREL_BIN and PETREL_URL pointing at
the test broker), in order, and what it did is checked over HTTP. `--follow` runs in the
background and must print a record produced after it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

from test_admin import kafka_partition
from test_readme import README

MIN_CLI_LINES = 8


def readme_cli_commands() -> list[str]:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split("## The command line", 1)
    assert len(section) == 2, "README has no 'The command line' section"
    block = re.search(r"```sh\n(.*?)```", section[1], flags=re.S)
    assert block, "no ```sh block in 'The command line'"
    return [l.strip() for l in block.group(1).splitlines() if re.match(r"^\s*(\S.*\|\s*)?petrel\s", l)]


def _bin_in(command: str, petrel_bin: str) -> str:
    return re.sub(r"(^|\|\s*)petrel\s", lambda m: f"{m.group(1)}{petrel_bin} ", command)


def test_readme_cli_session(broker, petrel_bin):
    commands = readme_cli_commands()
    assert len(commands) >= MIN_CLI_LINES, commands
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
    env["PETREL_URL"] = broker.url
    outputs = {}
    for command in commands:
        shell = _bin_in(command, petrel_bin)
        if "--follow" in command:
            proc = subprocess.Popen(["bash", "-c", shell], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
            try:
                assert broker.wait_parked(1, timeout=20), f"`{command}` did not start a long-poll"
                r = broker.post("/v1/topics/clicks/records", data=b"live-record", headers={"Content-Type": "text/plain"}, params={"partition": 1})
                assert r.status_code == 200, r.text
                line = {}
                reader = threading.Thread(target=lambda: line.setdefault("v", proc.stdout.readline()), daemon=True)
                reader.start()
                reader.join(timeout=20)
                assert line.get("v", b"").strip() == b"live-record", f"`{command}` printed {line.get('v')!r}"
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                proc.stdout.close()
                proc.stderr.close()
            continue
        p = subprocess.run(["bash", "-c", shell], capture_output=True, env=env, timeout=60)
        assert p.returncode == 0, f"`{command}` exited {p.returncode}: {p.stderr.decode()[-500:]}"
        outputs[command] = p.stdout.decode()

    def out(fragment):
        return next(v for k, v in outputs.items() if fragment in k)

    # What the session did, checked over HTTP (the topic is deleted at the end).
    assert re.findall(r"partition 1 offset (\d+)", out("hello world")) == ["0", "1"], out("hello world")
    keyed = re.findall(r"partition (\d+) offset (\d+)", out("seq 1 2500"))
    assert len(keyed) == 2500 and {p for p, _ in keyed} == {str(kafka_partition(b"user-7", 3))}, out("seq 1 2500")[:300]
    assert [int(o) for _, o in keyed] == list(range(2500))
    assert out("--offset earliest").splitlines()[:2] == ["hello", "world"]
    assert "clicks" in out("topic describe")
    # The group consumer read 100 records and committed them when it left.
    assert len(out("--group readers").splitlines()) == 100, out("--group readers")[:300]
    described = out("group describe")
    assert '"group":"readers"' in described and '"state":"Empty"' in described, described[:500]
    assert sum(p.get("committed_offset") or 0 for p in __import__("json").loads(described)["partitions"]) == 100, described[:800]
    assert re.search(r'"retention.bytes"\s*:\s*"1073741824"', out("topic alter")), out("topic alter")[:500]
    assert '"cluster_id"' in out("petrel cluster")
    assert broker.get("/v1/topics/clicks").status_code == 404


def test_cli_errors_exit_nonzero(broker, petrel_bin):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETREL_")}
    env["PETREL_URL"] = broker.url
    for args, status in ((["consume", "nope"], "404"), (["topic", "create", "bad/name"], "400"),
                         (["topic", "alter", "nope", "--partitions", "2"], "404")):
        p = subprocess.run([petrel_bin, *args], capture_output=True, env=env, timeout=60)
        assert p.returncode != 0, args
        assert status in p.stderr.decode(), (args, p.stderr.decode())
    p = subprocess.run([petrel_bin, "cluster", "--url", "http://127.0.0.1:9"], capture_output=True, env=env, timeout=60)
    assert p.returncode != 0 and p.stderr, p
