"""The raw archive's entries and the pure parts of replaying and recording from them.

An entry keeps the event with its source key, partition, offset, place in its envelope,
ingest timestamp and own headers; an older archive's bare lines still read (as events
without them). Ranges select entries by their own timestamp or offset; replay order keeps
each source partition's offsets in order.
"""

from __future__ import annotations

import gzip

import orjson
import pytest

from sinks.archive import ENTRY_MARK, archive_bytes, archive_entries, decode_entry, encode_entry
from sinks.buffer import Batch
from streams import envelope
from streams.partitioning import partition_for_key
from streams.ranges import Position, in_range, parse_position
from streams.recorded import RecordedEvent, pack, select_range, target_partition
from streams.replay import ArchiveReplayReport, _origin, placed_order


def _batch(values, offsets, meta, partition=3) -> Batch:
    return Batch(
        topic="events",
        partition=partition,
        values=tuple(values),
        offsets=tuple(offsets),
        first_offset=offsets[0],
        last_offset=offsets[-1],
        events=0,
        nbytes=0,
        max_timestamp_ms=max(m[0] for m in meta) if meta else 0,
        meta=tuple(meta),
    )


def _envelope(keys: list[str], start: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    lines = [orjson.dumps({"id": start + n, "user": k}) for n, k in enumerate(keys)]
    return envelope.encode(lines, keys)


def test_an_entry_round_trips_every_field_byte_for_byte() -> None:
    events = [
        RecordedEvent(b'{"a":1}', "user-1", 2, 41, 3, 1764447300123, headers=(("t", "x"),)),
        RecordedEvent(b'{"a": 1}', None, 0, 7, 0, 5),  # not orjson's spelling: kept raw
        RecordedEvent(b"\xff\xfe", "k", 1, 8, 0, 6),  # not UTF-8: base64
        RecordedEvent(b"line one\nline two", "k", 1, 9, 0, 7),
    ]
    for event in events:
        line = encode_entry(event)
        assert line.startswith(ENTRY_MARK) and b"\n" not in line
        assert decode_entry(line) == event


def test_an_older_archives_bare_line_is_an_event_without_key_place_or_time() -> None:
    line = b'{"fl":1,"event_id":"e1"}'
    assert decode_entry(line) == RecordedEvent(value=line)
    assert decode_entry(b"not json") == RecordedEvent(value=b"not json")


def test_a_batch_archives_each_event_with_its_messages_key_place_time_and_headers() -> None:
    value, headers = _envelope(["a", "b"], 0)
    bad = b'{"broken": '
    batch = _batch(
        [value, bad, b'{"x":1}\n{"x":2}'],
        [10, 11, 12],
        [
            (1000, b"a", (*headers, ("trace", b"t1"))),
            (1001, b"k-bad", ()),
            (1002, None, ()),
        ],
    )
    entries = archive_entries(batch)
    assert [(e.key, e.partition, e.offset, e.index, e.timestamp) for e in entries] == [
        ("a", 3, 10, 0, 1000),
        ("b", 3, 10, 1, 1000),
        ("k-bad", 3, 11, 0, 1001),
        (None, 3, 12, 0, 1002),  # lines without an envelope: an event a line, as converted
        (None, 3, 12, 1, 1002),
    ]
    assert entries[0].headers == (("trace", "t1"),)  # envelope headers are not kept
    assert entries[2].value == bad
    archived = gzip.decompress(archive_bytes(batch)).splitlines()
    assert [decode_entry(line) for line in archived] == entries


def test_a_malformed_envelope_is_archived_line_by_line() -> None:
    value = b'{"a":1}\n{"a":2}'
    headers = ((envelope.HEADER_FORMAT, envelope.FORMAT_NDJSON), (envelope.HEADER_COUNT, b"5"))
    entries = archive_entries(_batch([value], [0], [(9, b"k", headers)]))
    assert [(e.value, e.key, e.index) for e in entries] == [
        (b'{"a":1}', "k", 0),
        (b'{"a":2}', "k", 1),
    ]


@pytest.mark.parametrize(
    ("offset", "stamp", "start", "end", "inside"),
    [
        (5, 1000, "earliest", None, True),
        (5, 1000, "@1000", "@2000", True),  # from inclusive
        (5, 2000, "@1000", "@2000", False),  # to exclusive
        (5, 999, "@1000", None, False),
        (5, 1000, "5", "6", True),
        (6, 1000, "5", "6", False),
        (5, 1000, "latest", None, False),
        (5, 1000, "earliest", "earliest", False),
        (5, 1000, "earliest", "latest", True),
        (None, None, "earliest", None, True),  # an old entry: only an open range takes it
        (None, None, "@1000", None, None),
        (None, None, "earliest", "7", None),
    ],
)
def test_in_range(offset, stamp, start, end, inside) -> None:
    got = in_range(offset, stamp, parse_position(start), parse_position(end) if end else None)
    assert got is inside


def test_select_range_counts_what_it_cannot_place_and_fills_event_times() -> None:
    events = [
        RecordedEvent(b'{"at":"t1"}', "a", 0, 1, 0, 1000),
        RecordedEvent(b'{"at":"t2"}', "a", 0, 2, 0, 2000),
        RecordedEvent(b'{"at":"old"}'),
    ]
    kept, unplaced = select_range(events, Position("time", 1500), None, "at")
    assert (kept, unplaced) == ([RecordedEvent(b'{"at":"t2"}', "a", 0, 2, 0, 2000, "t2")], 1)
    kept, unplaced = select_range(events, Position("earliest"))
    assert (len(kept), unplaced) == (3, 0)


def test_replay_order_keeps_each_partitions_offsets_and_merges_by_time() -> None:
    events = [
        RecordedEvent(b"p1-o5", "b", 1, 5, 0, 100),
        RecordedEvent(b"p0-o2", "a", 0, 2, 0, 300),
        RecordedEvent(b"p0-o1-i1", "a", 0, 1, 1, 50),
        RecordedEvent(b"p0-o1-i0", "a", 0, 1, 0, 50),
        RecordedEvent(b"p1-o4", "b", 1, 4, 0, 400),  # an earlier offset, a later time
    ]
    placed, bare = placed_order([*events, RecordedEvent(b"old")])
    assert bare == [RecordedEvent(b"old")]
    assert [e.value for e in placed] == [
        b"p0-o1-i0",
        b"p0-o1-i1",
        b"p0-o2",
        b"p1-o4",  # partition 1's order wins over its timestamps
        b"p1-o5",
    ]


def test_the_same_partition_count_keeps_partitions_another_goes_by_key() -> None:
    event = RecordedEvent(b"{}", "user-7", 3, 0, 0, 1)
    assert target_partition(event, 0, 4, same_partitions=True) == 3
    assert target_partition(event, 0, 6) == partition_for_key("user-7", 6)
    events = [RecordedEvent(b'{"n":%d}' % n, f"k{n % 3}", n % 4, n, 0, n) for n in range(12)]
    same = pack(events, 4, same_partitions=True)
    assert [[m.partition for m in part] for part in same] == [[p] * 3 for p in range(4)]
    for part in pack(events, 7):
        for message in part:
            keys = envelope.decode(message.value, message.headers).keys or ()
            assert {partition_for_key(k, 7) for k in keys} == {message.partition}


def test_replayed_from_headers_parse_and_the_report_names_old_entries() -> None:
    assert _origin(b"raw-events-x/3/41") == ("raw-events-x", 3, 41)
    assert _origin(b"a/b/c/2/7") == ("a/b/c", 2, 7)
    assert _origin(b"garbage") is None and _origin(b"s/x/1") is None
    text = str(ArchiveReplayReport(2, events=5, messages=2, skipped=3, round_robin=1))
    assert "3 events were replayed into the target before" in text
    assert "round robin" in text
