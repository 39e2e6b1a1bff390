"""Record the Yle clickstream replay: the events, and the SQL answers they must give.

Run ``python tests/replay/record_yle.py`` to regenerate ``yle_clickstream.jsonl`` (the
recorded PutRecords records, in order) and ``yle_clickstream.expected.json`` (SQL → rows).
The expected rows are computed here, in plain Python from what the generator knows about
each event (its type, and for a bad one what is wrong with it), independently of the
router, the sink and DuckDB, so the replay test compares the pipeline with an oracle.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.loadgen import EventGenerator

HERE = Path(__file__).parent
RECORDS = HERE / "yle_clickstream.jsonl"
EXPECTED = HERE / "yle_clickstream.expected.json"

PLAYBACK_TYPES = {"start", "pause", "stop", "heartbeat"}
PAGE_TYPES = {"page_view", "click"}
#: What the router must call each kind of bad event the generator makes.
ERROR_TYPE_OF_KIND = {
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "unknown_event_type": "no_route",
    "not_object": "not_an_object",
}


def record(count: int = 3000, seed: int = 2026) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The recorded records and the expected answers."""
    fixed = datetime(2026, 11, 29, 20, 15, tzinfo=UTC)
    generator = EventGenerator(seed=seed, invalid_ratio=0.03, now=lambda: fixed)
    records = generator.records(count)
    playback = [r.data for r in records if not r.invalid and r.data["event_type"] in PLAYBACK_TYPES]
    page = [r.data for r in records if not r.invalid and r.data["event_type"] in PAGE_TYPES]
    bad = Counter(ERROR_TYPE_OF_KIND[r.invalid] for r in records if r.invalid)
    users_by_product: dict[str, set[str]] = defaultdict(set)
    for event in page:
        users_by_product[event["product"]].add(event["user_id"])
    expected = {
        "SELECT count(*) AS n FROM playback": [{"n": len(playback)}],
        "SELECT count(*) AS n FROM page": [{"n": len(page)}],
        "SELECT count(*) AS n FROM dlq": [{"n": sum(bad.values())}],
        "SELECT event_type, count(*) AS n FROM playback GROUP BY 1 ORDER BY 1": [
            {"event_type": t, "n": n}
            for t, n in sorted(Counter(e["event_type"] for e in playback).items())
        ],
        "SELECT product, count(DISTINCT user_id) AS users FROM page GROUP BY 1 ORDER BY 1": [
            {"product": p, "users": len(u)} for p, u in sorted(users_by_product.items())
        ],
        "SELECT CAST(sum(position_seconds) AS BIGINT) AS s FROM playback": [
            {"s": sum(e.get("position_seconds") or 0 for e in playback)}
        ],
        "SELECT error_type, count(*) AS n FROM dlq GROUP BY 1 ORDER BY 1": [
            {"error_type": t, "n": n} for t, n in sorted(bad.items())
        ],
        "SELECT count(*) - count(DISTINCT event_id) AS duplicates FROM playback": [
            {"duplicates": 0}
        ],
    }
    lines = [{"partition_key": r.partition_key, "data": r.data} for r in records]
    return lines, expected


def main() -> None:
    lines, expected = record()
    RECORDS.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    EXPECTED.write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} records to {RECORDS.name} and {len(expected)} answers")


if __name__ == "__main__":
    main()
