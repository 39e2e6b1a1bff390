"""The window agents' pure core with a fixed clock: every window type and emit mode,
boundaries, grace, out-of-order within grace, late beyond grace, idle partitions, restore."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from agents.windows.aggregates import AggregateError, parse_aggregate
from agents.windows.batch import SourceMessage
from agents.windows.processor import Emission, WindowProcessor
from firelake.config import ConfigError, FirelakeConfig, parse_config
from streams.envelope import decode, encode

BASE = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def config_of(**window: Any) -> FirelakeConfig:
    spec = {
        "source": "clicks",
        "output": "counts",
        "late": "late",
        "key": ["user"],
        "type": "tumbling",
        "size_seconds": 60,
        "grace_seconds": 10,
        "idle_timeout_seconds": 0,
        "aggregates": {"n": "count(*)"},
    }
    spec.update(window)
    data = {
        "schemas": {
            "click": {
                "time_field": "t",
                "fields": {
                    "event_id": "string",
                    "user": "string",
                    "page": "string",
                    "t": "timestamp",
                    "v": "int",
                },
            }
        },
        "streams": {
            "clicks": {"partitions": 2, "schema": "click"},
            "counts": {"partitions": 3},
            "late": {"partitions": 1},
        },
        "windows": {"w": spec},
    }
    return parse_config(data, source="<test>", environ={})


def at(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def ev(seconds: float, user: str = "a", **fields: Any) -> dict[str, Any]:
    event = {"event_id": f"{user}-{seconds}", "user": user, "t": at(seconds), "v": 1}
    event.update(fields)
    return event


_offsets: dict[int, int] = {}


def msg(partition: int, *events: dict[str, Any]) -> SourceMessage:
    value, headers = encode([orjson.dumps(e) for e in events])
    offset = _offsets.get(partition, 0)
    _offsets[partition] = offset + 1
    return SourceMessage(partition, offset, 0, value, headers, None)


def processor(clock: Clock | None = None, **window: Any) -> WindowProcessor:
    return WindowProcessor(config_of(**window), "w", [0, 1], clock or Clock())


def finals(emission: Emission) -> list[dict[str, Any]]:
    return [r for r in emission.results if r["is_final"]]


def brief(rows: list[dict[str, Any]], *columns: str) -> list[tuple[Any, ...]]:
    return [
        (r["window_start"][11:19], r["window_end"][11:19], *(r[c] for c in columns)) for r in rows
    ]


# ---------------------------------------------------------------- aggregates


def test_aggregate_expressions_parse_into_decomposable_parts() -> None:
    spec = parse_aggregate("sum(position_seconds) FILTER (WHERE event_type = 'stop')")
    assert (spec.kind, spec.inner, spec.filter) == (
        "sum",
        "position_seconds",
        "event_type = 'stop'",
    )
    assert parse_aggregate("COUNT(*)").kind == "count_star"
    assert parse_aggregate("count( DISTINCT lower(user_id) )").inner == "lower(user_id)"
    assert parse_aggregate("avg(coalesce(x, 0) * 2)").inner == "coalesce(x, 0) * 2"
    assert parse_aggregate("max(')(')").inner == "')('"
    for bad, phrase in [
        ("median(x)", "only these merge"),
        ("sum(DISTINCT x)", "DISTINCT"),
        ("sum(x) + 1", "after the call"),
        ("count(x", "unbalanced"),
        ("sum(*)", "count(*)"),
        ("count(x) FILTER (WHERE )", "condition"),
    ]:
        with pytest.raises(AggregateError, match=re.escape(phrase)):
            parse_aggregate(bad)


@pytest.mark.parametrize(
    ("changes", "key", "phrase"),
    [
        ({"type": "weekly"}, "windows.w.type", "tumbling"),
        ({"type": "hopping", "step_seconds": 7}, "windows.w.size_seconds", "times step"),
        ({"type": "session"}, "windows.w.gap_seconds", "between"),
        ({"step_seconds": 10}, "windows.w.step_seconds", "only hopping"),
        ({"output": "nowhere"}, "windows.w.output", "unknown stream"),
        ({"late": "counts"}, "windows.w.output", "different"),
        ({"aggregates": {"n": "median(v)"}}, "windows.w.aggregates.n", "only these"),
        ({"aggregates": {"user": "count(*)"}}, "windows.w.aggregates.user", "not a key"),
        ({"emit": "sometimes"}, "windows.w.emit", "final"),
        ({"grace_seconds": -1}, "windows.w.grace_seconds", "between"),
        ({"colour": 1}, "windows.w.colour", "unknown key"),
    ],
)
def test_window_settings_are_checked(changes: dict[str, Any], key: str, phrase: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(**changes)
    assert caught.value.key == key
    assert phrase in caught.value.reason


# ---------------------------------------------------------------- tumbling


def test_tumbling_counts_per_key_and_closes_when_the_watermark_passes_the_end() -> None:
    p = processor(
        aggregates={
            "n": "count(*)",
            "total": "sum(v)",
            "low": "min(v)",
            "high": "max(v)",
            "mean": "avg(v)",
            "pages": "count(DISTINCT page)",
            "b_only": "count(*) FILTER (WHERE page = 'b')",
        }
    )
    out = p.process(
        [
            msg(0, ev(0, v=1, page="a"), ev(59.999999, v=5, page="b"), ev(60, v=7, page="a")),
            msg(1, ev(1, "b", v=2, page="a"), ev(30, v=3, page="a")),
        ]
    )
    assert finals(out) == []  # watermark: min(60, 30) - 10 = 20 s
    out = p.process([msg(0, ev(75)), msg(1, ev(71, "b"))])  # watermark 61: window 0 closes
    rows = sorted(finals(out), key=lambda r: r["user"])
    assert brief(rows, "user", "n", "total", "low", "high", "mean", "pages", "b_only") == [
        ("08:00:00", "08:01:00", "a", 3, 9, 1, 5, 3.0, 2, 1),
        ("08:00:00", "08:01:00", "b", 1, 2, 2, 2, 2.0, 1, 0),
    ]
    assert all(r["event_count"] == r["n"] for r in rows)
    assert out.late == []
    assert p.state.size() == 2  # the 08:01 windows of a and b, the closed ones evicted


def test_out_of_order_within_grace_counts_and_beyond_grace_goes_to_the_late_stream() -> None:
    p = processor()
    p.process([msg(0, ev(65), ev(55)), msg(1, ev(70, "b"))])  # 55 is within grace of 65
    out = p.process([msg(0, ev(71)), msg(1, ev(72, "b"))])  # watermark 61: window 0 closes
    assert brief(finals(out), "user", "n") == [("08:00:00", "08:01:00", "a", 1)]
    out = p.process([msg(0, ev(58)), msg(1, ev(62, "b"))])  # 58 < watermark 61 - its window closed
    assert finals(out) == []
    (late,) = out.late
    assert late["user"] == "a" and late["t"] == at(58)
    assert late["late_window_start"] == at(0).replace("Z", ".000000Z")
    assert late["late_window_end"].startswith("2026-11-29T08:01:00")
    assert late["late_reason"] == "window_closed"
    assert (late["late_window"], late["source_partition"]) == ("w", 0)
    (message,) = [m for m in out.messages if m.stream == "late"]
    assert orjson.loads(decode(message.value, message.headers).lines[0])["t"] == at(58)


def test_lateness_is_decided_in_partition_order_not_batch_order() -> None:
    """An event behind its own partition's maximum by more than grace is late even when the
    window is still open (another partition holds the watermark back): so a crash that
    re-batches the input cannot change which events count."""
    p = processor()
    out = p.process([msg(0, ev(100), ev(45))])  # partition 1 silent: nothing closes
    assert [e["t"] for e in out.late] == [at(45)]
    assert p.state.size() == 1


def test_boundaries_an_event_at_the_end_belongs_to_the_next_window() -> None:
    p = processor(grace_seconds=0)
    first = p.process([msg(0, ev(0), ev(60)), msg(1, ev(60, "b"))])
    out = p.process([msg(0, ev(120)), msg(1, ev(120, "b"))])
    assert brief(finals(first) + finals(out), "user", "n") == [
        ("08:00:00", "08:01:00", "a", 1),
        ("08:01:00", "08:02:00", "a", 1),
        ("08:01:00", "08:02:00", "b", 1),
    ]


def test_a_global_window_has_no_key_columns() -> None:
    p = processor(key=[], grace_seconds=0)
    p.process([msg(0, ev(1), ev(2, "b")), msg(1, ev(3, "c"))])
    out = p.process([msg(0, ev(61)), msg(1, ev(61))])
    (row,) = finals(out)
    assert row["n"] == 3 and "user" not in row


def test_the_filter_skips_events_but_they_still_advance_the_watermark() -> None:
    p = processor(grace_seconds=0, filter="page = 'x'")
    p.process([msg(0, ev(1, page="x"), ev(2, page="y")), msg(1, ev(3, page="y"))])
    out = p.process([msg(0, ev(61, page="y")), msg(1, ev(61, page="y"))])
    assert brief(finals(out), "user", "n") == [("08:00:00", "08:01:00", "a", 1)]


# ---------------------------------------------------------------- watermark and idleness


def test_the_slowest_partition_holds_windows_open_until_idle_timeout() -> None:
    clock = Clock()
    p = processor(clock, idle_timeout_seconds=30, grace_seconds=0)
    p.process([msg(0, ev(1)), msg(1, ev(2, "b"))])
    assert finals(p.process([msg(0, ev(200))])) == []  # partition 1 still at 2 s
    clock.now += 29
    assert finals(p.tick()) == []
    clock.now += 2  # partition 1 silent for 31 s: left out of the minimum
    assert brief(finals(p.tick()), "user", "n") == [
        ("08:00:00", "08:01:00", "a", 1),
        ("08:00:00", "08:01:00", "b", 1),
    ]
    out = p.process([msg(1, ev(5, "b"))])  # it speaks again, too late for the closed window
    assert [e["late_reason"] for e in out.late] == ["window_closed"]


def test_events_without_a_time_go_to_the_late_stream_with_the_reason() -> None:
    p = processor()
    out = p.process([msg(0, {"event_id": "x", "user": "a"}, ev(1))])
    assert [e["late_reason"] for e in out.late] == ["no event time in 't'"]


def test_ingest_time_windows_use_the_message_timestamp() -> None:
    p = processor(time="ingest", grace_seconds=0)
    stamp = int(BASE.timestamp() * 1000)
    value, headers = encode([orjson.dumps(ev(9999))])
    p.process(
        [
            SourceMessage(0, 0, stamp + 1_000, value, headers),
            SourceMessage(1, 0, stamp, value, headers),
        ]
    )
    out = p.process(
        [
            SourceMessage(0, 1, stamp + 61_000, value, headers),
            SourceMessage(1, 1, stamp + 61_000, value, headers),
        ]
    )
    assert brief(finals(out), "n") == [("08:00:00", "08:01:00", 2)]


# ---------------------------------------------------------------- hopping


def test_hopping_windows_count_an_event_in_each_window_that_holds_it() -> None:
    p = processor(type="hopping", size_seconds=60, step_seconds=20, grace_seconds=0)
    p.process([msg(0, ev(50)), msg(1, ev(50, "b"))])
    out = p.process([msg(0, ev(100)), msg(1, ev(100, "b"))])
    starts = sorted(r["window_start"][11:19] for r in finals(out) if r["user"] == "a")
    assert starts == ["08:00:00", "08:00:20", "08:00:40"]


def test_hopping_an_event_late_for_one_window_still_counts_in_the_open_ones() -> None:
    p = processor(type="hopping", size_seconds=60, step_seconds=30, grace_seconds=0)
    p.process([msg(0, ev(95)), msg(1, ev(95, "b"))])  # watermark 95: [0, 60) and [30, 90) closed
    out = p.process([msg(0, ev(65))])  # windows [30, 90) closed, [60, 120) open
    assert [(e["late_window_start"][11:19], e["late_window_end"][11:19]) for e in out.late] == [
        ("08:00:30", "08:01:30")
    ]
    out = p.process([msg(0, ev(200)), msg(1, ev(200, "b"))])
    assert ("08:01:00", "08:02:00", "a", 2) in brief(finals(out), "user", "n")


# ---------------------------------------------------------------- sliding


def test_sliding_gives_one_result_per_event_over_the_size_before_it() -> None:
    p = processor(
        type="sliding",
        size_seconds=10,
        grace_seconds=0,
        aggregates={"n": "count(*)", "s": "sum(v)"},
    )
    p.process([msg(0, ev(0, v=1), ev(5, v=2), ev(10, v=4), ev(10.5, v=8)), msg(1, ev(0, "b"))])
    out = p.process([msg(0, ev(30, v=0)), msg(1, ev(30, "b"))])
    rows = [r for r in finals(out) if r["user"] == "a"]
    # (t - 10, t]: at 10 the event at 0 is out, the one at 5 in.
    assert [(r["window_end"][14:23], r["n"], r["s"]) for r in rows] == [
        ("00:00.000", 1, 1),
        ("00:05.000", 2, 3),
        ("00:10.000", 2, 6),
        ("00:10.500", 3, 14),
    ]


def test_sliding_out_of_order_events_count_in_later_results() -> None:
    p = processor(type="sliding", size_seconds=10, grace_seconds=5)
    p.process([msg(0, ev(10), ev(7)), msg(1, ev(20, "b"))])
    out = p.process([msg(0, ev(40)), msg(1, ev(40, "b"))])
    assert [(r["window_end"][17:19], r["n"]) for r in finals(out) if r["user"] == "a"] == [
        ("07", 1),
        ("10", 2),
    ]


def test_sliding_updates_follow_out_of_order_events() -> None:
    p = processor(type="sliding", size_seconds=10, grace_seconds=5, emit="update")
    out = p.process([msg(0, ev(10))])
    assert [(r["n"], r["is_final"]) for r in out.results] == [(1, False)]
    out = p.process([msg(0, ev(8))])  # changes the result at 10, adds one at 8
    assert sorted((r["window_end"][17:19], r["n"]) for r in out.results) == [("08", 1), ("10", 2)]


# ---------------------------------------------------------------- sessions


def test_sessions_split_at_the_gap_and_merge_when_an_event_bridges_them() -> None:
    p = processor(type="session", gap_seconds=30, grace_seconds=60, aggregates={"n": "count(*)"})
    p.process([msg(0, ev(0), ev(10), ev(50), ev(75)), msg(1, ev(0, "b"), ev(30, "b"))])
    # a: [0, 10] and [50, 75] (gap 40 >= 30); b: [0] and [30] (exactly the gap apart)
    assert p.state.size() == 4
    p.process([msg(0, ev(30))])  # within 30 of 10 and of 50: one session [0, 75]
    assert p.state.size() == 3
    out = p.process([msg(0, ev(500)), msg(1, ev(500, "b"))])
    assert brief(finals(out), "user", "n") == [
        ("08:00:00", "08:00:30", "b", 1),
        ("08:00:30", "08:01:00", "b", 1),
        ("08:00:00", "08:01:45", "a", 5),
    ]


def test_a_session_event_behind_the_watermark_is_late() -> None:
    p = processor(type="session", gap_seconds=30, grace_seconds=5)
    out = p.process([msg(0, ev(100), ev(90), ev(96)), msg(1, ev(100, "b"))])
    assert [e["t"] for e in out.late] == [at(90)]
    assert out.late[0]["late_window_end"].startswith("2026-11-29T08:02:00")


# ---------------------------------------------------------------- emit modes


def test_update_mode_emits_every_change_then_the_final_value_last() -> None:
    p = processor(emit="update", grace_seconds=0)
    out = p.process([msg(0, ev(1), ev(2)), msg(1, ev(3, "b"))])
    assert sorted((r["user"], r["n"], r["is_final"]) for r in out.results) == [
        ("a", 2, False),
        ("b", 1, False),
    ]
    out = p.process([msg(0, ev(4))])
    assert [(r["user"], r["n"], r["is_final"]) for r in out.results] == [("a", 3, False)]
    out = p.process([msg(0, ev(70)), msg(1, ev(70, "b"))])
    assert [(r["user"], r["n"], r["is_final"]) for r in out.results if r["n"] > 1] == [
        ("a", 3, True)
    ]


# ---------------------------------------------------------------- state


def test_state_is_bounded_the_oldest_windows_close_early() -> None:
    p = processor(max_open_windows=2, grace_seconds=1000)
    out = p.process([msg(0, ev(1), ev(61), ev(121))])
    assert brief(finals(out), "user", "n") == [("08:00:00", "08:01:00", "a", 1)]
    out = p.process([msg(0, ev(2))])  # its window was closed early: late
    assert [e["late_reason"] for e in out.late] == ["window_closed"]


@pytest.mark.parametrize(
    "window",
    [
        {"type": "tumbling"},
        {"type": "hopping", "step_seconds": 20},
        {"type": "sliding", "size_seconds": 20},
        {"type": "session", "gap_seconds": 15, "size_seconds": 60},
    ],
    ids=lambda w: w["type"],
)
def test_a_restored_state_gives_the_results_an_uninterrupted_run_gives(window: dict) -> None:
    aggregates = {
        "n": "count(*)",
        "pages": "count(DISTINCT page)",
        "mean": "avg(v)",
        "hi": "max(t)",
    }
    events = [
        (i % 2, ev((i * 7) % 180 + i // 3, ("a", "b", "c")[i % 3], page=f"p{i % 4}", v=i))
        for i in range(60)
    ]
    batches = [events[i : i + 7] for i in range(0, len(events), 7)]
    end = [(0, ev(1000)), (1, ev(1000, "b"))]

    def run(restore_after: int | None) -> list[tuple[Any, ...]]:
        p = WindowProcessor(config_of(aggregates=aggregates, **window), "w", [0, 1], Clock())
        log: list[tuple[bytes, bytes | None]] = []
        rows = []
        for index, batch in enumerate([*batches, end]):
            out = p.process([msg(part, e) for part, e in batch])
            log.extend(out.changelog)
            rows.extend(finals(out))
            if index == restore_after:
                p = WindowProcessor(
                    config_of(aggregates=aggregates, **window), "w", [0, 1], Clock()
                )
                p.restore(log)
        return sorted(
            (r["window_start"], r["window_end"], r["user"], r["n"], r["pages"], r["mean"], r["hi"])
            for r in rows
        )

    plain = run(None)
    assert plain
    assert run(3) == plain
    assert run(7) == plain


# ---------------------------------------------------------------- agreement with SQL


@pytest.mark.parametrize(
    "window",
    [
        {"type": "tumbling", "size_seconds": 30},
        {"type": "hopping", "size_seconds": 30, "step_seconds": 10},
        {"type": "sliding", "size_seconds": 20},
        {"type": "session", "gap_seconds": 8},
    ],
    ids=lambda w: w["type"],
)
def test_the_agent_agrees_with_sql_over_the_same_events(window: dict) -> None:
    """A stream shuffled within the grace period, plus events held back beyond it: the
    processor's final results equal DuckDB SQL over all events minus the late ones."""
    import random

    import duckdb
    import pyarrow as pa

    from agents.windows.sql import late_relation_sql, window_sql

    rng = random.Random(7)
    aggregates = {
        "n": "count(*)",
        "total": "sum(v) FILTER (WHERE page <> 'p0')",
        "mean": "avg(v)",
        "pages": "count(DISTINCT page)",
        "low": "min(v)",
    }
    config = config_of(aggregates=aggregates, grace_seconds=5, **window)
    p = WindowProcessor(config, "w", [0, 1], Clock())
    events: list[tuple[int, dict[str, Any]]] = []
    for partition in (0, 1):
        times = sorted(rng.uniform(0, 400) for _ in range(300))
        items = [
            ev(t, rng.choice("abcd"), page=f"p{rng.randrange(4)}", v=rng.randrange(100))
            | {"event_id": f"{partition}-{i}"}
            for i, t in enumerate(times)
        ]
        # Shuffle within grace: sort by time plus a jitter below the grace period.
        keyed = sorted(
            items, key=lambda e: datetime.fromisoformat(e["t"]).timestamp() + rng.uniform(0, 4.9)
        )
        # And hold a few back by far more than the grace: these must be late.
        for index in (50, 150, 250):
            keyed.insert(index + 40, keyed.pop(index))
        events.extend((partition, e) for e in keyed)
    finals_: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    by_partition = {0: [e for p_, e in events if p_ == 0], 1: [e for p_, e in events if p_ == 1]}
    position = {0: 0, 1: 0}
    while position[0] < 300 or position[1] < 300:
        batch = []
        for partition in (0, 1):
            take = rng.randrange(1, 40)
            chunk = by_partition[partition][position[partition] : position[partition] + take]
            position[partition] += len(chunk)
            if chunk:
                batch.append(msg(partition, *chunk))
        out = p.process(batch)
        finals_.extend(finals(out))
        late.extend(out.late)
    out = p.process(
        [msg(0, ev(5000, "z", event_id="end0")), msg(1, ev(5000, "z", event_id="end1"))]
    )
    finals_.extend(finals(out))
    assert late, "held-back events must be late"
    assert {e["late_reason"] for e in late} == {"window_closed"}

    con = duckdb.connect()
    table = pa.table(
        {
            "event_id": [e["event_id"] for _, e in events],
            "user": [e["user"] for _, e in events],
            "page": [e["page"] for _, e in events],
            "v": [e["v"] for _, e in events],
            "t": pa.array(
                [datetime.fromisoformat(e["t"]) for _, e in events], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    late_table = pa.table(
        {
            "event_id": [e["event_id"] for e in late],
            "late_window": [e["late_window"] for e in late],
            "late_reason": [e["late_reason"] for e in late],
            "late_window_start": [e["late_window_start"] for e in late],
        }
    )
    con.register("events", table)
    con.register("late_events", late_table)
    sql = window_sql(
        p.spec, p.geometry, "events", "t", late=late_relation_sql("late_events", "w", "event_id")
    )
    cursor = con.execute(sql)
    columns = [d[0] for d in cursor.description]
    from agents.windows.processor import format_us

    expected = {}
    for values in cursor.fetchall():
        row = dict(zip(columns, values, strict=True))
        expected[(format_us(row["window_start"]), format_us(row["window_end"]), row["user"])] = row
    got = {
        (row["window_start"], row["window_end"], row["user"]): row
        for row in finals_
        if row["user"] != "z"
    }
    assert len(expected) > 20
    assert set(got) == set(expected)
    for key, row in expected.items():
        live = got[key]
        assert live["n"] == row["n"] == live["event_count"] == row["event_count"]
        assert live["total"] == row["total"] and live["pages"] == row["pages"]
        assert live["low"] == row["low"]
        assert live["mean"] == pytest.approx(row["mean"])


# ---------------------------------------------------------------- verify and backfill


def test_verify_reports_missing_extra_repeated_and_different_windows() -> None:
    from agents.windows.verify import backfill_rows, compare

    spec = config_of(aggregates={"n": "count(*)", "mean": "avg(v)"}).windows["w"]

    def row(start: int, user: str, n: int, mean: float) -> dict[str, Any]:
        return {
            "window_start": start,
            "window_end": start + 60_000_000,
            "user": user,
            "n": n,
            "mean": mean,
            "event_count": n,
        }

    expected = [row(0, "a", 2, 1.5), row(0, "b", 1, 3.0), row(60_000_000, "a", 4, 2.0)]
    live = [
        row(0, "a", 2, 1.5 + 1e-12),  # float noise is no difference
        row(60_000_000, "a", 3, 2.0),  # a value differs
        row(60_000_000, "a", 3, 2.0),  # and it came twice
        row(120_000_000, "c", 1, 1.0),  # a window SQL does not have
    ]
    problems = [str(d) for d in compare(spec, expected, live)]
    assert len(problems) == 5, problems
    assert any("b: SQL has this window; the agent has not" in p for p in problems)
    assert any("emitted 2 times" in p for p in problems)
    assert any("n: agent 3, SQL 4" in p for p in problems)
    assert any("event_count: agent 3, SQL 4" in p for p in problems)
    assert any("c: emitted, but SQL finds no such window" in p for p in problems)
    assert compare(spec, expected, expected) == []

    (made,) = backfill_rows(
        spec,
        ["window_start", "window_end", "user", "n", "mean", "event_count"],
        [(0, 60_000_000, "a", 2, 1.5, 2)],
        emit_us=5,
    )
    assert made["window_start"] == "1970-01-01T00:00:00.000000Z" and made["is_final"] is True
    assert (made["user"], made["n"], made["mean"], made["event_count"]) == ("a", 2, 1.5, 2)


# ---------------------------------------------------------------- columnar fixed-window state


def test_fixed_windows_write_one_changelog_record_per_window_bucket_not_per_key() -> None:
    from agents.windows import codec
    from agents.windows.state import BUCKETS

    p = processor(aggregates={"n": "count(*)", "mean": "avg(v)"})
    events = [ev(i % 50, f"u{i}", v=i) for i in range(400)]
    out = p.process([msg(0, *events[:200]), msg(1, *events[200:])])
    records = [(codec.loads(k), v) for k, v in out.changelog if codec.loads(k) != ["m"]]
    assert all(k[0] == "b" for k, _ in records)
    assert 1 < len(records) <= BUCKETS  # 400 keys in at most 64 records
    assert p.state.size() == 400
    # Closing the window tombstones every bucket of it.
    closing = p.process([msg(0, ev(200, "z")), msg(1, ev(200, "z"))])
    assert len(finals(closing)) == 400
    gone = [codec.loads(k) for k, v in closing.changelog if v is None]
    assert len(gone) == BUCKETS


def test_a_changelog_of_per_key_records_from_an_older_version_is_restored_and_tombstoned() -> None:
    from agents.windows import codec

    aggregates = {"n": "count(*)", "pages": "count(DISTINCT page)", "mean": "avg(v)"}
    start = round((BASE - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    legacy = [
        (codec.dumps(["w", start, "a"]), codec.dumps([2, 2, {"p1", "p2"}, [3, 2]])),
        (codec.dumps(["w", start, "b"]), codec.dumps([1, 1, {"p1"}, [5, 1]])),
    ]
    p = processor(aggregates=aggregates)
    assert p.restore(legacy) == 2
    out = p.process([msg(0, ev(10, "a", page="p3", v=4)), msg(1, ev(11, "c", page="p1", v=1))])
    assert not finals(out)
    done = p.process([msg(0, ev(200, "z")), msg(1, ev(200, "z"))])
    rows = {r["user"]: (r["n"], r["pages"], r["mean"]) for r in finals(done)}
    assert rows == {"a": (3, 3, 7 / 3), "b": (1, 1, 5.0), "c": (1, 1, 1.0)}
    gone = {k for k, v in done.changelog if v is None}
    assert {k for k, _ in legacy} <= gone


def test_open_windows_snapshot_is_read_by_the_query_engine_as_a_view(tmp_path: Any) -> None:
    import time

    from agents.windows.snapshot import snapshot_bytes
    from queries.engine import QueryEngine
    from queries.open_windows import view_name
    from sinks.destinations import LocalDestination
    from sinks.paths import open_windows_key

    p = processor(aggregates={"n": "count(*)", "top": "max(v)"})
    p.process([msg(0, ev(1, "a", v=3), ev(2, "a", v=5)), msg(1, ev(61, "b", v=7))])
    lake = LocalDestination(tmp_path)
    lake.put(open_windows_key("plays-per-minute"), snapshot_bytes(p, time.time()))
    assert view_name("plays-per-minute") == "plays_per_minute_open"
    engine = QueryEngine(tmp_path)
    result = engine.query(
        "SELECT user, n, top, event_count, is_final, strftime(window_start, '%H:%M') "
        "FROM plays_per_minute_open ORDER BY user"
    )
    assert result.rows == [("a", 2, 5, 2, False, "08:00"), ("b", 1, 7, 1, False, "08:01")]
    # The next snapshot replaces it whole; a table-less lake has no other views.
    p.process([msg(0, ev(200, "c")), msg(1, ev(200, "c"))])
    lake.put(open_windows_key("plays-per-minute"), snapshot_bytes(p, time.time()))
    rows = engine.query("SELECT user, strftime(window_start, '%H:%M') FROM plays_per_minute_open")
    assert rows.rows == [("c", "08:03")]


def test_the_faust_agent_closes_the_processor_a_new_assignment_replaces() -> None:
    import asyncio

    from agents.faust_window import ActiveProcessor

    active = ActiveProcessor()
    first, second = processor(), processor()
    closed: list[WindowProcessor] = []
    for p in (first, second):
        p.close = lambda p=p: (closed.append(p), WindowProcessor.close(p))  # type: ignore[method-assign]
    active.replace(first)
    assert asyncio.run(active.wait()) is first and closed == []
    active.replace(second)  # a rebalance: the old processor's reader used to leak
    assert active.current is second and closed == [first]
    second.close()


def test_a_snapshot_is_taken_when_due_and_put_apart(tmp_path: Any) -> None:
    # The worker takes the snapshot under its lock and puts it to the lake after: a
    # rebalance callback waiting for the lock no longer waits for an S3 PUT.
    import asyncio

    from agents.windows.snapshot import SnapshotWriter
    from sinks.destinations import LocalDestination
    from sinks.paths import open_windows_key

    p = processor()
    p.process([msg(0, ev(1, "a"))])
    writer = SnapshotWriter(config_of(), "w", interval=3600)
    writer.lake = LocalDestination(tmp_path)
    assert writer.take(None, force=True) is None
    data = writer.take(p)
    assert data is not None and writer.take(p) is None  # the next one is not due yet
    assert not (tmp_path / open_windows_key("w")).exists()  # taking writes nothing
    assert asyncio.run(writer.put(data)) and asyncio.run(writer.put(None)) is False
    assert (tmp_path / open_windows_key("w")).read_bytes() == data
    assert writer.take(p, force=True) is not None
    p.close()


def test_a_lake_table_taking_an_open_window_views_name_stays_queryable(tmp_path: Any) -> None:
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    from agents.windows.snapshot import snapshot_bytes
    from queries.engine import QueryEngine
    from sinks.destinations import LocalDestination
    from sinks.paths import open_windows_key

    p = processor()
    p.process([msg(0, ev(1, "a"))])
    LocalDestination(tmp_path).put(open_windows_key("w"), snapshot_bytes(p, time.time()))
    p.close()
    engine = QueryEngine(tmp_path)
    assert engine.query("SELECT user FROM w_open").rows == [("a",)]
    # A table of the same name appears: it wins, and the refresh must not drop its view.
    table = tmp_path / "w_open" / "dt=2026-11-29" / "hour=08" / "f.parquet"
    table.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), table)
    engine.refresh()
    assert engine.query("SELECT sum(x) FROM w_open").rows == [(3,)]
    engine.refresh()  # and stays so
    assert engine.query("SELECT sum(x) FROM w_open").rows == [(3,)]
