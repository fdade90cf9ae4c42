"""A history checker for replicated partitions, in TESTING.md's (Jepsen's) vocabulary.

Input
-----
- `ops`: what the producers did, one `Op` per record value they tried to write. Every value must be
  unique across the whole history (the checker relies on it to recognise a record). `outcome` is
  - `"ok"`: the broker answered 2xx with a `(partition, offset)` for it;
  - `"fail"`: an answer that proves nothing was appended (a 4xx such as 400/404/413);
  - `"info"`: anything else (timeouts, connection resets, 5xx): the write may or may not exist.
  `attempts` is how many times the value was put on the wire; the duplicate check only applies to
  values sent once (a retried send may legitimately land twice without idempotence).
- `reads`: `{source: {partition: [(offset, value), ...]}}`. A source is usually one broker's own copy
  (`?local=true`) read in full up to its high watermark; it may also be a consumer reading through
  any broker. A partition absent from a source means the source has no copy of it.
- `replicas` (optional): the sources that are replica copies and must agree with each other below the
  lowest high watermark (default: every source).
- `high_watermarks` (optional): `{source: {partition: hw}}`; defaults to the highest offset read + 1.
- `log_starts` (optional): `{source: {partition: first offset}}`; defaults to 0.

Anomalies
---------
- **lost**: an acknowledged value that a source does not hold although that source read the partition
  from at or below the acknowledged offset (its log start, else its lowest offset read) to above it
  (the write was skipped over or overwritten);
- **unseen**: an acknowledged value that no source holds, and no source read past its offset;
- **inconsistent**: two different values at one (partition, offset), across sources, within one source,
  or between a read and the producer's acknowledgement (an acknowledged value read in another
  partition or at another offset is inconsistent too);
- **duplicate**: a value sent once that appears at two different (partition, offset) places;
- **aborted read**: a value whose produce definitely failed is visible;
- **divergence**: two replica sources that differ at an offset below the lowest high watermark
  (different values, or one has a record there and the other none);
- **unexpected**: a value read that no producer ever sent (reported, not an anomaly of its own unless
  the caller asserts on it).

`check(...)` returns a `HistoryResult` with `counts`, `examples` (at most `max_examples` per kind) and
`valid` (no lost, unseen, inconsistent, duplicate, aborted read or divergence). Pure Python, no I/O:
unit-tested by test_history.py with synthetic histories.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Hashable, Iterable, Mapping, Sequence

OK = "ok"
FAIL = "fail"
INFO = "info"
OUTCOMES = (OK, FAIL, INFO)

ANOMALIES = ("lost", "unseen", "inconsistent", "duplicate", "aborted_read", "divergence")


@dataclasses.dataclass(frozen=True)
class Op:
    value: str
    outcome: str  # "ok" | "fail" | "info"
    partition: int | None = None  # acknowledged partition (ok only)
    offset: int | None = None  # acknowledged offset (ok only)
    attempts: int = 1
    note: str = ""  # free text for examples (e.g. "via broker 2, HTTP 503 50304")

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.outcome == OK and (self.partition is None or self.offset is None):
            raise ValueError(f"an ok op needs partition and offset: {self!r}")


@dataclasses.dataclass
class HistoryResult:
    counts: dict[str, int]
    examples: dict[str, list]
    stats: dict[str, int]

    @property
    def valid(self) -> bool:
        return all(self.counts[k] == 0 for k in ANOMALIES)

    def summary(self) -> str:
        lines = ["history: " + ", ".join(f"{k}={v}" for k, v in self.stats.items())]
        lines.append("anomalies: " + ", ".join(f"{k}={self.counts[k]}" for k in (*ANOMALIES, "unexpected")))
        for kind, examples in self.examples.items():
            for e in examples:
                lines.append(f"  {kind}: {e}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def check(ops: Iterable[Op],
          reads: Mapping[Hashable, Mapping[int, Sequence[tuple[int, str]]]],
          replicas: Iterable[Hashable] | None = None,
          high_watermarks: Mapping[Hashable, Mapping[int, int]] | None = None,
          log_starts: Mapping[Hashable, Mapping[int, int]] | None = None,
          max_examples: int = 10) -> HistoryResult:
    ops = list(ops)
    by_value: dict[str, Op] = {}
    for op in ops:
        if op.value in by_value:
            raise ValueError(f"value {op.value!r} appears in two ops: every value must be unique")
        by_value[op.value] = op

    counts = {k: 0 for k in (*ANOMALIES, "unexpected")}
    examples: dict[str, list] = collections.defaultdict(list)

    def report(kind: str, example) -> None:
        counts[kind] += 1
        if len(examples[kind]) < max_examples:
            examples[kind].append(example)

    # --- index the reads -------------------------------------------------------------------------
    # at[(p, o)] -> {value: [sources]}; also the acknowledgements, as the source "ack".
    at: dict[tuple[int, int], dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    # where[value] -> {(p, o): [sources]}
    where: dict[str, dict[tuple[int, int], list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    # per source and partition: offset -> value (first one read), the highest offset read, the values held
    copy: dict[Hashable, dict[int, dict[int, str]]] = {}
    held: dict[Hashable, dict[int, set]] = {}
    highest: dict[Hashable, dict[int, int]] = {}
    lowest: dict[Hashable, dict[int, int]] = {}
    for source, partitions in reads.items():
        copy[source], held[source], highest[source], lowest[source] = {}, {}, {}, {}
        for p, records in partitions.items():
            m: dict[int, str] = {}
            for offset, value in records:
                at[(p, offset)][value].append(source)
                where[value][(p, offset)].append(source)
                # A second, different value at one offset in one source is counted through `at`.
                m.setdefault(offset, value)
            copy[source][p] = m
            held[source][p] = {v for _, v in records}
            highest[source][p] = max(m) if m else -1
            lowest[source][p] = (log_starts or {}).get(source, {}).get(p, min(m) if m else 0)
    for op in ops:
        if op.outcome == OK:
            at[(op.partition, op.offset)][op.value].append("ack")

    # --- inconsistent offsets ----------------------------------------------------------------------
    for (p, o), values in sorted(at.items()):
        if len(values) > 1:
            report("inconsistent", {"partition": p, "offset": o,
                                    "values": {v: sorted(map(str, srcs)) for v, srcs in values.items()}})

    # An acknowledged value that was read, but never at its acknowledged place (and so possibly at an
    # offset nobody else read, which the per-offset check above cannot see).
    for op in ops:
        if op.outcome == OK and op.value in where and (op.partition, op.offset) not in where[op.value]:
            report("inconsistent", {"value": op.value, "acked_at": (op.partition, op.offset),
                                    "read_at": sorted(where[op.value]), "note": op.note})

    # --- per value: duplicates, aborted reads, unexpected ----------------------------------------
    for value, places in sorted(where.items()):
        op = by_value.get(value)
        if op is None:
            report("unexpected", {"value": value, "at": sorted(places)})
            continue
        if len(places) > 1 and op.attempts == 1:
            report("duplicate", {"value": value, "at": sorted(places), "note": op.note})
        if op.outcome == FAIL:
            report("aborted_read", {"value": value, "at": sorted(places), "note": op.note})

    # --- acknowledged writes: lost / unseen --------------------------------------------------------
    acked = [op for op in ops if op.outcome == OK]
    for op in acked:
        missing_in = []  # sources that read past the acknowledged offset and do not hold the value
        holders = []
        for source in reads:
            p_values = held[source].get(op.partition)
            if p_values is None:
                continue
            if op.value in p_values:
                holders.append(source)
            elif lowest[source][op.partition] <= op.offset < highest[source][op.partition]:
                missing_in.append(source)
        if missing_in:
            report("lost", {"value": op.value, "partition": op.partition, "offset": op.offset,
                            "missing_in": sorted(map(str, missing_in)), "note": op.note})
        elif not holders and op.value not in where:
            report("unseen", {"value": op.value, "partition": op.partition, "offset": op.offset, "note": op.note})

    # --- replica divergence below the lowest high watermark ----------------------------------------
    replica_sources = list(reads) if replicas is None else [s for s in replicas if s in reads]
    partitions = sorted({p for s in replica_sources for p in copy[s]})
    for p in partitions:
        have = [s for s in replica_sources if p in copy[s]]
        if len(have) < 2:
            continue

        def hw(s):
            if high_watermarks is not None and p in high_watermarks.get(s, {}):
                return high_watermarks[s][p]
            return highest[s][p] + 1

        def start(s):
            if log_starts is not None and p in log_starts.get(s, {}):
                return log_starts[s][p]
            return 0

        low = max(start(s) for s in have)
        high = min(hw(s) for s in have)
        for o in range(low, high):
            got = {s: copy[s][p].get(o) for s in have}
            if len(set(got.values())) > 1:
                report("divergence", {"partition": p, "offset": o, "below": high,
                                      "replicas": {str(s): v for s, v in got.items()}})

    outcomes = collections.Counter(op.outcome for op in ops)
    seen_values = set(where)
    stats = {
        "ops": len(ops),
        "ok": outcomes[OK],
        "fail": outcomes[FAIL],
        "info": outcomes[INFO],
        "info_seen": sum(1 for op in ops if op.outcome == INFO and op.value in seen_values),
        "sources": len(reads),
        "records_read": sum(len(r) for parts in reads.values() for r in parts.values()),
    }
    return HistoryResult(counts=counts, examples=dict(examples), stats=stats)


def classify_produce(status: int | None, body: dict | None, index: int = 0) -> tuple[str, int | None, int | None]:
    """An HTTP produce answer as (outcome, partition, offset), honestly (TESTING.md): `ok` only for 2xx
    with an offset; `fail` only for a 4xx, which the broker answers before appending anything; `info`
    for no answer (status None: timeout, reset, refused) and for every 5xx (a 503 from a leader that lost
    its leadership after appending may still end up committed by the next leader)."""
    if status is not None and 200 <= status < 300:
        try:
            placement = body["offsets"][index]
            if placement.get("offset") is not None:
                return OK, int(placement["partition"]), int(placement["offset"])
        except (TypeError, KeyError, IndexError, ValueError):
            pass
        return INFO, None, None
    if status is not None and 400 <= status < 500:
        return FAIL, None, None
    return INFO, None, None
