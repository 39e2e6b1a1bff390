"""Replay test cases without a broker: recorded events, packing, comparison, case folders."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from cases.case import CaseError, case_config, discover, load_case, merge, read_rows, write_rows
from cases.compare import compare_rows, is_ordered, wall_clock_values
from cases.junit import junit_xml
from cases.records import (
    InputError,
    RecordedEvent,
    events_of_message,
    interleave,
    pack,
    read_events,
    write_events,
)
from cases.runner import CaseResult, QueryOutcome
from firelake.config import parse_config
from firelake.testing import EXAMPLE_CONFIG
from streams import envelope
from streams.partitioning import partition_for_key

# --------------------------------------------------------------------------- records


def test_recorded_events_round_trip_byte_for_byte() -> None:
    events = [
        RecordedEvent(b'{"a":1,"b":"x"}', "k1", 2, 40, 0, 1000, "2026-01-01T00:00:00Z"),
        RecordedEvent(b'{"a": 1}', None, 0, 41, 1, 1000),  # not orjson's spelling: raw
        RecordedEvent(b"not json", "k2", 1, 7, 0, 2000, headers=(("trace", "t1"),)),
        RecordedEvent(b"\xff\xfe", "k3", 3, 8, 0, 3000),  # not UTF-8: base64
    ]
    lines = list(write_events(events))
    assert json.loads(lines[0])["value"] == {"a": 1, "b": "x"}
    assert json.loads(lines[1])["raw"] == '{"a": 1}'
    assert "raw_base64" in json.loads(lines[3])
    assert read_events(lines) == events


def test_hand_written_lines_get_timestamps_and_errors_name_the_line() -> None:
    events = read_events(
        [b'{"value": {"x": 1}}', b'{"value": 2, "timestamp": 5000}', b'{"raw": "oops"}'],
        start_ms=1000,
    )
    assert [e.timestamp for e in events] == [1000, 5000, 5000]
    assert events[2].value == b"oops"
    with pytest.raises(InputError, match=r"f\.jsonl:2: a recorded event holds 'value'"):
        read_events([b'{"value": 1}', b'{"key": "k"}'], source="f.jsonl")
    with pytest.raises(InputError, match=r":1: 'partition' must be a non-negative integer"):
        read_events([b'{"value": 1, "partition": -1}'])


def test_events_of_an_envelope_keep_keys_place_and_own_headers() -> None:
    value, headers = envelope.encode([b'{"t":"2026"}', b"[1]"], ["a", "b"], 5, 5)
    found = events_of_message(value, [*headers, ("trace", b"x")], b"a", 3, 17, 99, "t")
    assert [(e.key, e.partition, e.offset, e.index, e.timestamp) for e in found] == [
        ("a", 3, 17, 0, 99),
        ("b", 3, 17, 1, 99),
    ]
    assert found[0].event_time == "2026" and found[1].event_time is None
    assert found[0].headers == (("trace", "x"),)
    single = events_of_message(b'{"x":1}', None, b"k", 0, 4, 7)
    assert single == [RecordedEvent(b'{"x":1}', "k", 0, 4, 0, 7)]


def _events(n: int, keys: int = 7) -> list[RecordedEvent]:
    return [
        RecordedEvent(orjson.dumps({"n": i}), f"user-{i % keys}", None, None, 0, 1000 + (i // 10))
        for i in range(n)
    ]


def _replayed(messages: list[list]) -> dict[str, list[int]]:
    """Per key, the event numbers in the order a consumer of each partition sees them."""
    seen: dict[str, list[int]] = {}
    for per_partition in messages:
        for message in per_partition:
            env = envelope.decode(message.value, message.headers, message.key)
            for line, key in zip(env.lines, env.keys or (), strict=True):
                seen.setdefault(key, []).append(orjson.loads(line)["n"])
    return seen


@pytest.mark.parametrize("partitions", [1, 4, 9])
def test_pack_keeps_each_keys_order_on_its_hashed_partition(partitions: int) -> None:
    events = _events(500)
    packed = pack(events, partitions)
    for partition, messages in enumerate(packed):
        for message in messages:
            env = envelope.decode(message.value, message.headers, message.key)
            assert {partition_for_key(k, partitions) for k in env.keys or ()} == {partition}
            assert message.timestamp == 1000 + orjson.loads(env.lines[0])["n"] // 10
    assert _replayed(packed) == {
        f"user-{k}": [i for i in range(500) if i % 7 == k] for k in range(7)
    }


def test_pack_splits_runs_by_time_count_and_bytes_and_single_streams_per_event() -> None:
    events = _events(100)
    assert sum(len(m) for m in pack(events, 1)) == 10  # one envelope per timestamp
    assert sum(len(m) for m in pack(events, 1, max_events=4)) == 30
    small = pack(events, 1, max_bytes=40)[0]
    assert len(small) > 20 and all(len(m.value) <= 40 for m in small)
    single = pack(events, 2, batched=False)
    assert sum(len(m) for m in single) == 100
    assert all(envelope.header(m.headers, envelope.HEADER_FORMAT) is None for m in single[0])


def test_recorded_messages_come_back_one_for_one() -> None:
    events = [
        RecordedEvent(orjson.dumps({"n": n}), "k", 0, n // 3, n % 3, 1000) for n in range(9)
    ]
    messages = pack(events, 1)[0]
    assert [m.events for m in messages] == [3, 3, 3]  # same timestamp, three original offsets


def test_interleave_orders_by_time_without_reordering_a_partition() -> None:
    packed = pack(_events(300), 3)
    merged = list(interleave(packed))
    assert [m.timestamp for m in merged] == sorted(m.timestamp for m in merged)
    for partition in range(3):
        assert [m for m in merged if m.partition == partition] == packed[partition]


# --------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("sql", "ordered"),
    [
        ("SELECT a FROM t ORDER BY a", True),
        ("select a from t order  by 1 limit 3", True),
        ("SELECT a FROM (SELECT a FROM t ORDER BY a) GROUP BY a", False),
        ("SELECT 'ORDER BY' AS x FROM t", False),
        ("SELECT a FROM t -- ORDER BY a", False),
        ("SELECT row_number() OVER (ORDER BY a) FROM t", False),
        ("CREATE TEMP TABLE x AS SELECT 1 ORDER BY 1; SELECT * FROM x", False),
    ],
)
def test_order_counts_only_for_a_top_level_order_by(sql: str, ordered: bool) -> None:
    assert is_ordered(sql) is ordered


def test_unordered_rows_match_as_a_multiset_with_float_tolerance() -> None:
    want = [{"k": "a", "v": 1.0 / 3}, {"k": "b", "v": 2}, {"k": "b", "v": 2}]
    got = [{"k": "b", "v": 2}, {"k": "a", "v": 0.3333333333333}, {"k": "b", "v": 2}]
    assert not compare_rows("SELECT k, v FROM t", want, got, ["k", "v"], tolerance=1e-9)
    diff = compare_rows("SELECT k, v FROM t", want, got[:2], ["k", "v"], tolerance=1e-15)
    assert diff.missing == [{"k": "a", "v": 1.0 / 3}, {"k": "b", "v": 2}]
    assert diff.unexpected == [{"k": "a", "v": 0.3333333333333}]


def test_ordered_rows_compare_in_place_and_the_report_names_the_rows() -> None:
    sql = "SELECT event_type, n FROM t ORDER BY 1"
    want = [{"event_type": "pause", "n": 3}, {"event_type": "start", "n": 5}]
    got = [{"event_type": "start", "n": 5}, {"event_type": "pause", "n": 3}]
    diff = compare_rows(sql, want, got, ["event_type", "n"])
    assert [position for position, _, _ in diff.moved] == [0, 1]
    text = compare_rows(sql, want, [got[1]], ["event_type", "n"]).render("by_type")
    assert "missing rows (expected, not found) (1)" in text
    assert '- {"event_type": "start", "n": 5}' in text


def test_csv_cells_are_read_as_the_actual_values_kind(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows = [{"k": "a", "n": 3, "f": 0.5, "ok": True, "none": None}]
    write_rows(path, rows, ["k", "n", "f", "ok", "none"])
    assert not compare_rows("SELECT 1", read_rows(path), rows, list(rows[0]))
    assert compare_rows("SELECT 1", read_rows(path), [{**rows[0], "n": 4}], list(rows[0]))


def test_different_columns_are_reported_as_such() -> None:
    diff = compare_rows("SELECT 1", [{"a": 1}], [{"b": 1}], ["b"])
    assert "expected ['a'], got ['b']" in diff.render()


def test_times_of_the_run_itself_mark_a_wall_clock_dependence() -> None:
    started = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    ended = datetime(2026, 12, 2, 14, 1, tzinfo=UTC)
    rows = [{"failed_at": "2026-12-02T14:00:30+00:00", "event_time": "2026-11-29T20:15:00Z"}]
    assert wall_clock_values(rows, started, ended) == ["failed_at"]


# --------------------------------------------------------------------------- case folders


def _case(folder: Path, toml: str = "", **files: str) -> Path:
    (folder / "input").mkdir(parents=True)
    (folder / "expected").mkdir()
    (folder / "case.toml").write_text(toml, encoding="utf-8")
    (folder / "input" / "raw-events.jsonl").write_text('{"value": {"x": 1}}\n', "utf-8")
    for name, text in files.items():
        (folder / "expected" / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return folder


def test_a_case_extends_a_base_config_with_overrides(tmp_path: Path) -> None:
    toml = (
        f'[case]\nextends = "{EXAMPLE_CONFIG}"\nfloat_tolerance = 0.01\n'
        '[routers.clickstream.routes]\nseek = "playback-events"\n'
    )
    case = load_case(
        _case(tmp_path / "one", toml, counts__sql="SELECT 1 AS n", counts__json='[{"n": 1}]')
    )
    routes = case.config["routers"]["clickstream"]["routes"]
    assert routes["seek"] == "playback-events" and routes["start"] == "playback-events"
    assert case.float_tolerance == 0.01
    assert [(e.name, e.rows) for e in case.expectations] == [("counts", [{"n": 1}])]


def test_case_files_that_cannot_run_are_refused_naming_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="no expected"):
        load_case(_case(tmp_path / "a", '[case]\nextends = ""\n'))
    with pytest.raises(CaseError, match="unknown \\[case\\] setting"):
        load_case(_case(tmp_path / "b", "[case]\ntimeout = 3\n", x__sql="SELECT 1"))
    with pytest.raises(CaseError, match="no such file"):
        load_case(_case(tmp_path / "c", '[case]\nextends = "nope.toml"\n', x__sql="SELECT 1"))
    with pytest.raises(CaseError, match="error_type"):
        load_case(_case(tmp_path / "d", '[case]\nextends = ""\n', dlq__json='{"a": "3"}'))


def test_discover_finds_case_folders_and_filters_by_name(tmp_path: Path) -> None:
    for name in ("routes", "dlq", "windows"):
        _case(tmp_path / "cases" / name, "", x__sql="SELECT 1")
    assert [p.name for p in discover([tmp_path / "cases"])] == ["dlq", "routes", "windows"]
    assert [p.name for p in discover([tmp_path / "cases"], "r*s")] == ["routes"]
    assert [p.name for p in discover([tmp_path / "cases" / "dlq"])] == ["dlq"]


def test_merge_replaces_values_and_merges_tables() -> None:
    assert merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "e": 2}) == {
        "a": {"b": 1, "c": [2]},
        "d": 1,
        "e": 2,
    }


def test_a_runs_config_is_isolated_and_flushes_when_caught_up(tmp_path: Path) -> None:
    toml = f'[case]\nextends = "{EXAMPLE_CONFIG}"\n'
    case = load_case(_case(tmp_path / "one", toml, x__sql="SELECT 1"))
    raw = case_config(case, "127.0.0.1:1", tmp_path / "lake", "abc", partitions=7)
    config = parse_config(raw, source="<test>", base_dir=str(tmp_path), environ={})
    assert set(config.streams) >= {"raw-events-abc", "playback-events-abc", "dlq-abc"}
    assert {s.partitions for s in config.streams.values()} == {7}
    assert all(s.flush_when_caught_up and not s.destination for s in config.sinks.values())
    assert config.routers["clickstream-abc"].source == "raw-events-abc"
    for window in config.windows.values():
        assert window.source.endswith("-abc") and window.output.endswith("-abc")
        assert window.idle_timeout_seconds == 0
    assert config.kafka.bootstrap == "127.0.0.1:1"
    assert config.lake_root == tmp_path / "lake"
    assert case.config["streams"]["raw-events"]["partitions"] == 4  # the case is untouched


def test_shipped_yle_cases_load() -> None:
    folders = discover([Path(EXAMPLE_CONFIG).parent / "cases"])
    assert {f.name for f in folders} >= {"routes", "dlq", "windows"}
    for folder in folders:
        assert load_case(folder).expectations


def test_junit_xml_has_a_testcase_per_case_with_the_report() -> None:
    ok = CaseResult("routes", Path("cases/routes"), True, events=10, seconds=1.5)
    ok.phases = {"quiesce": 1.0}
    bad = CaseResult("dlq", Path("cases/dlq"), False, seconds=2.0)
    bad.outcomes = [QueryOutcome("counts", "SELECT 1", False, "counts: rows differ\n  - {}")]
    root = ET.fromstring(junit_xml([ok, bad]))
    assert root.get("tests") == "2" and root.get("failures") == "1"
    cases = root.findall("testcase")
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None and "counts: rows differ" in (failure.text or "")
