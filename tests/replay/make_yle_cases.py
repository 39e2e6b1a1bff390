"""Make the Yle example's replay cases: their input, and the answers SQL must give.

Run ``python tests/replay/make_yle_cases.py`` to regenerate
``firelake/examples/yle/cases/*/input`` and ``expected``. The input is what ``firelake
record`` writes for a live raw stream: clickstream sessions from the load generator with
a clock that advances 12 ms per event (so the events span two minutes), posted in
requests of 100 records — each request one ingest timestamp and one envelope per
partition (keys hashed onto 4 partitions as the ingest does). The expected rows are
computed here, in plain Python from what the generator knows about each event (its type,
and for a bad one what is wrong with it), independently of the router, the sink and
DuckDB: the cases compare the pipeline with an oracle.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cases.records import RecordedEvent, write_events
from streams.loadgen import PAGE_TYPES, PLAYBACK_TYPES, EventGenerator, Record
from streams.partitioning import partition_for_key

CASES = Path(__file__).resolve().parents[2] / "firelake" / "examples" / "yle" / "cases"
BASE = datetime(2026, 11, 29, 20, 15, tzinfo=UTC)
STEP = timedelta(milliseconds=12)
REQUEST = 100
PARTITIONS = 4
#: What the router must call each kind of bad event the generator makes.
ERROR_TYPE_OF_KIND = {
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "unknown_event_type": "no_route",
    "not_object": "not_an_object",
}


def _clock(step: timedelta = STEP) -> Callable[[], datetime]:
    ticks = 0

    def now() -> datetime:
        nonlocal ticks
        ticks += 1
        return BASE + ticks * step

    return now


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def generate(
    count: int, seed: int, invalid_ratio: float, step: timedelta = STEP
) -> tuple[list[Record], list[int]]:
    """Records and the ingest timestamp (epoch ms) of each."""
    now = _clock(step)
    generator = EventGenerator(seed=seed, invalid_ratio=invalid_ratio, now=now)
    records, stamps = [], []
    for start in range(0, count, REQUEST):
        batch = generator.records(min(REQUEST, count - start))
        arrival = _ms(now()) + 40  # the collector receives the request a little later
        records += batch
        stamps += [arrival] * len(batch)
    return records, stamps


def recorded(records: list[Record], stamps: list[int]) -> list[RecordedEvent]:
    """The records as ``firelake record`` writes them (offsets per request envelope)."""
    next_offset = [0] * PARTITIONS
    events: list[RecordedEvent] = []
    for start in range(0, len(records), REQUEST):
        chunk = range(start, min(start + REQUEST, len(records)))
        index = [0] * PARTITIONS
        used = set()
        for i in chunk:
            key = records[i].partition_key
            partition = partition_for_key(key, PARTITIONS)
            used.add(partition)
            event_time = (
                records[i].data.get("event_time") if isinstance(records[i].data, dict) else None
            )
            events.append(
                RecordedEvent(
                    value=orjson.dumps(records[i].data),
                    key=key,
                    partition=partition,
                    offset=next_offset[partition],
                    index=index[partition],
                    timestamp=stamps[i],
                    event_time=event_time,
                )
            )
            index[partition] += 1
        for partition in used:
            next_offset[partition] += 1
    # firelake record's order: timestamp, partition, offset, index.
    events.sort(key=lambda e: (e.timestamp, e.partition, e.offset, e.index))
    return events


def _minute(text: str) -> str:
    return text[:16]


def oracle(records: list[Record], stamps: list[int]) -> tuple[dict[str, Any], dict[str, int]]:
    """SQL name -> (SQL, rows), and the DLQ counts by error type."""
    good = [(r.data, s) for r, s in zip(records, stamps, strict=True) if not r.invalid]
    playback = [(e, s) for e, s in good if e["event_type"] in PLAYBACK_TYPES]
    page = [(e, s) for e, s in good if e["event_type"] in PAGE_TYPES]
    dlq = Counter(ERROR_TYPE_OF_KIND[r.invalid] for r in records if r.invalid)
    users: dict[str, set[str]] = defaultdict(set)
    for event, _ in page:
        users[event["product"]].add(event["user_id"])
    bitrates: dict[str, list[int]] = defaultdict(list)
    for event, _ in playback:
        if event.get("bitrate_kbps") is not None:
            bitrates[event["device"]].append(event["bitrate_kbps"])
    expected = {
        "table_counts": (
            "SELECT 'playback' AS tbl, count(*) AS n FROM playback\n"
            "UNION ALL SELECT 'page', count(*) FROM page\n"
            "UNION ALL SELECT 'dlq', count(*) FROM dlq",
            [
                {"tbl": "playback", "n": len(playback)},
                {"tbl": "page", "n": len(page)},
                {"tbl": "dlq", "n": sum(dlq.values())},
            ],
        ),
        "playback_by_type": (
            "SELECT event_type, count(*) AS n FROM playback GROUP BY 1",
            [
                {"event_type": t, "n": n}
                for t, n in Counter(e["event_type"] for e, _ in playback).items()
            ],
        ),
        "page_by_type": (
            "SELECT event_type, device, count(*) AS n FROM page GROUP BY ALL",
            [
                {"event_type": t, "device": d, "n": n}
                for (t, d), n in Counter((e["event_type"], e["device"]) for e, _ in page).items()
            ],
        ),
        "page_users_by_product": (
            "SELECT product, count(DISTINCT user_id) AS users FROM page GROUP BY 1 ORDER BY 1",
            [{"product": p, "users": len(u)} for p, u in sorted(users.items())],
        ),
        "playback_per_minute": (
            "SELECT strftime(event_time, '%Y-%m-%dT%H:%M') AS minute, count(*) AS n\n"
            "FROM playback GROUP BY 1 ORDER BY 1",
            [
                {"minute": m, "n": n}
                for m, n in sorted(Counter(_minute(e["event_time"]) for e, _ in playback).items())
            ],
        ),
        "avg_bitrate_by_device": (
            "SELECT device, avg(bitrate_kbps) AS avg_kbps FROM playback GROUP BY 1",
            [{"device": d, "avg_kbps": sum(b) / len(b)} for d, b in bitrates.items()],
        ),
        "receive_time_span": (
            "SELECT epoch_ms(min(receive_time)) AS first_ms,\n"
            "       epoch_ms(max(receive_time)) AS last_ms\nFROM playback",
            [{"first_ms": min(s for _, s in playback), "last_ms": max(s for _, s in playback)}],
        ),
        "no_duplicates": (
            "SELECT count(*) - count(DISTINCT event_id) AS duplicates FROM playback",
            [{"duplicates": 0}],
        ),
    }
    return expected, dict(sorted(dlq.items()))


def write_case(
    name: str,
    description: str,
    records: list[Record],
    stamps: list[int],
    keep: list[str] | None = None,
    csv_names: tuple[str, ...] = (),
) -> None:
    folder = CASES / name
    for sub in ("input", "expected"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for old in (folder / sub).iterdir():
            old.unlink()
    (folder / "case.toml").write_text(
        f'[case]\ndescription = "{description}"\nextends = "../../firelake.toml"\n',
        encoding="utf-8",
    )
    with (folder / "input" / "raw-events.jsonl").open("wb") as out:
        out.writelines(write_events(recorded(records, stamps)))
    expected, dlq = oracle(records, stamps)
    for query, (sql, rows) in expected.items():
        if keep is not None and query not in keep:
            continue
        (folder / "expected" / f"{query}.sql").write_text(sql + "\n", encoding="utf-8")
        if query in csv_names:
            columns = list(rows[0])
            lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
            (folder / "expected" / f"{query}.csv").write_text("\n".join(lines) + "\n", "utf-8")
        else:
            (folder / "expected" / f"{query}.json").write_text(
                json.dumps(rows, indent=1) + "\n", encoding="utf-8"
            )
    (folder / "expected" / "dlq.json").write_text(json.dumps(dlq, indent=1) + "\n", "utf-8")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def window_expectations(records: list[Record]) -> dict[str, Any]:
    """Plays per content per minute (the example's tumbling window), for the windows that
    close on any partitioning: those ending a minute before the last playback event's time
    minus the grace period (30 s) — the watermark of the slowest partition is near it."""
    playback = [r.data for r in records if r.data["event_type"] in PLAYBACK_TYPES]
    watermark = max(_parse(e["event_time"]) for e in playback) - timedelta(seconds=30)
    cutoff = watermark.replace(second=0, microsecond=0) - timedelta(minutes=1)
    plays: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in playback:
        if event["event_type"] == "start":
            start = _parse(event["event_time"]).replace(second=0, microsecond=0)
            if start + timedelta(minutes=1) <= cutoff:
                plays[(_minute(event["event_time"]), event["content_id"])].append(event["user_id"])
    sql = (
        "SELECT strftime(window_start, '%Y-%m-%dT%H:%M') AS minute, content_id, plays, viewers\n"
        "FROM plays_per_minute\n"
        f"WHERE is_final AND window_end <= TIMESTAMPTZ '{cutoff.isoformat()}'"
    )
    rows = [
        {"minute": m, "content_id": c, "plays": len(u), "viewers": len(set(u))}
        for (m, c), u in sorted(plays.items())
    ]
    per_minute = Counter(m for m, _ in plays for _ in [0])
    return {
        "plays_per_minute": (sql, rows),
        "windows_closed": (
            "SELECT strftime(window_start, '%Y-%m-%dT%H:%M') AS minute, count(*) AS contents\n"
            "FROM plays_per_minute\n"
            f"WHERE is_final AND window_end <= TIMESTAMPTZ '{cutoff.isoformat()}'\n"
            "GROUP BY 1 ORDER BY 1",
            [{"minute": m, "contents": n} for m, n in sorted(per_minute.items())],
        ),
    }


def windows_case() -> None:
    records, stamps = generate(6_000, seed=5, invalid_ratio=0.0, step=timedelta(milliseconds=60))
    folder = CASES / "windows"
    for sub in ("input", "expected"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for old in (folder / sub).iterdir():
            old.unlink()
    (folder / "case.toml").write_text(
        "[case]\n"
        'description = "Plays per content per minute (tumbling window) over six minutes of '
        'playback"\n'
        'extends = "../../firelake.toml"\n',
        encoding="utf-8",
    )
    with (folder / "input" / "raw-events.jsonl").open("wb") as out:
        out.writelines(write_events(recorded(records, stamps)))
    for query, (sql, rows) in window_expectations(records).items():
        (folder / "expected" / f"{query}.sql").write_text(sql + "\n", encoding="utf-8")
        (folder / "expected" / f"{query}.json").write_text(
            json.dumps(rows, indent=1) + "\n", encoding="utf-8"
        )


def main() -> None:
    records, stamps = generate(10_000, seed=2026, invalid_ratio=0.03)
    write_case(
        "routes",
        "10 000 recorded clickstream events: routes by event_type, per-type tables, DLQ",
        records,
        stamps,
    )
    records, stamps = generate(1_000, seed=7, invalid_ratio=0.3)
    write_case(
        "dlq",
        "1 000 events, 30 % broken in every way: each goes to the DLQ with its reason",
        records,
        stamps,
        keep=["table_counts", "no_duplicates"],
        csv_names=("table_counts",),
    )
    windows_case()
    print(f"wrote the cases under {CASES}")


if __name__ == "__main__":
    main()
